// Sum and mean over dims of NHWC uint8: one plain C++ loop. Not hot (a global mean reads the map once,
// after the convs that made it), so no SIMD slot: int64 sums of bytes, which the compiler vectorises.
#include "ops/reduce.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "ops/u8_common.h"

namespace qr::ops {

void reduce(const uint8_t* x, const ReduceShape& s, bool mean, QParams in, QParams out, uint8_t* y) {
  const int64_t oh = s.rh ? 1 : s.h, ow = s.rw ? 1 : s.w, oc = s.rc ? 1 : s.c, count = s.count();
  const double ratio = static_cast<double>(in.scale) / static_cast<double>(out.scale);
  const double d = mean ? static_cast<double>(count) : 1.0, zp_y = out.zero_point;
  const int64_t zp_sum = count * in.zero_point;  // count <= kMaxReduceCount: far from int64's end
  // One task per (image, output row): each owns its outputs, and integer sums are exact in any order.
  parallel_chunks(s.n * oh, (s.rh ? s.h : 1) * s.w * s.c, [&](int64_t begin, int64_t end) {
    std::vector<int64_t> acc(static_cast<size_t>(ow * oc));
    for (int64_t t = begin; t < end; ++t) {
      const int64_t img = t / oh, oy = t % oh;
      std::fill(acc.begin(), acc.end(), 0);
      for (int64_t iy = s.rh ? 0 : oy; iy < (s.rh ? s.h : oy + 1); ++iy) {
        for (int64_t ix = 0; ix < s.w; ++ix) {
          const uint8_t* __restrict px = x + ((img * s.h + iy) * s.w + ix) * s.c;
          int64_t* __restrict a = acc.data() + (s.rw ? 0 : ix) * oc;
          if (s.rc) {
            int64_t sum = 0;
            for (int64_t ch = 0; ch < s.c; ++ch) sum += px[ch];
            a[0] += sum;
          } else {
            for (int64_t ch = 0; ch < s.c; ++ch) a[ch] += px[ch];
          }
        }
      }
      uint8_t* __restrict o = y + t * ow * oc;
      for (int64_t i = 0; i < ow * oc; ++i) {
        // The spec's float64 steps, left to right; the zero point is added before rounding (ties to even codes).
        double v = static_cast<double>(acc[i] - zp_sum) * ratio / d + zp_y;
        v = v < 0.0 ? 0.0 : (v > 255.0 ? 255.0 : v);
        o[i] = static_cast<uint8_t>(std::nearbyint(v));
      }
    }
  });
}

}  // namespace qr::ops
