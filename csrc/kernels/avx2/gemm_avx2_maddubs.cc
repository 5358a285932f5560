// Fast exact u8*s8 GEMM for AVX2 on weights whose K pairs are proven small: vpmaddubsw, then
// vpmaddwd by ones, int32 accumulation. Exact only under the bounds in gemm_avx2_maddubs.h, which
// the avx2 packer (gemm_avx2.cc) checks per panel before it routes a panel here.
//
// Register map of the micro-kernel (qgemm_u8s8_5x16__avx2_maddubs): 5 rows x 16 columns of C held
// in 10 ymm accumulators (acc[r][0] columns 0-7, acc[r][1] columns 8-15), B of the step (int8, 16
// columns), 1 ymm of int16 ones, the broadcasts of one row's 4 bytes of A per group, products on
// their way to the accumulator; GCC keeps what does not fit in registers (B of a pair) as memory
// operands.
// A step is one group of 4 K or a pair of groups (g1, g2) whose int16 sums may be added first:
//   single: vpmaddubsw, vpmaddwd by ones, vpaddd: 2 multiplies per 32 MACs;
//   pair:   2 vpmaddubsw, vpaddw, vpmaddwd by ones, vpaddd: 3 multiplies per 64 MACs.
// On the project's AMD hosts (two vector multiply ports) the multiplies are the limit.
// Layouts (docs/kernels.md, "avx2"):
//   packed B panel body: the groups in step order, [16 columns][b(n,4g) .. b(n,4g+3)] int8 each,
//   zero padded; then the step table: run length in groups, run count, per run (pairs, singles)
//   as uint16, and each packed group's index g as uint16.
//   A: rows of K bytes padded to a multiple of 4; read in place when K is one already.
#include "kernels/avx2/gemm_avx2_maddubs.h"

#include <immintrin.h>

#include <cstdlib>
#include <cstring>

#include "kernels/avx2/epilogue_avx2.h"

