// The op registry (ops/op_list.inc) and the spec checks the node factories share.
#include "engine/node.h"

#include "core/error.h"

namespace qr::engine {

std::string Shape::str() const {
  std::string s = "(";
  for (int i = 0; i < rank; ++i) s += (i ? ", " : "") + std::to_string(d[i]);
  return s + ")";
}

std::unique_ptr<Node> make_node(const OpSpec& spec, const GraphSpec& graph) {
#define X(op_name, factory) \
  if (spec.op == #op_name) return factory(spec, graph);
#include "ops/op_list.inc"
#undef X
  throw ValueError("op '" + spec.name + "': unknown op '" + spec.op + "'");
}

std::vector<std::string> op_names() {
  return {
#define X(op_name, factory) #op_name,
#include "ops/op_list.inc"
#undef X
  };
}

std::string where(const OpSpec& spec) { return "op '" + spec.name + "' (" + spec.op + ")"; }

const std::vector<int64_t>& attr_ints(const OpSpec& spec, const char* key, size_t count) {
  return attr_ints(spec, key, count, count);
}

const std::vector<int64_t>& attr_ints(const OpSpec& spec, const char* key, size_t min_count, size_t max_count) {
  auto it = spec.ints.find(key);
  QR_CHECK_ARG(it != spec.ints.end(), where(spec) + ": attribute '" + key + "' is missing");
  const size_t n = it->second.size();
  QR_CHECK_ARG(n >= min_count && n <= max_count,
               where(spec) + ": attribute '" + key + "' must have " + std::to_string(min_count) +
                   (max_count == min_count ? "" : " to " + std::to_string(max_count)) + " value(s)");
  return it->second;
}

int64_t attr_int(const OpSpec& spec, const char* key) { return attr_ints(spec, key, 1)[0]; }

const std::string& attr_str(const OpSpec& spec, const char* key) {
  auto it = spec.strs.find(key);
  QR_CHECK_ARG(it != spec.strs.end(), where(spec) + ": attribute '" + key + "' is missing");
  return it->second;
}

double attr_float(const OpSpec& spec, const char* key) {
  auto it = spec.floats.find(key);
  QR_CHECK_ARG(it != spec.floats.end(), where(spec) + ": attribute '" + key + "' is missing (a number)");
  return it->second;
}

const ConstTensor* tensor(const OpSpec& spec, const char* role, char dtype, size_t rank, bool required) {
  auto it = spec.tensors.find(role);
  if (it == spec.tensors.end()) {
    QR_CHECK_ARG(!required, where(spec) + ": tensor '" + role + "' is missing");
    return nullptr;
  }
  const ConstTensor& t = it->second;
  QR_CHECK_ARG(t.dtype == dtype, where(spec) + ": tensor '" + role + "' has the wrong dtype");
  QR_CHECK_ARG(t.shape.size() == rank, where(spec) + ": tensor '" + role + "' must have rank " + std::to_string(rank));
  for (int64_t s : t.shape) QR_CHECK_ARG(s >= 1, where(spec) + ": tensor '" + role + "' has an empty dimension");
  return &t;
}

void check_io(const OpSpec& spec, const GraphSpec& graph, int n_in, DType in, DType out) {
  const int count = static_cast<int>(spec.inputs.size());
  QR_CHECK_ARG(n_in < 0 ? count >= 1 : count == n_in,
               where(spec) + ": expects " + (n_in < 0 ? std::string("at least 1") : std::to_string(n_in)) + " input(s)");
  QR_CHECK_ARG(spec.outputs.size() == 1, where(spec) + ": expects exactly one output");
  const int nv = static_cast<int>(graph.values.size());
  for (int v : spec.inputs) {
    QR_CHECK_ARG(v >= 0 && v < nv, where(spec) + ": input value index out of range");
    QR_CHECK_ARG(graph.values[v].dtype == in, where(spec) + ": input has the wrong dtype");
  }
  const int o = spec.outputs[0];
  QR_CHECK_ARG(o >= 0 && o < nv, where(spec) + ": output value index out of range");
  QR_CHECK_ARG(graph.values[o].dtype == out, where(spec) + ": output has the wrong dtype");
}

QParams qparams(const GraphSpec& graph, int value) {
  const QParams q = graph.values[value].q;
  check_qparams(q, "value");
  return q;
}

Activation activation(const OpSpec& spec, bool allow_relu6) {
  const std::string& a = attr_str(spec, "act");
  if (a == "none") return Activation::kNone;
  if (a == "relu") return Activation::kRelu;
  if (a == "relu6" && allow_relu6) return Activation::kRelu6;
  throw ValueError(where(spec) + ": attribute 'act' must be " + (allow_relu6 ? "none, relu or relu6" : "none or relu") +
                   ", got '" + a + "'");
}

void check_shape(bool cond, const Node& node, const std::string& msg) {
  QR_CHECK_ARG(cond, "op '" + node.name + "' (" + node.op + "): " + msg);
}

}  // namespace qr::engine
