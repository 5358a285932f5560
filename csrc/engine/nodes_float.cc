// The float32 ops of the engine: quantize/dequantize at the int8 boundaries, and the layers that run
// in float (keep_float conv2d/linear, softmax and log_softmax at the output). Plain C++ loops: they
// sit at the edges of a graph, not on its hot path.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "core/error.h"
#include "core/thread_pool.h"
#include "engine/node.h"
#include "ops/linear.h"

namespace qr::engine {
namespace {

class QuantizeNode : public Node {
 public:
  QuantizeNode(const OpSpec& spec, const GraphSpec& graph) : Node(spec) {
    check_io(spec, graph, 1, DType::kFloat32, DType::kUint8);
    q_ = qparams(graph, spec.outputs[0]);
  }
  Shape output_shape(const Shape* in, int) const override { return in[0]; }
  void run(const NodeIo& io) const override {
    const auto* x = static_cast<const float*>(io.in[0]);
    auto* y = static_cast<uint8_t*>(io.out);
    const Shape& s = io.out_shape;
    if (io.in_nchw)
      ops::quantize_planes(x, s.n(), s.c(), s.h() * s.w(), q_, y);
    else
      ops::quantize(x, s.elements(), q_, y);
  }

 private:
  QParams q_;
};

class DequantizeNode : public Node {
 public:
  DequantizeNode(const OpSpec& spec, const GraphSpec& graph) : Node(spec) {
    check_io(spec, graph, 1, DType::kUint8, DType::kFloat32);
    q_ = qparams(graph, spec.inputs[0]);
  }
  Shape output_shape(const Shape* in, int) const override { return in[0]; }
  void run(const NodeIo& io) const override {
    ops::dequantize(static_cast<const uint8_t*>(io.in[0]), io.out_shape.elements(), q_, static_cast<float*>(io.out));
  }

 private:
  QParams q_;
};

float apply(float v, Activation act) {
  if (act == Activation::kNone) return v;
  v = std::max(v, 0.0f);
  return act == Activation::kRelu6 ? std::min(v, 6.0f) : v;
}

// y[m, o] = act(bias[o] + sum_k x[m, k] w[o, k]) over rows m in parallel; the sum in k order (fixed,
// so results do not depend on threads).
class LinearFloatNode : public Node {
 public:
  LinearFloatNode(const OpSpec& spec, const GraphSpec& graph) : Node(spec) {
    check_io(spec, graph, 1, DType::kFloat32, DType::kFloat32);
    const ConstTensor* w = tensor(spec, "weight", 'f', 2, true);
    n_ = w->shape[0];
    k_ = w->shape[1];
    const auto* wd = static_cast<const float*>(w->data);
    w_.assign(wd, wd + n_ * k_);
    const ConstTensor* b = tensor(spec, "bias", 'f', 1, false);
    QR_CHECK_ARG(!b || b->shape[0] == n_, where(spec) + ": tensor 'bias' must have one value per output");
    bias_.assign(n_, 0.0f);
    if (b) std::copy_n(static_cast<const float*>(b->data), n_, bias_.begin());
    act_ = activation(spec, true);
  }
  Shape output_shape(const Shape* in, int) const override {
    check_shape(in[0].rank == 2 && in[0].c() == k_, *this,
                "expects a 2-D input with " + std::to_string(k_) + " features, got " + in[0].str());
    return Shape{2, {in[0].n(), n_, 0, 0}};
  }
  void run(const NodeIo& io) const override {
    const auto* x = static_cast<const float*>(io.in[0]);
    auto* y = static_cast<float*>(io.out);
    ThreadPool::global().parallel_for(io.in_shapes[0].n(), [&](int64_t m) {
      const float* xm = x + m * k_;
      for (int64_t o = 0; o < n_; ++o) {
        const float* wo = w_.data() + o * k_;
        float acc = bias_[o];
        for (int64_t k = 0; k < k_; ++k) acc += xm[k] * wo[k];
        y[m * n_ + o] = apply(acc, act_);
      }
    });
  }
  int64_t macs(const Shape*, const Shape& out) const override { return out.elements() * k_; }
  std::string kernel() const override { return "float32 c++"; }