namespace qr::avx2::maddubs {
namespace {

constexpr int kMR = 5;
constexpr int kNR = 16;

int groups(int k) { return (k + 3) / 4; }
constexpr int kMaxTries = 16;  // partners the packer tries per group (ResNet-18: 98-100 % of groups paired)
// Below 24 groups (K < 96), or with fewer than half the groups paired, the step table costs more
// than the pairs save (MobileNetV2's K = 32 expands: 0.061 -> 0.066 ms with pairs).
constexpr int kMinPairGroups = 24;

// A panel's step table, after its body.
struct Steps {
  int32_t run_groups;     // groups per run of A (a segment); pairs never cross runs
  int32_t runs;
  const uint16_t* counts;  // per run: pairs, then singles
  const uint16_t* group;   // per packed group, in step order: its index g (A bytes 4g .. 4g + 3)
  bool paired;             // any pairs: else the groups are in plain K order
};
size_t table_bytes(int k) { return (8 + 6 * static_cast<size_t>(groups(k)) + 63) / 64 * 64; }
Steps steps_of(const int8_t* body, int k) {
  const int8_t* t = body + static_cast<size_t>(groups(k)) * kNR * 4;
  Steps st;
  std::memcpy(&st.run_groups, t, 4);
  std::memcpy(&st.runs, t + 4, 4);
  st.counts = reinterpret_cast<const uint16_t*>(t + 8);
  st.group = st.counts + 2 * st.runs;
  st.paired = false;
  for (int s = 0; s < st.runs; ++s) st.paired |= st.counts[2 * s] > 0;
  return st;
}

// The 4 bytes of group g of a row (row: its byte 0's address), in every lane.
inline __m256i bcast4(uintptr_t row, unsigned g) {
  int32_t quad;
  std::memcpy(&quad, reinterpret_cast<const void*>(row + 4 * static_cast<uintptr_t>(g)), 4);
  return _mm256_set1_epi32(quad);
}

// The K loop of a panel without pairs (groups in K order). Row r's K bytes are the nseg runs
// rows[r * nseg + s] of kg groups each (a plain row: nseg = 1), against the panel's groups, starting from init0/init1
// (init_acc16: the bias). Each group also prefetches the line pf bytes on (run_panel's next
// panel, or 0: a line already read). V: column vectors computed, 2 (16 columns), or 1 when the
// panel holds at most 8 valid columns (the tail of a layer of 24), which halves its work.
template <int R, int V>
__attribute__((always_inline)) inline void k_loop(const uint8_t* const* rows, int nseg, const int8_t* b, int kg,
                                                  ptrdiff_t pf, __m256i init0, __m256i init1, __m256i (&out)[R][2]) {
  const __m256i ones = _mm256_set1_epi16(1);
  __m256i acc[R][2];
#pragma GCC unroll 5
  for (int r = 0; r < R; ++r) acc[r][0] = init0, acc[r][1] = init1;
  for (int s = 0; s < nseg; ++s, b += static_cast<size_t>(kg) * kNR * 4) {
    const uint8_t* arow[R];
#pragma GCC unroll 5
    for (int r = 0; r < R; ++r) arow[r] = rows[r * nseg + s];
    for (int g = 0; g < kg; ++g) {
      const __m256i b0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(b + g * 64));
      const __m256i b1 = V == 2 ? _mm256_load_si256(reinterpret_cast<const __m256i*>(b + g * 64 + 32)) : b0;
      __builtin_prefetch(b + g * 64 + pf, 0, 2);
#pragma GCC unroll 5
      for (int r = 0; r < R; ++r) {
        int32_t quad;
        std::memcpy(&quad, arow[r] + g * 4, 4);
        const __m256i av = _mm256_set1_epi32(quad);
        acc[r][0] = _mm256_add_epi32(acc[r][0], _mm256_madd_epi16(_mm256_maddubs_epi16(av, b0), ones));
        if (V == 2) acc[r][1] = _mm256_add_epi32(acc[r][1], _mm256_madd_epi16(_mm256_maddubs_epi16(av, b1), ones));
      }
    }
  }
#pragma GCC unroll 5
  for (int r = 0; r < R; ++r) out[r][0] = acc[r][0], out[r][1] = acc[r][1];
}

// The K loop on its own: inlined into the epilogue's code, GCC keeps two broadcasts in flight and
// spills an accumulator every group (256x1024x1024, 1 thread: 104 GMAC/s inlined, 111 on its own).
template <int R, int V>
__attribute__((noinline)) void accumulate(const uint8_t* const* rows, int nseg, const int8_t* b, int kg,
                                          ptrdiff_t pf, __m256i init0, __m256i init1, __m256i (&out)[R][2]) {
  k_loop<R, V>(rows, nseg, b, kg, pf, init0, init1, out);
}

// kShort: the K loop inlined, for a few groups (K <= 4 * kShortGroups), where the call and the
// accumulators' trip through memory cost more than GCC's allocation of the loop beside the epilogue.
template <int R, bool kShort, int V>
void micro_kernel(const uint8_t* a, ptrdiff_t lda, const int8_t* b, int kg, const Epilogue& ep, int col, uint8_t* c,
                  size_t c_row_bytes, int valid, ptrdiff_t pf) {
  const uint8_t* rows[R];
#pragma GCC unroll 5
  for (int r = 0; r < R; ++r) rows[r] = a + r * lda;
  __m256i acc[R][2], init0, init1;
  init_acc16(ep, col, init0, init1);
  if constexpr (kShort)
    k_loop<R, V>(rows, 1, b, kg, pf, init0, init1, acc);
  else
    accumulate<R, V>(rows, 1, b, kg, pf, init0, init1, acc);
  store_rows16<R, true>(acc, ep, col, c, c_row_bytes, valid);
}

// Rows as segments (GemmBlock::seg), seg_groups K groups each.
template <int R, int V>
void micro_kernel_segments(const uint8_t* const* seg, int nseg, int seg_groups, const int8_t* b, const Epilogue& ep,
                           int col, uint8_t* c, size_t c_row_bytes, int valid, ptrdiff_t pf) {
  __m256i acc[R][2], init0, init1;
  init_acc16(ep, col, init0, init1);
  accumulate<R, V>(seg, nseg, b, seg_groups, pf, init0, init1, acc);
  store_rows16<R, true>(acc, ep, col, c, c_row_bytes, valid);
}

using MicroKernel = void (*)(const uint8_t*, ptrdiff_t, const int8_t*, int, const Epilogue&, int, uint8_t*, size_t,
                             int, ptrdiff_t);
template <bool kShort, int V>
constexpr MicroKernel kMicroKernels[kMR + 1] = {nullptr, micro_kernel<1, kShort, V>, micro_kernel<2, kShort, V>,
                                                micro_kernel<3, kShort, V>, micro_kernel<4, kShort, V>,
                                                micro_kernel<5, kShort, V>};
constexpr int kShortGroups = 8;  // at 16 (K = 64) the inlined loop was slower
using SegmentKernel = void (*)(const uint8_t* const*, int, int, const int8_t*, const Epilogue&, int, uint8_t*, size_t,
                               int, ptrdiff_t);
template <int V>
constexpr SegmentKernel kSegmentKernels[kMR + 1] = {nullptr, micro_kernel_segments<1, V>, micro_kernel_segments<2, V>,
                                                    micro_kernel_segments<3, V>, micro_kernel_segments<4, V>,
                                                    micro_kernel_segments<5, V>};


// The K loop of a panel with pairs, in step order. Rows are rows[r] (nseg = 1: whole rows, whatever
// the runs) or the segments rows[r * nseg + s], one per run. Otherwise as k_loop: init0/init1, one
// prefetch per 64 bytes of B, V. No inlined variant: panels have pairs only from 24 groups on.
template <int R, int V>
__attribute__((always_inline)) inline void k_loop_paired(const uint8_t* const* rows, int nseg, const int8_t* b,
                                                         const Steps& st, ptrdiff_t pf, __m256i init0, __m256i init1,
                                                         __m256i (&out)[R][2]) {
  const __m256i ones = _mm256_set1_epi16(1);
  __m256i acc[R][2];
#pragma GCC unroll 5
  for (int r = 0; r < R; ++r) acc[r][0] = init0, acc[r][1] = init1;
  const uint16_t* g = st.group;
  for (int s = 0; s < st.runs; ++s) {
    // Row r's byte 4g is at arow[r] + 4g: a segment's start less the run's first group.
    uintptr_t arow[R];
    const uintptr_t run_start = 4 * static_cast<uintptr_t>(s) * st.run_groups;
#pragma GCC unroll 5
    for (int r = 0; r < R; ++r)
      arow[r] = nseg == 1 ? reinterpret_cast<uintptr_t>(rows[r])
                          : reinterpret_cast<uintptr_t>(rows[r * nseg + s]) - run_start;
    const int pairs = st.counts[2 * s], singles = st.counts[2 * s + 1];
    for (int p = 0; p < pairs; ++p, g += 2, b += 128) {
      const __m256i b0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(b));
      const __m256i b1 = V == 2 ? _mm256_load_si256(reinterpret_cast<const __m256i*>(b + 32)) : b0;
      const __m256i c0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(b + 64));
      const __m256i c1 = V == 2 ? _mm256_load_si256(reinterpret_cast<const __m256i*>(b + 96)) : c0;
      __builtin_prefetch(b + pf, 0, 2);
      __builtin_prefetch(b + 64 + pf, 0, 2);
      const unsigned g1 = g[0], g2 = g[1];
#pragma GCC unroll 5
      for (int r = 0; r < R; ++r) {
        const __m256i a1 = bcast4(arow[r], g1), a2 = bcast4(arow[r], g2);
        // The int16 sums of both groups added first: exact under kQuadBound (gemm_avx2_maddubs.h).
        const __m256i s0 = _mm256_add_epi16(_mm256_maddubs_epi16(a1, b0), _mm256_maddubs_epi16(a2, c0));
        acc[r][0] = _mm256_add_epi32(acc[r][0], _mm256_madd_epi16(s0, ones));
        if (V == 2) {
          const __m256i s1 = _mm256_add_epi16(_mm256_maddubs_epi16(a1, b1), _mm256_maddubs_epi16(a2, c1));
          acc[r][1] = _mm256_add_epi32(acc[r][1], _mm256_madd_epi16(s1, ones));
        }
      }
    }
    for (int i = 0; i < singles; ++i, ++g, b += 64) {
      const __m256i b0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(b));
      const __m256i b1 = V == 2 ? _mm256_load_si256(reinterpret_cast<const __m256i*>(b + 32)) : b0;
      __builtin_prefetch(b + pf, 0, 2);
      const unsigned g1 = g[0];
#pragma GCC unroll 5
      for (int r = 0; r < R; ++r) {
        const __m256i av = bcast4(arow[r], g1);
        acc[r][0] = _mm256_add_epi32(acc[r][0], _mm256_madd_epi16(_mm256_maddubs_epi16(av, b0), ones));
        if (V == 2) acc[r][1] = _mm256_add_epi32(acc[r][1], _mm256_madd_epi16(_mm256_maddubs_epi16(av, b1), ones));
      }
    }
  }
