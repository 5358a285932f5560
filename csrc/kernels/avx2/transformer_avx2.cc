// The x86 paths' transformer kernels: kernels/transformer_body.inc built with -mavx2 (the vectoriser
// widens its elementwise loops), with the register tile below: the same IEEE products and sums per
// element as ref's dot_tile (separate mul and add, no FMA), so the bits of the scalar path.
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "kernels/avx2/avx2.h"

namespace qr::avx2 {
namespace {

constexpr int kTileQ = 4, kTileK = 16;

// The 4 x 16 sums of a (4 rows, lda apart) . b (steps rows of 16, ldb apart) in 8 named ymm accumulators
// (an array of them was kept in memory too, a store per add), finished in registers: scaled and biased
// through a float array, the scores' epilogue was a tenth of attention (the vectoriser shuffled it).
void dot_tile(const float* a, int64_t lda, const float* b, int64_t ldb, int64_t steps, float scale, const float* bias,
              float* out, int64_t ldo) {
  __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00;
  const float *a0 = a, *a1 = a + lda, *a2 = a + 2 * lda, *a3 = a + 3 * lda;
  for (int64_t s = 0; s < steps; ++s) {
    const __m256 b0 = _mm256_loadu_ps(b + s * ldb), b1 = _mm256_loadu_ps(b + s * ldb + 8);
    __m256 v = _mm256_broadcast_ss(a0 + s);
    c00 = _mm256_add_ps(c00, _mm256_mul_ps(v, b0));
    c01 = _mm256_add_ps(c01, _mm256_mul_ps(v, b1));
    v = _mm256_broadcast_ss(a1 + s);
    c10 = _mm256_add_ps(c10, _mm256_mul_ps(v, b0));
    c11 = _mm256_add_ps(c11, _mm256_mul_ps(v, b1));
    v = _mm256_broadcast_ss(a2 + s);
    c20 = _mm256_add_ps(c20, _mm256_mul_ps(v, b0));
    c21 = _mm256_add_ps(c21, _mm256_mul_ps(v, b1));
    v = _mm256_broadcast_ss(a3 + s);
    c30 = _mm256_add_ps(c30, _mm256_mul_ps(v, b0));
    c31 = _mm256_add_ps(c31, _mm256_mul_ps(v, b1));
  }
  if (bias) {
    const __m256 sv = _mm256_set1_ps(scale), b0 = _mm256_loadu_ps(bias), b1 = _mm256_loadu_ps(bias + 8);
    c00 = _mm256_add_ps(_mm256_mul_ps(c00, sv), b0);
    c01 = _mm256_add_ps(_mm256_mul_ps(c01, sv), b1);
    c10 = _mm256_add_ps(_mm256_mul_ps(c10, sv), b0);
    c11 = _mm256_add_ps(_mm256_mul_ps(c11, sv), b1);
    c20 = _mm256_add_ps(_mm256_mul_ps(c20, sv), b0);
    c21 = _mm256_add_ps(_mm256_mul_ps(c21, sv), b1);
    c30 = _mm256_add_ps(_mm256_mul_ps(c30, sv), b0);
    c31 = _mm256_add_ps(_mm256_mul_ps(c31, sv), b1);
  }
  _mm256_storeu_ps(out, c00);
  _mm256_storeu_ps(out + 8, c01);
  _mm256_storeu_ps(out + ldo, c10);
  _mm256_storeu_ps(out + ldo + 8, c11);
  _mm256_storeu_ps(out + 2 * ldo, c20);
  _mm256_storeu_ps(out + 2 * ldo + 8, c21);
  _mm256_storeu_ps(out + 3 * ldo, c30);
  _mm256_storeu_ps(out + 3 * ldo + 8, c31);
}

// The min and max lanes of quantize_row: vminps(x, lo) is x < lo ? x : lo lane by lane, the body's select
// (the vectoriser left that loop scalar, half of quantize_row's time).
int64_t minmax_lanes(const float* x, int64_t k, float* lo8, float* hi8) {
  __m256 lo = _mm256_loadu_ps(lo8), hi = _mm256_loadu_ps(hi8);
  int64_t i = 0;
  for (; i + 8 <= k; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    lo = _mm256_min_ps(v, lo);
    hi = _mm256_max_ps(v, hi);
  }
  _mm256_storeu_ps(lo8, lo);
  _mm256_storeu_ps(hi8, hi);
  return i;
}

// kt = k transposed in 8 x 8 blocks (a scalar copy with writes seq floats apart was an eighth of
// attention's time: every write to one cache set); the edges are copied one by one.
void transpose_keys(const float* k, int64_t ld, int64_t seq, int64_t dh, float* kt, int64_t ldt) {
  const int64_t j8 = seq - seq % 8, d8 = dh - dh % 8;
  for (int64_t j = 0; j < j8; j += 8)
    for (int64_t d = 0; d < d8; d += 8) {
      const float* src = k + j * ld + d;
      const __m256 r0 = _mm256_loadu_ps(src), r1 = _mm256_loadu_ps(src + ld), r2 = _mm256_loadu_ps(src + 2 * ld),
                   r3 = _mm256_loadu_ps(src + 3 * ld), r4 = _mm256_loadu_ps(src + 4 * ld),
                   r5 = _mm256_loadu_ps(src + 5 * ld), r6 = _mm256_loadu_ps(src + 6 * ld),
                   r7 = _mm256_loadu_ps(src + 7 * ld);
      // Pairs of keys interleaved, then dims (0, 4), (1, 5), (2, 6), (3, 7) of keys 0-3 and 4-7 in the halves.
      const __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1), t2 = _mm256_unpacklo_ps(r2, r3),
                   t3 = _mm256_unpackhi_ps(r2, r3), t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5),
                   t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
      const __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE),
                   s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE),
                   s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE),
                   s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
      float* dst = kt + d * ldt + j;
      _mm256_storeu_ps(dst, _mm256_permute2f128_ps(s0, s4, 0x20));
      _mm256_storeu_ps(dst + ldt, _mm256_permute2f128_ps(s1, s5, 0x20));
      _mm256_storeu_ps(dst + 2 * ldt, _mm256_permute2f128_ps(s2, s6, 0x20));
      _mm256_storeu_ps(dst + 3 * ldt, _mm256_permute2f128_ps(s3, s7, 0x20));
      _mm256_storeu_ps(dst + 4 * ldt, _mm256_permute2f128_ps(s0, s4, 0x31));
      _mm256_storeu_ps(dst + 5 * ldt, _mm256_permute2f128_ps(s1, s5, 0x31));
      _mm256_storeu_ps(dst + 6 * ldt, _mm256_permute2f128_ps(s2, s6, 0x31));
      _mm256_storeu_ps(dst + 7 * ldt, _mm256_permute2f128_ps(s3, s7, 0x31));
    }
  for (int64_t d = 0; d < dh; ++d)
    for (int64_t j = d < d8 ? j8 : 0; j < seq; ++j) kt[d * ldt + j] = k[j * ld + d];
}

#include "kernels/transformer_body.inc"

constexpr TransformerKernels kKernels = {QR_ISA_NAME, attention_head, attention_scratch_floats, gelu,
                                         quantize_row, quantize_row_static, dequantize_row};
}  // namespace

const TransformerKernels* transformer_kernels() { return &kKernels; }

}  // namespace qr::avx2
