// The scalar reference path (no ISA flags): the normative spec and the fallback on any CPU.
#pragma once
#include "kernels/kernels.h"

namespace qr::ref {

const GemmKernels* gemm_kernels();
const DwConvKernels* dwconv_kernels();
const EltwiseKernels* eltwise_kernels();

// The requantization of one int32 accumulator to uint8 (docs/quantization.md).
uint8_t requantize(int32_t acc, int32_t bias, float mult, int32_t zp, int32_t lo, int32_t hi);

}  // namespace qr::ref
