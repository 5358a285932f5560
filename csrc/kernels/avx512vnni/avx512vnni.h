// The AVX-512 VNNI path, real (avx512_vnni) and SIMDe-emulated (avx512_vnni_emulated): one source,
// two builds, two namespaces. Declarations only. The AMX unit reuses the packing and, for short
// blocks, the micro-kernels, since its B layout is this one with K padded further.
#pragma once
#include "kernels/kernels.h"

#define QR_DECLARE_AVX512VNNI(ns)                                                                         \
  namespace qr::ns {                                                                                      \
  const GemmKernels* gemm_kernels();                                                                      \
  const DwConvKernels* dwconv_kernels();                                                                  \
  const WinogradKernels* winograd_kernels();                                                              \
  const DirectConvKernels* direct_conv_kernels();                                                         \
  /* Packs B as panels of 32 columns, `groups` K groups of 4 each (>= ceil(k / 4)), zero padded. */      \
  void pack_b_groups(const int8_t* b, ptrdiff_t ldb, int n, int k, int groups, int8_t* dst);             \
  /* gemm_block over panels of panel_bytes each, for any K padding of the same layout. */                 \
  size_t vnni_scratch_bytes(int k);                                                                       \
  void gemm_block_panels(const GemmBlock& blk, size_t panel_bytes);                                       \
  }

QR_DECLARE_AVX512VNNI(avx512_vnni)
QR_DECLARE_AVX512VNNI(avx512_vnni_emulated)
