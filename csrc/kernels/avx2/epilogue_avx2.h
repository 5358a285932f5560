// The AVX2 requantization of 8 int32 lanes and the GEMM kernels' 16-column row store, shared by
// the AVX2 units (internal linkage: each unit that includes it keeps its own copy, compiled with
// its own flags).
#pragma once
#include <immintrin.h>

#include <cstring>

#include "kernels/kernels.h"

namespace {

// The epilogue's broadcast constants, for loops that build them once rather than once per vector.
struct RequantConsts {
  __m256 lo, hi;
  __m256i zp;
  explicit RequantConsts(const qr::Epilogue& ep)
      : lo(_mm256_set1_ps(static_cast<float>(ep.lo - ep.out_zp))),
        hi(_mm256_set1_ps(static_cast<float>(ep.hi - ep.out_zp))),
        zp(_mm256_set1_epi32(ep.out_zp)) {}
};

// Same float operations, in the same order, as qr::ref::requantize; the bias is already added.
inline __m256i requantize8(__m256i acc, const float* mult, const RequantConsts& k) {
  __m256 f = _mm256_mul_ps(_mm256_cvtepi32_ps(acc), _mm256_loadu_ps(mult));
  f = _mm256_min_ps(_mm256_max_ps(f, k.lo), k.hi);
  return _mm256_add_epi32(_mm256_cvtps_epi32(f), k.zp);  // MXCSR: half to even
}

inline __m256i requantize8(__m256i acc, const float* mult, const qr::Epilogue& ep) {
  return requantize8(acc, mult, RequantConsts(ep));
}

// Narrows two vectors of results in [0, 255] to 16 bytes in order. The saturating packs only
// narrow; the permutes undo their per-128-bit-lane interleaving.
inline __m128i narrow16(__m256i q0, __m256i q1) {
  __m256i w = _mm256_permute4x64_epi64(_mm256_packs_epi32(q0, q1), 0xD8);
  return _mm256_castsi256_si128(_mm256_permute4x64_epi64(_mm256_packus_epi16(w, w), 0x08));
}

// Adds the bias and stores one row of 16 GEMM outputs (the first `valid` of them): int32, or
// requantized to uint8 with the same float operations, in the same order, as ref::requantize.
// v0 holds columns col..col+7, v1 col+8..col+15.
inline void store_row16(__m256i v0, __m256i v1, const qr::Epilogue& ep, int col, void* c_row, int valid) {
  if (ep.bias) {
    v0 = _mm256_add_epi32(v0, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ep.bias + col)));
    v1 = _mm256_add_epi32(v1, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ep.bias + col + 8)));
  }
  if (!ep.requantize) {
    int32_t* out = static_cast<int32_t*>(c_row);
    if (valid == 16) {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), v0);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 8), v1);
    } else {
      alignas(32) int32_t tmp[16];
      _mm256_store_si256(reinterpret_cast<__m256i*>(tmp), v0);
      _mm256_store_si256(reinterpret_cast<__m256i*>(tmp + 8), v1);
      std::memcpy(out, tmp, valid * sizeof(int32_t));
    }
    return;
  }
  const __m128i row = narrow16(requantize8(v0, ep.mult + col, ep), requantize8(v1, ep.mult + col + 8, ep));
  if (valid == 16) {
    _mm_storeu_si128(static_cast<__m128i*>(c_row), row);
  } else {
    alignas(16) uint8_t tmp[16];
    _mm_store_si128(reinterpret_cast<__m128i*>(tmp), row);
    std::memcpy(c_row, tmp, valid);
  }
}

// store_row16 for the R rows of a micro-kernel's tile (acc[r][0] columns col..col+7, acc[r][1]
// col+8..col+15; rows c_row_bytes apart). The requantizing path reads the epilogue once into
// locals and builds its constants once per tile: through the reference, every byte store could
// alias the epilogue's fields and force them to be reloaded and re-broadcast per row.
template <int R>
inline void store_rows16(__m256i (&acc)[R][2], const qr::Epilogue& ep, int col, uint8_t* c, size_t c_row_bytes,
                         int valid) {
  if (!ep.requantize) {
#pragma GCC unroll 5
    for (int r = 0; r < R; ++r) store_row16(acc[r][0], acc[r][1], ep, col, c + r * c_row_bytes, valid);
    return;
  }
  const RequantConsts k(ep);
  const int32_t* bias = ep.bias ? ep.bias + col : nullptr;
  const float* mult = ep.mult + col;
#pragma GCC unroll 5
  for (int r = 0; r < R; ++r) {
    __m256i v0 = acc[r][0], v1 = acc[r][1];
    if (bias) {
      v0 = _mm256_add_epi32(v0, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bias)));
      v1 = _mm256_add_epi32(v1, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bias + 8)));
    }
    const __m128i row = narrow16(requantize8(v0, mult, k), requantize8(v1, mult + 8, k));
    uint8_t* out = c + r * c_row_bytes;
    if (valid == 16) {
      _mm_storeu_si128(reinterpret_cast<__m128i*>(out), row);
    } else {
      alignas(16) uint8_t tmp[16];
      _mm_store_si128(reinterpret_cast<__m128i*>(tmp), row);
      std::memcpy(out, tmp, valid);
    }
  }
}

}  // namespace
