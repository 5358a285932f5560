// Depthwise convolution for AVX2, 16 channels per step (layout: docs/kernels.md, "depthwise"). Blocks
// of 32 channels whose weights pass the pair bound go to the tap-quad kernel instead
// (dwconv_avx2_maddubs.cc); this file keeps the exact-for-any-weights vpmaddwd kernel.
//
// Register map of a run (4 pixels of one output row, 16 channels): 8 ymm accumulators (pixel j,
// channels c0..c0+7 and c0+8..c0+15), the two ymm of int16 weight pairs of a pair of taps, loaded
// once and shared by the 4 pixels, and each pixel's two taps of 16 input bytes interleaved
// (vpunpck{l,h}bw) and widened to int16: vpmaddwd then adds x(t) w(t) + x(t+1) w(t+1) per channel,
// exactly (255 * 127 * 2 fits int32), so every multiply lane carries two products.
// A channel tail uses the plain layout: lanes (x, 0) against (w, its sign extension), one product
// per lane.
#include <immintrin.h>

#include <cstring>

#include "kernels/avx2/avx2.h"
#include "kernels/avx2/dwconv_avx2_maddubs.h"
#include "kernels/avx2/epilogue_avx2.h"
#include "kernels/dwconv_taps.h"

namespace qr::avx2 {
namespace {

constexpr int kCB = 16;   // channels per step
constexpr int kRun = 4;   // pixels per run

// The second weight layout (DwConvKernels::pack_extra_weights): a 64-byte header whose first int32
// says which, then the tap quads of the vpmaddubsw kernel when every pair allows them, else the tap
// pairs of the vpmaddwd runs: per block of 16 channels and pair u of taps (2u, 2u + 1; an odd
// count's last tap pairs with itself at weight 0), [16 channels][w(2u), w(2u + 1)] int16, 64 bytes.
constexpr int32_t kTapQuads = 0, kTapPairs = 1;
constexpr size_t kHeaderBytes = 64;
constexpr size_t kPairBytes = kCB * 4;

int tap_pairs(int taps) { return (taps + 1) / 2; }

size_t pairs_bytes(int c, int taps) { return static_cast<size_t>(c / kCB) * tap_pairs(taps) * kPairBytes; }

size_t extra_bytes(int c, int kh, int kw) {
  const int taps = kh * kw;
  const size_t quads = dw_maddubs::quads_bytes(c, taps), pairs = pairs_bytes(c, taps);
  return kHeaderBytes + (quads > pairs ? quads : pairs);
}

void pack_pairs(const int8_t* w, int c, int taps, int16_t* dst) {
  const int np = tap_pairs(taps);
  for (int b = 0; b < c / kCB; ++b)
    for (int u = 0; u < np; ++u)
      for (int ch = 0; ch < kCB; ++ch)
        for (int h = 0; h < 2; ++h) {
          const int t = 2 * u + h;
          dst[((static_cast<size_t>(b) * np + u) * kCB + ch) * 2 + h] = t < taps ? w[(b * kCB + ch) * taps + t] : 0;
        }
}

// The note is pack_quads': which kernel and why (the vpmaddwd kernel is the tap-pair one).
bool pack_extra(const int8_t* w, int c, int kh, int kw, int8_t* dst, char* note, size_t note_size) {
  const int taps = kh * kw;
  int32_t kind = kTapQuads;
  if (!dw_maddubs::pack_quads(w, c, taps, dst + kHeaderBytes, note, note_size)) {
    kind = kTapPairs;
    pack_pairs(w, c, taps, reinterpret_cast<int16_t*>(dst + kHeaderBytes));
  }
  std::memcpy(dst, &kind, sizeof kind);
  return true;
}

// The first `count` (<= 16) bytes at p, widened to int32; the rest are zero and never read.
inline void load16(const uint8_t* p, int count, __m256i& lo, __m256i& hi) {
  __m128i v;
  if (count >= kCB) {
    v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  } else {
    alignas(16) uint8_t tmp[kCB] = {};
    std::memcpy(tmp, p, count);
    v = _mm_load_si128(reinterpret_cast<const __m128i*>(tmp));
  }
  lo = _mm256_cvtepu8_epi32(v);
  hi = _mm256_cvtepu8_epi32(_mm_srli_si128(v, 8));
}

// 8 bytes at p widened to int32 (one vpmovzxbd with a memory operand).
inline __m256i load8_epi32(const uint8_t* p) {
  return _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
}

inline __m256i load_epi32(const int32_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }

// acc0/acc1 (channels 0-7, 8-15) += x0 w(2u) + x1 w(2u + 1): 16 bytes of each tap at x0 and x1, one
// pair's weights w0/w1 (kTapPairs layout).
inline void madd_tap_pair(const uint8_t* x0, const uint8_t* x1, __m256i w0, __m256i w1, __m256i& acc0, __m256i& acc1) {
  const __m128i v0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(x0));
  const __m128i v1 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(x1));
  acc0 = _mm256_add_epi32(acc0, _mm256_madd_epi16(_mm256_cvtepu8_epi16(_mm_unpacklo_epi8(v0, v1)), w0));
  acc1 = _mm256_add_epi32(acc1, _mm256_madd_epi16(_mm256_cvtepu8_epi16(_mm_unpackhi_epi8(v0, v1)), w1));
}

