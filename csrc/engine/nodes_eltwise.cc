// The elementwise and layout ops of the engine: add, concat, lookup tables, and flatten (the one
// place NHWC memory is reordered to the NCHW order the model's Linear layers expect, unless the
// engine permuted its linear reader's weights to NHWC order instead: executor.cc).
#include <algorithm>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "core/error.h"
#include "engine/transpose.h"
#include "engine/node.h"
#include "ops/eltwise.h"
#include "ops/gather.h"
#include "ops/u8_common.h"

namespace qr::engine {
namespace {

// add, and sub (a - b: the same kernel with b's multiplier negated).
class AddNode : public Node {
 public:
  AddNode(const OpSpec& spec, const GraphSpec& graph) : Node(spec), subtract_(spec.op == "sub") {
    check_io(spec, graph, 2, DType::kUint8, DType::kUint8);
    a_ = qparams(graph, spec.inputs[0]);
    b_ = qparams(graph, spec.inputs[1]);
    out_ = qparams(graph, spec.outputs[0]);
    relu_ = activation(spec, false) == Activation::kRelu;
    isa_ = graph.isa;
    const uint8_t codes[1] = {0};  // checks s_a / s_y and s_b / s_y at load, as the kernel will, on one element
    uint8_t y[1];
    ops::add(codes, a_, codes, b_, ops::Broadcast::kNone, 1, 1, out_, relu_, y, isa_, subtract_);
  }
  Shape output_shape(const Shape* in, int) const override {
    check_shape(in[0] == in[1], *this, "inputs must have the same shape, got " + in[0].str() + " and " + in[1].str());
    return in[0];
  }
  void run(const NodeIo& io) const override {
    const Shape& s = io.out_shape;
    const int64_t c = s.c();
    ops::add(static_cast<const uint8_t*>(io.in[0]), a_, static_cast<const uint8_t*>(io.in[1]), b_,
             ops::Broadcast::kNone, s.elements() / c, c, out_, relu_, static_cast<uint8_t*>(io.out), isa_, subtract_);
  }

 private:
  const bool subtract_;
  QParams a_{}, b_{}, out_{};
  bool relu_ = false;
  std::string isa_;  // the graph's ISA path ("" = the active one)
};

// The product of two activations of one shape, or of (N, C, H, W) and (N, C, 1, 1) in either order
// (a squeeze-excitation block's x * scale): the smaller operand is broadcast over H and W.
class MulNode : public Node {
 public:
  MulNode(const OpSpec& spec, const GraphSpec& graph) : Node(spec) {
    check_io(spec, graph, 2, DType::kUint8, DType::kUint8);
    q_[0] = qparams(graph, spec.inputs[0]);
    q_[1] = qparams(graph, spec.inputs[1]);
    out_ = qparams(graph, spec.outputs[0]);
    isa_ = graph.isa;
    const uint8_t codes[1] = {0};  // checks the scales' ratio at load, on a one-element product
    uint8_t y[1];
    ops::mul(codes, q_[0], codes, q_[1], false, 1, 1, 1, out_, y, isa_);
  }
  Shape output_shape(const Shape* in, int) const override {
    if (in[0] == in[1]) return in[0];
    const int big = broadcast_of(in[0], in[1]) ? 0 : broadcast_of(in[1], in[0]) ? 1 : -1;
    check_shape(big >= 0, *this, "inputs must have the same shape, or one (N, C, H, W) and the other (N, C, 1, 1); got " +
                                     in[0].str() + " and " + in[1].str());
    return in[big];
  }
  void run(const NodeIo& io) const override {
    const Shape& s = io.out_shape;
    const int big = io.in_shapes[0] == s ? 0 : 1, small = 1 - big;
    const bool per_image = !(io.in_shapes[small] == s);
    ops::mul(static_cast<const uint8_t*>(io.in[big]), q_[big], static_cast<const uint8_t*>(io.in[small]), q_[small],
             per_image, s.n(), s.h() * s.w(), s.c(), out_, static_cast<uint8_t*>(io.out), isa_);
  }

