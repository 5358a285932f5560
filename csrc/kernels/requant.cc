// Per-channel requantization parameters (see requant.h for the derivation).
#include "kernels/requant.h"

#include <cmath>
#include <string>

#include "core/error.h"

namespace qr {

void check_qparams(QParams q, const char* what) {
  QR_CHECK_ARG(std::isnormal(q.scale) && q.scale > 0.0f,
               std::string(what) + "_scale must be finite, > 0 and a normal float32, got " + std::to_string(q.scale));
  QR_CHECK_ARG(q.zero_point >= 0 && q.zero_point <= 255,
               std::string(what) + "_zp must be in [0, 255], got " + std::to_string(q.zero_point));
}

Epilogue Requant::epilogue() const {
  Epilogue ep;
  ep.requantize = true;
  ep.bias = bias.data();
  ep.mult = mult.data();
  ep.out_zp = out_zp;
  ep.lo = lo;
  ep.hi = hi;
  return ep;
}

Requant make_requant(int n, int k, const int32_t* colsum, QParams x, const float* w_scale, size_t w_scale_count,
                     const float* bias, QParams out, Activation act) {
  check_qparams(x, "x");
  check_qparams(out, "out");
  QR_CHECK_ARG(w_scale_count == 1 || w_scale_count == static_cast<size_t>(n),
               "w_scale must hold 1 or " + std::to_string(n) + " values, got " + std::to_string(w_scale_count));
  Requant rq;
  rq.bias.assign(padded_columns(n), 0);
  rq.mult.assign(padded_columns(n), 0.0f);
  // |sum_k (q_x - zp_x) q_w| <= 255 * 127 * K; the bias gets the rest of the int32 range.
  const double bias_limit = 2147483647.0 - 255.0 * 127.0 * k;
  for (int c = 0; c < n; ++c) {
    const float sw = w_scale[w_scale_count == 1 ? 0 : c];
    QR_CHECK_ARG(std::isnormal(sw) && sw > 0.0f,
                 "w_scale must be finite, > 0 and a normal float32 (channel " + std::to_string(c) + ")");
    const double acc_scale = static_cast<double>(x.scale) * static_cast<double>(sw);
    const float m = static_cast<float>(acc_scale / static_cast<double>(out.scale));
    QR_CHECK_ARG(std::isfinite(m) && m > 0.0f, "x_scale * w_scale / out_scale must be a finite float32 > 0 (channel " +
                                                   std::to_string(c) + ")");
    rq.mult[c] = m;
    double bq = 0.0;
    if (bias) {
      QR_CHECK_ARG(std::isfinite(bias[c]), "bias must be finite (channel " + std::to_string(c) + ")");
      bq = std::nearbyint(static_cast<double>(bias[c]) / acc_scale);
      bq = std::fmin(std::fmax(bq, -bias_limit), bias_limit);
    }
    rq.bias[c] = static_cast<int32_t>(static_cast<int64_t>(bq) - static_cast<int64_t>(x.zero_point) * colsum[c]);
  }
  rq.out_zp = out.zero_point;
  rq.lo = act == Activation::kNone ? 0 : out.zero_point;
  rq.hi = 255;
  if (act == Activation::kRelu6) {
    const double six = std::nearbyint(6.0 / static_cast<double>(out.scale));
    rq.hi = static_cast<int32_t>(std::fmin(255.0, out.zero_point + six));
  }
  return rq;
}

}  // namespace qr
