// The transformer encoder's ops (transformer.h); the formulas are docs/quantization.md's, step by step.
// The per-row float work (quantize, dequantize, GELU, attention) is the ISA table's TransformerKernels;
// what stays here (the gather, the mask) is plain loops in the common build.
#include "ops/transformer.h"

#include <algorithm>
#include <string>

#include "core/aligned_buffer.h"
#include "core/error.h"
#include "ops/u8_common.h"

namespace qr::ops {
namespace {

constexpr float kLowest = -3.4028234663852886e38f;  // float32's lowest: BERT's masked-key bias

// `count` Ts of a calling thread's buffer, kept between runs: after the first run at a size nothing is
// allocated.
template <class T>
T* scratch(AlignedBuffer& b, int64_t count) {
  b.ensure(static_cast<size_t>(count) * sizeof(T));
  return b.as<T>();
}

}  // namespace

void quantize_rows(const float* x, int64_t rows, int64_t k, const float* in_scale, StaticInput fixed,
                   const TransformerKernels& kernels, uint8_t* q, float* scale, int32_t* zero_point) {
  parallel_chunks(rows, k * 6, [=, &kernels](int64_t begin, int64_t end) {
    thread_local AlignedBuffer smoothed;
    float* tmp = in_scale ? scratch<float>(smoothed, k) : nullptr;
    for (int64_t r = begin; r < end; ++r) {
      if (fixed.scale > 0.0f) {
        kernels.quantize_row_static(x + r * k, k, in_scale, tmp, fixed.scale, fixed.zero_point, q + r * k);
        scale[r] = fixed.scale;
        zero_point[r] = fixed.zero_point;
      } else {
        kernels.quantize_row(x + r * k, k, in_scale, tmp, q + r * k, scale + r, zero_point + r);
      }
    }
  });
}

void dynamic_epilogue(const int32_t* acc, int64_t rows, int64_t n, const float* scale, const int32_t* zero_point,
                      const int32_t* colsum, const float* w_scale, const float* bias, DynamicAct act,
                      const TransformerKernels& k, float* y) {
  parallel_chunks(rows, n * 8, [=, &k](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      k.dequantize_row(acc + r * n, n, scale[r], zero_point[r], colsum, w_scale, bias, y + r * n);
      if (act == DynamicAct::kGelu) k.gelu(y + r * n, n);
    }
  });
}

namespace {

// linear_dynamic on rows [0, rows) of x, in this thread's scratch (the GEMM splits itself over the pool
// unless it is called from a pool task).
void linear_dynamic_rows(const PackedWeights& w, const float* x, int64_t rows, const float* in_scale,
                         StaticInput fixed, const float* w_scale, const float* bias, DynamicAct act, const TransformerKernels& k, float* y) {
  thread_local AlignedBuffer codes, acc, zps, scales;
  uint8_t* q = scratch<uint8_t>(codes, rows * w.k);
  int32_t* a = scratch<int32_t>(acc, rows * w.n);
  int32_t* zp = scratch<int32_t>(zps, rows);
  float* s = scratch<float>(scales, rows);
  quantize_rows(x, rows, w.k, in_scale, fixed, k, q, s, zp);
  gemm(w, q, w.k, static_cast<int>(rows), Epilogue{}, a, w.n);
  dynamic_epilogue(a, rows, w.n, s, zp, w.colsum.data(), w_scale, bias, act, k, y);
}

}  // namespace

void linear_dynamic(const PackedWeights& w, const float* x, int64_t rows, const float* in_scale, StaticInput fixed,
                    const float* w_scale, const float* bias, DynamicAct act, const TransformerKernels& k, float* y) {
  if (rows == 0) return;
  QR_CHECK_ARG(rows <= 0x7fffffff, "linear_dynamic: too many rows");
  // Tasks of whole blocks of rows, each quantizing, multiplying and finishing its own: three hand-offs to
  // the pool per layer cost more than a small GEMM's imbalance. A block is at most ~64 rows (whole
  // micro-tiles), so its int32 sums stay in L2 between the GEMM and the epilogue (a batch of 16 x 128
  // tokens in two blocks wrote and re-read 6 MB each); fewer than 32 rows: the GEMM splits the columns.
  constexpr int64_t kMinRowsPerTask = 16;
  const int64_t mr = w.kernels->mr, block = (64 + mr - 1) / mr * mr;
  const int64_t want = std::max<int64_t>((rows + block - 1) / block,
                                         std::min<int64_t>(ThreadPool::global().num_threads(), rows / kMinRowsPerTask));
  if (want <= 1) return linear_dynamic_rows(w, x, rows, in_scale, fixed, w_scale, bias, act, k, y);
  const int64_t step = ((rows + want - 1) / want + mr - 1) / mr * mr, tasks = (rows + step - 1) / step;
  ThreadPool::global().parallel_for(tasks, [&](int64_t t) {
    const int64_t r0 = t * step, r1 = std::min(rows, r0 + step);
    linear_dynamic_rows(w, x + r0 * w.k, r1 - r0, in_scale, fixed, w_scale, bias, act, k, y + r0 * w.n);
  });
}

void attention(const float* q, const float* k, const float* v, int64_t ld, const float* bias, int64_t images,
               int64_t seq, int64_t features, int64_t heads, float scale, const TransformerKernels& kernels, float* out) {
  const int64_t dh = features / heads;
  ThreadPool::global().parallel_for(images * heads, [&](int64_t task) {
    const int64_t img = task / heads, column = (task % heads) * dh;
    const int64_t in = img * seq * ld + column, first = img * seq * features + column;
    thread_local AlignedBuffer buf;
    kernels.attention_head(q + in, k + in, v + in, bias + img * seq, seq, dh, ld, scale, out + first, features,
                           scratch<float>(buf, static_cast<int64_t>(kernels.attention_scratch_floats(seq, dh))));
  });
}

void attention_bias(const int64_t* mask, int64_t count, float* bias) {
  for (int64_t i = 0; i < count; ++i) {
    QR_CHECK_ARG(mask[i] == 0 || mask[i] == 1, "attention_mask holds " + std::to_string(mask[i]) + " at flat index " +
                                                   std::to_string(i) + "; it must hold only 0 (padding) and 1");
    bias[i] = mask[i] ? 0.0f : kLowest;
  }
}

void embedding(const int64_t* ids, int64_t images, int64_t seq, const EmbeddingTables& t, float* y) {
  const int64_t tokens = images * seq, f = t.features;
  for (int64_t i = 0; i < tokens; ++i)
    QR_CHECK_ARG(ids[i] >= 0 && ids[i] < t.vocab, "input_ids holds " + std::to_string(ids[i]) + " at (" +
                                                      std::to_string(i / seq) + ", " + std::to_string(i % seq) +
                                                      "); the vocabulary has ids 0 to " + std::to_string(t.vocab - 1));
  parallel_chunks(tokens, f * 12, [=](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const float* __restrict p = t.position + (i % seq) * f;
      float* __restrict yi = y + i * f;
      if (t.word_q) {
        const int8_t* __restrict wq = t.word_q + ids[i] * f;
        const float s = t.word_scale[ids[i]];
        for (int64_t c = 0; c < f; ++c) yi[c] = static_cast<float>(wq[c]) * s;
      } else {
        std::copy_n(t.word + ids[i] * f, f, yi);
      }
      if (t.token_type)
        for (int64_t c = 0; c < f; ++c) yi[c] = (yi[c] + t.token_type[c]) + p[c];
      else
        for (int64_t c = 0; c < f; ++c) yi[c] = yi[c] + p[c];
    }
  });
}

}  // namespace qr::ops
