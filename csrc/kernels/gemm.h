// The GEMM driver: B packed once per layer, the output split into blocks over the thread pool, each
// block handed to the active ISA's gemm_block. Plain C++ (no ISA flags).
//
// C[m, n] = sum_k A[m, k] * B[n, k], A uint8, B int8 in [-127, 127], int32 accumulation: exact for
// K <= kMaxK since 255 * 127 * 65536 < 2^31. Every output element is computed by one thread in one
// fixed K order, so results do not depend on the thread count.
#pragma once
#include <cstdint>
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
};

PackedWeights pack_weights(const GemmKernels& kernels, const int8_t* b, ptrdiff_t ldb, int n, int k);

// c (m rows, row stride ldc elements: int32, or uint8 when ep.requantize) = epilogue(A . B^T).
// ep.bias / ep.mult, when used, hold round_up(n, 64) entries.
void gemm(const PackedWeights& w, const uint8_t* a, ptrdiff_t lda, int m, const Epilogue& ep, void* c, ptrdiff_t ldc);

// Entries callers allocate for per-column epilogue arrays: whole panels of every path.
inline size_t padded_columns(int n) { return (static_cast<size_t>(n) + 63) / 64 * 64; }

}  // namespace qr
