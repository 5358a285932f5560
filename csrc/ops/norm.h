// Normalisation over the channels of each row of uint8 codes (a pixel's channels in NHWC, or a row
// of (N, F)): LayerNorm as ConvNeXt and transformers use it. The arithmetic is docs/quantization.md
// "layer_norm": exact integer moments, then float64 steps in a fixed order, so every ISA path and
// the numpy reference give the same bytes.
#pragma once
#include <cstdint>
#include <vector>

#include "kernels/requant.h"

namespace qr::ops {

struct LayerNormPlan {
  QParams in, out;
  double eps = 0.0;
  std::vector<double> gamma;  // weight[c]
  std::vector<double> shift;  // bias[c] / s_y + zp_y
};

// Checks the quantizations, eps and the channel count; qr::ValueError on a bad one.
LayerNormPlan plan_layer_norm(QParams in, QParams out, double eps, const float* weight, const float* bias,
                              int64_t channels);

// y[r, c] = clamp(round_half_even(float64((C * x[r, c] - S1) * a * gamma[c] + shift[c])), 0, 255) per row r,
// with S1, S2 the row's sum and sum of squares and a = s_x / sqrt(var + eps) / C / s_y.
void layer_norm(const uint8_t* x, int64_t rows, const LayerNormPlan& plan, uint8_t* y);

// GroupNorm on NHWC: per image and group of `channels / groups` channels, over those channels and every
// pixel (docs/quantization.md "group_norm"); the plan's gamma/shift as for layer_norm.
void group_norm(const uint8_t* x, int64_t images, int64_t pixels, int64_t groups, const LayerNormPlan& plan,
                uint8_t* y);

}  // namespace qr::ops
