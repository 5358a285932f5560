// Depthwise convolution for AVX-512, 16 channels per step (layout: docs/kernels.md, "depthwise").
//
// Register map: one zmm accumulator for channels c0..c0+15; per tap 16 input bytes zero-extended
// to int32 lanes (masked load for a channel tail, so nothing past the tensor is read) and 16 int32
// weights. vpdpbusd multiplies the 4 bytes of each lane pairwise and adds: the input lane is
// (x, 0, 0, 0) and the weight lane's low byte is w as int8, so it adds exactly x * w in one
// instruction (vpmulld + vpaddd is slower). Built twice: real, and against SIMDe (emulated).
#include "kernels/avx512vnni/avx512vnni.h"
#include "kernels/avx512vnni/epilogue_avx512.h"
#include "kernels/dwconv_taps.h"

namespace qr::QR_ISA_NS {
namespace {

constexpr int kCB = 16;

// kTaps > 0 fixes the tap count at compile time (3x3, the common case), so the tap loop unrolls.
template <int kTaps>
void dwconv_taps(const DwConvArgs& a) {
  const RequantConsts consts(a.ep);
  // Locals, not a.*: stores through uint8_t* may alias anything, which would force reloads.
  const int taps = kTaps > 0 ? kTaps : a.kh * a.kw, channels = a.c;
  const size_t c_stride = a.c_stride;
  const int32_t *weights = a.weights, *bias = a.ep.bias;
  const float* mult = a.ep.mult;
  for_each_pixel(a, [&](const PixelTaps& px, uint8_t* out) {
    for (int c0 = 0; c0 < channels; c0 += kCB) {
      const int count = channels - c0 < kCB ? channels - c0 : kCB;
      const uint16_t mask = lane_mask(count);
      __m512i acc = _mm512_setzero_si512();
#pragma GCC unroll 9
      for (int t = 0; t < taps; ++t) {
        const __m128i bytes = count == kCB ? _mm_loadu_si128(reinterpret_cast<const __m128i*>(px.tap(t) + c0))
                                           : _mm_maskz_loadu_epi8(mask, px.tap(t) + c0);
        const __m512i w = _mm512_loadu_si512(weights + t * c_stride + c0);
        acc = _mm512_dpbusd_epi32(acc, _mm512_cvtepu8_epi32(bytes), w);
      }
      acc = _mm512_add_epi32(acc, _mm512_loadu_si512(bias + c0));
      store_bytes16(out + c0, requantize16(acc, mult + c0, consts), count);
    }
  });
}

void dwconv(const DwConvArgs& a) { a.kh * a.kw == 9 ? dwconv_taps<9>(a) : dwconv_taps<0>(a); }

constexpr DwConvKernels kKernels = {QR_ISA_NAME, dwconv};

}  // namespace

const DwConvKernels* dwconv_kernels() { return &kKernels; }

}  // namespace qr::QR_ISA_NS
