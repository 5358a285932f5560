// The AVX-512 intrinsics as an AVX-512 unit sees them: the CPU's own, or SIMDe's emulation of them
// in the test-only emulated build (DESIGN.md §8), which compiles the same source for an AVX2 CPU.
#pragma once
#if defined(QR_EMULATED)
#define SIMDE_ENABLE_NATIVE_ALIASES
#include <simde/x86/avx512.h>

#include "kernels/simde_avx512_compat.h"
#else
#include <immintrin.h>
#endif
