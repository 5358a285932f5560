// The int8 GEMM ops of the engine: conv2d and linear, prepacked at load with their requantization.
#include <limits>
#include <string>
#include <vector>

#include "core/error.h"
#include "engine/node.h"
#include "ops/conv2d.h"
#include "ops/linear.h"

namespace qr::engine {
namespace {

// The per-channel requantization arrays of a layer, built once from the file's scales and bias.
Requant layer_requant(const OpSpec& spec, const GraphSpec& graph, int n, int k, const int32_t* colsum, bool relu6) {
  const ConstTensor* scale = tensor(spec, "w_scale", 'f', 1, true);
  QR_CHECK_ARG(scale->shape[0] == n, where(spec) + ": tensor 'w_scale' must have one scale per output channel");
  const ConstTensor* bias = tensor(spec, "bias", 'f', 1, false);
  QR_CHECK_ARG(!bias || bias->shape[0] == n, where(spec) + ": tensor 'bias' must have one value per output channel");
  try {
    return make_requant(n, k, colsum, qparams(graph, spec.inputs[0]), static_cast<const float*>(scale->data), n,
                        bias ? static_cast<const float*>(bias->data) : nullptr, qparams(graph, spec.outputs[0]),
                        activation(spec, relu6));
  } catch (const ValueError& e) {
    throw ValueError(where(spec) + ": " + e.what());
  }
}

// " (<why these micro-kernels>)" for a layer's packed GEMMs (one per conv group; distinct notes
// joined), or "" on a path with one micro-kernel.
std::string kernel_choice(const std::vector<PackedWeights>& parts) {
  std::string joined;
  for (const PackedWeights& w : parts) {
    if (w.kernel_choice.empty() || joined.find(w.kernel_choice) != std::string::npos) continue;
    joined += (joined.empty() ? "" : "; ") + w.kernel_choice;
  }
  return joined.empty() ? "" : " (" + joined + ")";
}

int as_int(int64_t v, const OpSpec& spec, const char* what) {
  QR_CHECK_ARG(v >= 0 && v <= std::numeric_limits<int>::max(), where(spec) + ": " + what + " is out of range");
  return static_cast<int>(v);
}

class Conv2dNode : public Node {
 public:
  Conv2dNode(const OpSpec& spec, const GraphSpec& graph) : Node(spec) {
    check_io(spec, graph, 1, DType::kUint8, DType::kUint8);
    const ConstTensor* w = tensor(spec, "weight", 'b', 4, true);
    const auto& stride = attr_ints(spec, "stride", 2);
    const auto& pad = attr_ints(spec, "padding", 4);
    const auto& dil = attr_ints(spec, "dilation", 2);
    g_.stride_h = as_int(stride[0], spec, "stride");
    g_.stride_w = as_int(stride[1], spec, "stride");
    g_.pad_t = as_int(pad[0], spec, "padding");
    g_.pad_l = as_int(pad[1], spec, "padding");
    g_.pad_b = as_int(pad[2], spec, "padding");
    g_.pad_r = as_int(pad[3], spec, "padding");
    g_.dil_h = as_int(dil[0], spec, "dilation");
    g_.dil_w = as_int(dil[1], spec, "dilation");
    QR_CHECK_ARG(g_.stride_h >= 1 && g_.stride_w >= 1 && g_.dil_h >= 1 && g_.dil_w >= 1,
                 where(spec) + ": stride and dilation must be >= 1");
    const int groups = as_int(attr_int(spec, "groups"), spec, "groups");
    try {
      packed_ = ops::pack_conv2d(static_cast<const int8_t*>(w->data), as_int(w->shape[0], spec, "weight"),
                                 as_int(w->shape[1], spec, "weight"), as_int(w->shape[2], spec, "weight"),
                                 as_int(w->shape[3], spec, "weight"), groups, graph.isa, &g_);
    } catch (const ValueError& e) {
      throw ValueError(where(spec) + ": " + e.what());
    }
    rq_ = layer_requant(spec, graph, packed_->oc, packed_->k(), packed_->colsum.data(), true);
    x_zp_ = static_cast<uint8_t>(graph.values[spec.inputs[0]].q.zero_point);
  }

  Shape output_shape(const Shape* in, int) const override {
    check_shape(in[0].rank == 4, *this, "expects a 4-D input, got " + in[0].str());
    check_shape(in[0].c() == static_cast<int64_t>(packed_->icg) * packed_->groups, *this,
                "input has " + std::to_string(in[0].c()) + " channels; the weights expect " +
                    std::to_string(packed_->icg * packed_->groups));
    check_shape(in[0].h() <= std::numeric_limits<int>::max() && in[0].w() <= std::numeric_limits<int>::max(), *this,
                "input is too large");
    std::pair<int, int> hw{0, 0};
    try {
      hw = ops::conv2d_output_hw(*packed_, static_cast<int>(in[0].h()), static_cast<int>(in[0].w()), g_);
    } catch (const ValueError& e) {
      check_shape(false, *this, std::string(e.what()) + " (input " + in[0].str() + ")");
    }
    return Shape{4, {in[0].n(), packed_->oc, hw.first, hw.second}};
  }

