// pybind11 bindings of the pooling and elementwise ops: type conversion, size checks that keep
// memory access in bounds, and GIL release; no logic (the numpy front is python/qruntime/_pool_ops.py).
#include "bindings/bind_pool_eltwise.h"

#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <array>
#include <string>
#include <vector>

#include "ops/eltwise.h"
#include "ops/gather.h"
#include "ops/pool.h"

namespace py = pybind11;

namespace {

template <class T>
using CArray = py::array_t<T, py::array::c_style>;

using Pair = std::array<int64_t, 2>;

// An NHWC uint8 input's (n, h, w, c).
std::array<int64_t, 4> nhwc(const CArray<uint8_t>& x) {
  if (x.ndim() != 4) throw py::value_error("x_q must be 4-D (NHWC here), got " + std::to_string(x.ndim()) + "-D");
  return {x.shape(0), x.shape(1), x.shape(2), x.shape(3)};
}

CArray<uint8_t> nhwc_output(const qr::ops::Pool2dShape& s) {
  return CArray<uint8_t>({static_cast<py::ssize_t>(s.n), static_cast<py::ssize_t>(s.oh),
                          static_cast<py::ssize_t>(s.ow), static_cast<py::ssize_t>(s.c)});
}

qr::ops::Pool2dParams params(Pair k, Pair s, Pair p, Pair d, bool ceil_mode) {
  return qr::ops::Pool2dParams{k[0], k[1], s[0], s[1], p[0], p[1], d[0], d[1], ceil_mode};
}

CArray<uint8_t> like(const CArray<uint8_t>& a) {
  return CArray<uint8_t>(std::vector<py::ssize_t>(a.shape(), a.shape() + a.ndim()));
}

}  // namespace

