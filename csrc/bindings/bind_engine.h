// Registers qruntime._core.Engine (bind_engine.cc): the C++ engine behind qruntime.Model.
#pragma once
#include <pybind11/pybind11.h>

void bind_engine(pybind11::module_& m);
