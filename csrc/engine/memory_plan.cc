// The arena planner (memory_plan.h).
#include "engine/memory_plan.h"

#include <algorithm>
#include <numeric>

namespace qr::engine {

MemoryPlan plan_memory(const std::vector<Lifetime>& values) {
  constexpr size_t kAlign = 64;
  MemoryPlan plan;
  plan.offsets.assign(values.size(), 0);
  std::vector<size_t> order(values.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return values[a].bytes > values[b].bytes; });
  struct Placed {
    size_t begin, end;
    int first, last;
  };
  std::vector<Placed> placed;
  for (size_t v : order) {
    const Lifetime& life = values[v];
    if (life.bytes == 0) continue;
    const size_t size = (life.bytes + kAlign - 1) / kAlign * kAlign;
    // Candidate offsets: 0 and the end of every overlapping block; take the lowest that fits.
    std::vector<Placed> live;
    for (const Placed& p : placed)
      if (p.first <= life.last && life.first <= p.last) live.push_back(p);
    std::sort(live.begin(), live.end(), [](const Placed& a, const Placed& b) { return a.begin < b.begin; });
    size_t offset = 0;
    for (const Placed& p : live) {
      if (offset + size <= p.begin) break;
      offset = std::max(offset, p.end);
    }
    placed.push_back({offset, offset + size, life.first, life.last});
    plan.offsets[v] = offset;
    plan.arena_bytes = std::max(plan.arena_bytes, offset + size);
  }
  return plan;
}

}  // namespace qr::engine
