// Quantized conv2d: prepacking and the three execution strategies (GEMM, implicit GEMM, depthwise).
#include "ops/conv2d.h"

#include <algorithm>
#include <cstring>
#include <limits>

#include "core/error.h"
#include "core/limits.h"
#include "core/thread_pool.h"

namespace qr::ops {
namespace {

// Copies n bytes; runs this short (a tap of a few channels, a 7-tap run of an RGB row) cost more in
// libc call overhead than in copying, so up to 128 bytes take fixed-size moves (the last ones
// overlapping), which read and write only [0, n).
inline void copy_run(uint8_t* dst, const uint8_t* src, size_t n) {
  if (n > 32 && n <= 128) {  // a tap run of a 32..128-channel layer: 16-byte moves, the last one overlapping
    uint8_t block[16];
    for (size_t i = 0; i + 16 < n; i += 16) {
      std::memcpy(block, src + i, 16);
      std::memcpy(dst + i, block, 16);
    }
    std::memcpy(block, src + n - 16, 16);
    std::memcpy(dst + n - 16, block, 16);
  } else if (n >= 16 && n <= 32) {
    uint8_t head[16], tail[16];
    std::memcpy(head, src, 16);
    std::memcpy(tail, src + n - 16, 16);
    std::memcpy(dst, head, 16);
    std::memcpy(dst + n - 16, tail, 16);
  } else if (n >= 8 && n < 16) {
    uint64_t head, tail;
    std::memcpy(&head, src, 8);
    std::memcpy(&tail, src + n - 8, 8);
    std::memcpy(dst, &head, 8);
    std::memcpy(dst + n - 8, &tail, 8);
  } else if (n < 8) {
    for (size_t i = 0; i < n; ++i) dst[i] = src[i];
  } else {
    std::memcpy(dst, src, n);
  }
}

inline void fill_run(uint8_t* dst, uint8_t value, size_t n) {
  if (n <= 16) {
    for (size_t i = 0; i < n; ++i) dst[i] = value;
  } else {
    std::memset(dst, value, n);
  }
}

// The output pixel (image, oy, ox) of GEMM row m0, then of each next row: no divisions per row.
struct PixelCursor {
  int img, oy, ox;
  const int oh, ow;
  PixelCursor(int m0, int oh_, int ow_) : img(m0 / (oh_ * ow_)), oy((m0 / ow_) % oh_), ox(m0 % ow_), oh(oh_), ow(ow_) {}
  void next() {
    if (++ox < ow) return;
    ox = 0;
    if (++oy < oh) return;
    oy = 0;
    ++img;
  }
};

// Rows of the unfolded input for one group: row m is output pixel m (image, oy, ox), its K bytes
// the taps (ky, kx) in order, each holding the group's icg input channels; taps outside the input
// hold the input zero point, which contributes what zero contributes in real numbers.
class Im2colRows : public RowSource {
 public:
  Im2colRows(const uint8_t* x, size_t x_bytes, int h, int w, int c, int c0, int icg, int kh, int kw,
             const Conv2dGeometry& g, int oh, int ow, uint8_t zp)
      : x_(x), x_end_(x + x_bytes), h_(h), w_(w), c_(c), c0_(c0), icg_(icg), kh_(kh), kw_(kw), g_(g), oh_(oh), ow_(ow),
        zp_(zp), contiguous_taps_(icg == c && g.dil_w == 1) {}

