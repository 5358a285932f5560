// Exact u8*s8 GEMM for AVX2: the vpmaddwd kernel (both operands widened to int16) and the routing of
// each B panel to it or to the fast vpmaddubsw kernel (gemm_avx2_maddubs.cc), same bits either way.
//
// Register map of the micro-kernel (qgemm_u8s8_5x16__avx2): 5 rows x 16 columns of C held in
// 10 ymm accumulators (acc[r][0] columns 0-7, acc[r][1] columns 8-15), 2 ymm of B (one K pair for
// 16 columns, sign-extended to int16 as loaded), 1 ymm broadcast of one row's K pair of A, 2 for the
// products before they are added: 15 of 16 registers. (6 rows would need 17 and spill two
// accumulators every K pair.)
// Layouts (docs/kernels.md, "avx2"):
//   packed B panel: a 64-byte header (int32 kernel: 0 vpmaddwd, 1 vpmaddubsw; int32 pairs over the
//   bound), then the body of that kernel, in a slot sized for the larger of the two bodies:
//   vpmaddwd body: [ceil(K/2) pairs][16 columns][b(n,2p), b(n,2p+1)] int8, zero padded in K and N.
//   packed A (per block, in scratch): [row][ceil(K/2) pairs] uint32 = two zero-extended bytes.
// vpmaddwd multiplies int16 pairs and adds them into int32: 255*127*2 fits, so nothing saturates.
// Routing: a panel takes the vpmaddubsw kernel when every K pair it multiplies has |w1|+|w2| <= 128
// (then its int16 pair sums cannot saturate either); the packer counts the pairs that do not.
#include <immintrin.h>

#include <cstdio>
#include <cstring>

#include "kernels/avx2/avx2.h"
#include "kernels/avx2/epilogue_avx2.h"
#include "kernels/avx2/gemm_avx2_maddubs.h"
#include "kernels/avx2/vpmaddwd_avx2.h"

namespace qr::avx2 {
namespace {

constexpr int kMR = 5;
constexpr int kNR = 16;
constexpr int kMC = kMR * 8;

int pairs(int k) { return (k + 1) / 2; }

// The panel header: which kernel reads the body, and the evidence the packer found.
struct PanelHeader {
  int32_t kernel;            // kVpmaddwd or kVpmaddubsw
  int32_t pairs_over_bound;  // K pairs with |w1| + |w2| > maddubs::kPairBound in this panel
};
constexpr int32_t kVpmaddwd = 0, kVpmaddubsw = 1;
constexpr size_t kHeaderBytes = 64;  // keeps the body 64-byte aligned

size_t wd_body_bytes(int k) { return static_cast<size_t>(pairs(k)) * kNR * 2; }

// Every panel gets the larger body's room, so panel j starts at j * panel_bytes(k).
size_t panel_bytes(int k) {
  const size_t wd = wd_body_bytes(k), ub = maddubs::panel_bytes(k);
  return kHeaderBytes + (wd > ub ? wd : ub);
}

size_t packed_b_bytes(int n, int k) { return static_cast<size_t>((n + kNR - 1) / kNR) * panel_bytes(k); }

void pack_wd_panel(const int8_t* b, ptrdiff_t ldb, int cols, int k, int8_t* body) {
  for (int jj = 0; jj < cols; ++jj) {
    const int8_t* row = b + jj * ldb;
    for (int p = 0; p < k; ++p) body[(p / 2) * kNR * 2 + jj * 2 + (p & 1)] = row[p];
  }
}

void pack_b(const int8_t* b, ptrdiff_t ldb, int n, int k, int run_bytes, int8_t* dst) {
  for (int j0 = 0; j0 < n; j0 += kNR) {
    int8_t* panel = dst + static_cast<size_t>(j0 / kNR) * panel_bytes(k);
    const int cols = n - j0 < kNR ? n - j0 : kNR;
    const int8_t* src = b + j0 * ldb;
    PanelHeader h;
    const int64_t over = maddubs::pairs_over_bound(src, ldb, cols, k);
    h.pairs_over_bound = static_cast<int32_t>(over);  // at most 16 * 32768 pairs
    h.kernel = over == 0 ? kVpmaddubsw : kVpmaddwd;
    std::memcpy(panel, &h, sizeof h);
    if (h.kernel == kVpmaddubsw) {
      maddubs::pack_panel(src, ldb, cols, k, run_bytes, panel + kHeaderBytes);
    } else {
      pack_wd_panel(src, ldb, cols, k, panel + kHeaderBytes);
    }
  }
}

// The note PackedWeights carries (kernels.h): which kernels the packed panels route to, and why.
void describe_packing(const int8_t* packed, int n, int k, char* note, size_t note_size) {
  const int panels = (n + kNR - 1) / kNR;
  int fast = 0;
  int64_t over = 0, paired = 0;
  for (int j = 0; j < panels; ++j) {
    const int8_t* panel = packed + static_cast<size_t>(j) * panel_bytes(k);
    PanelHeader h;
    std::memcpy(&h, panel, sizeof h);
    fast += h.kernel == kVpmaddubsw;
    over += h.pairs_over_bound;
    if (h.kernel == kVpmaddubsw) paired += maddubs::panel_groups_paired(panel + kHeaderBytes, k);
  }
  const long long total = static_cast<long long>(n) * pairs(k), bad = over;
  const int bound = maddubs::kPairBound;
  int used = 0;
  if (fast == panels) {
    used = std::snprintf(note, note_size, "vpmaddubsw: every packed weight pair has |w1|+|w2| <= %d", bound);
  } else if (fast == 0) {
    used = std::snprintf(note, note_size, "vpmaddwd: %lld of %lld weight pairs have |w1|+|w2| > %d", bad, total, bound);
  } else {
    used = std::snprintf(note, note_size, "vpmaddubsw on %d of %d panels, vpmaddwd on %d: %lld of %lld weight pairs "
                         "have |w1|+|w2| > %d", fast, panels, panels - fast, bad, total, bound);
  }
  if (paired > 0 && used > 0 && static_cast<size_t>(used) < note_size)
    std::snprintf(note + used, note_size - used, "; %lld of %lld groups of 4 K summed in int16 pairs (sum of 4 |w| <= %d)",
                  static_cast<long long>(paired), static_cast<long long>(fast) * ((k + 3) / 4), maddubs::kQuadBound);
}

size_t a_row_bytes(int k) { return static_cast<size_t>(pairs(k)) * 4; }

// Room for both kernels' A (a block may hold panels of each kind), the second 64-byte aligned.
size_t wd_a_bytes(int k) { return (kMC * a_row_bytes(k) + 63) / 64 * 64; }

size_t scratch_bytes(int k) { return wd_a_bytes(k) + kMC * maddubs::a_row_bytes(k); }

// Widens rows of A to int16, so each K pair is one 32-bit word (an odd K gets a zero partner).
void pack_a(const uint8_t* a, ptrdiff_t lda, int m, int k, uint8_t* dst) {
  for (int i = 0; i < m; ++i) {
    const uint8_t* src = a + i * lda;
    int16_t* out = reinterpret_cast<int16_t*>(dst + i * a_row_bytes(k));
    int p = 0;
    for (; p + 16 <= k; p += 16)
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + p),
                          _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + p))));
    for (; p < k; ++p) out[p] = src[p];
    if (k & 1) out[k] = 0;
  }
}

