// The scalar reference of the byte moves (kernels.h, BytePermuteKernels): one byte at a time.
#include "kernels/ref/ref.h"

namespace qr::ref {
namespace {

void lut(const uint8_t* __restrict x, uint8_t* __restrict y, int64_t n, const uint8_t* __restrict table) {
  for (int64_t i = 0; i < n; ++i) y[i] = table[x[i]];
}

void lut_channels(const uint8_t* __restrict x, uint8_t* __restrict y, int64_t rows, int64_t c,
                  const uint8_t* __restrict tables) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t ch = 0; ch < c; ++ch) y[r * c + ch] = tables[ch * 256 + x[r * c + ch]];
}

// Reads only plan.index: the windows are for the SIMD paths.
void gather(const uint8_t* __restrict x, int64_t c_in, uint8_t* __restrict y, int64_t rows, const ByteGatherPlan& plan) {
  const int32_t* __restrict index = plan.index;
  const int64_t c_out = plan.c_out;
  for (int64_t r = 0; r < rows; ++r) {
    const uint8_t* xr = x + r * c_in;
    uint8_t* yr = y + r * c_out;
    for (int64_t i = 0; i < c_out; ++i) yr[i] = xr[index[i]];
  }
}

constexpr BytePermuteKernels kKernels = {"scalar", lut, lut_channels, gather};

}  // namespace

const BytePermuteKernels* byte_kernels() { return &kKernels; }

}  // namespace qr::ref
