// Registers the pooling and elementwise ops (bind_pool_eltwise.cc) on the qruntime._core module.
#pragma once
#include <pybind11/pybind11.h>

void bind_pool_eltwise(pybind11::module_& m);
