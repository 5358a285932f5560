// Exact int8 Winograd F(2x2, 3x3) for AVX2: the input tile transform V = B^T d B in int16, one
// vpmaddwd GEMM per transformed position (the exact GEMM's K loop, vpmaddwd_avx2.h), the output
// transform A^T M A in int32, a shift by 2 and the GEMM's epilogue. Bit-identical to the direct conv:
// docs/quantization.md, "Winograd", proves the bounds. Layouts: docs/kernels.md, "Convolution",
// the Winograd F(2x2, 3x3) entry:
//   packed U': panels of 16 output channels; panel p is [16 positions][ceil(C/2) pairs][16 oc][2]
//   int16, the exact GEMM's panel body once per position (zero padded in C and in the channels).
//   V (scratch, per call): [16 positions][block tiles][2 * ceil(C/2)] int16, a row of K pairs per
//   tile as the K loop reads A.
//   M (scratch): [16 positions][5 tiles][16 oc] int32 per strip: one strip's, or where C > 256
//   every strip's of the call (run() says why).
// Positions are numbered xi = 4 * row + column of the 4x4 transformed tile.
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "kernels/avx2/avx2.h"
#include "kernels/avx2/epilogue_avx2.h"
#include "kernels/avx2/vpmaddwd_avx2.h"

