// The AVX-512 GEMM epilogue (bias, requantization, masked store of one row of 32 outputs), shared
// by the AVX-512 VNNI and AMX units. Only units compiled with AVX-512 flags (or against SIMDe)
// include it; its functions have internal linkage, so each unit keeps its own copy.
#pragma once
#include <cstdint>

#include "kernels/avx512_intrinsics.h"
#include "kernels/kernels.h"

namespace {

inline uint16_t lane_mask(int valid) { return valid >= 16 ? 0xFFFF : valid <= 0 ? 0 : static_cast<uint16_t>((1u << valid) - 1); }

// The epilogue's broadcast constants, built once per call rather than once per vector.
struct RequantConsts {
  __m512 lo, hi;
  __m512i zp;
  explicit RequantConsts(const qr::Epilogue& ep)
      : lo(_mm512_set1_ps(static_cast<float>(ep.lo - ep.out_zp))),
        hi(_mm512_set1_ps(static_cast<float>(ep.hi - ep.out_zp))),
        zp(_mm512_set1_epi32(ep.out_zp)) {}
};

// Same float operations, in the same order, as qr::ref::requantize.
inline __m512i requantize16(__m512i acc, const float* mult, const RequantConsts& k) {
  __m512 f = _mm512_mul_ps(_mm512_cvtepi32_ps(acc), _mm512_loadu_ps(mult));
  f = _mm512_min_ps(_mm512_max_ps(f, k.lo), k.hi);
  return _mm512_add_epi32(_mm512_cvtps_epi32(f), k.zp);  // MXCSR: half to even
}

// Stores the first `valid` (any int; <= 0 stores nothing) of 16 results in [0, 255] as bytes.
// Truncating each lane to its low byte is exact for them. vpmovdb to a register and a plain store:
// its masked store-to-memory form is several times slower on some CPUs (Zen 4).
inline void store_bytes16(uint8_t* out, __m512i q, int valid) {
  if (valid >= 16)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out), _mm512_cvtepi32_epi8(q));
  else if (valid > 0)
    _mm_mask_storeu_epi8(out, lane_mask(valid), _mm512_cvtepi32_epi8(q));
}

// Stores the first `valid` (<= 32) of the 32 outputs v0 (columns col..col+15), v1 (col+16..col+31).
inline void store_row32(__m512i v0, __m512i v1, const qr::Epilogue& ep, int col, void* c_row, int valid) {
  if (ep.bias) {
    v0 = _mm512_add_epi32(v0, _mm512_loadu_si512(ep.bias + col));
    v1 = _mm512_add_epi32(v1, _mm512_loadu_si512(ep.bias + col + 16));
  }
  const uint16_t m0 = lane_mask(valid), m1 = lane_mask(valid - 16);
  if (!ep.requantize) {
    int32_t* out = static_cast<int32_t*>(c_row);
    _mm512_mask_storeu_epi32(out, m0, v0);
    _mm512_mask_storeu_epi32(out + 16, m1, v1);
    return;
  }
  uint8_t* out = static_cast<uint8_t*>(c_row);
  const RequantConsts k(ep);
  store_bytes16(out, requantize16(v0, ep.mult + col, k), valid);
  if (valid > 16) store_bytes16(out + 16, requantize16(v1, ep.mult + col + 16, k), valid - 16);
}

// store_row32 for the R rows of a micro-kernel's tile (rows c_row_bytes apart). The requantizing
// path reads the epilogue once into locals and builds its constants once per tile: through the
// reference, every byte store could alias the epilogue's fields and force reloads per row.
template <int R>
inline void store_rows32(__m512i (&acc)[R][2], const qr::Epilogue& ep, int col, uint8_t* c, size_t c_row_bytes,
                         int valid) {
  if (!ep.requantize) {
#pragma GCC unroll 14
    for (int r = 0; r < R; ++r) store_row32(acc[r][0], acc[r][1], ep, col, c + r * c_row_bytes, valid);
    return;
  }
  const RequantConsts k(ep);
  const int32_t* bias = ep.bias ? ep.bias + col : nullptr;
  const float* mult = ep.mult + col;
#pragma GCC unroll 14
  for (int r = 0; r < R; ++r) {
    __m512i v0 = acc[r][0], v1 = acc[r][1];
    if (bias) {
      v0 = _mm512_add_epi32(v0, _mm512_loadu_si512(bias));
      v1 = _mm512_add_epi32(v1, _mm512_loadu_si512(bias + 16));
    }
    uint8_t* out = c + r * c_row_bytes;
    store_bytes16(out, requantize16(v0, mult, k), valid);
    if (valid > 16) store_bytes16(out + 16, requantize16(v1, mult + 16, k), valid - 16);
  }
}

}  // namespace
