// The transformer encoder's ops in the engine (ops/transformer.h): embedding from int64 token ids,
// the additive attention mask, multi-head attention and the per-token quantized linear, on
// (N, S, F) float32 values stored row-major.
#include <limits>
#include <string>
#include <vector>

#include "core/error.h"
#include "dispatch/dispatch.h"
#include "engine/node.h"
#include "ops/linear.h"
#include "ops/transformer.h"

namespace qr::engine {
namespace {

const TransformerKernels& transformer_kernels(const GraphSpec& graph) {
  return *(graph.isa.empty() ? active_kernels() : kernel_table(graph.isa)).transformer;
}

std::vector<float> copy_floats(const ConstTensor* t) {
  if (!t) return {};
  const auto* d = static_cast<const float*>(t->data);
  return std::vector<float>(d, d + t->elements());
}

class EmbeddingNode : public Node {
 public:
  EmbeddingNode(const OpSpec& spec, const GraphSpec& graph) : Node(spec) {
    check_io(spec, graph, 1, DType::kInt64, DType::kFloat32);
    // The word table: float32 'word', or int8 'word_q' with a float32 'word_scale' per id.
    const ConstTensor* word = tensor(spec, "word", 'f', 2, false);
    const ConstTensor* word_q = tensor(spec, "word_q", 'b', 2, false);
    const ConstTensor* word_scale = tensor(spec, "word_scale", 'f', 1, false);
    QR_CHECK_ARG(word ? !word_q && !word_scale : word_q && word_scale,
                 where(spec) + ": needs tensor 'word', or 'word_q' with 'word_scale'");
    const ConstTensor* table = word ? word : word_q;
    QR_CHECK_ARG(!word_scale || word_scale->shape[0] == word_q->shape[0],
                 where(spec) + ": tensor 'word_scale' must have one scale per id");
    const ConstTensor* position = tensor(spec, "position", 'f', 2, true);
    const ConstTensor* token_type = tensor(spec, "token_type", 'f', 2, false);
    const int64_t f = table->shape[1];
    QR_CHECK_ARG(position->shape[1] == f && (!token_type || token_type->shape[1] == f),
                 where(spec) + ": the word, position and token_type tables must have the same number of features");
    // The word table, the model's largest (11.7 MB int8 in MiniLM), is borrowed (borrowed_tensors: the
    // caller keeps it, GraphSpec). The small tables are copied.
    word_ = word ? static_cast<const float*>(word->data) : nullptr;
    word_q_ = word_q ? static_cast<const int8_t*>(word_q->data) : nullptr;
    word_scale_ = copy_floats(word_scale);
    position_ = copy_floats(position);
    token_type_ = token_type ? std::vector<float>(static_cast<const float*>(token_type->data),
                                                  static_cast<const float*>(token_type->data) + f)
                             : std::vector<float>();
    t_.vocab = table->shape[0];
    t_.positions = position->shape[0];
    t_.features = f;
  }
  Shape output_shape(const Shape* in, int) const override {
    check_shape(in[0].rank == 2, *this, "expects token ids of shape (N, S), got " + in[0].str());
    check_shape(in[0].d[1] <= t_.positions, *this,
                "a sequence of " + std::to_string(in[0].d[1]) + " tokens is longer than the " +
                    std::to_string(t_.positions) + " positions the model has");
    return Shape{3, {in[0].d[0], in[0].d[1], t_.features, 0}};
  }
  void run(const NodeIo& io) const override {
    ops::EmbeddingTables t = t_;
    t.word = word_;
    t.word_q = word_q_;
    t.word_scale = word_scale_.empty() ? nullptr : word_scale_.data();
    t.position = position_.data();
    t.token_type = token_type_.empty() ? nullptr : token_type_.data();
    ops::embedding(static_cast<const int64_t*>(io.in[0]), io.in_shapes[0].d[0], io.in_shapes[0].d[1], t,
                   static_cast<float*>(io.out));
  }
  bool accepts_rank3() const override { return true; }
  std::vector<std::string> borrowed_tensors() const override { return {word_ ? "word" : "word_q"}; }