 private:
  int64_t n_ = 0, k_ = 0;
  std::vector<float> w_, bias_;
  Activation act_ = Activation::kNone;
};

// Direct NHWC convolution in float32, weights reordered to (oc, kh, kw, icg) so the inner loop reads
// input channels and weights contiguously. Padding contributes 0.
class Conv2dFloatNode : public Node {
 public:
  Conv2dFloatNode(const OpSpec& spec, const GraphSpec& graph) : Node(spec) {
    check_io(spec, graph, 1, DType::kFloat32, DType::kFloat32);
    const ConstTensor* w = tensor(spec, "weight", 'f', 4, true);
    oc_ = w->shape[0];
    icg_ = w->shape[1];
    kh_ = w->shape[2];
    kw_ = w->shape[3];
    const auto& stride = attr_ints(spec, "stride", 2);
    const auto& pad = attr_ints(spec, "padding", 4);
    const auto& dil = attr_ints(spec, "dilation", 2);
    sh_ = stride[0];
    sw_ = stride[1];
    pt_ = pad[0];
    pl_ = pad[1];
    pb_ = pad[2];
    pr_ = pad[3];
    dh_ = dil[0];
    dw_ = dil[1];
    groups_ = attr_int(spec, "groups");
    QR_CHECK_ARG(sh_ >= 1 && sw_ >= 1 && dh_ >= 1 && dw_ >= 1 && pt_ >= 0 && pl_ >= 0 && pb_ >= 0 && pr_ >= 0,
                 where(spec) + ": stride/dilation must be >= 1 and padding >= 0");
    QR_CHECK_ARG(groups_ >= 1 && oc_ % groups_ == 0, where(spec) + ": groups must divide the output channels");
    span_h_ = dh_ * (kh_ - 1) + 1;
    span_w_ = dw_ * (kw_ - 1) + 1;
    // As the int8 conv (ops/conv2d.cc): padding of a whole kernel extent or more is refused.
    QR_CHECK_ARG(std::max(pt_, pb_) < span_h_ && std::max(pl_, pr_) < span_w_,
                 where(spec) + ": padding " + std::to_string(std::max({pt_, pl_, pb_, pr_})) +
                     " is not smaller than the kernel's dilated extent (" + std::to_string(span_h_) + ", " +
                     std::to_string(span_w_) + ")");
    const auto* wd = static_cast<const float*>(w->data);
    w_.resize(oc_ * kh_ * kw_ * icg_);
    for (int64_t o = 0; o < oc_; ++o)
      for (int64_t ic = 0; ic < icg_; ++ic)
        for (int64_t t = 0; t < kh_ * kw_; ++t) w_[(o * kh_ * kw_ + t) * icg_ + ic] = wd[(o * icg_ + ic) * kh_ * kw_ + t];
    const ConstTensor* b = tensor(spec, "bias", 'f', 1, false);
    QR_CHECK_ARG(!b || b->shape[0] == oc_, where(spec) + ": tensor 'bias' must have one value per output channel");
    bias_.assign(oc_, 0.0f);
    if (b) std::copy_n(static_cast<const float*>(b->data), oc_, bias_.begin());
    act_ = activation(spec, true);
  }

  Shape output_shape(const Shape* in, int) const override {
    const Shape& s = in[0];
    check_shape(s.rank == 4 && s.c() == icg_ * groups_, *this,
                "expects a 4-D input with " + std::to_string(icg_ * groups_) + " channels, got " + s.str());
    check_shape(s.h() + pt_ + pb_ >= span_h_ && s.w() + pl_ + pr_ >= span_w_, *this,
                "kernel is larger than the padded input " + s.str());
    return Shape{4, {s.n(), oc_, (s.h() + pt_ + pb_ - span_h_) / sh_ + 1, (s.w() + pl_ + pr_ - span_w_) / sw_ + 1}};
  }