 private:
  // b is (N, C, 1, 1) against a's (N, C, H, W).
  static bool broadcast_of(const Shape& a, const Shape& b) {
    return a.rank == 4 && b.rank == 4 && b.n() == a.n() && b.c() == a.c() && b.h() == 1 && b.w() == 1;
  }
  QParams q_[2]{}, out_{};
  std::string isa_;  // the graph's ISA path ("" = the active one)
};

// NCHW axis -> NHWC memory: the output is `outer` rows, each the inputs' `inner` runs side by side.
class ConcatNode : public Node {
 public:
  ConcatNode(const OpSpec& spec, const GraphSpec& graph) : Node(spec) {
    check_io(spec, graph, -1, DType::kUint8, DType::kUint8);
    axis_ = attr_int(spec, "axis");
    QR_CHECK_ARG(axis_ >= 1 && axis_ <= 3, where(spec) + ": axis must be 1, 2 or 3");
    for (int v : spec.inputs) q_in_.push_back(qparams(graph, v));
    out_ = qparams(graph, spec.outputs[0]);
    for (const QParams& q : q_in_) ops::requant_table(q, out_, "input scale");
    isa_ = graph.isa;
  }
  Shape output_shape(const Shape* in, int n_in) const override {
    Shape out = in[0];
    check_shape(axis_ < out.rank, *this, "axis " + std::to_string(axis_) + " is out of range for " + out.str());
    for (int i = 1; i < n_in; ++i) {
      bool same = in[i].rank == out.rank;
      for (int d = 0; same && d < out.rank; ++d) same = d == axis_ || in[i].d[d] == out.d[d];
      check_shape(same, *this, "input " + std::to_string(i) + " " + in[i].str() + " does not match " + in[0].str() +
                                   " outside axis " + std::to_string(axis_));
      out.d[axis_] += in[i].d[axis_];
    }
    return out;
  }
  void run(const NodeIo& io) const override {
    std::vector<ops::ConcatInput> parts;
    parts.reserve(io.n_in);
    const Shape& o = io.out_shape;
    for (int i = 0; i < io.n_in; ++i) {
      const Shape& s = io.in_shapes[i];
      parts.push_back({static_cast<const uint8_t*>(io.in[i]), s.elements() / outer(s), q_in_[i]});
    }
    ops::concat(parts, outer(o), out_, static_cast<uint8_t*>(io.out), isa_);
  }

 private:
  // Rows of the NHWC memory above the concatenated axis: N*H*W for channels, N for H, N*H for W.
  int64_t outer(const Shape& s) const {
    if (s.rank == 2 || axis_ == 2) return s.n();
    return axis_ == 1 ? s.n() * s.h() * s.w() : s.n() * s.h();
  }
  int64_t axis_ = 1;
  std::vector<QParams> q_in_;
  QParams out_{};
  std::string isa_;  // the graph's ISA path ("" = the active one)
};

class LutNode : public Node {
 public:
  LutNode(const OpSpec& spec, const GraphSpec& graph) : Node(spec) {
    check_io(spec, graph, 1, DType::kUint8, DType::kUint8);
    const ConstTensor* t = tensor(spec, "table", 'B', 1, true);
    QR_CHECK_ARG(t->shape[0] == 256, where(spec) + ": tensor 'table' must have 256 entries");
    std::memcpy(table_, t->data, 256);
    isa_ = graph.isa;
  }
  Shape output_shape(const Shape* in, int) const override { return in[0]; }
  void run(const NodeIo& io) const override {
    ops::lut(static_cast<const uint8_t*>(io.in[0]), io.out_shape.elements(), table_, static_cast<uint8_t*>(io.out), isa_);
  }

