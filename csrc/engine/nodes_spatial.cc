// The ops of the engine that change a tensor's height and width by moving codes, without weights:
// resize (F.interpolate: nearest, bilinear) and constant pad (F.pad). Both keep the input's quantization.
#include <cstring>
#include <string>

#include "core/error.h"
#include "core/limits.h"
#include "engine/node.h"
#include "ops/resize.h"
#include "ops/u8_common.h"

namespace qr::engine {
namespace {

void check_keeps_quantization(const OpSpec& spec, const GraphSpec& graph) {
  const QParams in = qparams(graph, spec.inputs[0]), out = qparams(graph, spec.outputs[0]);
  QR_CHECK_ARG(in.scale == out.scale && in.zero_point == out.zero_point,
               where(spec) + ": keeps its input's quantization; the output's differs");
}

// The output size comes from the `size` attr, the scale factors, or (a second input) that input's H and W.
class ResizeNode : public Node {
 public:
  ResizeNode(const OpSpec& spec, const GraphSpec& graph) : Node(spec) {
    const int n_in = static_cast<int>(spec.inputs.size());
    QR_CHECK_ARG(n_in == 1 || n_in == 2, where(spec) + ": expects 1 or 2 inputs");
    check_io(spec, graph, n_in, DType::kUint8, DType::kUint8);
    check_keeps_quantization(spec, graph);
    const std::string& mode = attr_str(spec, "mode");
    QR_CHECK_ARG(mode == "nearest" || mode == "bilinear",
                 where(spec) + ": attribute 'mode' must be nearest or bilinear, got '" + mode + "'");
    bilinear_ = mode == "bilinear";
    align_corners_ = attr_int(spec, "align_corners") != 0;
    QR_CHECK_ARG(bilinear_ || !align_corners_, where(spec) + ": align_corners applies to bilinear only");
    const auto& size = attr_ints(spec, "size", 2);
    oh_ = size[0];
    ow_ = size[1];
    sh_ = attr_float(spec, "scale_h");
    sw_ = attr_float(spec, "scale_w");
    const bool by_size = oh_ >= 1 && ow_ >= 1 && oh_ <= kMaxDim && ow_ <= kMaxDim && sh_ == 0.0 && sw_ == 0.0;
    const bool by_scale = oh_ == 0 && ow_ == 0 && sh_ > 0.0 && sw_ > 0.0;
    const bool by_input = n_in == 2 && oh_ == 0 && ow_ == 0 && sh_ == 0.0 && sw_ == 0.0;
    QR_CHECK_ARG(n_in == 2 ? by_input : (by_size || by_scale),
                 where(spec) + ": the output size comes from exactly one of: 'size' (both >= 1), 'scale_h' and "
                               "'scale_w' (both > 0), or a second input (size [0, 0], scales 0)");
  }

  Shape output_shape(const Shape* in, int n_in) const override {
    check_shape(in[0].rank == 4, *this, "expects a 4-D input, got " + in[0].str());
    if (n_in == 2) {
      check_shape(in[1].rank == 4, *this, "takes its output size from a 4-D second input, got " + in[1].str());
      return Shape{4, {in[0].n(), in[0].c(), in[1].h(), in[1].w()}};
    }
    if (oh_ >= 1) return Shape{4, {in[0].n(), in[0].c(), oh_, ow_}};
    try {
      return Shape{4, {in[0].n(), in[0].c(), ops::resize_extent(in[0].h(), sh_), ops::resize_extent(in[0].w(), sw_)}};
    } catch (const ValueError& e) {
      check_shape(false, *this, std::string(e.what()) + " (input " + in[0].str() + ")");
      throw;  // not reached
    }
  }

  void run(const NodeIo& io) const override {
    const Shape& x = io.in_shapes[0];
    const ops::ResizeAxis ah{x.h(), io.out_shape.h(), sh_}, aw{x.w(), io.out_shape.w(), sw_};
    const auto* src = static_cast<const uint8_t*>(io.in[0]);
    auto* dst = static_cast<uint8_t*>(io.out);
    if (bilinear_)
      ops::resize_bilinear(src, x.n(), x.c(), ah, aw, align_corners_, dst);
    else
      ops::resize_nearest(src, x.n(), x.c(), ah, aw, dst);
  }

 private:
  bool bilinear_ = false, align_corners_ = false;
  int64_t oh_ = 0, ow_ = 0;
  double sh_ = 0.0, sw_ = 0.0;
};

// Constant padding of H and W with one code (the pad value quantized with the input's quantization).
class PadNode : public Node {
 public:
  PadNode(const OpSpec& spec, const GraphSpec& graph) : Node(spec) {
    check_io(spec, graph, 1, DType::kUint8, DType::kUint8);
    check_keeps_quantization(spec, graph);
    const auto& p = attr_ints(spec, "padding", 4);
    for (int i = 0; i < 4; ++i) {
      QR_CHECK_ARG(p[i] >= 0 && p[i] <= kMaxDim, where(spec) + ": padding must be in [0, 2^31 - 1]");
      pad_[i] = p[i];
    }
    const int64_t fill = attr_int(spec, "fill_code");
    QR_CHECK_ARG(fill >= 0 && fill <= 255, where(spec) + ": fill_code must be in [0, 255]");
    fill_ = static_cast<uint8_t>(fill);
  }

  Shape output_shape(const Shape* in, int) const override {
    check_shape(in[0].rank == 4, *this, "expects a 4-D input, got " + in[0].str());
    // Each term fits an int32, so the sums fit an int64; the plan checks them against the limits.
    return Shape{4, {in[0].n(), in[0].c(), pad_[0] + in[0].h() + pad_[2], pad_[1] + in[0].w() + pad_[3]}};
  }

  void run(const NodeIo& io) const override {
    const Shape& x = io.in_shapes[0];
    const int64_t c = x.c(), oh = io.out_shape.h(), row_in = x.w() * c, row_out = io.out_shape.w() * c;
    const int64_t left = pad_[1] * c, right = pad_[3] * c;
    const auto* src = static_cast<const uint8_t*>(io.in[0]);
    auto* dst = static_cast<uint8_t*>(io.out);
    ops::parallel_chunks(x.n() * oh, row_out, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const int64_t image = r / oh, iy = r % oh - pad_[0];
        uint8_t* out = dst + r * row_out;
        if (iy < 0 || iy >= x.h()) {
          std::memset(out, fill_, row_out);
          continue;
        }
        std::memset(out, fill_, left);
        std::memcpy(out + left, src + (image * x.h() + iy) * row_in, row_in);
        std::memset(out + left + row_in, fill_, right);
      }
    });
  }

 private:
  int64_t pad_[4] = {0, 0, 0, 0};  // top, left, bottom, right
  uint8_t fill_ = 0;
};

}  // namespace

std::unique_ptr<Node> make_resize(const OpSpec& spec, const GraphSpec& graph) {
  return std::make_unique<ResizeNode>(spec, graph);
}
std::unique_ptr<Node> make_pad(const OpSpec& spec, const GraphSpec& graph) {
  return std::make_unique<PadNode>(spec, graph);
}

}  // namespace qr::engine
