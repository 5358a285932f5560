// Exact int8 Winograd for 3x3 convs on AVX2: F(2x2, 3x3), F(3x3, 3x3) and F(4x4, 3x3) at stride 1,
// and at stride 2 F(2x2, 3x3) over the input's four phases (each a stride-1 conv with a 2x2, 2x1,
// 1x2 or 1x1 part of the filter, under F(2, 2)). The input tile transform V in int16, one vpmaddwd
// GEMM per transformed position (the exact GEMM's K loop, vpmaddwd_avx2.h), the output transform
// in int32, the exact division that recovers the direct sum (none at stride 2), and the GEMM's
// epilogue.
// Bit-identical to the direct conv: docs/quantization.md, "Winograd", proves the bounds. Layouts:
// docs/kernels.md, "Convolution", the Winograd entry. With T output pixels per tile side and P
// transformed positions per tile (16, 25, 36; 25 at stride 2):
//   packed U': panels of 16 output channels; panel p is [P positions][ceil(C/2) pairs][16 oc][2]
//   int16, the exact GEMM's panel body once per position (zero padded in C and in the channels).
//   V (scratch, per call): [P positions][block tiles][2 * ceil(C/2)] int16, a row of K pairs per
//   tile as the K loop reads A.
//   M (scratch): [P positions][5 tiles][16 oc] int32 per strip: one strip's, or where a panel's
//   weights exceed 128 KB every strip's of the call (run() says why).
//   S (scratch, F(4x4) over more than one channel chunk): [5 tiles][16 pixels][16 oc] int32 per
//   strip held as M, the recovered sums of the chunks so far.
// Positions of the stride-1 variants are numbered xi = (T + 2) * row + column of the transformed
// tile; the stride-2 variant's are listed at S2.
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
constexpr size_t kVBudget = 256 * 1024;  // bytes of V per call: half of a Zen 3 / Skylake-SP L2
constexpr size_t kUGroupBudget = 128 * 1024;  // bytes of weights a strip runs through before the next

// Which input channel counts C get which variant.
// Stride 1: from 16 (with fewer the tile transforms cost about what the products save: Zen 3, 1
// thread, 28x28, 8 channels ran 0.81-1.04x the direct GEMM's speed under F(2x2, 3x3), 16 ran
// 1.32x) to 1841 (the bound of F(2x2) and F(3x3): |4 acc| < 2^31, 255 * 127 * 9 * 1841 < 2^29 <=
// 255 * 127 * 9 * 1842). Per output F(4x4, 3x3) takes 2.25 products, F(3x3, 3x3) 2.78, F(2x2,
// 3x3) 4, but their U' are 36, 25 and 16 int16 per filter, and the wider layers of a network are
// its small images, whose weights stream from memory and whose outputs a large tile overhangs:
// F(4x4) up to 128 channels, F(3x3) up to 256, F(2x2) above. (Zen 3, 1 thread: F(3x3) against
// F(2x2) 1.16x at 14x14x256, 1.29x at 28x28x256, 1.15x at 7x7x512 alone, but in ResNet-18 its
// 7x7x512 layers gained under 3 % for 14 MB more weights.)
constexpr int kMinChannels = 16, kMaxChannels = 1841, kF4MaxChannels = 128, kF3MaxChannels = 256;
// Stride 2: 32 to 128. Its U' is 25/9 of the direct GEMM's int16 panels, so where they stream
// from memory it loses (Zen 3, 1 thread, against the GEMM: 14x14 input of 256 or 512 channels
// 0.88-0.90x, 56x56 of 16 0.94x; 56x56 of 32 and 64, 28x28 of 128: 1.18-1.28x).
constexpr int kS2MinChannels = 32, kS2MaxChannels = 128;

// acc from y = 2^k * 9 * acc modulo 2^32 (int32 lanes): times 9's inverse modulo 2^32 (0x38E38E39)
// it is 2^k acc modulo 2^32, which is 2^k acc itself while |2^k acc| < 2^31; the shift then gives acc.
template <int k>
inline __m256i exact_div_9_shift(__m256i y) {
  return _mm256_srai_epi32(_mm256_mullo_epi32(y, _mm256_set1_epi32(static_cast<int>(0x38E38E39u))), k);
}

