// The AVX2 path (exact: vpmaddwd, and vpmaddubsw on weight panels proven not to saturate).
// Declarations only: the definitions need AVX2 flags.
#pragma once
#include "kernels/kernels.h"

namespace qr::avx2 {
const GemmKernels* gemm_kernels();
const DwConvKernels* dwconv_kernels();
const EltwiseKernels* eltwise_kernels();
const TransformerKernels* transformer_kernels();
const WinogradKernels* winograd_kernels();
const DirectConvKernels* direct_conv_kernels();
}
