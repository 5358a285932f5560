// The elementwise ops for AVX2: the quantized add, 32 values per step, with the float operations
// of ref's add in the same order (two float32 products, their sum, max, min, rounding half to even).
#include <immintrin.h>

#include <cstring>

#include "kernels/avx2/avx2.h"

namespace qr::avx2 {
namespace {

// float32(q - zp) * m for 8 bytes at p.
inline __m256 term8(const uint8_t* p, __m256i zp, __m256 m) {
  const __m128i q = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
  return _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_cvtepu8_epi32(q), zp)), m);
}

void add(const uint8_t* a, const uint8_t* b, uint8_t* y, int64_t n, const AddParams& p) {
  const __m256i za = _mm256_set1_epi32(p.za), zb = _mm256_set1_epi32(p.zb);
  const __m256i zy16 = _mm256_set1_epi16(static_cast<int16_t>(p.zy));
  const __m256 ma = _mm256_set1_ps(p.ma), mb = _mm256_set1_ps(p.mb);
  const __m256 lo = _mm256_set1_ps(p.lo), hi = _mm256_set1_ps(p.hi);
  // The packs interleave 128-bit lanes; this puts the 8 groups of 4 bytes back in order.
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  // 8 outputs as int32 in [lo, hi] (relative to zy): exact integers, so vcvtps2dq's rounding
  // (MXCSR: half to even) is the reference's nearbyint.
  auto eight = [&](const uint8_t* pa, const uint8_t* pb) {
    const __m256 v = _mm256_add_ps(term8(pa, za, ma), term8(pb, zb, mb));
    return _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(v, lo), hi));
  };
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    // Values in [-255, 255] plus zy in [0, 255]: no int16 add overflows, and packus only narrows.
    const __m256i w0 = _mm256_add_epi16(_mm256_packs_epi32(eight(a + i, b + i), eight(a + i + 8, b + i + 8)), zy16);
    const __m256i w1 =
        _mm256_add_epi16(_mm256_packs_epi32(eight(a + i + 16, b + i + 16), eight(a + i + 24, b + i + 24)), zy16);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(y + i),
                        _mm256_permutevar8x32_epi32(_mm256_packus_epi16(w0, w1), order));
  }
  if (i < n) {  // the tail through a 32-byte buffer (zeros past the end are computed and dropped)
    alignas(32) uint8_t ta[32] = {}, tb[32] = {}, ty[32];
    const size_t rest = static_cast<size_t>(n - i);
    std::memcpy(ta, a + i, rest);
    std::memcpy(tb, b + i, rest);
    add(ta, tb, ty, 32, p);
    std::memcpy(y + i, ty, rest);
  }
}

constexpr EltwiseKernels kKernels = {QR_ISA_NAME, add};

}  // namespace

const EltwiseKernels* eltwise_kernels() { return &kKernels; }

}  // namespace qr::avx2