// F(2x2, 3x3). B^T = [[1,0,-1,0],[0,1,1,0],[0,-1,1,0],[0,1,0,-1]], G' = 2G =
// [[2,0,0],[1,1,1],[1,-1,1],[0,0,2]], A^T = [[1,1,1,0],[0,1,-1,-1]]: A^T M A = 4 acc.
struct F2 {
  static constexpr int kT = 2, kIn = 4;
  static constexpr int kG[4][3] = {{2, 0, 0}, {1, 1, 1}, {1, -1, 1}, {0, 0, 2}};
  // One chunk holds every channel the packer allows (|4 acc| < 2^31 for C <= 1841).
  static constexpr int kChunkPairs = 1 << 20;
  // B^T on int16 lanes (each input <= 4 * 255 in size after both passes).
  static void input(const __m256i (&x)[4], __m256i (&y)[4]) {
    y[0] = _mm256_sub_epi16(x[0], x[2]);
    y[1] = _mm256_add_epi16(x[1], x[2]);
    y[2] = _mm256_sub_epi16(x[2], x[1]);
    y[3] = _mm256_sub_epi16(x[1], x[3]);
  }
  // A^T on int32 lanes (wrapping).
  static void output(const __m256i (&m)[4], __m256i (&y)[2]) {
    y[0] = _mm256_add_epi32(_mm256_add_epi32(m[0], m[1]), m[2]);
    y[1] = _mm256_sub_epi32(_mm256_sub_epi32(m[1], m[2]), m[3]);
  }
  static __m256i recover(__m256i y) { return _mm256_srai_epi32(y, 2); }
};

// F(4x4, 3x3) on the points 0, +-1, +-2, infinity (Lavin and Gray's matrices), G's rows scaled to
// integers by s = (4, 6, 6, 24, 24, 1) and A^T's columns by 24 / s:
// B^T = [[4,0,-5,0,1,0],[0,-4,-4,1,1,0],[0,4,-4,-1,1,0],[0,-2,-1,2,1,0],[0,2,-1,-2,1,0],[0,4,0,-5,0,1]],
// G' = [[1,0,0],[-1,-1,-1],[-1,1,-1],[1,2,4],[1,-2,4],[0,0,1]],
// A'^T = [[6,4,4,1,1,0],[0,4,-4,2,-2,0],[0,4,4,4,4,0],[0,4,-4,8,-8,24]]: A'^T M A' = 576 acc.
struct F4 {
  static constexpr int kT = 4, kIn = 6;
  static constexpr int kG[6][3] = {{1, 0, 0}, {-1, -1, -1}, {-1, 1, -1}, {1, 2, 4}, {1, -2, 4}, {0, 0, 1}};
  // Channels per chunk: 114, so that |acc| of a chunk < 2^25 (recover()).
  static constexpr int kChunkPairs = 57;
  static void input(const __m256i (&x)[6], __m256i (&y)[6]) {
    const __m256i t0 = _mm256_sub_epi16(x[4], _mm256_slli_epi16(x[2], 2));    // x4 - 4 x2
    const __m256i t1 = _mm256_sub_epi16(x[3], _mm256_slli_epi16(x[1], 2));    // x3 - 4 x1
    const __m256i t2 = _mm256_sub_epi16(x[4], x[2]);                          // x4 - x2
    const __m256i t3 = _mm256_slli_epi16(_mm256_sub_epi16(x[3], x[1]), 1);    // 2 (x3 - x1)
    y[0] = _mm256_add_epi16(_mm256_slli_epi16(_mm256_sub_epi16(x[0], x[2]), 2), t2);
    y[1] = _mm256_add_epi16(t0, t1);
    y[2] = _mm256_sub_epi16(t0, t1);
    y[3] = _mm256_add_epi16(t2, t3);
    y[4] = _mm256_sub_epi16(t2, t3);
    y[5] = _mm256_add_epi16(_mm256_slli_epi16(_mm256_sub_epi16(x[1], x[3]), 2), _mm256_sub_epi16(x[5], x[3]));
  }
  static void output(const __m256i (&m)[6], __m256i (&y)[4]) {
    const __m256i s12 = _mm256_add_epi32(m[1], m[2]), d12 = _mm256_sub_epi32(m[1], m[2]);
    const __m256i s34 = _mm256_add_epi32(m[3], m[4]), d34 = _mm256_sub_epi32(m[3], m[4]);
    const __m256i m0x6 = _mm256_add_epi32(_mm256_slli_epi32(m[0], 2), _mm256_slli_epi32(m[0], 1));
    const __m256i m5x24 = _mm256_add_epi32(_mm256_slli_epi32(m[5], 4), _mm256_slli_epi32(m[5], 3));
    const __m256i s12x4 = _mm256_slli_epi32(s12, 2), d12x4 = _mm256_slli_epi32(d12, 2);
    y[0] = _mm256_add_epi32(_mm256_add_epi32(m0x6, s12x4), s34);
    y[1] = _mm256_add_epi32(d12x4, _mm256_slli_epi32(d34, 1));
    y[2] = _mm256_add_epi32(s12x4, _mm256_slli_epi32(s34, 2));
    y[3] = _mm256_add_epi32(_mm256_add_epi32(d12x4, _mm256_slli_epi32(d34, 3)), m5x24);
  }
  // y = 576 acc = 2^6 * 9 acc modulo 2^32: exact while |acc| < 2^25.
  static __m256i recover(__m256i y) { return exact_div_9_shift<6>(y); }
};

