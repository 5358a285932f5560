// Activation memory: every value's lifetime (the op that writes it to the last op that reads it)
// and size give it an offset in one arena; values whose lifetimes do not overlap share bytes.
#pragma once
#include <cstddef>
#include <vector>

namespace qr::engine {

struct Lifetime {
  int first = 0, last = 0;  // op indices, inclusive
  size_t bytes = 0;         // 0: the value needs no arena memory
};

struct MemoryPlan {
  std::vector<size_t> offsets;  // per value, 64-byte aligned
  size_t arena_bytes = 0;
};

// Greedy by size, largest first: each value takes the lowest offset that does not collide with a
// value already placed whose lifetime overlaps its own.
MemoryPlan plan_memory(const std::vector<Lifetime>& values);

}  // namespace qr::engine
