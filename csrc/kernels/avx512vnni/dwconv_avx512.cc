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
// (no intermediate saturation). The in-lane unpacks leave the channels of accumulator r (0..3) as
//   lane L (128 bits), dword k  <->  channel 16 L + 4 r + k
// which the packed weights follow, and so do the bias the accumulators start from and the
// multipliers (a 4x4 transpose of 128-bit lanes, once per block and run). In that order the
// saturating packs (vpackssdw, vpackuswb) of the four requantized accumulators give the 64 bytes in
// channel order. A 3x3 kernel's quads are its columns (taps (0, kx), (1, kx), (2, kx) and a zero):
// within a run of pixels at stride 1 or 2, a column's interleaved inputs serve every pixel whose
// window covers it, so a pixel interleaves 1 (stride 1) or 2 new columns, 8 or 16 unpacks per block
// instead of 24. Other kernels take quads of 4 consecutive taps. Taps past the last read nothing
// (their input is zero, their weights too). A channel tail (< 64) uses masked loads and stores.

constexpr int kQB = 64;                  // channels per block
constexpr int kQuadBlockBytes = 4 * 64;  // per quad and block: 4 vectors of 16 lanes x 4 taps

// Whether a kh x kw kernel's quads are its columns (see above).
bool by_columns(int kh, int kw) { return kh == 3 && kw == 3; }

int quad_count(int kh, int kw) { return by_columns(kh, kw) ? kw : (kh * kw + 3) / 4; }

// 16 or 32 channels: a 64-byte vector holds 64 / c neighbouring pixels of a stride-1 row, whose
// taps' inputs are neighbours too (pixel j + 1's tap t sits c bytes after pixel j's), so one block
// of lanes computes 4 or 2 pixels instead of leaving 3/4 or 1/2 of its lanes idle. It needs the
// weights repeated across the 64 lanes: a second block after the usual ones.
bool narrow(int c) { return c == 16 || c == 32; }

size_t quad_blocks(int c) { return static_cast<size_t>((c + kQB - 1) / kQB) + (narrow(c) ? 1 : 0); }

size_t quad_weights_bytes(int c, int kh, int kw) { return quad_blocks(c) * quad_count(kh, kw) * kQuadBlockBytes; }

// Lane ch (0..63) of a block, quad q, tap byte b: its place in [quad][vector r][lane i][tap b].
inline size_t quad_index(int cb, int q, int b) {
  const int r = (cb % 16) / 4, lane = (cb / 16) * 4 + cb % 4;
  return (static_cast<size_t>(q) * 4 + r) * 64 + lane * 4 + b;
}

