// The fast exact AVX2 micro-kernel (qgemm_u8s8_5x16__avx2_maddubs), as the avx2 path's routing in
// gemm_avx2.cc calls it. Included by AVX2 units only; declarations only.
//
// vpmaddubsw multiplies adjacent u8 x s8 byte pairs and adds each pair into a saturating int16.
// With activations in [0, 255] that sum is exact whenever the two weights it multiplies satisfy
// |w1| + |w2| <= 128: then |a1 w1 + a2 w2| <= 255 * 128 = 32640 < 32767. This kernel multiplies
// the K pairs (2p, 2p + 1) of each column, the same pairs the vpmaddwd kernel adds, so the packer
// proves the bound on exactly the pairs that run (an odd K's last weight pairs with a zero).
#pragma once
#include <cstddef>
#include <cstdint>

#include "kernels/kernels.h"

namespace qr::avx2::maddubs {

constexpr int kPairBound = 128;  // |w1| + |w2| <= kPairBound for every pair the kernel multiplies

// Pairs (b(n, 2p), b(n, 2p + 1)) of `cols` rows of b (k int8 each, row stride ldb) whose
// |w1| + |w2| exceeds kPairBound: the panel may take this kernel only when there are none.
int64_t pairs_over_bound(const int8_t* b, ptrdiff_t ldb, int cols, int k);

// Two groups of 4 K (g1, g2) can share one vpmaddwd: their vpmaddubsw int16 sums, added with
// vpaddw first, stay exact when for every column and each half h of the group (K 2h, 2h + 1)
// |w(4 g1 + 2h)| + |w(4 g1 + 2h + 1)| + |w(4 g2 + 2h)| + |w(4 g2 + 2h + 1)| <= 128: then the int16
// sum of four products is at most 255 * 128 in size. 3 multiplies per 64 MACs instead of 4. The
// packer pairs groups where every column of the panel allows it (docs/kernels.md, "avx2").
constexpr int kQuadBound = 128;

// Bytes of one packed panel (16 columns) of K rows: the groups in step order, 64 bytes each, then
// the step table (docs/kernels.md, "avx2").
size_t panel_bytes(int k);
// Packs `cols` (<= 16) rows of b into one zeroed panel (the rest of the panel stays zero).
// run_bytes > 0: A rows may come as segments of run_bytes (GemmBlock::seg); pairs then stay within
// one.
void pack_panel(const int8_t* b, ptrdiff_t ldb, int cols, int k, int run_bytes, int8_t* dst);
// From a packed panel's step table: the run length (bytes) its pairs respect, 0 for one run
// (segments of any other size cannot be read), and the groups it packed in pairs.
int panel_run_bytes(const int8_t* panel, int k);
int panel_groups_paired(const int8_t* panel, int k);

// Bytes of A rows as the kernel reads them: K padded to a multiple of 4 (zeros).
size_t a_row_bytes(int k);
// Copies m rows of A (k bytes each, row stride lda) into dst, rows a_row_bytes(k) apart, padded.
void pack_a(const uint8_t* a, ptrdiff_t lda, int m, int k, uint8_t* dst);

// Rows [0, m) of A (row i at a + i * lda; each row readable for a_row_bytes(k) bytes) times one
// packed panel: the first `valid` of its 16 columns, global column `col` (for the epilogue arrays),
// written at c (row stride c_row_bytes). next_panel (or null) is the panel that runs after this
// one: it is prefetched while this one runs.
void run_panel(const uint8_t* a, ptrdiff_t lda, int m, const int8_t* panel, int k, const Epilogue& ep, int col,
               uint8_t* c, size_t c_row_bytes, int valid, const int8_t* next_panel);

// run_panel on rows given as segments (GemmBlock::seg): row i's K bytes are the nseg runs
// seg[i * nseg + s] of panel_run_bytes(panel, k) each (nseg > 1), read in place.
void run_panel_segments(const uint8_t* const* seg, int nseg, int m, const int8_t* panel, int k, const Epilogue& ep,
                        int col, uint8_t* c, size_t c_row_bytes, int valid, const int8_t* next_panel);

}  // namespace qr::avx2::maddubs
