// Helpers shared by the uint8 ops (pool.cc, eltwise.cc, quantize in linear.cc): the float32 rounding
// step of docs/quantization.md written so the compiler can vectorise it, and the split of a loop
// over the thread pool. Included only by sources compiled with the common flags (no ISA flags).
#pragma once
#include <algorithm>
#include <cstdint>

#include "core/thread_pool.h"

namespace qr::ops {

// round_half_even(v) for |v| < 2^22: adding 1.5 * 2^23 leaves no fraction bits, so the add rounds
// (to nearest even, the default MXCSR mode, as nearbyintf does) and the subtraction is exact.
// nearbyintf itself only vectorises with SSE4.1's roundps, which the baseline build does not have.
inline float round_half_even_small(float v) {
  constexpr float kMagic = 12582912.0f;
  return (v + kMagic) - kMagic;
}

// min(max(v, lo), hi) as selects the vectoriser turns into maxps/minps (the op files are built
// with -fno-trapping-math for this; values are unchanged, NaN never reaches here).
inline float clamp_f(float v, float lo, float hi) {
  v = v < lo ? lo : v;
  return v > hi ? hi : v;
}

// Runs fn(begin, end) over [0, count) in contiguous chunks on the global pool, when count *
// cost_per_item (roughly bytes touched) is worth more than one task. The chunk bounds depend only
// on the sizes and each chunk owns whole outputs, so results never depend on the thread count.
template <class Fn>
void parallel_chunks(int64_t count, int64_t cost_per_item, Fn&& fn) {
  if (count <= 0) return;
  constexpr double kGrain = 64.0 * 1024.0;
  constexpr int64_t kMaxChunks = 4096;
  const double total = static_cast<double>(count) * static_cast<double>(std::max<int64_t>(cost_per_item, 1));
  const int64_t chunks = std::min<int64_t>({count, kMaxChunks, static_cast<int64_t>(total / kGrain) + 1});
  if (chunks <= 1) {
    fn(int64_t{0}, count);
    return;
  }
  const int64_t base = count / chunks, extra = count % chunks;
  ThreadPool::global().parallel_for(chunks, [&](int64_t t) {
    const int64_t begin = t * base + std::min(t, extra);
    fn(begin, begin + base + (t < extra ? 1 : 0));
  });
}

}  // namespace qr::ops