// dst (quad_weights_bytes, zeroed): [block][quad][vector r][lane i][tap b], per the order above.
bool pack_quad_weights(const int8_t* w, int c, int kh, int kw, int8_t* dst, char* note, size_t note_size) {
  const int taps = kh * kw;
  const bool cols = by_columns(kh, kw);
  const size_t block_bytes = static_cast<size_t>(quad_count(kh, kw)) * kQuadBlockBytes;
  // Tap t's quad and byte: column t % kw, row t / kw; or t / 4, t % 4.
  auto place = [&](int cb, int t) { return cols ? quad_index(cb, t % kw, t / kw) : quad_index(cb, t / 4, t % 4); };
  for (int ch = 0; ch < c; ++ch)
    for (int t = 0; t < taps; ++t) dst[(ch / kQB) * block_bytes + place(ch % kQB, t)] = w[static_cast<size_t>(ch) * taps + t];
  if (narrow(c)) {  // the last block: lane l holds channel l % c
    int8_t* rep = dst + (quad_blocks(c) - 1) * block_bytes;
    for (int l = 0; l < kQB; ++l)
      for (int t = 0; t < taps; ++t) rep[place(l, t)] = w[static_cast<size_t>(l % c) * taps + t];
  }
  if (note && note_size) {
    const char* msg = cols ? "vpdpbusd on tap quads, by columns" : "vpdpbusd on tap quads";
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

// out[r] = (lane r of in[0], lane r of in[1], lane r of in[2], lane r of in[3]): channel order to
// the quad order above, and back.
inline void transpose_lanes(const __m512i (&in)[4], __m512i (&out)[4]) {
  const __m512i t0 = _mm512_shuffle_i32x4(in[0], in[1], 0x44), t1 = _mm512_shuffle_i32x4(in[2], in[3], 0x44);
  const __m512i t2 = _mm512_shuffle_i32x4(in[0], in[1], 0xEE), t3 = _mm512_shuffle_i32x4(in[2], in[3], 0xEE);
  out[0] = _mm512_shuffle_i32x4(t0, t1, 0x88);
  out[1] = _mm512_shuffle_i32x4(t0, t1, 0xDD);
  out[2] = _mm512_shuffle_i32x4(t2, t3, 0x88);
  out[3] = _mm512_shuffle_i32x4(t2, t3, 0xDD);
}

// The four unpacked vectors of 4 taps' 64 input bytes each (x[b]: tap b of the quad).
inline void interleave(const __m512i (&x)[4], __m512i (&v)[4]) {
  const __m512i lo01 = _mm512_unpacklo_epi8(x[0], x[1]), hi01 = _mm512_unpackhi_epi8(x[0], x[1]);
  const __m512i lo23 = _mm512_unpacklo_epi8(x[2], x[3]), hi23 = _mm512_unpackhi_epi8(x[2], x[3]);
  v[0] = _mm512_unpacklo_epi16(lo01, lo23);
  v[1] = _mm512_unpackhi_epi16(lo01, lo23);
  v[2] = _mm512_unpacklo_epi16(hi01, hi23);
  v[3] = _mm512_unpackhi_epi16(hi01, hi23);
}

// A block's epilogue in the quad order: bias (the accumulators' start) and multipliers of lane
// group v read at channel first[v], and the bounds. finish() gives the 64 output bytes in channel
// order, the operations of requantize16: float(acc) * mult, the upper clamp in float (which keeps
// vcvtps2dq in range), round half to even, + zp; then the saturating packs and the byte clamp to
// [lo, hi], which equal the float lower clamp there (both bounds are integers and rounding is
// monotonic).
struct QuadEpilogue {
  __m512i bias[4];
  __m512 mult[4];
  __m512 hi;
  __m512i zp, lo8, hi8;
  QuadEpilogue(const Epilogue& ep, const int (&first)[4]) {
    __m512i nb[4], nm[4], qm[4];
    for (int v = 0; v < 4; ++v) {
      nb[v] = _mm512_loadu_si512(ep.bias + first[v]);
      nm[v] = _mm512_castps_si512(_mm512_loadu_ps(ep.mult + first[v]));
    }
    transpose_lanes(nb, bias);
    transpose_lanes(nm, qm);
    for (int r = 0; r < 4; ++r) mult[r] = _mm512_castsi512_ps(qm[r]);
    hi = _mm512_set1_ps(static_cast<float>(ep.hi - ep.out_zp));
    zp = _mm512_set1_epi32(ep.out_zp);
    lo8 = _mm512_set1_epi8(static_cast<char>(ep.lo));
    hi8 = _mm512_set1_epi8(static_cast<char>(ep.hi));
  }
  __m512i finish(const __m512i (&acc)[4]) const {
    __m512i q[4];
    for (int r = 0; r < 4; ++r) {
      const __m512 f = _mm512_min_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(acc[r]), mult[r]), hi);
      q[r] = _mm512_add_epi32(_mm512_cvtps_epi32(f), zp);  // MXCSR: half to even
    }
    const __m512i bytes = _mm512_packus_epi16(_mm512_packs_epi32(q[0], q[1]), _mm512_packs_epi32(q[2], q[3]));
    return _mm512_min_epu8(_mm512_max_epu8(bytes, lo8), hi8);
  }
};

template <bool kFull>
inline void store64(uint8_t* p, __m512i v, __mmask64 m) {
  if (kFull)
    _mm512_storeu_si512(p, v);
  else
    _mm512_mask_storeu_epi8(p, m, v);
}

