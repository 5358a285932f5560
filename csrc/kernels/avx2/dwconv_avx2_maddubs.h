// The AVX2 depthwise kernel on tap quads (vpmaddubsw), as dwconv_avx2.cc calls it for blocks of 32
// channels whose weights allow it. Included by AVX2 units only; declarations only.
//
// vpmaddubsw multiplies the two taps of a pair with one instruction into a saturating int16; exact
// when the pair's weights satisfy |w1| + |w2| <= 128 (the bound of gemm_avx2_maddubs.h). The packer
// checks it on every pair the kernel multiplies and leaves a layer with any pair over it to the
// vpmaddwd kernel (weights from quantize(..., weight_bits=7) always pass).
#pragma once
#include <cstddef>
#include <cstdint>

#include "kernels/kernels.h"

namespace qr::avx2::dw_maddubs {

constexpr int kBlock = 32;  // channels per block

// Bytes of the tap-quad layout for `c` channels (whole blocks of 32; a tail stays with the vpmaddwd
// kernel) and `taps` taps: docs/kernels.md, "depthwise".
size_t quads_bytes(int c, int taps);

// Packs w ([c][taps] int8, torch's depthwise layout) into dst (quads_bytes(c, taps) bytes) and returns
// true, or returns false when a pair of taps the kernel multiplies has |w1| + |w2| > 128. Writes to
// note (note_size bytes, NUL terminated) which kernel runs and why.
bool pack_quads(const int8_t* w, int c, int taps, int8_t* dst, char* note, size_t note_size);

// Channels [c0, c0 + 32) of `pixels` output pixels: pixel j's tap t reads at base + j * step +
// off[t] + c0, and its output goes to out + j * out_step + c0. `quads` is this channel block's part
// of the layout; ep's bias and mult are indexed by channel.
void block32(int pixels, uintptr_t base, ptrdiff_t step, const uintptr_t* off, int taps, int c0,
             const int8_t* quads, const Epilogue& ep, uint8_t* out, ptrdiff_t out_step);

}  // namespace qr::avx2::dw_maddubs