#pragma GCC unroll 5
  for (int r = 0; r < R; ++r) out[r][0] = acc[r][0], out[r][1] = acc[r][1];
}

// On its own, as accumulate.
template <int R, int V>
__attribute__((noinline)) void accumulate_paired(const uint8_t* const* rows, int nseg, const int8_t* b, const Steps& st,
                                                 ptrdiff_t pf, __m256i init0, __m256i init1, __m256i (&out)[R][2]) {
  k_loop_paired<R, V>(rows, nseg, b, st, pf, init0, init1, out);
}

// A panel with pairs: rows whole (nseg = 1, rows r * lda apart) or as segments, one per run.
template <int R, int V>
void micro_kernel_paired(const uint8_t* const* rows, int nseg, const int8_t* b, const Steps& st, const Epilogue& ep,
                         int col, uint8_t* c, size_t c_row_bytes, int valid, ptrdiff_t pf) {
  __m256i acc[R][2], init0, init1;
  init_acc16(ep, col, init0, init1);
  accumulate_paired<R, V>(rows, nseg, b, st, pf, init0, init1, acc);
  store_rows16<R, true>(acc, ep, col, c, c_row_bytes, valid);
}

using PairedKernel = void (*)(const uint8_t* const*, int, const int8_t*, const Steps&, const Epilogue&, int, uint8_t*,
                              size_t, int, ptrdiff_t);
