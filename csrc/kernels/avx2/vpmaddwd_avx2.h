// The AVX2 vpmaddwd K loop shared by the exact GEMM (gemm_avx2.cc) and the Winograd kernel
// (winograd_avx2.cc): R rows of int16 K pairs against one 16-column panel of int16 pairs
// (docs/kernels.md, "avx2"). Internal linkage, as epilogue_avx2.h: each unit keeps its own copy.
#pragma once
#include <immintrin.h>

#include <cstddef>
#include <cstdint>

namespace {

// acc[r] += rows r of A (one int32 K pair per word, row r at arow[r]) times the 16-column panel b
// (64 bytes per K pair), for kp pairs; pf: the line to prefetch beside each pair's.
template <int R>
__attribute__((always_inline)) inline void vpmaddwd_loop(const int32_t* const* arow, const int8_t* b, int kp, ptrdiff_t pf,
                                                         __m256i (&acc)[R][2]) {
  for (int p = 0; p < kp; ++p) {
    const __m256i b0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + p * 64));
    const __m256i b1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + p * 64 + 32));
    __builtin_prefetch(b + p * 64 + pf, 0, 2);
#pragma GCC unroll 5
    for (int r = 0; r < R; ++r) {
      const __m256i av = _mm256_set1_epi32(arow[r][p]);
      acc[r][0] = _mm256_add_epi32(acc[r][0], _mm256_madd_epi16(av, b0));
      acc[r][1] = _mm256_add_epi32(acc[r][1], _mm256_madd_epi16(av, b1));
    }
  }
}

}  // namespace