namespace qr::avx2 {
namespace {

constexpr int kNR = 16;       // output channels per panel: the K loop's
constexpr int kMR = 5;        // tiles per K loop call: its rows
constexpr int kXi = 16;       // positions of a transformed tile
constexpr size_t kVBudget = 256 * 1024;  // bytes of V per call: half of a Zen 3 / Skylake-SP L2
constexpr size_t kUGroupBudget = 128 * 1024;  // bytes of weights a strip runs through before the next

int pairs(int c) { return (c + 1) / 2; }
size_t panel_elems(int c) { return static_cast<size_t>(kXi) * pairs(c) * kNR * 2; }

size_t packed_bytes(int oc, int c) { return static_cast<size_t>((oc + kNR - 1) / kNR) * panel_elems(c) * 2; }

// U' = (2G) g (2G)^T per (oc, c): 2G = [[2,0,0],[1,1,1],[1,-1,1],[0,0,2]], so |U'| <= 9 * 127.
void pack(const int8_t* w, int oc, int c, int16_t* dst) {
  const int kp = pairs(c);
  for (int o = 0; o < oc; ++o) {
    int16_t* panel = dst + static_cast<size_t>(o / kNR) * panel_elems(c);
    const int col = o % kNR;
    for (int ci = 0; ci < c; ++ci) {
      const int8_t* g = w + (static_cast<size_t>(o) * c + ci) * 9;
      int t[4][3];  // (2G) g
      for (int j = 0; j < 3; ++j) {
        const int g0 = g[j], g1 = g[3 + j], g2 = g[6 + j];
        t[0][j] = 2 * g0;
        t[1][j] = g0 + g1 + g2;
        t[2][j] = g0 - g1 + g2;
        t[3][j] = 2 * g2;
      }
      for (int i = 0; i < 4; ++i) {
        const int u[4] = {2 * t[i][0], t[i][0] + t[i][1] + t[i][2], t[i][0] - t[i][1] + t[i][2], 2 * t[i][2]};
        for (int j = 0; j < 4; ++j)
          panel[((static_cast<size_t>(4 * i + j) * kp + ci / 2) * kNR + col) * 2 + (ci & 1)] = static_cast<int16_t>(u[j]);
      }
    }
  }
}

// At least 16 tiles: a 7x7 output, whose weights are the layer's largest, then reads them once.
int block_tiles(int c) {
  const size_t per_tile = static_cast<size_t>(kXi) * pairs(c) * 4;
  return std::max(static_cast<int>(kVBudget / per_tile), 16);
}

size_t v_bytes(int c) { return (static_cast<size_t>(kXi) * block_tiles(c) * pairs(c) * 4 + 63) / 64 * 64; }
constexpr size_t kStripMBytes = static_cast<size_t>(kXi) * kMR * kNR * 4;

// Whether one panel's weights exceed kUGroupBudget (C > 256): then run() goes position by position
// (see there), keeping M for every strip of the block.
bool wide_panels(int c) { return panel_elems(c) * 2 > kUGroupBudget; }
size_t m_bytes(int c) { return wide_panels(c) ? (block_tiles(c) + kMR - 1) / kMR * kStripMBytes : kStripMBytes; }

size_t scratch_bytes(int c) { return v_bytes(c) + m_bytes(c); }

// V = B^T d B for 16 channels, int16 lanes: B^T = [[1,0,-1,0],[0,1,1,0],[0,-1,1,0],[0,1,0,-1]].
// d in [0, 255] gives |V| <= 4 * 255.
inline void input_transform(const __m256i (&d)[16], __m256i (&v)[16]) {
  __m256i s[16];
  for (int j = 0; j < 4; ++j) {
    s[j] = _mm256_sub_epi16(d[j], d[8 + j]);
    s[4 + j] = _mm256_add_epi16(d[4 + j], d[8 + j]);
    s[8 + j] = _mm256_sub_epi16(d[8 + j], d[4 + j]);
    s[12 + j] = _mm256_sub_epi16(d[4 + j], d[12 + j]);
  }
  for (int i = 0; i < 16; i += 4) {
    v[i] = _mm256_sub_epi16(s[i], s[i + 2]);
    v[i + 1] = _mm256_add_epi16(s[i + 1], s[i + 2]);
    v[i + 2] = _mm256_sub_epi16(s[i + 2], s[i + 1]);
    v[i + 3] = _mm256_sub_epi16(s[i + 1], s[i + 3]);
  }
}

// Fills V for the call's tiles: tile i's row at v_rows + (xi * tiles + i) * row_elems for each position.
void transform_tiles(const WinogradTask& t, int16_t* v_rows) {
  const int c = t.c, w = t.w, h = t.h;
  const size_t row_elems = static_cast<size_t>(pairs(c)) * 2;
  const int tiles_w = (t.ow + 1) / 2, tiles_h = (t.oh + 1) / 2;
  const int64_t per_image = static_cast<int64_t>(tiles_h) * tiles_w;
  const size_t image_bytes = static_cast<size_t>(h) * w * c;
  for (int i = 0; i < t.tiles; ++i) {
    const int64_t tile = t.tile0 + i;
    const int64_t img = tile / per_image;
    const int ty = static_cast<int>(tile % per_image / tiles_w), tx = static_cast<int>(tile % tiles_w);
    const uint8_t* image = t.x + static_cast<size_t>(img) * image_bytes;
    const int iy0 = 2 * ty - t.pad_t, ix0 = 2 * tx - t.pad_l;
    const bool inside = iy0 >= 0 && iy0 + 4 <= h && ix0 >= 0 && ix0 + 4 <= w;
    for (int c0 = 0; c0 < c; c0 += 16) {
      const int nch = std::min(16, c - c0);
      __m256i d[16], vt[16];
      if (inside && nch == 16) {
        const uint8_t* corner = image + (static_cast<size_t>(iy0) * w + ix0) * c + c0;
        for (int ky = 0; ky < 4; ++ky)
          for (int kx = 0; kx < 4; ++kx)
            d[ky * 4 + kx] = _mm256_cvtepu8_epi16(
                _mm_loadu_si128(reinterpret_cast<const __m128i*>(corner + (static_cast<size_t>(ky) * w + kx) * c)));
      } else {
        // A tile on the border (or the channels' last, partial chunk): positions outside the
        // image hold the zero point. Lanes past c (the pad channel of an odd c is stored) meet
        // zero weights.
        const __m256i zp = _mm256_set1_epi16(t.x_zp);
        for (int ky = 0; ky < 4; ++ky)
          for (int kx = 0; kx < 4; ++kx) {
            const int iy = iy0 + ky, ix = ix0 + kx;
            if (iy < 0 || iy >= h || ix < 0 || ix >= w) {
              d[ky * 4 + kx] = zp;
              continue;
            }
            const uint8_t* src = image + (static_cast<size_t>(iy) * w + ix) * c + c0;
            alignas(16) uint8_t bytes[16] = {};
            if (nch < 16) src = static_cast<const uint8_t*>(std::memcpy(bytes, src, nch));
            d[ky * 4 + kx] = _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src)));
          }
      }
      input_transform(d, vt);
      // The last chunk writes only the row's remaining entries (c rounded up to a pair).
      const size_t n_elems = std::min<size_t>(16, row_elems - c0);
      for (int xi = 0; xi < kXi; ++xi) {
        int16_t* dst = v_rows + (static_cast<size_t>(xi) * t.tiles + i) * row_elems + c0;
        if (n_elems == 16) {
          _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst), vt[xi]);
        } else {
          alignas(32) int16_t tmp[16];
          _mm256_store_si256(reinterpret_cast<__m256i*>(tmp), vt[xi]);
          std::memcpy(dst, tmp, n_elems * sizeof(int16_t));
        }
      }
    }
  }
}

