// The 256-bit VNNI instructions as each avx_vnni build sees them (avxvnni.h): VEX (avx_vnni, -mavxvnni),
// EVEX (avx_vnni_evex, -mavx512vnni -mavx512vl) or SIMDe (avx_vnni_emulated). Included by those units only.
#pragma once
#if defined(QR_EMULATED)
#include "kernels/avx512_intrinsics.h"
#define QR_DPBUSD256(acc, a, b) _mm256_dpbusd_epi32(acc, a, b)
#define QR_DPWSSD256(acc, a, b) _mm256_dpwssd_epi32(acc, a, b)
#elif defined(QR_VNNI_EVEX)
#include <immintrin.h>
#define QR_DPBUSD256(acc, a, b) _mm256_dpbusd_epi32(acc, a, b)
#define QR_DPWSSD256(acc, a, b) _mm256_dpwssd_epi32(acc, a, b)
#else
#include <immintrin.h>
#define QR_DPBUSD256(acc, a, b) _mm256_dpbusd_avx_epi32(acc, a, b)
#define QR_DPWSSD256(acc, a, b) _mm256_dpwssd_avx_epi32(acc, a, b)
#endif
