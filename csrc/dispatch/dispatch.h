// Kernel dispatch: one KernelTable per ISA path this build and this CPU can run, chosen at run time.
//
// A table starts from the scalar reference; each ISA that was compiled in, is on the CPU and (AMX)
// was granted by the OS overwrites the slots it implements, in order scalar < avx2 < avx512_vnni <
// amx. The emulated paths (test builds only) are tables of their own that automatic dispatch never
// picks. QRUNTIME_ISA caps the choice; naming a path this machine lacks is an error.
#pragma once
#include <string>
#include <vector>

#include "kernels/kernels.h"

namespace qr {

struct KernelTable {
  std::string isa;
  const GemmKernels* gemm;
  const DwConvKernels* dwconv;
  const EltwiseKernels* eltwise;
  const BytePermuteKernels* bytes;
};

// Real paths best first; with emulated, the emulated paths of this build follow.
std::vector<std::string> available_isas(bool emulated);

// The table of one available path; ValueError naming the alternatives otherwise.
const KernelTable& kernel_table(const std::string& isa);

// The path in use: the best real one, capped by QRUNTIME_ISA (read once).
const KernelTable& active_kernels();

}  // namespace qr
