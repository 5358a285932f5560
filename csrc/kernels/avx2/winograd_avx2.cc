// Exact int8 Winograd for 3x3 convs on AVX2 (kernels/winograd_body.inc): 16 int16 lanes per ymm,
// panels of 16 output channels, and per transformed position the exact GEMM's vpmaddwd K loop
// (vpmaddwd_avx2.h) on strips of 5 tiles.
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "kernels/avx2/avx2.h"
#include "kernels/avx2/epilogue_avx2.h"
#include "kernels/avx2/vpmaddwd_avx2.h"

namespace qr::avx2 {
namespace {

constexpr const char* kIsaName = "avx2";
constexpr int kNR = 16;       // output channels per panel: the K loop's
constexpr int kMR = 5;        // tiles per K loop call: its rows
constexpr size_t kVBudget = 256 * 1024;  // bytes of V per call: half of a Zen 3 / Skylake-SP L2
constexpr size_t kUGroupBudget = 128 * 1024;  // bytes of weights a strip runs through before the next

// Which input channel counts C get which variant.
// Stride 1: from 16 (with fewer the tile transforms cost about what the products save: Zen 3, 1
// thread, 28x28, 8 channels ran 0.81-1.04x the direct GEMM's speed under F(2x2, 3x3), 16 ran
// 1.32x) to 1841 (the bound of F(2x2) and F(3x3): |4 acc| < 2^31, 255 * 127 * 9 * 1841 < 2^29 <=
// 255 * 127 * 9 * 1842). Per output F(4x4, 3x3) takes 2.25 products, F(3x3, 3x3) 2.78, F(2x2,
// 3x3) 4, but their U' are 36, 25 and 16 int16 per filter, and the wider layers of a network are
// its small images, whose weights stream from memory and whose outputs a large tile overhangs:
// F(4x4) up to 128 channels, F(3x3) up to 256, F(2x2) above. (Zen 3, 1 thread: F(3x3) against
// F(2x2) 1.16x at 14x14x256, 1.29x at 28x28x256, 1.15x at 7x7x512 alone, but in ResNet-18 its
// 7x7x512 layers gained under 3 % for 14 MB more weights.)
constexpr int kMinChannels = 16, kMaxChannels = 1841, kF4MaxChannels = 128, kF3MaxChannels = 256;
// Stride 2: 32 to 128. Its U' is 25/9 of the direct GEMM's int16 panels, so where they stream
// from memory it loses (Zen 3, 1 thread, against the GEMM: 14x14 input of 256 or 512 channels
// 0.88-0.90x, 56x56 of 16 0.94x; 56x56 of 32 and 64, 28x28 of 128: 1.18-1.28x).
constexpr int kS2MinChannels = 32, kS2MaxChannels = 128;

#include "kernels/winograd_ymm.inc"

// The exact GEMM's K loop, prefetching beside each pair's weights the next position's.
template <int R>
__attribute__((always_inline)) inline void k_loop(const int32_t* const* arow, const int16_t* b, int npairs,
                                                  size_t slab, VecI (&acc)[R][2]) {
  vpmaddwd_loop<R>(arow, reinterpret_cast<const int8_t*>(b), npairs, static_cast<ptrdiff_t>(slab) * 2, acc);
}

#include "kernels/winograd_body.inc"

}  // namespace

const WinogradKernels* winograd_kernels() { return &kKernels; }

}  // namespace qr::avx2
