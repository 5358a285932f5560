// Depthwise convolution with 256-bit vpdpbusd on tap quads (AVX-VNNI; layout: docs/kernels.md,
// "depthwise"): avx512_vnni's tap quads on ymm. Per quad of taps (t0..t3) and 32 channels of one
// pixel, the four taps' input bytes are interleaved (vpunpck{l,h}bw t0 with t1 and t2 with t3, then
// vpunpck{l,h}wd of those) so each int32 lane holds (x_t0, x_t1, x_t2, x_t3) of one channel, and one
// vpdpbusd adds the four products: 32 MACs per instruction, exact for any int8 weights (no
// intermediate saturation), where avx2 needs vpmaddubsw + vpmaddwd under a weight bound, or vpmaddwd
// on tap pairs. The accumulators hold the channels in dwconv_quad_order.h's order. Every block of 32
// channels runs here; a last block of fewer reads and writes only its own bytes. Three encodings, as
// gemm_avxvnni.cc: VEX (avx_vnni), EVEX (avx_vnni_evex), SIMDe (avx_vnni_emulated).
// Registers for 2 pixels: 8 accumulators, 4 input vectors, 4 unpack temporaries; the weights are
// vpdpbusd's memory operand.
#include "kernels/avxvnni/vnni256.h"

#include <cstdio>
#include <cstring>

#include "kernels/avx2/avx2.h"
#include "kernels/avx2/dwconv_quad_order.h"
#include "kernels/avx2/epilogue_avx2.h"
#include "kernels/avxvnni/avxvnni.h"
#include "kernels/dwconv_taps.h"

