#include "ops/norm.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "core/error.h"
#include "ops/u8_common.h"

namespace qr::ops {

namespace {
// C * S2 <= C^2 * 255^2 stays in int64 up to here.
constexpr int64_t kMaxChannels = int64_t{1} << 23;
// eps keeps 1 / sqrt(var + eps) finite and every product of the row's arithmetic far from overflow.
constexpr double kMinEps = 1e-30;
}  // namespace

LayerNormPlan plan_layer_norm(QParams in, QParams out, double eps, const float* weight, const float* bias,
                              int64_t channels) {
  QR_CHECK_ARG(std::isnormal(in.scale) && in.scale > 0.0f && std::isnormal(out.scale) && out.scale > 0.0f,
               "layer_norm: scales must be normal float32 > 0");
  QR_CHECK_ARG(channels >= 1 && channels <= kMaxChannels,
               "layer_norm: the channel count must be in [1, 2^23], got " + std::to_string(channels));
  QR_CHECK_ARG(std::isfinite(eps) && eps >= kMinEps && eps <= 1e30,
               "layer_norm: eps must be in [1e-30, 1e30], got " + std::to_string(eps));
  LayerNormPlan p{in, out, eps, {}, {}};
  p.gamma.resize(channels);
  p.shift.resize(channels);
  const double sy = out.scale;
  for (int64_t c = 0; c < channels; ++c) {
    QR_CHECK_ARG(std::isfinite(weight[c]) && std::isfinite(bias[c]), "layer_norm: weight and bias must be finite");
    p.gamma[c] = weight[c];
    p.shift[c] = static_cast<double>(bias[c]) / sy + static_cast<double>(out.zero_point);
  }
  return p;
}

void layer_norm(const uint8_t* x, int64_t rows, const LayerNormPlan& p, uint8_t* y) {
  const int64_t c = static_cast<int64_t>(p.gamma.size());
  const double sx = p.in.scale, sy = p.out.scale, count = static_cast<double>(c);
  parallel_chunks(rows, 4 * c, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const uint8_t* __restrict row = x + r * c;
      uint8_t* __restrict out = y + r * c;
      int64_t s1 = 0, s2 = 0;
      for (int64_t i = 0; i < c; ++i) {
        s1 += row[i];
        s2 += int64_t{row[i]} * row[i];
      }
      // The variance of the codes times C^2, exact; the steps below are the spec's, in its order.
      const int64_t d = c * s2 - s1 * s1;
      const double var = static_cast<double>(d) / (count * count) * (sx * sx);
      const double inv = 1.0 / std::sqrt(var + p.eps);
      const double a = sx * inv / count / sy;
      for (int64_t i = 0; i < c; ++i) {
        double t = static_cast<double>(c * row[i] - s1) * a * p.gamma[i] + p.shift[i];
        t = t < 0.0 ? 0.0 : (t > 255.0 ? 255.0 : t);
        out[i] = static_cast<uint8_t>(std::nearbyint(t));
      }
    }
  });
}

void group_norm(const uint8_t* x, int64_t images, int64_t pixels, int64_t groups, const LayerNormPlan& p,
                uint8_t* y) {
  const int64_t c = static_cast<int64_t>(p.gamma.size()), cg = c / groups;
  const double sx = p.in.scale, sy = p.out.scale, count = static_cast<double>(cg * pixels);
  ThreadPool::global().parallel_for(images * groups, [&](int64_t task) {
    const int64_t img = task / groups, c0 = task % groups * cg;
    const uint8_t* base = x + img * pixels * c + c0;
    int64_t s1 = 0, s2 = 0;
    for (int64_t px = 0; px < pixels; ++px)
      for (int64_t i = 0; i < cg; ++i) {
        const int64_t q = base[px * c + i];
        s1 += q;
        s2 += q * q;
      }
    // The spec's float64 steps, in its order: mean and variance of the codes, then one scale per group.
    const double mean = static_cast<double>(s1) / count;
    const double var = std::max(static_cast<double>(s2) / count - mean * mean, 0.0);
    const double a = sx / std::sqrt(var * (sx * sx) + p.eps) / sy;
    uint8_t* out = y + img * pixels * c + c0;
    for (int64_t px = 0; px < pixels; ++px)
      for (int64_t i = 0; i < cg; ++i) {
        double t = (static_cast<double>(base[px * c + i]) - mean) * a * p.gamma[c0 + i] + p.shift[c0 + i];
        t = t < 0.0 ? 0.0 : (t > 255.0 ? 255.0 : t);
        out[px * c + i] = static_cast<uint8_t>(std::nearbyint(t));
      }
  });
}

}  // namespace qr::ops