// Rows of packed A are kp words apart. The K loop is inlined beside the epilogue: GCC keeps its
// registers as it does out of line (Zen 3, 1 thread: K = 16-128 1.05-1.15x faster than through a
// call, 1024 the same).
template <int R>
void micro_kernel(const uint8_t* a, const int8_t* b, int kp, const Epilogue& ep, int col, uint8_t* c,
                  size_t c_row_bytes, int valid, ptrdiff_t pf) {
  __m256i acc[R][2], init0, init1;
  init_acc16(ep, col, init0, init1);  // the bias starts the sum (epilogue_avx2.h)
  const int32_t* arow[R];  // one pointer per row (5 general registers)
#pragma GCC unroll 5
  for (int r = 0; r < R; ++r) {
    arow[r] = reinterpret_cast<const int32_t*>(a) + static_cast<size_t>(r) * kp;
    acc[r][0] = init0, acc[r][1] = init1;
  }
  vpmaddwd_loop<R, true>(arow, b, kp, pf, acc);
  store_rows16<R, true>(acc, ep, col, c, c_row_bytes, valid);
}

using MicroKernel = void (*)(const uint8_t*, const int8_t*, int, const Epilogue&, int, uint8_t*, size_t, int,
                             ptrdiff_t);
constexpr MicroKernel kMicroKernels[kMR + 1] = {nullptr, micro_kernel<1>, micro_kernel<2>, micro_kernel<3>, micro_kernel<4>, micro_kernel<5>};

// Whether every panel of the block runs the vpmaddubsw kernel, with its pairs of groups inside
// segments of the block's length (or a single segment).
bool segments_readable(const GemmBlock& blk) {
  for (int j = 0; j < blk.n; j += kNR) {
    const int8_t* panel = blk.b_panel + static_cast<size_t>(j / kNR) * panel_bytes(blk.k);
    PanelHeader h;
    std::memcpy(&h, panel, sizeof h);
    if (h.kernel != kVpmaddubsw) return false;
    if (blk.nseg > 1 && maddubs::panel_run_bytes(panel + kHeaderBytes, blk.k) != blk.seg_bytes) return false;
  }
  return true;
}

