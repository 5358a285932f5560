// The scalar reference GEMM: the normative definition every ISA path must equal bit for bit.
#include "kernels/ref/ref.h"

#include <cmath>
#include <cstring>

namespace qr::ref {

// The requantization of one accumulator (docs/quantization.md, "Requantization"). Clamping before
// rounding equals rounding before clamping because lo - zp and hi - zp are integers, and it keeps
// the float inside int32 range; nearbyintf rounds half to even in the default rounding mode.
uint8_t requantize(int32_t acc, int32_t bias, float mult, int32_t zp, int32_t lo, int32_t hi) {
  float v = static_cast<float>(acc + bias) * mult;
  v = std::fmin(std::fmax(v, static_cast<float>(lo - zp)), static_cast<float>(hi - zp));
  return static_cast<uint8_t>(static_cast<int32_t>(std::nearbyintf(v)) + zp);
}

namespace {

// Packed B for the reference path is B itself: one column (one row of B) per panel, k bytes each.
size_t packed_b_bytes(int n, int k) { return static_cast<size_t>(n) * static_cast<size_t>(k); }

void pack_b(const int8_t* b, ptrdiff_t ldb, int n, int k, int /*run_bytes*/, int8_t* dst) {
  for (int j = 0; j < n; ++j) std::memcpy(dst + static_cast<size_t>(j) * k, b + j * ldb, k);
}

size_t scratch_bytes(int) { return 0; }

void gemm_block(const GemmBlock& blk) {
  for (int i = 0; i < blk.m; ++i) {
    const uint8_t* a = blk.a + i * blk.lda;
    for (int j = 0; j < blk.n; ++j) {
      const int8_t* b = blk.b_panel + static_cast<size_t>(j) * blk.k;
      int32_t acc = 0;  // exact: |sum| <= 255 * 127 * 65536 < 2^31
      for (int p = 0; p < blk.k; ++p) acc += static_cast<int32_t>(a[p]) * static_cast<int32_t>(b[p]);
      const Epilogue& ep = blk.ep;
      int32_t bias = ep.bias ? ep.bias[j] : 0;
      if (ep.requantize) {
        static_cast<uint8_t*>(blk.c)[i * blk.ldc + j] = requantize(acc, bias, ep.mult[j], ep.out_zp, ep.lo, ep.hi);
      } else {
        static_cast<int32_t*>(blk.c)[i * blk.ldc + j] = acc + bias;
      }
    }
  }
}

constexpr GemmKernels kKernels = {"scalar", 1, 1, 64, packed_b_bytes, pack_b, scratch_bytes, gemm_block, nullptr, false};

}  // namespace

const GemmKernels* gemm_kernels() { return &kKernels; }

}  // namespace qr::ref
