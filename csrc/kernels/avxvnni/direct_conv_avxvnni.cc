// Direct convolution of layers with few input channels with 256-bit vpdpbusd (AVX-VNNI; kernels.h,
// DirectConvTask): the avx512_vnni kernel (direct_conv_avx512.cc) on ymm, for a network's first
// layer, where im2col and A packing cost more than the products. Per output row, the kh input rows
// it reads are copied once into scratch with the padding filled in (the zero point); then for a
// block of P output pixels and 16 output channels, each kernel row's words of 4 input bytes are
// broadcast against their weights. Three encodings, as gemm_avxvnni.cc: VEX (avx_vnni), EVEX
// (avx_vnni_evex), SIMDe (avx_vnni_emulated).
// Layout: kernels/direct_conv_words.h (the avx512_vnni kernel's: one word's 16 output channels are
// two ymm of weights).
// Register map of the block (block<P>): P <= 6 pixels x 16 outputs in 2P ymm accumulators, 2 ymm of
// weights per word, one broadcast: the GEMM's 6x16 tile.
#include "kernels/avxvnni/vnni256.h"

#include <algorithm>
#include <cstring>

#include "kernels/avx2/epilogue_avx2.h"
#include "kernels/avxvnni/avxvnni.h"
#include "kernels/direct_conv_words.h"

namespace qr::QR_ISA_NS {
namespace {

constexpr int kMaxP = 6;  // pixels per block

// acc[p] = init + the window of pixel p (rows + ky * rbytes + p * px_step) times the weights of
// 16 output channels (w: their vector). Kept out of line, as avx2's direct kernel; not measured
// inlined (no AVX-VNNI host yet).
template <int P>
__attribute__((noinline)) void accumulate(const DirectConvTask& t, const uint8_t* rows, size_t rbytes, size_t px_step,
                                          const int8_t* w, __m256i init0, __m256i init1, __m256i (&out)[P][2]) {
  const int nw = words(t.c, t.kw);
  __m256i acc[P][2];
#pragma GCC unroll 6
  for (int p = 0; p < P; ++p) acc[p][0] = init0, acc[p][1] = init1;
  for (int ky = 0; ky < t.kh; ++ky) {
    const uint8_t* r = rows + ky * rbytes;
    const int8_t* wrow = w + static_cast<size_t>(ky) * nw * 64;
    for (int j = 0; j < nw; ++j) {
      const __m256i w0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wrow + j * 64));
      const __m256i w1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wrow + j * 64 + 32));
#pragma GCC unroll 6
      for (int p = 0; p < P; ++p) {
        const __m256i a = _mm256_set1_epi32(word_at(r + p * px_step + 4 * j));
        acc[p][0] = QR_DPBUSD256(acc[p][0], a, w0);
        acc[p][1] = QR_DPBUSD256(acc[p][1], a, w1);
      }
    }
  }
#pragma GCC unroll 6
  for (int p = 0; p < P; ++p) out[p][0] = acc[p][0], out[p][1] = acc[p][1];
}

// Outputs [ox0, ox0 + P) of one row, channels [col, col + 16).
template <int P>
void block(const DirectConvTask& t, const uint8_t* rows, size_t rbytes, int ox0, int col, uint8_t* out_row) {
  const size_t px_step = static_cast<size_t>(t.stride_w) * t.c;
  __m256i init0, init1, acc[P][2];
  init_acc16(t.ep, col, init0, init1);
  accumulate<P>(t, rows + ox0 * px_step, rbytes, px_step, t.weights + static_cast<size_t>(col / 16) * t.kh * words(t.c, t.kw) * 64,
                init0, init1, acc);
  store_rows16<P, true>(acc, t.ep, col, out_row + static_cast<size_t>(ox0) * t.oc + col, t.oc,
                        std::min(16, t.oc - col));
}

void run(const DirectConvTask& t) {
  const size_t rbytes = row_bytes(t.c, t.kw, t.ow, t.stride_w);
  uint8_t* rows = static_cast<uint8_t*>(t.scratch);
  for (int oy = t.oh_begin; oy < t.oh_end; ++oy) {
    for (int ky = 0; ky < t.kh; ++ky) fill_row(t, oy * t.stride_h - t.pad_t + ky, rows + ky * rbytes, rbytes);
    uint8_t* out_row = t.y + static_cast<size_t>(oy) * t.ow * t.oc;
    for (int col = 0; col < t.oc; col += 16) {
      int ox = 0;
      for (; ox + kMaxP <= t.ow; ox += kMaxP) block<kMaxP>(t, rows, rbytes, ox, col, out_row);
      switch (t.ow - ox) {
        case 5: block<5>(t, rows, rbytes, ox, col, out_row); break;
        case 4: block<4>(t, rows, rbytes, ox, col, out_row); break;
        case 3: block<3>(t, rows, rbytes, ox, col, out_row); break;
        case 2: block<2>(t, rows, rbytes, ox, col, out_row); break;
        case 1: block<1>(t, rows, rbytes, ox, col, out_row); break;
        default: break;
      }
    }
  }
}

constexpr DirectConvKernels kKernels = {QR_ISA_NAME, takes, packed_bytes, pack, scratch_bytes, run};

}  // namespace

const DirectConvKernels* direct_conv_kernels() { return &kKernels; }

}  // namespace qr::QR_ISA_NS