  void run(const NodeIo& io) const override {
    const Shape& s = io.in_shapes[0];
    const Shape& o = io.out_shape;
    const auto* x = static_cast<const float*>(io.in[0]);
    auto* y = static_cast<float*>(io.out);
    const int64_t h = s.h(), w = s.w(), c = s.c(), oh = o.h(), ow = o.w(), ocg = oc_ / groups_;
    ThreadPool::global().parallel_for(s.n() * oh, [&](int64_t row) {
      const int64_t img = row / oh, oy = row % oh;
      for (int64_t ox = 0; ox < ow; ++ox) {
        float* out = y + ((img * oh + oy) * ow + ox) * oc_;
        for (int64_t oc = 0; oc < oc_; ++oc) {
          const int64_t c0 = oc / ocg * icg_;
          float acc = bias_[oc];
          for (int64_t ky = 0; ky < kh_; ++ky) {
            const int64_t iy = oy * sh_ - pt_ + ky * dh_;
            if (iy < 0 || iy >= h) continue;
            for (int64_t kx = 0; kx < kw_; ++kx) {
              const int64_t ix = ox * sw_ - pl_ + kx * dw_;
              if (ix < 0 || ix >= w) continue;
              const float* xp = x + ((img * h + iy) * w + ix) * c + c0;
              const float* wp = w_.data() + ((oc * kh_ + ky) * kw_ + kx) * icg_;
              for (int64_t ic = 0; ic < icg_; ++ic) acc += xp[ic] * wp[ic];
            }
          }
          out[oc] = apply(acc, act_);
        }
      }
    });
  }

  int64_t macs(const Shape*, const Shape& out) const override { return out.elements() * kh_ * kw_ * icg_; }
  std::string kernel() const override { return "float32 c++"; }

 private:
  int64_t oc_ = 0, icg_ = 0, kh_ = 0, kw_ = 0, sh_ = 1, sw_ = 1, pt_ = 0, pl_ = 0, pb_ = 0, pr_ = 0, dh_ = 1, dw_ = 1,
          groups_ = 1, span_h_ = 1, span_w_ = 1;
  std::vector<float> w_, bias_;
  Activation act_ = Activation::kNone;
};

// softmax / log_softmax over `dim`, which must be the innermost axis in memory: dim 1 of a 2-D
// value, or the channels (dim 1) of an NHWC 4-D value. Max-subtracted, accumulated in double.
class SoftmaxNode : public Node {
 public:
  SoftmaxNode(const OpSpec& spec, const GraphSpec& graph, bool log) : Node(spec), log_(log) {
    check_io(spec, graph, 1, DType::kFloat32, DType::kFloat32);
    const int64_t dim = attr_int(spec, "dim");
    QR_CHECK_ARG(dim == 1, where(spec) + ": only dim = 1 (features or channels) is supported, got " + std::to_string(dim));
  }
  Shape output_shape(const Shape* in, int) const override {
    check_shape(in[0].rank == 2 || in[0].rank == 4, *this, "expects a 2-D or 4-D input, got " + in[0].str());
    return in[0];
  }
  void run(const NodeIo& io) const override {
    const Shape& s = io.out_shape;
    const int64_t c = s.c(), rows = s.elements() / std::max<int64_t>(c, 1);
    const auto* x = static_cast<const float*>(io.in[0]);
    auto* y = static_cast<float*>(io.out);
    for (int64_t r = 0; r < rows; ++r) {
      const float* xr = x + r * c;
      float* yr = y + r * c;
      const float mx = *std::max_element(xr, xr + c);
      double sum = 0;
      for (int64_t i = 0; i < c; ++i) sum += std::exp(static_cast<double>(xr[i]) - mx);
      const double log_sum = std::log(sum);
      for (int64_t i = 0; i < c; ++i) {
        const double v = static_cast<double>(xr[i]) - mx;
        yr[i] = static_cast<float>(log_ ? v - log_sum : std::exp(v) / sum);
      }
    }
  }

 private:
  bool log_;
};

}  // namespace

std::unique_ptr<Node> make_quantize(const OpSpec& spec, const GraphSpec& graph) {
  return std::make_unique<QuantizeNode>(spec, graph);
}
std::unique_ptr<Node> make_dequantize(const OpSpec& spec, const GraphSpec& graph) {
  return std::make_unique<DequantizeNode>(spec, graph);
}
std::unique_ptr<Node> make_linear_float(const OpSpec& spec, const GraphSpec& graph) {
  return std::make_unique<LinearFloatNode>(spec, graph);
}
std::unique_ptr<Node> make_conv2d_float(const OpSpec& spec, const GraphSpec& graph) {
  return std::make_unique<Conv2dFloatNode>(spec, graph);
}
std::unique_ptr<Node> make_softmax(const OpSpec& spec, const GraphSpec& graph) {
  return std::make_unique<SoftmaxNode>(spec, graph, false);
}
std::unique_ptr<Node> make_log_softmax(const OpSpec& spec, const GraphSpec& graph) {
  return std::make_unique<SoftmaxNode>(spec, graph, true);
}

}  // namespace qr::engine
