// Max, average and adaptive average pooling on NHWC uint8: one plain C++ implementation each.
// These ops are memory-bound; every inner loop runs over the contiguous channels so the compiler
// vectorises it (pmaxub, widening adds, the float32 output step of u8_common.h).
#include "ops/pool.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <cstring>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/limits.h"
#include "ops/u8_common.h"

namespace qr::ops {
namespace {

constexpr int64_t kMaxArg = 2147483647;  // every size and argument must fit an int32

std::string pair_str(int64_t a, int64_t b) { return "(" + std::to_string(a) + ", " + std::to_string(b) + ")"; }

// torch's pooling_output_shape for one dimension (floor division, also of negative numbers).
int64_t pooled_extent(int64_t in, int64_t k, int64_t s, int64_t p, int64_t d, bool ceil_mode) {
  const int64_t num = in + 2 * p - d * (k - 1) - 1 + (ceil_mode ? s - 1 : 0);
  const int64_t q = num >= 0 ? num / s : -((-num + s - 1) / s);
  int64_t out = q + 1;
  // The last window must start inside the input or its left padding.
  if (ceil_mode && out > 0 && (out - 1) * s >= in + p) --out;
  return out;
}

// The taps i in [0, k) of a window starting at `start` (step d) that land inside [0, in): [*first, *last).
// Loops visit only these, so a huge kernel that is mostly padding costs nothing.
void taps_inside(int64_t start, int64_t k, int64_t d, int64_t in, int64_t* first, int64_t* last) {
  *first = start >= 0 ? 0 : (-start + d - 1) / d;
  *last = start >= in ? 0 : std::min(k, (in - 1 - start) / d + 1);
  if (*last < *first) *last = *first;
}

void check_input(int64_t n, int64_t h, int64_t w, int64_t c) {
  QR_CHECK_ARG(n >= 0 && c >= 0 && n <= kMaxArg && c <= kMaxArg, "x_q has a bad batch or channel count");
  QR_CHECK_ARG(h >= 1 && w >= 1 && h <= kMaxArg && w <= kMaxArg,
               "x_q must have a spatial size (H, W) of at least (1, 1), got " + pair_str(h, w));
}

// Multiplier of the average pools: float32(s_in / s_out / d), computed in double and rounded once.
float average_multiplier(QParams in, QParams out, int64_t d) {
  return static_cast<float>(static_cast<double>(in.scale) / static_cast<double>(out.scale) / static_cast<double>(d));
}

// The multiplier shrinks as the divisor grows, so checking both extremes checks every divisor.
void check_multipliers(QParams in, QParams out, int64_t d_min, int64_t d_max) {
  check_qparams(in, "x");
  check_qparams(out, "out");
  for (int64_t d : {d_min, d_max}) {
    const float m = average_multiplier(in, out, d);
    QR_CHECK_ARG(std::isfinite(m) && m > 0.0f, "x_scale / out_scale / divisor must be a finite float32 > 0 (divisor " +
                                                   std::to_string(d) + ")");
  }
}

// The work of one output row for parallel_chunks: its windows' taps inside the input times the channels.
int64_t window_cost(const Pool2dShape& s, const Pool2dParams& p) {
  return saturating_mul(saturating_mul(s.ow, std::min(p.kh, s.h) * std::min(p.kw, s.w)), std::max<int64_t>(s.c, 1));
}

// o[ch] = max(o[ch], q[ch])
void max_into(uint8_t* __restrict o, const uint8_t* __restrict q, int64_t c) {
  for (int64_t ch = 0; ch < c; ++ch) o[ch] = std::max(o[ch], q[ch]);  // vectorised: pmaxub
}

// acc[ch] = sum of x over rows [hs, he) and columns [ws, we) of one NHWC image.
void window_sum(const uint8_t* img, int64_t w, int64_t c, int64_t hs, int64_t he, int64_t ws, int64_t we,
                int32_t* __restrict acc) {
  // Up to 257 taps a uint16 sum is exact (257 * 255 < 65536): 16 channels at a time in registers,
  // widened u8 -> u16 adds, half the work of int32 sums.
  constexpr int64_t kBlock = 16;
  const int64_t c_blocks = (he - hs) * (we - ws) <= 257 ? c / kBlock * kBlock : 0;
  for (int64_t c0 = 0; c0 < c_blocks; c0 += kBlock) {
    uint16_t sum[kBlock] = {};
    for (int64_t ih = hs; ih < he; ++ih)
      for (int64_t iw = ws; iw < we; ++iw) {
        const uint8_t* __restrict p = img + (ih * w + iw) * c + c0;
        for (int64_t j = 0; j < kBlock; ++j) sum[j] = static_cast<uint16_t>(sum[j] + p[j]);
      }
    for (int64_t j = 0; j < kBlock; ++j) acc[c0 + j] = sum[j];
  }
  std::fill(acc + c_blocks, acc + c, 0);
  for (int64_t ih = hs; ih < he; ++ih) {
    for (int64_t iw = ws; iw < we; ++iw) {
      const uint8_t* __restrict p = img + (ih * w + iw) * c;
      for (int64_t ch = c_blocks; ch < c; ++ch) acc[ch] += p[ch];  // vectorised: widening u8 -> i32 adds
    }
  }
}

// The average pools' output step (docs/quantization.md, "Pooling"):
//   y = clamp(round_half_even(float32(float32(acc - count * zp_x) * m) + float32(zp_y)), 0, 255)
void finish_average(const int32_t* __restrict acc, int32_t zp_sum, float m, float zp_y, int64_t c,
                    uint8_t* __restrict y) {
  for (int64_t ch = 0; ch < c; ++ch) {  // vectorised: cvtdq2ps, mulps, addps, maxps/minps, the rounding adds
    const float v = clamp_f(static_cast<float>(acc[ch] - zp_sum) * m + zp_y, 0.0f, 255.0f);
    y[ch] = static_cast<uint8_t>(static_cast<int32_t>(round_half_even_small(v)));
  }
}

// Caches the multiplier of the last divisor: within a row the divisor rarely changes.
struct MultiplierCache {
  QParams in, out;
  int64_t d = -1;
  float m = 0.0f;
  float get(int64_t divisor) {
    if (divisor != d) {
      d = divisor;
      m = average_multiplier(in, out, d);
    }
    return m;
  }
};

}  // namespace

Pool2dShape pool2d_shape(int64_t n, int64_t h, int64_t w, int64_t c, const Pool2dParams& p, int64_t max_window_area) {
  check_input(n, h, w, c);
  QR_CHECK_ARG(p.kh >= 1 && p.kw >= 1 && p.kh <= kMaxArg && p.kw <= kMaxArg,
               "kernel_size must be > 0, got " + pair_str(p.kh, p.kw));
  QR_CHECK_ARG(p.sh >= 1 && p.sw >= 1 && p.sh <= kMaxArg && p.sw <= kMaxArg,
               "stride must be > 0, got " + pair_str(p.sh, p.sw));
  QR_CHECK_ARG(p.dh >= 1 && p.dw >= 1 && p.dh <= kMaxArg && p.dw <= kMaxArg,
               "dilation must be > 0, got " + pair_str(p.dh, p.dw));
  QR_CHECK_ARG(p.ph >= 0 && p.pw >= 0, "padding must be >= 0, got " + pair_str(p.ph, p.pw));
  QR_CHECK_ARG(p.ph <= p.kh / 2 && p.pw <= p.kw / 2, "padding must be at most half of kernel_size, got padding " +
                                                         pair_str(p.ph, p.pw) + " for kernel_size " + pair_str(p.kh, p.kw));
  if (max_window_area > 0) {
    QR_CHECK_ARG(p.kh * p.kw <= max_window_area, "kernel_size " + pair_str(p.kh, p.kw) + " covers more than " +
                                                     std::to_string(max_window_area) + " elements (int32 sums)");
  }
  Pool2dShape s{n, h, w, c, 0, 0};
  s.oh = pooled_extent(h, p.kh, p.sh, p.ph, p.dh, p.ceil_mode);
  s.ow = pooled_extent(w, p.kw, p.sw, p.pw, p.dw, p.ceil_mode);
  QR_CHECK_ARG(s.oh >= 1 && s.ow >= 1, "kernel_size " + pair_str(p.kh, p.kw) + " (dilation " + pair_str(p.dh, p.dw) +
                                           ") is larger than the padded input " +
                                           pair_str(h + 2 * p.ph, w + 2 * p.pw) + ": the output would be " +
                                           pair_str(s.oh, s.ow));
  QR_CHECK_ARG(s.oh <= kMaxArg && s.ow <= kMaxArg,
               "the output " + pair_str(s.oh, s.ow) + " has a size beyond " + std::to_string(kMaxArg));
  return s;
}

void max_pool2d(const uint8_t* x, const Pool2dShape& s, const Pool2dParams& p, uint8_t* y) {
  const Pool2dShape chk = pool2d_shape(s.n, s.h, s.w, s.c, p);
  if (chk.oh != s.oh || chk.ow != s.ow) throw InternalError("max_pool2d: output shape does not match the arguments");
  const int64_t c = s.c, row_bytes = s.w * c;
  // Per output row, the max over the window's input rows first (long contiguous runs), then per
  // output pixel the max over its columns of that row: each input byte is read once per window
  // row that covers it, not once per window.
  parallel_chunks(s.n * s.oh, window_cost(s, p), [&](int64_t begin, int64_t end) {
    std::vector<uint8_t> column_max(static_cast<size_t>(row_bytes));
    for (int64_t row = begin; row < end; ++row) {
      const int64_t n = row / s.oh, oy = row % s.oh;
      const uint8_t* img = x + n * s.h * row_bytes;
      const int64_t h0 = oy * p.sh - p.ph;
      const uint8_t* rows_max = nullptr;  // max over the window's rows inside the input, or none
      int64_t i_first, i_last;
      taps_inside(h0, p.kh, p.dh, s.h, &i_first, &i_last);
      for (int64_t i = i_first; i < i_last; ++i) {
        const int64_t ih = h0 + i * p.dh;
        const uint8_t* in_row = img + ih * row_bytes;
        if (!rows_max) {
          rows_max = in_row;  // one row: read in place
        } else {
          if (rows_max != column_max.data()) std::memcpy(column_max.data(), rows_max, static_cast<size_t>(row_bytes));
          max_into(column_max.data(), in_row, row_bytes);
          rows_max = column_max.data();
        }
      }
      for (int64_t ox = 0; ox < s.ow; ++ox) {
        const int64_t w0 = ox * p.sw - p.pw;
        uint8_t* o = y + (row * s.ow + ox) * c;
        bool any = false;
        int64_t j_first, j_last;
        taps_inside(w0, p.kw, p.dw, s.w, &j_first, &j_last);
        for (int64_t j = j_first; rows_max && j < j_last; ++j) {
          const int64_t iw = w0 + j * p.dw;
          if (any) {
            max_into(o, rows_max + iw * c, c);
          } else {
            std::memcpy(o, rows_max + iw * c, static_cast<size_t>(c));
            any = true;
          }
        }
        if (!any) std::memset(o, 0, static_cast<size_t>(c));  // the lowest code: what an all-padding window gives
      }
    }
  });
}

void avg_pool2d(const uint8_t* x, const Pool2dShape& s, const Pool2dParams& p, bool count_include_pad,
                int64_t divisor_override, QParams in, QParams out, uint8_t* y) {
  QR_CHECK_ARG(p.dh == 1 && p.dw == 1, "avg_pool2d has no dilation");
  QR_CHECK_ARG(divisor_override >= 0 && divisor_override <= kMaxArg,
               "divisor_override must be > 0, got " + std::to_string(divisor_override));
  const Pool2dShape chk = pool2d_shape(s.n, s.h, s.w, s.c, p, kMaxPoolWindowArea);
  if (chk.oh != s.oh || chk.ow != s.ow) throw InternalError("avg_pool2d: output shape does not match the arguments");
  if (divisor_override > 0) {
    check_multipliers(in, out, divisor_override, divisor_override);
  } else {
    check_multipliers(in, out, 1, p.kh * p.kw);
  }
  const int64_t c = s.c;
  const float zp_y = static_cast<float>(out.zero_point);
  parallel_chunks(s.n * s.oh, window_cost(s, p), [&](int64_t begin, int64_t end) {
    std::vector<int32_t> acc(static_cast<size_t>(c));
    MultiplierCache mult{in, out};
    for (int64_t row = begin; row < end; ++row) {
      const int64_t n = row / s.oh, oy = row % s.oh;
      const uint8_t* img = x + n * s.h * s.w * c;
      // The window clipped to the padded input (count_include_pad's divisor), then to the input.
      const int64_t h0 = oy * p.sh - p.ph, h1 = std::min(h0 + p.kh, s.h + p.ph);
      const int64_t hs = std::max<int64_t>(h0, 0), he = std::min(h1, s.h);
      for (int64_t ox = 0; ox < s.ow; ++ox) {
        const int64_t w0 = ox * p.sw - p.pw, w1 = std::min(w0 + p.kw, s.w + p.pw);
        const int64_t ws = std::max<int64_t>(w0, 0), we = std::min(w1, s.w);
        uint8_t* o = y + (row * s.ow + ox) * c;
        const int64_t count = std::max<int64_t>(he - hs, 0) * std::max<int64_t>(we - ws, 0);
        if (count == 0) {  // cannot happen with padding <= kernel / 2; a mean of nothing is real 0
          std::memset(o, out.zero_point, static_cast<size_t>(c));
          continue;
        }
        const int64_t d = divisor_override > 0 ? divisor_override : count_include_pad ? (h1 - h0) * (w1 - w0) : count;
        window_sum(img, s.w, c, hs, he, ws, we, acc.data());
        finish_average(acc.data(), static_cast<int32_t>(count * in.zero_point), mult.get(d), zp_y, c, o);
      }
    }
  });
}

namespace {

int64_t adaptive_start(int64_t i, int64_t in, int64_t out) { return (i * in) / out; }
int64_t adaptive_end(int64_t i, int64_t in, int64_t out) { return ((i + 1) * in + out - 1) / out; }

// The longest adaptive window along one dimension, in closed form (no loop over an output size that
// a file may set to 2^31): window i is [floor(i*in/out), ceil((i+1)*in/out)), and the largest
// fractional start, 1 - gcd(in, out)/out, makes the longest ceil((in + out - gcd) / out) long.
int64_t adaptive_max_extent(int64_t in, int64_t out) {
  if (out >= in) return 2;  // windows of 1 or 2 (never more when out >= in)
  return (in + out - std::gcd(in, out) + out - 1) / out;
}

}  // namespace

Pool2dShape adaptive_pool2d_shape(int64_t n, int64_t h, int64_t w, int64_t c, int64_t oh, int64_t ow) {
  check_input(n, h, w, c);
  QR_CHECK_ARG(oh >= 1 && ow >= 1 && oh <= kMaxArg && ow <= kMaxArg,
               "output_size must be >= 1, got " + pair_str(oh, ow));
  const int64_t eh = std::min(adaptive_max_extent(h, oh), h), ew = std::min(adaptive_max_extent(w, ow), w);
  QR_CHECK_ARG(eh * ew <= kMaxPoolWindowArea, "output_size " + pair_str(oh, ow) + " makes windows of more than " +
                                                  std::to_string(kMaxPoolWindowArea) + " elements (int32 sums)");
  return Pool2dShape{n, h, w, c, oh, ow};
}

void adaptive_avg_pool2d(const uint8_t* x, const Pool2dShape& s, QParams in, QParams out, uint8_t* y) {
  adaptive_pool2d_shape(s.n, s.h, s.w, s.c, s.oh, s.ow);
  const int64_t max_area = std::min(adaptive_max_extent(s.h, s.oh), s.h) * std::min(adaptive_max_extent(s.w, s.ow), s.w);
  check_multipliers(in, out, 1, max_area);
  const int64_t c = s.c;
  const float zp_y = static_cast<float>(out.zero_point);
  const int64_t row_cost = saturating_mul(saturating_mul(s.h / s.oh + 1, s.w + s.ow), std::max<int64_t>(c, 1));
  parallel_chunks(s.n * s.oh, row_cost, [&](int64_t begin, int64_t end) {
    std::vector<int32_t> acc(static_cast<size_t>(c));
    MultiplierCache mult{in, out};
    for (int64_t row = begin; row < end; ++row) {
      const int64_t n = row / s.oh, oy = row % s.oh;
      const uint8_t* img = x + n * s.h * s.w * c;
      const int64_t hs = adaptive_start(oy, s.h, s.oh), he = adaptive_end(oy, s.h, s.oh);
      for (int64_t ox = 0; ox < s.ow; ++ox) {
        const int64_t ws = adaptive_start(ox, s.w, s.ow), we = adaptive_end(ox, s.w, s.ow);
        const int64_t count = (he - hs) * (we - ws);
        window_sum(img, s.w, c, hs, he, ws, we, acc.data());
        finish_average(acc.data(), static_cast<int32_t>(count * in.zero_point), mult.get(count), zp_y, c,
                       y + (row * s.ow + ox) * c);
      }
    }
  });
}

}  // namespace qr::ops