// F(3x3, 3x3) on the points 0, 1, -1, 2, infinity, G's rows scaled to integers by s = (2, 2, 6, 6, 1)
// and A^T's columns by 6 / s:
// B^T = [[2,-1,-2,1,0],[0,-2,-1,1,0],[0,2,-3,1,0],[0,-1,0,1,0],[0,2,-1,-2,1]],
// G' = [[1,0,0],[-1,-1,-1],[-1,1,-1],[1,2,4],[0,0,1]], A'^T = [[3,3,1,1,0],[0,3,-1,2,0],[0,3,1,4,6]]:
// A'^T M A' = 36 acc.
struct F3 {
  static constexpr int kT = 3, kIn = 5;
  static constexpr int kG[5][3] = {{1, 0, 0}, {-1, -1, -1}, {-1, 1, -1}, {1, 2, 4}, {0, 0, 1}};
  // One chunk holds every channel the packer allows (|4 acc| < 2^31 for C <= 1841, recover()).
  static constexpr int kChunkPairs = 1 << 20;
  static void input(const __m256i (&x)[5], __m256i (&y)[5]) {
    const __m256i a = _mm256_sub_epi16(x[3], x[1]), b = _mm256_sub_epi16(x[3], x[2]);
    y[0] = _mm256_add_epi16(_mm256_slli_epi16(_mm256_sub_epi16(x[0], x[2]), 1), a);
    y[1] = _mm256_sub_epi16(b, _mm256_slli_epi16(x[1], 1));
    y[2] = _mm256_add_epi16(b, _mm256_slli_epi16(_mm256_sub_epi16(x[1], x[2]), 1));
    y[3] = a;
    y[4] = _mm256_sub_epi16(_mm256_sub_epi16(x[4], x[2]), _mm256_slli_epi16(a, 1));
  }
  static void output(const __m256i (&m)[5], __m256i (&y)[3]) {
    const __m256i m1x3 = _mm256_add_epi32(_mm256_slli_epi32(m[1], 1), m[1]);
    const __m256i m0x3 = _mm256_add_epi32(_mm256_slli_epi32(m[0], 1), m[0]);
    const __m256i m4x6 = _mm256_add_epi32(_mm256_slli_epi32(m[4], 2), _mm256_slli_epi32(m[4], 1));
    y[0] = _mm256_add_epi32(_mm256_add_epi32(m0x3, m1x3), _mm256_add_epi32(m[2], m[3]));
    y[1] = _mm256_add_epi32(_mm256_sub_epi32(m1x3, m[2]), _mm256_slli_epi32(m[3], 1));
    y[2] = _mm256_add_epi32(_mm256_add_epi32(m1x3, m[2]), _mm256_add_epi32(_mm256_slli_epi32(m[3], 2), m4x6));
  }
  // y = 36 acc = 2^2 * 9 acc modulo 2^32: exact while |4 acc| < 2^31.
  static __m256i recover(__m256i y) { return exact_div_9_shift<2>(y); }
};

// A stride-1 variant F(TxT, 3x3) from its 1-D transforms F (F2, F3, F4): separable in rows and columns.
template <class F>
struct Separable {
  static constexpr int kT = F::kT, kWin = F::kIn, kStep = F::kT, kP = F::kIn * F::kIn, kCols = F::kIn;
  static constexpr int kChunkPairs = F::kChunkPairs;
  static constexpr const char* kName = F::kT == 4 ? "F(4x4,3x3)" : F::kT == 3 ? "F(3x3,3x3)" : "F(2x2,3x3)";

  // U' = G' g G'^T: u[xi] for the 3x3 filter g (row-major).
  static void weights(const int8_t* g, int* u) {
    constexpr int n = F::kIn;
    int t[n][3];  // G' g
    for (int i = 0; i < n; ++i)
      for (int j = 0; j < 3; ++j) t[i][j] = F::kG[i][0] * g[j] + F::kG[i][1] * g[3 + j] + F::kG[i][2] * g[6 + j];
    for (int i = 0; i < n; ++i)
      for (int j = 0; j < n; ++j) u[n * i + j] = t[i][0] * F::kG[j][0] + t[i][1] * F::kG[j][1] + t[i][2] * F::kG[j][2];
  }

