// Requantization: how an int32 GEMM accumulator becomes the next layer's uint8 activation.
//
// A real value is scale * (q - zero_point). For y = x . w^T + bias with x = s_x (q_x - zp_x) and
// w[c] = s_w[c] q_w[c] (symmetric, per output channel):
//   y[c] = s_x s_w[c] (sum_k (q_x - zp_x) q_w[c, k] + bias[c] / (s_x s_w[c]))
// and the output q_y = zp_y + y / s_y. So the kernel needs, per channel c,
//   m[c]    = float32(s_x * s_w[c] / s_y)            (computed in double, rounded once)
//   b[c]    = round_half_even(bias[c] / (s_x s_w[c])) (int32; clamped so no int32 sum can overflow)
//   bias[c] = b[c] - zp_x * sum_k q_w[c, k]           (the zero point leaves the inner loop)
// and then, per output, q_y = clamp(zp_y + round_half_even(float(acc + bias[c]) * m[c]), lo, hi),
// computed as ref::requantize does. ReLU is lo = zp_y; ReLU6 also hi = zp_y + round(6 / s_y).
// docs/quantization.md is the normative text; this header and kernels/ref implement it.
#pragma once
#include <cstdint>
#include <vector>

#include "kernels/gemm.h"

namespace qr {

enum class Activation { kNone, kRelu, kRelu6 };

// The quantization of one tensor: real = scale * (q - zero_point).
struct QParams {
  float scale;
  int32_t zero_point;
};

// Per-channel epilogue arrays for one layer, padded to whole panels (padded_columns(n)).
struct Requant {
  std::vector<int32_t> bias;
  std::vector<float> mult;
  int32_t out_zp = 0, lo = 0, hi = 255;
  Epilogue epilogue() const;
};

// For n output channels of k products each, with colsum[c] = sum_k w[c, k]: w_scale holds 1 (per
// tensor) or n (per channel) scales; bias is null or n floats.
Requant make_requant(int n, int k, const int32_t* colsum, QParams x, const float* w_scale, size_t w_scale_count,
                     const float* bias, QParams out, Activation act);

// Checks scale > 0 and finite, zero point in [0, 255]; `what` names the argument in the error.
void check_qparams(QParams q, const char* what);

}  // namespace qr
