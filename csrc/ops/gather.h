// The gather of channel bytes within NHWC rows, y[r][i] = x[r][index[i]]: ShuffleNet's channel
// shuffle, chunk/split and channel slices (the engine's gather_channels). The index is fixed per
// node, so its SIMD plan (kernels.h, ByteGatherPlan) is built once here.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "kernels/kernels.h"

namespace qr::ops {

class ChannelGather {
 public:
  // index: output channel i is input channel index[i] (each >= 0; ValueError otherwise).
  explicit ChannelGather(std::vector<int32_t> index);
  int64_t c_out() const { return static_cast<int64_t>(index_.size()); }
  int32_t max_index() const { return max_index_; }  // -1 for an empty index
  // Rows of c_in (> max_index()) bytes to rows of c_out() bytes, on `isa`'s kernel ("" = the active one).
  void run(const uint8_t* x, int64_t c_in, int64_t rows, uint8_t* y, const std::string& isa = "") const;
  // Per chunk of 64 outputs, the windows its plan uses (0: gathered byte by byte); for tests.
  std::vector<int> windows_per_chunk() const;

 private:
  std::vector<int32_t> index_;
  int32_t max_index_ = -1;
  std::vector<ByteGatherChunk> chunks_;
  std::vector<ByteGatherWindow> windows_;
};

}  // namespace qr::ops
