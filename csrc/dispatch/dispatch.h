// Kernel dispatch: one KernelTable per ISA path this build and this CPU can run, chosen at run time.
//
// A table starts from the scalar reference; each ISA that was compiled in, is on the CPU and (AMX)
// was granted by the OS overwrites the slots it implements, in order scalar < avx2 < avx512_vnni <
// amx. The emulated paths (test builds only) are tables of their own that automatic dispatch never
// picks. QRUNTIME_ISA caps the choice; naming a path this machine lacks is an error.
#pragma once
#include <string>
#include <vector>

#include "dispatch/cpu_features.h"
#include "kernels/kernels.h"

namespace qr {

struct KernelTable {
  std::string isa;
  const GemmKernels* gemm;
  const DwConvKernels* dwconv;
  const EltwiseKernels* eltwise;
  const BytePermuteKernels* bytes;
  const TransformerKernels* transformer;
  // avx2, avx_vnni and avx512_vnni (docs/kernels.md, Convolution, the Winograd entry).
  const WinogradKernels* winograd = nullptr;
  // avx512_vnni only (docs/kernels.md, Convolution): first layers without im2col.
  const DirectConvKernels* direct_conv = nullptr;
};

// The paths a CPU with features `f` runs, for a build with the x86 units (x86) and the emulated
// ones (emulated). Pure: tests feed it made-up CPUs. real: best first, automatic dispatch takes
// real[0]; avx_vnni ranks below avx512_vnni, so it is picked only where AVX-512 is absent.
// test_only: paths only QRUNTIME_ISA or an explicit isa= selects: avx_vnni_evex (the AVX-VNNI
// kernel in EVEX encoding, on AVX-512 VNNI + VL hardware) and the emulated paths.
struct IsaSelection {
  std::vector<std::string> real, test_only;
};
IsaSelection select_isas(const CpuFeatures& f, bool x86, bool emulated);

// Real paths best first; with emulated, the test-only paths of this build and CPU follow.
std::vector<std::string> available_isas(bool emulated);

// The table of one available path; ValueError naming the alternatives otherwise.
const KernelTable& kernel_table(const std::string& isa);

// The path in use: the best real one, capped by QRUNTIME_ISA (read once).
const KernelTable& active_kernels();

}  // namespace qr