// Y = A^T M A / 4 for 8 output channels of one tile (M: 16 positions, `stride` int32 apart), with
// A^T = [[1,1,1,0],[0,1,-1,-1]]: y[0..3] are output pixels (0,0), (0,1), (1,0), (1,1). The int32
// sums wrap; their result is 4x the direct sum, which fits (docs/quantization.md), so the shift is
// exact.
inline void output_transform8(const int32_t* m, size_t stride, __m256i (&y)[4]) {
  __m256i mv[16];
  for (int xi = 0; xi < 16; ++xi) mv[xi] = _mm256_load_si256(reinterpret_cast<const __m256i*>(m + xi * stride));
  __m256i t0[4], t1[4];
  for (int j = 0; j < 4; ++j) {
    t0[j] = _mm256_add_epi32(_mm256_add_epi32(mv[j], mv[4 + j]), mv[8 + j]);
    t1[j] = _mm256_sub_epi32(_mm256_sub_epi32(mv[4 + j], mv[8 + j]), mv[12 + j]);
  }
  y[0] = _mm256_srai_epi32(_mm256_add_epi32(_mm256_add_epi32(t0[0], t0[1]), t0[2]), 2);
  y[1] = _mm256_srai_epi32(_mm256_sub_epi32(_mm256_sub_epi32(t0[1], t0[2]), t0[3]), 2);
  y[2] = _mm256_srai_epi32(_mm256_add_epi32(_mm256_add_epi32(t1[0], t1[1]), t1[2]), 2);
  y[3] = _mm256_srai_epi32(_mm256_sub_epi32(_mm256_sub_epi32(t1[1], t1[2]), t1[3]), 2);
}

// Positions [xi0, xi1)'s K loops for a strip of R tiles against one panel, into M [16][5][16]: one
// call for all of a strip's positions where C is small, the accumulators stored straight into M (at
// C = 64 a position is only 32 K pairs, and a call plus a copy of the accumulators per position
// cost ~10 %).
template <int R>
__attribute__((noinline)) void strip_gemm(const int16_t* v, size_t v_position_elems, const int16_t* panel, int kp,
                                          int xi0, int xi1, int32_t* m) {
  const size_t slab = static_cast<size_t>(kp) * kNR * 2;
  for (int xi = xi0; xi < xi1; ++xi) {
    const int32_t* arow[R];
#pragma GCC unroll 5
    for (int r = 0; r < R; ++r) arow[r] = reinterpret_cast<const int32_t*>(v + xi * v_position_elems) + r * kp;
    __m256i acc[R][2];
#pragma GCC unroll 5
    for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_si256();
    // Prefetches the next position's weights beside each pair's (the last: the next panel's).
    vpmaddwd_loop<R>(arow, reinterpret_cast<const int8_t*>(panel + xi * slab), kp, static_cast<ptrdiff_t>(slab) * 2, acc);
#pragma GCC unroll 5
    for (int r = 0; r < R; ++r) {
      _mm256_store_si256(reinterpret_cast<__m256i*>(m + (xi * kMR + r) * kNR), acc[r][0]);
      _mm256_store_si256(reinterpret_cast<__m256i*>(m + (xi * kMR + r) * kNR + 8), acc[r][1]);
    }
  }
}

using StripGemm = void (*)(const int16_t*, size_t, const int16_t*, int, int, int, int32_t*);
constexpr StripGemm kStripGemms[kMR + 1] = {nullptr, strip_gemm<1>, strip_gemm<2>, strip_gemm<3>, strip_gemm<4>,
                                            strip_gemm<5>};

