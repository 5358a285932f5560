// Elementwise and normalisation ops in float32, for layers kept in float (float islands): unary
// functions, add/sub/mul of two activations, LayerNorm. Plain C++ loops with no ISA dispatch, so every
// path gives the same bits; they run where a user (or the converter) chose accuracy over int8 speed.
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "core/error.h"
#include "engine/node.h"
#include "ops/u8_common.h"

namespace qr::engine {
namespace {

enum class Fn { kRelu, kRelu6, kHardtanh, kLeakyRelu, kScaleShift, kSigmoid, kTanh, kHardswish, kHardsigmoid,
                kSilu, kGelu, kGeluTanh };

Fn parse_fn(const OpSpec& spec) {
  static const std::pair<const char*, Fn> kNames[] = {
      {"relu", Fn::kRelu},       {"relu6", Fn::kRelu6},           {"hardtanh", Fn::kHardtanh},
      {"leaky_relu", Fn::kLeakyRelu}, {"scale_shift", Fn::kScaleShift}, {"sigmoid", Fn::kSigmoid},
      {"tanh", Fn::kTanh},       {"hardswish", Fn::kHardswish},   {"hardsigmoid", Fn::kHardsigmoid},
      {"silu", Fn::kSilu},       {"gelu", Fn::kGelu},             {"gelu_tanh", Fn::kGeluTanh}};
  const std::string& name = attr_str(spec, "fn");
  for (const auto& [n, fn] : kNames)
    if (name == n) return fn;
  throw ValueError(where(spec) + ": unknown function '" + name + "'");
}

// fn(v) with parameters a, b (hardtanh: min, max; leaky_relu: slope; scale_shift: v * a + b), in double.
double apply_fn(Fn fn, double v, double a, double b) {
  switch (fn) {
    case Fn::kRelu: return std::max(v, 0.0);
    case Fn::kRelu6: return std::min(std::max(v, 0.0), 6.0);
    case Fn::kHardtanh: return std::min(std::max(v, a), b);
    case Fn::kLeakyRelu: return v >= 0.0 ? v : v * a;
    case Fn::kScaleShift: return v * a + b;
    case Fn::kSigmoid: return 1.0 / (1.0 + std::exp(-v));
    case Fn::kTanh: return std::tanh(v);
    case Fn::kHardswish: return v * std::min(std::max(v + 3.0, 0.0), 6.0) / 6.0;
    case Fn::kHardsigmoid: return std::min(std::max(v + 3.0, 0.0), 6.0) / 6.0;
    case Fn::kSilu: return v / (1.0 + std::exp(-v));
    case Fn::kGelu: return 0.5 * v * (1.0 + std::erf(v / std::sqrt(2.0)));
    case Fn::kGeluTanh: return 0.5 * v * (1.0 + std::tanh(std::sqrt(2.0 / M_PI) * (v + 0.044715 * v * v * v)));
  }
  return v;
}

class UnaryFloatNode : public Node {
 public:
  UnaryFloatNode(const OpSpec& spec, const GraphSpec& graph) : Node(spec), fn_(parse_fn(spec)) {
    check_io(spec, graph, 1, DType::kFloat32, DType::kFloat32);
    a_ = attr_float(spec, "a");
    b_ = attr_float(spec, "b");
    QR_CHECK_ARG(std::isfinite(a_) && std::isfinite(b_), where(spec) + ": attributes 'a' and 'b' must be finite");
  }
  Shape output_shape(const Shape* in, int) const override { return in[0]; }
  void run(const NodeIo& io) const override {
    const auto* x = static_cast<const float*>(io.in[0]);
    auto* y = static_cast<float*>(io.out);
    ops::parallel_chunks(io.out_shape.elements(), 32, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) y[i] = static_cast<float>(apply_fn(fn_, x[i], a_, b_));
    });
  }
  std::string kernel() const override { return "float32 c++"; }
  bool accepts_rank3() const override { return true; }

 private:
  Fn fn_;
  double a_ = 0.0, b_ = 0.0;
};

// a + b, a - b or a * b of float32 values of one shape; mul also of (N, C, H, W) and (N, C, 1, 1) in either order.
class BinaryFloatNode : public Node {
 public:
  BinaryFloatNode(const OpSpec& spec, const GraphSpec& graph) : Node(spec) {
    check_io(spec, graph, 2, DType::kFloat32, DType::kFloat32);
    const std::string& fn = attr_str(spec, "fn");
    QR_CHECK_ARG(fn == "add" || fn == "sub" || fn == "mul", where(spec) + ": fn must be add, sub or mul, got '" + fn + "'");
    fn_ = fn[0];
  }
  Shape output_shape(const Shape* in, int) const override {
    if (in[0] == in[1]) return in[0];
    const bool small1 = is_gate(in[0], in[1]), small0 = is_gate(in[1], in[0]);
    check_shape(fn_ == 'm' && (small0 || small1), *this,
                std::string("inputs must have the same shape") + (fn_ == 'm' ? ", or one (N, C, H, W) and the other (N, C, 1, 1)" : "") +
                    "; got " + in[0].str() + " and " + in[1].str());
    return small1 ? in[0] : in[1];
  }
  void run(const NodeIo& io) const override {
    const Shape& s = io.out_shape;
    const int big = io.in_shapes[0] == s ? 0 : 1;
    const auto* a = static_cast<const float*>(io.in[big]);
    const auto* b = static_cast<const float*>(io.in[1 - big]);
    const bool gate = !(io.in_shapes[1 - big] == s);
    const int64_t c = s.c(), pixels = s.h() * s.w();
    auto* y = static_cast<float*>(io.out);
    ops::parallel_chunks(s.elements(), 12, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const float bv = gate ? b[(i / (pixels * c)) * c + i % c] : b[i];
        y[i] = fn_ == 'a' ? a[i] + bv : fn_ == 's' ? a[i] - bv : a[i] * bv;
      }
    });
  }
  std::string kernel() const override { return "float32 c++"; }
  bool accepts_rank3() const override { return true; }

 private:
  static bool is_gate(const Shape& big, const Shape& small) {
    return big.rank == 4 && small.rank == 4 && small.n() == big.n() && small.c() == big.c() && small.h() == 1 &&
           small.w() == 1;
  }
  char fn_ = 'a';
};

