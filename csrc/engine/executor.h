// The engine: a quantized graph built once (nodes with prepacked weights), plans per input shape
// (value shapes + arena offsets, cached), and run(), which executes every op in C++ on arena memory.
//
// Graph inputs arrive as float32 NCHW and outputs leave as float32 NCHW; inside, rank-4 values are
// NHWC, so the only layout changes happen here. run() is safe to call from several threads at once:
// plans are immutable once made and each call takes its own arena from a pool.
#pragma once
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "core/aligned_buffer.h"
#include "engine/graph.h"
#include "engine/memory_plan.h"
#include "engine/node.h"

namespace qr::engine {

struct Plan {
  std::vector<Shape> shapes;  // per value
  MemoryPlan memory;
  std::vector<bool> in_place_input;  // per graph input: read where it is (no NHWC copy in the arena)
  std::vector<bool> op_reads_nchw;   // per op: its input 0 is a graph input in NCHW order (NodeIo::in_nchw)
  // chunk > 0: the batch runs as chunks of `chunk` images through chunk_plan, the last one through
  // tail_plan when it is smaller (Engine::chunk_batch); 0: the batch runs whole through this plan.
  int64_t chunk = 0;
  std::shared_ptr<const Plan> chunk_plan, tail_plan;
};

class Engine {
 public:
  explicit Engine(const GraphSpec& spec);

  // The plan for these input shapes (NCHW); qr::ValueError when they do not fit the graph.
  std::shared_ptr<const Plan> plan(const std::vector<Shape>& input_shapes) const;

  // inputs: contiguous, of the plan's input shapes and the inputs' dtypes (float32 NCHW, or int64);
  // outputs: float32 NCHW buffers of the plan's output shapes. With op_seconds (one slot per op), each
  // op's wall time is added to it.
  void run(const Plan& plan, const std::vector<const void*>& inputs, const std::vector<float*>& outputs,
           std::vector<double>* op_seconds = nullptr) const;

  size_t num_ops() const { return nodes_.size(); }
  const Node& node(size_t i) const { return *nodes_[i]; }
  const std::vector<int>& op_inputs(size_t i) const { return op_inputs_[i]; }
  int op_output(size_t i) const { return op_outputs_[i]; }
  const std::vector<int>& inputs() const { return inputs_; }
  DType value_dtype(int v) const { return values_[v].dtype; }
  const std::vector<int>& outputs() const { return outputs_; }
  // (op index, tensor role) of each tensor a node borrows, whose data the caller keeps (graph.h, GraphSpec).
  std::vector<std::pair<size_t, std::string>> borrowed_tensors() const;

 private:
  // One call's memory: the activation arena and the pointer/shape lists handed to each op, kept
  // between calls so a run at a known shape allocates nothing here.
  struct Arena {
    AlignedBuffer buffer;
    std::vector<const void*> value_ptr, in;
    std::vector<Shape> in_shapes;
  };
  // The plan of these (already checked) input shapes, without chunks and not cached.
  std::shared_ptr<Plan> build_plan(const std::vector<Shape>& input_shapes) const;
  // Splits p's batch into chunks whose activations fit the L2 caches of `threads` threads, where
  // that is sound.
  void chunk_batch(Plan& p, const std::vector<Shape>& input_shapes, int threads) const;
  // Runs one batch, or one chunk, on its own arena.
  void run_whole(const Plan& plan, const std::vector<const void*>& inputs, const std::vector<float*>& outputs,
                 std::vector<double>* op_seconds) const;
  std::unique_ptr<Arena> take_arena(size_t bytes) const;
  void give_arena(std::unique_ptr<Arena> arena) const;

  std::vector<ValueSpec> values_;
  std::vector<int> inputs_, outputs_;
  std::vector<std::vector<int64_t>> input_shapes_;
  int64_t max_activation_bytes_;
  int64_t weight_bytes_ = 0;  // the ops' constant tensors as the file holds them
  std::vector<std::unique_ptr<Node>> nodes_;
  std::vector<std::vector<int>> op_inputs_;
  std::vector<int> op_outputs_;
  // Per graph input: the op that quantizes it when that is its only reader (-1 otherwise). Such an
  // input is not transposed into the arena: the quantize reads the NCHW floats directly.
  std::vector<int> input_quantizer_;

  mutable std::mutex mutex_;
  mutable std::map<std::vector<int64_t>, std::shared_ptr<const Plan>> plans_;
  mutable std::vector<std::unique_ptr<Arena>> free_arenas_;
};

}  // namespace qr::engine
