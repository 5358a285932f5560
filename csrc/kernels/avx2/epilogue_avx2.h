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
  const __m256i zp16 = _mm256_set1_epi16(static_cast<int16_t>(ep.out_zp));
  // The float steps of requantize8 without its zero-point add: values in [lo - zp, hi - zp].
  auto scaled = [&](__m256i v, int half) {
    if (bias) v = _mm256_add_epi32(v, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bias + 8 * half)));
    __m256 f = _mm256_mul_ps(_mm256_cvtepi32_ps(v), _mm256_loadu_ps(mult + 8 * half));
    f = _mm256_min_ps(_mm256_max_ps(f, k.lo), k.hi);
    return _mm256_cvtps_epi32(f);  // MXCSR: half to even
  };
  auto store = [&](uint8_t* out, __m128i row) {
    if (valid == 16) {
      _mm_storeu_si128(reinterpret_cast<__m128i*>(out), row);
    } else {
      alignas(16) uint8_t tmp[16];
      _mm_store_si128(reinterpret_cast<__m128i*>(tmp), row);
      std::memcpy(out, tmp, valid);
    }
  };
  // Two rows at a time share the narrowing: packs to int16, the zero point added there (exact:
  // every value ends in [lo, hi]), one packus for both rows, whose 4-byte groups one vpermd puts
  // in order (row r in the low half, row r + 1 in the high half). 5 shuffles per pair of rows
  // where narrow16 takes 4 per row.
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  int r = 0;
#pragma GCC unroll 2
  for (; r + 2 <= R; r += 2) {
    const __m256i p0 = _mm256_add_epi16(_mm256_packs_epi32(scaled(acc[r][0], 0), scaled(acc[r][1], 1)), zp16);
    const __m256i p1 = _mm256_add_epi16(_mm256_packs_epi32(scaled(acc[r + 1][0], 0), scaled(acc[r + 1][1], 1)), zp16);
    const __m256i both = _mm256_permutevar8x32_epi32(_mm256_packus_epi16(p0, p1), order);
    store(c + r * c_row_bytes, _mm256_castsi256_si128(both));
    store(c + (r + 1) * c_row_bytes, _mm256_extracti128_si256(both, 1));
  }
  if (r < R) {
    const __m256i p = _mm256_add_epi16(_mm256_packs_epi32(scaled(acc[r][0], 0), scaled(acc[r][1], 1)), zp16);
    store(c + r * c_row_bytes, _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(_mm256_packus_epi16(p, p), order)));
  }
}

}  // namespace