  const uint8_t* rows(int m0, int count, AlignedBuffer& buf, ptrdiff_t* lda) const override {
    // Everything in locals: the row stores are uint8_t, which may alias any member, and would
    // otherwise make the compiler reload every member after every store.
    const uint8_t* const x = x_;
    const int h = h_, w = w_, c = c_, icg = icg_, kh = kh_, kw = kw_, oh = oh_, ow = ow_;
    const int sh = g_.stride_h, sw = g_.stride_w, dh = g_.dil_h, pt = g_.pad_t, pl = g_.pad_l;
    const bool contiguous = contiguous_taps_;
    const size_t run = static_cast<size_t>(kw) * icg, k = run * kh, stride = row_stride(k);
    // A window wholly inside the input copies each tap row as whole 16-byte moves, with no per-tap
    // checks: the bytes past a run (< 16) land in the next tap's place, the row's padding or the
    // next row, all written after, or in the 32 bytes of slack at the end.
    const size_t window_move = (run + 15) / 16 * 16;
    const bool window_moves = contiguous && run <= 512;
    const uint8_t* const x_end = x_end_;
    const ptrdiff_t tap_row_step = static_cast<ptrdiff_t>(dh) * w * c;  // from tap row ky to ky + 1
    buf.ensure(count * stride + 32);
    uint8_t* out = buf.as<uint8_t>();
    PixelCursor px(m0, oh, ow);
    for (int i = 0; i < count; ++i, px.next()) {
      uint8_t* row = out + i * stride;
      const uint8_t* image = x + static_cast<size_t>(px.img) * h * w * c + c0_;
      const int ix0 = px.ox * sw - pl, iy0 = px.oy * sh - pt;
      if (window_moves && window_inside(iy0, ix0, kh, kw, dh, h, w)) {
        // The whole window inside: no per-tap checks.
        const uint8_t* src = image + (static_cast<ptrdiff_t>(iy0) * w + ix0) * c;
        if (src + (kh - 1) * tap_row_step + window_move <= x_end) {
          if (window_move == 16) {  // RGB 3x3: one move, unrolled
            for (int ky = 0; ky < kh; ++ky) std::memcpy(row + ky * run, src + ky * tap_row_step, 16);
          } else {
            for (int ky = 0; ky < kh; ++ky)
              for (size_t b = 0; b < window_move; b += 16) std::memcpy(row + ky * run + b, src + ky * tap_row_step + b, 16);
          }
          pad_row_end(row, k, stride);
          continue;
        }
      }
      gather_row(image, iy0, ix0, row);
      pad_row_end(out + i * stride, k, stride);
    }
    *lda = static_cast<ptrdiff_t>(stride);
    return out;
  }

  // The row of the output pixel whose window's corner is (iy0, ix0) in `image` (the group's channel
  // 0), tap row by tap row with bounds checks: k bytes at row, plus up to 15 past it (see below).
  void gather_row(const uint8_t* image, int iy0, int ix0, uint8_t* row) const {
    // Locals: the byte stores may alias any member.
    const int h = h_, w = w_, c = c_, icg = icg_, kh = kh_, kw = kw_, dh = g_.dil_h, dw = g_.dil_w;
    const uint8_t zp = zp_;
    const bool contiguous = contiguous_taps_;
    const size_t run = static_cast<size_t>(kw) * icg;
    // Runs of at most 16 bytes (a first layer: 1 or 3 channels) are copied as one 16-byte move when
    // the taps lie inside the row and 16 bytes are readable: the bytes past the run land in the
    // next tap's or row's place, which is written after, or in the caller's slack.
    const bool short_runs = contiguous && run <= 16;
    const uint8_t* const x_end = x_end_;
    for (int ky = 0; ky < kh; ++ky, row += run) {
      const int iy = iy0 + ky * dh;
      if (iy < 0 || iy >= h) {
        fill_run(row, zp, run);
        continue;
      }
      const uint8_t* in_row = image + static_cast<size_t>(iy) * w * c;
      if (short_runs && ix0 >= 0 && ix0 + kw <= w && in_row + ix0 * c + 16 <= x_end) {
        std::memcpy(row, in_row + static_cast<ptrdiff_t>(ix0) * c, 16);
      } else if (contiguous) {
        // All channels, dilation 1: the kw taps are one run of the input row; copy it whole.
        const int kx_begin = std::clamp(-ix0, 0, kw), kx_end = std::clamp(w - ix0, kx_begin, kw);
        fill_run(row, zp, static_cast<size_t>(kx_begin) * icg);
        if (kx_end > kx_begin)
          copy_run(row + kx_begin * icg, in_row + static_cast<ptrdiff_t>(ix0 + kx_begin) * c,
                   static_cast<size_t>(kx_end - kx_begin) * icg);
        fill_run(row + kx_end * icg, zp, static_cast<size_t>(kw - kx_end) * icg);
      } else {
        for (int kx = 0; kx < kw; ++kx) {
          const int ix = ix0 + kx * dw;
          if (ix >= 0 && ix < w)
            copy_run(row + kx * icg, in_row + static_cast<size_t>(ix) * c, icg);
          else
            fill_run(row + kx * icg, zp, icg);
        }
      }
    }
  }

