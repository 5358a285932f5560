// u8*s8 GEMM on AMX-INT8 tiles (tdpbusd), with the AVX-512 epilogue; exact int32 accumulation.
//
// Tile map of qgemm_u8s8_32x32__amx: a 32x32 int32 block of C in four tiles, tmm0 (rows 0-15,
// columns 0-15), tmm1 (rows 0-15, columns 16-31), tmm2 and tmm3 (rows 16-31); tmm4/tmm5 hold
// A rows 0-15 / 16-31 for one K step of 64 bytes; tmm6/tmm7 hold B for columns 0-15 / 16-31 of that
// step (16 rows of 4 K bytes per column). Every tile is 16 rows x 64 bytes; short blocks use zero
// rows of A rather than a second config.
// Layouts (docs/kernels.md, "amx"):
//   packed B panel: the avx512_vnni layout [K groups][32 columns][4 bytes] with K padded to a
//     multiple of 64, so a B tile is 16 consecutive groups read with a 128-byte row stride.
//   packed A (per block, in scratch): rows padded to a multiple of 16 and K to a multiple of 64,
//     copied from rows of A or from a conv's segments (GemmBlock::seg).
// Blocks of fewer than kMinTileRows rows, or of K <= kMaxVnniK, take the avx512_vnni micro-kernels
// on the same packed B: a mostly empty tile costs as much as a full one, and a GEMV is bound by
// reading B anyway.
#include <cstring>

#include "kernels/avx512vnni/epilogue_avx512.h"
#include "kernels/avx512vnni/avx512vnni.h"
#if defined(QR_EMULATED)
#include "kernels/amx/amx_tile_model.h"
#endif

#include "kernels/amx/amx.h"

