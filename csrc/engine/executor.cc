// The engine's build, planning and execution (executor.h).
#include "engine/executor.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <exception>
#include <unordered_map>

#include "core/error.h"
#include "core/release_pages.h"
#include "core/thread_pool.h"
#include "dispatch/cpu_features.h"
#include "engine/transpose.h"

namespace qr::engine {
namespace {

constexpr size_t kMaxPlans = 16;  // distinct input shapes remembered; older plans are dropped

bool layouts_agree(const Shape& s) { return s.rank == 2 || s.c() == 1 || s.h() * s.w() == 1; }

std::string bytes_str(int64_t bytes) { return std::to_string(bytes) + " bytes"; }

// The bytes a value of shape `s` takes, after checking every dimension is in [1, kMaxDim] and the
// bytes are at most `cap`, without wrapping: ValueError starting with `what` otherwise.
int64_t value_bytes(const Shape& s, DType dtype, int64_t cap, const std::string& what) {
  int64_t bytes = static_cast<int64_t>(dtype_size(dtype));
  bool fits = true;
  for (int r = 0; r < s.rank; ++r) {
    QR_CHECK_ARG(s.d[r] >= 1, what + " " + s.str() + " would be empty");
    QR_CHECK_ARG(s.d[r] <= kMaxDim, what + " " + s.str() + " has a dimension beyond " + std::to_string(kMaxDim));
    fits = fits && checked_mul(bytes, s.d[r], &bytes);
  }
  QR_CHECK_ARG(fits && bytes <= cap, what + " " + s.str() + " would take " +
                                         (fits ? bytes_str(bytes) : std::string("more than 2^63 bytes")) +
                                         ", more than max_activation_bytes (" + bytes_str(cap) + ")");
  return bytes;
}

std::string where_node(const Node& n) { return "op '" + n.name + "' (" + n.op + ")"; }

std::string shapes_str(const std::vector<Shape>& shapes) {
  std::string s;
  for (const Shape& x : shapes) s += (s.empty() ? "" : ", ") + x.str();
  return s;
}

// The channels of value v known at load, whatever the input's size (-1: not known): a graph input's
// declared channels, a conv's output channels, or the first input's through ops that keep them.
// Runs before the nodes check their specs, so it reads them defensively.
int64_t known_channels(const GraphSpec& spec, const std::vector<int>& producer, int v) {
  static const char* const kKeepChannels[] = {"quantize", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "resize",
                                              "pad", "add", "sub", "mul", "lut", "lut_channels"};
  for (;;) {
    const int i = producer[v];
    if (i < 0) {
      const auto at = std::find(spec.inputs.begin(), spec.inputs.end(), v) - spec.inputs.begin();
      const auto& dims = spec.input_shapes[at];
      return dims.size() == 4 ? dims[1] : -1;
    }
    const OpSpec& op = spec.ops[i];
    if (op.op == "conv2d") {
      const auto w = op.tensors.find("weight");
      return w != op.tensors.end() && w->second.shape.size() == 4 ? w->second.shape[0] : -1;
    }
    if (op.inputs.empty() ||
        std::none_of(std::begin(kKeepChannels), std::end(kKeepChannels), [&](const char* k) { return op.op == k; }))
      return -1;
    v = op.inputs[0];
  }
}

// A flatten of NHWC values puts them in NCHW order, a transpose of every image (a third of a small
// CNN's run at batch 16 where its convs are fast). Where its one reader is a linear and the channels
// C are known at load, that linear is built with its weight columns permuted to NHWC order
// (OpSpec::features_channels_last) and the flatten copies the bytes as they are: the same products,
// summed exactly in int32, so the same result. Returns, per op, the C its linear reads in NHWC order
// (or 0), and for a flatten the C it keeps NHWC order for.
std::vector<int64_t> flatten_channels_last(const GraphSpec& spec, const std::vector<int>& producer) {
  std::vector<int64_t> channels(spec.ops.size(), 0);
  for (size_t i = 0; i < spec.ops.size(); ++i) {
    if (spec.ops[i].op != "flatten" || spec.ops[i].inputs.size() != 1) continue;
    const int f = spec.ops[i].outputs[0];
    if (std::find(spec.outputs.begin(), spec.outputs.end(), f) != spec.outputs.end()) continue;
    int reader = -1, readers = 0;
    for (size_t j = 0; j < spec.ops.size(); ++j)
      for (int u : spec.ops[j].inputs)
        if (u == f) ++readers, reader = static_cast<int>(j);
    if (readers != 1 || spec.ops[reader].op != "linear") continue;
    const auto w = spec.ops[reader].tensors.find("weight");
    if (w == spec.ops[reader].tensors.end() || w->second.shape.size() != 2) continue;
    const int64_t c = known_channels(spec, producer, spec.ops[i].inputs[0]), k = w->second.shape[1];
    // One channel, or one pixel: the two orders agree and nothing needs to move.
    if (c < 2 || k % c != 0 || k / c < 2) continue;
    channels[i] = channels[reader] = c;
  }
  return channels;
}

// GraphSpec::release_tensors during the build: per distinct tensor data, the ops not yet built that
// name it and whether a built node borrows it; the last of its ops to be built releases it unless
// borrowed. (The tensors are distinct arrays, one per name, so data pointers tell them apart.)
class TensorRelease {
 public:
  explicit TensorRelease(const GraphSpec& spec) : spec_(spec) {
    if (!spec.release_tensors) return;
    for (const OpSpec& op : spec.ops)
      for (const auto& role_tensor : op.tensors) index_.try_emplace(role_tensor.second.data, index_.size());
    pending_.reset(new std::atomic<int>[index_.size()]());
    borrowed_.reset(new std::atomic<bool>[index_.size()]());
    for (const OpSpec& op : spec.ops)
      for (const auto& role_tensor : op.tensors) ++pending_[index_.at(role_tensor.second.data)];
  }

