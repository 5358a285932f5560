// Depthwise convolution for AVX2, 16 channels per step (layout: docs/kernels.md, "depthwise").
//
// Register map: two ymm accumulators (channels c0..c0+7, c0+8..c0+15), per tap the 16 input bytes
// widened to two ymm of int32 and two ymm of int32 weights. vpmaddwd sees each lane as two int16:
// the input (x, 0) and the weight (w, its sign extension), so it adds exactly x * w (one uop where
// vpmulld takes two).
#include <immintrin.h>

#include <cstring>

#include "kernels/avx2/avx2.h"
#include "kernels/avx2/epilogue_avx2.h"
#include "kernels/dwconv_taps.h"

namespace qr::avx2 {
namespace {

constexpr int kCB = 16;

// The first `count` (<= 16) bytes at p, widened to int32; the rest are zero and never read.
inline void load16(const uint8_t* p, int count, __m256i& lo, __m256i& hi) {
  __m128i v;
  if (count >= kCB) {
    v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  } else {
    alignas(16) uint8_t tmp[kCB] = {};
    std::memcpy(tmp, p, count);
    v = _mm_load_si128(reinterpret_cast<const __m128i*>(tmp));
  }
  lo = _mm256_cvtepu8_epi32(v);
  hi = _mm256_cvtepu8_epi32(_mm_srli_si128(v, 8));
}

void dwconv(const DwConvArgs& a) {
  // Locals, not a.*: stores through uint8_t* may alias anything, which would force reloads.
  const int taps = a.kh * a.kw, channels = a.c;
  const size_t c_stride = a.c_stride;
  const int32_t *weights = a.weights, *bias = a.ep.bias;
  const float* mult = a.ep.mult;
  for_each_pixel(a, [&](const PixelTaps& px, uint8_t* out) {
    for (int c0 = 0; c0 < channels; c0 += kCB) {
      const int count = channels - c0 < kCB ? channels - c0 : kCB;
      __m256i acc0 = _mm256_setzero_si256(), acc1 = _mm256_setzero_si256();
      for (int t = 0; t < taps; ++t) {
        __m256i x0, x1;
        load16(px.tap(t) + c0, count, x0, x1);
        const int32_t* w = weights + t * c_stride + c0;
        acc0 = _mm256_add_epi32(acc0, _mm256_madd_epi16(x0, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w))));
        acc1 = _mm256_add_epi32(acc1, _mm256_madd_epi16(x1, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + 8))));
      }
      acc0 = _mm256_add_epi32(acc0, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bias + c0)));
      acc1 = _mm256_add_epi32(acc1, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bias + c0 + 8)));
      const __m128i q = narrow16(requantize8(acc0, mult + c0, a.ep), requantize8(acc1, mult + c0 + 8, a.ep));
      if (count == kCB) {
        _mm_storeu_si128(reinterpret_cast<__m128i*>(out + c0), q);
      } else {
        alignas(16) uint8_t tmp[kCB];
        _mm_store_si128(reinterpret_cast<__m128i*>(tmp), q);
        std::memcpy(out + c0, tmp, count);
      }
    }
  });
}

constexpr DwConvKernels kKernels = {"avx2", dwconv};

}  // namespace

const DwConvKernels* dwconv_kernels() { return &kKernels; }

}  // namespace qr::avx2
