// Exact u8*s8 GEMM for AVX-512 VNNI: vpdpbusd adds 4 u8*s8 products per int32 lane, unsaturated.
//
// Register map of the micro-kernel (qgemm_u8s8_14x32__avx512vnni): 14 rows x 32 columns of C in
// 28 zmm accumulators (acc[r][0] columns 0-15, acc[r][1] columns 16-31), 2 zmm of B (one K group
// of 4 for 32 columns), and one broadcast of 4 bytes of A per row (folded into vpdpbusd's memory
// operand where the compiler can): 30 of 32 registers.
// Layouts (docs/kernels.md, "avx512_vnni"):
//   packed B panel: [K groups][32 columns][4 bytes: b(n,4g..4g+3)], zero padded in K and N.
//   packed A (per block, in scratch): strips of 14 rows, each [K groups][14 rows] 4 bytes, zero
//     padded in K, so one pointer with constant offsets feeds every broadcast of a K group.
#include "kernels/avx512vnni/avx512vnni.h"

#include <cstring>

#include "kernels/avx512vnni/epilogue_avx512.h"
#include "kernels/vnni_pack_b.h"

namespace qr::QR_ISA_NS {
namespace {

constexpr int kMR = 14;
constexpr int kNR = 32;
constexpr int kMC = kMR * 8;

int groups(int k) { return (k + 3) / 4; }

size_t panel_bytes(int k) { return static_cast<size_t>(groups(k)) * kNR * 4; }

size_t packed_b_bytes(int n, int k) { return static_cast<size_t>((n + kNR - 1) / kNR) * panel_bytes(k); }

void pack_b(const int8_t* b, ptrdiff_t ldb, int n, int k, int /*run_bytes*/, int8_t* dst) { pack_b_groups(b, ldb, n, k, groups(k), dst); }

size_t a_strip_bytes(int k) { return static_cast<size_t>(groups(k)) * kMR * 4; }

// Stores the four 128-bit lanes of q (lane L: 4 words for group g + 4L) at out + 4L groups.
inline void store_lanes(__m512i q, uint8_t* out, size_t group_bytes) {
  _mm_storeu_si128(reinterpret_cast<__m128i*>(out), _mm512_castsi512_si128(q));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 4 * group_bytes), _mm512_extracti32x4_epi32(q, 1));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 8 * group_bytes), _mm512_extracti32x4_epi32(q, 2));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 12 * group_bytes), _mm512_extracti32x4_epi32(q, 3));
}

// Interleaves rows of A into strips of kMR rows, K zero padded to a multiple of 4. Four rows and
// 16 (then 4) groups at a time go through a 4x4 transpose of 32-bit words in each 128-bit lane; the
// rest (a strip's last rows % 4, K beyond a multiple of 16) is copied word by word.
void pack_a(const uint8_t* a, ptrdiff_t lda, int m, int k, uint8_t* dst) {
  const int full = k / 4, rem = k % 4, vec_groups = full / 16 * 16, vec4_groups = full / 4 * 4;
  constexpr size_t kGroupBytes = kMR * 4;
  for (int s0 = 0; s0 < m; s0 += kMR) {
    uint8_t* strip = dst + (s0 / kMR) * a_strip_bytes(k);
    const int rows = m - s0 < kMR ? m - s0 : kMR;
    const int vec_rows = rows / 4 * 4;
    for (int r = 0; r < vec_rows; r += 4) {
      const uint8_t* src = a + (s0 + r) * lda;
      for (int g = 0; g < vec_groups; g += 16) {
        const __m512i x0 = _mm512_loadu_si512(src + 4 * g);
        const __m512i x1 = _mm512_loadu_si512(src + lda + 4 * g);
        const __m512i x2 = _mm512_loadu_si512(src + 2 * lda + 4 * g);
        const __m512i x3 = _mm512_loadu_si512(src + 3 * lda + 4 * g);
        const __m512i t0 = _mm512_unpacklo_epi32(x0, x1);  // lane L: r0 r1 of group 4L, r0 r1 of 4L+1
        const __m512i t1 = _mm512_unpackhi_epi32(x0, x1);  // lane L: r0 r1 of 4L+2, r0 r1 of 4L+3
        const __m512i t2 = _mm512_unpacklo_epi32(x2, x3);
        const __m512i t3 = _mm512_unpackhi_epi32(x2, x3);
        uint8_t* out = strip + (g * kMR + r) * 4;
        store_lanes(_mm512_unpacklo_epi64(t0, t2), out, kGroupBytes);  // rows r..r+3 of groups 4L
        store_lanes(_mm512_unpackhi_epi64(t0, t2), out + kGroupBytes, kGroupBytes);
        store_lanes(_mm512_unpacklo_epi64(t1, t3), out + 2 * kGroupBytes, kGroupBytes);
        store_lanes(_mm512_unpackhi_epi64(t1, t3), out + 3 * kGroupBytes, kGroupBytes);
      }
      // The same transpose on 128 bits for the last whole 4-group chunks (small K: a first layer).
      for (int g = vec_groups; g < vec4_groups; g += 4) {
        const __m128i x0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 4 * g));
        const __m128i x1 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + lda + 4 * g));
        const __m128i x2 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 2 * lda + 4 * g));
        const __m128i x3 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 3 * lda + 4 * g));
        const __m128i t0 = _mm_unpacklo_epi32(x0, x1), t1 = _mm_unpackhi_epi32(x0, x1);
        const __m128i t2 = _mm_unpacklo_epi32(x2, x3), t3 = _mm_unpackhi_epi32(x2, x3);
        uint8_t* out = strip + (g * kMR + r) * 4;
        _mm_storeu_si128(reinterpret_cast<__m128i*>(out), _mm_unpacklo_epi64(t0, t2));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(out + kGroupBytes), _mm_unpackhi_epi64(t0, t2));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 2 * kGroupBytes), _mm_unpacklo_epi64(t1, t3));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 3 * kGroupBytes), _mm_unpackhi_epi64(t1, t3));
      }
    }
    for (int r = 0; r < rows; ++r) {
      const uint8_t* src = a + (s0 + r) * lda;
      uint8_t* out = strip + r * 4;
      for (int g = r < vec_rows ? vec4_groups : 0; g < full; ++g) std::memcpy(out + g * kGroupBytes, src + 4 * g, 4);
      if (rem) {
        uint32_t tail = 0;
        std::memcpy(&tail, src + 4 * full, rem);
        std::memcpy(out + full * kGroupBytes, &tail, 4);
      }
    }
  }
}