template <int V>
constexpr PairedKernel kPairedKernels[kMR + 1] = {nullptr, micro_kernel_paired<1, V>, micro_kernel_paired<2, V>,
                                                  micro_kernel_paired<3, V>, micro_kernel_paired<4, V>,
                                                  micro_kernel_paired<5, V>};

}  // namespace

int64_t pairs_over_bound(const int8_t* b, ptrdiff_t ldb, int cols, int k) {
  int64_t over = 0;
  for (int j = 0; j < cols; ++j) {
    const int8_t* row = b + j * ldb;
    // An odd K's last weight pairs with the zero padding: |w| <= 127 always passes.
    for (int p = 0; p + 1 < k; p += 2) over += std::abs(row[p]) + std::abs(row[p + 1]) > kPairBound;
  }
  return over;
}

size_t panel_bytes(int k) { return static_cast<size_t>(groups(k)) * kNR * 4 + table_bytes(k); }

namespace {

// The pairing of one run's groups [g0, g0 + n): half[g * 32 + 2j + h] is |w| summed over K 4g + 2h
// and 4g + 2h + 1 of column j (0 past the panel's columns and K). Greedy: the group with the largest
// half sum left takes the first of the kMaxTries smallest left that fits it under kQuadBound.
// Writes the run's steps to `order` (pairs as g1, g2, then singles ascending) and returns the pairs.
// Plain arrays and a counting sort: no library templates in an ISA unit (kernels.h).
int pair_run(const uint8_t* half, int g0, int n, uint16_t* order, int* by_size, uint8_t* key, uint8_t* state) {
  enum : uint8_t { kFree, kPaired, kSingle };
  int count[256] = {};
  for (int i = 0; i < n; ++i) {
    const uint8_t* h = half + static_cast<size_t>(g0 + i) * 32;
    uint8_t m = 0;
    for (int q = 0; q < 32; ++q) m = h[q] > m ? h[q] : m;
    key[i] = m;
    ++count[m];
    state[i] = kFree;
  }
  for (int v = 1; v < 256; ++v) count[v] += count[v - 1];
  for (int i = n - 1; i >= 0; --i) by_size[--count[key[i]]] = i;  // ascending key, stable
  int pairs = 0, lo = 0;
  for (int top = n - 1; top >= 0; --top) {
    const int g = by_size[top];
    if (state[g] != kFree) continue;
    state[g] = kSingle;
    const uint8_t* hg = half + static_cast<size_t>(g0 + g) * 32;
    while (lo < top && state[by_size[lo]] != kFree) ++lo;
    for (int t = lo, tries = 0; t < top && tries < kMaxTries; ++t) {
      const int h = by_size[t];
      if (state[h] != kFree) continue;
      ++tries;
      const uint8_t* hh = half + static_cast<size_t>(g0 + h) * 32;
      bool fits = true;
      for (int q = 0; q < 32; ++q) fits &= hg[q] + hh[q] <= kQuadBound;
      if (fits) {
        state[g] = state[h] = kPaired;
        order[2 * pairs] = static_cast<uint16_t>(g0 + g);
        order[2 * pairs + 1] = static_cast<uint16_t>(g0 + h);
        ++pairs;
        break;
      }
    }
  }
  int next = 2 * pairs;
  for (int i = 0; i < n; ++i)
    if (state[i] == kSingle) order[next++] = static_cast<uint16_t>(g0 + i);
  return pairs;
}

}  // namespace

