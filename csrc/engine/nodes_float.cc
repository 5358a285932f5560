// The float32 ops of the engine: quantize/dequantize at the int8 boundaries, and the layers that run
// in float (keep_float conv2d/linear, softmax and log_softmax at the output). Plain C++, built once for
// every path, so their bits are the same on every CPU.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#include <utility>
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
// out with the output channels innermost (BlockedWeights), and a block of up to kBlock outputs keeps its
// sums in vector registers (Sums). (One sum at a time, each add waited for the last: ResNet-18 at 64x64
// with six layers in float spent 0.80 s of 0.83 in them; 0.05 s now.)
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

// N running float32 sums as N / 4 vectors (GCC's vector types: a plain float array was kept on the stack,
// a load and a store per add). Lane-wise IEEE mul and add, never fused (-ffp-contract=off, CMakeLists.txt):
// each lane is one scalar sum.
template <int64_t N>
struct Sums {
  using F4 = float __attribute__((vector_size(16)));
  static_assert(N % 4 == 0, "whole vectors");
  F4 v[N / 4];

  static F4 load(const float* p) {
    F4 r;
    std::memcpy(&r, p, sizeof r);
    return r;
  }
  explicit Sums(const float* start) {
    for (int64_t i = 0; i < N / 4; ++i) v[i] = load(start + 4 * i);
  }
  // sum[j] += x * w[j]
  void add(float x, const float* w) {
    const F4 xv = {x, x, x, x};
    for (int64_t i = 0; i < N / 4; ++i) v[i] = v[i] + xv * load(w + 4 * i);
  }
  // sum[j] += x[j] * w[j]
  void add(const float* x, const float* w) {
    for (int64_t i = 0; i < N / 4; ++i) v[i] = v[i] + load(x + 4 * i) * load(w + 4 * i);
  }
  // out[j] = act(sum[j]) for the first `count` sums
  void write(float* out, int64_t count, Activation act) const {
    float sums[N];
    std::memcpy(sums, v, sizeof v);
    for (int64_t j = 0; j < count; ++j) out[j] = apply(sums[j], act);
  }
};

// Weights (n outputs, `rows` products each: inputs, or taps x input channels) in blocks of kBlock
// outputs, block by block, each [rows][its outputs padded to a chunk]: a block's weights are contiguous,
// and stay in cache across the inputs that meet them. A block's width is what with_block_width picks.
struct BlockedWeights {
  std::vector<float> w;
  int64_t rows = 0;
  BlockedWeights() = default;
  // at(o, i): output o's weight for product i.
  template <typename At>
  BlockedWeights(int64_t n, int64_t rows_, At&& at) : w(padded_outputs(n) * rows_, 0.0f), rows(rows_) {
    for (int64_t o = 0; o < n; ++o) {
      const int64_t o0 = o / kBlock * kBlock, width = std::min(kBlock, padded_outputs(n) - o0);
      for (int64_t i = 0; i < rows; ++i) w[o0 * rows + i * width + o - o0] = at(o, i);
    }
  }
  const float* block(int64_t o0) const { return w.data() + o0 * rows; }  // o0: a multiple of kBlock
};