void bind_pool_eltwise(py::module_& m) {
  m.def(
      "max_pool2d",
      [](const CArray<uint8_t>& x, Pair kernel, Pair stride, Pair padding, Pair dilation, bool ceil_mode) {
        const auto d = nhwc(x);
        const qr::ops::Pool2dParams p = params(kernel, stride, padding, dilation, ceil_mode);
        const qr::ops::Pool2dShape s = qr::ops::pool2d_shape(d[0], d[1], d[2], d[3], p);
        CArray<uint8_t> y = nhwc_output(s);
        const uint8_t* xp = x.data();
        uint8_t* yp = y.mutable_data();
        {
          py::gil_scoped_release nogil;
          qr::ops::max_pool2d(xp, s, p, yp);
        }
        return y;
      },
      py::arg("x").noconvert(), py::arg("kernel_size"), py::arg("stride"), py::arg("padding"), py::arg("dilation"),
      py::arg("ceil_mode"), "max pooling of an NHWC uint8 array");

  m.def(
      "avg_pool2d",
      [](const CArray<uint8_t>& x, float x_scale, int x_zp, Pair kernel, Pair stride, Pair padding, bool ceil_mode,
         bool count_include_pad, int64_t divisor_override, float out_scale, int out_zp) {
        const auto d = nhwc(x);
        const qr::ops::Pool2dParams p = params(kernel, stride, padding, {1, 1}, ceil_mode);
        const qr::ops::Pool2dShape s = qr::ops::pool2d_shape(d[0], d[1], d[2], d[3], p, qr::ops::kMaxPoolWindowArea);
        CArray<uint8_t> y = nhwc_output(s);
        const uint8_t* xp = x.data();
        uint8_t* yp = y.mutable_data();
        {
          py::gil_scoped_release nogil;
          qr::ops::avg_pool2d(xp, s, p, count_include_pad, divisor_override, {x_scale, x_zp}, {out_scale, out_zp}, yp);
        }
        return y;
      },
      py::arg("x").noconvert(), py::arg("x_scale"), py::arg("x_zp"), py::arg("kernel_size"), py::arg("stride"),
      py::arg("padding"), py::arg("ceil_mode"), py::arg("count_include_pad"), py::arg("divisor_override"),
      py::arg("out_scale"), py::arg("out_zp"), "average pooling of an NHWC uint8 array (divisor_override 0 = none)");

  m.def(
      "adaptive_avg_pool2d",
      [](const CArray<uint8_t>& x, float x_scale, int x_zp, Pair output_size, float out_scale, int out_zp) {
        const auto d = nhwc(x);
        const qr::ops::Pool2dShape s =
            qr::ops::adaptive_pool2d_shape(d[0], d[1], d[2], d[3], output_size[0], output_size[1]);
        CArray<uint8_t> y = nhwc_output(s);
        const uint8_t* xp = x.data();
        uint8_t* yp = y.mutable_data();
        {
          py::gil_scoped_release nogil;
          qr::ops::adaptive_avg_pool2d(xp, s, {x_scale, x_zp}, {out_scale, out_zp}, yp);
        }
        return y;
      },
      py::arg("x").noconvert(), py::arg("x_scale"), py::arg("x_zp"), py::arg("output_size"), py::arg("out_scale"),
      py::arg("out_zp"), "adaptive average pooling of an NHWC uint8 array");

  m.def(
      "add",
      [](const CArray<uint8_t>& a, float a_scale, int a_zp, const CArray<uint8_t>& b, float b_scale, int b_zp,
         float out_scale, int out_zp, bool relu, bool per_channel, const std::string& isa) {
        // a is (rows, channels) with channels its last axis; b must hold exactly what the mode reads.
        const int64_t count = a.size();
        const int64_t channels = a.ndim() > 0 ? a.shape(a.ndim() - 1) : 1;
        const int64_t rows = channels > 0 ? count / channels : 0;
        qr::ops::Broadcast mode;
        if (per_channel) {
          if (a.ndim() < 1 || b.size() != channels) throw py::value_error("b must hold one value per channel of a");
          mode = qr::ops::Broadcast::kPerChannel;
        } else if (b.size() == count && b.size() != 1) {
          mode = qr::ops::Broadcast::kNone;
        } else if (b.size() == 1) {
          mode = qr::ops::Broadcast::kScalar;
        } else {
          throw py::value_error("b must have a's size or hold one value");
        }
        CArray<uint8_t> y = like(a);
        const uint8_t* ap = a.data();
        const uint8_t* bp = b.data();
        uint8_t* yp = y.mutable_data();
        {
          py::gil_scoped_release nogil;
          qr::ops::add(ap, {a_scale, a_zp}, bp, {b_scale, b_zp}, mode, mode == qr::ops::Broadcast::kPerChannel ? rows : count,
                       mode == qr::ops::Broadcast::kPerChannel ? channels : 1, {out_scale, out_zp}, relu, yp, isa);
        }
        return y;
      },
      py::arg("a").noconvert(), py::arg("a_scale"), py::arg("a_zp"), py::arg("b").noconvert(), py::arg("b_scale"),
      py::arg("b_zp"), py::arg("out_scale"), py::arg("out_zp"), py::arg("relu"), py::arg("per_channel"),
      py::arg("isa") = "", "quantized add; per_channel: b holds one value per channel of a's last axis");

  m.def(
      "concat",
      [](const std::vector<py::array>& arrays, int64_t outer, const std::vector<float>& scales,
         const std::vector<int>& zps, float out_scale, int out_zp, const std::string& isa) {
        if (arrays.empty()) throw py::value_error("arrays must not be empty");
        if (scales.size() != arrays.size()) throw py::value_error("scales must hold one value per array");
        if (zps.size() != arrays.size()) throw py::value_error("zps must hold one value per array");
        if (outer < 0) throw py::value_error("outer must be >= 0");
        std::vector<qr::ops::ConcatInput> inputs;
        int64_t total = 0;
        for (size_t i = 0; i < arrays.size(); ++i) {
          const py::array& a = arrays[i];
          if (!py::isinstance<CArray<uint8_t>>(a)) throw py::type_error("arrays must be C-contiguous uint8 arrays");
          const int64_t size = a.size();
          if (outer == 0 ? size != 0 : size % outer != 0) throw py::value_error("arrays do not split into `outer` rows");
          const int64_t inner = outer == 0 ? 0 : size / outer;
          inputs.push_back({static_cast<const uint8_t*>(a.data()), inner, {scales[i], zps[i]}});
          total += inner;
        }
        CArray<uint8_t> y({static_cast<py::ssize_t>(outer), static_cast<py::ssize_t>(total)});
        uint8_t* yp = y.mutable_data();
        {
          py::gil_scoped_release nogil;
          qr::ops::concat(inputs, outer, {out_scale, out_zp}, yp, isa);
        }
        return y;
      },
      py::arg("arrays"), py::arg("outer"), py::arg("scales"), py::arg("zps"), py::arg("out_scale"), py::arg("out_zp"),
      py::arg("isa") = "", "arrays viewed as (outer, inner_i), side by side, requantized to the output quantization");

  m.def(
      "lut",
      [](const CArray<uint8_t>& x, const CArray<uint8_t>& table, const std::string& isa) {
        if (table.ndim() != 1 || table.size() != 256) throw py::value_error("table must hold 256 uint8 values");
        CArray<uint8_t> y = like(x);
        const uint8_t* xp = x.data();
        const uint8_t* tp = table.data();
        uint8_t* yp = y.mutable_data();
        const int64_t count = x.size();
        {
          py::gil_scoped_release nogil;
          qr::ops::lut(xp, count, tp, yp, isa);
        }
        return y;
      },
      py::arg("x").noconvert(), py::arg("table").noconvert(), py::arg("isa") = "",
      "y = table[x], a 256-entry uint8 table");

  // The engine's per-channel byte ops on (rows, channels) arrays, for the kernel tests.
  m.def(
      "lut_channels",
      [](const CArray<uint8_t>& x, const CArray<uint8_t>& tables, const std::string& isa) {
        if (x.ndim() != 2) throw py::value_error("x must be (rows, channels)");
        const int64_t rows = x.shape(0), c = x.shape(1);
        if (tables.ndim() != 2 || tables.shape(0) != c || tables.shape(1) != 256)
          throw py::value_error("tables must be (channels, 256)");
        CArray<uint8_t> y = like(x);
        const uint8_t* xp = x.data();
        const uint8_t* tp = tables.data();
        uint8_t* yp = y.mutable_data();
        {
          py::gil_scoped_release nogil;
          qr::ops::lut_channels(xp, rows, c, tp, yp, isa);
        }
        return y;
      },
      py::arg("x").noconvert(), py::arg("tables").noconvert(), py::arg("isa") = "",
      "y[r, c] = tables[c, x[r, c]]");
  m.def(
      "gather_channels",
      [](const CArray<uint8_t>& x, const std::vector<int32_t>& index, const std::string& isa) {
        if (x.ndim() != 2) throw py::value_error("x must be (rows, channels)");
        const qr::ops::ChannelGather g(index);
        CArray<uint8_t> y({static_cast<py::ssize_t>(x.shape(0)), static_cast<py::ssize_t>(g.c_out())});
        const uint8_t* xp = x.data();
        uint8_t* yp = y.mutable_data();
        {
          py::gil_scoped_release nogil;
          g.run(xp, x.shape(1), x.shape(0), yp, isa);
        }
        return y;
      },
      py::arg("x").noconvert(), py::arg("index"), py::arg("isa") = "", "y[r, i] = x[r, index[i]]");
  m.def(
      "gather_channels_windows",
      [](const std::vector<int32_t>& index) { return qr::ops::ChannelGather(index).windows_per_chunk(); },
      py::arg("index"), "per chunk of 64 outputs, the 128-byte windows of its SIMD plan (0: byte by byte)");
}
