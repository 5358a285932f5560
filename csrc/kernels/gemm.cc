// The GEMM driver: packing, blocking and threading around the ISA's gemm_block.
#include "kernels/gemm.h"

#include <algorithm>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "core/error.h"
#include "core/thread_pool.h"

namespace qr {

int8_t weight_sum_and_min(const int8_t* w, int64_t k, int32_t* sum) {
  int32_t s = 0;
  int8_t lo = 0;
  for (int64_t i = 0; i < k; ++i) {
    s += w[i];
    lo = w[i] < lo ? w[i] : lo;
  }
  *sum = s;
  return lo;
}

PackedWeights pack_weights(const GemmKernels& kernels, const int8_t* b, ptrdiff_t ldb, int n, int k, int run_bytes) {
  QR_CHECK_ARG(n >= 1, "weights must have at least one output column");
  QR_CHECK_ARG(k >= 1 && k <= kMaxK, "K must be in [1, " + std::to_string(kMaxK) + "], got " + std::to_string(k));
  PackedWeights w;
  w.kernels = &kernels;
  w.n = n;
  w.k = k;
  w.colsum.assign(n, 0);
  for (int j = 0; j < n; ++j)
    QR_CHECK_ARG(weight_sum_and_min(b + j * ldb, k, &w.colsum[j]) != -128,
                 "weights must be in [-127, 127] (found -128)");
  w.data.reset(kernels.packed_b_bytes(n, k));
  kernels.pack_b(b, ldb, n, k, run_bytes, w.data.as<int8_t>());
  if (kernels.describe_packing) {
    char note[256];
    kernels.describe_packing(w.data.as<int8_t>(), n, k, note, sizeof note);
    w.kernel_choice = note;
  }
  return w;
}

void gemm(const PackedWeights& w, const RowSource& a, int m, const Epilogue& ep, void* c, ptrdiff_t ldc) {
  QR_CHECK_ARG(m >= 0, "M must be >= 0");
  if (m == 0) return;
  const GemmKernels& kern = *w.kernels;
  const int panels = (w.n + kern.nr - 1) / kern.nr;
  ThreadPool& pool = ThreadPool::global();
  const int threads = pool.num_threads();
  // Row blocks: with enough rows (two tiles per thread), each thread's share is a whole number of
  // micro-tiles (shares differ by one tile at most), cut into blocks of at most mc rows, so no
  // thread waits for another's extra block. With fewer rows (batch-1 GEMVs, a CNN's last layers)
  // the columns are split too, in two chunks per thread for balance; each chunk then packs the
  // same few rows again, which costs little.
  std::vector<std::pair<int, int>> blocks;  // (first row, rows)
  auto cut = [&](int begin, int end) {
    const int tiles = (end - begin + kern.mr - 1) / kern.mr;
    const int parts = (end - begin + kern.mc - 1) / kern.mc;
    for (int p = 0; p < parts; ++p) {
      const int b = begin + static_cast<int>(static_cast<int64_t>(tiles) * p / parts) * kern.mr;
      const int e = std::min(end, begin + static_cast<int>(static_cast<int64_t>(tiles) * (p + 1) / parts) * kern.mr);
      blocks.emplace_back(b, e - b);
    }
  };
  if (threads > 1 && m >= 2 * threads * kern.mr) {
    const int tiles = (m + kern.mr - 1) / kern.mr;
    for (int t = 0; t < threads; ++t)
      cut(static_cast<int>(static_cast<int64_t>(tiles) * t / threads) * kern.mr,
          std::min(m, static_cast<int>(static_cast<int64_t>(tiles) * (t + 1) / threads) * kern.mr));
  } else {
    cut(0, m);
  }
  const int m_blocks = static_cast<int>(blocks.size());
  int chunks = 1;
  if (threads > 1 && m_blocks < threads) chunks = std::clamp((threads + m_blocks - 1) / m_blocks, 1, panels);
  const int panels_per_chunk = (panels + chunks - 1) / chunks;
  chunks = (panels + panels_per_chunk - 1) / panels_per_chunk;
  // Several column chunks per row block would gather the same rows once per chunk: gather each
  // block once, in parallel, and run the GEMM on the result.
  AlignedBuffer gathered;
  if (chunks > 1 && a.gathers()) {
    gathered.reset(static_cast<size_t>(m) * w.k);
    uint8_t* dst = gathered.as<uint8_t>();
    pool.parallel_for(m_blocks, [&](int64_t mb) {
      thread_local AlignedBuffer buf;
      const auto [m0, count] = blocks[mb];
      ptrdiff_t lda;
      const uint8_t* rows = a.rows(m0, count, buf, &lda);
      for (int i = 0; i < count; ++i) std::memcpy(dst + static_cast<size_t>(m0 + i) * w.k, rows + i * lda, w.k);
    });
    return gemm(w, MatrixRows(dst, w.k), m, ep, c, ldc);
  }
  const size_t panel_bytes = kern.packed_b_bytes(kern.nr, w.k);
  const size_t esize = ep.requantize ? 1 : 4;
  const size_t scratch = kern.scratch_bytes(w.k);

  pool.parallel_for(static_cast<int64_t>(m_blocks) * chunks, [&](int64_t task) {
    thread_local AlignedBuffer scratch_buf, rows_buf;
    scratch_buf.ensure(scratch);
    const int mb = static_cast<int>(task / chunks), nc = static_cast<int>(task % chunks);
    const int m0 = blocks[mb].first;
    const int n0 = nc * panels_per_chunk * kern.nr;
    GemmBlock blk;
    blk.m = blocks[mb].second;
    blk.seg = nullptr;
    blk.nseg = blk.seg_bytes = 0;
    if (kern.reads_segments && a.segments(m0, blk.m, rows_buf, &blk.seg, &blk.nseg, &blk.seg_bytes)) {
      blk.a = nullptr;
      blk.lda = 0;
    } else {
      blk.a = a.rows(m0, blk.m, rows_buf, &blk.lda);
    }
    blk.b_panel = w.data.as<int8_t>() + static_cast<size_t>(n0 / kern.nr) * panel_bytes;
    blk.n = std::min(panels_per_chunk * kern.nr, w.n - n0);
    blk.k = w.k;
    blk.a_readable = a.readable_row_bytes(w.k);
    blk.ep = ep;
    if (ep.bias) blk.ep.bias = ep.bias + n0;
    if (ep.mult) blk.ep.mult = ep.mult + n0;
    blk.c = static_cast<uint8_t*>(c) + (static_cast<size_t>(m0) * ldc + n0) * esize;
    blk.ldc = ldc;
    blk.scratch = scratch_buf.as<void>();
    kern.gemm_block(blk);
  });
}

}  // namespace qr
