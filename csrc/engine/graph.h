// The engine's input: a validated quantized graph (docs/format.md) as plain structs. The Python
// side builds it from the .qnn's graph; tensors point at caller memory only while the engine is built.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/limits.h"
#include "kernels/requant.h"

namespace qr::engine {

// int64: token ids and attention masks, graph inputs only.
enum class DType { kUint8, kFloat32, kInt64 };

inline size_t dtype_size(DType d) { return d == DType::kUint8 ? 1 : d == DType::kFloat32 ? 4 : 8; }

// A value's logical shape, NCHW for rank 4, (N, S, F) for rank 3 and (N, F) for rank 2. Rank-4 values
// are stored NHWC, the others row-major (as torch holds them).
struct Shape {
  int rank = 0;
  int64_t d[4] = {0, 0, 0, 0};
  int64_t n() const { return d[0]; }
  int64_t c() const { return d[1]; }
  int64_t h() const { return rank == 4 ? d[2] : 1; }
  int64_t w() const { return rank == 4 ? d[3] : 1; }
  int64_t elements() const {
    int64_t e = 1;
    for (int i = 0; i < rank; ++i) e *= d[i];
    return e;
  }
  bool operator==(const Shape& o) const {
    if (rank != o.rank) return false;
    for (int i = 0; i < rank; ++i)
      if (d[i] != o.d[i]) return false;
    return true;
  }
  std::string str() const;
};

struct ValueSpec {
  DType dtype = DType::kFloat32;
  QParams q{1.0f, 0};  // uint8 values only
};

// A constant tensor of the file: dtype code as numpy's ('b' int8, 'B' uint8, 'f' float32).
struct ConstTensor {
  char dtype = 0;
  std::vector<int64_t> shape;
  const void* data = nullptr;
  size_t bytes = 0;  // of data
  int64_t elements() const {
    int64_t e = 1;
    for (int64_t s : shape) e *= s;
    return e;
  }
};

struct OpSpec {
  std::string op, name;
  std::vector<int> inputs, outputs;                  // value indices
  std::map<std::string, std::vector<int64_t>> ints;  // int, bool and int-list attributes
  std::map<std::string, std::string> strs;           // string attributes (act)
  std::map<std::string, double> floats;              // number attributes (layer_norm's eps)
  std::map<std::string, ConstTensor> tensors;
  // Not from the file: set by the engine's flatten rewrite (executor.cc) on a linear whose features
  // arrive in NHWC order, (h, w, c) for this many channels (0: NCHW order, as the format defines).
  int64_t features_channels_last = 0;
};

// The caller keeps every op's ConstTensor data alive and unchanged while the Engine is built from it.
// Most nodes copy or pack what they need, so then the data can go (a loaded model's file bytes); a
// node may borrow a large read-only table instead: the caller keeps the data of the tensors
// Engine::borrowed_tensors() lists as long as the Engine. With release_tensors the build itself lets
// the rest go as it goes (release_pages: they read as zeros afterwards), each once every op that
// names it is built, so that a load does not hold the file's tensors and their packed copies at once.
struct GraphSpec {
  std::vector<ValueSpec> values;
  std::vector<int> inputs, outputs;
  std::vector<std::vector<int64_t>> input_shapes;  // declared, -1 = any
  std::vector<OpSpec> ops;
  std::string isa;  // the ISA path to prepack for; empty = the active one
  bool release_tensors = false;  // the data is the caller's own copy, unread after the build
  // The most activation memory (the arena of one run) a plan may take; larger ones are refused.
  int64_t max_activation_bytes = kDefaultMaxActivationBytes;
};

}  // namespace qr::engine
