// The engine's build, planning and execution (executor.h).
#include "engine/executor.h"

#include <algorithm>
#include <chrono>
#include <cstring>

#include "core/error.h"
#include "core/thread_pool.h"
#include "engine/transpose.h"

namespace qr::engine {
namespace {

constexpr size_t kMaxPlans = 16;  // distinct input shapes remembered; older plans are dropped

bool layouts_agree(const Shape& s) { return s.rank == 2 || s.c() == 1 || s.h() * s.w() == 1; }

}  // namespace

Engine::Engine(const GraphSpec& spec)
    : values_(spec.values), inputs_(spec.inputs), outputs_(spec.outputs), input_shapes_(spec.input_shapes) {
  const int nv = static_cast<int>(values_.size());
  QR_CHECK_ARG(!inputs_.empty() && inputs_.size() == input_shapes_.size(), "graph: every input needs a shape");
  QR_CHECK_ARG(!outputs_.empty(), "graph: no outputs");
  std::vector<bool> defined(nv, false);
  for (size_t i = 0; i < inputs_.size(); ++i) {
    const int v = inputs_[i];
    QR_CHECK_ARG(v >= 0 && v < nv && !defined[v], "graph: input value index out of range or repeated");
    QR_CHECK_ARG(values_[v].dtype == DType::kFloat32, "graph: inputs must be float32 values");
    const size_t rank = input_shapes_[i].size();
    QR_CHECK_ARG(rank == 2 || rank == 4, "graph: inputs must have rank 2 or 4");
    defined[v] = true;
  }
  for (const OpSpec& op : spec.ops) {
    for (int v : op.inputs)
      QR_CHECK_ARG(v >= 0 && v < nv && defined[v], where(op) + ": reads a value no earlier op produces");
    QR_CHECK_ARG(op.outputs.size() == 1, where(op) + ": expects exactly one output");
    const int v = op.outputs[0];
    QR_CHECK_ARG(v >= 0 && v < nv && !defined[v], where(op) + ": writes a value that already exists");
    op_inputs_.push_back(op.inputs);
    op_outputs_.push_back(v);
    defined[v] = true;
  }
  // The nodes (weight packing: most of a load) are independent: built on the thread pool. The
  // error of the first bad op in graph order is the one reported, whatever the thread timing.
  const size_t n_ops = spec.ops.size();
  nodes_.resize(n_ops);
  std::vector<std::string> errors(n_ops);
  ThreadPool::global().parallel_for(static_cast<int64_t>(n_ops), [&](int64_t i) {
    const OpSpec& op = spec.ops[i];
    try {
      nodes_[i] = make_node(op, spec);
    } catch (const ValueError& e) {
      const std::string msg = e.what();
      errors[i] = msg.rfind("op '", 0) == 0 ? msg : where(op) + ": " + msg;
    }
  });
  for (const std::string& e : errors)
    if (!e.empty()) throw ValueError(e);
  for (int v : outputs_) {
    QR_CHECK_ARG(v >= 0 && v < nv && defined[v], "graph: an output is never produced");
    QR_CHECK_ARG(values_[v].dtype == DType::kFloat32, "graph: outputs must be float32 values");
  }
  for (int v : inputs_) {
    int reader = -1, readers = 0;
    for (size_t i = 0; i < n_ops; ++i)
      for (int u : op_inputs_[i])
        if (u == v) ++readers, reader = static_cast<int>(i);
    const bool is_output = std::find(outputs_.begin(), outputs_.end(), v) != outputs_.end();
    input_quantizer_.push_back(readers == 1 && !is_output && nodes_[reader]->op == "quantize" ? reader : -1);
  }
}

std::shared_ptr<const Plan> Engine::plan(const std::vector<Shape>& input_shapes) const {
  QR_CHECK_ARG(input_shapes.size() == inputs_.size(), "expected " + std::to_string(inputs_.size()) + " input(s), got " +
                                                          std::to_string(input_shapes.size()));
  std::vector<int64_t> key;
  for (size_t i = 0; i < input_shapes.size(); ++i) {
    const Shape& s = input_shapes[i];
    const auto& want = input_shapes_[i];
    bool ok = s.rank == static_cast<int>(want.size());
    for (int d = 0; ok && d < s.rank; ++d) ok = s.d[d] >= 1 && (want[d] == -1 || want[d] == s.d[d]);
    if (!ok) {
      std::string w = "(";
      for (size_t d = 0; d < want.size(); ++d) w += (d ? ", " : "") + (want[d] == -1 ? std::string("any") : std::to_string(want[d]));
      throw ValueError("input " + std::to_string(i) + " has shape " + s.str() + "; the model expects " + w + ")");
    }
    key.insert(key.end(), s.d, s.d + s.rank);
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = plans_.find(key);
    if (it != plans_.end()) return it->second;
  }
  auto p = std::make_shared<Plan>();
  p->shapes.assign(values_.size(), Shape{});
  for (size_t i = 0; i < inputs_.size(); ++i) p->shapes[inputs_[i]] = input_shapes[i];
  std::vector<Lifetime> life(values_.size());
  p->op_reads_nchw.assign(nodes_.size(), false);
  for (size_t i = 0; i < inputs_.size(); ++i) {
    const bool agree = layouts_agree(input_shapes[i]), quantizer = input_quantizer_[i] >= 0;
    if (!agree && quantizer) p->op_reads_nchw[input_quantizer_[i]] = true;
    const bool in_place = agree || quantizer;
    p->in_place_input.push_back(in_place);
    Lifetime& l = life[inputs_[i]];
    l.first = -1;
    l.bytes = in_place ? 0 : static_cast<size_t>(input_shapes[i].elements()) * 4;
  }
  std::vector<Shape> in;
  for (size_t i = 0; i < nodes_.size(); ++i) {
    in.clear();
    for (int v : op_inputs_[i]) {
      in.push_back(p->shapes[v]);
      life[v].last = static_cast<int>(i);
    }
    const Shape out = nodes_[i]->output_shape(in.data(), static_cast<int>(in.size()));
    for (int r = 0; r < out.rank; ++r)
      check_shape(out.d[r] >= 1, *nodes_[i], "its output " + out.str() + " would be empty");
    const int v = op_outputs_[i];
    p->shapes[v] = out;
    life[v].first = life[v].last = static_cast<int>(i);
    life[v].bytes = static_cast<size_t>(out.elements()) * dtype_size(values_[v].dtype);
  }
  for (int v : outputs_) life[v].last = static_cast<int>(nodes_.size());
  p->memory = plan_memory(life);
  std::lock_guard<std::mutex> lock(mutex_);
  if (plans_.size() >= kMaxPlans) plans_.erase(plans_.begin());
  plans_.emplace(key, p);
  return p;
}

std::unique_ptr<Engine::Arena> Engine::take_arena(size_t bytes) const {
  std::unique_ptr<Arena> arena;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!free_arenas_.empty()) {
      arena = std::move(free_arenas_.back());
      free_arenas_.pop_back();
    }
  }
  if (!arena) arena = std::make_unique<Arena>();
  arena->buffer.ensure(bytes);
  return arena;
}