void pack_panel(const int8_t* b, ptrdiff_t ldb, int cols, int k, int run_bytes, int8_t* dst) {
  const int kg = groups(k);
  const int run_groups = run_bytes > 0 && run_bytes % 4 == 0 && k % run_bytes == 0 ? run_bytes / 4 : kg;
  const int runs = (kg + run_groups - 1) / run_groups;
  auto weight = [&](int jj, int p) -> int8_t { return jj < cols && p < k ? b[jj * ldb + p] : 0; };
  int8_t* table = dst + static_cast<size_t>(kg) * kNR * 4;
  std::memcpy(table, &run_groups, 4);
  std::memcpy(table + 4, &runs, 4);
  uint16_t* counts = reinterpret_cast<uint16_t*>(table + 8);
  uint16_t* order = counts + 2 * runs;
  int paired = 0;
  if (kg >= kMinPairGroups) {
    uint8_t* half = new uint8_t[static_cast<size_t>(kg) * 32];
    for (int g = 0; g < kg; ++g)
      for (int jj = 0; jj < kNR; ++jj)
        for (int h = 0; h < 2; ++h)
          half[g * 32 + 2 * jj + h] =
              static_cast<uint8_t>(std::abs(weight(jj, 4 * g + 2 * h)) + std::abs(weight(jj, 4 * g + 2 * h + 1)));
    int* by_size = new int[run_groups];
    uint8_t* key = new uint8_t[run_groups];
    uint8_t* state = new uint8_t[run_groups];
    for (int s = 0, g0 = 0; s < runs; ++s, g0 += run_groups) {
      const int n = kg - g0 < run_groups ? kg - g0 : run_groups;
      const int pairs = pair_run(half, g0, n, order + g0, by_size, key, state);
      counts[2 * s] = static_cast<uint16_t>(pairs);
      counts[2 * s + 1] = static_cast<uint16_t>(n - 2 * pairs);
      paired += 2 * pairs;
    }
    delete[] state;
    delete[] key;
    delete[] by_size;
    delete[] half;
  }
  if (2 * paired < kg) {  // few pairs: the groups in K order, for the kernel without the table
    for (int s = 0, g0 = 0; s < runs; ++s, g0 += run_groups) {
      counts[2 * s] = 0;
      counts[2 * s + 1] = static_cast<uint16_t>(kg - g0 < run_groups ? kg - g0 : run_groups);
    }
    for (int g = 0; g < kg; ++g) order[g] = static_cast<uint16_t>(g);
  }
  // The body: each group's 16 columns x 4 K in step order.
  for (int u = 0; u < kg; ++u)
    for (int jj = 0; jj < cols; ++jj)
      for (int q = 0; q < 4; ++q) dst[static_cast<size_t>(u) * kNR * 4 + jj * 4 + q] = weight(jj, 4 * order[u] + q);
}

