// Nearest and bilinear resizing of NHWC uint8: one plain C++ loop each (the scalar spec; no ISA
// slots: a resize moves little data next to the convolutions around it). Source indices and
// weights come from torch's own float32 formulas, computed per output row and column; the pixels
// are then combined in exact integers.
#include "ops/resize.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "core/error.h"
#include "core/limits.h"
#include "ops/u8_common.h"

namespace qr::ops {
namespace {

// torch's area_pixel_compute_scale in float32: the step in input pixels per output pixel.
float axis_scale(const ResizeAxis& a, bool align_corners) {
  if (align_corners) return a.out > 1 ? static_cast<float>(a.in - 1) / static_cast<float>(a.out - 1) : 0.0f;
  if (a.scale_factor > 0.0) return static_cast<float>(1.0 / a.scale_factor);
  return static_cast<float>(a.in) / static_cast<float>(a.out);
}

}  // namespace

int64_t resize_extent(int64_t in, double scale_factor) {
  const double out = static_cast<double>(in) * scale_factor;
  QR_CHECK_ARG(out >= 1.0 && out < static_cast<double>(kMaxDim) + 1.0,
               "a scale factor of " + std::to_string(scale_factor) + " turns size " + std::to_string(in) +
                   " into " + std::to_string(out) + " (must be in [1, 2^31 - 1])");
  return static_cast<int64_t>(out);
}

int64_t nearest_source(const ResizeAxis& a, int64_t o) {
  // torch's nearest_idx: the equal and doubled sizes are exact shortcuts it takes before the float path.
  if (a.out == a.in) return o;
  if (a.out == 2 * a.in) return o >> 1;
  const float src = static_cast<float>(o) * axis_scale(a, false);
  return std::min(static_cast<int64_t>(std::floor(src)), a.in - 1);
}

LinearTaps linear_taps(const ResizeAxis& a, bool align_corners, int64_t o) {
  if (a.out == a.in) return {o, o, 0};  // torch copies at equal sizes, whatever the scale factor
  const float scale = axis_scale(a, align_corners);
  const float at = static_cast<float>(o);
  const float src = align_corners ? scale * at : std::max(scale * (at + 0.5f) - 0.5f, 0.0f);
  LinearTaps t;
  t.i0 = std::min(static_cast<int64_t>(std::floor(src)), a.in - 1);
  t.i1 = t.i0 + (t.i0 < a.in - 1 ? 1 : 0);
  const float lambda = std::min(std::max(src - static_cast<float>(t.i0), 0.0f), 1.0f);
  t.w1 = static_cast<int32_t>(std::nearbyint(lambda * static_cast<float>(kResizeWeightOne)));  // exact product
  return t;
}

void resize_nearest(const uint8_t* x, int64_t n, int64_t c, const ResizeAxis& ah, const ResizeAxis& aw, uint8_t* y) {
  const int64_t row_in = aw.in * c, row_out = aw.out * c;
  parallel_chunks(n * ah.out, row_out, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t image = r / ah.out, oy = r % ah.out;
      const uint8_t* src = x + (image * ah.in + nearest_source(ah, oy)) * row_in;
      uint8_t* dst = y + r * row_out;
      for (int64_t ox = 0; ox < aw.out; ++ox) std::memcpy(dst + ox * c, src + nearest_source(aw, ox) * c, c);
    }
  });
}

void resize_bilinear(const uint8_t* x, int64_t n, int64_t c, const ResizeAxis& ah, const ResizeAxis& aw,
                     bool align_corners, uint8_t* y) {
  const int64_t row_in = aw.in * c, row_out = aw.out * c;
  constexpr int32_t kHalf = 1 << (2 * kResizeWeightBits - 1);  // rounds the 22-bit fraction half up
  parallel_chunks(n * ah.out, 4 * row_out, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t image = r / ah.out;
      const LinearTaps ty = linear_taps(ah, align_corners, r % ah.out);
      const uint8_t* top = x + (image * ah.in + ty.i0) * row_in;
      const uint8_t* bottom = x + (image * ah.in + ty.i1) * row_in;
      const int32_t wy1 = ty.w1, wy0 = kResizeWeightOne - ty.w1;
      uint8_t* dst = y + r * row_out;
      for (int64_t ox = 0; ox < aw.out; ++ox) {
        const LinearTaps tx = linear_taps(aw, align_corners, ox);
        const int32_t wx1 = tx.w1, wx0 = kResizeWeightOne - tx.w1;
        const uint8_t *a = top + tx.i0 * c, *b = top + tx.i1 * c, *p = bottom + tx.i0 * c, *q = bottom + tx.i1 * c;
        for (int64_t ch = 0; ch < c; ++ch) {
          // <= 2^22 * 255 < 2^31: exact in int32, one rounding.
          const int32_t acc = wy0 * (wx0 * a[ch] + wx1 * b[ch]) + wy1 * (wx0 * p[ch] + wx1 * q[ch]);
          dst[ox * c + ch] = static_cast<uint8_t>((acc + kHalf) >> (2 * kResizeWeightBits));
        }
      }
    }
  });
}

}  // namespace qr::ops