 private:
  const float* word_ = nullptr;
  const int8_t* word_q_ = nullptr;
  std::vector<float> word_scale_, position_, token_type_;
  ops::EmbeddingTables t_;
};

class AttentionBiasNode : public Node {
 public:
  AttentionBiasNode(const OpSpec& spec, const GraphSpec& graph) : Node(spec) {
    check_io(spec, graph, 1, DType::kInt64, DType::kFloat32);
  }
  Shape output_shape(const Shape* in, int) const override {
    check_shape(in[0].rank == 2, *this, "expects an attention mask of shape (N, S), got " + in[0].str());
    return in[0];
  }
  void run(const NodeIo& io) const override {
    ops::attention_bias(static_cast<const int64_t*>(io.in[0]), io.out_shape.elements(), static_cast<float*>(io.out));
  }
};

class AttentionNode : public Node {
 public:
  // Inputs q, k, v, bias, or qkv (the three as column blocks of one (N, S, 3F) value) and bias.
  AttentionNode(const OpSpec& spec, const GraphSpec& graph) : Node(spec) {
    fused_ = spec.inputs.size() == 2;
    check_io(spec, graph, fused_ ? 2 : 4, DType::kFloat32, DType::kFloat32);
    heads_ = attr_int(spec, "heads");
    QR_CHECK_ARG(heads_ >= 1, where(spec) + ": heads must be >= 1");
    const double scale = attr_float(spec, "scale");
    QR_CHECK_ARG(scale > 0.0 && scale <= std::numeric_limits<float>::max(), where(spec) + ": scale must be > 0 and finite");
    scale_ = static_cast<float>(scale);
    kernels_ = &transformer_kernels(graph);
  }
  Shape output_shape(const Shape* in, int) const override {
    Shape out = in[0];
    if (fused_) {
      check_shape(in[0].rank == 3 && in[0].d[2] % 3 == 0, *this,
                  "expects qkv of shape (N, S, 3F), got " + in[0].str());
      out.d[2] = in[0].d[2] / 3;
    } else {
      check_shape(in[0].rank == 3 && in[1] == in[0] && in[2] == in[0], *this,
                  "expects q, k and v of one shape (N, S, F), got " + in[0].str() + ", " + in[1].str() + " and " +
                      in[2].str());
    }
    check_shape(out.d[2] % heads_ == 0, *this,
                std::to_string(heads_) + " heads do not divide " + std::to_string(out.d[2]) + " features");
    const Shape& mask = in[fused_ ? 1 : 3];
    check_shape(mask.rank == 2 && mask.d[0] == out.d[0] && mask.d[1] == out.d[1], *this,
                "the attention mask has shape " + mask.str() + "; the tokens are " + out.str());
    return out;
  }
  void run(const NodeIo& io) const override {
    const Shape& s = io.out_shape;
    const int64_t f = s.d[2];
    const auto* q = static_cast<const float*>(io.in[0]);
    if (fused_)
      ops::attention(q, q + f, q + 2 * f, 3 * f, static_cast<const float*>(io.in[1]), s.d[0], s.d[1], f, heads_,
                     scale_, *kernels_, static_cast<float*>(io.out));
    else
      ops::attention(q, static_cast<const float*>(io.in[1]), static_cast<const float*>(io.in[2]), f,
                     static_cast<const float*>(io.in[3]), s.d[0], s.d[1], f, heads_, scale_, *kernels_,
                     static_cast<float*>(io.out));
  }
  int64_t macs(const Shape*, const Shape& out) const override { return 2 * out.elements() * out.d[1]; }
  std::string kernel() const override { return std::string("float32 ") + kernels_->isa; }
  bool accepts_rank3() const override { return true; }

