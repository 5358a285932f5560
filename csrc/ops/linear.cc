// The standalone quantized ops: thin compositions of the GEMM driver and requantization.
#include "ops/linear.h"

#include <algorithm>
#include <cmath>
#include <vector>

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

namespace {

// quantize() of x[0, n) into out: the one loop both quantize entry points run.
inline void quantize_run(const float* __restrict x, int64_t n, float scale, int32_t zp, float lo, float hi,
                         uint8_t* __restrict out) {
  for (int64_t i = 0; i < n; ++i) {
    // Clamped before rounding (equal for integer bounds); the selects send a NaN to lo, so it
    // cannot reach the int cast.
    float v = x[i] / scale;
    v = v > lo ? v : lo;
    v = v < hi ? v : hi;
    out[i] = static_cast<uint8_t>(static_cast<int32_t>(round_half_even_small(v)) + zp);
  }
}

}  // namespace

void quantize(const float* x, size_t count, QParams q, uint8_t* out) {
  check_qparams(q, "x");
  const float lo = static_cast<float>(-q.zero_point), hi = static_cast<float>(255 - q.zero_point);
  // Plain values into the loop: through captured references every uint8 store could alias the
  // scale and the pointers, and the loop would stay scalar with reloads.
  const float scale = q.scale;
  const int32_t zp = q.zero_point;
  parallel_chunks(static_cast<int64_t>(count), 4, [x, out, scale, zp, lo, hi](int64_t begin, int64_t end) {
    quantize_run(x + begin, end - begin, scale, zp, lo, hi, out + begin);
  });
}

void quantize_planes(const float* x, int64_t images, int64_t channels, int64_t hw, QParams q, uint8_t* out) {
  check_qparams(q, "x");
  const float lo = static_cast<float>(-q.zero_point), hi = static_cast<float>(255 - q.zero_point);
  const float scale = q.scale;
  const int32_t zp = q.zero_point;
  // Blocks of pixels: each channel's run quantized into a small plane-major buffer (vectorised),
  // then interleaved into the pixels' NHWC bytes while it is in L1.
  constexpr int64_t kPixels = 512;
  const int64_t blocks = (hw + kPixels - 1) / kPixels;
  parallel_chunks(images * blocks, kPixels * channels * 5, [&](int64_t begin, int64_t end) {
    // Local copies: the byte stores could alias anything the closure reaches, forcing reloads per byte.
    const int64_t nc = channels, npix = hw, nblocks = blocks;
    const float* const xs = x;
    uint8_t* const ys = out;
    std::vector<uint8_t> planes(static_cast<size_t>(nc * kPixels));
    for (int64_t t = begin; t < end; ++t) {
      const int64_t img = t / nblocks, p0 = (t % nblocks) * kPixels, n = std::min(kPixels, npix - p0);
      const float* src = xs + img * nc * npix + p0;
      for (int64_t ch = 0; ch < nc; ++ch) quantize_run(src + ch * npix, n, scale, zp, lo, hi, &planes[ch * kPixels]);
      uint8_t* __restrict dst = ys + (img * npix + p0) * nc;
      const uint8_t* __restrict from = planes.data();
      if (nc == 3) {  // RGB, the common case: a fixed interleave the compiler vectorises
        const uint8_t *r = from, *g = from + kPixels, *b = from + 2 * kPixels;
        for (int64_t p = 0; p < n; ++p) {
          dst[3 * p] = r[p];
          dst[3 * p + 1] = g[p];
          dst[3 * p + 2] = b[p];
        }
      } else {
        for (int64_t p = 0; p < n; ++p)
          for (int64_t ch = 0; ch < nc; ++ch) dst[p * nc + ch] = from[ch * kPixels + p];
      }
    }
  });
}

void dequantize(const uint8_t* q, size_t count, QParams qp, float* out) {
  check_qparams(qp, "q");
  for (size_t i = 0; i < count; ++i) out[i] = static_cast<float>(static_cast<int32_t>(q[i]) - qp.zero_point) * qp.scale;
}

}  // namespace qr::ops
