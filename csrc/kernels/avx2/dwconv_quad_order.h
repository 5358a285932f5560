// The channel order of the 256-bit depthwise kernels on tap quads (avx2's vpmaddubsw one,
// dwconv_avx2_maddubs.cc, and avx_vnni's vpdpbusd one, avxvnni/dwconv_avxvnni.cc), and the steps
// into and out of it. Included by units built with AVX2; internal linkage, as epilogue_avx2.h.
//
// Per quad of taps and 32 channels, the in-lane unpacks of the four taps' input bytes
// (vpunpck{l,h}bw, then vpunpck{l,h}wd) leave four accumulators whose channels are
//   acc0 [0-3 | 16-19], acc1 [4-7 | 20-23], acc2 [8-11 | 24-27], acc3 [12-15 | 28-31]
// (| separates the two 128-bit lanes): accumulator r, lane L, dword k holds channel 16 L + 4 r + k.
// The packed weights follow it; vperm2i128 undoes it once per block before the epilogue.
#pragma once
#include <immintrin.h>

#include <cstdint>

#include "kernels/avx2/epilogue_avx2.h"

namespace {

// The bias of 32 channels in the quad order above, to start the accumulators from.
struct QuadBias {
  __m256i v[4];
  explicit QuadBias(const int32_t* bias) {
    const __m256i* b = reinterpret_cast<const __m256i*>(bias);
    const __m256i b0 = _mm256_loadu_si256(b), b8 = _mm256_loadu_si256(b + 1);
    const __m256i b16 = _mm256_loadu_si256(b + 2), b24 = _mm256_loadu_si256(b + 3);
    v[0] = _mm256_permute2x128_si256(b0, b16, 0x20);
    v[1] = _mm256_permute2x128_si256(b0, b16, 0x31);
    v[2] = _mm256_permute2x128_si256(b8, b24, 0x20);
    v[3] = _mm256_permute2x128_si256(b8, b24, 0x31);
  }
};

// The 32 requantized channels, given the accumulators (bias included) in the quad order above.
inline __m256i finish_quads(__m256i a0, __m256i a1, __m256i a2, __m256i a3, const float* mult, const RequantConsts& k) {
  const __m256i c0 = _mm256_permute2x128_si256(a0, a1, 0x20), c8 = _mm256_permute2x128_si256(a2, a3, 0x20);
  const __m256i c16 = _mm256_permute2x128_si256(a0, a1, 0x31), c24 = _mm256_permute2x128_si256(a2, a3, 0x31);
  const __m256i p0 = pack16(scale_round8(c0, mult, k), scale_round8(c8, mult + 8, k), k);
  const __m256i p1 = pack16(scale_round8(c16, mult + 16, k), scale_round8(c24, mult + 24, k), k);
  return to_bytes32(p0, p1, k);
}

}  // namespace
