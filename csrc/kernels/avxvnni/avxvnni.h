// The AVX-VNNI path: 256-bit vpdpbusd on ymm, for CPUs with AVX-VNNI but no AVX-512 (Alder Lake and
// later Intel client cores). One source (gemm_avxvnni.cc), three builds, three namespaces:
//   avx_vnni           VEX `{vex} vpdpbusd` (-mavxvnni): the real path, registered when CPUID has AVX-VNNI;
//   avx_vnni_evex      the same kernel with EVEX `vpdpbusd ymm` (-mavx512vnni -mavx512vl): a test-only
//                      path that runs on real AVX-512 VNNI hardware;
//   avx_vnni_emulated  SIMDe's vpdpbusd on plain AVX2 (test builds only).
// `gemm`, `winograd` (winograd_avxvnni.cc), `direct_conv` (direct_conv_avxvnni.cc) and `dwconv`
// (dwconv_avxvnni.cc), the same three builds, differ from the avx2 table. Declarations only: the
// definitions need their ISA flags.
#pragma once
#include "kernels/kernels.h"

#define QR_DECLARE_AVXVNNI(ns)                    \
  namespace qr::ns {                              \
  const GemmKernels* gemm_kernels();              \
  const WinogradKernels* winograd_kernels();      \
  const DirectConvKernels* direct_conv_kernels(); \
  const DwConvKernels* dwconv_kernels();          \
  }

QR_DECLARE_AVXVNNI(avx_vnni)
QR_DECLARE_AVXVNNI(avx_vnni_evex)
QR_DECLARE_AVXVNNI(avx_vnni_emulated)
