// Direct convolution of layers with few input channels on AVX-512 VNNI (kernels.h, DirectConvTask):
// a network's first layer, where im2col and A packing cost more than the products (K = 9 or 27 bytes
// per output pixel). Per output row, the kh input rows it reads are copied once into scratch with
// the padding filled in (the zero point), so every window lies inside them; then for a block of P
// output pixels and V vectors of 16 output channels, each kernel row's words of 4 input bytes are
// broadcast against their weights with vpdpbusd.
// Layout: kernels/direct_conv_words.h.
// Register map of the block (block<V, P>): P pixels x V vectors in P * V <= 24 zmm accumulators, V
// zmm of weights per word, one broadcast.
#include "kernels/avx512_intrinsics.h"

#include <algorithm>
#include <cstring>

#include "kernels/avx512vnni/avx512vnni.h"
#include "kernels/avx512vnni/epilogue_avx512.h"
#include "kernels/direct_conv_words.h"

namespace qr::QR_ISA_NS {
namespace {

// Outputs [ox0, ox0 + P) of one row, channels [16 v0, 16 (v0 + V)).
template <int V, int P>
void block(const DirectConvTask& t, const uint8_t* rows, size_t rbytes, int ox0, int v0, uint8_t* out_row) {
  const int nw = words(t.c, t.kw);
  const size_t px_step = static_cast<size_t>(t.stride_w) * t.c;
  __m512i acc[P][V];
#pragma GCC unroll 24
  for (int p = 0; p < P; ++p)
#pragma GCC unroll 4
    for (int v = 0; v < V; ++v) acc[p][v] = _mm512_setzero_si512();
  for (int ky = 0; ky < t.kh; ++ky) {
    const uint8_t* r = rows + ky * rbytes + ox0 * px_step;
    const int8_t* wrow = t.weights + (static_cast<size_t>(v0) * t.kh + ky) * nw * 64;
    for (int j = 0; j < nw; ++j) {
      __m512i wv[V];
#pragma GCC unroll 4
      for (int v = 0; v < V; ++v) wv[v] = _mm512_loadu_si512(wrow + (static_cast<size_t>(v) * t.kh * nw + j) * 64);
#pragma GCC unroll 24
      for (int p = 0; p < P; ++p) {
        const __m512i a = _mm512_set1_epi32(word_at(r + p * px_step + 4 * j));
#pragma GCC unroll 4
        for (int v = 0; v < V; ++v) acc[p][v] = _mm512_dpbusd_epi32(acc[p][v], a, wv[v]);
      }
    }
  }
  for (int p = 0; p < P; ++p) {
    uint8_t* px = out_row + static_cast<size_t>(ox0 + p) * t.oc;
#pragma GCC unroll 2
    for (int v = 0; v < V; v += 2) {
      const int col = 16 * (v0 + v);
      store_row32(acc[p][v], v + 1 < V ? acc[p][v + 1] : _mm512_setzero_si512(), t.ep, col, px + col,
                  std::min(32, t.oc - col));
    }
  }
}

// One output row: blocks of P pixels (24 / V accumulators' worth), then single pixels.
template <int V>
void row_of(const DirectConvTask& t, const uint8_t* rows, size_t rbytes, int v0, uint8_t* out_row) {
  constexpr int P = 24 / V;
  int ox = 0;
  for (; ox + P <= t.ow; ox += P) block<V, P>(t, rows, rbytes, ox, v0, out_row);
  for (; ox < t.ow; ++ox) block<V, 1>(t, rows, rbytes, ox, v0, out_row);
}

void run(const DirectConvTask& t) {
  const size_t rbytes = row_bytes(t.c, t.kw, t.ow, t.stride_w);
  uint8_t* rows = static_cast<uint8_t*>(t.scratch);
  const int nv = vectors(t.oc);
  for (int oy = t.oh_begin; oy < t.oh_end; ++oy) {
    for (int ky = 0; ky < t.kh; ++ky) fill_row(t, oy * t.stride_h - t.pad_t + ky, rows + ky * rbytes, rbytes);
    uint8_t* out_row = t.y + static_cast<size_t>(oy) * t.ow * t.oc;
    // Up to 4 vectors (64 channels) at a time; a remainder of 1 to 3 in one more pass.
    for (int v0 = 0; v0 < nv; v0 += 4) {
      switch (std::min(4, nv - v0)) {
        case 1: row_of<1>(t, rows, rbytes, v0, out_row); break;
        case 2: row_of<2>(t, rows, rbytes, v0, out_row); break;
        case 3: row_of<3>(t, rows, rbytes, v0, out_row); break;
        default: row_of<4>(t, rows, rbytes, v0, out_row); break;
      }
    }
  }
}

constexpr DirectConvKernels kKernels = {QR_ISA_NAME, takes, packed_bytes, pack, scratch_bytes, run};

}  // namespace

const DirectConvKernels* direct_conv_kernels() { return &kKernels; }

}  // namespace qr::QR_ISA_NS