// LayerNorm over dim 1 (each NHWC pixel's channels, each row of (N, F)) or the features of each token
// of (N, S, F); moments in double.
class LayerNormFloatNode : public Node {
 public:
  LayerNormFloatNode(const OpSpec& spec, const GraphSpec& graph) : Node(spec) {
    check_io(spec, graph, 1, DType::kFloat32, DType::kFloat32);
    const ConstTensor* w = tensor(spec, "weight", 'f', 1, true);
    const ConstTensor* b = tensor(spec, "bias", 'f', 1, true);
    QR_CHECK_ARG(b->shape[0] == w->shape[0], where(spec) + ": tensors 'weight' and 'bias' must have one value per channel");
    const auto* wd = static_cast<const float*>(w->data);
    const auto* bd = static_cast<const float*>(b->data);
    weight_.assign(wd, wd + w->shape[0]);
    bias_.assign(bd, bd + b->shape[0]);
    eps_ = attr_float(spec, "eps");
    QR_CHECK_ARG(std::isfinite(eps_) && eps_ > 0.0, where(spec) + ": eps must be a finite number > 0");
  }
  Shape output_shape(const Shape* in, int) const override {
    const int64_t c = static_cast<int64_t>(weight_.size());
    // Rank 3 (N, S, F): over the features of each token, the innermost axis as for the others.
    const int64_t inner = in[0].rank == 3 ? in[0].d[2] : in[0].c();
    check_shape(in[0].rank >= 2 && in[0].rank <= 4 && inner == c, *this,
                "expects a 2-D, 3-D (N, S, F) or 4-D input with " + std::to_string(c) + " channels, got " + in[0].str());
    return in[0];
  }
  bool accepts_rank3() const override { return true; }
  void run(const NodeIo& io) const override {
    const int64_t c = static_cast<int64_t>(weight_.size());
    const auto* x = static_cast<const float*>(io.in[0]);
    auto* y = static_cast<float*>(io.out);
    ops::parallel_chunks(io.out_shape.elements() / c, 8 * c, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const float* __restrict xr = x + r * c;
        // Sums in 8 double lanes: one running sum waits an add's latency per element (a third of a
        // transformer's LayerNorm time); the order is free, the result rounds once to float32.
        double m8[8] = {0, 0, 0, 0, 0, 0, 0, 0}, v8[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        const int64_t whole = c - c % 8;
        for (int64_t i = 0; i < whole; i += 8)
          for (int l = 0; l < 8; ++l) m8[l] += xr[i + l];
        for (int64_t i = whole; i < c; ++i) m8[i - whole] += xr[i];
        const double mean = (((m8[0] + m8[1]) + (m8[2] + m8[3])) + ((m8[4] + m8[5]) + (m8[6] + m8[7]))) /
                            static_cast<double>(c);
        for (int64_t i = 0; i < whole; i += 8)
          for (int l = 0; l < 8; ++l) v8[l] += (xr[i + l] - mean) * (xr[i + l] - mean);
        for (int64_t i = whole; i < c; ++i) v8[i - whole] += (xr[i] - mean) * (xr[i] - mean);
        const double var = ((v8[0] + v8[1]) + (v8[2] + v8[3])) + ((v8[4] + v8[5]) + (v8[6] + v8[7]));
        const double inv = 1.0 / std::sqrt(var / static_cast<double>(c) + eps_);
        for (int64_t i = 0; i < c; ++i)
          y[r * c + i] = static_cast<float>((xr[i] - mean) * inv * weight_[i] + bias_[i]);
      }
    });
  }
  std::string kernel() const override { return "float32 c++"; }

 private:
  std::vector<float> weight_, bias_;
  double eps_ = 0.0;
};

}  // namespace

std::unique_ptr<Node> make_unary_float(const OpSpec& spec, const GraphSpec& graph) {
  return std::make_unique<UnaryFloatNode>(spec, graph);
}
std::unique_ptr<Node> make_binary_float(const OpSpec& spec, const GraphSpec& graph) {
  return std::make_unique<BinaryFloatNode>(spec, graph);
}
std::unique_ptr<Node> make_layer_norm_float(const OpSpec& spec, const GraphSpec& graph) {
  return std::make_unique<LayerNormFloatNode>(spec, graph);
}

}  // namespace qr::engine
