// Depthwise convolution for AVX2 on tap quads: vpmaddubsw on pairs of taps, vpmaddwd by ones on pairs
// of pairs (layout: docs/kernels.md, "depthwise"). Exact only under the bound in
// dwconv_avx2_maddubs.h, which pack_quads checks.
//
// Per quad of taps (t0..t3) and 32 channels of one pixel: the four taps' 32 input bytes are
// interleaved in pairs (vpunpck{l,h}bw: t0 with t1, t2 with t3), vpmaddubsw gives x0 w0 + x1 w1 and
// x2 w2 + x3 w3 per channel as int16, vpunpck{l,h}wd puts each channel's two sums side by side and
// vpmaddwd by ones adds them into int32. 128 MACs in 20 instructions, where the vpmaddwd kernel
// needs 48. The accumulators hold the channels in dwconv_quad_order.h's order, which the packed
// weights follow.
// Registers for 2 pixels: 8 accumulators, 4 input vectors, ones, 2 temporaries.
#include "kernels/avx2/dwconv_avx2_maddubs.h"

#include <immintrin.h>

#include <cstdio>
#include <cstdlib>

#include "kernels/avx2/dwconv_quad_order.h"
#include "kernels/avx2/epilogue_avx2.h"

namespace qr::avx2::dw_maddubs {
namespace {

constexpr int kQuadBytes = 4 * 32;  // per quad of taps and block: 4 vectors of 32 bytes
constexpr int kPairBound = 128;

int quads(int taps) { return (taps + 3) / 4; }

// The byte of the layout holding weight (tap t of the quad, channel ch of the block), per the
// unpack order (dwconv_quad_order.h): vector (t / 2) * 2 + (ch / 8) % 2, lane ch / 16, pair ch % 8,
// byte t % 2.
size_t quad_offset(int t, int ch) {
  const int vec = (t / 2) * 2 + (ch / 8) % 2;
  return static_cast<size_t>(vec) * 32 + (ch / 16) * 16 + (ch % 8) * 2 + t % 2;
}

inline __m256i loadu(const uint8_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
inline __m256i load_w(const int8_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }

// Adds int16 sums in the unpacked order (lo: channels 0-7 | 16-23, hi: 8-15 | 24-31) into the four
// accumulators: each channel's two sums (p01, p23) side by side, added into int32 by vpmaddwd with
// ones.
inline void add_sums(__m256i (&acc)[4], __m256i p01lo, __m256i p01hi, __m256i p23lo, __m256i p23hi, __m256i ones) {
  acc[0] = _mm256_add_epi32(acc[0], _mm256_madd_epi16(_mm256_unpacklo_epi16(p01lo, p23lo), ones));
  acc[1] = _mm256_add_epi32(acc[1], _mm256_madd_epi16(_mm256_unpackhi_epi16(p01lo, p23lo), ones));
  acc[2] = _mm256_add_epi32(acc[2], _mm256_madd_epi16(_mm256_unpacklo_epi16(p01hi, p23hi), ones));
  acc[3] = _mm256_add_epi32(acc[3], _mm256_madd_epi16(_mm256_unpackhi_epi16(p01hi, p23hi), ones));
}

// add_sums with no p23 (a quad of one or two taps): each int16 sign-extended by a shift, which
// spares the multiply.
inline void add_sums(__m256i (&acc)[4], __m256i p01lo, __m256i p01hi) {
  const __m256i z = _mm256_setzero_si256();
  acc[0] = _mm256_add_epi32(acc[0], _mm256_srai_epi32(_mm256_unpacklo_epi16(z, p01lo), 16));
  acc[1] = _mm256_add_epi32(acc[1], _mm256_srai_epi32(_mm256_unpackhi_epi16(z, p01lo), 16));
  acc[2] = _mm256_add_epi32(acc[2], _mm256_srai_epi32(_mm256_unpacklo_epi16(z, p01hi), 16));
  acc[3] = _mm256_add_epi32(acc[3], _mm256_srai_epi32(_mm256_unpackhi_epi16(z, p01hi), 16));
}

// One quad of taps for P pixels (pixel j's tap i at tap[i] + j * step). kValid: the quad's taps that
// exist (1-4). The others have zero weights: a third and fourth are not computed (p23 = 0), and a
// lone tap pairs with itself.
template <int P, int kValid>
inline void quad(const uint8_t* const (&tap)[4], ptrdiff_t step, const int8_t* w, __m256i ones, __m256i (&acc)[P][4]) {
#pragma GCC unroll 2
  for (int j = 0; j < P; ++j) {
    const __m256i x0 = loadu(tap[0] + j * step), x1 = kValid > 1 ? loadu(tap[1] + j * step) : x0;
    const __m256i p01lo = _mm256_maddubs_epi16(_mm256_unpacklo_epi8(x0, x1), load_w(w));
    const __m256i p01hi = _mm256_maddubs_epi16(_mm256_unpackhi_epi8(x0, x1), load_w(w + 32));
    if constexpr (kValid > 2) {
      const __m256i x2 = loadu(tap[2] + j * step), x3 = kValid > 3 ? loadu(tap[3] + j * step) : x2;
      const __m256i p23lo = _mm256_maddubs_epi16(_mm256_unpacklo_epi8(x2, x3), load_w(w + 64));
      const __m256i p23hi = _mm256_maddubs_epi16(_mm256_unpackhi_epi8(x2, x3), load_w(w + 96));
      add_sums(acc[j], p01lo, p01hi, p23lo, p23hi, ones);
    } else {
      add_sums(acc[j], p01lo, p01hi);
    }
  }
}

// P pixels (pixel j at base + j * step, output at out + j * out_step). kTaps > 0 fixes the tap
// count at compile time (3x3: two quads and a lone tap), so the quad loop unrolls.
template <int P, int kTaps>
inline void block(uintptr_t base, ptrdiff_t step, const uintptr_t* off, int taps_rt, int c0, const int8_t* w,
                  const QuadBias& bias, const float* mult, const RequantConsts& k, uint8_t* out, ptrdiff_t out_step) {
  const int taps = kTaps > 0 ? kTaps : taps_rt;
  const __m256i ones = _mm256_set1_epi16(1);
  __m256i acc[P][4];
  for (int j = 0; j < P; ++j)
    for (int v = 0; v < 4; ++v) acc[j][v] = bias.v[v];
  const int nq = quads(taps);
#pragma GCC unroll 4
  for (int q = 0; q < nq; ++q, w += kQuadBytes) {
    // Taps past the last one (zero weights) read the last tap again: a valid address.
    const uint8_t* tap[4];
    for (int i = 0; i < 4; ++i) {
      const int t = 4 * q + i < taps ? 4 * q + i : taps - 1;
      tap[i] = reinterpret_cast<const uint8_t*>(base + off[t]) + c0;
    }
    switch (taps - 4 * q) {
      case 1: quad<P, 1>(tap, step, w, ones, acc); break;
      case 2: quad<P, 2>(tap, step, w, ones, acc); break;
      case 3: quad<P, 3>(tap, step, w, ones, acc); break;
      default: quad<P, 4>(tap, step, w, ones, acc); break;
    }
  }
  for (int j = 0; j < P; ++j)
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + j * out_step),
                        finish_quads(acc[j][0], acc[j][1], acc[j][2], acc[j][3], mult, k));
}

template <int kTaps>
void block32_taps(int pixels, uintptr_t base, ptrdiff_t step, const uintptr_t* off, int taps, int c0,
                  const int8_t* quads, const Epilogue& ep, uint8_t* out, ptrdiff_t out_step) {
  const RequantConsts k(ep);
  const QuadBias bias(ep.bias + c0);
  const float* mult = ep.mult + c0;
  out += c0;
  int j = 0;
  for (; j + 2 <= pixels; j += 2)
    block<2, kTaps>(base + j * step, step, off, taps, c0, quads, bias, mult, k, out + j * out_step, out_step);
  if (j < pixels) block<1, kTaps>(base + j * step, step, off, taps, c0, quads, bias, mult, k, out + j * out_step, out_step);
}

}  // namespace

