// The pooling ops of the engine: max, average and adaptive average pooling on NHWC uint8.
#include "core/error.h"
#include "engine/node.h"
#include "ops/pool.h"

namespace qr::engine {
namespace {

ops::Pool2dShape nhwc(const Shape& s) { return ops::Pool2dShape{s.n(), s.h(), s.w(), s.c(), 0, 0}; }

ops::Pool2dParams pool_params(const OpSpec& spec, bool with_dilation) {
  ops::Pool2dParams p;
  const auto& k = attr_ints(spec, "kernel", 2);
  const auto& s = attr_ints(spec, "stride", 2);
  const auto& pad = attr_ints(spec, "padding", 2);
  p.kh = k[0];
  p.kw = k[1];
  p.sh = s[0];
  p.sw = s[1];
  p.ph = pad[0];
  p.pw = pad[1];
  if (with_dilation) {
    const auto& d = attr_ints(spec, "dilation", 2);
    p.dh = d[0];
    p.dw = d[1];
  }
  p.ceil_mode = attr_int(spec, "ceil_mode") != 0;
  return p;
}

// max and average pooling share the shape rule (pool2d_shape).
class Pool2dNode : public Node {
 public:
  Pool2dNode(const OpSpec& spec, const GraphSpec& graph, bool average) : Node(spec), average_(average) {
    check_io(spec, graph, 1, DType::kUint8, DType::kUint8);
    p_ = pool_params(spec, !average);
    in_ = qparams(graph, spec.inputs[0]);
    out_ = qparams(graph, spec.outputs[0]);
    if (average) {
      count_include_pad_ = attr_int(spec, "count_include_pad") != 0;
      divisor_override_ = attr_int(spec, "divisor_override");
      QR_CHECK_ARG(divisor_override_ >= 0, where(spec) + ": divisor_override must be >= 0 (0 = none)");
    } else {
      QR_CHECK_ARG(in_.scale == out_.scale && in_.zero_point == out_.zero_point,
                   where(spec) + ": max pooling keeps its input's quantization; the output's differs");
    }
  }

  Shape output_shape(const Shape* in, int) const override {
    check_shape(in[0].rank == 4, *this, "expects a 4-D input, got " + in[0].str());
    ops::Pool2dShape s{};
    try {
      s = ops::pool2d_shape(in[0].n(), in[0].h(), in[0].w(), in[0].c(), p_,
                            average_ ? ops::kMaxPoolWindowArea : 0);
    } catch (const ValueError& e) {
      check_shape(false, *this, std::string(e.what()) + " (input " + in[0].str() + ")");
    }
    return Shape{4, {s.n, s.c, s.oh, s.ow}};
  }

  void run(const NodeIo& io) const override {
    ops::Pool2dShape s = nhwc(io.in_shapes[0]);
    s.oh = io.out_shape.h();
    s.ow = io.out_shape.w();
    const auto* x = static_cast<const uint8_t*>(io.in[0]);
    auto* y = static_cast<uint8_t*>(io.out);
    if (average_)
      ops::avg_pool2d(x, s, p_, count_include_pad_, divisor_override_, in_, out_, y);
    else
      ops::max_pool2d(x, s, p_, y);
  }

 private:
  bool average_;
  ops::Pool2dParams p_;
  QParams in_{}, out_{};
  bool count_include_pad_ = true;
  int64_t divisor_override_ = 0;
};

class AdaptiveAvgPool2dNode : public Node {
 public:
  AdaptiveAvgPool2dNode(const OpSpec& spec, const GraphSpec& graph) : Node(spec) {
    check_io(spec, graph, 1, DType::kUint8, DType::kUint8);
    const auto& size = attr_ints(spec, "output_size", 2);
    oh_ = size[0];
    ow_ = size[1];
    QR_CHECK_ARG(oh_ >= 1 && ow_ >= 1, where(spec) + ": output_size must be >= 1");
    in_ = qparams(graph, spec.inputs[0]);
    out_ = qparams(graph, spec.outputs[0]);
  }

  Shape output_shape(const Shape* in, int) const override {
    check_shape(in[0].rank == 4, *this, "expects a 4-D input, got " + in[0].str());
    try {
      ops::adaptive_pool2d_shape(in[0].n(), in[0].h(), in[0].w(), in[0].c(), oh_, ow_);
    } catch (const ValueError& e) {
      check_shape(false, *this, std::string(e.what()) + " (input " + in[0].str() + ")");
    }
    return Shape{4, {in[0].n(), in[0].c(), oh_, ow_}};
  }

  void run(const NodeIo& io) const override {
    ops::Pool2dShape s = nhwc(io.in_shapes[0]);
    s.oh = oh_;
    s.ow = ow_;
    ops::adaptive_avg_pool2d(static_cast<const uint8_t*>(io.in[0]), s, in_, out_, static_cast<uint8_t*>(io.out));
  }

 private:
  int64_t oh_ = 1, ow_ = 1;
  QParams in_{}, out_{};
};

}  // namespace

std::unique_ptr<Node> make_max_pool2d(const OpSpec& spec, const GraphSpec& graph) {
  return std::make_unique<Pool2dNode>(spec, graph, false);
}
std::unique_ptr<Node> make_avg_pool2d(const OpSpec& spec, const GraphSpec& graph) {
  return std::make_unique<Pool2dNode>(spec, graph, true);
}
std::unique_ptr<Node> make_adaptive_avg_pool2d(const OpSpec& spec, const GraphSpec& graph) {
  return std::make_unique<AdaptiveAvgPool2dNode>(spec, graph);
}

}  // namespace qr::engine
