// The GEMM driver: B packed once per layer, the output split into blocks over the thread pool, each
// block handed to the active ISA's gemm_block. Plain C++ (no ISA flags).
//
// C[m, n] = sum_k A[m, k] * B[n, k], A uint8, B int8 in [-127, 127], int32 accumulation: exact for
// K <= kMaxK since 255 * 127 * 65536 < 2^31. Every output element is computed by one thread in one
// fixed K order, so results do not depend on the thread count.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/aligned_buffer.h"
#include "kernels/kernels.h"

namespace qr {

constexpr int kMaxK = 65536;

// B prepacked for one ISA path, with the per-column weight sums the zero-point correction needs.
struct PackedWeights {
  const GemmKernels* kernels = nullptr;
  int n = 0, k = 0;
  AlignedBuffer data;
  std::vector<int32_t> colsum;  // sum_k B[n, k]
  // Which of the path's micro-kernels run on these weights, and why (GemmKernels::describe_packing),
  // e.g. "vpmaddubsw: every packed weight pair has |w1|+|w2| <= 128"; empty for a one-kernel path.
  std::string kernel_choice;
};

// The sum of k int8 weights into *sum, and their minimum (never above 0): -128, outside the [-127, 127]
// the kernels take, shows there. A sum and a minimum the vectoriser widens; a check per byte, summed
// through the vector, was a tenth of ResNet-18's load.
int8_t weight_sum_and_min(const int8_t* w, int64_t k, int32_t* sum);

// run_bytes: GemmKernels::pack_b's (0: A rows come whole).
PackedWeights pack_weights(const GemmKernels& kernels, const int8_t* b, ptrdiff_t ldb, int n, int k, int run_bytes = 0);

// Where the rows of A come from: a plain matrix, or rows gathered on the fly (a convolution's
// im2col, one block of rows at a time, so the whole unfolded input never exists).
class RowSource {
 public:
  virtual ~RowSource() = default;
  // Rows [m0, m0 + count) of A, k bytes each; *lda gets the row stride. `buf` is this thread's
  // to build them in.
  virtual const uint8_t* rows(int m0, int count, AlignedBuffer& buf, ptrdiff_t* lda) const = 0;
  // True when rows() builds its rows (costs work) rather than pointing into memory.
  virtual bool gathers() const { return false; }
  // Bytes readable from the start of every row rows() returns, for K = k: at least k. Bytes past k
  // meet B's zero padding in the kernels, so their values do not matter.
  virtual int readable_row_bytes(int k) const { return k; }
  // Rows [m0, m0 + count) as segments (GemmBlock::seg), for paths that read them: false when this
  // source has none, else *seg gets count * *nseg pointers built in `buf` (this thread's).
  virtual bool segments(int /*m0*/, int /*count*/, AlignedBuffer& /*buf*/, const uint8_t* const** /*seg*/,
                        int* /*nseg*/, int* /*seg_bytes*/) const {
    return false;
  }
};

class MatrixRows : public RowSource {
 public:
  MatrixRows(const uint8_t* a, ptrdiff_t lda) : a_(a), lda_(lda) {}
  const uint8_t* rows(int m0, int, AlignedBuffer&, ptrdiff_t* lda) const override {
    *lda = lda_;
    return a_ + m0 * lda_;
  }

 private:
  const uint8_t* a_;
  ptrdiff_t lda_;
};

// c (m rows, row stride ldc elements: int32, or uint8 when ep.requantize) = epilogue(A . B^T).
// ep.bias / ep.mult, when used, are readable for padded_columns(n) entries.
void gemm(const PackedWeights& w, const RowSource& a, int m, const Epilogue& ep, void* c, ptrdiff_t ldc);

inline void gemm(const PackedWeights& w, const uint8_t* a, ptrdiff_t lda, int m, const Epilogue& ep, void* c,
                 ptrdiff_t ldc) {
  gemm(w, MatrixRows(a, lda), m, ep, c, ldc);
}

// Entries callers allocate for per-column epilogue arrays: whole panels of every path (the widest
// is 64 columns), with room for a GEMM that starts at any column offset (a group of a conv).
inline size_t padded_columns(int n) { return (static_cast<size_t>(n) + 63) / 64 * 64 + 64; }

}  // namespace qr
