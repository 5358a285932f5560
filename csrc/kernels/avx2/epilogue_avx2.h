// The AVX2 requantization of int32 lanes to bytes and the GEMM kernels' 16-column row store, shared by
// the AVX2 units (internal linkage: each unit that includes it keeps its own copy, compiled with
// its own flags).
#pragma once
#include <immintrin.h>

#include <cstring>

#include "kernels/kernels.h"

namespace {

// The requantization of ref::requantize, zp + round(min(max(f, lo - zp), hi - zp)) with f =
// float(acc + bias) * mult, in this order:
//   scale_round8  f, the upper clamp in float, cvtps2dq (MXCSR: half to even);
//   pack16        packs to int16 and the zero point added there;
//   to_bytes32    packus to bytes, then the lower clamp as a byte max.
// Moving the lower clamp after the rounding keeps every value: rounding is monotone and lo - zp is
// an integer, so max(round(f), lo - zp) = round(max(f, lo - zp)). A value far below it stays below
// it on the way: packs saturates it to -32768, the zero point leaves it negative, packus makes it
// 0 (cvtps2dq's out-of-range result, INT32_MIN, is just as negative). No value above hi - zp gets
// that far, so no int16 add can wrap. The byte max does 32 outputs where a float max did 8.

// The broadcast constants, for loops that build them once rather than once per vector.
struct RequantConsts {
  __m256 hi;      // hi - zp, the upper clamp
  __m256i zp16;   // the zero point in int16 lanes
  __m256i lo8;    // lo, the lower clamp, in bytes
  __m256i order;  // the dword order that undoes packs and packus' per-128-bit-lane interleaving
  explicit RequantConsts(const qr::Epilogue& ep)
      : hi(_mm256_set1_ps(static_cast<float>(ep.hi - ep.out_zp))),
        zp16(_mm256_set1_epi16(static_cast<int16_t>(ep.out_zp))),
        lo8(_mm256_set1_epi8(static_cast<char>(ep.lo))),
        order(_mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)) {}
};

// 8 lanes (bias already added), scaled, clamped above and rounded; no zero point yet.
inline __m256i scale_round8(__m256i acc, const float* mult, const RequantConsts& k) {
  return _mm256_cvtps_epi32(_mm256_min_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(acc), _mm256_loadu_ps(mult)), k.hi));
}

// Two scale_round8 results (outputs 0-7 and 8-15) as int16 with the zero point added.
inline __m256i pack16(__m256i q0, __m256i q1, const RequantConsts& k) {
  return _mm256_add_epi16(_mm256_packs_epi32(q0, q1), k.zp16);
}

// Two pack16 results as 32 bytes: p0's 16 outputs in order, then p1's.
inline __m256i to_bytes32(__m256i p0, __m256i p1, const RequantConsts& k) {
  return _mm256_permutevar8x32_epi32(_mm256_max_epu8(_mm256_packus_epi16(p0, p1), k.lo8), k.order);
}

// 16 outputs (v0 outputs 0-7, v1 8-15, bias added) requantized to 16 bytes in order.
inline __m128i requantize16(__m256i v0, __m256i v1, const float* mult, const RequantConsts& k) {
  const __m256i p = pack16(scale_round8(v0, mult, k), scale_round8(v1, mult + 8, k), k);
  return _mm256_castsi256_si128(to_bytes32(p, p, k));
}

// Stores the first `valid` (<= 16) bytes of row at out.
inline void store_bytes16(void* out, __m128i row, int valid) {
  if (valid == 16) {
    _mm_storeu_si128(static_cast<__m128i*>(out), row);
  } else {
    alignas(16) uint8_t tmp[16];
    _mm_store_si128(reinterpret_cast<__m128i*>(tmp), row);
    std::memcpy(out, tmp, valid);
  }
}

// Adds the bias (16 values, or null) and stores one row of 16 GEMM outputs (the first `valid` of
// them): int32, or requantized to uint8 with the same float operations, in the same order, as
// ref::requantize. v0 holds columns col..col+7, v1 col+8..col+15.
inline void store_row16(__m256i v0, __m256i v1, const qr::Epilogue& ep, const int32_t* bias, int col, void* c_row,
                        int valid) {
  if (bias) {
    v0 = _mm256_add_epi32(v0, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bias)));
    v1 = _mm256_add_epi32(v1, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bias + 8)));
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
  store_bytes16(c_row, requantize16(v0, v1, ep.mult + col, RequantConsts(ep)), valid);
}

// The first value of the tile's accumulators: the bias of its 16 columns (col..col+15), or zero.
// A kernel that starts from it gives store_rows16 kBiasAdded, which then adds no bias. Exact: the
// int32 adds wrap, and the bias limit of requant.cc keeps the final sum in range.
inline void init_acc16(const qr::Epilogue& ep, int col, __m256i& v0, __m256i& v1) {
  if (ep.bias) {
    v0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ep.bias + col));
    v1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ep.bias + col + 8));
  } else {
    v0 = v1 = _mm256_setzero_si256();
  }
}

// store_row16 for the R rows of a micro-kernel's tile (acc[r][0] columns col..col+7, acc[r][1]
// col+8..col+15; rows c_row_bytes apart). The requantizing path reads the epilogue once into
// locals and builds its constants once per tile: through the reference, every byte store could
// alias the epilogue's fields and force them to be reloaded and re-broadcast per row.
template <int R, bool kBiasAdded = false>
inline void store_rows16(__m256i (&acc)[R][2], const qr::Epilogue& ep, int col, uint8_t* c, size_t c_row_bytes,
                         int valid) {
  const int32_t* bias = !kBiasAdded && ep.bias ? ep.bias + col : nullptr;
  if (!ep.requantize) {
#pragma GCC unroll 5
    for (int r = 0; r < R; ++r) store_row16(acc[r][0], acc[r][1], ep, bias, col, c + r * c_row_bytes, valid);
    return;
  }
  const RequantConsts k(ep);
  const float* mult = ep.mult + col;
  auto row16 = [&](__m256i v0, __m256i v1) {
    if (bias) {
      v0 = _mm256_add_epi32(v0, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bias)));
      v1 = _mm256_add_epi32(v1, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bias + 8)));
    }
    return pack16(scale_round8(v0, mult, k), scale_round8(v1, mult + 8, k), k);
  };
  // Two rows at a time share the narrowing (to_bytes32): row r in the low half, row r + 1 in the high.
  int r = 0;
#pragma GCC unroll 2
  for (; r + 2 <= R; r += 2) {
    const __m256i both = to_bytes32(row16(acc[r][0], acc[r][1]), row16(acc[r + 1][0], acc[r + 1][1]), k);
    store_bytes16(c + r * c_row_bytes, _mm256_castsi256_si128(both), valid);
    store_bytes16(c + (r + 1) * c_row_bytes, _mm256_extracti128_si256(both, 1), valid);
  }
  if (r < R) {
    const __m256i p = row16(acc[r][0], acc[r][1]);
    store_bytes16(c + r * c_row_bytes, _mm256_castsi256_si128(to_bytes32(p, p, k)), valid);
  }
}

}  // namespace
