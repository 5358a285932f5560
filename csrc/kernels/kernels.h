// The kernel table: function-pointer types every ISA path fills in, and the plain structs they share.
//
// Declarations and plain structs only: this header is included by translation units compiled with
// different ISA flags, and an inline function compiled under two flag sets would break the ODR.
#pragma once
#include <cstddef>
#include <cstdint>

namespace qr {

// Per-output-channel epilogue of a GEMM (docs/quantization.md):
//   int32 out:  c = acc (+ bias[n] when bias is set)
//   uint8 out:  c = zp + nearbyint(clamp(float(acc + bias[n]) * mult[n], lo - zp, hi - zp))
// bias and mult are readable up to the end of the last packed panel (callers pad them).
struct Epilogue {
  bool requantize = false;       // false: int32 output; true: uint8 output
  const int32_t* bias = nullptr; // indexed by output column; may be null for int32 output
  const float* mult = nullptr;   // requantize only
  int32_t out_zp = 0, lo = 0, hi = 255;
};

// One block of the output for one thread: rows [0, m) of `a` by columns [n0, n0 + n) of packed B.
struct GemmBlock {
  const uint8_t* a;       // row 0 of this block, row stride lda bytes, k bytes per row
  ptrdiff_t lda;
  int m;                  // rows in the block, <= the table's mc
  const int8_t* b_panel;  // packed panel holding column n0 (n0 is a multiple of nr)
  int n;                  // columns in the block, starting at n0; may end mid-panel
  int k;                  // logical K (before padding)
  int a_readable;         // bytes readable in every row of a, >= k (RowSource::readable_row_bytes)
  // Rows given as segments instead of at a (only to a path with reads_segments): row i's K bytes
  // are the nseg runs seg[i * nseg + s] of seg_bytes each (a multiple of 4), in order. Null: rows at a.
  const uint8_t* const* seg;
  int nseg, seg_bytes;
  Epilogue ep;            // bias/mult already offset to column n0
  void* c;                // output element (0, n0); row stride ldc elements
  ptrdiff_t ldc;
  void* scratch;          // per-thread, at least scratch_bytes(k) bytes, 64-byte aligned
};

// One ISA path's GEMM. Packed B is a sequence of panels of nr columns; panel j starts at byte
// j * packed_b_bytes(nr, k). docs/kernels.md gives each path's panel layout.
struct GemmKernels {
  const char* isa;
  int nr;  // columns per packed panel
  int mr;  // rows of the micro-kernel's tile: the driver's row blocks are multiples of it
  int mc;  // most rows per gemm_block call
  size_t (*packed_b_bytes)(int n, int k);
  // Packs b (n rows of k int8, row stride ldb) into dst (packed_b_bytes(n, k) zeroed bytes).
  // run_bytes > 0: A rows may come as segments of that many bytes (GemmBlock::seg; a conv's
  // kw * in_channels), which a path may use to lay out B; 0: rows come whole.
  void (*pack_b)(const int8_t* b, ptrdiff_t ldb, int n, int k, int run_bytes, int8_t* dst);
  size_t (*scratch_bytes)(int k);
  void (*gemm_block)(const GemmBlock& blk);
  // Null for a path with one micro-kernel. Otherwise writes to note (note_size bytes, NUL
  // terminated) which micro-kernel(s) gemm_block will run on B as pack_b packed it into `packed`,
  // and why. A char buffer, not std::string: an ISA unit must not instantiate library templates.
  void (*describe_packing)(const int8_t* packed, int n, int k, char* note, size_t note_size);
  // Whether gemm_block reads rows given as segments (GemmBlock::seg): a convolution's A rows
  // straight from the input, without unfolding them first.
  bool reads_segments;
};

// Depthwise convolution over one image, NHWC, one output channel per input channel (a channel
// multiplier > 1 is expanded by the caller). Padding taps read pad_row, c bytes of the input zero
// point, so sum_taps (x - zp_x) w = acc - zp_x * sum_taps w, which ep.bias already holds.
struct DwConvArgs {
  const uint8_t* x;        // [h][w][c]
  int h, w, c;
  const int32_t* weights;  // [kh * kw][c_stride] int32 (values in [-127, 127]), zero padded
  int c_stride;            // c rounded up to 64
  int kh, kw, stride_h, stride_w, dil_h, dil_w, pad_t, pad_l;
  int oh, ow;              // output size
  int oh_begin, oh_end;    // output rows this call computes
  const uint8_t* pad_row;  // c bytes (plus 64 readable) holding zp_x
  // Tap t of a window inside the image reads at its corner + tap_offsets[t] bytes:
  // (ky * dil_h * w + kx * dil_w) * c for t = ky * kw + kx. tap_scratch has kh * kw entries the
  // kernel may write (this call's own).
  const uintptr_t* tap_offsets;
  uintptr_t* tap_scratch;
  Epilogue ep;             // requantize = true; bias and mult hold c_stride entries
  uint8_t* y;              // [oh][ow][c]
  // The path's second weight layout (DwConvKernels::pack_extra_weights) when it accepted these
  // weights, else null.
  const int8_t* extra_weights;
};

// One ISA path's depthwise convolution.
struct DwConvKernels {
  const char* isa;
  void (*dwconv)(const DwConvArgs& args);
  // Null for a path with one kernel. Otherwise the bytes of its second weight layout (AVX2: tap
  // quads for vpmaddubsw, or tap pairs for vpmaddwd) for c channels and a kh x kw kernel, and its
  // packer: w is [c][kh * kw] int8; it returns false when the weights do not allow that kernel, and
  // writes to note (NUL terminated) which kernel runs and why.
  size_t (*extra_weights_bytes)(int c, int kh, int kw);
  bool (*pack_extra_weights)(const int8_t* w, int c, int kh, int kw, int8_t* dst, char* note, size_t note_size);
};

// Exact int8 Winograd for 3x3 convs of one group and dilation 1: F(2x2, 3x3), F(3x3, 3x3) or
// F(4x4, 3x3) at stride 1, F(2x2, 3x3) over the input's phases at stride 2 (docs/quantization.md,
// "Winograd"): Y = A^T [sum_c U'[oc, c] (.) V[c]] A equals a fixed multiple of the direct sum of
// (x_q * w_q) exactly, with U' (from the filter) and V (from an input tile, padding holding the
// input zero point) in int16, products summed in int32 with wrap-around, and an exact division
// recovers it. The result is acc of the direct GEMM, so the same epilogue gives the same bytes.
//
// One call computes a block of output tiles (tile(c, stride) x tile(c, stride) output pixels each,
// numbered across the batch image-major, then tile row, then tile column) for a range of packed
// output-channel panels.
struct WinogradTask {
  const uint8_t* x;        // [n][h][w][c], the whole batch
  int h, w, c;
  int stride;              // 1 or 2, in both directions: what the weights were packed for
  uint8_t x_zp;            // what the padding holds
  int pad_t, pad_l;
  int oh, ow;              // output size; tiles_w = ceil(ow / tile), tiles_h = ceil(oh / tile)
  int64_t tile0;           // first tile of the block
  int tiles;               // tiles in the block, <= WinogradKernels::block_tiles(c, stride)
  const int16_t* u;        // packed U' (WinogradKernels::pack)
  int oc;
  int panel0, panels;      // output-channel panels [panel0, panel0 + panels), nr channels each
  Epilogue ep;             // requantize = true; bias and mult indexed by output channel
  uint8_t* y;              // [n][oh][ow][oc]
  void* scratch;           // per-thread, scratch_bytes(c, stride) bytes, 64-byte aligned
};

// One ISA path's Winograd kernel (null in the tables of paths without one: KernelTable::winograd).
// The variant follows from the input channels c and the stride (1 or 2) alone, so every function
// takes them; the others are called only for a (c, stride) that tile() takes.
struct WinogradKernels {
  const char* isa;
  int nr;                                          // output channels per packed panel
  int (*tile)(int c, int stride);                  // output pixels per tile side (2, 3, 4); 0: none
  const char* (*variant)(int c, int stride);       // e.g. "F(4x4,3x3)"
  int (*block_tiles)(int c, int stride);           // most tiles per call, sized so V stays in L2
  size_t (*packed_bytes)(int oc, int c, int stride);
  // w: (oc, c, 3, 3) int8 in [-127, 127], torch's layout; dst: packed_bytes zeroed bytes.
  void (*pack)(const int8_t* w, int oc, int c, int stride, int16_t* dst);
  size_t (*scratch_bytes)(int c, int stride);
  void (*run)(const WinogradTask& task);
};

// Direct convolution of a layer with few input channels (a network's first: 1 or 3), one group,
// dilation 1, any stride and padding, over one image: each kernel row's kw * c input bytes are
// contiguous in an NHWC row, so they are read as groups of 4 bytes (avx512_vnni and avx_vnni,
// vpdpbusd) or 2 values widened to int16 (avx2, vpmaddwd), each broadcast against that many weights
// per output channel (zero past kw * c): no im2col, no packing of A. The sums are the GEMM's acc, so
// the same epilogue gives the same bytes.
struct DirectConvTask {
  const uint8_t* x;        // one image, [h][w][c]
  int h, w, c, kh, kw;
  int stride_h, stride_w, pad_t, pad_l;
  uint8_t x_zp;            // what the padding holds
  int oh, ow;              // output size
  int oh_begin, oh_end;    // output rows this call computes
  const int8_t* weights;   // DirectConvKernels::pack
  int oc;
  Epilogue ep;             // requantize = true; bias and mult readable to oc rounded up to 64
  uint8_t* y;              // the image's [oh][ow][oc]
  void* scratch;           // scratch_bytes(...) bytes, 64-byte aligned
};

struct DirectConvKernels {
  const char* isa;
  bool (*takes)(int c, int kh, int kw);
  size_t (*packed_bytes)(int oc, int c, int kh, int kw);
  // w: (oc, c, kh, kw) int8, torch's layout; dst: packed_bytes zeroed bytes.
  void (*pack)(const int8_t* w, int oc, int c, int kh, int kw, int8_t* dst);
  size_t (*scratch_bytes)(int c, int kh, int kw, int ow, int stride_w);
  void (*run)(const DirectConvTask& t);
};

// Byte moves (docs/kernels.md, "Byte lookups and gathers"): 256-entry table lookups and the gather
// of channel bytes within NHWC rows, yr[i] = xr[index[i]].
//
// A gather's plan is built once per index (ops/gather.cc) and read by the SIMD paths; the scalar
// path reads only index. Outputs go in chunks of 64 bytes; a chunk is served by up to
// kByteGatherMaxWindows windows of 128 source bytes each (one vpermi2b), or, when its indices
// spread wider, by plain byte loads.
constexpr int kByteGatherMaxWindows = 4;

struct ByteGatherWindow {
  uint8_t offset[64];          // output byte j of the chunk is window byte offset[j] (0..127)
  uint64_t take;               // the output bytes this window supplies
  uint64_t load_lo, load_hi;   // the window bytes [0, 64) and [64, 128) to read: all < the row's length
  int64_t base;                // the window's first byte within the row
};

struct ByteGatherChunk {
  int32_t first_window;  // into ByteGatherPlan::windows
  int32_t windows;       // 0: this chunk's bytes are gathered one at a time
};

struct ByteGatherPlan {
  const int32_t* index;             // [c_out], each < the input row's length
  int64_t c_out;
  const ByteGatherChunk* chunks;    // [ceil(c_out / 64)]
  const ByteGatherWindow* windows;
};

// One ISA path's byte moves.
struct BytePermuteKernels {
  const char* isa;
  // y[i] = table[x[i]] for i < n; table has 256 entries.
  void (*lut)(const uint8_t* x, uint8_t* y, int64_t n, const uint8_t* table);
  // Rows of c bytes: y[r][ch] = tables[ch][x[r][ch]]; tables is [c][256].
  void (*lut_channels)(const uint8_t* x, uint8_t* y, int64_t rows, int64_t c, const uint8_t* tables);
  // Rows of c_in bytes to rows of plan.c_out: y[r][i] = x[r][plan.index[i]].
  void (*gather)(const uint8_t* x, int64_t c_in, uint8_t* y, int64_t rows, const ByteGatherPlan& plan);
};

// The quantized add of two uint8 tensors of one shape (docs/quantization.md, "Add"):
//   y = zy + round_half_even(clamp(float32(a - za) * ma + float32(b - zb) * mb, lo, hi))
// with lo and hi relative to zy (-zy, or 0 under ReLU; 255 - zy), the products rounded to float32
// one at a time (no FMA) and summed in that order.
struct AddParams {
  int32_t za, zb, zy;
  float ma, mb, lo, hi;
};

// The product of two uint8 activations (docs/quantization.md, "mul"):
//   y = zy + round_half_even(clamp((float32(a - za) * float32(b - zb)) * m, lo, hi))
// with lo = -zy and hi = 255 - zy. The product of the centred codes is exact in float32
// (|.| <= 255 * 255 < 2^24), so it equals float32 of the int32 product; one rounding by m follows.
struct MulParams {
  int32_t za, zb, zy;
  float m, lo, hi;
};

// One ISA path's elementwise ops.
struct EltwiseKernels {
  const char* isa;
  void (*add)(const uint8_t* a, const uint8_t* b, uint8_t* y, int64_t n, const AddParams& p);
  // mul of n values of a and b (p.zb used).
  void (*mul)(const uint8_t* a, const uint8_t* b, uint8_t* y, int64_t n, const MulParams& p);
  // mul of n values of a by float32 factors given already centred, float32(b - zb), repeating with
  // a period: value i's is fb[i % period] (a squeeze-excitation's per-channel scale over an image's
  // pixels; p.zb unused). fb holds period + 32 entries, fb[j] == fb[j % period], so a vector of
  // 32 factors from any phase is one contiguous read.
  void (*mul_periodic)(const uint8_t* a, const float* fb, int64_t period, uint8_t* y, int64_t n, const MulParams& p);
};

// The float32 kernels of a transformer encoder (kernels/transformer_body.inc): one source built as
// ref (scalar) and avx2, the same bits from both.
struct TransformerKernels {
  const char* isa;
  // One (image, head) of attention: q, k, v and out point at the head's first column, rows ld (q, k, v)
  // and ld_out (out) floats apart; bias has one value per key; scratch holds attention_scratch_floats(seq, dh)
  // floats.
  void (*attention_head)(const float* q, const float* k, const float* v, const float* bias, int64_t seq, int64_t dh,
                         int64_t ld, float scale, float* out, int64_t ld_out, float* scratch);
  size_t (*attention_scratch_floats)(int64_t seq, int64_t dh);
  // y = y * (0.5 + 0.5 * erf_q(y * 0.70710678)) in place.
  void (*gelu)(float* y, int64_t n);
  // One row of linear_dynamic's input (k floats) to uint8 codes, its scale and zero point, after the
  // product with in_scale (into smoothed, k floats) when in_scale is not null.
  void (*quantize_row)(const float* x, int64_t k, const float* in_scale, float* smoothed, uint8_t* q, float* scale,
                       int32_t* zero_point);
  // quantize_row with a fixed scale and zero point (linear_dynamic's static option).
  void (*quantize_row_static)(const float* x, int64_t k, const float* in_scale, float* smoothed, float scale,
                              int32_t zero_point, uint8_t* q);
  // One row of linear_dynamic's output from the int32 sums: float(acc - zp * colsum) * (s * w_scale) (+ bias).
  void (*dequantize_row)(const int32_t* acc, int64_t n, float s, int32_t zp, const int32_t* colsum,
                         const float* w_scale, const float* bias, float* y);
};

}  // namespace qr