// kTaps > 0 fixes the tap count at compile time (3x3, the common case), so the tap loop unrolls.
template <int kTaps>
void dwconv_taps(const DwConvArgs& a) {
  // Locals, not a.*: stores through uint8_t* may alias anything, which would force reloads.
  const int taps = kTaps > 0 ? kTaps : a.kh * a.kw, channels = a.c;
  const int full = channels / kCB * kCB;  // channels the runs do; a tail goes pixel by pixel
  const size_t c_stride = a.c_stride;
  const int32_t *weights = a.weights, *bias = a.ep.bias;
  const float* mult = a.ep.mult;
  const uintptr_t* offsets = a.tap_offsets;
  const RequantConsts consts(a.ep);
  // Blocks of 32 channels go to the tap-quad kernel when the weights allow it (quads non-null); else
  // whole blocks of 16 take the tap pairs (pairs non-null).
  int32_t kind = kTapPairs;
  if (a.extra_weights) std::memcpy(&kind, a.extra_weights, sizeof kind);
  const int8_t* quads = a.extra_weights && kind == kTapQuads ? a.extra_weights + kHeaderBytes : nullptr;
  const int16_t* pairs =
      a.extra_weights && kind == kTapPairs ? reinterpret_cast<const int16_t*>(a.extra_weights + kHeaderBytes) : nullptr;
  const int npairs = tap_pairs(taps);
  auto pair_weights = [&](int c0) { return pairs + static_cast<size_t>(c0 / kCB) * npairs * (kPairBytes / 2); };
  const int quad_channels = quads ? channels / dw_maddubs::kBlock * dw_maddubs::kBlock : 0;
  const size_t quad_block_bytes = dw_maddubs::quads_bytes(dw_maddubs::kBlock, taps);
  const Epilogue ep = a.ep;

  // Channels [c0, c0 + count) of one pixel, count <= 16.
  auto pixel = [&](const PixelTaps& px, uint8_t* out, int c0, int count) {
    __m256i acc0 = _mm256_setzero_si256(), acc1 = _mm256_setzero_si256();
    if (pairs && count == kCB) {
      const int16_t* wp = pair_weights(c0);
      for (int u = 0; u < npairs; ++u)
        madd_tap_pair(px.tap(2 * u) + c0, px.tap(2 * u + 1 < taps ? 2 * u + 1 : 2 * u) + c0,
                      _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wp + u * kCB * 2)),
                      _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wp + u * kCB * 2 + kCB)), acc0, acc1);
    } else {
      for (int t = 0; t < taps; ++t) {
        __m256i x0, x1;
        load16(px.tap(t) + c0, count, x0, x1);
        const int32_t* w = weights + t * c_stride + c0;
        acc0 = _mm256_add_epi32(acc0, _mm256_madd_epi16(x0, load_epi32(w)));
        acc1 = _mm256_add_epi32(acc1, _mm256_madd_epi16(x1, load_epi32(w + 8)));
      }
    }
    acc0 = _mm256_add_epi32(acc0, load_epi32(bias + c0));
    acc1 = _mm256_add_epi32(acc1, load_epi32(bias + c0 + 8));
    const __m128i q = requantize16(acc0, acc1, mult + c0, consts);
    if (count == kCB) {
      _mm_storeu_si128(reinterpret_cast<__m128i*>(out + c0), q);
    } else {
      alignas(16) uint8_t tmp[kCB];
      _mm_store_si128(reinterpret_cast<__m128i*>(tmp), q);
      std::memcpy(out + c0, tmp, count);
    }
  };
  auto single = [&](const PixelTaps& px, uint8_t* out) {
    for (int c0 = 0; c0 < quad_channels; c0 += dw_maddubs::kBlock)
      dw_maddubs::block32(1, px.base, 0, px.offset, taps, c0, quads + c0 / dw_maddubs::kBlock * quad_block_bytes, ep,
                          out, 0);
    for (int c0 = quad_channels; c0 < channels; c0 += kCB)
      pixel(px, out, c0, channels - c0 < kCB ? channels - c0 : kCB);
  };
  // Runs of kRun pixels, 16 channels at a time, from channel c0.
  auto run_madd = [&](const uint8_t* corner, ptrdiff_t step, uint8_t* out, int c0) {
    for (; c0 < full; c0 += kCB) {
      __m256i acc[kRun][2];
      for (int j = 0; j < kRun; ++j) acc[j][0] = acc[j][1] = _mm256_setzero_si256();
      if (pairs) {
        const int16_t* wp = pair_weights(c0);
#pragma GCC unroll 5
        for (int u = 0; u < npairs; ++u) {
          const __m256i w0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wp + u * kCB * 2));
          const __m256i w1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wp + u * kCB * 2 + kCB));
          // An odd count's last tap pairs with itself; its second weight is 0.
          const uint8_t* x0 = corner + offsets[2 * u] + c0;
          const uint8_t* x1 = corner + offsets[2 * u + 1 < taps ? 2 * u + 1 : 2 * u] + c0;