namespace qr::QR_ISA_NS {
namespace vnni = ::qr::QR_VNNI_NS;
namespace {

constexpr int kNR = 32;
constexpr int kMC = 64;
constexpr int kKStep = 64;  // K bytes per tile row
constexpr int kMinTileRows = 8;
// At K <= 32 a 64-byte tile row is at least half zero padding, and packing A into tiles costs more
// than the multiplies: the vnni micro-kernels were faster on every such layer measured (MobileNetV3's
// 16- and 24-channel 1x1 convs at 56-112 px, 1.2-1.7x).
constexpr int kMaxVnniK = 32;

struct alignas(64) TileConfig {
  uint8_t palette_id;
  uint8_t start_row;
  uint8_t reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
};
static_assert(sizeof(TileConfig) == 64, "ldtilecfg reads 64 bytes");

int k_steps(int k) { return (k + kKStep - 1) / kKStep; }

size_t panel_bytes(int k) { return static_cast<size_t>(k_steps(k)) * (kKStep / 4) * kNR * 4; }

size_t packed_b_bytes(int n, int k) { return static_cast<size_t>((n + kNR - 1) / kNR) * panel_bytes(k); }

void pack_b(const int8_t* b, ptrdiff_t ldb, int n, int k, int /*run_bytes*/, int8_t* dst) {
  vnni::pack_b_groups(b, ldb, n, k, k_steps(k) * (kKStep / 4), dst);
}

size_t a_bytes(int k) { return static_cast<size_t>(kMC) * k_steps(k) * kKStep; }
constexpr size_t kCTileBytes = 32 * 32 * 4;

// The vnni micro-kernels read whole rows: segments are first copied into rows after their scratch.
size_t vnni_rows_offset(int k) { return (vnni::vnni_scratch_bytes(k) + 63) / 64 * 64; }

size_t scratch_bytes(int k) {
  size_t amx = a_bytes(k) + kCTileBytes;
  size_t v = vnni_rows_offset(k) + static_cast<size_t>(kMC) * k;
  return amx > v ? amx : v;
}

// Copies row i of blk (from its segments when it has them, else from a) into dst, k bytes.
inline void copy_row(const GemmBlock& blk, int i, uint8_t* dst) {
  if (blk.seg) {
    for (int s = 0; s < blk.nseg; ++s) std::memcpy(dst + s * blk.seg_bytes, blk.seg[i * blk.nseg + s], blk.seg_bytes);
  } else {
    std::memcpy(dst, blk.a + i * blk.lda, blk.k);
  }
}

void vnni_block(const GemmBlock& blk) {
  if (!blk.seg) return vnni::gemm_block_panels(blk, panel_bytes(blk.k));
  GemmBlock rows = blk;
  uint8_t* a = static_cast<uint8_t*>(blk.scratch) + vnni_rows_offset(blk.k);
  for (int i = 0; i < blk.m; ++i) copy_row(blk, i, a + static_cast<size_t>(i) * blk.k);
  rows.a = a;
  rows.lda = blk.k;
  rows.a_readable = blk.k;
  rows.seg = nullptr;
  vnni::gemm_block_panels(rows, panel_bytes(blk.k));
}

void gemm_block(const GemmBlock& blk) {
  if (blk.m < kMinTileRows || blk.k <= kMaxVnniK) return vnni_block(blk);

  const int ks = k_steps(blk.k);
  const size_t lda_p = static_cast<size_t>(ks) * kKStep;
  const int m_pad = (blk.m + 15) / 16 * 16;
  uint8_t* a_packed = static_cast<uint8_t*>(blk.scratch);
  for (int i = 0; i < m_pad; ++i) {
    uint8_t* row = a_packed + i * lda_p;
    if (i < blk.m) {
      copy_row(blk, i, row);
      std::memset(row + blk.k, 0, lda_p - blk.k);
    } else {
      std::memset(row, 0, lda_p);
    }
  }
  int32_t* ctile = reinterpret_cast<int32_t*>(a_packed + a_bytes(blk.k));  // 64-byte aligned: a_bytes is

  TileConfig cfg;
  std::memset(&cfg, 0, sizeof(cfg));
  cfg.palette_id = 1;
  for (int t = 0; t < 8; ++t) {
    cfg.rows[t] = 16;
    cfg.colsb[t] = 64;
  }
  _tile_loadconfig(&cfg);

  const size_t esize = blk.ep.requantize ? 1 : 4;
  const size_t c_row_bytes = blk.ldc * esize;
  const size_t pbytes = panel_bytes(blk.k);
  constexpr size_t kStepBytes = (kKStep / 4) * kNR * 4;  // one K step of a B panel: 16 groups x 128 B
  for (int j = 0; j < blk.n; j += kNR) {
    const int8_t* panel = blk.b_panel + static_cast<size_t>(j / kNR) * pbytes;
    const int valid = blk.n - j < kNR ? blk.n - j : kNR;
    for (int i = 0; i < blk.m; i += 32) {
      const int rows = blk.m - i < 32 ? blk.m - i : 32;
      const bool two = rows > 16;
      const uint8_t* a0 = a_packed + i * lda_p;
      _tile_zero(0);
      _tile_zero(1);
      if (two) {
        _tile_zero(2);
        _tile_zero(3);
      }
      for (int s = 0; s < ks; ++s) {
        _tile_loadd(6, panel + s * kStepBytes, kNR * 4);
        _tile_loadd(7, panel + s * kStepBytes + 64, kNR * 4);
        _tile_loadd(4, a0 + s * kKStep, lda_p);
        _tile_dpbusd(0, 4, 6);
        _tile_dpbusd(1, 4, 7);
        if (two) {
          _tile_loadd(5, a0 + 16 * lda_p + s * kKStep, lda_p);
          _tile_dpbusd(2, 5, 6);
          _tile_dpbusd(3, 5, 7);
        }
      }
      _tile_stored(0, ctile, 128);
      _tile_stored(1, ctile + 16, 128);
      if (two) {
        _tile_stored(2, ctile + 16 * 32, 128);
        _tile_stored(3, ctile + 16 * 32 + 16, 128);
      }
      uint8_t* c = static_cast<uint8_t*>(blk.c) + i * c_row_bytes + j * esize;
      for (int r = 0; r < rows; ++r)
        store_row32(_mm512_loadu_si512(ctile + r * 32), _mm512_loadu_si512(ctile + r * 32 + 16), blk.ep, j,
                    c + r * c_row_bytes, valid);
    }
  }
  _tile_release();
}

// reads_segments: A is packed into tiles anyway, so a conv's rows are copied from its input's
// segments as cheaply as from an unfolded matrix, and the unfolding pass is saved.
constexpr GemmKernels kKernels = {QR_ISA_NAME, kNR, 16, kMC, packed_b_bytes, pack_b, scratch_bytes, gemm_block, nullptr, true};

}  // namespace

const GemmKernels* gemm_kernels() { return &kKernels; }

}  // namespace qr::QR_ISA_NS
