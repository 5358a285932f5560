// Exact u8*s8 GEMM with 256-bit vpdpbusd (AVX-VNNI): 4 u8*s8 products added into each int32 lane,
// no intermediate saturation. One source, three encodings of the same instruction, chosen by macro:
//   default         VEX `_mm256_dpbusd_avx_epi32` (-mavxvnni), path avx_vnni;
//   QR_VNNI_EVEX    EVEX `_mm256_dpbusd_epi32` (-mavx512vnni -mavx512vl), path avx_vnni_evex;
//   QR_EMULATED     SIMDe's `simde_mm256_dpbusd_epi32` on AVX2, path avx_vnni_emulated.
//
// Register map of the micro-kernel (qgemm_u8s8_6x16__avxvnni): 6 rows x 16 columns of C in 12 ymm
// accumulators (acc[r][0] columns 0-7, acc[r][1] columns 8-15), 2 ymm of B (one K group of 4 for 16
// columns), 1 broadcast of 4 bytes of A (vpbroadcastd; VEX vpdpbusd has no embedded broadcast):
// 15 of 16 registers.
// Layouts (docs/kernels.md, "avx_vnni"):
//   packed B panel: [K groups][16 columns][4 bytes: b(n,4g..4g+3)], zero padded in K and N.
//   packed A (per block, in scratch): strips of 6 rows, each [K groups][6 rows][4 bytes], K zero
//     padded, so one pointer with constant offsets feeds every broadcast of a K group.
// The accumulators start from the bias; the epilogue is avx2's (epilogue_avx2.h), bit-identical
// to the scalar reference.
#include "kernels/avxvnni/vnni256.h"

#include <cstring>

#include "kernels/avx2/epilogue_avx2.h"
#include "kernels/avxvnni/avxvnni.h"
#include "kernels/vnni_pack_b.h"

namespace qr::QR_ISA_NS {
namespace {

constexpr int kMR = 6;
constexpr int kNR = 16;
constexpr int kMC = kMR * 16;

int groups(int k) { return (k + 3) / 4; }

size_t panel_bytes(int k) { return static_cast<size_t>(groups(k)) * kNR * 4; }

size_t packed_b_bytes(int n, int k) { return static_cast<size_t>((n + kNR - 1) / kNR) * panel_bytes(k); }

void pack_b(const int8_t* b, ptrdiff_t ldb, int n, int k, int /*run_bytes*/, int8_t* dst) {
  pack_b_vnni_groups<kNR>(b, ldb, n, k, groups(k), dst);
}

size_t a_strip_bytes(int k) { return static_cast<size_t>(groups(k)) * kMR * 4; }

size_t scratch_bytes(int k) { return (kMC / kMR) * a_strip_bytes(k); }

// Interleaves rows of A into strips of kMR rows, K zero padded to a multiple of 4. Word copies: the
// packing is O(M K / 4) against the kernel's O(M N K / 32), and it runs once per block.
void pack_a(const uint8_t* a, ptrdiff_t lda, int m, int k, uint8_t* dst) {
  const int full = k / 4, rem = k % 4;
  constexpr size_t kGroupBytes = kMR * 4;
  for (int s0 = 0; s0 < m; s0 += kMR) {
    uint8_t* strip = dst + (s0 / kMR) * a_strip_bytes(k);
    const int rows = m - s0 < kMR ? m - s0 : kMR;
    for (int r = 0; r < rows; ++r) {
      const uint8_t* src = a + (s0 + r) * lda;
      uint8_t* out = strip + r * 4;
      for (int g = 0; g < full; ++g) std::memcpy(out + g * kGroupBytes, src + 4 * g, 4);
      if (rem) {
        uint32_t tail = 0;
        std::memcpy(&tail, src + 4 * full, rem);
        std::memcpy(out + full * kGroupBytes, &tail, 4);
      }
    }
  }
}

// The K loop of an R x 16 tile: accumulators from init0/init1 (columns 0-7, 8-15), out[r] gets
// row r's. Its own (non-inlined) function: inlined into the epilogue, GCC kept the accumulators'
// home on the stack and stored 10 of the 12 every K group (docs/kernels.md, the avx2 kernels).
// V = column vectors computed: 2 (16 columns), or 1 when the panel holds at most 8 valid columns
// (a narrow layer or the tail of one).
template <int R, int V>
__attribute__((noinline)) void accumulate(const int32_t* ap, const int8_t* b, int kg, __m256i init0, __m256i init1,
                                          __m256i (&out)[R][2]) {
  __m256i acc[R][2];
#pragma GCC unroll 6
  for (int r = 0; r < R; ++r) {
    acc[r][0] = init0;
    acc[r][1] = init1;
  }
  for (int g = 0; g < kg; ++g, ap += kMR, b += 64) {
    const __m256i b0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b));
    const __m256i b1 = V == 2 ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 32)) : _mm256_setzero_si256();