  // Op i's node is built (any thread).
  void built(size_t i, const Node& node) {
    if (!spec_.release_tensors) return;
    const OpSpec& op = spec_.ops[i];
    for (const std::string& role : node.borrowed_tensors()) {
      const auto it = op.tensors.find(role);
      if (it != op.tensors.end()) borrowed_[index_.at(it->second.data)] = true;
    }
    for (const auto& role_tensor : op.tensors) {
      const ConstTensor& t = role_tensor.second;
      const size_t k = index_.at(t.data);
      if (--pending_[k] == 0 && !borrowed_[k]) release_pages(t.data, t.bytes);
    }
  }

 private:
  const GraphSpec& spec_;
  std::unordered_map<const void*, size_t> index_;
  std::unique_ptr<std::atomic<int>[]> pending_;
  std::unique_ptr<std::atomic<bool>[]> borrowed_;
};

}  // namespace

Engine::Engine(const GraphSpec& spec)
    : values_(spec.values),
      inputs_(spec.inputs),
      outputs_(spec.outputs),
      input_shapes_(spec.input_shapes),
      max_activation_bytes_(spec.max_activation_bytes) {
  QR_CHECK_ARG(max_activation_bytes_ >= 1, "max_activation_bytes must be >= 1");
  const int nv = static_cast<int>(values_.size());
  QR_CHECK_ARG(!inputs_.empty() && inputs_.size() == input_shapes_.size(), "graph: every input needs a shape");
  QR_CHECK_ARG(!outputs_.empty(), "graph: no outputs");
  std::vector<bool> defined(nv, false);
  for (size_t i = 0; i < inputs_.size(); ++i) {
    const int v = inputs_[i];
    QR_CHECK_ARG(v >= 0 && v < nv && !defined[v], "graph: input value index out of range or repeated");
    QR_CHECK_ARG(values_[v].dtype != DType::kUint8, "graph: inputs must be float32 or int64 values");
    const size_t rank = input_shapes_[i].size();
    QR_CHECK_ARG(rank >= 2 && rank <= 4, "graph: inputs must have rank 2, 3 or 4");
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
    for (const auto& t : op.tensors)
      weight_bytes_ += t.second.elements() * (t.second.dtype == 'f' ? 4 : 1);
  }
  // The nodes (weight packing: most of a load) are independent: built on the thread pool. The
  // error of the first bad op in graph order is the one reported, whatever the thread timing.
  const size_t n_ops = spec.ops.size();
  std::vector<int> producer(nv, -1);
  for (size_t i = 0; i < n_ops; ++i) producer[op_outputs_[i]] = static_cast<int>(i);
  const std::vector<int64_t> channels_last = flatten_channels_last(spec, producer);
  nodes_.resize(n_ops);
  TensorRelease release(spec);
  std::vector<std::exception_ptr> errors(n_ops);
  ThreadPool::global().parallel_for(static_cast<int64_t>(n_ops), [&](int64_t i) {
    const OpSpec& op = spec.ops[i];
    try {
      if (channels_last[i] > 0 && op.op == "linear") {
        OpSpec nhwc = op;
        nhwc.features_channels_last = channels_last[i];
        nodes_[i] = make_node(nhwc, spec);
      } else {
        nodes_[i] = make_node(op, spec);
      }
      if (channels_last[i] > 0 && op.op == "flatten") nodes_[i]->keep_channels_last();
      release.built(static_cast<size_t>(i), *nodes_[i]);
    } catch (const ValueError& e) {
      const std::string msg = e.what();
      errors[i] = std::make_exception_ptr(ValueError(msg.rfind("op '", 0) == 0 ? msg : where(op) + ": " + msg));
    } catch (const std::bad_alloc& e) {
      errors[i] = std::make_exception_ptr(OutOfMemory(where(op) + ": " + e.what() + " (packing its weights)"));
    }
  });
  for (const std::exception_ptr& e : errors)
    if (e) std::rethrow_exception(e);
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
  // A graph whose input sizes are all fixed (but the batch) is planned here at batch 1, so that an
  // attribute its shapes can never take fails at load rather than at the first run.
  std::vector<Shape> batch_one;
  for (const auto& dims : input_shapes_) {
    Shape s;
    s.rank = static_cast<int>(dims.size());
    for (int d = 0; d < s.rank; ++d) s.d[d] = d == 0 ? 1 : dims[d];
    if (std::find(dims.begin() + 1, dims.end(), -1) != dims.end()) return;
    batch_one.push_back(s);
  }
  plan(batch_one);
}

std::vector<std::pair<size_t, std::string>> Engine::borrowed_tensors() const {
  std::vector<std::pair<size_t, std::string>> out;
  for (size_t i = 0; i < nodes_.size(); ++i)
    for (std::string& role : nodes_[i]->borrowed_tensors()) out.emplace_back(i, std::move(role));
  return out;
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
  const int threads = ThreadPool::global().num_threads();
  key.push_back(threads);  // the chunk size depends on it
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = plans_.find(key);
    if (it != plans_.end()) return it->second;
  }
  std::shared_ptr<Plan> p = build_plan(input_shapes);
  chunk_batch(*p, input_shapes, threads);
  std::lock_guard<std::mutex> lock(mutex_);
  if (plans_.size() >= kMaxPlans) plans_.erase(plans_.begin());
  plans_.emplace(key, p);
  return p;
}

