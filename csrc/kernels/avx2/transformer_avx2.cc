// The x86 paths' transformer kernels: kernels/transformer_body.inc built with -mavx2 (the vectoriser
// widens its elementwise loops), with the register tile below: the same IEEE products and sums per
// element as ref's dot_tile (separate mul and add, no FMA), so the bits of the scalar path.
#include <immintrin.h>

#include <cstring>

#include "kernels/avx2/avx2.h"

namespace qr::avx2 {
namespace {

constexpr int kTileQ = 4, kTileK = 16;

// acc (4 x 16) = a (4 rows, lda apart) . b (steps rows of 16, ldb apart): 8 named ymm accumulators (an
// array of them was kept in memory too, a store per add).
void dot_tile(const float* a, int64_t lda, const float* b, int64_t ldb, int64_t steps, float (*acc)[kTileK]) {
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
  _mm256_storeu_ps(acc[0], c00);
  _mm256_storeu_ps(acc[0] + 8, c01);
  _mm256_storeu_ps(acc[1], c10);
  _mm256_storeu_ps(acc[1] + 8, c11);
  _mm256_storeu_ps(acc[2], c20);
  _mm256_storeu_ps(acc[2] + 8, c21);
  _mm256_storeu_ps(acc[3], c30);
  _mm256_storeu_ps(acc[3] + 8, c31);
}

#include "kernels/transformer_body.inc"

constexpr TransformerKernels kKernels = {QR_ISA_NAME, attention_head, gelu};
}  // namespace

const TransformerKernels* transformer_kernels() { return &kKernels; }

}  // namespace qr::avx2
