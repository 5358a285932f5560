// The scalar reference depthwise convolution: the normative definition the SIMD paths must equal.
#include "kernels/ref/ref.h"

namespace qr::ref {
namespace {

void dwconv(const DwConvArgs& a) {
  for (int oy = a.oh_begin; oy < a.oh_end; ++oy) {
    for (int ox = 0; ox < a.ow; ++ox) {
      uint8_t* out = a.y + (static_cast<size_t>(oy) * a.ow + ox) * a.c;
      for (int ch = 0; ch < a.c; ++ch) {
        int32_t acc = 0;
        for (int ky = 0; ky < a.kh; ++ky) {
          const int iy = oy * a.stride_h - a.pad_t + ky * a.dil_h;
          for (int kx = 0; kx < a.kw; ++kx) {
            const int ix = ox * a.stride_w - a.pad_l + kx * a.dil_w;
            const bool inside = iy >= 0 && iy < a.h && ix >= 0 && ix < a.w;
            const uint8_t v = inside ? a.x[(static_cast<size_t>(iy) * a.w + ix) * a.c + ch] : a.pad_row[ch];
            acc += static_cast<int32_t>(v) * a.weights[(ky * a.kw + kx) * a.c_stride + ch];
          }
        }
        out[ch] = requantize(acc, a.ep.bias[ch], a.ep.mult[ch], a.ep.out_zp, a.ep.lo, a.ep.hi);
      }
    }
  }
}

constexpr DwConvKernels kKernels = {"scalar", dwconv, nullptr, nullptr};

}  // namespace

const DwConvKernels* dwconv_kernels() { return &kKernels; }

}  // namespace qr::ref
