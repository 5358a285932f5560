// The scalar path's transformer kernels: kernels/transformer_body.inc with the baseline flags.
#include <algorithm>
#include <cstring>

#include "kernels/ref/ref.h"

namespace qr::ref {
namespace {

constexpr int kTileQ = 4, kTileK = 16;

void dot_tile(const float* a, int64_t lda, const float* b, int64_t ldb, int64_t steps, float scale, const float* bias,
              float* out, int64_t ldo) {
  float acc[kTileQ][kTileK] = {};
  for (int64_t s = 0; s < steps; ++s)
    for (int r = 0; r < kTileQ; ++r) {
      const float av = a[r * lda + s];
      for (int l = 0; l < kTileK; ++l) acc[r][l] = acc[r][l] + av * b[s * ldb + l];
    }
  for (int r = 0; r < kTileQ; ++r)
    for (int l = 0; l < kTileK; ++l) out[r * ldo + l] = bias ? acc[r][l] * scale + bias[l] : acc[r][l];
}

int64_t minmax_lanes(const float* x, int64_t k, float* lo8, float* hi8) {
  int64_t i = 0;
  for (; i + 8 <= k; i += 8)
    for (int l = 0; l < 8; ++l) {
      lo8[l] = x[i + l] < lo8[l] ? x[i + l] : lo8[l];
      hi8[l] = x[i + l] > hi8[l] ? x[i + l] : hi8[l];
    }
  return i;
}

void transpose_keys(const float* k, int64_t ld, int64_t seq, int64_t dh, float* kt, int64_t ldt) {
  for (int64_t d = 0; d < dh; ++d)
    for (int64_t j = 0; j < seq; ++j) kt[d * ldt + j] = k[j * ld + d];
}

#include "kernels/transformer_body.inc"

constexpr TransformerKernels kKernels = {"scalar", attention_head, attention_scratch_floats, gelu,
                                         quantize_row, quantize_row_static, dequantize_row};
}  // namespace

const TransformerKernels* transformer_kernels() { return &kKernels; }

}  // namespace qr::ref
