// The scalar reference of the elementwise ops: the quantized add and mul as kernels.h's AddParams and
// MulParams state them.
#include "kernels/ref/ref.h"

namespace qr::ref {
namespace {

void add(const uint8_t* __restrict a, const uint8_t* __restrict b, uint8_t* __restrict y, int64_t n,
         const AddParams& p) {
  const int32_t za = p.za, zb = p.zb, zy = p.zy;
  const float ma = p.ma, mb = p.mb, lo = p.lo, hi = p.hi;
  for (int64_t i = 0; i < n; ++i) y[i] = add_output(add_term(a[i], za, ma) + add_term(b[i], zb, mb), lo, hi, zy);
}

float mul_term(uint8_t q, int32_t zp) { return static_cast<float>(static_cast<int32_t>(q) - zp); }

void mul(const uint8_t* __restrict a, const uint8_t* __restrict b, uint8_t* __restrict y, int64_t n,
         const MulParams& p) {
  for (int64_t i = 0; i < n; ++i)
    y[i] = add_output((mul_term(a[i], p.za) * mul_term(b[i], p.zb)) * p.m, p.lo, p.hi, p.zy);
}

void mul_periodic(const uint8_t* __restrict a, const float* __restrict fb, int64_t period, uint8_t* __restrict y,
                  int64_t n, const MulParams& p) {
  for (int64_t i = 0; i < n; ++i)
    y[i] = add_output((mul_term(a[i], p.za) * fb[i % period]) * p.m, p.lo, p.hi, p.zy);
}

constexpr EltwiseKernels kKernels = {"scalar", add, mul, mul_periodic};

}  // namespace

const EltwiseKernels* eltwise_kernels() { return &kKernels; }

}  // namespace qr::ref
