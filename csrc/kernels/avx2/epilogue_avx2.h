// The AVX2 requantization of 8 int32 lanes, shared by the AVX2 units (internal linkage: each unit
// that includes it keeps its own copy, compiled with its own flags).
#pragma once
#include <immintrin.h>

#include "kernels/kernels.h"

namespace {

// Same float operations, in the same order, as qr::ref::requantize; the bias is already added.
inline __m256i requantize8(__m256i acc, const float* mult, const qr::Epilogue& ep) {
  const __m256 lo = _mm256_set1_ps(static_cast<float>(ep.lo - ep.out_zp));
  const __m256 hi = _mm256_set1_ps(static_cast<float>(ep.hi - ep.out_zp));
  __m256 f = _mm256_mul_ps(_mm256_cvtepi32_ps(acc), _mm256_loadu_ps(mult));
  f = _mm256_min_ps(_mm256_max_ps(f, lo), hi);
  return _mm256_add_epi32(_mm256_cvtps_epi32(f), _mm256_set1_epi32(ep.out_zp));  // MXCSR: half to even
}

// Narrows two vectors of results in [0, 255] to 16 bytes in order. The saturating packs only
// narrow; the permutes undo their per-128-bit-lane interleaving.
inline __m128i narrow16(__m256i q0, __m256i q1) {
  __m256i w = _mm256_permute4x64_epi64(_mm256_packs_epi32(q0, q1), 0xD8);
  return _mm256_castsi256_si128(_mm256_permute4x64_epi64(_mm256_packus_epi16(w, w), 0x08));
}

}  // namespace
