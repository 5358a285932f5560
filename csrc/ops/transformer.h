// The ops of a transformer encoder (docs/quantization.md, "Transformer encoders"): activations stay
// float32 between ops; a Linear quantizes its input per row (token) at run time and runs the exact
// int8 GEMM; attention, softmax, GELU and the embeddings are float32. Every float step is a fixed
// sequence of IEEE operations (no FMA, no reassociation), so all ISA paths and qruntime.reference
// give the same bits, and a token's result does not depend on the other tokens of its batch.
#pragma once
#include <cstdint>

#include "kernels/gemm.h"
#include "kernels/kernels.h"

namespace qr::ops {

// linear_dynamic's static option: every row quantized with one calibrated scale and zero point.
struct StaticInput {
  float scale = 0.0f;  // 0: per-row (dynamic) quantization
  int32_t zero_point = 0;
};

// Per-row asymmetric quantization of x (rows x k, contiguous), each element first multiplied by
// in_scale[k] when it is not null (the smoothing of outlier channels), into q, with each row's scale and
// zero point (the static ones for every row when fixed.scale > 0).
void quantize_rows(const float* x, int64_t rows, int64_t k, const float* in_scale, StaticInput fixed,
                   const TransformerKernels& kernels, uint8_t* q, float* scale, int32_t* zero_point);

enum class DynamicAct { kNone, kGelu };

// y = act(float(acc - zp[r] * colsum[c]) * (scale[r] * w_scale[c]) + bias[c]) for rows x n.
void dynamic_epilogue(const int32_t* acc, int64_t rows, int64_t n, const float* scale, const int32_t* zero_point,
                      const int32_t* colsum, const float* w_scale, const float* bias, DynamicAct act,
                      const TransformerKernels& k, float* y);

// linear_dynamic on x (rows x w.k float32) into y (rows x w.n float32); in_scale and bias may be null.
void linear_dynamic(const PackedWeights& w, const float* x, int64_t rows, const float* in_scale, StaticInput fixed,
                    const float* w_scale, const float* bias, DynamicAct act, const TransformerKernels& k, float* y);

// Multi-head attention: q, k, v (images x seq x features, rows ld floats apart: features, or 3 * features
// when they are the column blocks of one fused qkv value), bias (images x seq) added to every query's
// score of that key; out (images x seq x features). features % heads == 0.
void attention(const float* q, const float* k, const float* v, int64_t ld, const float* bias, int64_t images,
               int64_t seq, int64_t features, int64_t heads, float scale, const TransformerKernels& kernels, float* out);

// BERT's additive mask: 0 where mask == 1, float32's lowest where 0; qr::ValueError on another value.
void attention_bias(const int64_t* mask, int64_t count, float* bias);

struct EmbeddingTables {
  const float* word = nullptr;        // vocab x features (float32), or
  const int8_t* word_q = nullptr;     // vocab x features int8 with
  const float* word_scale = nullptr;  // one scale per id: word[id] = float32(word_q[id]) * word_scale[id]
  const float* position = nullptr;    // positions x features
  const float* token_type = nullptr;  // row 0 is added to every token; null: none
  int64_t vocab = 0, positions = 0, features = 0;
};

// y[n, s] = (word[ids[n, s]] + token_type[0]) + position[s], the word row dequantized first when it is
// int8; qr::ValueError for an id outside the
// vocabulary (checked before anything is read). seq <= positions is the caller's check.
void embedding(const int64_t* ids, int64_t images, int64_t seq, const EmbeddingTables& t, float* y);

}  // namespace qr::ops
