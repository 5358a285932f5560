// The byte-word direct kernels' common part (avx512_vnni, avx_vnni: kernels.h, DirectConvTask): their
// limits, their packed weights and their scratch rows. Plain scalar code with internal linkage, so
// each ISA unit keeps its own copy (as dwconv_taps.h).
// Layout (docs/kernels.md, "Convolution", the direct entry): packed weights [ceil(oc/16) vectors]
// [kh rows][nw words][16 oc][4 bytes] int8, nw = ceil(kw * c / 4); byte b of word j of row ky is
// tap kx = (4j + b) / c, channel (4j + b) % c, and zero past kw * c (it meets the next pixel's bytes).
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "kernels/kernels.h"

namespace {

constexpr int kMaxChannels = 4;   // c: 1- and 3-channel first layers (and 2, 4)
constexpr int kMaxRowBytes = 32;  // kw * c: a 7x7 on 3 channels is 21
constexpr int kSlack = 64;        // bytes after a scratch row: the last word's overread

int words(int c, int kw) { return (kw * c + 3) / 4; }
int vectors(int oc) { return (oc + 15) / 16; }

bool takes(int c, int kh, int kw) { return c <= kMaxChannels && kw * c <= kMaxRowBytes && kh <= 16; }

size_t packed_bytes(int oc, int c, int kh, int kw) {
  return static_cast<size_t>(vectors(oc)) * kh * words(c, kw) * 64;
}

void pack(const int8_t* w, int oc, int c, int kh, int kw, int8_t* dst) {
  const int nw = words(c, kw);
  for (int o = 0; o < oc; ++o)
    for (int ky = 0; ky < kh; ++ky)
      for (int e = 0; e < kw * c; ++e) {
        const int kx = e / c, ic = e % c, j = e / 4, b = e % 4;
        dst[((static_cast<size_t>(o / 16) * kh + ky) * nw + j) * 64 + (o % 16) * 4 + b] =
            w[((static_cast<size_t>(o) * c + ic) * kh + ky) * kw + kx];
      }
}

// A scratch row: the input pixels a row of outputs reads, from column -pad_l on.
size_t row_bytes(int c, int kw, int ow, int stride_w) {
  return (static_cast<size_t>((ow - 1) * stride_w + kw) * c + kSlack + 63) / 64 * 64;
}

size_t scratch_bytes(int c, int kh, int kw, int ow, int stride_w) { return kh * row_bytes(c, kw, ow, stride_w); }

// Scratch row for input row iy: zero points where it or its columns lie outside the image.
void fill_row(const qr::DirectConvTask& t, int iy, uint8_t* row, size_t bytes) {
  const int c = t.c, span = (t.ow - 1) * t.stride_w + t.kw;
  std::memset(row, t.x_zp, bytes);
  if (iy < 0 || iy >= t.h) return;
  const int ix_begin = std::max(0, -t.pad_l);
  const int ix_end = std::min(t.w, span - t.pad_l);  // input columns [ix_begin, ix_end) land at ix + pad_l
  if (ix_end > ix_begin)
    std::memcpy(row + static_cast<size_t>(ix_begin + t.pad_l) * c, t.x + (static_cast<size_t>(iy) * t.w + ix_begin) * c,
                static_cast<size_t>(ix_end - ix_begin) * c);
}

inline int32_t word_at(const uint8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

}  // namespace
