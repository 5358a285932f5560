// Direct convolution of layers with few input channels on AVX2 (kernels.h, DirectConvTask), exact:
// the avx2 GEMM's vpmaddwd arithmetic without its im2col and A packing, which cost a network's
// first layer (K = 9 to 147 bytes per output pixel) as much as its products.
// The input rows an output row reads are widened to int16 once into a ring of kh scratch rows (the
// padding holding the zero point, a row shared by the output rows that read it); for a block of R
// output pixels and a panel of 16 output channels, each kernel row's int16 pairs are broadcast
// against their weights with vpmaddwd.
// Layout (docs/kernels.md, "Convolution", the direct entry): packed weights [ceil(oc/16) panels]
// [kh rows][np pairs][16 oc][2] int16, np = ceil(kw * c / 2): the avx2 GEMM's vpmaddwd panel body
// per kernel row; element e of pair j of row ky is 2j + e = kx * c + ic, zero past kw * c (it meets
// the next pixel's first channel).
// Register map of the block (accumulate<R>): R pixels x 16 outputs in 2R <= 10 ymm accumulators,
// two ymm of weights per pair, one broadcast: the GEMM's 5x16 tile.
#include <immintrin.h>

#include <algorithm>
#include <climits>
#include <cstring>

#include "kernels/avx2/avx2.h"
#include "kernels/avx2/epilogue_avx2.h"

namespace qr::avx2 {
namespace {

constexpr int kMaxChannels = 4;   // c: 1- and 3-channel first layers (and 2, 4)
constexpr int kMaxRowBytes = 32;  // kw * c: a 7x7 on 3 channels is 21
constexpr int kMaxKh = 16;
constexpr int kMaxR = 5;          // pixels per block
constexpr int kSlack = 16;        // int16 after a scratch row's span: the last pair's overread

int pairs(int c, int kw) { return (kw * c + 1) / 2; }
int panels(int oc) { return (oc + 15) / 16; }

bool takes(int c, int kh, int kw) { return c <= kMaxChannels && kw * c <= kMaxRowBytes && kh <= kMaxKh; }

size_t packed_bytes(int oc, int c, int kh, int kw) { return static_cast<size_t>(panels(oc)) * kh * pairs(c, kw) * 64; }

void pack(const int8_t* w, int oc, int c, int kh, int kw, int8_t* dst) {
  int16_t* d = reinterpret_cast<int16_t*>(dst);
  const int np = pairs(c, kw);
  for (int o = 0; o < oc; ++o)
    for (int ky = 0; ky < kh; ++ky)
      for (int e = 0; e < kw * c; ++e) {
        const int kx = e / c, ic = e % c;
        d[((static_cast<size_t>(o / 16) * kh + ky) * np + e / 2) * 32 + (o % 16) * 2 + e % 2] =
            w[((static_cast<size_t>(o) * c + ic) * kh + ky) * kw + kx];
      }
}

// int16 elements of a scratch row: the input pixels a row of outputs reads, from column -pad_l on,
// rounded up to whole ymm.
size_t row_elems(int c, int kw, int ow, int stride_w) {
  return (static_cast<size_t>((ow - 1) * stride_w + kw) * c + kSlack + 15) / 16 * 16;
}

size_t scratch_bytes(int c, int kh, int kw, int ow, int stride_w) {
  return static_cast<size_t>(kh) * row_elems(c, kw, ow, stride_w) * sizeof(int16_t);
}

// Scratch row for input row iy, widened: zero points where it or its columns lie outside the image.
void fill_row(const DirectConvTask& t, int iy, int16_t* row, size_t elems) {
  const int c = t.c, span = (t.ow - 1) * t.stride_w + t.kw;
  std::fill(row, row + elems, static_cast<int16_t>(t.x_zp));
  if (iy < 0 || iy >= t.h) return;
  const int ix_begin = std::max(0, -t.pad_l);
  const int ix_end = std::min(t.w, span - t.pad_l);  // input columns [ix_begin, ix_end) land at ix + pad_l
  const uint8_t* src = t.x + (static_cast<size_t>(iy) * t.w + ix_begin) * c;
  int16_t* dst = row + static_cast<size_t>(ix_begin + t.pad_l) * c;
  for (int i = 0; i < (ix_end - ix_begin) * c; ++i) dst[i] = src[i];
}

inline int32_t pair_at(const int16_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// acc[r] = init + the window of pixel r (rows[ky] + r * px_step) times one panel's weights. Kept out
// of line: inlined beside the epilogue it was no faster (Zen 3, three models' first layers, within
// the noise), unlike the GEMM's K loop.
template <int R>
__attribute__((noinline)) void accumulate(const int16_t* const* rows, int kh, int np, size_t px_step, const int8_t* w,
                                          __m256i init0, __m256i init1, __m256i (&out)[R][2]) {
  __m256i acc[R][2];
#pragma GCC unroll 5
  for (int r = 0; r < R; ++r) acc[r][0] = init0, acc[r][1] = init1;
  for (int ky = 0; ky < kh; ++ky) {
    const int16_t* row = rows[ky];
    const int8_t* wr = w + static_cast<size_t>(ky) * np * 64;
    for (int j = 0; j < np; ++j) {
      const __m256i b0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wr + j * 64));
      const __m256i b1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wr + j * 64 + 32));
#pragma GCC unroll 5
      for (int r = 0; r < R; ++r) {
        const __m256i a = _mm256_set1_epi32(pair_at(row + r * px_step + 2 * j));
        acc[r][0] = _mm256_add_epi32(acc[r][0], _mm256_madd_epi16(a, b0));
        acc[r][1] = _mm256_add_epi32(acc[r][1], _mm256_madd_epi16(a, b1));
      }
    }
  }
