// The few AVX-512 intrinsics our kernels use that Debian's SIMDe (0.7.x) does not emulate yet,
// written with SIMDe's own types so the emulated build compiles the kernel sources unchanged.
// Semantics follow the Intel intrinsics guide; only the emulated build includes this file.
#pragma once
#include <cstdint>
#include <cstring>

#ifndef _mm512_cvtepi32_ps
static inline simde__m512 qr_emu_mm512_cvtepi32_ps(simde__m512i v) {
  simde__m256 lo = simde_mm256_cvtepi32_ps(simde_mm512_castsi512_si256(v));
  simde__m256 hi = simde_mm256_cvtepi32_ps(simde_mm512_extracti64x4_epi64(v, 1));
  return simde_mm512_insertf32x8(simde_mm512_castps256_ps512(lo), hi, 1);
}
#define _mm512_cvtepi32_ps(v) qr_emu_mm512_cvtepi32_ps(v)
#endif

#ifndef _mm512_cvtps_epi32
// Rounds per MXCSR (round half to even by default), as vcvtps2dq does.
static inline simde__m512i qr_emu_mm512_cvtps_epi32(simde__m512 v) {
  simde__m256 lo_ps = simde_mm512_castps512_ps256(v);
  simde__m256 hi_ps = simde_mm256_castsi256_ps(simde_mm512_extracti64x4_epi64(simde_mm512_castps_si512(v), 1));
  simde__m256i lo = simde_mm256_cvtps_epi32(lo_ps);
  simde__m256i hi = simde_mm256_cvtps_epi32(hi_ps);
  return simde_mm512_inserti64x4(simde_mm512_castsi256_si512(lo), hi, 1);
}
#define _mm512_cvtps_epi32(v) qr_emu_mm512_cvtps_epi32(v)
#endif

#ifndef _mm512_mask_storeu_epi32
static inline void qr_emu_mm512_mask_storeu_epi32(void* dst, uint16_t k, simde__m512i v) {
  int32_t lanes[16];
  simde_mm512_storeu_si512(lanes, v);
  for (int i = 0; i < 16; ++i)
    if ((k >> i) & 1) std::memcpy(static_cast<char*>(dst) + 4 * i, &lanes[i], 4);
}
#define _mm512_mask_storeu_epi32(dst, k, v) qr_emu_mm512_mask_storeu_epi32(dst, k, v)
#endif

#ifndef _mm512_cvtepu8_epi32
static inline simde__m512i qr_emu_mm512_cvtepu8_epi32(simde__m128i v) {
  simde__m256i lo = simde_mm256_cvtepu8_epi32(v);
  simde__m256i hi = simde_mm256_cvtepu8_epi32(simde_mm_srli_si128(v, 8));
  return simde_mm512_inserti64x4(simde_mm512_castsi256_si512(lo), hi, 1);
}
#define _mm512_cvtepu8_epi32(v) qr_emu_mm512_cvtepu8_epi32(v)
#endif

#ifndef _mm_maskz_loadu_epi8
// Masked-off bytes read as zero and are never touched in memory (so a tail load cannot fault).
static inline simde__m128i qr_emu_mm_maskz_loadu_epi8(uint16_t k, const void* src) {
  uint8_t bytes[16] = {};
  for (int i = 0; i < 16; ++i)
    if ((k >> i) & 1) bytes[i] = static_cast<const uint8_t*>(src)[i];
  return simde_mm_loadu_si128(bytes);
}
#define _mm_maskz_loadu_epi8(k, src) qr_emu_mm_maskz_loadu_epi8(k, src)
#endif

#ifndef _mm512_cvtepi32_epi8
// vpmovdb: each int32 lane truncated to its low byte.
static inline simde__m128i qr_emu_mm512_cvtepi32_epi8(simde__m512i v) {
  int32_t lanes[16];
  uint8_t bytes[16];
  simde_mm512_storeu_si512(lanes, v);
  for (int i = 0; i < 16; ++i) bytes[i] = static_cast<uint8_t>(lanes[i]);
  return simde_mm_loadu_si128(bytes);
}
#define _mm512_cvtepi32_epi8(v) qr_emu_mm512_cvtepi32_epi8(v)
#endif

