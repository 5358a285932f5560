// Sum and mean of uint8 codes over any of the C, H, W dims of an NHWC activation (or the F of (N, F)):
// a model's x.sum(dims) and x.mean(dims). The arithmetic is docs/quantization.md "reduce": the sum of
// the codes minus the zero point in int64 (exact), then one float64 requantization to the output, so
// every ISA path and the numpy reference give the same bytes.
#pragma once
#include <cstdint>

#include "kernels/requant.h"

namespace qr::ops {

// An NHWC input (n, h, w, c) ((N, F) is h = w = 1, c = F) and which of H, W, C are summed over.
struct ReduceShape {
  int64_t n = 0, h = 0, w = 0, c = 0;
  bool rh = false, rw = false, rc = false;
  int64_t count() const { return (rh ? h : 1) * (rw ? w : 1) * (rc ? c : 1); }
};

// The most codes one output may sum: 255 * count < 2^53, so the int64 sum is exact in float64 too.
constexpr int64_t kMaxReduceCount = (int64_t{1} << 53) / 255;

// y, NHWC (n, rh ? 1 : h, rw ? 1 : w, rc ? 1 : c): per output, over its `count` codes q,
//   acc = sum(q) - count * zp_x                                   int64, exact
//   y   = round_half_even(clamp(double(acc) * (s_x / s_y) / d + zp_y, 0, 255))   float64, left to right
// with d = count for a mean, 1 for a sum. s_x / s_y is one float64 division of the float32 scales.
void reduce(const uint8_t* x, const ReduceShape& s, bool mean, QParams in, QParams out, uint8_t* y);

}  // namespace qr::ops
