// The reduce op of the engine: x.sum(dims) / x.mean(dims) over NCHW dims 1-3 of a rank-4 value (NHWC in
// memory), or over the features of (N, F). The result keeps the input's rank (keepdim), or, over two dims
// of a rank-4 input, is (N, the dim left): the only dropped-dims results the engine's ranks can hold.
#include <string>
#include <vector>

#include "core/error.h"
#include "engine/node.h"
#include "ops/reduce.h"

namespace qr::engine {
namespace {

class ReduceNode : public Node {
 public:
  ReduceNode(const OpSpec& spec, const GraphSpec& graph) : Node(spec) {
    check_io(spec, graph, 1, DType::kUint8, DType::kUint8);
    const std::string& mode = attr_str(spec, "mode");
    QR_CHECK_ARG(mode == "mean" || mode == "sum",
                 where(spec) + ": attribute 'mode' must be mean or sum, got '" + mode + "'");
    mean_ = mode == "mean";
    dims_ = attr_ints(spec, "dims", 1, 3);
    for (size_t i = 0; i < dims_.size(); ++i)
      QR_CHECK_ARG(dims_[i] >= 1 && dims_[i] <= 3 && (i == 0 || dims_[i] > dims_[i - 1]),
                   where(spec) + ": attribute 'dims' must be distinct NCHW dims in [1, 3], in increasing order");
    keepdim_ = attr_int(spec, "keepdim") != 0;
    QR_CHECK_ARG(keepdim_ || dims_.size() == 2,
                 where(spec) + ": keepdim false needs exactly two dims (the rank-2 result of a rank-4 input)");
    in_ = qparams(graph, spec.inputs[0]);
    out_ = qparams(graph, spec.outputs[0]);
  }

  Shape output_shape(const Shape* in, int) const override {
    const Shape& x = in[0];
    check_shape(x.rank == 4 || (x.rank == 2 && dims_ == std::vector<int64_t>{1} && keepdim_), *this,
                "reduces a 4-D input, or dim 1 of a 2-D one with keepdim, got " + x.str());
    const ops::ReduceShape s = nhwc(x);
    check_shape(s.count() <= ops::kMaxReduceCount, *this,
                "sums " + std::to_string(s.count()) + " codes per output, more than the exact limit " +
                    std::to_string(ops::kMaxReduceCount) + " (input " + x.str() + ")");
    Shape y = x;
    for (int64_t d : dims_) y.d[d] = 1;
    if (keepdim_) return y;
    const int kept = 6 - static_cast<int>(dims_[0] + dims_[1]);  // the dim of 1, 2, 3 not reduced
    return Shape{2, {x.n(), x.d[kept], 0, 0}};
  }

  void run(const NodeIo& io) const override {
    ops::reduce(static_cast<const uint8_t*>(io.in[0]), nhwc(io.in_shapes[0]), mean_, in_, out_,
                static_cast<uint8_t*>(io.out));
  }

 private:
  // The input as NHWC extents and which of H, W, C this op sums over (NCHW dim 1 is C, 2 is H, 3 is W).
  ops::ReduceShape nhwc(const Shape& x) const {
    ops::ReduceShape s{x.n(), x.h(), x.w(), x.c(), false, false, false};
    for (int64_t d : dims_) (d == 1 ? s.rc : d == 2 ? s.rh : s.rw) = true;
    return s;
  }

  bool mean_ = true, keepdim_ = true;
  std::vector<int64_t> dims_;
  QParams in_{}, out_{};
};

}  // namespace

std::unique_ptr<Node> make_reduce(const OpSpec& spec, const GraphSpec& graph) {
  return std::make_unique<ReduceNode>(spec, graph);
}

}  // namespace qr::engine