  // V = B^T d B for 16 channels in int16 lanes: load(ky, kx) gives input position (ky, kx) of the
  // window; each row is transformed as it is loaded, then each column, whose results go to
  // store(xi, v). (Whole-window arrays cost GCC ~270 spill moves per call for F4.)
  template <class Load, class Store>
  static void input(Load load, Store store) {
    constexpr int n = F::kIn;
    __m256i s[n][n];  // d B
    for (int ky = 0; ky < n; ++ky) {
      __m256i row[n];
      for (int kx = 0; kx < n; ++kx) row[kx] = load(ky, kx);
      F::input(row, s[ky]);
    }
    for (int j = 0; j < n; ++j) {
      __m256i col[n], out[n];
      for (int i = 0; i < n; ++i) col[i] = s[i][j];
      F::input(col, out);
      for (int i = 0; i < n; ++i) store(i * n + j, out[i]);
    }
  }

  // A^T M for 8 output channels (m(xi): position xi's M), in wrapping int32: r[i][j], the output
  // transform of M's column j.
  template <class Load>
  static void output_columns(Load m, __m256i (&r)[kT][kCols]) {
    constexpr int n = F::kIn;
    for (int j = 0; j < n; ++j) {
      __m256i col[n], out[kT];
      for (int i = 0; i < n; ++i) col[i] = m(i * n + j);
      F::output(col, out);
      for (int i = 0; i < kT; ++i) r[i][j] = out[i];
    }
  }
  // One output row from its r: (A^T M A)[dy][dx] for dx < T, through F::recover: the sums acc.
  static void output_row(const __m256i (&r)[kCols], __m256i (&y)[kT]) {
    F::output(r, y);
    for (int dx = 0; dx < kT; ++dx) y[dx] = F::recover(y[dx]);
  }
};

// Stride 2: x_pq[i][j] = x[2i + p][2j + q] are the input's phases, and the conv is the sum over
// them of stride-1 convs with the filter's parts g[2a + p][2b + q]: 2x2 (phase 00), 2x1 (01), 1x2
// (10), 1x1 (11). F(2, 2) on 3 points, integer throughout: B^T = [[1,-1,0],[0,1,0],[0,-1,1]],
// G = [[1,0],[1,1],[0,1]], A^T = [[1,1,0],[0,1,1]], applied in both directions of the 2x2 part and
// in the one direction of the 2-tap ones. A 2x2 output tile reads a 5x5 window, 4 input pixels
// apart; its 25 positions: 0-8 phase 00 (3 x 3), 9-14 phase 01 (3 rows x 2 columns), 15-20 phase
// 10 (2 x 3), 21-24 phase 11 (2 x 2), row-major within each. 25 products per tile and channel
// where the direct conv takes 36; Y is acc itself.
struct S2 {
  static constexpr int kT = 2, kWin = 5, kStep = 4, kP = 25, kCols = 5;
  static constexpr int kChunkPairs = 1 << 20;  // no division: one chunk
  static constexpr const char* kName = "F(2x2,3x3) on the stride-2 phases";

  static void weights(const int8_t* g, int* u) {
    // G applied to 2 taps: (t0, t0 + t1, t1).
    auto gt = [](int t0, int t1, int i) { return i == 0 ? t0 : i == 1 ? t0 + t1 : t1; };
    for (int i = 0; i < 3; ++i)
      for (int j = 0; j < 3; ++j) u[3 * i + j] = gt(gt(g[0], g[2], j), gt(g[6], g[8], j), i);
    for (int i = 0; i < 3; ++i) u[9 + 2 * i] = u[10 + 2 * i] = gt(g[1], g[7], i);
    for (int j = 0; j < 3; ++j) u[15 + j] = u[18 + j] = gt(g[3], g[5], j);
    u[21] = u[22] = u[23] = u[24] = g[4];
  }

  // B^T on 3 int16 vectors.
  static void b3(__m256i x0, __m256i x1, __m256i x2, __m256i (&y)[3]) {
    y[0] = _mm256_sub_epi16(x0, x1);
    y[1] = x1;
    y[2] = _mm256_sub_epi16(x2, x1);
  }

  template <class Load, class Store>
  static void input(Load load, Store store) {
    __m256i s[3][3], y[3];
    for (int a = 0; a < 3; ++a) b3(load(2 * a, 0), load(2 * a, 2), load(2 * a, 4), s[a]);
    for (int j = 0; j < 3; ++j) {
      b3(s[0][j], s[1][j], s[2][j], y);
      for (int i = 0; i < 3; ++i) store(3 * i + j, y[i]);
    }
    for (int j = 0; j < 2; ++j) {
      b3(load(0, 2 * j + 1), load(2, 2 * j + 1), load(4, 2 * j + 1), y);
      for (int i = 0; i < 3; ++i) store(9 + 2 * i + j, y[i]);
    }
    for (int i = 0; i < 2; ++i) {
      b3(load(2 * i + 1, 0), load(2 * i + 1, 2), load(2 * i + 1, 4), y);
      for (int j = 0; j < 3; ++j) store(15 + 3 * i + j, y[j]);
    }
    for (int i = 0; i < 2; ++i)
      for (int j = 0; j < 2; ++j) store(21 + 2 * i + j, load(2 * i + 1, 2 * j + 1));
  }