std::shared_ptr<Plan> Engine::build_plan(const std::vector<Shape>& input_shapes) const {
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
    const int64_t bytes = value_bytes(input_shapes[i], values_[inputs_[i]].dtype, max_activation_bytes_,
                                      "input " + std::to_string(i) + " of shape");
    l.bytes = in_place ? 0 : static_cast<size_t>(bytes);
  }
  std::vector<Shape> in;
  for (size_t i = 0; i < nodes_.size(); ++i) {
    in.clear();
    const Node& node = *nodes_[i];
    for (int v : op_inputs_[i]) {
      in.push_back(p->shapes[v]);
      life[v].last = static_cast<int>(i);
      QR_CHECK_ARG(p->shapes[v].rank != 3 || node.accepts_rank3(),
                   where_node(node) + ": does not take a 3-D (N, S, F) value, got " + p->shapes[v].str());
    }
    const Shape out = node.output_shape(in.data(), static_cast<int>(in.size()));
    const int v = op_outputs_[i];
    const int64_t bytes =
        value_bytes(out, values_[v].dtype, max_activation_bytes_, where_node(node) + ": its output");
    p->shapes[v] = out;
    life[v].first = life[v].last = static_cast<int>(i);
    life[v].bytes = static_cast<size_t>(bytes);
  }
  for (int v : outputs_) life[v].last = static_cast<int>(nodes_.size());
  // The arena is at most the sum of the values' (aligned) sizes: if that sum fits, no offset wraps.
  int64_t total = 0;
  for (const Lifetime& l : life)
    QR_CHECK_ARG(checked_add(total, static_cast<int64_t>(l.bytes) + 64, &total),
                 "the activations of one run at input shape " + shapes_str(input_shapes) + " pass 2^63 bytes");
  p->memory = plan_memory(life);
  QR_CHECK_ARG(p->memory.arena_bytes <= static_cast<size_t>(max_activation_bytes_),
               "the activations of one run at input shape " + shapes_str(input_shapes) + " need " +
                   bytes_str(static_cast<int64_t>(p->memory.arena_bytes)) + ", more than max_activation_bytes (" +
                   bytes_str(max_activation_bytes_) + ")");
  return p;
}