namespace qr::QR_ISA_NS {
namespace {

constexpr int kBlock = 32;              // channels per block
constexpr int kQuadBytes = 4 * kBlock;  // per quad of taps and block: 4 vectors of 32 bytes

int quads(int taps) { return (taps + 3) / 4; }
int blocks(int c) { return (c + kBlock - 1) / kBlock; }

size_t quads_bytes(int c, int kh, int kw) { return static_cast<size_t>(blocks(c)) * quads(kh * kw) * kQuadBytes; }

// [block][quad][vector r][lane L][dword k][tap b] int8: channel 32 block + 16 L + 4 r + k, tap 4 quad + b;
// channels past c and taps past the last hold 0.
bool pack_quads(const int8_t* w, int c, int kh, int kw, int8_t* dst, char* note, size_t note_size) {
  const int taps = kh * kw;
  const int nq = quads(taps);
  for (int ch = 0; ch < c; ++ch) {
    const int b = ch / kBlock, i = ch % kBlock, lane = i / 16, r = i % 16 / 4, k = i % 4;
    for (int t = 0; t < taps; ++t)
      dst[(static_cast<size_t>(b) * nq + t / 4) * kQuadBytes + r * kBlock + lane * 16 + k * 4 + t % 4] =
          w[static_cast<size_t>(ch) * taps + t];
  }
  std::snprintf(note, note_size, "vpdpbusd on tap quads");
  return true;
}

// The first `valid` (< 32) bytes at p, the rest zero; nothing past them is read.
inline __m256i load_part(const uint8_t* p, int valid) {
  if (valid == 16) return _mm256_zextsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  alignas(32) uint8_t tmp[kBlock] = {};
  std::memcpy(tmp, p, valid);
  return _mm256_load_si256(reinterpret_cast<const __m256i*>(tmp));
}

// 32 channels (kFull) or the first `valid` of them, at p.
template <bool kFull>
inline __m256i load_x(const uint8_t* p, int valid) {
  if constexpr (kFull) return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return load_part(p, valid);
}

inline __m256i load_w(const int8_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }

// P pixels (pixel j's tap t at base + j * step + off[t] + c0, its output at out + j * out_step) of
// the block at c0 (w: its quads; bias and mult from c0). kTaps > 0 fixes the tap count at compile
// time (3x3: two quads and a lone tap), so the quad loop unrolls; a quad's missing taps read nothing.
template <int P, int kTaps, bool kFull>
inline void block(uintptr_t base, ptrdiff_t step, const uintptr_t* off, int taps_rt, int c0, int valid,
                  const int8_t* w, const QuadBias& bias, const float* mult, const RequantConsts& k, uint8_t* out,
                  ptrdiff_t out_step) {
  const int taps = kTaps > 0 ? kTaps : taps_rt;
  __m256i acc[P][4];
  for (int j = 0; j < P; ++j)
    for (int v = 0; v < 4; ++v) acc[j][v] = bias.v[v];
  const int nq = quads(taps);
#pragma GCC unroll 7
  for (int q = 0; q < nq; ++q, w += kQuadBytes) {
#pragma GCC unroll 2
    for (int j = 0; j < P; ++j) {
      __m256i x[4];
#pragma GCC unroll 4
      for (int i = 0; i < 4; ++i)
        x[i] = 4 * q + i < taps
                   ? load_x<kFull>(reinterpret_cast<const uint8_t*>(base + j * step + off[4 * q + i]) + c0, valid)
                   : _mm256_setzero_si256();
      const __m256i lo01 = _mm256_unpacklo_epi8(x[0], x[1]), hi01 = _mm256_unpackhi_epi8(x[0], x[1]);
      const __m256i lo23 = _mm256_unpacklo_epi8(x[2], x[3]), hi23 = _mm256_unpackhi_epi8(x[2], x[3]);
      acc[j][0] = QR_DPBUSD256(acc[j][0], _mm256_unpacklo_epi16(lo01, lo23), load_w(w));
      acc[j][1] = QR_DPBUSD256(acc[j][1], _mm256_unpackhi_epi16(lo01, lo23), load_w(w + 32));
      acc[j][2] = QR_DPBUSD256(acc[j][2], _mm256_unpacklo_epi16(hi01, hi23), load_w(w + 64));
      acc[j][3] = QR_DPBUSD256(acc[j][3], _mm256_unpackhi_epi16(hi01, hi23), load_w(w + 96));
    }
  }
  for (int j = 0; j < P; ++j) {
    const __m256i bytes = finish_quads(acc[j][0], acc[j][1], acc[j][2], acc[j][3], mult, k);
    uint8_t* o = out + j * out_step;
    if constexpr (kFull) {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(o), bytes);
    } else {
      alignas(32) uint8_t tmp[kBlock];
      _mm256_store_si256(reinterpret_cast<__m256i*>(tmp), bytes);
      std::memcpy(o, tmp, valid);
    }
  }
}

template <int kTaps>
void dwconv_quads(const DwConvArgs& a) {
  const RequantConsts k(a.ep);
  // Locals, not a.*: stores through uint8_t* may alias anything, which would force reloads.
  const int taps = kTaps > 0 ? kTaps : a.kh * a.kw, channels = a.c;
  const size_t block_bytes = static_cast<size_t>(quads(taps)) * kQuadBytes;
  const int8_t* weights = a.extra_weights;
  const int32_t* bias = a.ep.bias;  // bias and mult hold c rounded up to 64 entries
  const float* mult = a.ep.mult;
  // `pixels` pixels of the block at c0, two at a time.
  auto channel_block = [&](int pixels, uintptr_t base, ptrdiff_t step, const uintptr_t* off, uint8_t* out, int c0) {
    const QuadBias b(bias + c0);
    const int8_t* w = weights + static_cast<size_t>(c0 / kBlock) * block_bytes;
    const int valid = channels - c0 < kBlock ? channels - c0 : kBlock;
    const float* m = mult + c0;
    uint8_t* o = out + c0;
    int j = 0;
    if (valid == kBlock) {
      for (; j + 2 <= pixels; j += 2)
        block<2, kTaps, true>(base + j * step, step, off, taps, c0, valid, w, b, m, k, o + j * channels, channels);
      if (j < pixels)
        block<1, kTaps, true>(base + j * step, step, off, taps, c0, valid, w, b, m, k, o + j * channels, channels);
    } else {
      for (; j < pixels; ++j)
        block<1, kTaps, false>(base + j * step, step, off, taps, c0, valid, w, b, m, k, o + j * channels, channels);
    }
  };
  for_each_pixel_run(
      a,
      // A run's pixels block by block: the block's weights stay in L1 across the run.
      [&](const uint8_t* corner, ptrdiff_t step, int count, uint8_t* out) {
        for (int c0 = 0; c0 < channels; c0 += kBlock)
          channel_block(count, reinterpret_cast<uintptr_t>(corner), step, a.tap_offsets, out, c0);
      },
      [&](const PixelTaps& px, uint8_t* out) {
        for (int c0 = 0; c0 < channels; c0 += kBlock) channel_block(1, px.base, 0, px.offset, out, c0);
      });
}

// Weights not packed in quads (extra_weights null) take avx2's kernel on the plain layout.
void dwconv(const DwConvArgs& a) {
  if (!a.extra_weights) return avx2::dwconv_kernels()->dwconv(a);
  const int taps = a.kh * a.kw;
  if (taps == 9) return dwconv_quads<9>(a);
  if (taps == 25) return dwconv_quads<25>(a);
  dwconv_quads<0>(a);
}

constexpr DwConvKernels kKernels = {QR_ISA_NAME, dwconv, quads_bytes, pack_quads};

}  // namespace

const DwConvKernels* dwconv_kernels() { return &kKernels; }

}  // namespace qr::QR_ISA_NS
