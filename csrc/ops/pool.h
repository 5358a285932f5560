// 2-D pooling on NHWC uint8 activations: max, average and adaptive average, with PyTorch's
// arguments and output shapes. The average pools requantize as docs/quantization.md ("Pooling")
// says; max pooling keeps the input's quantization.
#pragma once
#include <cstdint>

#include "kernels/requant.h"

namespace qr::ops {

// torch's pooling arguments (average pooling has no dilation: dh = dw = 1).
struct Pool2dParams {
  int64_t kh = 1, kw = 1;
  int64_t sh = 1, sw = 1;
  int64_t ph = 0, pw = 0;
  int64_t dh = 1, dw = 1;
  bool ceil_mode = false;
};

// An NHWC input (n, h, w, c) and its NHWC output extent (n, oh, ow, c).
struct Pool2dShape {
  int64_t n = 0, h = 0, w = 0, c = 0;
  int64_t oh = 0, ow = 0;
};

// Checks p against an NHWC input (n, h, w, c) and returns the output extent, torch's formula:
//   o = floor_or_ceil((h + 2 ph - dh (kh - 1) - 1) / sh) + 1, less one in ceil mode when the last
//   window would start past the input and its left padding.
// Errors (qr::ValueError) name the argument: kernel_size, stride, dilation > 0; padding at most half
// the kernel; a window that fits in the padded input; for average pooling (max_window_area > 0) a
// kernel small enough for int32 sums.
Pool2dShape pool2d_shape(int64_t n, int64_t h, int64_t w, int64_t c, const Pool2dParams& p,
                         int64_t max_window_area = 0);

// y[n, oh, ow, c] = max of x over the window's positions inside the input (padding is ignored,
// not zero); 0 for a window with none (a dilated kernel can skip the whole input, as in torch).
void max_pool2d(const uint8_t* x, const Pool2dShape& s, const Pool2dParams& p, uint8_t* y);

// Average pooling; divisor_override 0 means none (else > 0).
void avg_pool2d(const uint8_t* x, const Pool2dShape& s, const Pool2dParams& p, bool count_include_pad,
                int64_t divisor_override, QParams in, QParams out, uint8_t* y);

// Checks an adaptive pooling output extent (oh, ow >= 1, windows small enough for int32 sums).
Pool2dShape adaptive_pool2d_shape(int64_t n, int64_t h, int64_t w, int64_t c, int64_t oh, int64_t ow);

// Adaptive average pooling: window i spans [floor(i h / oh), ceil((i + 1) h / oh)), likewise in w.
void adaptive_avg_pool2d(const uint8_t* x, const Pool2dShape& s, QParams in, QParams out, uint8_t* y);

// The largest window (in elements) whose uint8 sum is exact in int32: 255 * area <= 2^31 - 1.
constexpr int64_t kMaxPoolWindowArea = 2147483647 / 255;

}  // namespace qr::ops