size_t quads_bytes(int c, int taps) { return static_cast<size_t>(c / kBlock) * quads(taps) * kQuadBytes; }

bool pack_quads(const int8_t* w, int c, int taps, int8_t* dst, char* note, size_t note_size) {
  const int blocks = c / kBlock, nq = quads(taps);
  // The pairs the kernel multiplies: taps (4q, 4q + 1) and (4q + 2, 4q + 3) of each channel (a tap
  // past the last has weight 0). Channels of a tail block never run here.
  long over = 0, pairs = 0;
  for (int ch = 0; ch < blocks * kBlock; ++ch)
    for (int t = 0; t < taps; t += 2, ++pairs)
      over += std::abs(w[ch * taps + t]) + (t + 1 < taps ? std::abs(w[ch * taps + t + 1]) : 0) > kPairBound;
  if (blocks == 0 || over > 0) {
    if (blocks == 0)
      std::snprintf(note, note_size, "vpmaddwd: fewer than %d channels", kBlock);
    else
      std::snprintf(note, note_size, "vpmaddwd: %ld of %ld tap pairs have |w1|+|w2| > %d", over, pairs, kPairBound);
    return false;
  }
  for (int b = 0; b < blocks; ++b)
    for (int q = 0; q < nq; ++q) {
      int8_t* quad = dst + (static_cast<size_t>(b) * nq + q) * kQuadBytes;
      for (int i = 0; i < 4; ++i)
        for (int ch = 0; ch < kBlock; ++ch) {
          const int t = 4 * q + i;
          quad[quad_offset(i, ch)] = t < taps ? w[(b * kBlock + ch) * taps + t] : 0;
        }
    }
  if (c % kBlock)
    std::snprintf(note, note_size, "vpmaddubsw tap quads: every tap pair has |w1|+|w2| <= %d; %d tail channels on vpmaddwd",
                  kPairBound, c % kBlock);
  else
    std::snprintf(note, note_size, "vpmaddubsw tap quads: every tap pair has |w1|+|w2| <= %d", kPairBound);
  return true;
}

void block32(int pixels, uintptr_t base, ptrdiff_t step, const uintptr_t* off, int taps, int c0,
             const int8_t* quads, const Epilogue& ep, uint8_t* out, ptrdiff_t out_step) {
  if (taps == 9)
    block32_taps<9>(pixels, base, step, off, taps, c0, quads, ep, out, out_step);
  else
    block32_taps<0>(pixels, base, step, off, taps, c0, quads, ep, out, out_step);
}

}  // namespace qr::avx2::dw_maddubs
