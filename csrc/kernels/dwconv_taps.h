// Where each tap of a depthwise window reads, for the depthwise kernels of every ISA: inside the
// image a fixed offset from the window's corner (computed once per call), outside it the row of
// zero-point bytes. Plain scalar code with internal linkage, so each ISA unit keeps its own copy.
// It allocates nothing and uses no library templates: a std::vector instantiated in an AVX-512 unit
// could become the one copy the linker keeps for every unit (the ODR rule of kernels.h); the
// caller provides the tap arrays in DwConvArgs.
#pragma once
#include <cstddef>
#include <cstdint>

#include "kernels/kernels.h"

namespace {

// The taps of one pixel: tap t reads at address base + offset[t] (unsigned arithmetic). Inside the
// image, base is the window's corner and the offsets are fixed; at a border, base is 0 and the
// "offsets" are the taps' own addresses. Either way the tap loop does one add, no branch.
struct PixelTaps {
  uintptr_t base;
  const uintptr_t* offset;
  const uint8_t* tap(int t) const { return reinterpret_cast<const uint8_t*>(base + offset[t]); }
};

class DwTaps {
 public:
  explicit DwTaps(const qr::DwConvArgs& a) : a_(a), offsets_(a.tap_offsets), border_(a.tap_scratch) {
    // Output columns whose whole window lies inside the image horizontally.
    const int span_w = (a.kw - 1) * a.dil_w;
    ox_begin_ = (a.pad_l + a.stride_w - 1) / a.stride_w;
    ox_end_ = a.w - 1 - span_w + a.pad_l >= 0 ? (a.w - 1 - span_w + a.pad_l) / a.stride_w + 1 : 0;
    if (ox_end_ > a.ow) ox_end_ = a.ow;
    if (ox_end_ < ox_begin_) ox_end_ = ox_begin_;
  }

  // Output columns [ox_begin, ox_end) have their whole window inside the image horizontally.
  int ox_begin() const { return ox_begin_; }
  int ox_end() const { return ox_end_; }
  // Whether output row oy's windows lie inside the image vertically.
  bool rows_inside(int oy) const {
    const int iy0 = oy * a_.stride_h - a_.pad_t;
    return iy0 >= 0 && iy0 + (a_.kh - 1) * a_.dil_h < a_.h;
  }
  // The corner of pixel (oy, ox)'s window, for a pixel whose window lies inside the image.
  const uint8_t* corner(int oy, int ox) const {
    const int iy0 = oy * a_.stride_h - a_.pad_t, ix0 = ox * a_.stride_w - a_.pad_l;
    return a_.x + (static_cast<ptrdiff_t>(iy0) * a_.w + ix0) * a_.c;
  }

  // The taps of output pixel (oy, ox), channel 0.
  PixelTaps at(int oy, int ox) {
    const int iy0 = oy * a_.stride_h - a_.pad_t, ix0 = ox * a_.stride_w - a_.pad_l;
    if (rows_inside(oy) && ox >= ox_begin_ && ox < ox_end_) {
      return {reinterpret_cast<uintptr_t>(corner(oy, ox)), offsets_};
    } else {
      for (int ky = 0; ky < a_.kh; ++ky) {
        const int iy = iy0 + ky * a_.dil_h;
        for (int kx = 0; kx < a_.kw; ++kx) {
          const int ix = ix0 + kx * a_.dil_w;
          const bool inside = iy >= 0 && iy < a_.h && ix >= 0 && ix < a_.w;
          const uint8_t* p = inside ? a_.x + (static_cast<ptrdiff_t>(iy) * a_.w + ix) * a_.c : a_.pad_row;
          border_[ky * a_.kw + kx] = reinterpret_cast<uintptr_t>(p);
        }
      }
      return {0, border_};
    }
  }

 private:
  const qr::DwConvArgs& a_;
  const uintptr_t* offsets_;
  uintptr_t* border_;
  int ox_begin_ = 0, ox_end_ = 0;
};

// The loop every ISA's depthwise kernel shares, over the output pixels of rows [oh_begin, oh_end).
// Each row's pixels whose windows lie inside the image go to run(corner, step, count, out) as one run:
// tap t of the run's pixel j (j < count) reads at corner + j * step + tap_offsets[t], and its output
// is at out + j * c. Every other pixel goes to single(taps, out). Within a run a kernel can share
// each weight load among several pixels and give them independent accumulator chains.
template <class Run, class Single>
void for_each_pixel_run(const qr::DwConvArgs& a, Run&& run, Single&& single) {
  DwTaps window(a);
  const ptrdiff_t step = static_cast<ptrdiff_t>(a.stride_w) * a.c;
  for (int oy = a.oh_begin; oy < a.oh_end; ++oy) {
    uint8_t* row = a.y + static_cast<size_t>(oy) * a.ow * a.c;
    int ox = 0;
    if (window.rows_inside(oy)) {
      for (; ox < window.ox_begin(); ++ox) single(window.at(oy, ox), row + static_cast<size_t>(ox) * a.c);
      if (ox < window.ox_end()) {
        run(window.corner(oy, ox), step, window.ox_end() - ox, row + static_cast<size_t>(ox) * a.c);
        ox = window.ox_end();
      }
    }
    for (; ox < a.ow; ++ox) single(window.at(oy, ox), row + static_cast<size_t>(ox) * a.c);
  }
}

}  // namespace
