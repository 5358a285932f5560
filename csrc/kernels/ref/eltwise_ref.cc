// The scalar reference of the elementwise ops: the quantized add as kernels.h's AddParams states it.
#include "kernels/ref/ref.h"

namespace qr::ref {
namespace {

// One term of the add: float32(q - zp) * m.
inline float term(uint8_t q, int32_t zp, float m) { return static_cast<float>(static_cast<int32_t>(q) - zp) * m; }

void add(const uint8_t* __restrict a, const uint8_t* __restrict b, uint8_t* __restrict y, int64_t n,
         const AddParams& p) {
  const int32_t za = p.za, zb = p.zb, zy = p.zy;
  const float ma = p.ma, mb = p.mb, lo = p.lo, hi = p.hi;
  for (int64_t i = 0; i < n; ++i) {
    float v = term(a[i], za, ma) + term(b[i], zb, mb);
    v = v < lo ? lo : v;
    v = v > hi ? hi : v;
    constexpr float kMagic = 12582912.0f;  // 1.5 * 2^23: adding it rounds |v| < 2^22 half to even
    y[i] = static_cast<uint8_t>(static_cast<int32_t>((v + kMagic) - kMagic) + zy);
  }
}

constexpr EltwiseKernels kKernels = {"scalar", add};

}  // namespace

const EltwiseKernels* eltwise_kernels() { return &kKernels; }

}  // namespace qr::ref