void gemm_block(const GemmBlock& blk) {
  const size_t esize = blk.ep.requantize ? 1 : 4;
  const size_t c_row_bytes = blk.ldc * esize;
  const int kp = pairs(blk.k);
  // Rows given as segments: the vpmaddubsw kernel reads them in place; a vpmaddwd panel needs
  // whole rows (and so do pairs packed for other segments), so then they are put together once,
  // where that kernel's padded copy would go.
  const bool segments = blk.seg && segments_readable(blk);
  const uint8_t* a = blk.a;
  ptrdiff_t lda = blk.lda;
  int a_readable = blk.a_readable;
  if (blk.seg && !segments) {
    uint8_t* dst = static_cast<uint8_t*>(blk.scratch) + wd_a_bytes(blk.k);
    for (int i = 0; i < blk.m; ++i)
      for (int s = 0; s < blk.nseg; ++s)
        std::memcpy(dst + static_cast<size_t>(i) * blk.k + s * blk.seg_bytes, blk.seg[i * blk.nseg + s], blk.seg_bytes);
    a = dst;
    lda = a_readable = blk.k;  // a multiple of 4: segments are
  }
  // Each kernel's A is prepared the first time one of its panels comes up. The vpmaddubsw kernel
  // reads A in place when its rows are readable up to K rounded to 4 (padding meets zero weights).
  uint8_t* wd_a = static_cast<uint8_t*>(blk.scratch);
  const size_t wd_arow = a_row_bytes(blk.k);
  bool wd_a_ready = false;
  const uint8_t* ub_a = a;
  ptrdiff_t ub_lda = lda;
  bool ub_a_ready = segments || a_readable >= static_cast<int>(maddubs::a_row_bytes(blk.k));
  // Panel-outer: one B panel stays in cache while every row strip of the block passes over it.
  for (int j = 0; j < blk.n; j += kNR) {
    const int8_t* panel = blk.b_panel + static_cast<size_t>(j / kNR) * panel_bytes(blk.k);
    const int8_t* next_body = j + kNR < blk.n ? panel + panel_bytes(blk.k) + kHeaderBytes : nullptr;
    const int valid = blk.n - j < kNR ? blk.n - j : kNR;
    uint8_t* c_col = static_cast<uint8_t*>(blk.c) + j * esize;
    PanelHeader h;
    std::memcpy(&h, panel, sizeof h);
    if (h.kernel == kVpmaddubsw) {
      if (segments) {
        maddubs::run_panel_segments(blk.seg, blk.nseg, blk.m, panel + kHeaderBytes, blk.k, blk.ep, j, c_col,
                                    c_row_bytes, valid, next_body);
        continue;
      }
      if (!ub_a_ready) {
        uint8_t* dst = static_cast<uint8_t*>(blk.scratch) + wd_a_bytes(blk.k);
        maddubs::pack_a(a, lda, blk.m, blk.k, dst);
        ub_a = dst;
        ub_lda = static_cast<ptrdiff_t>(maddubs::a_row_bytes(blk.k));
        ub_a_ready = true;
      }
      maddubs::run_panel(ub_a, ub_lda, blk.m, panel + kHeaderBytes, blk.k, blk.ep, j, c_col, c_row_bytes, valid,
                        next_body);
      continue;
    }
    if (!wd_a_ready) {
      pack_a(a, lda, blk.m, blk.k, wd_a);
      wd_a_ready = true;
    }
    // Strips of kMR rows; where one row would be left (5 + 1), the last six run as 3 + 3: the 1-row
    // K loop sign-extends the panel's weights for 32 MACs per pair where 3 rows share that work (Zen 3, 1
    // thread, best of alternating bursts: M = 6, 11 and 16 against K, N of 384 to 1536, 1.02-1.05x).
    for (int i = 0, rows; i < blk.m; i += rows) {
      const int left = blk.m - i;
      rows = left == kMR + 1 ? 3 : left < kMR ? left : kMR;
      const ptrdiff_t pf = i == 0 && next_body ? next_body - (panel + kHeaderBytes) : 0;  // as maddubs::run_panel
      kMicroKernels[rows](wd_a + i * wd_arow, panel + kHeaderBytes, kp, blk.ep, j, c_col + i * c_row_bytes, c_row_bytes,
                          valid, pf);
    }
  }
}

constexpr GemmKernels kKernels = {"avx2", kNR, kMR, kMC, packed_b_bytes, pack_b,
                                  scratch_bytes, gemm_block, describe_packing, true};

}  // namespace

const GemmKernels* gemm_kernels() { return &kKernels; }

}  // namespace qr::avx2