// y[m, o] = act(bias[o] + sum_k x[m, k] w[o, k]), the sum in k order. Tasks: a block of outputs for up to
// kRows rows, so the block's weights serve them all from cache (one row at batch 1: blocks in parallel).
class LinearFloatNode : public Node {
 public:
  LinearFloatNode(const OpSpec& spec, const GraphSpec& graph) : Node(spec) {
    check_io(spec, graph, 1, DType::kFloat32, DType::kFloat32);
    const ConstTensor* w = tensor(spec, "weight", 'f', 2, true);
    n_ = w->shape[0];
    k_ = w->shape[1];
    const auto* wd = static_cast<const float*>(w->data);
    w_ = BlockedWeights(n_, k_, [&](int64_t o, int64_t k) { return wd[o * k_ + k]; });
    const ConstTensor* b = tensor(spec, "bias", 'f', 1, false);
    QR_CHECK_ARG(!b || b->shape[0] == n_, where(spec) + ": tensor 'bias' must have one value per output");
    bias_.assign(padded_outputs(n_), 0.0f);
    if (b) std::copy_n(static_cast<const float*>(b->data), n_, bias_.begin());
    act_ = activation(spec, true);
  }
  Shape output_shape(const Shape* in, int) const override {
    check_shape(in[0].rank == 2 && in[0].c() == k_, *this,
                "expects a 2-D input with " + std::to_string(k_) + " features, got " + in[0].str());
    return Shape{2, {in[0].n(), n_, 0, 0}};
  }
  void run(const NodeIo& io) const override {
    constexpr int64_t kRows = 16;
    const auto* x = static_cast<const float*>(io.in[0]);
    auto* y = static_cast<float*>(io.out);
    const int64_t m = io.in_shapes[0].n(), blocks = (n_ + kBlock - 1) / kBlock, chunks = (m + kRows - 1) / kRows;
    ThreadPool::global().parallel_for(blocks * chunks, [&](int64_t task) {
      const int64_t o0 = task / chunks * kBlock, r0 = task % chunks * kRows, count = std::min(kBlock, n_ - o0);
      const float* wb = w_.block(o0);
      with_block_width(count, [&](auto width) {
        constexpr int64_t N = decltype(width)::value;
        for (int64_t r = r0; r < std::min(m, r0 + kRows); ++r) {
          const float* xr = x + r * k_;
          Sums<N> sums(bias_.data() + o0);
          for (int64_t k = 0; k < k_; ++k) sums.add(xr[k], wb + k * N);
          sums.write(y + r * n_ + o0, count, act_);
        }
      });
    });
  }
  int64_t macs(const Shape*, const Shape& out) const override { return out.elements() * k_; }
  std::string kernel() const override { return "float32 c++"; }

 private:
  int64_t n_ = 0, k_ = 0;
  BlockedWeights w_;
  std::vector<float> bias_;
  Activation act_ = Activation::kNone;
};

