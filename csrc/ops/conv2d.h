// Quantized conv2d on NHWC uint8 activations: 1x1 as a GEMM, k x k as an implicit GEMM (im2col per
// block of rows), groups as one GEMM per group, depthwise with its own direct kernel.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "dispatch/dispatch.h"
#include "kernels/gemm.h"
#include "kernels/requant.h"

namespace qr::ops {

// Weights prepacked once for one ISA path.
struct PackedConv2d {
  const KernelTable* table = nullptr;
  int oc = 0, icg = 0, kh = 0, kw = 0, groups = 1;
  bool depthwise = false;                 // one input channel per group: the direct kernel
  std::vector<PackedWeights> group_gemm;  // GEMM path: B of group g is (oc/groups) x (kh*kw*icg), K ordered (ky, kx, ic)
  std::vector<int32_t> dw_weights;        // depthwise: [kh*kw][c_stride] int32
  int c_stride = 0;
  std::vector<int8_t> dw_extra_weights;   // depthwise: the path's second layout, if it took these weights
  std::string dw_kernel_choice;           // depthwise: which of the path's kernels runs and why (empty: one kernel)
  std::vector<int32_t> colsum;            // per output channel, over all its K products
  // Winograd (a 3x3 of one group at stride 1 or 2, dilation 1, where the path has the kernel): U'
  // packed for it, in place of group_gemm, and why it was chosen; such weights run at that stride
  // and dilation 1 only.
  AlignedBuffer winograd_u;
  int winograd_stride = 1;
  std::string kernel_choice;
  bool winograd() const { return winograd_u.size() > 0; }
  // Direct first-layer kernel (few input channels, one group, dilation 1, where the path has it):
  // weights packed for it in place of group_gemm; such weights run at dilation 1 only.
  AlignedBuffer direct_w;
  bool direct() const { return direct_w.size() > 0; }
  int k() const { return kh * kw * icg; }
};

struct Conv2dGeometry {
  int stride_h = 1, stride_w = 1;
  int pad_t = 0, pad_l = 0, pad_b = 0, pad_r = 0;
  int dil_h = 1, dil_w = 1;
};

// w: (oc, icg, kh, kw) int8 contiguous, torch's layout. geometry: the one the weights will always
// run with, when known (a model's node), which lets the packer choose Winograd; null: any.
std::shared_ptr<PackedConv2d> pack_conv2d(const int8_t* w, int oc, int icg, int kh, int kw, int groups,
                                          const std::string& isa, const Conv2dGeometry* geometry = nullptr);

// Checks the geometry (ValueError naming what is wrong) and returns the output (height, width).
std::pair<int, int> conv2d_output_hw(const PackedConv2d& p, int h, int w, const Conv2dGeometry& g);

// y: (n, oh, ow, oc) uint8 NHWC from x: (n, h, w, c) uint8 NHWC, with the layer's requantization
// built once (make_requant over p.colsum); x_zp is the zero point the padding holds.
void conv2d(const PackedConv2d& p, const uint8_t* x, int n, int h, int w, int c, uint8_t x_zp, const Requant& rq,
            const Conv2dGeometry& g, uint8_t* y);

// The same, building the requantization from the quantization arguments on each call.
void conv2d(const PackedConv2d& p, const uint8_t* x, int n, int h, int w, int c, QParams xq, const float* w_scale,
            size_t w_scale_count, const float* bias, QParams out, Activation act, const Conv2dGeometry& g, uint8_t* y);

}  // namespace qr::ops