  void run(const NodeIo& io) const override {
    const Shape& s = io.in_shapes[0];
    ops::conv2d(*packed_, static_cast<const uint8_t*>(io.in[0]), static_cast<int>(s.n()), static_cast<int>(s.h()),
                static_cast<int>(s.w()), static_cast<int>(s.c()), x_zp_, rq_, g_, static_cast<uint8_t*>(io.out));
  }

  int64_t macs(const Shape*, const Shape& out) const override {
    return out.elements() * packed_->k();
  }

  std::string kernel() const override {
    if (packed_->depthwise)
      return std::string("dwconv ") + packed_->table->isa +
             (packed_->dw_kernel_choice.empty() ? "" : " (" + packed_->dw_kernel_choice + ")");
    if (packed_->winograd()) return std::string("winograd ") + packed_->table->isa + " (" + packed_->kernel_choice + ")";
    if (packed_->direct()) return std::string("direct ") + packed_->table->isa + " (" + packed_->kernel_choice + ")";
    return std::string("gemm ") + packed_->table->isa + kernel_choice(packed_->group_gemm);
  }

 private:
  std::shared_ptr<ops::PackedConv2d> packed_;
  ops::Conv2dGeometry g_;
  Requant rq_;
  uint8_t x_zp_ = 0;
};

class LinearNode : public Node {
 public:
  LinearNode(const OpSpec& spec, const GraphSpec& graph) : Node(spec) {
    check_io(spec, graph, 1, DType::kUint8, DType::kUint8);
    const ConstTensor* w = tensor(spec, "weight", 'b', 2, true);
    const int n = as_int(w->shape[0], spec, "weight"), k = as_int(w->shape[1], spec, "weight");
    const auto* data = static_cast<const int8_t*>(w->data);
    // Features in NHWC order (executor.cc): feature (ch, p) of the NCHW flatten, column
    // ch * pixels + p, is p * channels + ch. The column sums, and so the requantization, stay.
    std::vector<int8_t> permuted;
    const int64_t c = spec.features_channels_last;
    if (c > 1 && k % c == 0) {
      const int pixels = static_cast<int>(k / c);
      permuted.resize(static_cast<size_t>(n) * k);
      for (int o = 0; o < n; ++o)
        for (int64_t ch = 0; ch < c; ++ch)
          for (int p = 0; p < pixels; ++p)
            permuted[static_cast<size_t>(o) * k + p * c + ch] = data[static_cast<size_t>(o) * k + ch * pixels + p];
      data = permuted.data();
    }
    // pack_weights checks K <= 65536 and [-127, 127]; the engine prefixes its error with this op.
    packed_ = ops::pack_weights(data, k, n, k, graph.isa);
    rq_ = layer_requant(spec, graph, n, k, packed_->colsum.data(), true);
  }

  Shape output_shape(const Shape* in, int) const override {
    check_shape(in[0].rank == 2, *this, "expects a 2-D input (N, K), got " + in[0].str());
    check_shape(in[0].c() == packed_->k, *this,
                "input has " + std::to_string(in[0].c()) + " features; the weights expect " + std::to_string(packed_->k));
    check_shape(in[0].n() <= std::numeric_limits<int>::max(), *this, "batch is too large");
    return Shape{2, {in[0].n(), packed_->n, 0, 0}};
  }

  void run(const NodeIo& io) const override {
    const int m = static_cast<int>(io.in_shapes[0].n());
    if (m == 0) return;
    gemm(*packed_, static_cast<const uint8_t*>(io.in[0]), packed_->k, m, rq_.epilogue(), io.out, packed_->n);
  }

  int64_t macs(const Shape*, const Shape& out) const override { return out.elements() * packed_->k; }

  std::string kernel() const override {
    const std::string note = packed_->kernel_choice.empty() ? "" : " (" + packed_->kernel_choice + ")";
    return std::string("gemm ") + packed_->kernels->isa + note;
  }

 private:
  std::shared_ptr<PackedWeights> packed_;
  Requant rq_;
};

}  // namespace

std::unique_ptr<Node> make_conv2d(const OpSpec& spec, const GraphSpec& graph) {
  return std::make_unique<Conv2dNode>(spec, graph);
}

std::unique_ptr<Node> make_linear(const OpSpec& spec, const GraphSpec& graph) {
  return std::make_unique<LinearNode>(spec, graph);
}

}  // namespace qr::engine