// kTaps > 0 fixes the tap count (3x3, 5x5); kCols: the quads are columns (by_columns).
template <int kTaps, bool kCols>
void dwconv_quads(const DwConvArgs& a) {
  const int taps = kTaps > 0 ? kTaps : a.kh * a.kw, channels = a.c;
  const int nq = kCols ? 3 : (taps + 3) / 4;
  const int narrow_block = static_cast<int>(quad_blocks(channels)) - 1;  // used only when narrow(channels)
  const int8_t* quads = a.extra_weights;
  const uintptr_t* offsets = a.tap_offsets;
  // Tap b of quad q: (b, q) of the 3x3 by columns, else 4 q + b; is it a real tap.
  auto tap = [&](int q, int b) { return kCols ? b * 3 + q : 4 * q + b; };
  auto real = [&](int q, int b) { return kCols ? b < 3 : 4 * q + b < taps; };

  // The epilogue of the block at c0 (kN: the narrow block, lane group v holding channels (16 v) % c).
  auto epilogue = [&](int c0, bool n) {
    int first[4];
    for (int v = 0; v < 4; ++v) first[v] = n ? (16 * v) % channels : c0 + 16 * v;
    return QuadEpilogue(a.ep, first);
  };
  // The lanes of the block at c0 that hold channels: all 64 but in a tail block.
  auto lanes = [&](int c0) {
    const int valid = channels - c0;
    return valid >= kQB ? ~__mmask64{0} : (__mmask64{1} << valid) - 1;
  };
  auto weights_of = [&](int c0, bool n) {
    return quads + static_cast<size_t>(n ? narrow_block : c0 / kQB) * nq * kQuadBlockBytes;
  };

  // kP pixels of the block at c0 (kF: all 64 channels present; kN: the narrow block), each quad's
  // inputs interleaved per pixel. Pixel j's tap t reads at base + j * step + off[t].
  auto block = [&](auto kP, auto kF, auto kN, uintptr_t base, ptrdiff_t step, const uintptr_t* off, uint8_t* out,
                   int c0, const QuadEpilogue& e) {
    constexpr int P = decltype(kP)::value;
    constexpr bool F = decltype(kF)::value != 0, N = decltype(kN)::value != 0;
    const __mmask64 m = N ? ~__mmask64{0} : lanes(c0);
    __m512i acc[P][4];
    for (int j = 0; j < P; ++j)
      for (int r = 0; r < 4; ++r) acc[j][r] = e.bias[r];
    const int8_t* wq = weights_of(c0, N);
#pragma GCC unroll 7
    for (int q = 0; q < nq; ++q) {
      const int8_t* wp = wq + q * kQuadBlockBytes;
      const __m512i w0 = _mm512_loadu_si512(wp), w1 = _mm512_loadu_si512(wp + 64), w2 = _mm512_loadu_si512(wp + 128),
                    w3 = _mm512_loadu_si512(wp + 192);
#pragma GCC unroll 4
      for (int j = 0; j < P; ++j) {
        __m512i x[4], v[4];
#pragma GCC unroll 4
        for (int b = 0; b < 4; ++b)
          x[b] = real(q, b) ? load64<F>(reinterpret_cast<const uint8_t*>(base + j * step + off[tap(q, b)]) + c0, m)
                            : _mm512_setzero_si512();
        interleave(x, v);
        acc[j][0] = _mm512_dpbusd_epi32(acc[j][0], v[0], w0);
        acc[j][1] = _mm512_dpbusd_epi32(acc[j][1], v[1], w1);
        acc[j][2] = _mm512_dpbusd_epi32(acc[j][2], v[2], w2);
        acc[j][3] = _mm512_dpbusd_epi32(acc[j][3], v[3], w3);
      }
    }
#pragma GCC unroll 4
    for (int j = 0; j < P; ++j) store64<F>(out + j * channels + c0, e.finish(acc[j]), m);
  };

  // A run of `count` pixels of a 3x3 by columns at stride S (1 or 2), dilation 1, the block at c0:
  // column u (input column u of the run, u = S j + kx for pixel j) is interleaved once.
  auto column_run = [&](auto kS, auto kF, uintptr_t base, int count, uint8_t* out, int c0, const QuadEpilogue& e) {
    constexpr int S = decltype(kS)::value;
    constexpr bool F = decltype(kF)::value != 0;
    const __mmask64 m = lanes(c0);
    const int8_t* wq = weights_of(c0, false);
    const uint8_t* rows[3];
    for (int ky = 0; ky < 3; ++ky) rows[ky] = reinterpret_cast<const uint8_t*>(base + offsets[3 * ky]) + c0;
    auto column = [&](int u, __m512i (&v)[4]) {
      const __m512i x[4] = {load64<F>(rows[0] + static_cast<ptrdiff_t>(u) * channels, m),
                            load64<F>(rows[1] + static_cast<ptrdiff_t>(u) * channels, m),
                            load64<F>(rows[2] + static_cast<ptrdiff_t>(u) * channels, m), _mm512_setzero_si512()};
      interleave(x, v);
    };
    auto w = [&](int kx, int r) { return _mm512_loadu_si512(wq + kx * kQuadBlockBytes + r * 64); };
    __m512i c0v[4], c1v[4], c2v[4];
    column(0, c0v);
    if (S == 1) column(1, c1v);
    for (int j = 0; j < count; ++j) {
      if (S == 2) column(2 * j + 1, c1v);
      column(S * j + 2, c2v);
      __m512i acc[4];
#pragma GCC unroll 4
      for (int r = 0; r < 4; ++r) {
        acc[r] = _mm512_dpbusd_epi32(e.bias[r], c0v[r], w(0, r));
        acc[r] = _mm512_dpbusd_epi32(acc[r], c1v[r], w(1, r));
        acc[r] = _mm512_dpbusd_epi32(acc[r], c2v[r], w(2, r));
      }
      store64<F>(out + static_cast<size_t>(j) * channels + c0, e.finish(acc), m);
#pragma GCC unroll 4
      for (int r = 0; r < 4; ++r) {
        if (S == 1) c0v[r] = c1v[r], c1v[r] = c2v[r];
        if (S == 2) c0v[r] = c2v[r];
      }
    }
  };

  using One = Count<1>;
  using Run = Count<kRun>;
  using Yes = Count<1>;
  using No = Count<0>;
  // Block by block, so a block's epilogue and weights serve all of the pixels (pixel j's tap t at
  // base + j * step + off[t]); `columns`: they are a run whose columns can be shared.
  const bool share_columns = kCols && a.dil_w == 1 && (a.stride_w == 1 || a.stride_w == 2);
  auto run_blocks = [&](uintptr_t base, ptrdiff_t step, const uintptr_t* off, int count, uint8_t* out, bool columns) {
    for (int c0 = 0; c0 < channels; c0 += kQB) {
      const QuadEpilogue e = epilogue(c0, false);
      const bool full = channels - c0 >= kQB;
      if (columns && share_columns) {
        if (a.stride_w == 1)
          full ? column_run(Count<1>{}, Yes{}, base, count, out, c0, e) : column_run(Count<1>{}, No{}, base, count, out, c0, e);
        else
          full ? column_run(Count<2>{}, Yes{}, base, count, out, c0, e) : column_run(Count<2>{}, No{}, base, count, out, c0, e);
        continue;
      }
      int j = 0;
      for (; j + kRun <= count; j += kRun)
        full ? block(Run{}, Yes{}, No{}, base + j * step, step, off, out + j * channels, c0, e)
             : block(Run{}, No{}, No{}, base + j * step, step, off, out + j * channels, c0, e);
      for (; j < count; ++j)
        full ? block(One{}, Yes{}, No{}, base + j * step, 0, off, out + j * channels, c0, e)
             : block(One{}, No{}, No{}, base + j * step, 0, off, out + j * channels, c0, e);
    }
  };
  // A run of stride-1 pixels of 16 or 32 channels: 64 / c pixels per block of lanes.
  const bool narrow_runs = narrow(channels) && a.stride_w == 1;
  for_each_pixel_run(
      a,
      [&](const uint8_t* corner, ptrdiff_t step, int count, uint8_t* out) {
        const uintptr_t base = reinterpret_cast<uintptr_t>(corner);
        int j = 0;
        if (narrow_runs && count >= kRun) {
          const QuadEpilogue e = epilogue(0, true);
          const int per_block = kQB / channels;
          for (; j + per_block <= count; j += per_block)
            block(One{}, Yes{}, Yes{}, base + j * step, 0, offsets, out + j * channels, 0, e);
        }
        if (j < count) run_blocks(base + j * step, step, offsets, count - j, out + j * channels, true);
      },
      [&](const PixelTaps& px, uint8_t* out) { run_blocks(px.base, 0, px.offset, 1, out, false); });
}

void dwconv(const DwConvArgs& a) {
  const int taps = a.kh * a.kw;
  if (a.extra_weights) {
    if (by_columns(a.kh, a.kw)) return dwconv_quads<9, true>(a);
    if (taps == 25) return dwconv_quads<25, false>(a);
    return dwconv_quads<0, false>(a);
  }
  taps == 9 ? dwconv_taps<9>(a) : dwconv_taps<0>(a);
}

constexpr DwConvKernels kKernels = {QR_ISA_NAME, dwconv, quad_weights_bytes, pack_quad_weights};

}  // namespace

const DwConvKernels* dwconv_kernels() { return &kKernels; }

}  // namespace qr::QR_ISA_NS
