// The engine's layout changes: per image, a (rows x cols) matrix to (cols x rows), in tiles so both
// sides stay in cache. NCHW <-> NHWC at the graph's edges, and flatten's NHWC -> NCHW order.
#pragma once
#include <algorithm>
#include <cstdint>

#include "core/thread_pool.h"

namespace qr::engine {

template <class T>
void transpose_images(const T* x, int64_t images, int64_t rows, int64_t cols, T* y) {
  constexpr int64_t kTile = 32;
  ThreadPool::global().parallel_for(images, [&](int64_t img) {
    const T* xi = x + img * rows * cols;
    T* yi = y + img * rows * cols;
    for (int64_t r0 = 0; r0 < rows; r0 += kTile)
      for (int64_t c0 = 0; c0 < cols; c0 += kTile) {
        const int64_t r1 = std::min(rows, r0 + kTile), c1 = std::min(cols, c0 + kTile);
        for (int64_t c = c0; c < c1; ++c)
          for (int64_t r = r0; r < r1; ++r) yi[c * rows + r] = xi[r * cols + c];
      }
  });
}

}  // namespace qr::engine