#ifndef _mm_mask_storeu_epi8
static inline void qr_emu_mm_mask_storeu_epi8(void* dst, uint16_t k, simde__m128i v) {
  uint8_t bytes[16];
  simde_mm_storeu_si128(bytes, v);
  for (int i = 0; i < 16; ++i)
    if ((k >> i) & 1) static_cast<uint8_t*>(dst)[i] = bytes[i];
}
#define _mm_mask_storeu_epi8(dst, k, v) qr_emu_mm_mask_storeu_epi8(dst, k, v)
#endif

#ifndef _mm256_maskz_loadu_epi8
// 32 bytes; masked-off bytes read as zero and are never touched in memory (a tail load cannot fault).
static inline simde__m256i qr_emu_mm256_maskz_loadu_epi8(uint32_t k, const void* src) {
  uint8_t bytes[32] = {};
  for (int i = 0; i < 32; ++i)
    if ((k >> i) & 1) bytes[i] = static_cast<const uint8_t*>(src)[i];
  return simde_mm256_loadu_si256(bytes);
}
#define _mm256_maskz_loadu_epi8(k, src) qr_emu_mm256_maskz_loadu_epi8(k, src)
#endif

#ifndef _mm512_maskz_loadu_epi8
// 64 bytes; masked-off bytes read as zero and are never touched in memory (a tail load cannot fault).
static inline simde__m512i qr_emu_mm512_maskz_loadu_epi8(uint64_t k, const void* src) {
  uint8_t bytes[64] = {};
  for (int i = 0; i < 64; ++i)
    if ((k >> i) & 1) bytes[i] = static_cast<const uint8_t*>(src)[i];
  return simde_mm512_loadu_si512(bytes);
}
#define _mm512_maskz_loadu_epi8(k, src) qr_emu_mm512_maskz_loadu_epi8(k, src)
#endif

#ifndef _mm512_mask_storeu_epi8
// 64 bytes; masked-off bytes are never touched in memory (a tail store cannot fault).
static inline void qr_emu_mm512_mask_storeu_epi8(void* dst, uint64_t k, simde__m512i v) {
  uint8_t bytes[64];
  simde_mm512_storeu_si512(bytes, v);
  for (int i = 0; i < 64; ++i)
    if ((k >> i) & 1) static_cast<uint8_t*>(dst)[i] = bytes[i];
}
#define _mm512_mask_storeu_epi8(dst, k, v) qr_emu_mm512_mask_storeu_epi8(dst, k, v)
#endif

#ifndef _mm512_cvtepu8_epi16
// 32 bytes zero extended to 32 int16 lanes.
static inline simde__m512i qr_emu_mm512_cvtepu8_epi16(simde__m256i v) {
  simde__m256i lo = simde_mm256_cvtepu8_epi16(simde_mm256_castsi256_si128(v));
  simde__m256i hi = simde_mm256_cvtepu8_epi16(simde_mm256_extracti128_si256(v, 1));
  return simde_mm512_inserti64x4(simde_mm512_castsi256_si512(lo), hi, 1);
}
#define _mm512_cvtepu8_epi16(v) qr_emu_mm512_cvtepu8_epi16(v)
#endif

#ifndef _mm512_srai_epi32
// Arithmetic shift right of 16 int32 lanes by imm (< 32).
static inline simde__m512i qr_emu_mm512_srai_epi32(simde__m512i v, int imm) {
  simde__m256i lo = simde_mm256_srai_epi32(simde_mm512_castsi512_si256(v), imm);
  simde__m256i hi = simde_mm256_srai_epi32(simde_mm512_extracti64x4_epi64(v, 1), imm);
  return simde_mm512_inserti64x4(simde_mm512_castsi256_si512(lo), hi, 1);
}
#define _mm512_srai_epi32(v, imm) qr_emu_mm512_srai_epi32(v, imm)
#endif
