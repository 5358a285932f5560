// Exact int8 Winograd for 3x3 convs on AVX-512 VNNI (kernels/winograd_body.inc): 32 int16 lanes per
// zmm, panels of 32 output channels, and per transformed position a vpdpwssd K loop (2 int16
// products per int32 lane, summed with wrap-around, as the exact bounds need) on strips of kMR tiles.
// vpdpwssd does half of vpdpbusd's products per instruction, so a variant keeps half its saving in
// products before its transforms: F(4x4, 3x3) 2x, F(3x3, 3x3) 1.62x, F(2x2, 3x3) 1.125x, the
// stride-2 phases 0.72x.
//
// Register map of the K loop (k_loop<R>): R <= kMR tiles x 32 output channels in 2R zmm
// accumulators, 2 zmm of weights per K pair, one broadcast of a tile's pair.
#include "kernels/avx512_intrinsics.h"

#include <algorithm>
#include <cstring>

#include "kernels/avx512vnni/avx512vnni.h"
#include "kernels/avx512vnni/epilogue_avx512.h"

namespace qr::QR_ISA_NS {
namespace {

constexpr const char* kIsaName = QR_ISA_NAME;
constexpr int kNR = 32;  // output channels per panel: 2 zmm of int32
// Tiles per K loop call: 28 accumulators, the GEMM's 14 x 32 tile. Each K pair's two weight vectors
// come from L2 (a strip runs through its panel's U' of every position), so the more tiles share
// them the better, though one strip's M (F(4x4)) is then 63 KB, past L1. (Xeon, 1 thread: ResNet-18's
// seven F(4x4) convs in all, alternating processes: 8 tiles 1.82-2.56 ms, 14 tiles 4-14 % less;
// 6 tiles against 8, alone: 56x56x64 0.386-0.391 against 0.376-0.379 ms.)
constexpr int kMR = 14;
constexpr size_t kVBudget = 256 * 1024;  // bytes of V per call
constexpr size_t kUGroupBudget = 256 * 1024;  // avx2's 128 KB per 16 channels: the same C thresholds

// Which input channel counts C get which variant: F(4x4) from 24 to 128 (its chunks as on avx2),
// F(3x3) to 256. Against the GEMM (Xeon, 1 thread, ops.conv2d): 56x56 of 16 channels 0.88x, 24
// 1.08x, 32 1.52x, 64 1.41-1.52x; 28x28x128 1.21-1.33x; F(3x3) at 14x14x256 1.13-1.16x at batch 1,
// 1.21-1.27x at 16, and in ResNet-18 its three such layers took 3-5 % off the whole run. F(2x2) on
// ResNet-18's 7x7x512 layers made the run 12-32 % slower (their 4.7 MB of U' per conv stream from
// memory for 16 tiles), so it is not taken.
constexpr int kMinChannels = 24, kMaxChannels = 256, kF4MaxChannels = 128, kF3MaxChannels = 256;
// Stride 2: none (an empty range).
constexpr int kS2MinChannels = 1, kS2MaxChannels = 0;

using VecI = __m512i;
constexpr int kLanes16 = 32, kLanes32 = 16;
inline VecI add16(VecI a, VecI b) { return _mm512_add_epi16(a, b); }
inline VecI sub16(VecI a, VecI b) { return _mm512_sub_epi16(a, b); }
template <int k>
inline VecI shl16(VecI a) { return _mm512_slli_epi16(a, k); }
inline VecI add32(VecI a, VecI b) { return _mm512_add_epi32(a, b); }
inline VecI sub32(VecI a, VecI b) { return _mm512_sub_epi32(a, b); }
template <int k>
inline VecI shl32(VecI a) { return _mm512_slli_epi32(a, k); }
template <int k>
inline VecI sra32(VecI a) { return _mm512_srai_epi32(a, k); }
inline VecI mul32(VecI a, VecI b) { return _mm512_mullo_epi32(a, b); }
inline VecI set1_16(int16_t v) { return _mm512_set1_epi16(v); }
inline VecI set1_32(int32_t v) { return _mm512_set1_epi32(v); }
inline VecI load_u8(const uint8_t* p) { return _mm512_cvtepu8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))); }
// A masked load: the bytes past n are neither read (no fault past an image's end) nor kept.
inline VecI load_u8_part(const uint8_t* p, int n) {
  return _mm512_cvtepu8_epi16(_mm256_maskz_loadu_epi8(static_cast<__mmask32>((1u << n) - 1), p));
}
inline VecI load32(const int32_t* p) { return _mm512_load_si512(p); }
inline void store32(int32_t* p, VecI v) { _mm512_store_si512(p, v); }
inline void storeu16(int16_t* p, VecI v) { _mm512_storeu_si512(p, v); }
template <int R>
inline void store_rows(VecI (&px)[R][2], const Epilogue& ep, int col, uint8_t* row, size_t row_bytes, int valid) {
  store_rows32<R>(px, ep, col, row, row_bytes, valid);
}

template <int R>
__attribute__((always_inline)) inline void k_loop(const int32_t* const* arow, const int16_t* b, int npairs,
                                                  size_t slab, VecI (&acc)[R][2]) {
  for (int p = 0; p < npairs; ++p) {
    const __m512i b0 = _mm512_loadu_si512(b + p * 64);
    const __m512i b1 = _mm512_loadu_si512(b + p * 64 + 32);
    // The next position's weights (the last: the next panel's), two lines per pair.
    __builtin_prefetch(b + p * 64 + slab, 0, 2);
    __builtin_prefetch(b + p * 64 + slab + 32, 0, 2);
#pragma GCC unroll 14
    for (int r = 0; r < R; ++r) {
      const __m512i av = _mm512_set1_epi32(arow[r][p]);
      acc[r][0] = _mm512_dpwssd_epi32(acc[r][0], av, b0);
      acc[r][1] = _mm512_dpwssd_epi32(acc[r][1], av, b1);
    }
  }
}

#include "kernels/winograd_body.inc"

}  // namespace

const WinogradKernels* winograd_kernels() { return &kKernels; }

}  // namespace qr::QR_ISA_NS
