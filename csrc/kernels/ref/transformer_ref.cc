// The scalar path's transformer kernels: kernels/transformer_body.inc with the baseline flags.
#include <cstring>

#include "kernels/ref/ref.h"

namespace qr::ref {
namespace {

constexpr int kTileQ = 4, kTileK = 16;

void dot_tile(const float* a, int64_t lda, const float* b, int64_t ldb, int64_t steps, float (*acc)[kTileK]) {
  for (int r = 0; r < kTileQ; ++r)
    for (int l = 0; l < kTileK; ++l) acc[r][l] = 0.0f;
  for (int64_t s = 0; s < steps; ++s)
    for (int r = 0; r < kTileQ; ++r) {
      const float av = a[r * lda + s];
      for (int l = 0; l < kTileK; ++l) acc[r][l] = acc[r][l] + av * b[s * ldb + l];
    }
}

#include "kernels/transformer_body.inc"

constexpr TransformerKernels kKernels = {"scalar", attention_head, gelu};
}  // namespace

const TransformerKernels* transformer_kernels() { return &kKernels; }

}  // namespace qr::ref