  // Segments: one per tap row (kw taps x all channels, contiguous in the input when the group
  // spans every channel and the dilation across is 1), pointing into the input for a window inside
  // it; a window that meets the padding is gathered into `buf` and its segments point there.
  // Needs runs of a multiple of 4 bytes, so that no K group of 4 straddles two segments.
  bool segments(int m0, int count, AlignedBuffer& buf, const uint8_t* const** seg, int* nseg,
                int* seg_bytes) const override {
    const int h = h_, w = w_, c = c_, kh = kh_, kw = kw_, oh = oh_, ow = ow_;
    const int sh = g_.stride_h, sw = g_.stride_w, dh = g_.dil_h, pt = g_.pad_t, pl = g_.pad_l;
    const size_t run = static_cast<size_t>(kw) * c;
    if (!contiguous_taps_ || run % 4 != 0) return false;
    const size_t ptr_bytes = (static_cast<size_t>(count) * kh * sizeof(const uint8_t*) + 63) / 64 * 64;
    const size_t k = run * kh;
    // Room for every row to be gathered, plus gather_row's 16 bytes of slack past the last.
    buf.ensure(ptr_bytes + count * k + 16);
    const uint8_t** ptrs = buf.as<const uint8_t*>();
    uint8_t* gathered = buf.as<uint8_t>() + ptr_bytes;
    const ptrdiff_t tap_row_step = static_cast<ptrdiff_t>(dh) * w * c;
    PixelCursor px(m0, oh, ow);
    for (int i = 0; i < count; ++i, px.next()) {
      const uint8_t* image = x_ + static_cast<size_t>(px.img) * h * w * c;
      const int ix0 = px.ox * sw - pl, iy0 = px.oy * sh - pt;
      const uint8_t** row_segs = ptrs + static_cast<size_t>(i) * kh;
      if (window_inside(iy0, ix0, kh, kw, dh, h, w)) {
        const uint8_t* corner = image + (static_cast<ptrdiff_t>(iy0) * w + ix0) * c;
        for (int ky = 0; ky < kh; ++ky) row_segs[ky] = corner + ky * tap_row_step;
      } else {
        gather_row(image, iy0, ix0, gathered);
        for (int ky = 0; ky < kh; ++ky) row_segs[ky] = gathered + ky * run;
        gathered += k;
      }
    }
    *seg = ptrs;
    *nseg = kh;
    *seg_bytes = static_cast<int>(run);
    return true;
  }

  // Whether the window with corner (iy0, ix0) lies inside the image (dilation 1 across).
  static bool window_inside(int iy0, int ix0, int kh, int kw, int dh, int h, int w) {
    return iy0 >= 0 && iy0 + (kh - 1) * dh < h && ix0 >= 0 && ix0 + kw <= w;
  }

  // Rows are padded to a multiple of 4 bytes (zeros): kernels that read K in groups of 4 can then
  // read them in place rather than copy each row to pad it.
  static size_t row_stride(size_t k) { return (k + 3) / 4 * 4; }
  // Zeroes the padding [k, stride) of a row with one 4-byte store; the bytes past it land in the
  // next row's place (written after) or in the slack.
  static void pad_row_end(uint8_t* row, size_t k, size_t stride) {
    if (k == stride) return;
    const uint32_t zero = 0;
    std::memcpy(row + k, &zero, 4);
  }
  int readable_row_bytes(int k) const override { return static_cast<int>(row_stride(static_cast<size_t>(k))); }

  bool gathers() const override { return true; }