#pragma GCC unroll 5
  for (int r = 0; r < R; ++r) out[r][0] = acc[r][0], out[r][1] = acc[r][1];
}

// Outputs [ox0, ox0 + R) of one row, channels [col, col + 16).
template <int R>
void block(const DirectConvTask& t, const int16_t* const* rows, int ox0, int col, uint8_t* out_row) {
  const int np = pairs(t.c, t.kw);
  const size_t px_step = static_cast<size_t>(t.stride_w) * t.c;
  const int16_t* at[kMaxKh];
  for (int ky = 0; ky < t.kh; ++ky) at[ky] = rows[ky] + ox0 * px_step;
  __m256i init0, init1, acc[R][2];
  init_acc16(t.ep, col, init0, init1);
  accumulate<R>(at, t.kh, np, px_step, t.weights + static_cast<size_t>(col / 16) * t.kh * np * 64, init0, init1, acc);
  store_rows16<R, true>(acc, t.ep, col, out_row + static_cast<size_t>(ox0) * t.oc + col, t.oc, std::min(16, t.oc - col));
}

void run(const DirectConvTask& t) {
  const size_t elems = row_elems(t.c, t.kw, t.ow, t.stride_w);
  int16_t* ring = static_cast<int16_t*>(t.scratch);
  // Slot s holds input row held[s] (INT_MIN: none yet); input row iy lives in slot iy mod kh, so
  // the kh rows an output row reads are in distinct slots.
  int held[kMaxKh];
  std::fill(held, held + t.kh, INT_MIN);
  const int16_t* rows[kMaxKh];
  for (int oy = t.oh_begin; oy < t.oh_end; ++oy) {
    for (int ky = 0; ky < t.kh; ++ky) {
      const int iy = oy * t.stride_h - t.pad_t + ky;
      const int s = ((iy % t.kh) + t.kh) % t.kh;
      int16_t* slot = ring + s * elems;
      if (held[s] != iy) fill_row(t, iy, slot, elems), held[s] = iy;
      rows[ky] = slot;
    }
    uint8_t* out_row = t.y + static_cast<size_t>(oy) * t.ow * t.oc;
    for (int col = 0; col < t.oc; col += 16) {
      int ox = 0;
      for (; ox + kMaxR <= t.ow; ox += kMaxR) block<kMaxR>(t, rows, ox, col, out_row);
      switch (t.ow - ox) {
        case 4: block<4>(t, rows, ox, col, out_row); break;
        case 3: block<3>(t, rows, ox, col, out_row); break;
        case 2: block<2>(t, rows, ox, col, out_row); break;
        case 1: block<1>(t, rows, ox, col, out_row); break;
        default: break;
      }
    }
  }
}

constexpr DirectConvKernels kKernels = {"avx2", takes, packed_bytes, pack, scratch_bytes, run};

}  // namespace

const DirectConvKernels* direct_conv_kernels() { return &kKernels; }

}  // namespace qr::avx2
