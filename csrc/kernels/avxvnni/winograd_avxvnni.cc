// Exact int8 Winograd for 3x3 convs with 256-bit vpdpwssd (AVX-VNNI; kernels/winograd_body.inc on
// ymm, kernels/winograd_ymm.inc): avx2's tiles and panels, the K loop's vpmaddwd + vpaddd pair one
// vpdpwssd (2 int16 products per int32 lane, summed with wrap-around). Three encodings, as
// gemm_avxvnni.cc: VEX (avx_vnni), EVEX (avx_vnni_evex), SIMDe (avx_vnni_emulated).
// As on avx512_vnni, vpdpwssd does half of vpdpbusd's products per instruction, so only F(4x4) and
// F(3x3) are taken, at stride 1.
// Register map of the K loop (k_loop<R>): R <= 6 tiles x 16 output channels in 2R ymm
// accumulators, 2 ymm of weights per K pair, one broadcast: 15 of 16 registers, the GEMM's 6x16.
#include "kernels/avxvnni/vnni256.h"

#include <algorithm>
#include <cstring>

#include "kernels/avx2/epilogue_avx2.h"
#include "kernels/avxvnni/avxvnni.h"

namespace qr::QR_ISA_NS {
namespace {

constexpr const char* kIsaName = QR_ISA_NAME;
constexpr int kNR = 16;
constexpr int kMR = 6;
constexpr size_t kVBudget = 256 * 1024;
constexpr size_t kUGroupBudget = 128 * 1024;
constexpr int kMinChannels = 24, kMaxChannels = 256, kF4MaxChannels = 128, kF3MaxChannels = 256;
constexpr int kS2MinChannels = 1, kS2MaxChannels = 0;  // stride 2: none

#include "kernels/winograd_ymm.inc"

template <int R>
__attribute__((always_inline)) inline void k_loop(const int32_t* const* arow, const int16_t* b, int npairs,
                                                  size_t slab, VecI (&acc)[R][2]) {
  for (int p = 0; p < npairs; ++p) {
    const __m256i b0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + p * 32));
    const __m256i b1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + p * 32 + 16));
    __builtin_prefetch(b + p * 32 + slab, 0, 2);  // the next position's weights (the last: the next panel's)
#pragma GCC unroll 6
    for (int r = 0; r < R; ++r) {
      const __m256i av = _mm256_set1_epi32(arow[r][p]);
      acc[r][0] = QR_DPWSSD256(acc[r][0], av, b0);
      acc[r][1] = QR_DPWSSD256(acc[r][1], av, b1);
    }
  }
}

#include "kernels/winograd_body.inc"

}  // namespace

const WinogradKernels* winograd_kernels() { return &kKernels; }

}  // namespace qr::QR_ISA_NS
