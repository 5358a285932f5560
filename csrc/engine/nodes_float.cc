// The float32 ops of the engine: quantize/dequantize at the int8 boundaries, and the layers that run
// in float (keep_float conv2d/linear, softmax and log_softmax at the output). Plain C++, built once for
// every path, so their bits are the same on every CPU.
#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
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

// Float conv2d and linear sum each output's products one by one, bias first, in tap order then input
// channel order: the bits of one scalar sum per output. They run many outputs at once: weights are laid
// out with the output channels innermost (padded to whole chunks), and a block of up to kBlock outputs
// keeps its sums in a fixed-size array the compiler holds in vector registers. (One sum at a time, each
// add waited for the last: ResNet-18 at 64x64 with six layers in float spent 0.80 s of 0.83 in them.)
constexpr int64_t kChunk = 8;   // output channels are padded to a multiple of this
constexpr int64_t kBlock = 32;  // outputs summed together: 8 SSE registers

int64_t padded_outputs(int64_t n) { return (n + kChunk - 1) / kChunk * kChunk; }

// Calls fn(std::integral_constant<int64_t, N>) with N the block width for `count` outputs (count
// rounded up to a chunk, at most kBlock), so each width compiles with its loops fully unrolled.
template <typename Fn>
void with_block_width(int64_t count, Fn&& fn) {
  switch ((std::min(count, kBlock) + kChunk - 1) / kChunk) {
    case 1: fn(std::integral_constant<int64_t, 8>{}); break;
    case 2: fn(std::integral_constant<int64_t, 16>{}); break;
    case 3: fn(std::integral_constant<int64_t, 24>{}); break;
    default: fn(std::integral_constant<int64_t, 32>{}); break;
  }
}

float apply(float v, Activation act) {
  if (act == Activation::kNone) return v;
  v = std::max(v, 0.0f);
  return act == Activation::kRelu6 ? std::min(v, 6.0f) : v;
}

// y[m, o] = act(bias[o] + sum_k x[m, k] w[o, k]), the sum in k order; rows and blocks of outputs in
// parallel (one row at batch 1 still spreads over the threads).
class LinearFloatNode : public Node {
 public:
  LinearFloatNode(const OpSpec& spec, const GraphSpec& graph) : Node(spec) {
    check_io(spec, graph, 1, DType::kFloat32, DType::kFloat32);
    const ConstTensor* w = tensor(spec, "weight", 'f', 2, true);
    n_ = w->shape[0];
    k_ = w->shape[1];
    np_ = padded_outputs(n_);
    const auto* wd = static_cast<const float*>(w->data);
    wt_.assign(k_ * np_, 0.0f);  // (k, outputs padded)
    for (int64_t o = 0; o < n_; ++o)
      for (int64_t k = 0; k < k_; ++k) wt_[k * np_ + o] = wd[o * k_ + k];
    const ConstTensor* b = tensor(spec, "bias", 'f', 1, false);
    QR_CHECK_ARG(!b || b->shape[0] == n_, where(spec) + ": tensor 'bias' must have one value per output");
    bias_.assign(np_, 0.0f);
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
    const int64_t blocks = (n_ + kBlock - 1) / kBlock;
    ThreadPool::global().parallel_for(io.in_shapes[0].n() * blocks, [&](int64_t task) {
      const int64_t m = task / blocks, o0 = task % blocks * kBlock, count = std::min(kBlock, n_ - o0);
      const float* xm = x + m * k_;
      with_block_width(count, [&](auto width) {
        constexpr int64_t N = decltype(width)::value;
        float acc[N];
        for (int64_t j = 0; j < N; ++j) acc[j] = bias_[o0 + j];
        for (int64_t k = 0; k < k_; ++k) {
          const float v = xm[k];
          const float* w = wt_.data() + k * np_ + o0;
          for (int64_t j = 0; j < N; ++j) acc[j] += v * w[j];
        }
        for (int64_t j = 0; j < count; ++j) y[m * n_ + o0 + j] = apply(acc[j], act_);
      });
    });
  }
  int64_t macs(const Shape*, const Shape& out) const override { return out.elements() * k_; }
  std::string kernel() const override { return "float32 c++"; }

 private:
  int64_t n_ = 0, k_ = 0, np_ = 0;
  std::vector<float> wt_, bias_;
  Activation act_ = Activation::kNone;
};

