// The elementwise ops for AVX2: the quantized add and mul, 32 values per step, with the float
// operations of ref's in the same order (for add: two float32 products, their sum, max, min,
// rounding half to even; for mul: the exact product of the centred codes, times m, max, min, rounding).
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

// 32 outputs from four groups of 8 int32 values in [lo, hi] (relative to zy) into y. Values in
// [-255, 255] plus zy in [0, 255]: no int16 add overflows, and packus only narrows.
inline void store32(uint8_t* y, __m256i v0, __m256i v1, __m256i v2, __m256i v3, __m256i zy16) {
  // The packs interleave 128-bit lanes; this puts the 8 groups of 4 bytes back in order.
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  const __m256i w0 = _mm256_add_epi16(_mm256_packs_epi32(v0, v1), zy16);
  const __m256i w1 = _mm256_add_epi16(_mm256_packs_epi32(v2, v3), zy16);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(y), _mm256_permutevar8x32_epi32(_mm256_packus_epi16(w0, w1), order));
}

// The tail of n < 32 values through 32-byte buffers (zeros past the end are computed and dropped):
// body(a, b, y) computes 32 values.
template <class T, class Body>
inline void tail32(const uint8_t* a, const T* b, uint8_t* y, int64_t n, Body body) {
  alignas(32) uint8_t ta[32] = {}, ty[32];
  alignas(32) T tb[32] = {};
  const size_t rest = static_cast<size_t>(n);
  std::memcpy(ta, a, rest);
  std::memcpy(tb, b, rest * sizeof(T));
  body(ta, tb, ty);
  std::memcpy(y, ty, rest);
}

void add(const uint8_t* a, const uint8_t* b, uint8_t* y, int64_t n, const AddParams& p) {
  const __m256i za = _mm256_set1_epi32(p.za), zb = _mm256_set1_epi32(p.zb);
  const __m256i zy16 = _mm256_set1_epi16(static_cast<int16_t>(p.zy));
  const __m256 ma = _mm256_set1_ps(p.ma), mb = _mm256_set1_ps(p.mb);
  const __m256 lo = _mm256_set1_ps(p.lo), hi = _mm256_set1_ps(p.hi);
  // 8 outputs as int32 in [lo, hi] (relative to zy): exact integers, so vcvtps2dq's rounding
  // (MXCSR: half to even) is the reference's nearbyint.
  auto eight = [&](const uint8_t* pa, const uint8_t* pb) {
    const __m256 v = _mm256_add_ps(term8(pa, za, ma), term8(pb, zb, mb));
    return _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(v, lo), hi));
  };
  auto body = [&](const uint8_t* pa, const uint8_t* pb, uint8_t* py) {
    store32(py, eight(pa, pb), eight(pa + 8, pb + 8), eight(pa + 16, pb + 16), eight(pa + 24, pb + 24), zy16);
  };
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) body(a + i, b + i, y + i);
  if (i < n) tail32(a + i, b + i, y + i, n - i, body);
}

// float32(q - zp) for 8 bytes at p: exact.
inline __m256 centred8(const uint8_t* p, __m256 zp) {
  const __m128i q = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
  return _mm256_sub_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(q)), zp);
}

// mul and mul_centred: fb(j) gives 8 centred factors of b at offset j; the order of the float
// operations is ref's: (a * b) * m, max, min, rounding half to even.
template <class Factors>
inline void mul_body(const uint8_t* a, Factors fb, uint8_t* y, const MulParams& p) {
  const __m256 za = _mm256_set1_ps(static_cast<float>(p.za)), m = _mm256_set1_ps(p.m);
  const __m256 lo = _mm256_set1_ps(p.lo), hi = _mm256_set1_ps(p.hi);
  auto eight = [&](int j) {
    const __m256 v = _mm256_mul_ps(_mm256_mul_ps(centred8(a + j, za), fb(j)), m);
    return _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(v, lo), hi));
  };
  store32(y, eight(0), eight(8), eight(16), eight(24), _mm256_set1_epi16(static_cast<int16_t>(p.zy)));
}

void mul(const uint8_t* a, const uint8_t* b, uint8_t* y, int64_t n, const MulParams& p) {
  const __m256 zb = _mm256_set1_ps(static_cast<float>(p.zb));
  auto body = [&](const uint8_t* pa, const uint8_t* pb, uint8_t* py) {
    mul_body(pa, [&](int j) { return centred8(pb + j, zb); }, py, p);
  };
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) body(a + i, b + i, y + i);
  if (i < n) tail32(a + i, b + i, y + i, n - i, body);
}

void mul_periodic(const uint8_t* a, const float* fb, int64_t period, uint8_t* y, int64_t n, const MulParams& p) {
  int64_t i = 0, phase = 0;  // phase = i % period
  for (; i + 32 <= n; i += 32) {
    const float* f = fb + phase;  // 32 factors, contiguous in the periodic copy
    mul_body(a + i, [&](int j) { return _mm256_loadu_ps(f + j); }, y + i, p);
    phase += 32;
    while (phase >= period) phase -= period;
  }
  if (i < n) {
    tail32(a + i, fb + phase, y + i, n - i, [&](const uint8_t* pa, const float* pb, uint8_t* py) {
      mul_body(pa, [&](int j) { return _mm256_loadu_ps(pb + j); }, py, p);
    });
  }
}

constexpr EltwiseKernels kKernels = {QR_ISA_NAME, add, mul, mul_periodic};

}  // namespace

const EltwiseKernels* eltwise_kernels() { return &kKernels; }

}  // namespace qr::avx2