 private:
  uint8_t table_[256];
  std::string isa_;  // the graph's ISA path ("" = the active one)
};

// y[..., c] = table[c][x[..., c]]: a function of the code that differs per channel (PReLU's slopes).
class LutChannelsNode : public Node {
 public:
  LutChannelsNode(const OpSpec& spec, const GraphSpec& graph) : Node(spec) {
    check_io(spec, graph, 1, DType::kUint8, DType::kUint8);
    const ConstTensor* t = tensor(spec, "table", 'B', 2, true);
    QR_CHECK_ARG(t->shape[1] == 256, where(spec) + ": tensor 'table' must have 256 entries per channel");
    const auto* data = static_cast<const uint8_t*>(t->data);
    table_.assign(data, data + t->shape[0] * 256);
    channels_ = t->shape[0];
    isa_ = graph.isa;
  }
  Shape output_shape(const Shape* in, int) const override {
    check_shape((in[0].rank == 4 || in[0].rank == 2) && in[0].c() == channels_, *this,
                "expects a 2-D or 4-D input with " + std::to_string(channels_) + " channels (one table each), got " +
                    in[0].str());
    return in[0];
  }
  void run(const NodeIo& io) const override {
    ops::lut_channels(static_cast<const uint8_t*>(io.in[0]), io.out_shape.elements() / channels_, channels_,
                      table_.data(), static_cast<uint8_t*>(io.out), isa_);
  }

 private:
  std::vector<uint8_t> table_;
  int64_t channels_ = 0;
  std::string isa_;  // the graph's ISA path ("" = the active one)
};

// The element size of a layout op (one input, one output of the same dtype, uint8 or float32), after
// checking that a uint8 output keeps the input's quantization: these ops only move values.
size_t layout_op_element_size(const OpSpec& spec, const GraphSpec& graph) {
  QR_CHECK_ARG(spec.inputs.size() == 1 && spec.outputs.size() == 1, where(spec) + ": expects one input and one output");
  const DType d = graph.values.at(spec.inputs[0]).dtype;
  check_io(spec, graph, 1, d, d);
  if (d == DType::kUint8) {
    const QParams a = qparams(graph, spec.inputs[0]), b = qparams(graph, spec.outputs[0]);
    QR_CHECK_ARG(a.scale == b.scale && a.zero_point == b.zero_point,
                 where(spec) + ": " + spec.op + " keeps its input's quantization; the output's differs");
  }
  return dtype_size(d);
}

// (N, C, H, W) -> (N, C*H*W) in NCHW order: each image's (H*W, C) NHWC block is transposed.
class FlattenNode : public Node {
 public:
  FlattenNode(const OpSpec& spec, const GraphSpec& graph) : Node(spec), elem_(layout_op_element_size(spec, graph)) {}
  Shape output_shape(const Shape* in, int) const override {
    check_shape(in[0].rank == 4, *this, "expects a 4-D input, got " + in[0].str());
    return Shape{2, {in[0].n(), in[0].c() * in[0].h() * in[0].w(), 0, 0}};
  }
  void keep_channels_last() override { channels_last_ = true; }
  std::string kernel() const override { return channels_last_ ? "c++ (NHWC order kept: the linear reads it)" : "c++"; }
  void run(const NodeIo& io) const override {
    const Shape& s = io.in_shapes[0];
    const int64_t c = s.c(), hw = s.h() * s.w();
    const auto* x = static_cast<const uint8_t*>(io.in[0]);
    auto* y = static_cast<uint8_t*>(io.out);
    const size_t e = elem_;
    // The same order in both layouts, or a reader that takes NHWC order (executor.cc).
    if (hw == 1 || c == 1 || channels_last_) {
      std::memcpy(y, x, static_cast<size_t>(s.elements()) * e);
      return;
    }
    if (e == 1)
      transpose_images(x, s.n(), hw, c, y);
    else
      transpose_images(reinterpret_cast<const float*>(x), s.n(), hw, c, reinterpret_cast<float*>(y));
  }

