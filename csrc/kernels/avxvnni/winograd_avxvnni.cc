// Exact int8 Winograd for 3x3 convs with 256-bit vpdpwssd (AVX-VNNI; kernels/winograd_body.inc on
// ymm, kernels/winograd_ymm.inc): avx2's tiles and panels, the K loop's vpmaddwd + vpaddd pair one
// vpdpwssd (2 int16 products per int32 lane, summed with wrap-around). Three encodings, as
// gemm_avxvnni.cc: VEX (avx_vnni), EVEX (avx_vnni_evex), SIMDe (avx_vnni_emulated).
// As on avx512_vnni, vpdpwssd does half of vpdpbusd's products per instruction, so only F(4x4) and
// F(3x3) are taken, at stride 1.
// Register map of the K loop (strip_gemm<R>): R <= 6 tiles x 16 output channels in 2R ymm
// accumulators, 2 ymm of weights per K pair, one broadcast: 15 of 16 registers, the GEMM's 6x16.
#if defined(QR_EMULATED)
#include "kernels/avx512_intrinsics.h"
#define QR_DPWSSD256(acc, a, b) _mm256_dpwssd_epi32(acc, a, b)
#elif defined(QR_VNNI_EVEX)
#include <immintrin.h>
#define QR_DPWSSD256(acc, a, b) _mm256_dpwssd_epi32(acc, a, b)
#else
#include <immintrin.h>
#define QR_DPWSSD256(acc, a, b) _mm256_dpwssd_avx_epi32(acc, a, b)
#endif

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
__attribute__((noinline)) void strip_gemm(const int16_t* v, size_t v_position_elems, int row_pairs,
                                          const int16_t* panel, size_t slab, int npairs, int xi0, int xi1, int32_t* m) {
  for (int xi = xi0; xi < xi1; ++xi) {
    const int32_t* arow[R];
#pragma GCC unroll 6
    for (int r = 0; r < R; ++r) arow[r] = reinterpret_cast<const int32_t*>(v + xi * v_position_elems) + r * row_pairs;
    __m256i acc[R][2];
#pragma GCC unroll 6
    for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_si256();
    const int16_t* b = panel + xi * slab;
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
#pragma GCC unroll 6
    for (int r = 0; r < R; ++r) {
      store32(m + (xi * kMR + r) * kNR, acc[r][0]);
      store32(m + (xi * kMR + r) * kNR + kLanes32, acc[r][1]);
    }
  }
}

using StripGemm = void (*)(const int16_t*, size_t, int, const int16_t*, size_t, int, int, int, int32_t*);
constexpr StripGemm kStripGemms[kMR + 1] = {nullptr,       strip_gemm<1>, strip_gemm<2>, strip_gemm<3>,
                                            strip_gemm<4>, strip_gemm<5>, strip_gemm<6>};

#include "kernels/winograd_body.inc"

}  // namespace

const WinogradKernels* winograd_kernels() { return &kKernels; }

}  // namespace qr::QR_ISA_NS