#pragma GCC unroll 4
          for (int j = 0; j < kRun; ++j) madd_tap_pair(x0 + j * step, x1 + j * step, w0, w1, acc[j][0], acc[j][1]);
        }
      } else {
#pragma GCC unroll 9
        for (int t = 0; t < taps; ++t) {
          const int32_t* w = weights + t * c_stride + c0;
          const __m256i w0 = load_epi32(w), w1 = load_epi32(w + 8);
          const uint8_t* x = corner + offsets[t] + c0;
#pragma GCC unroll 4
          for (int j = 0; j < kRun; ++j) {
            acc[j][0] = _mm256_add_epi32(acc[j][0], _mm256_madd_epi16(load8_epi32(x + j * step), w0));
            acc[j][1] = _mm256_add_epi32(acc[j][1], _mm256_madd_epi16(load8_epi32(x + j * step + 8), w1));
          }
        }
      }
      const __m256i b0 = load_epi32(bias + c0), b1 = load_epi32(bias + c0 + 8);
#pragma GCC unroll 4
      for (int j = 0; j < kRun; ++j) {
        const __m128i q =
            requantize16(_mm256_add_epi32(acc[j][0], b0), _mm256_add_epi32(acc[j][1], b1), mult + c0, consts);
        _mm_storeu_si128(reinterpret_cast<__m128i*>(out + j * channels + c0), q);
      }
    }
    if (full < channels)
      for (int j = 0; j < kRun; ++j)
        pixel(PixelTaps{reinterpret_cast<uintptr_t>(corner + j * step), offsets}, out + j * channels, full,
              channels - full);
  };
  auto run = [&](const uint8_t* corner, ptrdiff_t step, int count, uint8_t* out) {
    const uintptr_t base = reinterpret_cast<uintptr_t>(corner);
    // The tap-quad kernel takes the whole run per block of 32 channels (its weights stay in L1).
    for (int c0 = 0; c0 < quad_channels; c0 += dw_maddubs::kBlock)
      dw_maddubs::block32(count, base, step, offsets, taps, c0, quads + c0 / dw_maddubs::kBlock * quad_block_bytes,
                          ep, out, channels);
    int j = 0;
    for (; j + kRun <= count; j += kRun) run_madd(corner + j * step, step, out + j * channels, quad_channels);
    for (; j < count; ++j) {
      const PixelTaps px{base + j * step, offsets};
      for (int c0 = quad_channels; c0 < channels; c0 += kCB)
        pixel(px, out + j * channels, c0, channels - c0 < kCB ? channels - c0 : kCB);
    }
  };
  for_each_pixel_run(a, run, single);
}

void dwconv(const DwConvArgs& a) { a.kh * a.kw == 9 ? dwconv_taps<9>(a) : dwconv_taps<0>(a); }

constexpr DwConvKernels kKernels = {"avx2", dwconv, extra_bytes, pack_extra};

}  // namespace

const DwConvKernels* dwconv_kernels() { return &kKernels; }

}  // namespace qr::avx2
