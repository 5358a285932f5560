// Depthwise convolution for AVX-512 (layout: docs/kernels.md, "depthwise").
//
// Register map of a run (4 pixels of one output row): up to 8 zmm accumulators (pixel j, channels
// c0..c0+15 and c0+16..c0+31), the tap's int32 weights, loaded once and shared by the 4 pixels, and
// each pixel's input bytes zero-extended to int32 lanes (masked loads for a channel tail, so
// nothing past the tensor is read). vpdpbusd multiplies the 4 bytes of each lane pairwise and adds:
// the input lane is (x, 0, 0, 0) and the weight lane's low byte is w as int8, so it adds exactly
// x * w in one instruction (vpmulld + vpaddd is slower). Built twice: real, and against SIMDe
// (emulated).
#include "kernels/avx512vnni/avx512vnni.h"
#include "kernels/avx512vnni/epilogue_avx512.h"
#include "kernels/dwconv_taps.h"

namespace qr::QR_ISA_NS {
namespace {

constexpr int kCB = 16;   // channels per vector
constexpr int kRun = 4;   // pixels per run

// A compile-time count passed to a generic lambda (a local type: no library template is
// instantiated in an ISA unit, see kernels.h).
template <int N>
struct Count {
  static constexpr int value = N;
};

// 16 bytes at p (the first `count` of them when count < 16) zero-extended to int32 lanes.
inline __m512i load16_epi32(const uint8_t* p, int count) {
  const __m128i bytes = count >= kCB ? _mm_loadu_si128(reinterpret_cast<const __m128i*>(p))
                                     : _mm_maskz_loadu_epi8(lane_mask(count), p);
  return _mm512_cvtepu8_epi32(bytes);
}

// kTaps > 0 fixes the tap count at compile time (3x3, the common case), so the tap loop unrolls.
template <int kTaps>
void dwconv_taps(const DwConvArgs& a) {
  const RequantConsts consts(a.ep);
  // Locals, not a.*: stores through uint8_t* may alias anything, which would force reloads.
  const int taps = kTaps > 0 ? kTaps : a.kh * a.kw, channels = a.c;
  const size_t c_stride = a.c_stride;
  const int32_t *weights = a.weights, *bias = a.ep.bias;
  const float* mult = a.ep.mult;
  const uintptr_t* offsets = a.tap_offsets;

  // kV vectors of channels from c0 for kP pixels; the last vector holds `last` (<= 16) channels.
  // Pixel j's tap t reads at base + j * step + off[t].
  auto block = [&](auto kP, auto kV, uintptr_t base, ptrdiff_t step, const uintptr_t* off, uint8_t* out, int c0,
                   int last) {
    constexpr int P = decltype(kP)::value, V = decltype(kV)::value;
    __m512i acc[P][V];
    for (int j = 0; j < P; ++j)
      for (int v = 0; v < V; ++v) acc[j][v] = _mm512_setzero_si512();
#pragma GCC unroll 9
    for (int t = 0; t < taps; ++t) {
      const uint8_t* x = reinterpret_cast<const uint8_t*>(base + off[t]) + c0;
      const int32_t* w = weights + t * c_stride + c0;
#pragma GCC unroll 2
      for (int v = 0; v < V; ++v) {
        const __m512i wv = _mm512_loadu_si512(w + v * kCB);
        const int count = v == V - 1 ? last : kCB;
#pragma GCC unroll 4
        for (int j = 0; j < P; ++j)
          acc[j][v] = _mm512_dpbusd_epi32(acc[j][v], load16_epi32(x + j * step + v * kCB, count), wv);
      }
    }
#pragma GCC unroll 2
    for (int v = 0; v < V; ++v) {
      const __m512i b = _mm512_loadu_si512(bias + c0 + v * kCB);
      const int count = v == V - 1 ? last : kCB;
#pragma GCC unroll 4
      for (int j = 0; j < P; ++j)
        store_bytes16(out + j * channels + c0 + v * kCB,
                      requantize16(_mm512_add_epi32(acc[j][v], b), mult + c0 + v * kCB, consts), count);
    }
  };
  using One = Count<1>;
  using Two = Count<2>;
  using Run = Count<kRun>;
  // Channel steps of 32, then 16, then the tail.
  auto channels_of = [&](auto kP, uintptr_t base, ptrdiff_t step, const uintptr_t* off, uint8_t* out) {
    int c0 = 0;
    for (; c0 + 2 * kCB <= channels; c0 += 2 * kCB) block(kP, Two{}, base, step, off, out, c0, kCB);
    for (; c0 < channels; c0 += kCB) block(kP, One{}, base, step, off, out, c0, channels - c0 < kCB ? channels - c0 : kCB);
  };
  for_each_pixel_run(
      a,
      [&](const uint8_t* corner, ptrdiff_t step, int count, uint8_t* out) {
        const uintptr_t base = reinterpret_cast<uintptr_t>(corner);
        int j = 0;
        for (; j + kRun <= count; j += kRun) channels_of(Run{}, base + j * step, step, offsets, out + j * channels);
        for (; j < count; ++j) channels_of(One{}, base + j * step, 0, offsets, out + j * channels);
      },
      [&](const PixelTaps& px, uint8_t* out) { channels_of(One{}, px.base, 0, px.offset, out); });
}

void dwconv(const DwConvArgs& a) { a.kh * a.kw == 9 ? dwconv_taps<9>(a) : dwconv_taps<0>(a); }

constexpr DwConvKernels kKernels = {QR_ISA_NAME, dwconv, nullptr, nullptr};

}  // namespace

const DwConvKernels* dwconv_kernels() { return &kKernels; }

}  // namespace qr::QR_ISA_NS
