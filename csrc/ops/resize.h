// Resizing NHWC uint8 activations as F.interpolate does (docs/quantization.md, "resize"): "nearest"
// (torch's legacy nearest) and "bilinear" (align_corners true or false), from a size or a scale
// factor. The output keeps the input's quantization: nearest copies codes, bilinear interpolates
// them with 11-bit fixed-point weights and one rounding, so every path gives the same bits.
#pragma once
#include <cstdint>

namespace qr::ops {

// The fixed-point weight of the second tap along an axis: w1 / 2^11; the first tap gets 2^11 - w1.
constexpr int kResizeWeightBits = 11;
constexpr int32_t kResizeWeightOne = 1 << kResizeWeightBits;

// Along one axis: the input size, the output size, and the scale factor the caller gave
// (F.interpolate's scale_factor; 0 = none, the ratio of the sizes is used).
struct ResizeAxis {
  int64_t in = 1, out = 1;
  double scale_factor = 0.0;
};

// The output extent for a scale factor, as torch computes it: int64(double(in) * scale_factor).
// qr::ValueError when it is below 1 or above 2^31 - 1.
int64_t resize_extent(int64_t in, double scale_factor);

// Nearest: the input index output index o reads (torch's nearest_idx, float32 arithmetic).
int64_t nearest_source(const ResizeAxis& a, int64_t o);

// Bilinear: output index o reads inputs i0 and i1 with weights (2^11 - w1) and w1.
struct LinearTaps {
  int64_t i0 = 0, i1 = 0;
  int32_t w1 = 0;
};
LinearTaps linear_taps(const ResizeAxis& a, bool align_corners, int64_t o);

// x: NHWC (n, ah.in, aw.in, c); y: NHWC (n, ah.out, aw.out, c).
void resize_nearest(const uint8_t* x, int64_t n, int64_t c, const ResizeAxis& ah, const ResizeAxis& aw, uint8_t* y);
void resize_bilinear(const uint8_t* x, int64_t n, int64_t c, const ResizeAxis& ah, const ResizeAxis& aw,
                     bool align_corners, uint8_t* y);

}  // namespace qr::ops