  // r[dy][j] for j < 3: (A^T M00)[dy][j] + M10[dy][j], which A then combines across j; r[dy][3 + dx]:
  // (A^T M01)[dy][dx] + M11[dy][dx], already in place.
  template <class Load>
  static void output_columns(Load m, __m256i (&r)[kT][kCols]) {
    for (int j = 0; j < 3; ++j) {
      const __m256i m1 = m(3 + j);
      r[0][j] = _mm256_add_epi32(_mm256_add_epi32(m(j), m1), m(15 + j));
      r[1][j] = _mm256_add_epi32(_mm256_add_epi32(m1, m(6 + j)), m(18 + j));
    }
    for (int dx = 0; dx < 2; ++dx) {
      const __m256i m1 = m(11 + dx);
      r[0][3 + dx] = _mm256_add_epi32(_mm256_add_epi32(m(9 + dx), m1), m(21 + dx));
      r[1][3 + dx] = _mm256_add_epi32(_mm256_add_epi32(m1, m(13 + dx)), m(23 + dx));
    }
  }
  static void output_row(const __m256i (&r)[kCols], __m256i (&y)[kT]) {
    y[0] = _mm256_add_epi32(_mm256_add_epi32(r[0], r[1]), r[3]);
    y[1] = _mm256_add_epi32(_mm256_add_epi32(r[1], r[2]), r[4]);
  }
};

using W2 = Separable<F2>;
using W3 = Separable<F3>;
using W4 = Separable<F4>;

// Calls fn with the variant that runs c input channels at this stride (1 or 2).
template <class Fn>
auto with_variant(int c, int stride, Fn fn) {
  if (stride == 2) return fn(S2{});
  return c <= kF4MaxChannels ? fn(W4{}) : c <= kF3MaxChannels ? fn(W3{}) : fn(W2{});
}

int pairs(int c) { return (c + 1) / 2; }
template <class W>
size_t panel_elems(int c) { return static_cast<size_t>(W::kP) * pairs(c) * kNR * 2; }

// The channel chunks of W: near-equal runs of pairs, each within W::kChunkPairs.
template <class W>
int chunks(int c) { return (pairs(c) + W::kChunkPairs - 1) / W::kChunkPairs; }

int tile(int c, int stride) {
  if (stride == 2 ? c < kS2MinChannels || c > kS2MaxChannels : stride != 1 || c < kMinChannels || c > kMaxChannels)
    return 0;
  return with_variant(c, stride, [](auto w) { return decltype(w)::kT; });
}
const char* variant_name(int c, int stride) {
  return with_variant(c, stride, [](auto w) { return decltype(w)::kName; });
}

size_t packed_bytes(int oc, int c, int stride) {
  return with_variant(c, stride, [&](auto w) {
    return static_cast<size_t>((oc + kNR - 1) / kNR) * panel_elems<decltype(w)>(c) * 2;
  });
}

// U' per (oc, c): |U'| <= 9 * 127 (F2), 49 * 127 (F3, F4), 4 * 127 (S2).
template <class W>
void pack_as(const int8_t* w, int oc, int c, int16_t* dst) {
  const int kp = pairs(c);
  for (int o = 0; o < oc; ++o) {
    int16_t* panel = dst + static_cast<size_t>(o / kNR) * panel_elems<W>(c);
    const int col = o % kNR;
    for (int ci = 0; ci < c; ++ci) {
      int u[W::kP];
      W::weights(w + (static_cast<size_t>(o) * c + ci) * 9, u);
      for (int xi = 0; xi < W::kP; ++xi)
        panel[((static_cast<size_t>(xi) * kp + ci / 2) * kNR + col) * 2 + (ci & 1)] = static_cast<int16_t>(u[xi]);
    }
  }
}

void pack(const int8_t* w, int oc, int c, int stride, int16_t* dst) {
  with_variant(c, stride, [&](auto v) { pack_as<decltype(v)>(w, oc, c, dst); });
}

// At least 16 tiles: a network's widest layers, whose weights are its largest, then read them once.
template <class W>
int block_tiles_of(int c) {
  const size_t per_tile = static_cast<size_t>(W::kP) * pairs(c) * 4;
  return std::max(static_cast<int>(kVBudget / per_tile), 16);
}

int block_tiles(int c, int stride) {
  return with_variant(c, stride, [&](auto w) { return block_tiles_of<decltype(w)>(c); });
}

