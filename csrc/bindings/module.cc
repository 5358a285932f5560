// qruntime._core: pybind11 type conversion and GIL release around the C++ API; no logic here.
#include <pybind11/numpy.h>
#include <algorithm>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <array>
#include <limits>

#include "bindings/bind_engine.h"
#include "bindings/bind_pool_eltwise.h"
#include "core/thread_pool.h"
#include "dispatch/cpu_features.h"
#include "dispatch/dispatch.h"
#include "ops/conv2d.h"
#include "ops/linear.h"
#if defined(QR_WITH_EMULATED)
#include "kernels/amx/amx_tile_model.h"
#endif

namespace py = pybind11;

namespace {

template <class T>
using CArray = py::array_t<T, py::array::c_style>;

// A dimension as the int the C++ API takes; larger ones are refused rather than truncated.
int dim(py::ssize_t v, const char* name) {
  if (v > std::numeric_limits<int>::max()) throw py::value_error(std::string(name) + " has a dimension beyond 2^31 - 1");
  return static_cast<int>(v);
}

// Rows of a C-contiguous 2-D array.
template <class T>
int rows_of(const CArray<T>& a, const char* name) {
  if (a.ndim() != 2) throw py::value_error(std::string(name) + " must be 2-D");
  return dim(a.shape(0), name);
}

py::dict cpu_info() {
  const qr::CpuFeatures& f = qr::cpu_features();
  py::dict flags;
  flags["avx2"] = f.avx2;
  flags["fma"] = f.fma;
  flags["avx512f"] = f.avx512f;
  flags["avx512bw"] = f.avx512bw;
  flags["avx512vl"] = f.avx512vl;
  flags["avx512dq"] = f.avx512dq;
  flags["avx512_vnni"] = f.avx512_vnni;
  flags["avx512_vbmi"] = f.avx512_vbmi;
  flags["avx_vnni"] = f.avx_vnni;
  flags["amx_tile"] = f.amx_tile;
  flags["amx_int8"] = f.amx_int8;
  py::dict os;
  os["avx"] = f.os_avx;
  os["avx512"] = f.os_avx512;
  os["amx"] = f.os_amx;
  os["amx_permitted"] = f.amx_permitted;
  py::dict d;
  d["vendor"] = f.vendor;
  d["brand"] = f.brand;
  d["flags"] = flags;
  d["os_support"] = os;
  d["affinity_cpus"] = qr::affinity_cpu_count();
  return d;
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "qruntime native core (int8 kernels, dispatch, thread pool)";

  m.def("cpu_info", &cpu_info);
  m.def("isa", [] { return qr::active_kernels().isa; });
  m.def("available_isas", &qr::available_isas, py::arg("emulated") = false);
  m.def(
      "_select_isas",
      [](const py::dict& flags, bool x86, bool emulated) {
        // A made-up CPU: every flag and OS bit of CpuFeatures by its cpu_info() name, missing = false.
        auto get = [&](const char* key) { return flags.contains(key) && flags[key].cast<bool>(); };
        qr::CpuFeatures f;
        f.avx2 = get("avx2"), f.fma = get("fma"), f.avx512f = get("avx512f"), f.avx512bw = get("avx512bw");
        f.avx512vl = get("avx512vl"), f.avx512dq = get("avx512dq"), f.avx512_vnni = get("avx512_vnni");
        f.avx512_vbmi = get("avx512_vbmi"), f.avx_vnni = get("avx_vnni"), f.amx_tile = get("amx_tile");
        f.amx_int8 = get("amx_int8"), f.os_avx = get("os_avx"), f.os_avx512 = get("os_avx512");
        f.os_amx = get("os_amx"), f.amx_permitted = get("amx_permitted");
        const qr::IsaSelection s = qr::select_isas(f, x86, emulated);
        return py::make_tuple(s.real, s.test_only);
      },
      py::arg("flags"), py::arg("x86") = true, py::arg("emulated") = false,
      "dispatch's choice for a made-up CPU: (real paths best first, test-only paths); pure, for tests");
  m.def("byte_kernels_isa", [](const std::string& isa) { return std::string(qr::kernel_table(isa).bytes->isa); },
        py::arg("isa"), "which unit's lut and gather an ISA path runs (VBMI has its own CPUID bit)");
  m.def("set_num_threads", [](int n) { qr::ThreadPool::global().set_num_threads(n); });
  m.def("get_num_threads", [] { return qr::ThreadPool::global().num_threads(); });

  py::class_<qr::PackedWeights, std::shared_ptr<qr::PackedWeights>>(m, "PackedWeights")
      .def_property_readonly("n", [](const qr::PackedWeights& w) { return w.n; })
      .def_property_readonly("k", [](const qr::PackedWeights& w) { return w.k; })
      .def_property_readonly("isa", [](const qr::PackedWeights& w) { return std::string(w.kernels->isa); })
      .def_property_readonly("nbytes", [](const qr::PackedWeights& w) { return w.data.size(); })
      .def_property_readonly("packed", [](const qr::PackedWeights& w) {
        CArray<int8_t> out(static_cast<py::ssize_t>(w.data.size()));
        std::copy_n(w.data.as<int8_t>(), w.data.size(), out.mutable_data());
        return out;
      }, "a copy of the packed bytes (the layouts are in docs/kernels.md)")
      .def_property_readonly("colsum", [](const qr::PackedWeights& w) { return w.colsum; })
      .def_property_readonly("kernel_choice", [](const qr::PackedWeights& w) { return w.kernel_choice; },
                             "which micro-kernel(s) run on these weights and why; empty on a one-kernel path");

  m.def(
      "pack_weights",
      [](const CArray<int8_t>& b, const std::string& isa) {
        int n = rows_of(b, "b");
        int k = dim(b.shape(1), "b");
        py::gil_scoped_release nogil;
        return qr::ops::pack_weights(b.data(), k, n, k, isa);
      },
      py::arg("b").noconvert(), py::arg("isa") = "");

  m.def(
      "gemm_u8s8s32",
      [](const CArray<uint8_t>& a, const qr::PackedWeights& w) {
        int mrows = rows_of(a, "a");
        if (a.shape(1) != w.k) throw py::value_error("a has K mismatching the weights");
        CArray<int32_t> c({static_cast<py::ssize_t>(mrows), static_cast<py::ssize_t>(w.n)});
        const uint8_t* ap = a.data();
        int32_t* cp = c.mutable_data();
        {
          py::gil_scoped_release nogil;
          qr::ops::gemm_u8s8s32(w, ap, w.k, mrows, cp);
        }
        return c;
      },
      py::arg("a").noconvert(), py::arg("w"));

  m.def(
      "linear",
      [](const CArray<uint8_t>& a, float x_scale, int x_zp, const qr::PackedWeights& w, const CArray<float>& w_scale,
         std::optional<CArray<float>> bias, float out_scale, int out_zp, int activation) {
        int mrows = rows_of(a, "x_q");
        if (a.shape(1) != w.k) throw py::value_error("x_q has K mismatching the weights");
        if (bias && bias->size() != w.n) throw py::value_error("bias must hold one value per output channel");
        CArray<uint8_t> y({static_cast<py::ssize_t>(mrows), static_cast<py::ssize_t>(w.n)});
        const uint8_t* ap = a.data();
        const float* ws = w_scale.data();
        const size_t ws_count = static_cast<size_t>(w_scale.size());
        const float* bp = bias ? bias->data() : nullptr;
        uint8_t* yp = y.mutable_data();
        {
          py::gil_scoped_release nogil;
          qr::ops::linear(w, ap, w.k, mrows, {x_scale, x_zp}, ws, ws_count, bp, {out_scale, out_zp},
                          static_cast<qr::Activation>(activation), yp);
        }
        return y;
      },
      py::arg("x_q").noconvert(), py::arg("x_scale"), py::arg("x_zp"), py::arg("w"), py::arg("w_scale").noconvert(), py::arg("bias").noconvert(),
      py::arg("out_scale"), py::arg("out_zp"), py::arg("activation"));

  py::class_<qr::ops::PackedConv2d, std::shared_ptr<qr::ops::PackedConv2d>>(m, "PackedConv2d")
      .def_property_readonly("isa", [](const qr::ops::PackedConv2d& p) { return p.table->isa; })
      .def_property_readonly("out_channels", [](const qr::ops::PackedConv2d& p) { return p.oc; })
      .def_property_readonly("in_channels_per_group", [](const qr::ops::PackedConv2d& p) { return p.icg; })
      .def_property_readonly("kernel_size", [](const qr::ops::PackedConv2d& p) { return py::make_tuple(p.kh, p.kw); })
      .def_property_readonly("groups", [](const qr::ops::PackedConv2d& p) { return p.groups; })
      .def_property_readonly("depthwise", [](const qr::ops::PackedConv2d& p) { return p.depthwise; })
      .def_property_readonly("dw_kernel_choice", [](const qr::ops::PackedConv2d& p) { return p.dw_kernel_choice; })
      .def_property_readonly("winograd", [](const qr::ops::PackedConv2d& p) { return p.winograd(); })
      .def_property_readonly("direct", [](const qr::ops::PackedConv2d& p) { return p.direct(); })
      .def_property_readonly("kernel_choice", [](const qr::ops::PackedConv2d& p) { return p.kernel_choice; });

  m.def(
      "pack_conv2d",
      [](const CArray<int8_t>& w, int groups, const std::string& isa, std::optional<std::array<int, 2>> stride,
         std::optional<std::array<int, 2>> dilation) {
        if (w.ndim() != 4) throw py::value_error("w_q must be 4-D");
        const int oc = dim(w.shape(0), "w_q"), icg = dim(w.shape(1), "w_q");
        const int kh = dim(w.shape(2), "w_q"), kw = dim(w.shape(3), "w_q");
        std::optional<qr::ops::Conv2dGeometry> g;
        if (stride && dilation) {
          g.emplace();
          g->stride_h = (*stride)[0];
          g->stride_w = (*stride)[1];
          g->dil_h = (*dilation)[0];
          g->dil_w = (*dilation)[1];
        }
        py::gil_scoped_release nogil;
        return qr::ops::pack_conv2d(w.data(), oc, icg, kh, kw, groups, isa, g ? &*g : nullptr);
      },
      py::arg("w").noconvert(), py::arg("groups"), py::arg("isa") = "", py::arg("stride") = py::none(),
      py::arg("dilation") = py::none());

  m.def(
      "conv2d",
      [](const CArray<uint8_t>& x, float x_scale, int x_zp, const qr::ops::PackedConv2d& p, const CArray<float>& w_scale,
         std::optional<CArray<float>> bias, float out_scale, int out_zp, int activation, std::array<int, 2> stride,
         std::array<int, 4> padding, std::array<int, 2> dilation) {
        if (x.ndim() != 4) throw py::value_error("x_q must be 4-D (NHWC here)");
        if (bias && bias->size() != p.oc) throw py::value_error("bias must hold one value per output channel");
        const int n = dim(x.shape(0), "x_q"), h = dim(x.shape(1), "x_q");
        const int w = dim(x.shape(2), "x_q"), c = dim(x.shape(3), "x_q");
        qr::ops::Conv2dGeometry g;
        g.stride_h = stride[0];
        g.stride_w = stride[1];
        g.pad_t = padding[0];
        g.pad_l = padding[1];
        g.pad_b = padding[2];
        g.pad_r = padding[3];
        g.dil_h = dilation[0];
        g.dil_w = dilation[1];
        const auto [oh, ow] = qr::ops::conv2d_output_hw(p, h, w, g);
        CArray<uint8_t> y({n, oh, ow, p.oc});
        const uint8_t* xp = x.data();
        const float* ws = w_scale.data();
        const size_t ws_count = static_cast<size_t>(w_scale.size());
        const float* bp = bias ? bias->data() : nullptr;
        uint8_t* yp = y.mutable_data();
        {
          py::gil_scoped_release nogil;
          qr::ops::conv2d(p, xp, n, h, w, c, {x_scale, x_zp}, ws, ws_count, bp, {out_scale, out_zp},
                          static_cast<qr::Activation>(activation), g, yp);
        }
        return y;
      },
      py::arg("x").noconvert(), py::arg("x_scale"), py::arg("x_zp"), py::arg("w"), py::arg("w_scale").noconvert(),
      py::arg("bias").noconvert(), py::arg("out_scale"), py::arg("out_zp"), py::arg("activation"), py::arg("stride"),
      py::arg("padding"), py::arg("dilation"));

  m.def(
      "quantize",
      [](const CArray<float>& x, float scale, int zp) {
        CArray<uint8_t> q(std::vector<py::ssize_t>(x.shape(), x.shape() + x.ndim()));
        const float* xp = x.data();
        uint8_t* qp = q.mutable_data();
        size_t count = static_cast<size_t>(x.size());
        {
          py::gil_scoped_release nogil;
          qr::ops::quantize(xp, count, {scale, zp}, qp);
        }
        return q;
      },
      py::arg("x").noconvert(), py::arg("scale"), py::arg("zero_point"));

  m.def(
      "dequantize",
      [](const CArray<uint8_t>& q, float scale, int zp) {
        CArray<float> x(std::vector<py::ssize_t>(q.shape(), q.shape() + q.ndim()));
        const uint8_t* qp = q.data();
        float* xp = x.mutable_data();
        size_t count = static_cast<size_t>(q.size());
        {
          py::gil_scoped_release nogil;
          qr::ops::dequantize(qp, count, {scale, zp}, xp);
        }
        return x;
      },
      py::arg("q").noconvert(), py::arg("scale"), py::arg("zero_point"));

  bind_pool_eltwise(m);
  bind_engine(m);

#if defined(QR_WITH_EMULATED)
  // The AMX tile model, bare, for tests that check it against hand-worked tiles. Tile state is
  // per thread, so these keep the GIL: every call runs on the calling Python thread.
  py::module_ amx = m.def_submodule("_amx_model", "scalar model of the AMX tile intrinsics (test builds)");
  amx.def("loadconfig", [](py::bytes cfg) {
    std::string s = cfg;
    if (s.size() != 64) throw py::value_error("a tile config is 64 bytes");
    qr::amx_model::tile_loadconfig(s.data());
  });
  amx.def("release", &qr::amx_model::tile_release);
  amx.def("zero", &qr::amx_model::tile_zero);
  // The memory a tile load or store touches must exist: src/out must cover rows x colsb.
  auto covers = [](int t, py::ssize_t rows, py::ssize_t cols) {
    int tr, tc;
    qr::amx_model::tile_shape(t, &tr, &tc);
    if (rows < tr || cols < tc) throw py::value_error("the array is smaller than the tile's configured shape");
  };
  amx.def("loadd", [covers](int t, const CArray<uint8_t>& src) {
    if (src.ndim() != 2) throw py::value_error("src must be 2-D");
    covers(t, src.shape(0), src.shape(1));
    qr::amx_model::tile_loadd(t, src.data(), src.shape(1));
  });
  amx.def("stored", [covers](int t, int rows, int stride) {
    if (rows < 0 || stride < 0) throw py::value_error("rows and stride must be >= 0");
    covers(t, rows, stride);
    CArray<uint8_t> out({rows, stride});
    std::fill(out.mutable_data(), out.mutable_data() + out.size(), 0xAB);
    qr::amx_model::tile_stored(t, out.mutable_data(), stride);
    return out;
  });
  amx.def("dpbusd", &qr::amx_model::tile_dpbusd);
#endif
}
