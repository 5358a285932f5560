// Quantized add, mul, concat and lookup tables on uint8. The add of two full tensors (the engine's
// residual add) and mul run the kernel table's eltwise kernels (kernels/*/eltwise_*.cc), lut and
// concat's requantizing copies its byte kernels (BytePermuteKernels); the broadcast adds are plain
// C++ loops over contiguous values (channels innermost) that the compiler vectorises.
#include "ops/eltwise.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "core/error.h"
#include "dispatch/dispatch.h"
#include "kernels/ref/ref.h"
#include "ops/u8_common.h"

namespace qr::ops {
namespace {

// float32(s_in / s_out), computed in double and rounded once; `what` names the ratio in errors.
float ratio(QParams in, QParams out, const std::string& what, double limit) {
  const float m = static_cast<float>(static_cast<double>(in.scale) / static_cast<double>(out.scale));
  QR_CHECK_ARG(std::isfinite(m) && m > 0.0f && m <= limit,
               what + " must be a finite float32 > 0" + (limit < 1e300 ? " and at most 2^32" : "") + ", got " +
                   std::to_string(m));
  return m;
}

using ref::add_output;
using ref::add_term;

// b's terms precomputed: vb[i * vb_step] (step 1: per channel, step 0: one scalar).
void add_terms(const uint8_t* __restrict a, const float* __restrict vb, int64_t vb_step, uint8_t* __restrict y,
               int64_t n, const AddParams p) {
  if (vb_step == 0) {
    const float v = vb[0];
    for (int64_t i = 0; i < n; ++i) y[i] = add_output(add_term(a[i], p.za, p.ma) + v, p.lo, p.hi, p.zy);  // vectorised
  } else {
    for (int64_t i = 0; i < n; ++i) y[i] = add_output(add_term(a[i], p.za, p.ma) + vb[i], p.lo, p.hi, p.zy);  // vectorised
  }
}

}  // namespace

void add(const uint8_t* a, QParams qa, const uint8_t* b, QParams qb, Broadcast bcast, int64_t rows, int64_t channels,
         QParams out, bool relu, uint8_t* y, const std::string& isa, bool subtract) {
  check_qparams(qa, "a");
  check_qparams(qb, "b");
  check_qparams(out, "out");
  QR_CHECK_ARG(rows >= 0 && channels >= 0, "add: negative size");
  // Bounded so that neither term can overflow to inf (inf - inf would be NaN); past 2^32 every
  // nonzero term saturates the output anyway.
  constexpr double kLimit = 4294967296.0;
  const float ma = ratio(qa, out, "a_scale / out_scale", kLimit);
  const float mb = (subtract ? -1.0f : 1.0f) * ratio(qb, out, "b_scale / out_scale", kLimit);
  const int32_t za = qa.zero_point, zb = qb.zero_point, zy = out.zero_point;
  const float lo = static_cast<float>((relu ? zy : 0) - zy), hi = static_cast<float>(255 - zy);
  const int64_t count = rows * channels;

  const AddParams ap{za, zb, zy, ma, mb, lo, hi};
  switch (bcast) {
    case Broadcast::kNone: {
      const EltwiseKernels& k = *(isa.empty() ? active_kernels() : kernel_table(isa)).eltwise;
      parallel_chunks(count, 3, [&](int64_t begin, int64_t end) { k.add(a + begin, b + begin, y + begin, end - begin, ap); });
      break;
    }
    case Broadcast::kScalar: {
      const float vb = add_term(b[0], zb, mb);
      parallel_chunks(count, 2, [&](int64_t begin, int64_t end) {
        add_terms(a + begin, &vb, 0, y + begin, end - begin, ap);
      });
      break;
    }
    case Broadcast::kPerChannel: {
      // b's terms once per call: the same float32 values the elementwise loop would compute.
      std::vector<float> vb(static_cast<size_t>(channels));
      for (int64_t ch = 0; ch < channels; ++ch) vb[ch] = add_term(b[ch], zb, mb);
      parallel_chunks(rows, 2 * channels, [&](int64_t begin, int64_t end) {
        for (int64_t r = begin; r < end; ++r) add_terms(a + r * channels, vb.data(), 1, y + r * channels, channels, ap);
      });
      break;
    }
  }
}

void mul(const uint8_t* a, QParams qa, const uint8_t* b, QParams qb, bool b_per_image, int64_t images, int64_t pixels,
         int64_t channels, QParams out, uint8_t* y, const std::string& isa) {
  check_qparams(qa, "a");
  check_qparams(qb, "b");
  check_qparams(out, "out");
  QR_CHECK_ARG(images >= 0 && pixels >= 0 && channels >= 0, "mul: negative size");
  // m <= 2^32 keeps every product finite (|(a - za) * (b - zb)| <= 255 * 255).
  const float m = static_cast<float>(static_cast<double>(qa.scale) * static_cast<double>(qb.scale) /
                                     static_cast<double>(out.scale));
  QR_CHECK_ARG(std::isfinite(m) && m > 0.0f && m <= 4294967296.0f,
               "a_scale * b_scale / out_scale must be a finite float32 > 0 and at most 2^32, got " + std::to_string(m));
  const MulParams p{qa.zero_point, qb.zero_point, out.zero_point, m, static_cast<float>(-out.zero_point),
                    static_cast<float>(255 - out.zero_point)};
  const EltwiseKernels& k = *(isa.empty() ? active_kernels() : kernel_table(isa)).eltwise;
  if (!b_per_image) {
    const int64_t count = images * pixels * channels;
    parallel_chunks(count, 3, [&](int64_t begin, int64_t end) { k.mul(a + begin, b + begin, y + begin, end - begin, p); });
    return;
  }
  // A squeeze-excitation scale: one code of b per (image, channel), centred to float32 once, each
  // image's C factors followed by their first 32 again (MulParams' periodic layout), and each image
  // run as one stream of pixels x channels so only its end takes the kernel's tail.
  const int64_t row = channels + 32;
  std::vector<float> fb(static_cast<size_t>(images * row));
  for (int64_t img = 0; img < images; ++img)
    for (int64_t j = 0; j < row && channels > 0; ++j)
      fb[img * row + j] = static_cast<float>(static_cast<int32_t>(b[img * channels + j % channels]) - qb.zero_point);
  parallel_chunks(images * pixels, 2 * channels, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end;) {  // runs of pixels within one image
      const int64_t img = r / pixels, stop = std::min(end, (img + 1) * pixels);
      k.mul_periodic(a + r * channels, fb.data() + img * row, channels, y + r * channels, (stop - r) * channels, p);
      r = stop;
    }
  });
}

