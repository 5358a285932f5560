// Exact u8*s8 GEMM for AVX2: both operands widened to int16, vpmaddwd, int32 accumulation.
//
// Register map of the micro-kernel (qgemm_u8s8_5x16__avx2): 5 rows x 16 columns of C held in
// 10 ymm accumulators (acc[r][0] columns 0-7, acc[r][1] columns 8-15), 2 ymm of B (one K pair for
// 16 columns, int16), 1 ymm broadcast of one row's K pair of A, 2 for the products before they are
// added: 15 of 16 registers. (6 rows would need 17 and spill two accumulators every K pair.)
// Layouts (docs/kernels.md, "avx2"):
//   packed B panel: [ceil(K/2) pairs][16 columns][b(n,2p), b(n,2p+1)] int16, zero padded in K and N.
//   packed A (per block, in scratch): [row][ceil(K/2) pairs] uint32 = two zero-extended bytes.
// vpmaddwd multiplies int16 pairs and adds them into int32: 255*127*2 fits, so nothing saturates.
#include <immintrin.h>

#include <cstring>

#include "kernels/avx2/avx2.h"
#include "kernels/avx2/epilogue_avx2.h"

namespace qr::avx2 {
namespace {

constexpr int kMR = 5;
constexpr int kNR = 16;
constexpr int kMC = kMR * 8;

int pairs(int k) { return (k + 1) / 2; }

size_t panel_bytes(int k) { return static_cast<size_t>(pairs(k)) * kNR * 4; }

size_t packed_b_bytes(int n, int k) { return static_cast<size_t>((n + kNR - 1) / kNR) * panel_bytes(k); }

void pack_b(const int8_t* b, ptrdiff_t ldb, int n, int k, int8_t* dst) {
  int16_t* out = reinterpret_cast<int16_t*>(dst);
  const int kp = pairs(k);
  for (int j0 = 0; j0 < n; j0 += kNR) {
    int16_t* panel = out + static_cast<size_t>(j0 / kNR) * kp * kNR * 2;
    for (int jj = 0; jj < kNR && j0 + jj < n; ++jj) {
      const int8_t* row = b + (j0 + jj) * ldb;
      for (int p = 0; p < k; ++p) panel[(p / 2) * kNR * 2 + jj * 2 + (p & 1)] = row[p];
    }
  }
}

size_t a_row_bytes(int k) { return static_cast<size_t>(pairs(k)) * 4; }

size_t scratch_bytes(int k) { return kMC * a_row_bytes(k); }

// Widens rows of A to int16, so each K pair is one 32-bit word (an odd K gets a zero partner).
void pack_a(const uint8_t* a, ptrdiff_t lda, int m, int k, uint8_t* dst) {
  for (int i = 0; i < m; ++i) {
    const uint8_t* src = a + i * lda;
    int16_t* out = reinterpret_cast<int16_t*>(dst + i * a_row_bytes(k));
    int p = 0;
    for (; p + 16 <= k; p += 16)
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + p),
                          _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + p))));
    for (; p < k; ++p) out[p] = src[p];
    if (k & 1) out[k] = 0;
  }
}

// Adds the bias and stores one row of 16 outputs (the first `valid` of them): int32, or requantized
// to uint8 with the same float operations, in the same order, as ref::requantize.
inline void store_row(__m256i v0, __m256i v1, const Epilogue& ep, int col, void* c_row, int valid) {
  if (ep.bias) {
    v0 = _mm256_add_epi32(v0, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ep.bias + col)));
    v1 = _mm256_add_epi32(v1, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ep.bias + col + 8)));
  }
  if (!ep.requantize) {
    int32_t* out = static_cast<int32_t*>(c_row);
    if (valid == kNR) {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), v0);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 8), v1);
    } else {
      alignas(32) int32_t tmp[kNR];
      _mm256_store_si256(reinterpret_cast<__m256i*>(tmp), v0);
      _mm256_store_si256(reinterpret_cast<__m256i*>(tmp + 8), v1);
      std::memcpy(out, tmp, valid * sizeof(int32_t));
    }
    return;
  }
  const __m128i row = narrow16(requantize8(v0, ep.mult + col, ep), requantize8(v1, ep.mult + col + 8, ep));
  if (valid == kNR) {
    _mm_storeu_si128(static_cast<__m128i*>(c_row), row);
  } else {
    alignas(16) uint8_t tmp[kNR];
    _mm_store_si128(reinterpret_cast<__m128i*>(tmp), row);
    std::memcpy(c_row, tmp, valid);
  }
}

template <int R>
void micro_kernel(const uint8_t* a, const int8_t* b, int kp, const Epilogue& ep, int col, uint8_t* c,
                  size_t c_row_bytes, int valid) {
  __m256i acc[R][2];
#pragma GCC unroll 5
  for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_si256();
  // One pointer per row (5 general registers): rows of packed A are kp words apart.
  const int32_t* arow[R];
#pragma GCC unroll 5
  for (int r = 0; r < R; ++r) arow[r] = reinterpret_cast<const int32_t*>(a) + static_cast<size_t>(r) * kp;
  for (int p = 0; p < kp; ++p) {
    const __m256i b0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + p * 64));
    const __m256i b1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + p * 64 + 32));
#pragma GCC unroll 5
    for (int r = 0; r < R; ++r) {
      const __m256i av = _mm256_set1_epi32(arow[r][p]);
      acc[r][0] = _mm256_add_epi32(acc[r][0], _mm256_madd_epi16(av, b0));
      acc[r][1] = _mm256_add_epi32(acc[r][1], _mm256_madd_epi16(av, b1));
    }
  }
#pragma GCC unroll 5
  for (int r = 0; r < R; ++r) store_row(acc[r][0], acc[r][1], ep, col, c + r * c_row_bytes, valid);
}

using MicroKernel = void (*)(const uint8_t*, const int8_t*, int, const Epilogue&, int, uint8_t*, size_t, int);
constexpr MicroKernel kMicroKernels[kMR + 1] = {nullptr, micro_kernel<1>, micro_kernel<2>, micro_kernel<3>, micro_kernel<4>, micro_kernel<5>};

void gemm_block(const GemmBlock& blk) {
  uint8_t* a_packed = static_cast<uint8_t*>(blk.scratch);
  pack_a(blk.a, blk.lda, blk.m, blk.k, a_packed);
  const size_t arow = a_row_bytes(blk.k);
  const size_t esize = blk.ep.requantize ? 1 : 4;
  const size_t c_row_bytes = blk.ldc * esize;
  const int kp = pairs(blk.k);
  // Panel-outer: one B panel stays in cache while every row strip of the block passes over it.
  for (int j = 0; j < blk.n; j += kNR) {
    const int8_t* panel = blk.b_panel + static_cast<size_t>(j / kNR) * panel_bytes(blk.k);
    const int valid = blk.n - j < kNR ? blk.n - j : kNR;
    uint8_t* c_col = static_cast<uint8_t*>(blk.c) + j * esize;
    for (int i = 0; i < blk.m; i += kMR) {
      const int rows = blk.m - i < kMR ? blk.m - i : kMR;
      kMicroKernels[rows](a_packed + i * arow, panel, kp, blk.ep, j, c_col + i * c_row_bytes, c_row_bytes, valid);
    }
  }
}

constexpr GemmKernels kKernels = {"avx2", kNR, kMR, kMC, packed_b_bytes, pack_b, scratch_bytes, gemm_block};

}  // namespace

const GemmKernels* gemm_kernels() { return &kKernels; }

}  // namespace qr::avx2
