// pybind11 conversion for the engine: Python lists/dicts/arrays to GraphSpec, numpy in and out of
// run() with the GIL released while the graph executes.
#include "bindings/bind_engine.h"

#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include "engine/executor.h"

namespace py = pybind11;
using qr::engine::DType;
using qr::engine::Engine;
using qr::engine::Shape;

namespace {

using OpTuple = std::tuple<std::string, std::string, std::vector<int>, std::vector<int>,
                           std::map<std::string, std::vector<int64_t>>, std::map<std::string, std::string>,
                           std::map<std::string, double>, std::map<std::string, py::array>>;

qr::engine::ConstTensor const_tensor(const py::array& a, const std::string& role) {
  if (!(a.flags() & py::array::c_style)) throw py::value_error("tensor '" + role + "' must be C-contiguous");
  qr::engine::ConstTensor t;
  t.dtype = a.dtype().char_();
  t.shape.assign(a.shape(), a.shape() + a.ndim());
  t.data = a.data();
  t.bytes = static_cast<size_t>(a.nbytes());
  return t;
}

Shape shape_of(const std::vector<int64_t>& dims) {
  if (dims.size() < 2 || dims.size() > 4) throw py::value_error("inputs must be 2-D, 3-D or 4-D");
  Shape s;
  s.rank = static_cast<int>(dims.size());
  std::copy(dims.begin(), dims.end(), s.d);
  return s;
}

std::vector<Shape> shapes_of(const std::vector<std::vector<int64_t>>& dims) {
  std::vector<Shape> out;
  for (const auto& d : dims) out.push_back(shape_of(d));
  return out;
}

py::object dims(const Shape& s) {
  if (s.rank == 0) return py::none();
  py::tuple t(s.rank);
  for (int i = 0; i < s.rank; ++i) t[i] = s.d[i];
  return t;
}

std::unique_ptr<Engine> make_engine(const std::vector<std::tuple<std::string, float, int>>& values,
                                    const std::vector<int>& inputs, const std::vector<std::vector<int64_t>>& input_shapes,
                                    const std::vector<int>& outputs, const std::vector<OpTuple>& ops,
                                    const std::string& isa, int64_t max_activation_bytes, bool release_tensors) {
  qr::engine::GraphSpec g;
  for (const auto& [dtype, scale, zp] : values) {
    if (dtype != "uint8" && dtype != "float32" && dtype != "int64")
      throw py::value_error("value dtype must be uint8, float32 or int64");
    g.values.push_back({dtype == "uint8" ? DType::kUint8 : dtype == "float32" ? DType::kFloat32 : DType::kInt64, {scale, zp}});
  }
  g.inputs = inputs;
  g.input_shapes = input_shapes;
  g.outputs = outputs;
  g.isa = isa;
  g.max_activation_bytes = max_activation_bytes;
  g.release_tensors = release_tensors;
  for (const auto& [op, name, in, out, ints, strs, floats, tensors] : ops) {
    qr::engine::OpSpec s{op, name, in, out, ints, strs, floats, {}};
    for (const auto& [role, array] : tensors) s.tensors[role] = const_tensor(array, role);
    g.ops.push_back(std::move(s));
  }
  return std::make_unique<Engine>(g);
}

// Runs with the GIL released; outputs allocated beforehand from the plan.
py::list run(const Engine& e, const std::vector<py::array>& inputs, std::vector<double>* op_seconds) {
  if (inputs.size() != e.inputs().size())
    throw py::value_error("expected " + std::to_string(e.inputs().size()) + " input(s), got " +
                          std::to_string(inputs.size()));
  std::vector<Shape> shapes;
  std::vector<const void*> in;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const py::array& a = inputs[i];
    const bool int64 = e.value_dtype(e.inputs()[i]) == DType::kInt64;
    const bool ok = int64 ? py::isinstance<py::array_t<int64_t>>(a) : py::isinstance<py::array_t<float>>(a);
    if (!ok || !(a.flags() & py::array::c_style))
      throw py::value_error("input " + std::to_string(i) + " must be a C-contiguous " + (int64 ? "int64" : "float32") +
                            " array");
    shapes.push_back(shape_of(std::vector<int64_t>(a.shape(), a.shape() + a.ndim())));
    in.push_back(a.data());
  }
  const auto plan = e.plan(shapes);
  py::list result;
  std::vector<float*> out;
  for (int v : e.outputs()) {
    const Shape& s = plan->shapes[v];
    py::array_t<float> y(std::vector<py::ssize_t>(s.d, s.d + s.rank));
    out.push_back(y.mutable_data());
    result.append(y);
  }
  py::gil_scoped_release release;
  e.run(*plan, in, out, op_seconds);
  return result;
}

}  // namespace

void bind_engine(py::module_& m) {
  m.def("engine_op_names", &qr::engine::op_names);
  py::class_<Engine>(m, "Engine")
      // The ops' arrays are read while the engine is built and not kept: the caller keeps those
      // borrowed_tensors() lists (graph.h, GraphSpec). release_tensors: the others' pages are given
      // back as the build goes; they read as zeros afterwards.
      .def(py::init(&make_engine), py::arg("values"), py::arg("inputs"), py::arg("input_shapes"), py::arg("outputs"),
           py::arg("ops"), py::arg("isa") = "", py::arg("max_activation_bytes") = qr::kDefaultMaxActivationBytes,
           py::arg("release_tensors") = false)
      .def("borrowed_tensors", &Engine::borrowed_tensors)
      .def("run", [](const Engine& e, const std::vector<py::array>& inputs) {
        return run(e, inputs, nullptr);
      })
      // Runs `repeat` times; returns (outputs of the last run, seconds per op summed over the runs).
      .def("profile",
           [](const Engine& e, const std::vector<py::array>& inputs, int repeat) {
             if (repeat < 1) throw py::value_error("repeat must be >= 1");
             std::vector<double> seconds(e.num_ops(), 0.0);
             py::list outputs;
             for (int r = 0; r < repeat; ++r) outputs = run(e, inputs, &seconds);
             return py::make_tuple(outputs, seconds);
           })
      .def_static("default_max_activation_bytes", [] { return qr::kDefaultMaxActivationBytes; })
      // Per value, its shape for these input shapes (None for values no op touches).
      .def("value_shapes",
           [](const Engine& e, const std::vector<std::vector<int64_t>>& input_shapes) {
             const auto plan = e.plan(shapes_of(input_shapes));
             py::list out;
             for (const Shape& s : plan->shapes) out.append(dims(s));
             return py::make_tuple(out, plan->memory.arena_bytes);
           })
      // The images per chunk a batch of these input shapes runs in (0: whole; Engine::chunk_batch).
      .def("batch_chunk",
           [](const Engine& e, const std::vector<std::vector<int64_t>>& input_shapes) {
             return e.plan(shapes_of(input_shapes))->chunk;
           })
      // Per op: (kernel, MACs) for these input shapes.
      .def("op_info", [](const Engine& e, const std::vector<std::vector<int64_t>>& input_shapes) {
        const auto plan = e.plan(shapes_of(input_shapes));
        py::list out;
        std::vector<Shape> in;
        for (size_t i = 0; i < e.num_ops(); ++i) {
          in.clear();
          for (int v : e.op_inputs(i)) in.push_back(plan->shapes[v]);
          out.append(py::make_tuple(e.node(i).kernel(), e.node(i).macs(in.data(), plan->shapes[e.op_output(i)])));
        }
        return out;
      });
}
