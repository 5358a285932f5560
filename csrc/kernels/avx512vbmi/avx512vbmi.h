// The AVX-512 VBMI byte moves, real (avx512_vbmi) and SIMDe-emulated (avx512_vbmi_emulated): one
// source, two builds, two namespaces. Declarations only. VBMI is its own CPUID bit (leaf 7, ECX
// bit 1), not implied by AVX-512 VNNI (Cascade Lake has VNNI without it): dispatch checks it.
#pragma once
#include "kernels/kernels.h"

#define QR_DECLARE_AVX512VBMI(ns)                                                          \
  namespace qr::ns {                                                                       \
  /* lut and gather; lut_channels is null (the scalar one is kept: no byte permute fits). */ \
  const BytePermuteKernels* byte_kernels();                                                \
  }

QR_DECLARE_AVX512VBMI(avx512_vbmi)
QR_DECLARE_AVX512VBMI(avx512_vbmi_emulated)
