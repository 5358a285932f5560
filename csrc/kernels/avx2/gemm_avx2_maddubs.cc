// Fast exact u8*s8 GEMM for AVX2 on weights whose K pairs are proven small: vpmaddubsw, then
// vpmaddwd by ones, int32 accumulation. Exact only under the bound in gemm_avx2_maddubs.h, which
// the avx2 packer (gemm_avx2.cc) checks per panel before it routes a panel here.
//
// Register map of the micro-kernel (qgemm_u8s8_5x16__avx2_maddubs): 5 rows x 16 columns of C held
// in 10 ymm accumulators (acc[r][0] columns 0-7, acc[r][1] columns 8-15), 2 ymm of B (one group of
// 4 K for 16 columns, int8), 1 ymm of int16 ones, 1 ymm broadcast of one row's 4 bytes of A, 1 for
// the product on its way to the accumulator: 15 of 16 registers, no spills.
// Per group of 4 K and row: vpmaddubsw (u8 x s8 -> pairs (k0,k1), (k2,k3) as int16, exact under the
// bound), vpmaddwd by ones (the two pairs -> one int32 per column), vpaddd. That is 2 multiplies and
// 1 add per 32 MACs where the vpmaddwd kernel needs 2 and 2: on the project's AMD hosts (two
// vector multiply ports) the multiplies are then the only limit.
// Layouts (docs/kernels.md, "avx2"):
//   packed B panel body: [ceil(K/4) groups][16 columns][b(n,4g) .. b(n,4g+3)] int8, zero padded.
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

// The K loop. Row r's K bytes are the nseg runs rows[r * nseg + s] of kg groups each (a plain
// row: nseg = 1), against the panel's groups in the same order, starting from init0/init1
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

size_t panel_bytes(int k) { return static_cast<size_t>(groups(k)) * kNR * 4; }

void pack_panel(const int8_t* b, ptrdiff_t ldb, int cols, int k, int8_t* dst) {
  for (int jj = 0; jj < cols; ++jj) {
    const int8_t* row = b + jj * ldb;
    for (int p = 0; p < k; ++p) dst[(p / 4) * kNR * 4 + jj * 4 + (p & 3)] = row[p];
  }
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
  const int kg = groups(k);
  const bool narrow = valid <= 8;
  const MicroKernel* kernels = kg <= kShortGroups ? (narrow ? kMicroKernels<true, 1> : kMicroKernels<true, 2>)
                                                  : (narrow ? kMicroKernels<false, 1> : kMicroKernels<false, 2>);
  // The first row tile fetches the next panel, line by line beside this one's: a layer whose
  // weights outgrow the caches (ResNet-18's last convs, 2.4 MB each) then does not wait on memory
  // at the start of every panel (512x7x7 3x3 conv, 1 thread: 1.17 -> 1.06 ms).
  for (int i = 0; i < m; i += kMR) {
    const int rows = m - i < kMR ? m - i : kMR;
    const ptrdiff_t pf = i == 0 && next_panel ? next_panel - panel : 0;
    kernels[rows](a + i * lda, lda, panel, kg, ep, col, c + i * c_row_bytes, c_row_bytes, valid, pf);
  }
}

void run_panel_segments(const uint8_t* const* seg, int nseg, int seg_bytes, int m, const int8_t* panel,
                        const Epilogue& ep, int col, uint8_t* c, size_t c_row_bytes, int valid,
                        const int8_t* next_panel) {
  const int seg_groups = seg_bytes / 4;
  const SegmentKernel* kernels = valid <= 8 ? kSegmentKernels<1> : kSegmentKernels<2>;
  for (int i = 0; i < m; i += kMR) {  // the next panel as in run_panel
    const int rows = m - i < kMR ? m - i : kMR;
    const ptrdiff_t pf = i == 0 && next_panel ? next_panel - panel : 0;
    kernels[rows](seg + static_cast<size_t>(i) * nseg, nseg, seg_groups, panel, ep, col, c + i * c_row_bytes,
                          c_row_bytes, valid, pf);
  }
}

}  // namespace qr::avx2::maddubs