template <class W>
size_t v_bytes(int c) { return (static_cast<size_t>(W::kP) * block_tiles_of<W>(c) * pairs(c) * 4 + 63) / 64 * 64; }
template <class W>
constexpr size_t kStripMBytes = static_cast<size_t>(W::kP) * kMR * kNR * 4;
template <class W>
constexpr size_t kStripSBytes = static_cast<size_t>(W::kT) * W::kT * kMR * kNR * 4;

// Whether one panel's weights exceed kUGroupBudget (F2 with C > 256, F3 with C > 162, F4 with
// C > 112; never S2, up to 128 channels): then run() goes position by position (see there),
// keeping M (and S) for every strip of the block.
template <class W>
bool wide_panels(int c) { return panel_elems<W>(c) * 2 > kUGroupBudget; }
template <class W>
int strips_held(int c) { return wide_panels<W>(c) ? (block_tiles_of<W>(c) + kMR - 1) / kMR : 1; }

size_t scratch_bytes(int c, int stride) {
  return with_variant(c, stride, [&](auto w) {
    using W = decltype(w);
    return v_bytes<W>(c) + strips_held<W>(c) * (kStripMBytes<W> + (chunks<W>(c) > 1 ? kStripSBytes<W> : 0));
  });
}

// Fills V for the call's tiles: tile i's row at v_rows + (xi * tiles + i) * row_elems for each position.
template <class W>
void transform_tiles(const WinogradTask& t, int16_t* v_rows) {
  constexpr int n = W::kWin, T = W::kT;
  const int c = t.c, w = t.w, h = t.h;
  const size_t row_elems = static_cast<size_t>(pairs(c)) * 2;
  const int tiles_w = (t.ow + T - 1) / T, tiles_h = (t.oh + T - 1) / T;
  const int64_t per_image = static_cast<int64_t>(tiles_h) * tiles_w;
  const size_t image_bytes = static_cast<size_t>(h) * w * c;
  const __m256i zp = _mm256_set1_epi16(t.x_zp);
  for (int i = 0; i < t.tiles; ++i) {
    const int64_t tile = t.tile0 + i;
    const int64_t img = tile / per_image;
    const int ty = static_cast<int>(tile % per_image / tiles_w), tx = static_cast<int>(tile % tiles_w);
    const uint8_t* image = t.x + static_cast<size_t>(img) * image_bytes;
    const int iy0 = W::kStep * ty - t.pad_t, ix0 = W::kStep * tx - t.pad_l;
    const bool inside = iy0 >= 0 && iy0 + n <= h && ix0 >= 0 && ix0 + n <= w;
    for (int c0 = 0; c0 < c; c0 += 16) {
      const int nch = std::min(16, c - c0);
      int16_t* row0 = v_rows + static_cast<size_t>(i) * row_elems + c0;
      const size_t xi_elems = static_cast<size_t>(t.tiles) * row_elems;
      // The last chunk writes only the row's remaining entries (c rounded up to a pair).
      const size_t n_elems = std::min<size_t>(16, row_elems - c0);
      auto store = [&](int xi, __m256i v) {
        int16_t* dst = row0 + xi * xi_elems;
        if (n_elems == 16) {
          _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst), v);
        } else {
          alignas(32) int16_t tmp[16];
          _mm256_store_si256(reinterpret_cast<__m256i*>(tmp), v);
          std::memcpy(dst, tmp, n_elems * sizeof(int16_t));
        }
      };
      if (inside && nch == 16) {
        const uint8_t* corner = image + (static_cast<size_t>(iy0) * w + ix0) * c + c0;
        W::input(
            [&](int ky, int kx) {
              return _mm256_cvtepu8_epi16(
                  _mm_loadu_si128(reinterpret_cast<const __m128i*>(corner + (static_cast<size_t>(ky) * w + kx) * c)));
            },
            store);
        continue;
      }
      // A tile on the border (or the channels' last, partial chunk): positions outside the image
      // hold the zero point. Lanes past c (the pad channel of an odd c is stored) meet zero weights.
      W::input(
          [&](int ky, int kx) {
            const int iy = iy0 + ky, ix = ix0 + kx;
            if (iy < 0 || iy >= h || ix < 0 || ix >= w) return zp;
            const uint8_t* src = image + (static_cast<size_t>(iy) * w + ix) * c + c0;
            alignas(16) uint8_t bytes[16] = {};
            if (nch < 16) src = static_cast<const uint8_t*>(std::memcpy(bytes, src, nch));
            return _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src)));
          },
          store);
    }
  }
}

