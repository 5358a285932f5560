// The AVX2 vpmaddwd K loop shared by the exact GEMM (gemm_avx2.cc) and the Winograd kernel
// (winograd_avx2.cc): R rows of int16 K pairs against one 16-column panel of int16 pairs
// (docs/kernels.md, "avx2"). Internal linkage, as epilogue_avx2.h: each unit keeps its own copy.
#pragma once
#include <immintrin.h>

#include <cstddef>
#include <cstdint>

namespace {

// acc[r] += rows r of A (one int32 K pair per word, row r at arow[r]) times the 16-column panel b,
// for kp pairs; pf: the line to prefetch beside each pair's. b holds int16 pairs, 64 bytes per K
// pair, or with kInt8B int8 pairs, 32 bytes per K pair, sign-extended in registers (vpmovsxbw: no
// slower beside 5 rows' products on Zen 3, and half the bytes to keep and stream).
template <int R, bool kInt8B = false>
__attribute__((always_inline)) inline void vpmaddwd_loop(const int32_t* const* arow, const int8_t* b, int kp, ptrdiff_t pf,
                                                         __m256i (&acc)[R][2]) {
  constexpr int kPairBytes = kInt8B ? 32 : 64;
  for (int p = 0; p < kp; ++p) {
    const int8_t* bp = b + p * kPairBytes;
    __m256i b0, b1;
    if constexpr (kInt8B) {
      b0 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(bp)));
      b1 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(bp + 16)));
    } else {
      b0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bp));
      b1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bp + 32));
    }
    __builtin_prefetch(bp + pf, 0, 2);
#pragma GCC unroll 5
    for (int r = 0; r < R; ++r) {
      const __m256i av = _mm256_set1_epi32(arow[r][p]);
      acc[r][0] = _mm256_add_epi32(acc[r][0], _mm256_madd_epi16(av, b0));
      acc[r][1] = _mm256_add_epi32(acc[r][1], _mm256_madd_epi16(av, b1));
    }
  }
}

}  // namespace