#pragma GCC unroll 6
    for (int r = 0; r < R; ++r) {
      const __m256i av = _mm256_set1_epi32(ap[r]);
      acc[r][0] = QR_DPBUSD256(acc[r][0], av, b0);
      if (V == 2) acc[r][1] = QR_DPBUSD256(acc[r][1], av, b1);
    }
  }
#pragma GCC unroll 6
  for (int r = 0; r < R; ++r) {
    out[r][0] = acc[r][0];
    out[r][1] = acc[r][1];
  }
}

template <int R, int V>
void micro_kernel(const uint8_t* a_strip, const int8_t* b, int kg, const Epilogue& ep, int col, uint8_t* c,
                  size_t c_row_bytes, int valid) {
  __m256i bias0, bias1;
  init_acc16(ep, col, bias0, bias1);
  __m256i acc[R][2];
  accumulate<R, V>(reinterpret_cast<const int32_t*>(a_strip), b, kg, bias0, bias1, acc);
  store_rows16<R, true>(acc, ep, col, c, c_row_bytes, valid);
}

using MicroKernel = void (*)(const uint8_t*, const int8_t*, int, const Epilogue&, int, uint8_t*, size_t, int);
template <int V>
constexpr MicroKernel kMicroKernels[kMR + 1] = {nullptr,           micro_kernel<1, V>, micro_kernel<2, V>, micro_kernel<3, V>,
                                                micro_kernel<4, V>, micro_kernel<5, V>, micro_kernel<6, V>};

void gemm_block(const GemmBlock& blk) {
  uint8_t* a_packed = static_cast<uint8_t*>(blk.scratch);
  pack_a(blk.a, blk.lda, blk.m, blk.k, a_packed);
  const size_t strip = a_strip_bytes(blk.k);
  const size_t pbytes = panel_bytes(blk.k);
  const size_t esize = blk.ep.requantize ? 1 : 4;
  const size_t c_row_bytes = blk.ldc * esize;
  const int kg = groups(blk.k);
  for (int j = 0; j < blk.n; j += kNR) {
    const int8_t* panel = blk.b_panel + static_cast<size_t>(j / kNR) * pbytes;
    const int valid = blk.n - j < kNR ? blk.n - j : kNR;
    uint8_t* c_col = static_cast<uint8_t*>(blk.c) + j * esize;
    for (int i = 0; i < blk.m; i += kMR) {
      const int rows = blk.m - i < kMR ? blk.m - i : kMR;
      const MicroKernel kernel = valid > 8 ? kMicroKernels<2>[rows] : kMicroKernels<1>[rows];
      kernel(a_packed + (i / kMR) * strip, panel, kg, blk.ep, j, c_col + i * c_row_bytes, c_row_bytes, valid);
    }
  }
}

constexpr GemmKernels kKernels = {QR_ISA_NAME, kNR, kMR, kMC, packed_b_bytes, pack_b, scratch_bytes, gemm_block, nullptr, false};

}  // namespace

const GemmKernels* gemm_kernels() { return &kKernels; }

}  // namespace qr::QR_ISA_NS
