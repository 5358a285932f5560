// One executable op of the engine: built once from its OpSpec (weights prepacked, requantization
// precomputed), then asked for its output shape per input shape and run on arena memory.
//
// Memory layout: rank-4 values are NHWC, rank-2 values (N, F) row-major; dtype per ValueSpec.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/graph.h"

namespace qr::engine {

struct NodeIo {
  const void* const* in;
  const Shape* in_shapes;
  int n_in;
  void* out;
  Shape out_shape;
  // Input 0 is a graph input still in its NCHW order (given only to a quantize that is the input's
  // one reader, which then does the layout change itself).
  bool in_nchw = false;
};

class Node {
 public:
  explicit Node(const OpSpec& spec) : op(spec.op), name(spec.name) {}
  virtual ~Node() = default;
  // The output's shape for these input shapes; qr::ValueError when they do not fit the op.
  virtual Shape output_shape(const Shape* in, int n_in) const = 0;
  virtual void run(const NodeIo& io) const = 0;
  // Multiply-accumulates of one run (0 for ops without any), for summaries and profiles.
  virtual int64_t macs(const Shape* /*in*/, const Shape& /*out*/) const { return 0; }
  // What runs it: the kernel family and ISA path (e.g. "gemm avx512_vnni").
  virtual std::string kernel() const { return "c++"; }

  // The engine's flatten -> linear rewrite at load (executor.cc): the flatten keeps NHWC order
  // (its linear reader was built with OpSpec::features_channels_last).
  virtual void keep_channels_last() {}

  // Whether the op takes (N, S, F) values (a transformer's); the planner refuses them to every other op.
  virtual bool accepts_rank3() const { return false; }

  // The roles of its spec's tensors whose data the node reads after it is built (borrowed tables; graph.h).
  virtual std::vector<std::string> borrowed_tensors() const { return {}; }

  const std::string op, name;
};

// Builds the node for spec.op; qr::ValueError for an unknown op or bad attributes/tensors.
std::unique_ptr<Node> make_node(const OpSpec& spec, const GraphSpec& graph);

// The op names the engine runs, from ops/op_list.inc.
std::vector<std::string> op_names();

#define X(op, factory) std::unique_ptr<Node> factory(const OpSpec& spec, const GraphSpec& graph);
#include "ops/op_list.inc"
#undef X

// Spec access for the node factories: each throws qr::ValueError naming the op and the field.
std::string where(const OpSpec& spec);
const std::vector<int64_t>& attr_ints(const OpSpec& spec, const char* key, size_t count);
// An int-list attribute of min_count to max_count values (reduce's dims).
const std::vector<int64_t>& attr_ints(const OpSpec& spec, const char* key, size_t min_count, size_t max_count);
int64_t attr_int(const OpSpec& spec, const char* key);
const std::string& attr_str(const OpSpec& spec, const char* key);
double attr_float(const OpSpec& spec, const char* key);
// The tensor for `role` with numpy dtype code `dtype` and `rank` dimensions; null if absent and optional.
const ConstTensor* tensor(const OpSpec& spec, const char* role, char dtype, size_t rank, bool required);
// Checks the number and dtype of the op's inputs (n_in < 0: at least one) and its one output.
void check_io(const OpSpec& spec, const GraphSpec& graph, int n_in, DType in, DType out);
QParams qparams(const GraphSpec& graph, int value);
Activation activation(const OpSpec& spec, bool allow_relu6);
// Throws qr::ValueError "<op>: <msg>" when cond fails; for shape checks in output_shape.
void check_shape(bool cond, const Node& node, const std::string& msg);

}  // namespace qr::engine
