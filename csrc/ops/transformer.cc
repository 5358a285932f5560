// The transformer encoder's ops (transformer.h); the formulas are docs/quantization.md's, step by step.
// Plain loops in the common build (no ISA flags): the vectoriser keeps each element's IEEE steps, so
// the bits are the formulas' on every path.
#include "ops/transformer.h"

#include <algorithm>
#include <string>
#include <vector>

#include "core/error.h"
#include "ops/u8_common.h"

namespace qr::ops {
namespace {

constexpr float kLowest = -3.4028234663852886e38f;  // float32's lowest: BERT's masked-key bias

// Scratch of the calling thread, kept between runs: after the first run at a size nothing is allocated.
template <class T>
T* scratch(std::vector<T>& v, int64_t count) {
  if (static_cast<int64_t>(v.size()) < count) v.resize(static_cast<size_t>(count));
  return v.data();
}

}  // namespace

namespace {

// One row of quantize_rows, on plain restrict pointers: through a closure's captures every uint8 store
// could alias them, and the loops would stay scalar with reloads. The min and max run in 8 lanes (an
// exact operation in any order; a NaN never replaces a lane, as in one sequential pass).
void quantize_row(const float* __restrict x, int64_t k, const float* __restrict in_scale, float* __restrict smoothed,
                  uint8_t* __restrict q, float* scale, int32_t* zero_point) {
  if (in_scale) {
    for (int64_t i = 0; i < k; ++i) smoothed[i] = x[i] * in_scale[i];
    x = smoothed;
  }
  float lo8[8] = {0, 0, 0, 0, 0, 0, 0, 0}, hi8[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= k; i += 8)
    for (int l = 0; l < 8; ++l) {
      lo8[l] = x[i + l] < lo8[l] ? x[i + l] : lo8[l];
      hi8[l] = x[i + l] > hi8[l] ? x[i + l] : hi8[l];
    }
  for (int l = 0; i < k; ++i, ++l) {
    lo8[l] = x[i] < lo8[l] ? x[i] : lo8[l];
    hi8[l] = x[i] > hi8[l] ? x[i] : hi8[l];
  }
  float lo = 0.0f, hi = 0.0f;
  for (int l = 0; l < 8; ++l) {
    lo = lo8[l] < lo ? lo8[l] : lo;
    hi = hi8[l] > hi ? hi8[l] : hi;
  }
  float s = (hi - lo) / 255.0f;
  if (s == 0.0f) s = 1.0f;
  // An inf or NaN row gives s or zp that is not finite: the selects send NaN to 0, never into the int cast.
  float zp = round_half_even_small(-lo / s);
  zp = zp > 0.0f ? zp : 0.0f;
  zp = zp < 255.0f ? zp : 255.0f;
  for (i = 0; i < k; ++i) {
    float v = round_half_even_small(x[i] / s) + zp;
    v = v > 0.0f ? v : 0.0f;
    v = v < 255.0f ? v : 255.0f;
    q[i] = static_cast<uint8_t>(static_cast<int32_t>(v));
  }
  *scale = s;
  *zero_point = static_cast<int32_t>(zp);
}

}  // namespace

void quantize_rows(const float* x, int64_t rows, int64_t k, const float* in_scale, uint8_t* q, float* scale,
                   int32_t* zero_point) {
  parallel_chunks(rows, k * 6, [=](int64_t begin, int64_t end) {
    thread_local std::vector<float> smoothed;
    float* tmp = in_scale ? scratch(smoothed, k) : nullptr;
    for (int64_t r = begin; r < end; ++r)
      quantize_row(x + r * k, k, in_scale, tmp, q + r * k, scale + r, zero_point + r);
  });
}

void dynamic_epilogue(const int32_t* acc, int64_t rows, int64_t n, const float* scale, const int32_t* zero_point,
                      const int32_t* colsum, const float* w_scale, const float* bias, DynamicAct act,
                      const TransformerKernels& k, float* y) {
  parallel_chunks(rows, n * 8, [=, &k](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int32_t* __restrict a = acc + r * n;
      float* __restrict yr = y + r * n;
      const float s = scale[r];
      const int32_t zp = zero_point[r];
      for (int64_t c = 0; c < n; ++c) {
        float v = static_cast<float>(a[c] - zp * colsum[c]) * (s * w_scale[c]);
        yr[c] = bias ? v + bias[c] : v;
      }
      if (act == DynamicAct::kGelu) k.gelu(yr, n);
    }
  });
}

namespace {

// linear_dynamic on rows [0, rows) of x, in this thread's scratch (the GEMM splits itself over the pool
// unless it is called from a pool task).
void linear_dynamic_rows(const PackedWeights& w, const float* x, int64_t rows, const float* in_scale,
                         const float* w_scale, const float* bias, DynamicAct act, const TransformerKernels& k, float* y) {
  thread_local std::vector<uint8_t> codes;
  thread_local std::vector<int32_t> acc, zps;
  thread_local std::vector<float> scales;
  uint8_t* q = scratch(codes, rows * w.k);
  int32_t* a = scratch(acc, rows * w.n);
  int32_t* zp = scratch(zps, rows);
  float* s = scratch(scales, rows);
  quantize_rows(x, rows, w.k, in_scale, q, s, zp);
  gemm(w, q, w.k, static_cast<int>(rows), Epilogue{}, a, w.n);
  dynamic_epilogue(a, rows, w.n, s, zp, w.colsum.data(), w_scale, bias, act, k, y);
}

}  // namespace

void linear_dynamic(const PackedWeights& w, const float* x, int64_t rows, const float* in_scale, const float* w_scale,
                    const float* bias, DynamicAct act, const TransformerKernels& k, float* y) {
  if (rows == 0) return;
  QR_CHECK_ARG(rows <= 0x7fffffff, "linear_dynamic: too many rows");
  // One task per thread, each quantizing, multiplying and finishing its own rows: three hand-offs to the
  // pool per layer cost more than a small GEMM's imbalance. Few rows: the GEMM splits the columns instead.
  constexpr int64_t kMinRowsPerTask = 16;
  const int64_t tasks = std::min<int64_t>(ThreadPool::global().num_threads(), rows / kMinRowsPerTask);
  if (tasks <= 1) return linear_dynamic_rows(w, x, rows, in_scale, w_scale, bias, act, k, y);
  ThreadPool::global().parallel_for(tasks, [&](int64_t t) {
    const int64_t r0 = rows * t / tasks, r1 = rows * (t + 1) / tasks;
    linear_dynamic_rows(w, x + r0 * w.k, r1 - r0, in_scale, w_scale, bias, act, k, y + r0 * w.n);
  });
}

void attention(const float* q, const float* k, const float* v, const float* bias, int64_t images, int64_t seq,
               int64_t features, int64_t heads, float scale, const TransformerKernels& kernels, float* out) {
  const int64_t dh = features / heads;
  ThreadPool::global().parallel_for(images * heads, [&](int64_t task) {
    const int64_t img = task / heads, column = (task % heads) * dh, first = img * seq * features + column;
    thread_local std::vector<float> buf;
    kernels.attention_head(q + first, k + first, v + first, bias + img * seq, seq, dh, features, scale, out + first,
                           scratch(buf, (dh + 4) * seq));
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
