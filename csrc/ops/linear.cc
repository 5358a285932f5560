// The standalone quantized ops: thin compositions of the GEMM driver and requantization.
#include "ops/linear.h"

#include <cmath>

#include "dispatch/dispatch.h"
#include "ops/u8_common.h"

namespace qr::ops {

std::shared_ptr<PackedWeights> pack_weights(const int8_t* b, ptrdiff_t ldb, int n, int k, const std::string& isa) {
  const KernelTable& t = isa.empty() ? active_kernels() : kernel_table(isa);
  return std::make_shared<PackedWeights>(qr::pack_weights(*t.gemm, b, ldb, n, k));
}

void gemm_u8s8s32(const PackedWeights& w, const uint8_t* a, ptrdiff_t lda, int m, int32_t* c) {
  qr::gemm(w, a, lda, m, Epilogue{}, c, w.n);
}

void linear(const PackedWeights& w, const uint8_t* a, ptrdiff_t lda, int m, QParams x, const float* w_scale,
            size_t w_scale_count, const float* bias, QParams out, Activation act, uint8_t* y) {
  const Requant rq = make_requant(w.n, w.k, w.colsum.data(), x, w_scale, w_scale_count, bias, out, act);
  qr::gemm(w, a, lda, m, rq.epilogue(), y, w.n);
}

void quantize(const float* x, size_t count, QParams q, uint8_t* out) {
  check_qparams(q, "x");
  const float lo = static_cast<float>(-q.zero_point), hi = static_cast<float>(255 - q.zero_point);
  parallel_chunks(static_cast<int64_t>(count), 4, [&](int64_t begin, int64_t end) {
    // Locals and restrict: through the captured references every uint8 store could alias the
    // scale and the pointers, and the loop would stay scalar with reloads.
    const float* __restrict src = x;
    uint8_t* __restrict dst = out;
    const float scale = q.scale;
    const int32_t zp = q.zero_point;
    for (int64_t i = begin; i < end; ++i) {
      // Clamped before rounding (equal for integer bounds); the selects send a NaN to lo, so it
      // cannot reach the int cast.
      float v = src[i] / scale;
      v = v > lo ? v : lo;
      v = v < hi ? v : hi;
      dst[i] = static_cast<uint8_t>(static_cast<int32_t>(round_half_even_small(v)) + zp);
    }
  });
}

void dequantize(const uint8_t* q, size_t count, QParams qp, float* out) {
  check_qparams(qp, "q");
  for (size_t i = 0; i < count; ++i) out[i] = static_cast<float>(static_cast<int32_t>(q[i]) - qp.zero_point) * qp.scale;
}

}  // namespace qr::ops