// Direct NHWC convolution in float32: out[oc] = act(bias[oc] + the sum over taps (ky, kx) in order, then
// input channels of the group in order, of x * w); padding contributes nothing. Weights per group as
// (kh, kw, icg, output channels of the group padded), so a tap's input channel meets a row of weights.
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
    ocg_ = oc_ / groups_;
    // Depthwise (one input and one output channel per group): the sums run across channels instead,
    // weights as (kh, kw, channels); otherwise groups of (kh, kw, icg, output channels padded).
    depthwise_ = icg_ == 1 && ocg_ == 1;
    ocgp_ = depthwise_ ? oc_ : padded_outputs(ocg_);
    const auto* wd = static_cast<const float*>(w->data);
    w_.assign(groups_ * kh_ * kw_ * icg_ * ocgp_ / (depthwise_ ? oc_ : 1), 0.0f);
    for (int64_t o = 0; o < oc_; ++o)
      for (int64_t ic = 0; ic < icg_; ++ic)
        for (int64_t t = 0; t < kh_ * kw_; ++t)
          w_[depthwise_ ? t * oc_ + o : ((o / ocg_ * kh_ * kw_ + t) * icg_ + ic) * ocgp_ + o % ocg_] =
              wd[(o * icg_ + ic) * kh_ * kw_ + t];
    const ConstTensor* b = tensor(spec, "bias", 'f', 1, false);
    QR_CHECK_ARG(!b || b->shape[0] == oc_, where(spec) + ": tensor 'bias' must have one value per output channel");
    bias_.assign(depthwise_ ? oc_ : groups_ * ocgp_, 0.0f);  // as the weights' output channels
    if (b)
      for (int64_t o = 0; o < oc_; ++o)
        bias_[depthwise_ ? o : o / ocg_ * ocgp_ + o % ocg_] = static_cast<const float*>(b->data)[o];
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
    const int64_t h = s.h(), w = s.w(), c = s.c(), oh = o.h(), ow = o.w();
    const size_t group_weights = static_cast<size_t>(kh_ * kw_ * icg_ * ocgp_);
    ThreadPool::global().parallel_for(s.n() * oh, [&](int64_t row) {
      const int64_t img = row / oh, oy = row % oh;
      // The taps inside the image, the same for every pixel of the row but for the columns.
      const int64_t ky0 = std::max<int64_t>(0, (pt_ - oy * sh_ + dh_ - 1) / dh_);
      const int64_t ky1 = std::min<int64_t>(kh_, (h + pt_ - oy * sh_ + dh_ - 1) / dh_);
      for (int64_t ox = 0; ox < ow; ++ox) {
        const int64_t kx0 = std::max<int64_t>(0, (pl_ - ox * sw_ + dw_ - 1) / dw_);
        const int64_t kx1 = std::min<int64_t>(kw_, (w + pl_ - ox * sw_ + dw_ - 1) / dw_);
        float* out = y + ((img * oh + oy) * ow + ox) * oc_;
        if (depthwise_) {
          depthwise_pixel(x + img * h * w * c, w, oy * sh_ - pt_, ox * sw_ - pl_, ky0, ky1, kx0, kx1, out);
          continue;
        }
        for (int64_t g = 0; g < groups_; ++g) {
          const float* wg = w_.data() + g * group_weights;
          const float* xg = x + img * h * w * c + g * icg_;
          for (int64_t j0 = 0; j0 < ocg_; j0 += kBlock) {
            const int64_t count = std::min(kBlock, ocg_ - j0);
            with_block_width(count, [&](auto width) {
              constexpr int64_t N = decltype(width)::value;
              float acc[N];
              for (int64_t j = 0; j < N; ++j) acc[j] = bias_[g * ocgp_ + j0 + j];
              for (int64_t ky = ky0; ky < ky1; ++ky) {
                const int64_t iy = oy * sh_ - pt_ + ky * dh_;
                for (int64_t kx = kx0; kx < kx1; ++kx) {
                  const float* xp = xg + (iy * w + ox * sw_ - pl_ + kx * dw_) * c;
                  const float* wp = wg + (ky * kw_ + kx) * icg_ * ocgp_ + j0;
                  for (int64_t ic = 0; ic < icg_; ++ic) {
                    const float v = xp[ic];
                    const float* wr = wp + ic * ocgp_;
                    for (int64_t j = 0; j < N; ++j) acc[j] += v * wr[j];
                  }
                }
              }
              for (int64_t j = 0; j < count; ++j) out[g * ocg_ + j0 + j] = apply(acc[j], act_);
            });
          }
        }
      }
    });
  }

  int64_t macs(const Shape*, const Shape& out) const override { return out.elements() * kh_ * kw_ * icg_; }
  std::string kernel() const override { return "float32 c++"; }

 private:
  // One output pixel of a depthwise conv: blocks of kBlock channels, the last one shorter (a runtime
  // count, so no input byte past the pixel's channels is read). (y0, x0): the window's top left.
  void depthwise_pixel(const float* x, int64_t w, int64_t y0, int64_t x0, int64_t ky0, int64_t ky1, int64_t kx0,
                       int64_t kx1, float* out) const {
    auto block = [&](int64_t c0, auto width, int64_t count) {
      constexpr int64_t N = decltype(width)::value;
      float acc[N];
      for (int64_t j = 0; j < count; ++j) acc[j] = bias_[c0 + j];
      for (int64_t ky = ky0; ky < ky1; ++ky)
        for (int64_t kx = kx0; kx < kx1; ++kx) {
          const float* xp = x + ((y0 + ky * dh_) * w + x0 + kx * dw_) * oc_ + c0;
          const float* wr = w_.data() + (ky * kw_ + kx) * oc_ + c0;
          for (int64_t j = 0; j < count; ++j) acc[j] += xp[j] * wr[j];
        }
      for (int64_t j = 0; j < count; ++j) out[c0 + j] = apply(acc[j], act_);
    };
    int64_t c0 = 0;
    for (; c0 + kBlock <= oc_; c0 += kBlock) block(c0, std::integral_constant<int64_t, kBlock>{}, kBlock);
    if (c0 < oc_) block(c0, std::integral_constant<int64_t, kBlock>{}, oc_ - c0);
  }

  int64_t oc_ = 0, icg_ = 0, kh_ = 0, kw_ = 0, sh_ = 1, sw_ = 1, pt_ = 0, pl_ = 0, pb_ = 0, pr_ = 0, dh_ = 1, dw_ = 1,
          groups_ = 1, span_h_ = 1, span_w_ = 1, ocg_ = 1, ocgp_ = kChunk;
  bool depthwise_ = false;
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