// A batch of small images runs in chunks whose activations fit the L2 caches of the threads that run
// it, beside the weights: a chunk's values then stay in cache from op to op instead of going out to L3
// or memory and back (the seed CNN at batch 256, one thread, Zen 4: 15.0 -> 13.0 ms in chunks of 13).
// Each chunk reads every weight again, so a model whose weights do not fit there runs whole (ResNet-18
// at batch 16 on 2 threads ran 10 % slower in chunks of 2). Every op computes each image on its own,
// so chunks give the same bits; a graph whose values do not all scale with the batch runs whole.
void Engine::chunk_batch(Plan& p, const std::vector<Shape>& input_shapes, int threads) const {
  constexpr long kDefaultL2 = 1 << 20;  // when CPUID does not say
  const int64_t n = input_shapes[0].rank ? input_shapes[0].d[0] : 0;
  for (const Shape& s : input_shapes)
    if (s.rank < 1 || s.d[0] != n) return;
  if (n < 3) return;  // a chunk holds at least 2 images and fewer than the batch
  auto at_batch = [&](int64_t b) {
    std::vector<Shape> shapes = input_shapes;
    for (Shape& s : shapes) s.d[0] = b;
    return build_plan(shapes);
  };
  const long l2 = cpu_features().l2_bytes > 0 ? cpu_features().l2_bytes : kDefaultL2;
  const int64_t budget = static_cast<int64_t>(l2) * threads;
  if (weight_bytes_ >= budget) return;
  const int64_t per_image = static_cast<int64_t>(std::max<size_t>(at_batch(1)->memory.arena_bytes, 1));
  const int64_t fit = (budget - weight_bytes_) / per_image;
  if (fit < 2 || fit >= n) return;
  const int64_t chunks = (n + fit - 1) / fit, size = (n + chunks - 1) / chunks, tail = n - (chunks - 1) * size;
  // Every value of a chunk must be the batch's value cut along dimension 0.
  auto scales = [&](const Plan& part, int64_t b) {
    for (size_t v = 0; v < values_.size(); ++v) {
      const Shape &whole = p.shapes[v], &cut = part.shapes[v];
      if (whole.rank < 1 || cut.rank != whole.rank || whole.d[0] != n || cut.d[0] != b) return false;
      for (int d = 1; d < whole.rank; ++d)
        if (cut.d[d] != whole.d[d]) return false;
    }
    return true;
  };
  std::shared_ptr<const Plan> part = at_batch(size), last = tail == size ? part : at_batch(tail);
  if (!scales(*part, size) || !scales(*last, tail)) return;
  p.chunk = size;
  p.chunk_plan = part;
  p.tail_plan = last;
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

void Engine::run(const Plan& plan, const std::vector<const void*>& inputs, const std::vector<float*>& outputs,
                 std::vector<double>* op_seconds) const {
  if (inputs.size() != inputs_.size() || outputs.size() != outputs_.size())
    throw InternalError("Engine::run: wrong number of input or output buffers");
  if (!plan.chunk) return run_whole(plan, inputs, outputs, op_seconds);
  const int64_t n = plan.shapes[inputs_[0]].d[0];
  std::vector<const void*> in(inputs.size());
  std::vector<float*> out(outputs.size());
  for (int64_t b0 = 0; b0 < n; b0 += plan.chunk) {
    // Each input and output is contiguous with the batch outermost: a chunk is a slice of it.
    for (size_t i = 0; i < inputs.size(); ++i) {
      const int v = inputs_[i];
      const size_t image_bytes = static_cast<size_t>(plan.shapes[v].elements() / n) * dtype_size(values_[v].dtype);
      in[i] = static_cast<const uint8_t*>(inputs[i]) + b0 * image_bytes;
    }
    for (size_t i = 0; i < outputs.size(); ++i) out[i] = outputs[i] + b0 * (plan.shapes[outputs_[i]].elements() / n);
    run_whole(n - b0 < plan.chunk ? *plan.tail_plan : *plan.chunk_plan, in, out, op_seconds);
  }
}

void Engine::run_whole(const Plan& plan, const std::vector<const void*>& inputs, const std::vector<float*>& outputs,
                       std::vector<double>* op_seconds) const {
  std::unique_ptr<Arena> arena;
  try {
    arena = take_arena(plan.memory.arena_bytes);
  } catch (const std::bad_alloc&) {
    throw OutOfMemory("the activation arena of one run (" + bytes_str(static_cast<int64_t>(plan.memory.arena_bytes)) +
                      ") could not be allocated");
  }
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
      transpose_images(static_cast<const float*>(inputs[i]), s.n(), s.c(), s.h() * s.w(),
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
    const auto t0 = op_seconds ? std::chrono::steady_clock::now() : std::chrono::steady_clock::time_point{};
    try {
      nodes_[i]->run(io);
    } catch (const std::bad_alloc& e) {  // a kernel's scratch memory: name the op
      throw OutOfMemory(where_node(*nodes_[i]) + ": " + e.what());
    }
    if (op_seconds) (*op_seconds)[i] += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
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
