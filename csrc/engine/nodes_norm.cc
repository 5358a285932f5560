// The normalisation ops of the engine: layer_norm over the channels of each pixel (ConvNeXt's
// LayerNorm after a permute to channels-last, which NHWC storage already is) or of each row of (N, F).
#include <string>

#include "core/error.h"
#include "engine/node.h"
#include "ops/norm.h"

namespace qr::engine {
namespace {

// The checked plan of a uint8 normalisation op: its weight/bias tensors, eps and quantizations.
ops::LayerNormPlan norm_plan(const OpSpec& spec, const GraphSpec& graph) {
  check_io(spec, graph, 1, DType::kUint8, DType::kUint8);
  const ConstTensor* w = tensor(spec, "weight", 'f', 1, true);
  const ConstTensor* b = tensor(spec, "bias", 'f', 1, true);
  QR_CHECK_ARG(b->shape[0] == w->shape[0], where(spec) + ": tensors 'weight' and 'bias' must have one value per channel");
  try {
    return ops::plan_layer_norm(qparams(graph, spec.inputs[0]), qparams(graph, spec.outputs[0]), attr_float(spec, "eps"),
                                static_cast<const float*>(w->data), static_cast<const float*>(b->data), w->shape[0]);
  } catch (const ValueError& e) {
    throw ValueError(where(spec) + ": " + e.what());
  }
}

class LayerNormNode : public Node {
 public:
  LayerNormNode(const OpSpec& spec, const GraphSpec& graph) : Node(spec) {
    plan_ = norm_plan(spec, graph);
  }
  Shape output_shape(const Shape* in, int) const override {
    const int64_t c = static_cast<int64_t>(plan_.gamma.size());
    check_shape((in[0].rank == 4 || in[0].rank == 2) && in[0].c() == c, *this,
                "expects a 2-D or 4-D input with " + std::to_string(c) + " channels, got " + in[0].str());
    return in[0];
  }
  void run(const NodeIo& io) const override {
    const int64_t c = static_cast<int64_t>(plan_.gamma.size());
    ops::layer_norm(static_cast<const uint8_t*>(io.in[0]), io.out_shape.elements() / c, plan_,
                    static_cast<uint8_t*>(io.out));
  }

 private:
  ops::LayerNormPlan plan_;
};

// GroupNorm: NHWC, per image and group of channels, over the group's channels and all pixels.
class GroupNormNode : public Node {
 public:
  GroupNormNode(const OpSpec& spec, const GraphSpec& graph) : Node(spec) {
    plan_ = norm_plan(spec, graph);
    const int64_t c = static_cast<int64_t>(plan_.gamma.size());
    groups_ = attr_int(spec, "groups");
    QR_CHECK_ARG(groups_ >= 1 && c % groups_ == 0, where(spec) + ": groups must divide the " + std::to_string(c) + " channels");
  }
  Shape output_shape(const Shape* in, int) const override {
    const int64_t c = static_cast<int64_t>(plan_.gamma.size());
    check_shape(in[0].rank == 4 && in[0].c() == c, *this,
                "expects a 4-D input with " + std::to_string(c) + " channels, got " + in[0].str());
    return in[0];
  }
  void run(const NodeIo& io) const override {
    const Shape& s = io.out_shape;
    ops::group_norm(static_cast<const uint8_t*>(io.in[0]), s.n(), s.h() * s.w(), groups_, plan_,
                    static_cast<uint8_t*>(io.out));
  }

 private:
  ops::LayerNormPlan plan_;
  int64_t groups_ = 1;
};

}  // namespace

std::unique_ptr<Node> make_group_norm(const OpSpec& spec, const GraphSpec& graph) {
  return std::make_unique<GroupNormNode>(spec, graph);
}

std::unique_ptr<Node> make_layer_norm(const OpSpec& spec, const GraphSpec& graph) {
  return std::make_unique<LayerNormNode>(spec, graph);
}

}  // namespace qr::engine