 private:
  bool fused_ = false;
  int64_t heads_ = 1;
  float scale_ = 1.0f;
  const TransformerKernels* kernels_ = nullptr;
};

class LinearDynamicNode : public Node {
 public:
  LinearDynamicNode(const OpSpec& spec, const GraphSpec& graph) : Node(spec) {
    check_io(spec, graph, 1, DType::kFloat32, DType::kFloat32);
    const ConstTensor* w = tensor(spec, "weight", 'b', 2, true);
    QR_CHECK_ARG(w->shape[0] <= std::numeric_limits<int>::max() && w->shape[1] <= std::numeric_limits<int>::max(),
                 where(spec) + ": tensor 'weight' is too large");
    const int n = static_cast<int>(w->shape[0]), k = static_cast<int>(w->shape[1]);
    const ConstTensor* scale = tensor(spec, "w_scale", 'f', 1, true);
    QR_CHECK_ARG(scale->shape[0] == n, where(spec) + ": tensor 'w_scale' must have one scale per output channel");
    const ConstTensor* bias = tensor(spec, "bias", 'f', 1, false);
    QR_CHECK_ARG(!bias || bias->shape[0] == n, where(spec) + ": tensor 'bias' must have one value per output channel");
    w_scale_ = copy_floats(scale);
    for (float s : w_scale_)
      QR_CHECK_ARG(s > 0.0f && s <= std::numeric_limits<float>::max(), where(spec) + ": w_scale must be > 0 and finite");
    bias_ = copy_floats(bias);
    const ConstTensor* in_scale = tensor(spec, "in_scale", 'f', 1, false);
    QR_CHECK_ARG(!in_scale || in_scale->shape[0] == k, where(spec) + ": tensor 'in_scale' must have one value per input feature");
    in_scale_ = copy_floats(in_scale);
    for (float s : in_scale_)
      QR_CHECK_ARG(s > 0.0f && s <= std::numeric_limits<float>::max(), where(spec) + ": in_scale must be > 0 and finite");
    // The static option: x_scale and x_zero_point, both or neither (format.py checks this too).
    const ConstTensor* x_scale = tensor(spec, "x_scale", 'f', 1, false);
    const ConstTensor* x_zero_point = tensor(spec, "x_zero_point", 'B', 1, false);
    QR_CHECK_ARG(!x_scale == !x_zero_point, where(spec) + ": tensors 'x_scale' and 'x_zero_point' go together");
    if (x_scale) {
      QR_CHECK_ARG(x_scale->shape[0] == 1 && x_zero_point->shape[0] == 1,
                   where(spec) + ": tensors 'x_scale' and 'x_zero_point' hold one value each");
      fixed_.scale = *static_cast<const float*>(x_scale->data);
      fixed_.zero_point = *static_cast<const uint8_t*>(x_zero_point->data);
      QR_CHECK_ARG(fixed_.scale > 0.0f && fixed_.scale <= std::numeric_limits<float>::max(),
                   where(spec) + ": x_scale must be > 0 and finite");
    }
    const std::string& act = attr_str(spec, "act");
    QR_CHECK_ARG(act == "none" || act == "gelu", where(spec) + ": attribute 'act' must be none or gelu, got '" + act + "'");
    act_ = act == "gelu" ? ops::DynamicAct::kGelu : ops::DynamicAct::kNone;
    // pack_weights checks K <= 65536 and [-127, 127]; the engine prefixes its error with this op.
    packed_ = ops::pack_weights(static_cast<const int8_t*>(w->data), k, n, k, graph.isa);
    kernels_ = &transformer_kernels(graph);
  }
  Shape output_shape(const Shape* in, int) const override {
    const int r = in[0].rank;
    check_shape((r == 2 || r == 3) && in[0].d[r - 1] == packed_->k, *this,
                "expects (N, " + std::to_string(packed_->k) + ") or (N, S, " + std::to_string(packed_->k) + "), got " +
                    in[0].str());
    check_shape(in[0].elements() / packed_->k <= std::numeric_limits<int>::max(), *this, "too many rows");
    Shape out = in[0];
    out.d[r - 1] = packed_->n;
    return out;
  }
  void run(const NodeIo& io) const override {
    ops::linear_dynamic(*packed_, static_cast<const float*>(io.in[0]), io.in_shapes[0].elements() / packed_->k,
                        in_scale_.empty() ? nullptr : in_scale_.data(), fixed_, w_scale_.data(), bias_.empty() ? nullptr : bias_.data(), act_, *kernels_, static_cast<float*>(io.out));
  }
  int64_t macs(const Shape*, const Shape& out) const override { return out.elements() * packed_->k; }
  std::string kernel() const override {
    const std::string note = packed_->kernel_choice.empty() ? "" : " (" + packed_->kernel_choice + ")";
    return std::string("gemm ") + packed_->kernels->isa + note +
           (fixed_.scale > 0.0f ? ", statically quantized input" : ", per-token quantized input");
  }
  bool accepts_rank3() const override { return true; }

 private:
  std::shared_ptr<PackedWeights> packed_;
  std::vector<float> in_scale_, w_scale_, bias_;
  ops::StaticInput fixed_;
  ops::DynamicAct act_ = ops::DynamicAct::kNone;
  const TransformerKernels* kernels_ = nullptr;
};

}  // namespace

std::unique_ptr<Node> make_embedding(const OpSpec& spec, const GraphSpec& graph) {
  return std::make_unique<EmbeddingNode>(spec, graph);
}
std::unique_ptr<Node> make_attention_bias(const OpSpec& spec, const GraphSpec& graph) {
  return std::make_unique<AttentionBiasNode>(spec, graph);
}
std::unique_ptr<Node> make_attention(const OpSpec& spec, const GraphSpec& graph) {
  return std::make_unique<AttentionNode>(spec, graph);
}
std::unique_ptr<Node> make_linear_dynamic(const OpSpec& spec, const GraphSpec& graph) {
  return std::make_unique<LinearDynamicNode>(spec, graph);
}

}  // namespace qr::engine
