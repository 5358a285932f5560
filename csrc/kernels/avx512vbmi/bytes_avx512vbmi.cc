// Byte lookups and gathers with AVX-512 VBMI's vpermi2b (_mm512_permutex2var_epi8): 64 bytes picked
// from a 128-byte table (two zmm) by the low 7 bits of each index byte, in one instruction.
//
// lut: the 256-byte table lives in 4 zmm (t0..t3 = entries 0-63, 64-127, 128-191, 192-255); 64
//   input bytes take two vpermi2b (t0:t1 and t2:t3) and a blend on each byte's bit 7 (vpmovb2m).
// gather: per row of c_in bytes, per chunk of 64 output bytes, the plan's windows (kernels.h,
//   ByteGatherPlan): two masked loads of the window's 128 row bytes (only bytes < c_in are read),
//   one vpermi2b by the window's precomputed offsets, merged by its take mask; a masked store
//   writes the chunk (the row's tail too). A chunk without windows is gathered byte by byte.
#include <algorithm>
#include <cstring>

#include "kernels/avx512_intrinsics.h"
#include "kernels/avx512vbmi/avx512vbmi.h"

namespace qr::QR_ISA_NS {
namespace {

// The mask of bytes [0, n) of a 64-byte vector, n >= 0.
uint64_t first_bytes(int64_t n) { return n >= 64 ? ~uint64_t{0} : (uint64_t{1} << n) - 1; }

void lut(const uint8_t* x, uint8_t* y, int64_t n, const uint8_t* table) {
  const __m512i t0 = _mm512_loadu_si512(table), t1 = _mm512_loadu_si512(table + 64);
  const __m512i t2 = _mm512_loadu_si512(table + 128), t3 = _mm512_loadu_si512(table + 192);
  auto look = [&](__m512i v) {
    const __m512i lo = _mm512_permutex2var_epi8(t0, v, t1);
    const __m512i hi = _mm512_permutex2var_epi8(t2, v, t3);
    return _mm512_mask_blend_epi8(_mm512_movepi8_mask(v), lo, hi);
  };
  int64_t i = 0;
  for (; i + 128 <= n; i += 128) {  // two vectors in flight: vpermi2b has a 3-cycle latency
    const __m512i a = _mm512_loadu_si512(x + i), b = _mm512_loadu_si512(x + i + 64);
    _mm512_storeu_si512(y + i, look(a));
    _mm512_storeu_si512(y + i + 64, look(b));
  }
  for (; i < n; i += 64) {
    const uint64_t k = first_bytes(n - i);
    _mm512_mask_storeu_epi8(y + i, k, look(_mm512_maskz_loadu_epi8(k, x + i)));
  }
}

// The 64 output bytes one window supplies (others: whatever its offsets pick), from row xr.
__m512i window_bytes(const uint8_t* xr, const ByteGatherWindow& w) {
  const __m512i lo = _mm512_maskz_loadu_epi8(w.load_lo, xr + w.base);
  const __m512i hi = _mm512_maskz_loadu_epi8(w.load_hi, xr + w.base + 64);
  return _mm512_permutex2var_epi8(lo, _mm512_loadu_si512(w.offset), hi);
}

void gather(const uint8_t* x, int64_t c_in, uint8_t* y, int64_t rows, const ByteGatherPlan& plan) {
  const int64_t c_out = plan.c_out, chunks = (c_out + 63) / 64;
  const int32_t* index = plan.index;
  for (int64_t r = 0; r < rows; ++r) {
    const uint8_t* xr = x + r * c_in;
    uint8_t* yr = y + r * c_out;
    for (int64_t j = 0; j < chunks; ++j) {
      const ByteGatherChunk& ch = plan.chunks[j];
      const int64_t o = 64 * j, n = std::min<int64_t>(64, c_out - o);
      if (ch.windows == 0) {
        for (int64_t i = o; i < o + n; ++i) yr[i] = xr[index[i]];
        continue;
      }
      // The first window's bytes stand wherever a later window does not take over: the windows
      // together cover the chunk's n outputs.
      const ByteGatherWindow* w = plan.windows + ch.first_window;
      __m512i v = window_bytes(xr, w[0]);
      for (int k = 1; k < ch.windows; ++k) v = _mm512_mask_mov_epi8(v, w[k].take, window_bytes(xr, w[k]));
      _mm512_mask_storeu_epi8(yr + o, first_bytes(n), v);
    }
  }
}

constexpr BytePermuteKernels kKernels = {QR_ISA_NAME, lut, nullptr, gather};

}  // namespace

const BytePermuteKernels* byte_kernels() { return &kKernels; }

}  // namespace qr::QR_ISA_NS