std::array<uint8_t, 256> requant_table(QParams in, QParams out, const char* what) {
  const float m = ratio(in, out, std::string(what) + " / out_scale", 1e308);
  const float lo = static_cast<float>(-out.zero_point), hi = static_cast<float>(255 - out.zero_point);
  std::array<uint8_t, 256> t;
  for (int32_t q = 0; q < 256; ++q) {
    const float v = clamp_f(static_cast<float>(q - in.zero_point) * m, lo, hi);
    t[q] = static_cast<uint8_t>(static_cast<int32_t>(std::nearbyintf(v)) + out.zero_point);
  }
  return t;
}

void concat(const std::vector<ConcatInput>& inputs, int64_t outer, QParams out, uint8_t* y, const std::string& isa) {
  check_qparams(out, "out");
  QR_CHECK_ARG(outer >= 0, "concat: negative size");
  int64_t total = 0;
  // A uint8 input's requantization is a function of its code alone: a 256-entry table, built once.
  std::vector<std::array<uint8_t, 256>> tables(inputs.size());
  std::vector<bool> copy(inputs.size());
  for (size_t i = 0; i < inputs.size(); ++i) {
    const ConcatInput& in = inputs[i];
    QR_CHECK_ARG(in.inner >= 0, "concat: negative size");
    QR_CHECK_ARG(std::isnormal(in.q.scale) && in.q.scale > 0.0f,
                 "scales[" + std::to_string(i) + "] must be finite, > 0 and a normal float32");
    QR_CHECK_ARG(in.q.zero_point >= 0 && in.q.zero_point <= 255, "zps[" + std::to_string(i) + "] must be in [0, 255]");
    copy[i] = in.q.scale == out.scale && in.q.zero_point == out.zero_point;
    if (!copy[i]) tables[i] = requant_table(in.q, out, ("scales[" + std::to_string(i) + "]").c_str());
    total += in.inner;
  }
  const BytePermuteKernels& k = *(isa.empty() ? active_kernels() : kernel_table(isa)).bytes;
  parallel_chunks(outer, total, [&](int64_t begin, int64_t end) {
    for (int64_t o = begin; o < end; ++o) {
      uint8_t* row = y + o * total;
      for (size_t i = 0; i < inputs.size(); ++i) {
        const int64_t n = inputs[i].inner;
        const uint8_t* src = inputs[i].data + o * n;
        if (copy[i])
          std::memcpy(row, src, static_cast<size_t>(n));
        else
          k.lut(src, row, n, tables[i].data());
        row += n;
      }
    }
  });
}

void lut(const uint8_t* x, int64_t count, const uint8_t* table, uint8_t* y, const std::string& isa) {
  QR_CHECK_ARG(count >= 0, "lut: negative size");
  const BytePermuteKernels& k = *(isa.empty() ? active_kernels() : kernel_table(isa)).bytes;
  parallel_chunks(count, 2, [&](int64_t begin, int64_t end) { k.lut(x + begin, y + begin, end - begin, table); });
}

void lut_channels(const uint8_t* x, int64_t rows, int64_t channels, const uint8_t* tables, uint8_t* y,
                  const std::string& isa) {
  QR_CHECK_ARG(rows >= 0 && channels >= 0, "lut_channels: negative size");
  const BytePermuteKernels& k = *(isa.empty() ? active_kernels() : kernel_table(isa)).bytes;
  parallel_chunks(rows, 2 * channels, [&](int64_t begin, int64_t end) {
    k.lut_channels(x + begin * channels, y + begin * channels, end - begin, channels, tables);
  });
}

}  // namespace qr::ops