 private:
  const uint8_t* x_;
  const uint8_t* x_end_;
  int h_, w_, c_, c0_, icg_, kh_, kw_;
  Conv2dGeometry g_;
  int oh_, ow_;
  uint8_t zp_;
  bool contiguous_taps_;
};

// fn(image, first output row, end row) over every image's output rows, in tasks of a few rows:
// enough of them to balance two threads on one image.
template <class Fn>
void for_row_tasks(int n, int oh, Fn fn) {
  const int rows_per_task = std::max(1, oh / 8);
  const int tasks_per_image = (oh + rows_per_task - 1) / rows_per_task;
  ThreadPool::global().parallel_for(static_cast<int64_t>(n) * tasks_per_image, [&](int64_t t) {
    const int oy0 = static_cast<int>(t % tasks_per_image) * rows_per_task;
    fn(static_cast<int>(t / tasks_per_image), oy0, std::min(oh, oy0 + rows_per_task));
  });
}

void run_depthwise(const PackedConv2d& p, const uint8_t* x, int n, int h, int w, int c, const Requant& rq,
                   uint8_t zp, const Conv2dGeometry& g, int oh, int ow, uint8_t* y) {
  // A channel multiplier > 1 reads input channel oc / mult for output channel oc: expand the input
  // once so the kernel always sees one input channel per output channel.
  const int mult = p.oc / c;
  std::vector<uint8_t> expanded;
  if (mult > 1) {
    const size_t pixels = static_cast<size_t>(n) * h * w;
    expanded.resize(pixels * p.oc);
    for (size_t px = 0; px < pixels; ++px)
      for (int oc = 0; oc < p.oc; ++oc) expanded[px * p.oc + oc] = x[px * c + oc / mult];
    x = expanded.data();
  }
  const std::vector<uint8_t> pad_row(p.c_stride + 64, zp);
  DwConvArgs base{};
  base.h = h;
  base.w = w;
  base.c = p.oc;
  base.weights = p.dw_weights.data();
  base.c_stride = p.c_stride;
  base.kh = p.kh;
  base.kw = p.kw;
  base.stride_h = g.stride_h;
  base.stride_w = g.stride_w;
  base.dil_h = g.dil_h;
  base.dil_w = g.dil_w;
  base.pad_t = g.pad_t;
  base.pad_l = g.pad_l;
  base.oh = oh;
  base.ow = ow;
  base.pad_row = pad_row.data();
  std::vector<uintptr_t> offsets(static_cast<size_t>(p.kh) * p.kw);
  for (int ky = 0; ky < p.kh; ++ky)
    for (int kx = 0; kx < p.kw; ++kx)
      offsets[ky * p.kw + kx] =
          static_cast<uintptr_t>((static_cast<ptrdiff_t>(ky) * g.dil_h * w + static_cast<ptrdiff_t>(kx) * g.dil_w) * p.oc);
  base.tap_offsets = offsets.data();
  base.ep = rq.epilogue();
  base.extra_weights = p.dw_extra_weights.empty() ? nullptr : p.dw_extra_weights.data();
  const size_t in_image = static_cast<size_t>(h) * w * p.oc, out_image = static_cast<size_t>(oh) * ow * p.oc;
  for_row_tasks(n, oh, [&](int img, int oy0, int oy1) {
    std::vector<uintptr_t> scratch(offsets.size());
    DwConvArgs a = base;
    a.tap_scratch = scratch.data();
    a.oh_begin = oy0;
    a.oh_end = oy1;
    a.x = x + img * in_image;
    a.y = y + img * out_image;
    p.table->dwconv->dwconv(a);
  });
}

// Winograd over the batch: blocks of output tiles (a multiple of the thread count, of
// near-equal size) times chunks of output-channel panels when there are few blocks. Each call
// transforms its block's input itself: when chunks share a block that is repeated (F(2x2, 3x3): at
// a cost of about 1.6 / oc of the block's GEMM work).
void run_winograd(const PackedConv2d& p, const uint8_t* x, int n, int h, int w, int c, const Requant& rq, uint8_t zp,
                  const Conv2dGeometry& g, int oh, int ow, uint8_t* y) {
  const WinogradKernels& k = *p.table->winograd;
  const int stride = p.winograd_stride;
  const int t_side = k.tile(c, stride);
  const int64_t tiles = static_cast<int64_t>(n) * ((oh + t_side - 1) / t_side) * ((ow + t_side - 1) / t_side);
  ThreadPool& pool = ThreadPool::global();
  const int threads = pool.num_threads();
  int64_t blocks = (tiles + k.block_tiles(c, stride) - 1) / k.block_tiles(c, stride);
  if (blocks >= threads) blocks = (blocks + threads - 1) / threads * threads;
  blocks = std::min(blocks, tiles);
  const int64_t per_block = (tiles + blocks - 1) / blocks;
  blocks = (tiles + per_block - 1) / per_block;
  const int panels = (p.oc + k.nr - 1) / k.nr;
  int chunks = blocks >= 2 * threads ? 1 : std::min<int>(panels, static_cast<int>((2 * threads + blocks - 1) / blocks));
  const int panels_per_chunk = (panels + chunks - 1) / chunks;
  chunks = (panels + panels_per_chunk - 1) / panels_per_chunk;
  WinogradTask base{};
  base.x = x;
  base.h = h;
  base.w = w;
  base.c = c;
  base.stride = stride;
  base.x_zp = zp;
  base.pad_t = g.pad_t;
  base.pad_l = g.pad_l;
  base.oh = oh;
  base.ow = ow;
  base.u = p.winograd_u.as<int16_t>();
  base.oc = p.oc;
  base.ep = rq.epilogue();
  base.y = y;
  const size_t scratch = k.scratch_bytes(c, stride);
  pool.parallel_for(blocks * chunks, [&](int64_t task) {
    thread_local AlignedBuffer scratch_buf;
    scratch_buf.ensure(scratch);
    WinogradTask t = base;
    const int64_t b = task / chunks;
    const int chunk = static_cast<int>(task % chunks);
    t.tile0 = b * per_block;
    t.tiles = static_cast<int>(std::min(per_block, tiles - t.tile0));
    t.panel0 = chunk * panels_per_chunk;
    t.panels = std::min(panels_per_chunk, panels - t.panel0);
    t.scratch = scratch_buf.as<void>();
    k.run(t);
  });
}

// The direct first-layer kernel over the batch: tasks of a few output rows of one image, as depthwise.
void run_direct(const PackedConv2d& p, const uint8_t* x, int n, int h, int w, int c, const Requant& rq, uint8_t zp,
                const Conv2dGeometry& g, int oh, int ow, uint8_t* y) {
  const DirectConvKernels& k = *p.table->direct_conv;
  DirectConvTask base{};
  base.h = h;
  base.w = w;
  base.c = c;
  base.kh = p.kh;
  base.kw = p.kw;
  base.stride_h = g.stride_h;
  base.stride_w = g.stride_w;
  base.pad_t = g.pad_t;
  base.pad_l = g.pad_l;
  base.x_zp = zp;
  base.oh = oh;
  base.ow = ow;
  base.weights = p.direct_w.as<int8_t>();
  base.oc = p.oc;
  base.ep = rq.epilogue();
  const size_t scratch = k.scratch_bytes(c, p.kh, p.kw, ow, g.stride_w);
  const size_t in_image = static_cast<size_t>(h) * w * c, out_image = static_cast<size_t>(oh) * ow * p.oc;
  for_row_tasks(n, oh, [&](int img, int oy0, int oy1) {
    thread_local AlignedBuffer scratch_buf;
    scratch_buf.ensure(scratch);
    DirectConvTask task = base;
    task.oh_begin = oy0;
    task.oh_end = oy1;
    task.x = x + img * in_image;
    task.y = y + img * out_image;
    task.scratch = scratch_buf.as<void>();
    k.run(task);
  });
}

// The stride Winograd runs these weights at (1 or 2), or 0 when it does not: the kernel's tile()
// says which input channel counts it takes at a stride (its bounds and where it pays).
int winograd_stride(const KernelTable& table, int icg, int kh, int kw, int groups, const Conv2dGeometry* g) {
  if (!table.winograd || kh != 3 || kw != 3 || groups != 1 || !g) return 0;
  if (g->stride_h != g->stride_w || g->stride_h > 2 || g->dil_h != 1 || g->dil_w != 1) return 0;
  return table.winograd->tile(icg, g->stride_h) ? g->stride_h : 0;
}

// Why Winograd runs these weights at this stride.
std::string winograd_choice(const WinogradKernels& k, int icg, int stride) {
  return std::string("winograd ") + k.variant(icg, stride) + ": stride-" + std::to_string(stride) + " 3x3 conv of " +
         std::to_string(icg) + " input channels, int16 transforms, exact";
}

}  // namespace

namespace {

int output_size(int in, int pad_before, int pad_after, int k, int stride, int dilation, const char* axis) {
  const int64_t span = static_cast<int64_t>(dilation) * (k - 1) + 1;
  const int64_t padded = static_cast<int64_t>(in) + pad_before + pad_after;
  // Padding of a whole kernel extent or more only adds outputs that see no input at all: refused,
  // which also keeps a tiny file from asking for an output of any size it likes.
  QR_CHECK_ARG(pad_before < span && pad_after < span,
               std::string("padding (") + axis + ") " + std::to_string(std::max(pad_before, pad_after)) +
                   " is not smaller than the kernel's dilated " + axis + " extent " + std::to_string(span));
  QR_CHECK_ARG(span <= padded, std::string("kernel (dilated ") + axis + " extent " + std::to_string(span) +
                                   ") is larger than the padded input (" + std::to_string(padded) + ")");
  const int64_t out = (padded - span) / stride + 1;
  QR_CHECK_ARG(out <= kMaxDim, std::string("the output ") + axis + " " + std::to_string(out) + " is beyond " +
                                   std::to_string(kMaxDim));
  return static_cast<int>(out);
}

}  // namespace

std::pair<int, int> conv2d_output_hw(const PackedConv2d& p, int h, int w, const Conv2dGeometry& g) {
  QR_CHECK_ARG(h >= 1 && w >= 1, "x_q must have a spatial size of at least 1x1");
  QR_CHECK_ARG(g.stride_h >= 1 && g.stride_w >= 1, "stride must be >= 1");
  QR_CHECK_ARG(g.dil_h >= 1 && g.dil_w >= 1, "dilation must be >= 1");
  QR_CHECK_ARG(g.pad_t >= 0 && g.pad_l >= 0 && g.pad_b >= 0 && g.pad_r >= 0, "padding must be >= 0");
  return {output_size(h, g.pad_t, g.pad_b, p.kh, g.stride_h, g.dil_h, "height"),
          output_size(w, g.pad_l, g.pad_r, p.kw, g.stride_w, g.dil_w, "width")};
}

std::shared_ptr<PackedConv2d> pack_conv2d(const int8_t* w, int oc, int icg, int kh, int kw, int groups,
                                          const std::string& isa, const Conv2dGeometry* geometry) {
  QR_CHECK_ARG(oc >= 1 && icg >= 1 && kh >= 1 && kw >= 1, "w_q must not have a zero-size dimension");
  QR_CHECK_ARG(groups >= 1 && oc % groups == 0, "groups must divide the output channels");
  const int64_t k = static_cast<int64_t>(kh) * kw * icg;
  QR_CHECK_ARG(k <= kMaxK, "kh * kw * in_channels/groups must be <= 65536, got " + std::to_string(k));
  auto p = std::make_shared<PackedConv2d>();
  p->table = isa.empty() ? &active_kernels() : &kernel_table(isa);
  p->oc = oc;
  p->icg = icg;
  p->kh = kh;
  p->kw = kw;
  p->groups = groups;
  p->depthwise = icg == 1 && groups > 1;
  p->colsum.assign(oc, 0);
  const int taps = kh * kw;
  for (int o = 0; o < oc; ++o)
    QR_CHECK_ARG(weight_sum_and_min(w + static_cast<size_t>(o) * k, k, &p->colsum[o]) != -128,
                 "w_q must hold values in [-127, 127] (found -128)");
  if (p->depthwise) {
    p->c_stride = (oc + 63) / 64 * 64;
    p->dw_weights.assign(static_cast<size_t>(taps) * p->c_stride, 0);
    for (int o = 0; o < oc; ++o)
      for (int t = 0; t < taps; ++t) p->dw_weights[static_cast<size_t>(t) * p->c_stride + o] = w[o * taps + t];
    const DwConvKernels& dw = *p->table->dwconv;
    if (dw.pack_extra_weights) {
      p->dw_extra_weights.assign(dw.extra_weights_bytes(oc, kh, kw), 0);
      char note[256];
      if (!dw.pack_extra_weights(w, oc, kh, kw, p->dw_extra_weights.data(), note, sizeof note)) p->dw_extra_weights.clear();
      p->dw_kernel_choice = note;
    }
    return p;
  }
  if (const int stride = winograd_stride(*p->table, icg, kh, kw, groups, geometry)) {
    const WinogradKernels& wk = *p->table->winograd;
    p->kernel_choice = winograd_choice(wk, icg, stride);
    p->winograd_stride = stride;
    p->winograd_u.reset(wk.packed_bytes(oc, icg, stride));
    wk.pack(w, oc, icg, stride, p->winograd_u.as<int16_t>());
    return p;
  }
  if (const DirectConvKernels* dk = p->table->direct_conv;
      dk && groups == 1 && geometry && geometry->dil_h == 1 && geometry->dil_w == 1 && dk->takes(icg, kh, kw)) {
    p->kernel_choice = "direct: " + std::to_string(icg) + "-channel " + std::to_string(kh) + "x" + std::to_string(kw) +
                       " conv, input rows read in place of im2col";
    p->direct_w.reset(dk->packed_bytes(oc, icg, kh, kw));
    dk->pack(w, oc, icg, kh, kw, p->direct_w.as<int8_t>());
    return p;
  }
  // torch's (oc, icg, kh, kw) to the GEMM's rows of K ordered (ky, kx, ic), like the NHWC input.
  const int ocg = oc / groups;
  std::vector<int8_t> b(static_cast<size_t>(ocg) * k);
  for (int gi = 0; gi < groups; ++gi) {
    for (int o = 0; o < ocg; ++o) {
      const int8_t* wo = w + static_cast<size_t>(gi * ocg + o) * k;
      for (int ic = 0; ic < icg; ++ic)
        for (int t = 0; t < taps; ++t) b[static_cast<size_t>(o) * k + t * icg + ic] = wo[ic * taps + t];
    }
    // A conv's rows may come as segments of kw * icg bytes, one per kernel row (Im2colRows::segments).
    p->group_gemm.push_back(pack_weights(*p->table->gemm, b.data(), k, ocg, static_cast<int>(k), kw * icg));
  }
  return p;
}

void conv2d(const PackedConv2d& p, const uint8_t* x, int n, int h, int w, int c, QParams xq, const float* w_scale,
            size_t w_scale_count, const float* bias, QParams out, Activation act, const Conv2dGeometry& g, uint8_t* y) {
  QR_CHECK_ARG(c == p.icg * p.groups, "x_q has " + std::to_string(c) + " channels; the weights expect " +
                                          std::to_string(p.icg * p.groups));
  conv2d_output_hw(p, h, w, g);
  const Requant rq = make_requant(p.oc, p.k(), p.colsum.data(), xq, w_scale, w_scale_count, bias, out, act);
  conv2d(p, x, n, h, w, c, static_cast<uint8_t>(xq.zero_point), rq, g, y);
}

void conv2d(const PackedConv2d& p, const uint8_t* x, int n, int h, int w, int c, uint8_t zp, const Requant& rq,
            const Conv2dGeometry& g, uint8_t* y) {
  QR_CHECK_ARG(c == p.icg * p.groups, "x_q has " + std::to_string(c) + " channels; the weights expect " +
                                          std::to_string(p.icg * p.groups));
  const auto [oh, ow] = conv2d_output_hw(p, h, w, g);
  if (n == 0) return;
  if (p.depthwise) return run_depthwise(p, x, n, h, w, c, rq, zp, g, oh, ow, y);
  if (p.winograd()) {
    const int ws = p.winograd_stride;
    QR_CHECK_ARG(g.stride_h == ws && g.stride_w == ws && g.dil_h == 1 && g.dil_w == 1,
                 "these weights were packed for Winograd at stride " + std::to_string(ws) +
                     " and dilation 1, and run only so");
    return run_winograd(p, x, n, h, w, c, rq, zp, g, oh, ow, y);
  }

  if (p.direct()) {
    QR_CHECK_ARG(g.dil_h == 1 && g.dil_w == 1,
                 "these weights were packed for the direct first-layer kernel, which runs at dilation 1 only");
    return run_direct(p, x, n, h, w, c, rq, zp, g, oh, ow, y);
  }
  const int64_t m64 = static_cast<int64_t>(n) * oh * ow;
  QR_CHECK_ARG(m64 <= std::numeric_limits<int>::max(), "x_q: batch * output pixels must be below 2^31");
  const int m = static_cast<int>(m64);
  const int ocg = p.oc / p.groups;
  const bool direct = p.kh == 1 && p.kw == 1 && g.stride_h == 1 && g.stride_w == 1 && g.pad_t == 0 && g.pad_l == 0 &&
                      g.pad_b == 0 && g.pad_r == 0;
  for (int gi = 0; gi < p.groups; ++gi) {
    Epilogue ep = rq.epilogue();
    ep.bias += gi * ocg;
    ep.mult += gi * ocg;
    uint8_t* yg = y + gi * ocg;
    if (direct) {
      gemm(p.group_gemm[gi], MatrixRows(x + gi * p.icg, c), m, ep, yg, p.oc);  // 1x1: NHWC is already A
    } else {
      gemm(p.group_gemm[gi], Im2colRows(x, static_cast<size_t>(n) * h * w * c, h, w, c, gi * p.icg, p.icg, p.kh, p.kw, g, oh,
                                                     ow, zp), m, ep, yg, p.oc);
    }
  }
}

}  // namespace qr::ops