// The output transform and epilogue of a strip's tiles (m: the strip's M) for one panel: each
// tile's (up to) 4 pixels, two horizontally adjacent ones at a time.
void store_strip(const WinogradTask& t, int first_tile, int rows, const int32_t* m, int col, int valid) {
  const int tiles_w = (t.ow + 1) / 2, tiles_h = (t.oh + 1) / 2;
  const int64_t per_image = static_cast<int64_t>(tiles_h) * tiles_w;
  const size_t xi_stride = static_cast<size_t>(kMR) * kNR;
  for (int r = 0; r < rows; ++r) {
    const int64_t tile = t.tile0 + first_tile + r;
    const int64_t img = tile / per_image;
    const int oy = 2 * static_cast<int>(tile % per_image / tiles_w), ox = 2 * static_cast<int>(tile % tiles_w);
    __m256i lo[4], hi[4];
    output_transform8(m + r * kNR, xi_stride, lo);
    output_transform8(m + r * kNR + 8, xi_stride, hi);
    uint8_t* out = t.y + ((static_cast<size_t>(img) * t.oh + oy) * t.ow + ox) * t.oc + col;
    const bool two_across = ox + 1 < t.ow;
    for (int dy = 0; dy < 2 && oy + dy < t.oh; ++dy) {
      uint8_t* row = out + static_cast<size_t>(dy) * t.ow * t.oc;
      if (two_across) {
        __m256i px[2][2] = {{lo[2 * dy], hi[2 * dy]}, {lo[2 * dy + 1], hi[2 * dy + 1]}};
        store_rows16<2>(px, t.ep, col, row, static_cast<size_t>(t.oc), valid);
      } else {
        __m256i px[1][2] = {{lo[2 * dy], hi[2 * dy]}};
        store_rows16<1>(px, t.ep, col, row, static_cast<size_t>(t.oc), valid);
      }
    }
  }
}

// Two orders, by the size of a panel's weights (16 positions x C x 16 channels x 2 bytes):
// - up to kUGroupBudget (C <= 256): per group of panels that fit it, strip by strip, each panel's
//   16 K loops, then the strip's output transform while its M is in L1. A strip's V (5 short rows
//   per position at small C, which the hardware prefetchers do not follow) stays in L1 across the
//   group's panels, whose weights stream in order from L2.
// - larger (C > 256, a network's last and widest layers, few tiles, weights from memory): per
//   panel, position by position, every strip's K loop, so all strips use a position's weights
//   while the next position's are prefetched; then every strip's output transform. Strip-outer,
//   the first strip would wait for the whole panel to arrive.
void run(const WinogradTask& t) {
  int16_t* v = static_cast<int16_t*>(t.scratch);
  int32_t* m = reinterpret_cast<int32_t*>(static_cast<uint8_t*>(t.scratch) + v_bytes(t.c));
  transform_tiles(t, v);
  const int kp = pairs(t.c);
  const size_t row_elems = static_cast<size_t>(kp) * 2, position_elems = t.tiles * row_elems;
  const size_t strip_m = kStripMBytes / 4;
  // Strips of near-equal rows (16 tiles: 4 of 4, not 5 + 5 + 5 + 1, whose 1-row K loop runs at a
  // fifth of the rate).
  const int strips = (t.tiles + kMR - 1) / kMR;
  auto first = [&](int s) { return static_cast<int>(static_cast<int64_t>(t.tiles) * s / strips); };
  auto rows = [&](int s) { return first(s + 1) - first(s); };
  auto panel = [&](int p) { return t.u + static_cast<size_t>(p) * panel_elems(t.c); };
  auto valid = [&](int p) { return std::min(kNR, t.oc - p * kNR); };
  if (wide_panels(t.c)) {
    for (int p = t.panel0; p < t.panel0 + t.panels; ++p) {
      for (int xi = 0; xi < kXi; ++xi)
        for (int s = 0; s < strips; ++s)
          kStripGemms[rows(s)](v + first(s) * row_elems, position_elems, panel(p), kp, xi, xi + 1, m + s * strip_m);
      for (int s = 0; s < strips; ++s) store_strip(t, first(s), rows(s), m + s * strip_m, p * kNR, valid(p));
    }
    return;
  }
  const int group = std::clamp(static_cast<int>(kUGroupBudget / (panel_elems(t.c) * 2)), 1, t.panels);
  for (int g = t.panel0; g < t.panel0 + t.panels; g += group) {
    const int g_end = std::min(g + group, t.panel0 + t.panels);
    for (int s = 0; s < strips; ++s)
      for (int p = g; p < g_end; ++p) {
        kStripGemms[rows(s)](v + first(s) * row_elems, position_elems, panel(p), kp, 0, kXi, m);
        store_strip(t, first(s), rows(s), m, p * kNR, valid(p));
      }
  }
}

constexpr WinogradKernels kKernels = {"avx2", kNR, block_tiles, packed_bytes, pack, scratch_bytes, run};

}  // namespace

const WinogradKernels* winograd_kernels() { return &kKernels; }

}  // namespace qr::avx2