// Positions [xi0, xi1)'s K loops for a strip of R tiles against one panel, over `npairs` K pairs
// from v's and panel's first, into M [P][5][16] (rows of V are row_pairs words long, a position's
// weights slab elements): one call for all of a strip's positions where C is small, the
// accumulators stored straight into M (at C = 64 a position is only 32 K pairs, and a call plus a
// copy of the accumulators per position cost ~10 %).
template <int R>
__attribute__((noinline)) void strip_gemm(const int16_t* v, size_t v_position_elems, int row_pairs,
                                          const int16_t* panel, size_t slab, int npairs, int xi0, int xi1, int32_t* m) {
  for (int xi = xi0; xi < xi1; ++xi) {
    const int32_t* arow[R];
#pragma GCC unroll 5
    for (int r = 0; r < R; ++r) arow[r] = reinterpret_cast<const int32_t*>(v + xi * v_position_elems) + r * row_pairs;
    __m256i acc[R][2];
#pragma GCC unroll 5
    for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_si256();
    // Prefetches the next position's weights beside each pair's (the last: the next panel's).
    vpmaddwd_loop<R>(arow, reinterpret_cast<const int8_t*>(panel + xi * slab), npairs, static_cast<ptrdiff_t>(slab) * 2,
                     acc);
#pragma GCC unroll 5
    for (int r = 0; r < R; ++r) {
      _mm256_store_si256(reinterpret_cast<__m256i*>(m + (xi * kMR + r) * kNR), acc[r][0]);
      _mm256_store_si256(reinterpret_cast<__m256i*>(m + (xi * kMR + r) * kNR + 8), acc[r][1]);
    }
  }
}

using StripGemm = void (*)(const int16_t*, size_t, int, const int16_t*, size_t, int, int, int, int32_t*);
constexpr StripGemm kStripGemms[kMR + 1] = {nullptr, strip_gemm<1>, strip_gemm<2>, strip_gemm<3>, strip_gemm<4>,
                                            strip_gemm<5>};

// The output transform of a strip's tiles (m: the strip's M) for one panel and one channel chunk
// of `of`: the first chunk's sums go to s (when there are more), later ones are added to them, and
// the last chunk's totals go through the epilogue, a row of up to T pixels at a time.
template <class W>
void store_strip(const WinogradTask& t, int first_tile, int rows, const int32_t* m, int col, int valid, int32_t* s,
                 int chunk, int of) {
  constexpr int T = W::kT, kPx = T * T;
  const int tiles_w = (t.ow + T - 1) / T, tiles_h = (t.oh + T - 1) / T;
  const int64_t per_image = static_cast<int64_t>(tiles_h) * tiles_w;
  const size_t xi_stride = static_cast<size_t>(kMR) * kNR;
  const bool last = chunk + 1 == of;
  for (int r = 0; r < rows; ++r) {
    __m256i rlo[T][W::kCols], rhi[T][W::kCols];
    const int32_t* mr = m + r * kNR;
    W::output_columns([&](int xi) { return _mm256_load_si256(reinterpret_cast<const __m256i*>(mr + xi * xi_stride)); },
                      rlo);
    W::output_columns(
        [&](int xi) { return _mm256_load_si256(reinterpret_cast<const __m256i*>(mr + xi * xi_stride + 8)); }, rhi);
    const int64_t tile = t.tile0 + first_tile + r;
    const int64_t img = tile / per_image;
    const int oy = T * static_cast<int>(tile % per_image / tiles_w), ox = T * static_cast<int>(tile % tiles_w);
    uint8_t* out = t.y + ((static_cast<size_t>(img) * t.oh + oy) * t.ow + ox) * t.oc + col;
    const int across = std::min(T, t.ow - ox);
    for (int dy = 0; dy < T; ++dy) {
      __m256i lo[T], hi[T];
      W::output_row(rlo[dy], lo);
      W::output_row(rhi[dy], hi);
      if (of > 1) {
        __m256i* sums = reinterpret_cast<__m256i*>(s + (r * kPx + dy * T) * kNR);
        for (int dx = 0; dx < T; ++dx) {
          if (chunk > 0) {
            lo[dx] = _mm256_add_epi32(lo[dx], _mm256_load_si256(sums + 2 * dx));
            hi[dx] = _mm256_add_epi32(hi[dx], _mm256_load_si256(sums + 2 * dx + 1));
          }
          if (!last) {
            _mm256_store_si256(sums + 2 * dx, lo[dx]);
            _mm256_store_si256(sums + 2 * dx + 1, hi[dx]);
          }
        }
      }
      if (!last || oy + dy >= t.oh) continue;
      __m256i px[T][2];
      for (int dx = 0; dx < T; ++dx) px[dx][0] = lo[dx], px[dx][1] = hi[dx];
      uint8_t* row = out + static_cast<size_t>(dy) * t.ow * t.oc;
      if (across == T) {
        store_rows16<T>(px, t.ep, col, row, static_cast<size_t>(t.oc), valid);
      } else {  // the image's last tile column: fewer pixels
        for (int dx = 0; dx < across; ++dx) {
          __m256i one[1][2] = {{px[dx][0], px[dx][1]}};
          store_rows16<1>(one, t.ep, col, row + static_cast<size_t>(dx) * t.oc, static_cast<size_t>(t.oc), valid);
        }
      }
    }
  }
}

