// Builds the kernel tables once and resolves QRUNTIME_ISA.
#include "dispatch/dispatch.h"

#include <cstdlib>
#include <list>
#include <map>

#include "core/error.h"
#include "dispatch/cpu_features.h"
#include "kernels/ref/ref.h"
#if defined(QR_WITH_X86)
#include "kernels/amx/amx.h"
#include "kernels/avx2/avx2.h"
#include "kernels/avx512vbmi/avx512vbmi.h"
#include "kernels/avx512vnni/avx512vnni.h"
#endif

namespace qr {
namespace {

struct Registry {
  std::vector<std::string> real;  // best first
  std::vector<std::string> emulated;
  std::map<std::string, KernelTable> tables;
  std::list<BytePermuteKernels> byte_tables;  // merged slot tables (stable addresses)
};

// `top`'s byte moves over `base`'s: the slots top leaves null keep base's kernel.
const BytePermuteKernels* overlay(Registry& r, const BytePermuteKernels* base, const BytePermuteKernels* top) {
  BytePermuteKernels k = *top;
  if (!k.lut) k.lut = base->lut;
  if (!k.lut_channels) k.lut_channels = base->lut_channels;
  if (!k.gather) k.gather = base->gather;
  r.byte_tables.push_back(k);
  return &r.byte_tables.back();
}

Registry build_registry() {
  Registry r;
  KernelTable t{"scalar", ref::gemm_kernels(), ref::dwconv_kernels(), ref::eltwise_kernels(), ref::byte_kernels()};
  r.tables["scalar"] = t;
  std::vector<std::string> ascending = {"scalar"};
#if defined(QR_WITH_X86)
  const CpuFeatures& f = cpu_features();
  const bool has_avx2 = f.avx2 && f.fma && f.os_avx;
  const bool has_avx512 = has_avx2 && f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq && f.avx512_vnni && f.os_avx512;
  const bool has_amx = has_avx512 && f.amx_tile && f.amx_int8 && f.os_amx && f.amx_permitted;
  // vpermi2b is AVX512_VBMI, a CPUID bit of its own: without it the AVX-512 tables keep avx2's bytes.
  const bool has_vbmi = has_avx512 && f.avx512_vbmi;
  if (has_avx2) {
    t.isa = "avx2";
    t.gemm = avx2::gemm_kernels();
    t.dwconv = avx2::dwconv_kernels();
    t.eltwise = avx2::eltwise_kernels();  // the AVX-512 tables keep it
    r.tables["avx2"] = t;
    ascending.push_back("avx2");
#if defined(QR_WITH_EMULATED)
    // Emulated AVX-512 code is SIMDe on AVX2, so it needs an AVX2 CPU; it builds on the avx2 table.
    KernelTable e = t;
    e.isa = "avx512_vnni_emulated";
    e.gemm = avx512_vnni_emulated::gemm_kernels();
    e.dwconv = avx512_vnni_emulated::dwconv_kernels();
    e.bytes = overlay(r, t.bytes, avx512_vbmi_emulated::byte_kernels());  // whether or not this CPU has VBMI
    r.tables[e.isa] = e;
    e.isa = "amx_emulated";
    e.gemm = amx_emulated::gemm_kernels();
    r.tables[e.isa] = e;
    r.emulated = {"avx512_vnni_emulated", "amx_emulated"};
#endif
    if (has_avx512) {
      t.isa = "avx512_vnni";
      t.gemm = avx512_vnni::gemm_kernels();
      t.dwconv = avx512_vnni::dwconv_kernels();
      if (has_vbmi) t.bytes = overlay(r, t.bytes, avx512_vbmi::byte_kernels());
      r.tables["avx512_vnni"] = t;
      ascending.push_back("avx512_vnni");
      if (has_amx) {
        t.isa = "amx";
        t.gemm = amx::gemm_kernels();
        r.tables["amx"] = t;
        ascending.push_back("amx");
      }
    }
  }
#endif
  r.real.assign(ascending.rbegin(), ascending.rend());
  return r;
}

const Registry& registry() {
  static const Registry r = build_registry();
  return r;
}

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : ", ") + x;
  return s;
}

const std::vector<std::string> kKnownIsas = {"scalar", "avx2", "avx512_vnni", "amx", "avx512_vnni_emulated", "amx_emulated"};

const KernelTable& resolve_active() {
  const Registry& r = registry();
  const char* env = std::getenv("QRUNTIME_ISA");
  if (!env || !*env) return r.tables.at(r.real.front());
  std::string want(env);
  bool known = false;
  for (const auto& k : kKnownIsas) known |= k == want;
  QR_CHECK_ARG(known, "QRUNTIME_ISA='" + want + "' is not an ISA path; expected one of: " + join(kKnownIsas));
  auto it = r.tables.find(want);
  QR_CHECK_ARG(it != r.tables.end(), "QRUNTIME_ISA='" + want + "' is not available on this machine (" +
                                         "CPU, OS or build); available: " + join(available_isas(true)));
  return it->second;
}

}  // namespace

std::vector<std::string> available_isas(bool emulated) {
  const Registry& r = registry();
  std::vector<std::string> out = r.real;
  if (emulated) out.insert(out.end(), r.emulated.begin(), r.emulated.end());
  return out;
}

const KernelTable& kernel_table(const std::string& isa) {
  const Registry& r = registry();
  auto it = r.tables.find(isa);
  QR_CHECK_ARG(it != r.tables.end(),
               "isa '" + isa + "' is not available on this machine; available: " + join(available_isas(true)));
  return it->second;
}

const KernelTable& active_kernels() {
  // A bad QRUNTIME_ISA throws here on every call (a static that throws is retried), so the error
  // reaches whoever first needs a kernel and every later caller too.
  static const KernelTable& t = resolve_active();
  return t;
}

}  // namespace qr
