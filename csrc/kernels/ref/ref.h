// The scalar reference path (no ISA flags): the normative spec and the fallback on any CPU.
#pragma once
#include "kernels/kernels.h"

namespace qr::ref {

const GemmKernels* gemm_kernels();
const DwConvKernels* dwconv_kernels();
const EltwiseKernels* eltwise_kernels();
const TransformerKernels* transformer_kernels();
const BytePermuteKernels* byte_kernels();

// The requantization of one int32 accumulator to uint8 (docs/quantization.md).
uint8_t requantize(int32_t acc, int32_t bias, float mult, int32_t zp, int32_t lo, int32_t hi);

// The two steps of the add (AddParams in kernels.h), shared with ops/eltwise.cc's broadcast adds.
// Written as selects and a magic-number rounding so the compiler vectorises the loops around them
// (ref.h is included by common-flag sources only).
// One term: float32(q - zp) * m.
inline float add_term(uint8_t q, int32_t zp, float m) { return static_cast<float>(static_cast<int32_t>(q) - zp) * m; }
// The output: zy + round_half_even(clamp(v, lo, hi)), lo and hi relative to zy.
inline uint8_t add_output(float v, float lo, float hi, int32_t zy) {
  v = v < lo ? lo : v;
  v = v > hi ? hi : v;
  constexpr float kMagic = 12582912.0f;  // 1.5 * 2^23: adding it rounds |v| < 2^22 half to even
  return static_cast<uint8_t>(static_cast<int32_t>((v + kMagic) - kMagic) + zy);
}

}  // namespace qr::ref
