// The scalar reference of the elementwise ops: the quantized add as kernels.h's AddParams states it.
#include "kernels/ref/ref.h"

namespace qr::ref {
namespace {

void add(const uint8_t* __restrict a, const uint8_t* __restrict b, uint8_t* __restrict y, int64_t n,
         const AddParams& p) {
  const int32_t za = p.za, zb = p.zb, zy = p.zy;
  const float ma = p.ma, mb = p.mb, lo = p.lo, hi = p.hi;
  for (int64_t i = 0; i < n; ++i) y[i] = add_output(add_term(a[i], za, ma) + add_term(b[i], zb, mb), lo, hi, zy);
}

constexpr EltwiseKernels kKernels = {"scalar", add};

}  // namespace

const EltwiseKernels* eltwise_kernels() { return &kKernels; }

}  // namespace qr::ref
