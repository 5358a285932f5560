// The channel gather of gather.h and the plan its SIMD kernels read.
#include "ops/gather.h"

#include <algorithm>

#include "core/error.h"
#include "dispatch/dispatch.h"
#include "ops/u8_common.h"

namespace qr::ops {
namespace {

uint64_t first_bytes(int64_t n) { return n >= 64 ? ~uint64_t{0} : n <= 0 ? 0 : (uint64_t{1} << n) - 1; }

}  // namespace

ChannelGather::ChannelGather(std::vector<int32_t> index) : index_(std::move(index)) {
  for (int32_t i : index_) QR_CHECK_ARG(i >= 0, "gather_channels: index holds a negative channel");
  if (!index_.empty()) max_index_ = *std::max_element(index_.begin(), index_.end());
  // Each chunk of 64 outputs: cover its distinct source bytes greedily with 128-byte windows, each
  // starting at the smallest byte not yet covered (the fewest windows for points on a line). Even,
  // odd and contiguous runs of up to 128 bytes take one window; an interleave of two halves, two.
  const int64_t c_out = this->c_out();
  for (int64_t o = 0; o < c_out; o += 64) {
    const int64_t n = std::min<int64_t>(64, c_out - o);
    std::vector<int32_t> v(index_.begin() + o, index_.begin() + o + n);
    std::sort(v.begin(), v.end());
    std::vector<int32_t> bases, lasts;
    for (int32_t s : v) {
      if (bases.empty() || s > bases.back() + 127) {
        bases.push_back(s);
        lasts.push_back(s);
      }
      lasts.back() = s;
    }
    ByteGatherChunk chunk{static_cast<int32_t>(windows_.size()), 0};
    if (bases.size() <= static_cast<size_t>(kByteGatherMaxWindows)) {
      chunk.windows = static_cast<int32_t>(bases.size());
      for (size_t w = 0; w < bases.size(); ++w) {
        ByteGatherWindow win{};
        win.base = bases[w];
        const int64_t len = int64_t{lasts[w]} - bases[w] + 1;  // read only bytes the window uses: all < c_in
        win.load_lo = first_bytes(len);
        win.load_hi = first_bytes(len - 64);
        windows_.push_back(win);
      }
      for (int64_t i = 0; i < n; ++i) {
        const int32_t s = index_[o + i];
        const size_t w = static_cast<size_t>(std::upper_bound(bases.begin(), bases.end(), s) - bases.begin()) - 1;
        ByteGatherWindow& win = windows_[chunk.first_window + w];
        win.offset[i] = static_cast<uint8_t>(s - bases[w]);
        win.take |= uint64_t{1} << i;
      }
    }
    chunks_.push_back(chunk);
  }
}

void ChannelGather::run(const uint8_t* x, int64_t c_in, int64_t rows, uint8_t* y, const std::string& isa) const {
  QR_CHECK_ARG(rows >= 0 && c_in > max_index_, "gather_channels: rows of " + std::to_string(c_in) +
                                                   " channels do not hold channel " + std::to_string(max_index_));
  const BytePermuteKernels& k = *(isa.empty() ? active_kernels() : kernel_table(isa)).bytes;
  const ByteGatherPlan plan{index_.data(), c_out(), chunks_.data(), windows_.data()};
  parallel_chunks(rows, c_out(), [&](int64_t begin, int64_t end) {
    k.gather(x + begin * c_in, c_in, y + begin * c_out(), end - begin, plan);
  });
}

std::vector<int> ChannelGather::windows_per_chunk() const {
  std::vector<int> w;
  for (const ByteGatherChunk& c : chunks_) w.push_back(c.windows);
  return w;
}

}  // namespace qr::ops
