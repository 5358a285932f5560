// The standalone quantized ops behind qruntime.ops (quantize, dequantize, gemm_u8s8s32, linear).
// Arrays are C-contiguous except where a row stride is given; shapes are checked by the caller's
// front end and again here where a mistake could touch memory out of bounds.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "kernels/gemm.h"
#include "kernels/requant.h"

namespace qr::ops {

// Packs B (n x k int8, row stride ldb) for `isa` ("" = the active path).
std::shared_ptr<PackedWeights> pack_weights(const int8_t* b, ptrdiff_t ldb, int n, int k, const std::string& isa);

// c (m x n int32, contiguous) = a (m x k uint8, row stride lda) . B^T
void gemm_u8s8s32(const PackedWeights& w, const uint8_t* a, ptrdiff_t lda, int m, int32_t* c);

// out (m x n uint8, contiguous) = requantize(a . B^T + bias) with per-channel or per-tensor w_scale.
void linear(const PackedWeights& w, const uint8_t* a, ptrdiff_t lda, int m, QParams x, const float* w_scale,
            size_t w_scale_count, const float* bias, QParams out, Activation act, uint8_t* y);

// q = clamp(nearbyint(x / scale) + zero_point, 0, 255), in float32 (docs/quantization.md).
void quantize(const float* x, size_t count, QParams q, uint8_t* out);

// quantize() of `images` NCHW images (channels planes of hw floats each), written NHWC: the
// layout change done on bytes in cache rather than as a separate pass over the floats.
void quantize_planes(const float* x, int64_t images, int64_t channels, int64_t hw, QParams q, uint8_t* out);

// x = float32(q - zero_point) * scale
void dequantize(const uint8_t* q, size_t count, QParams qp, float* out);

}  // namespace qr::ops
