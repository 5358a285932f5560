// Elementwise uint8 ops on NHWC activations: quantized add (b full, per channel or a scalar), mul,
// concat with requantization to the output's quantization, and 256-entry lookup tables.
// The formulas are in docs/quantization.md ("Add", "Concat", "Lookup tables").
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "kernels/requant.h"

namespace qr::ops {

// How b lines up with a (rows x channels, channels innermost as in NHWC).
enum class Broadcast {
  kNone,        // b has rows * channels values, like a
  kPerChannel,  // b has `channels` values, one per channel
  kScalar,      // b has one value
};

// y = clamp(zp_y + round_half_even(float32(a - zp_a) * m_a + float32(b - zp_b) * m_b), lo, 255)
// with m_* = float32(s_* / s_y) and lo = zp_y under ReLU, else 0. isa: the kernel table's path
// for a full b ("" = the active one); the broadcasts run plain C++. subtract: a - b, m_b negated
// (the kernels only multiply by it, and negation is exact).
void add(const uint8_t* a, QParams qa, const uint8_t* b, QParams qb, Broadcast bcast, int64_t rows, int64_t channels,
         QParams out, bool relu, uint8_t* y, const std::string& isa = "", bool subtract = false);

// y = zp_y + round_half_even(clamp(float32((a - zp_a) * (b - zp_b)) * m, -zp_y, 255 - zp_y)) with
// m = float32(s_a * s_b / s_y): the product of two activations (docs/quantization.md, "mul"). a is
// `images` x `pixels` x `channels` (NHWC); b is the same, or with b_per_image one row of `channels`
// per image (NCHW (N, C, 1, 1): a squeeze-excitation's channel weights). isa: the kernel table's
// path ("" = the active one).
void mul(const uint8_t* a, QParams qa, const uint8_t* b, QParams qb, bool b_per_image, int64_t images, int64_t pixels,
         int64_t channels, QParams out, uint8_t* y, const std::string& isa = "");

// table[q] = clamp(zp_out + round_half_even(float32(q - zp_in) * float32(s_in / s_out)), 0, 255):
// requantization of every code from `in` to `out` (the identity when in == out). `what` names the
// input's scale in the error raised when s_in / s_out is not a finite float32 > 0.
std::array<uint8_t, 256> requant_table(QParams in, QParams out, const char* what = "in_scale");

// One concat input: `inner` contiguous values per outer index, in its own quantization.
struct ConcatInput {
  const uint8_t* data;
  int64_t inner;
  QParams q;
};

// y (outer x sum of inner, row-major) = the inputs side by side along the inner axis, each
// requantized to `out` (copied unchanged when its quantization equals `out`). isa: the kernel
// table's path for the requantizing copies, a table lookup ("" = the active one).
void concat(const std::vector<ConcatInput>& inputs, int64_t outer, QParams out, uint8_t* y, const std::string& isa = "");

// y[i] = table[x[i]] for a 256-entry table, on `isa`'s kernel ("" = the active one).
void lut(const uint8_t* x, int64_t count, const uint8_t* table, uint8_t* y, const std::string& isa = "");

// Rows of `channels` values: y[r][c] = tables[c][x[r][c]], tables being [channels][256].
void lut_channels(const uint8_t* x, int64_t rows, int64_t channels, const uint8_t* tables, uint8_t* y,
                  const std::string& isa = "");

}  // namespace qr::ops
