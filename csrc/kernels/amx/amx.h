// The AMX-INT8 path, real (amx) and with the scalar tile model (amx_emulated). Declarations only.
#pragma once
#include "kernels/kernels.h"

namespace qr::amx {
const GemmKernels* gemm_kernels();
}
namespace qr::amx_emulated {
const GemmKernels* gemm_kernels();
}