// Two orders, by the size of a panel's weights (P positions x C x 16 channels x 2 bytes):
// - up to kUGroupBudget (F2 with C <= 256, F3 with C <= 162, F4 with C <= 112, every S2 layer):
//   per group of panels that fit it, strip by strip, each panel's P K loops, then the strip's
//   output transform while its M is in L1. A strip's V (5 short rows per position at small C,
//   which the hardware prefetchers do not follow) stays in L1 across the group's panels, whose
//   weights stream in order from L2.
// - larger (F2 with C > 256, a network's last and widest layers, few tiles, weights from memory;
//   F3 with C > 162, F4 with C > 112): per panel and channel chunk, position by position, every
//   strip's K loop, so all strips use a position's weights while the next position's are
//   prefetched; then every strip's output transform. Strip-outer, the first strip would wait
//   for the whole panel.
template <class W>
void run_as(const WinogradTask& t) {
  constexpr int P = W::kP;
  int16_t* v = static_cast<int16_t*>(t.scratch);
  int32_t* m = reinterpret_cast<int32_t*>(static_cast<uint8_t*>(t.scratch) + v_bytes<W>(t.c));
  int32_t* s = m + strips_held<W>(t.c) * kStripMBytes<W> / 4;
  transform_tiles<W>(t, v);
  const int kp = pairs(t.c);
  const size_t row_elems = static_cast<size_t>(kp) * 2, position_elems = t.tiles * row_elems;
  const size_t slab = static_cast<size_t>(kp) * kNR * 2;  // a position's weights in a panel
  const size_t strip_m = kStripMBytes<W> / 4;
  // Strips of near-equal rows (16 tiles: 4 of 4, not 5 + 5 + 5 + 1, whose 1-row K loop runs at a
  // fifth of the rate).
  const int strips = (t.tiles + kMR - 1) / kMR;
  auto first = [&](int s) { return static_cast<int>(static_cast<int64_t>(t.tiles) * s / strips); };
  auto rows = [&](int s) { return first(s + 1) - first(s); };
  auto panel = [&](int p) { return t.u + static_cast<size_t>(p) * panel_elems<W>(t.c); };
  auto valid = [&](int p) { return std::min(kNR, t.oc - p * kNR); };
  const int of = chunks<W>(t.c);
  auto chunk_pair = [&](int ch) { return static_cast<int>(static_cast<int64_t>(kp) * ch / of); };
  // Strip st's K loops of chunk ch against panel p, positions [xi0, xi1), into m.
  auto gemm = [&](int st, int p, int ch, int xi0, int xi1, int32_t* m_strip) {
    const int p0 = chunk_pair(ch);
    kStripGemms[rows(st)](v + first(st) * row_elems + 2 * p0, position_elems, kp, panel(p) + p0 * kNR * 2, slab,
                          chunk_pair(ch + 1) - p0, xi0, xi1, m_strip);
  };
  if (wide_panels<W>(t.c)) {
    const size_t strip_s = kStripSBytes<W> / 4;
    for (int p = t.panel0; p < t.panel0 + t.panels; ++p)
      for (int ch = 0; ch < of; ++ch) {
        for (int xi = 0; xi < P; ++xi)
          for (int st = 0; st < strips; ++st) gemm(st, p, ch, xi, xi + 1, m + st * strip_m);
        for (int st = 0; st < strips; ++st)
          store_strip<W>(t, first(st), rows(st), m + st * strip_m, p * kNR, valid(p), s + st * strip_s, ch, of);
      }
    return;
  }
  const int group = std::clamp(static_cast<int>(kUGroupBudget / (panel_elems<W>(t.c) * 2)), 1, t.panels);
  for (int g = t.panel0; g < t.panel0 + t.panels; g += group) {
    const int g_end = std::min(g + group, t.panel0 + t.panels);
    for (int st = 0; st < strips; ++st)
      for (int p = g; p < g_end; ++p)
        for (int ch = 0; ch < of; ++ch) {
          gemm(st, p, ch, 0, P, m);
          store_strip<W>(t, first(st), rows(st), m, p * kNR, valid(p), s, ch, of);
        }
  }
}

void run(const WinogradTask& t) {
  with_variant(t.c, t.stride, [&](auto w) { run_as<decltype(w)>(t); });
}

constexpr WinogradKernels kKernels = {"avx2",         kNR,  tile, variant_name, block_tiles, packed_bytes, pack,
                                      scratch_bytes, run};

}  // namespace

const WinogradKernels* winograd_kernels() { return &kKernels; }

}  // namespace qr::avx2