int panel_run_bytes(const int8_t* panel, int k) {
  const Steps st = steps_of(panel, k);
  return st.runs > 1 ? 4 * st.run_groups : 0;
}

int panel_groups_paired(const int8_t* panel, int k) {
  const Steps st = steps_of(panel, k);
  int paired = 0;
  for (int s = 0; s < st.runs; ++s) paired += 2 * st.counts[2 * s];
  return paired;
}

size_t a_row_bytes(int k) { return static_cast<size_t>(groups(k)) * 4; }

void pack_a(const uint8_t* a, ptrdiff_t lda, int m, int k, uint8_t* dst) {
  const size_t row_bytes = a_row_bytes(k);
  for (int i = 0; i < m; ++i) {
    std::memcpy(dst + i * row_bytes, a + i * lda, k);
    std::memset(dst + i * row_bytes + k, 0, row_bytes - k);
  }
}

void run_panel(const uint8_t* a, ptrdiff_t lda, int m, const int8_t* panel, int k, const Epilogue& ep, int col,
               uint8_t* c, size_t c_row_bytes, int valid, const int8_t* next_panel) {
  const Steps st = steps_of(panel, k);
  const int kg = groups(k);
  const bool narrow = valid <= 8;
  const MicroKernel* kernels = kg <= kShortGroups ? (narrow ? kMicroKernels<true, 1> : kMicroKernels<true, 2>)
                                                  : (narrow ? kMicroKernels<false, 1> : kMicroKernels<false, 2>);
  const PairedKernel* paired = narrow ? kPairedKernels<1> : kPairedKernels<2>;
  // The first row tile fetches the next panel, line by line beside this one's: a layer whose
  // weights outgrow the caches (ResNet-18's last convs, 2.4 MB each) then does not wait on memory
  // at the start of every panel (512x7x7 3x3 conv, 1 thread: 1.17 -> 1.06 ms).
  for (int i = 0; i < m; i += kMR) {
    const int rows = m - i < kMR ? m - i : kMR;
    const ptrdiff_t pf = i == 0 && next_panel ? next_panel - panel : 0;
    if (st.paired) {
      const uint8_t* tile[kMR];
      for (int r = 0; r < rows; ++r) tile[r] = a + (i + r) * lda;
      paired[rows](tile, 1, panel, st, ep, col, c + i * c_row_bytes, c_row_bytes, valid, pf);
    } else {
      kernels[rows](a + i * lda, lda, panel, kg, ep, col, c + i * c_row_bytes, c_row_bytes, valid, pf);
    }
  }
}

void run_panel_segments(const uint8_t* const* seg, int nseg, int m, const int8_t* panel, int k, const Epilogue& ep,
                        int col, uint8_t* c, size_t c_row_bytes, int valid, const int8_t* next_panel) {
  const Steps st = steps_of(panel, k);
  const int seg_groups = nseg == 1 ? groups(k) : st.run_groups;
  const SegmentKernel* kernels = valid <= 8 ? kSegmentKernels<1> : kSegmentKernels<2>;
  const PairedKernel* paired = valid <= 8 ? kPairedKernels<1> : kPairedKernels<2>;
  for (int i = 0; i < m; i += kMR) {  // the next panel as in run_panel
    const int rows = m - i < kMR ? m - i : kMR;
    const ptrdiff_t pf = i == 0 && next_panel ? next_panel - panel : 0;
    if (st.paired)
      paired[rows](seg + static_cast<size_t>(i) * nseg, nseg, panel, st, ep, col, c + i * c_row_bytes, c_row_bytes,
                   valid, pf);
    else
      kernels[rows](seg + static_cast<size_t>(i) * nseg, nseg, seg_groups, panel, ep, col, c + i * c_row_bytes,
                    c_row_bytes, valid, pf);
  }
}

}  // namespace qr::avx2::maddubs