 private:
  size_t elem_ = 1;
  bool channels_last_ = false;
};

// Output channel i is input channel index[i]: ShuffleNet's channel shuffle, chunk/split and channel
// slices (convert/layout.py). Per NHWC pixel, a gather of bytes (or floats) from the input's row.
class GatherChannelsNode : public Node {
 public:
  GatherChannelsNode(const OpSpec& spec, const GraphSpec& graph)
      : Node(spec), elem_(layout_op_element_size(spec, graph)), isa_(graph.isa) {
    const ConstTensor* t = tensor(spec, "index", 'i', 1, true);
    const auto* index = static_cast<const int32_t*>(t->data);
    index_.assign(index, index + t->shape[0]);
    for (int32_t i : index_) QR_CHECK_ARG(i >= 0, where(spec) + ": tensor 'index' holds a negative channel");
    max_index_ = *std::max_element(index_.begin(), index_.end());
    if (elem_ == 1) bytes_ = std::make_unique<ops::ChannelGather>(index_);  // plans its SIMD windows once
  }
  Shape output_shape(const Shape* in, int) const override {
    check_shape(in[0].rank == 4 || in[0].rank == 2, *this, "expects a 2-D or 4-D input, got " + in[0].str());
    check_shape(max_index_ < in[0].c(), *this, "tensor 'index' names channel " + std::to_string(max_index_) +
                                               " of an input with " + std::to_string(in[0].c()));
    Shape out = in[0];
    out.d[1] = static_cast<int64_t>(index_.size());
    return out;
  }
  void run(const NodeIo& io) const override {
    const Shape& s = io.in_shapes[0];
    const int64_t c_in = s.c(), c_out = static_cast<int64_t>(index_.size()), rows = s.elements() / c_in;
    if (elem_ == 1)
      bytes_->run(static_cast<const uint8_t*>(io.in[0]), c_in, rows, static_cast<uint8_t*>(io.out), isa_);
    else
      gather(static_cast<const float*>(io.in[0]), c_in, c_out, rows, static_cast<float*>(io.out));
  }

 private:
  template <class T>
  void gather(const T* x, int64_t c_in, int64_t c_out, int64_t rows, T* y) const {
    const int32_t* index = index_.data();
    ops::parallel_chunks(rows, c_out, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const T* __restrict xr = x + r * c_in;
        T* __restrict yr = y + r * c_out;
        for (int64_t i = 0; i < c_out; ++i) yr[i] = xr[index[i]];
      }
    });
  }
  size_t elem_ = 1;
  std::string isa_;  // the graph's ISA path ("" = the active one)
  std::vector<int32_t> index_;
  int32_t max_index_ = 0;
  std::unique_ptr<ops::ChannelGather> bytes_;  // uint8 values: the kernel table's gather
};

}  // namespace

std::unique_ptr<Node> make_gather_channels(const OpSpec& spec, const GraphSpec& graph) {
  return std::make_unique<GatherChannelsNode>(spec, graph);
}
std::unique_ptr<Node> make_add(const OpSpec& spec, const GraphSpec& graph) { return std::make_unique<AddNode>(spec, graph); }
std::unique_ptr<Node> make_sub(const OpSpec& spec, const GraphSpec& graph) { return std::make_unique<AddNode>(spec, graph); }
std::unique_ptr<Node> make_mul(const OpSpec& spec, const GraphSpec& graph) { return std::make_unique<MulNode>(spec, graph); }
std::unique_ptr<Node> make_concat(const OpSpec& spec, const GraphSpec& graph) {
  return std::make_unique<ConcatNode>(spec, graph);
}
std::unique_ptr<Node> make_lut(const OpSpec& spec, const GraphSpec& graph) { return std::make_unique<LutNode>(spec, graph); }
std::unique_ptr<Node> make_lut_channels(const OpSpec& spec, const GraphSpec& graph) {
  return std::make_unique<LutChannelsNode>(spec, graph);
}
std::unique_ptr<Node> make_flatten(const OpSpec& spec, const GraphSpec& graph) {
  return std::make_unique<FlattenNode>(spec, graph);
}

}  // namespace qr::engine