// Direct NHWC convolution in float32: out[oc] = act(bias[oc] + the sum over taps (ky, kx) in order, then
// input channels of the group in order, of x * w); padding contributes nothing. Per group, the weights
// are blocked (BlockedWeights, rows: tap, then input channel), and each block runs along a whole output
// row while its weights stay in cache.
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
    const int64_t taps = kh_ * kw_;
    const auto* wd = static_cast<const float*>(w->data);
    const ConstTensor* b = tensor(spec, "bias", 'f', 1, false);
    QR_CHECK_ARG(!b || b->shape[0] == oc_, where(spec) + ": tensor 'bias' must have one value per output channel");
    const float* bd = b ? static_cast<const float*>(b->data) : nullptr;
    // Depthwise (one input and one output channel per group): the sums run across channels instead, weights
    // as (tap, channel).
    depthwise_ = icg_ == 1 && ocg_ == 1;
    if (depthwise_) {
      dw_weights_.resize(taps * oc_);
      for (int64_t o = 0; o < oc_; ++o)
        for (int64_t t = 0; t < taps; ++t) dw_weights_[t * oc_ + o] = wd[o * taps + t];
      bias_.assign(oc_, 0.0f);
      if (bd) std::copy_n(bd, oc_, bias_.begin());
    } else {
      for (int64_t g = 0; g < groups_; ++g)
        weights_.emplace_back(ocg_, taps * icg_, [&](int64_t o, int64_t i) {
          return wd[((g * ocg_ + o) * icg_ + i % icg_) * taps + i / icg_];
        });
      const int64_t ocgp = padded_outputs(ocg_);
      bias_.assign(groups_ * ocgp, 0.0f);  // per group, padded as the blocks
      if (bd)
        for (int64_t o = 0; o < oc_; ++o) bias_[o / ocg_ * ocgp + o % ocg_] = bd[o];
    }
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
    ThreadPool::global().parallel_for(s.n() * oh, [&](int64_t row) {
      const int64_t img = row / oh, oy = row % oh;
      // The taps inside the image: rows for the whole output row, columns per pixel.
      Window win;
      win.ky0 = std::max<int64_t>(0, (pt_ - oy * sh_ + dh_ - 1) / dh_);
      win.ky1 = std::min<int64_t>(kh_, (h + pt_ - oy * sh_ + dh_ - 1) / dh_);
      win.y0 = oy * sh_ - pt_;
      const float* x_img = x + img * h * w * c;
      float* out_row = y + (img * oh + oy) * ow * oc_;
      auto columns = [&](int64_t ox) {
        win.kx0 = std::max<int64_t>(0, (pl_ - ox * sw_ + dw_ - 1) / dw_);
        win.kx1 = std::min<int64_t>(kw_, (w + pl_ - ox * sw_ + dw_ - 1) / dw_);
        win.x0 = ox * sw_ - pl_;
      };
      if (depthwise_) {
        for (int64_t ox = 0; ox < ow; ++ox) {
          columns(ox);
          depthwise_pixel(x_img, w, win, out_row + ox * oc_);
        }
        return;
      }
      const int64_t ocgp = padded_outputs(ocg_);
      for (int64_t g = 0; g < groups_; ++g)
        for (int64_t j0 = 0; j0 < ocg_; j0 += kBlock) {
          const float* wb = weights_[g].block(j0);
          const float* bias = bias_.data() + g * ocgp + j0;
          const int64_t count = std::min(kBlock, ocg_ - j0);
          with_block_width(count, [&](auto width) {
            constexpr int64_t N = decltype(width)::value;
            for (int64_t ox = 0; ox < ow; ++ox) {
              columns(ox);
              Sums<N> sums(bias);
              for (int64_t ky = win.ky0; ky < win.ky1; ++ky)
                for (int64_t kx = win.kx0; kx < win.kx1; ++kx) {
                  const float* xp = x_img + ((win.y0 + ky * dh_) * w + win.x0 + kx * dw_) * c + g * icg_;
                  const float* wt = wb + (ky * kw_ + kx) * icg_ * N;
                  for (int64_t ic = 0; ic < icg_; ++ic) sums.add(xp[ic], wt + ic * N);
                }
              sums.write(out_row + ox * oc_ + g * ocg_ + j0, count, act_);
            }
          });
        }
    });
  }

  int64_t macs(const Shape*, const Shape& out) const override { return out.elements() * kh_ * kw_ * icg_; }
  std::string kernel() const override { return "float32 c++"; }

 private:
  // An output pixel's window: the taps [ky0, ky1) x [kx0, kx1) inside the image, (y0, x0) its top left.
  struct Window {
    int64_t ky0 = 0, ky1 = 0, kx0 = 0, kx1 = 0, y0 = 0, x0 = 0;
  };

  // One output pixel of a depthwise conv: blocks of kBlock channels, then the rest one by one (no input
  // byte past the pixel's channels is read).
  void depthwise_pixel(const float* x, int64_t w, const Window& win, float* out) const {
    auto tap = [&](int64_t ky, int64_t kx, int64_t c0) {
      return std::make_pair(x + ((win.y0 + ky * dh_) * w + win.x0 + kx * dw_) * oc_ + c0,
                            dw_weights_.data() + (ky * kw_ + kx) * oc_ + c0);
    };
    int64_t c0 = 0;
    for (; c0 + kBlock <= oc_; c0 += kBlock) {
      Sums<kBlock> sums(bias_.data() + c0);
      for (int64_t ky = win.ky0; ky < win.ky1; ++ky)
        for (int64_t kx = win.kx0; kx < win.kx1; ++kx) {
          const auto [xp, wr] = tap(ky, kx, c0);
          sums.add(xp, wr);
        }
      sums.write(out + c0, kBlock, act_);
    }
    if (c0 == oc_) return;
    float acc[kBlock];  // the last channels, one by one
    std::copy(bias_.data() + c0, bias_.data() + oc_, acc);
    for (int64_t ky = win.ky0; ky < win.ky1; ++ky)
      for (int64_t kx = win.kx0; kx < win.kx1; ++kx) {
        const auto [xp, wr] = tap(ky, kx, c0);
        for (int64_t j = 0; j < oc_ - c0; ++j) acc[j] += xp[j] * wr[j];
      }
    for (int64_t j = 0; j < oc_ - c0; ++j) out[c0 + j] = apply(acc[j], act_);
  }

  int64_t oc_ = 0, icg_ = 0, kh_ = 0, kw_ = 0, sh_ = 1, sw_ = 1, pt_ = 0, pl_ = 0, pb_ = 0, pr_ = 0, dh_ = 1, dw_ = 1,
          groups_ = 1, span_h_ = 1, span_w_ = 1, ocg_ = 1;
  bool depthwise_ = false;
  std::vector<BlockedWeights> weights_;  // per group (not depthwise)
  std::vector<float> dw_weights_, bias_;
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
