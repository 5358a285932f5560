// Depthwise convolution for AVX-512 (layout: docs/kernels.md, "depthwise").
//
// Register map of a run (4 pixels of one output row): up to 8 zmm accumulators (pixel j, channels
// c0..c0+15 and c0+16..c0+31), the tap's int32 weights, loaded once and shared by the 4 pixels, and
// each pixel's input bytes zero-extended to int32 lanes (masked loads for a channel tail, so
// nothing past the tensor is read). vpdpbusd multiplies the 4 bytes of each lane pairwise and adds:
// the input lane is (x, 0, 0, 0) and the weight lane's low byte is w as int8, so it adds exactly
// x * w in one instruction (vpmulld + vpaddd is slower). Built twice: real, and against SIMDe
// (emulated).
#include "kernels/avx512vnni/avx512vnni.h"
#include "kernels/avx512vnni/epilogue_avx512.h"
#include "kernels/dwconv_taps.h"

namespace qr::QR_ISA_NS {
namespace {

constexpr int kCB = 16;   // channels per vector
constexpr int kRun = 4;   // pixels per run

// A compile-time count passed to a generic lambda (a local type: no library template is
// instantiated in an ISA unit, see kernels.h).
template <int N>
struct Count {
  static constexpr int value = N;
};

// 16 bytes at p (the first `count` of them when count < 16) zero-extended to int32 lanes.
inline __m512i load16_epi32(const uint8_t* p, int count) {
  const __m128i bytes = count >= kCB ? _mm_loadu_si128(reinterpret_cast<const __m128i*>(p))
                                     : _mm_maskz_loadu_epi8(lane_mask(count), p);
  return _mm512_cvtepu8_epi32(bytes);
}

// kTaps > 0 fixes the tap count at compile time (3x3, the common case), so the tap loop unrolls.
template <int kTaps>
void dwconv_taps(const DwConvArgs& a) {
  const RequantConsts consts(a.ep);
  // Locals, not a.*: stores through uint8_t* may alias anything, which would force reloads.
  const int taps = kTaps > 0 ? kTaps : a.kh * a.kw, channels = a.c;
  const size_t c_stride = a.c_stride;
  const int32_t *weights = a.weights, *bias = a.ep.bias;
  const float* mult = a.ep.mult;
  const uintptr_t* offsets = a.tap_offsets;

  // kV vectors of channels from c0 for kP pixels; the last vector holds `last` (<= 16) channels.
  // Pixel j's tap t reads at base + j * step + off[t].
  auto block = [&](auto kP, auto kV, uintptr_t base, ptrdiff_t step, const uintptr_t* off, uint8_t* out, int c0,
                   int last) {
    constexpr int P = decltype(kP)::value, V = decltype(kV)::value;
    __m512i acc[P][V];
    for (int j = 0; j < P; ++j)
      for (int v = 0; v < V; ++v) acc[j][v] = _mm512_setzero_si512();
#pragma GCC unroll 9
    for (int t = 0; t < taps; ++t) {
      const uint8_t* x = reinterpret_cast<const uint8_t*>(base + off[t]) + c0;
      const int32_t* w = weights + t * c_stride + c0;
#pragma GCC unroll 2
      for (int v = 0; v < V; ++v) {
        const __m512i wv = _mm512_loadu_si512(w + v * kCB);
        const int count = v == V - 1 ? last : kCB;
#pragma GCC unroll 4
        for (int j = 0; j < P; ++j)
          acc[j][v] = _mm512_dpbusd_epi32(acc[j][v], load16_epi32(x + j * step + v * kCB, count), wv);
      }
    }
#pragma GCC unroll 2
    for (int v = 0; v < V; ++v) {
      const __m512i b = _mm512_loadu_si512(bias + c0 + v * kCB);
      const int count = v == V - 1 ? last : kCB;
#pragma GCC unroll 4
      for (int j = 0; j < P; ++j)
        store_bytes16(out + j * channels + c0 + v * kCB,
                      requantize16(_mm512_add_epi32(acc[j][v], b), mult + c0 + v * kCB, consts), count);
    }
  };
  using One = Count<1>;
  using Two = Count<2>;
  using Run = Count<kRun>;
  // Channel steps of 32, then 16, then the tail.
  auto channels_of = [&](auto kP, uintptr_t base, ptrdiff_t step, const uintptr_t* off, uint8_t* out) {
    int c0 = 0;
    for (; c0 + 2 * kCB <= channels; c0 += 2 * kCB) block(kP, Two{}, base, step, off, out, c0, kCB);
    for (; c0 < channels; c0 += kCB) block(kP, One{}, base, step, off, out, c0, channels - c0 < kCB ? channels - c0 : kCB);
  };
  for_each_pixel_run(
      a,
      [&](const uint8_t* corner, ptrdiff_t step, int count, uint8_t* out) {
        const uintptr_t base = reinterpret_cast<uintptr_t>(corner);
        int j = 0;
        for (; j + kRun <= count; j += kRun) channels_of(Run{}, base + j * step, step, offsets, out + j * channels);
        for (; j < count; ++j) channels_of(One{}, base + j * step, 0, offsets, out + j * channels);
      },
      [&](const PixelTaps& px, uint8_t* out) { channels_of(One{}, px.base, 0, px.offset, out); });
}

// ---- Tap quads: 4 taps per vpdpbusd lane (docs/kernels.md, "AVX-512 tap quads") ----------------
//
// Per quad of taps (t0..t3) and 64 channels of one pixel: the four taps' 64 input bytes are
// interleaved (vpunpck{l,h}bw t0 with t1 and t2 with t3, then vpunpck{l,h}wd of those), so each
// int32 lane holds (x_t0, x_t1, x_t2, x_t3) of one channel, and one vpdpbusd against the packed
// weights adds all four products: 64 MACs per vpdpbusd instead of 16, exact for any int8 weights
// (no intermediate saturation). The in-lane unpacks leave the channels of vector r (0..3) as
//   lane L (128 bits), dword k  <->  channel 16 L + 4 r + k
// which the packed weights follow; a 4x4 transpose of 128-bit lanes (8 vshufi32x4) restores the
// order once per pixel and block, before the usual epilogue. Taps past the last read nothing
// (their input is zero, their weights too). A channel tail (< 64) uses masked loads and stores.
// Registers for 4 pixels: 16 accumulators, 4 weight vectors, 4 inputs, 4 unpack temporaries.

constexpr int kQB = 64;                 // channels per block
constexpr int kQuadBlockBytes = 4 * 64; // per quad and block: 4 vectors of 16 lanes x 4 taps

int quad_count(int taps) { return (taps + 3) / 4; }

// 16 or 32 channels: a 64-byte vector holds 64 / c neighbouring pixels of a stride-1 row, whose
// taps' inputs are neighbours too (pixel j + 1's tap t sits c bytes after pixel j's), so one block
// of lanes computes 4 or 2 pixels instead of leaving 3/4 or 1/2 of its lanes idle. It needs the
// weights repeated across the 64 lanes: a second block after the usual ones.
bool narrow(int c) { return c == 16 || c == 32; }

size_t quad_blocks(int c) { return static_cast<size_t>((c + kQB - 1) / kQB) + (narrow(c) ? 1 : 0); }

size_t quad_weights_bytes(int c, int taps) { return quad_blocks(c) * quad_count(taps) * kQuadBlockBytes; }

// Lane ch (0..63) of a block at dst: its place in [quad][vector r][lane i][tap b] (see the order above).
inline size_t quad_index(int cb, int t) {
  const int r = (cb % 16) / 4, lane = (cb / 16) * 4 + cb % 4;
  return (static_cast<size_t>(t / 4) * 4 + r) * 64 + lane * 4 + t % 4;
}

// dst (quad_weights_bytes, zeroed): [block][quad][vector r][lane i][tap b], per the order above.
bool pack_quad_weights(const int8_t* w, int c, int taps, int8_t* dst, char* note, size_t note_size) {
  const size_t block_bytes = static_cast<size_t>(quad_count(taps)) * kQuadBlockBytes;
  for (int ch = 0; ch < c; ++ch)
    for (int t = 0; t < taps; ++t)
      dst[(ch / kQB) * block_bytes + quad_index(ch % kQB, t)] = w[static_cast<size_t>(ch) * taps + t];
  if (narrow(c)) {  // the last block: lane l holds channel l % c
    int8_t* rep = dst + (quad_blocks(c) - 1) * block_bytes;
    for (int l = 0; l < kQB; ++l)
      for (int t = 0; t < taps; ++t) rep[quad_index(l, t)] = w[static_cast<size_t>(l % c) * taps + t];
  }
  if (note && note_size) {
    const char msg[] = "vpdpbusd on tap quads";
    size_t i = 0;
    for (; i + 1 < note_size && msg[i]; ++i) note[i] = msg[i];
    note[i] = 0;
  }
  return true;
}

template <bool kFull>
inline __m512i load64(const uint8_t* p, __mmask64 m) {
  if (kFull) return _mm512_loadu_si512(p);
  return _mm512_maskz_loadu_epi8(m, p);
}

template <int kTaps>
void dwconv_quads(const DwConvArgs& a) {
  const RequantConsts consts(a.ep);
  const int taps = kTaps > 0 ? kTaps : a.kh * a.kw, channels = a.c;
  const int nq = quad_count(taps);
  const int narrow_block = static_cast<int>(quad_blocks(channels)) - 1;  // used only when narrow(channels)
  const int8_t* quads = a.extra_weights;
  const int32_t* bias = a.ep.bias;
  const float* mult = a.ep.mult;
  const uintptr_t* offsets = a.tap_offsets;

  // kP pixels, the 64 channels from c0 (kF: all 64 present). Pixel j's tap t reads at
  // base + j * step + off[t].
  // kN: a narrow block (c0 = 0), 64 / channels pixels from `base` in one block of lanes.
  auto block = [&](auto kP, auto kF, uintptr_t base, ptrdiff_t step, const uintptr_t* off, uint8_t* out, int c0,
                   auto kN) {
    constexpr int P = decltype(kP)::value;
    constexpr bool F = decltype(kF)::value != 0, N = decltype(kN)::value != 0;
    const int valid = N ? kQB : channels - c0;
    const __mmask64 m = valid >= kQB ? ~__mmask64{0} : ((__mmask64{1} << valid) - 1);
    __m512i acc[P][4];
    for (int j = 0; j < P; ++j)
      for (int r = 0; r < 4; ++r) acc[j][r] = _mm512_setzero_si512();
    const int8_t* wq = quads + static_cast<size_t>(N ? narrow_block : c0 / kQB) * nq * kQuadBlockBytes;
#pragma GCC unroll 7
    for (int q = 0; q < nq; ++q) {
      const int8_t* wp = wq + q * kQuadBlockBytes;
      const __m512i w0 = _mm512_loadu_si512(wp), w1 = _mm512_loadu_si512(wp + 64), w2 = _mm512_loadu_si512(wp + 128),
                    w3 = _mm512_loadu_si512(wp + 192);
#pragma GCC unroll 4
      for (int j = 0; j < P; ++j) {
        __m512i x[4];
#pragma GCC unroll 4
        for (int b = 0; b < 4; ++b) {
          const int t = 4 * q + b;
          x[b] = t < taps ? load64<F>(reinterpret_cast<const uint8_t*>(base + j * step + off[t]) + c0, m)
                          : _mm512_setzero_si512();
        }
        const __m512i lo01 = _mm512_unpacklo_epi8(x[0], x[1]), hi01 = _mm512_unpackhi_epi8(x[0], x[1]);
        const __m512i lo23 = _mm512_unpacklo_epi8(x[2], x[3]), hi23 = _mm512_unpackhi_epi8(x[2], x[3]);
        acc[j][0] = _mm512_dpbusd_epi32(acc[j][0], _mm512_unpacklo_epi16(lo01, lo23), w0);
        acc[j][1] = _mm512_dpbusd_epi32(acc[j][1], _mm512_unpackhi_epi16(lo01, lo23), w1);
        acc[j][2] = _mm512_dpbusd_epi32(acc[j][2], _mm512_unpacklo_epi16(hi01, hi23), w2);
        acc[j][3] = _mm512_dpbusd_epi32(acc[j][3], _mm512_unpackhi_epi16(hi01, hi23), w3);
      }
    }
#pragma GCC unroll 4
    for (int j = 0; j < P; ++j) {
      // Natural vector v (channels c0 + 16 v ..) is lane v of acc 0..3.
      const __m512i t0 = _mm512_shuffle_i32x4(acc[j][0], acc[j][1], 0x44);
      const __m512i t1 = _mm512_shuffle_i32x4(acc[j][2], acc[j][3], 0x44);
      const __m512i t2 = _mm512_shuffle_i32x4(acc[j][0], acc[j][1], 0xEE);
      const __m512i t3 = _mm512_shuffle_i32x4(acc[j][2], acc[j][3], 0xEE);
      const __m512i nat[4] = {_mm512_shuffle_i32x4(t0, t1, 0x88), _mm512_shuffle_i32x4(t0, t1, 0xDD),
                              _mm512_shuffle_i32x4(t2, t3, 0x88), _mm512_shuffle_i32x4(t2, t3, 0xDD)};
      uint8_t* o = out + j * channels + c0;
#pragma GCC unroll 4
      for (int v = 0; v < 4; ++v) {
        if (!F && valid <= 16 * v) break;
        const int ch = N ? (16 * v) % channels : c0 + 16 * v;  // the first channel of these 16 lanes
        const __m512i b = _mm512_loadu_si512(bias + ch);
        store_bytes16(o + 16 * v, requantize16(_mm512_add_epi32(nat[v], b), mult + ch, consts), F ? kCB : valid - 16 * v);
      }
    }
  };
  using One = Count<1>;
  using Run = Count<kRun>;
  auto channels_of = [&](auto kP, uintptr_t base, ptrdiff_t step, const uintptr_t* off, uint8_t* out) {
    int c0 = 0;
    for (; c0 + kQB <= channels; c0 += kQB) block(kP, Count<1>{}, base, step, off, out, c0, Count<0>{});
    if (c0 < channels) block(kP, Count<0>{}, base, step, off, out, c0, Count<0>{});
  };
  // A run of kRun stride-1 pixels of 16 or 32 channels: 4 or 2 pixels per block of lanes.
  const bool narrow_runs = narrow(channels) && a.stride_w == 1;
  auto narrow_run = [&](uintptr_t base, const uintptr_t* off, uint8_t* out) {
    const int per_block = kQB / channels;
    for (int j = 0; j < kRun; j += per_block)
      block(One{}, Count<1>{}, base + j * channels, 0, off, out + j * channels, 0, Count<1>{});
  };
  for_each_pixel_run(
      a,
      [&](const uint8_t* corner, ptrdiff_t step, int count, uint8_t* out) {
        const uintptr_t base = reinterpret_cast<uintptr_t>(corner);
        int j = 0;
        if (narrow_runs)
          for (; j + kRun <= count; j += kRun) narrow_run(base + j * step, offsets, out + j * channels);
        for (; j + kRun <= count; j += kRun) channels_of(Run{}, base + j * step, step, offsets, out + j * channels);
        for (; j < count; ++j) channels_of(One{}, base + j * step, 0, offsets, out + j * channels);
      },
      [&](const PixelTaps& px, uint8_t* out) { channels_of(One{}, px.base, 0, px.offset, out); });
}

void dwconv(const DwConvArgs& a) {
  const int taps = a.kh * a.kw;
  if (a.extra_weights) {
    if (taps == 9) return dwconv_quads<9>(a);
    if (taps == 25) return dwconv_quads<25>(a);
    return dwconv_quads<0>(a);
  }
  taps == 9 ? dwconv_taps<9>(a) : dwconv_taps<0>(a);
}

constexpr DwConvKernels kKernels = {QR_ISA_NAME, dwconv, quad_weights_bytes, pack_quad_weights};

}  // namespace

const DwConvKernels* dwconv_kernels() { return &kKernels; }

}  // namespace qr::QR_ISA_NS