void Engine::give_arena(std::unique_ptr<Arena> arena) const {
  std::lock_guard<std::mutex> lock(mutex_);
  free_arenas_.push_back(std::move(arena));
}

void Engine::run(const Plan& plan, const std::vector<const float*>& inputs, const std::vector<float*>& outputs,
                 std::vector<double>* op_seconds) const {
  if (inputs.size() != inputs_.size() || outputs.size() != outputs_.size())
    throw InternalError("Engine::run: wrong number of input or output buffers");
  auto arena = take_arena(plan.memory.arena_bytes);
  struct Return {  // the arena goes back to the pool even when an op throws
    const Engine* e;
    std::unique_ptr<Arena>* a;
    ~Return() { e->give_arena(std::move(*a)); }
  } give_back{this, &arena};
  uint8_t* base = arena->buffer.as<uint8_t>();
  std::vector<const void*>& ptr = arena->value_ptr;
  ptr.resize(values_.size());
  for (size_t v = 0; v < values_.size(); ++v) ptr[v] = base + plan.memory.offsets[v];
  for (size_t i = 0; i < inputs_.size(); ++i) {
    const Shape& s = plan.shapes[inputs_[i]];
    if (plan.in_place_input[i]) {
      ptr[inputs_[i]] = inputs[i];
    } else {
      transpose_images(inputs[i], s.n(), s.c(), s.h() * s.w(),
                      reinterpret_cast<float*>(base + plan.memory.offsets[inputs_[i]]));
    }
  }
  std::vector<const void*>& in = arena->in;
  std::vector<Shape>& in_shapes = arena->in_shapes;
  for (size_t i = 0; i < nodes_.size(); ++i) {
    in.clear();
    in_shapes.clear();
    for (int v : op_inputs_[i]) {
      in.push_back(ptr[v]);
      in_shapes.push_back(plan.shapes[v]);
    }
    const int o = op_outputs_[i];
    const NodeIo io{in.data(), in_shapes.data(), static_cast<int>(in.size()), const_cast<void*>(ptr[o]), plan.shapes[o],
                    plan.op_reads_nchw[i]};
    if (op_seconds) {
      const auto t0 = std::chrono::steady_clock::now();
      nodes_[i]->run(io);
      (*op_seconds)[i] += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    } else {
      nodes_[i]->run(io);
    }
  }
  for (size_t i = 0; i < outputs_.size(); ++i) {
    const Shape& s = plan.shapes[outputs_[i]];
    const auto* y = static_cast<const float*>(ptr[outputs_[i]]);
    if (layouts_agree(s))
      std::memcpy(outputs[i], y, static_cast<size_t>(s.elements()) * sizeof(float));
    else
      transpose_images(y, s.n(), s.h() * s.w(), s.c(), outputs[i]);
  }
}

}  // namespace qr::engine