// V = column vectors computed: 2 (32 columns), or 1 when the panel holds at most 16 valid columns
// (a narrow layer or the tail of one), which halves the work instead of multiplying zeros.
template <int R, int V>
void micro_kernel(const uint8_t* a_strip, const int8_t* b, int kg, const Epilogue& ep, int col, uint8_t* c,
                  size_t c_row_bytes, int valid) {
  __m512i acc[R][2];
#pragma GCC unroll 14
  for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = _mm512_setzero_si512();
  const int32_t* ap = reinterpret_cast<const int32_t*>(a_strip);
  for (int g = 0; g < kg; ++g, ap += kMR) {
    const __m512i b0 = _mm512_loadu_si512(b + g * 128);
    const __m512i b1 = V == 2 ? _mm512_loadu_si512(b + g * 128 + 64) : _mm512_setzero_si512();
#pragma GCC unroll 14
    for (int r = 0; r < R; ++r) {
      const __m512i av = _mm512_set1_epi32(ap[r]);
      acc[r][0] = _mm512_dpbusd_epi32(acc[r][0], av, b0);
      if (V == 2) acc[r][1] = _mm512_dpbusd_epi32(acc[r][1], av, b1);
    }
  }
  store_rows32<R>(acc, ep, col, c, c_row_bytes, valid);
}

using MicroKernel = void (*)(const uint8_t*, const int8_t*, int, const Epilogue&, int, uint8_t*, size_t, int);
template <int V>
constexpr MicroKernel kMicroKernels[kMR + 1] = {
    nullptr,             micro_kernel<1, V>,  micro_kernel<2, V>,  micro_kernel<3, V>,  micro_kernel<4, V>,
    micro_kernel<5, V>,  micro_kernel<6, V>,  micro_kernel<7, V>,  micro_kernel<8, V>,  micro_kernel<9, V>,
    micro_kernel<10, V>, micro_kernel<11, V>, micro_kernel<12, V>, micro_kernel<13, V>, micro_kernel<14, V>};

void gemm_block(const GemmBlock& blk) { gemm_block_panels(blk, panel_bytes(blk.k)); }

}  // namespace

void pack_b_groups(const int8_t* b, ptrdiff_t ldb, int n, int k, int kg, int8_t* dst) {
  pack_b_vnni_groups<kNR>(b, ldb, n, k, kg, dst);
}

size_t vnni_scratch_bytes(int k) { return (kMC / kMR) * a_strip_bytes(k); }

void gemm_block_panels(const GemmBlock& blk, size_t pbytes) {
  uint8_t* a_packed = static_cast<uint8_t*>(blk.scratch);
  pack_a(blk.a, blk.lda, blk.m, blk.k, a_packed);
  const size_t strip = a_strip_bytes(blk.k);
  const size_t esize = blk.ep.requantize ? 1 : 4;
  const size_t c_row_bytes = blk.ldc * esize;
  const int kg = groups(blk.k);
  for (int j = 0; j < blk.n; j += kNR) {
    const int8_t* panel = blk.b_panel + static_cast<size_t>(j / kNR) * pbytes;
    const int valid = blk.n - j < kNR ? blk.n - j : kNR;
    uint8_t* c_col = static_cast<uint8_t*>(blk.c) + j * esize;
    for (int i = 0; i < blk.m; i += kMR) {
      const int rows = blk.m - i < kMR ? blk.m - i : kMR;
      const MicroKernel kernel = valid > 16 ? kMicroKernels<2>[rows] : kMicroKernels<1>[rows];
      kernel(a_packed + (i / kMR) * strip, panel, kg, blk.ep, j, c_col + i * c_row_bytes, c_row_bytes, valid);
    }
  }
}

namespace {
constexpr GemmKernels kKernels = {QR_ISA_NAME, kNR, kMR, kMC, packed_b_bytes, pack_b, vnni_scratch_bytes, gemm_block, nullptr, false};
}

const GemmKernels* gemm_kernels() { return &kKernels; }

}  // namespace qr::QR_ISA_NS
