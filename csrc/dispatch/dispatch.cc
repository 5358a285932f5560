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
#include "kernels/avxvnni/avxvnni.h"
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

// One path's table. Every x86 table starts from avx2's (its eltwise and transformer kernels, its depthwise and
// gemm until a path replaces them) and the scalar byte moves.
KernelTable make_table(Registry& r, const std::string& isa, const CpuFeatures& f) {
  KernelTable t{"scalar", ref::gemm_kernels(), ref::dwconv_kernels(), ref::eltwise_kernels(),
                ref::byte_kernels(), ref::transformer_kernels()};
  if (isa == "scalar") return t;
#if defined(QR_WITH_X86)
  t.gemm = avx2::gemm_kernels();
  t.dwconv = avx2::dwconv_kernels();
  t.eltwise = avx2::eltwise_kernels();
  t.transformer = avx2::transformer_kernels();
  t.isa = isa;
  if (isa == "avx2") return t.winograd = avx2::winograd_kernels(), t.direct_conv = avx2::direct_conv_kernels(), t;
  // AVX-VNNI: avx2's table with the GEMM, depthwise, Winograd and the direct first-layer kernel replaced.
  if (isa == "avx_vnni") {
    t.gemm = avx_vnni::gemm_kernels();
    t.winograd = avx_vnni::winograd_kernels();
    t.direct_conv = avx_vnni::direct_conv_kernels();
    t.dwconv = avx_vnni::dwconv_kernels();
    return t;
  }
  if (isa == "avx_vnni_evex") {
    t.gemm = avx_vnni_evex::gemm_kernels();
    t.winograd = avx_vnni_evex::winograd_kernels();
    t.direct_conv = avx_vnni_evex::direct_conv_kernels();
    t.dwconv = avx_vnni_evex::dwconv_kernels();
    return t;
  }
  if (isa == "avx512_vnni" || isa == "amx") {
    t.gemm = isa == "amx" ? amx::gemm_kernels() : avx512_vnni::gemm_kernels();
    t.dwconv = avx512_vnni::dwconv_kernels();
    // AMX's int8 tiles outrun any int16 Winograd; the VNNI path's vpdpwssd does not. The direct
    // first-layer kernel was measured on the VNNI path only, so amx keeps its GEMM there too.
    if (isa == "avx512_vnni") {
      t.winograd = avx512_vnni::winograd_kernels();
      t.direct_conv = avx512_vnni::direct_conv_kernels();
    }
    // vpermi2b is AVX512_VBMI, a CPUID bit of its own: without it the AVX-512 tables keep avx2's bytes.
    if (f.avx512_vbmi) t.bytes = overlay(r, t.bytes, avx512_vbmi::byte_kernels());
    return t;
  }
#if defined(QR_WITH_EMULATED)
  // Emulated code is SIMDe on AVX2 (or the tile model), so it needs an AVX2 CPU.
  if (isa == "avx_vnni_emulated") {
    t.gemm = avx_vnni_emulated::gemm_kernels();
    t.winograd = avx_vnni_emulated::winograd_kernels();
    t.direct_conv = avx_vnni_emulated::direct_conv_kernels();
    t.dwconv = avx_vnni_emulated::dwconv_kernels();
    return t;
  }
  if (isa == "avx512_vnni_emulated" || isa == "amx_emulated") {
    t.gemm = isa == "amx_emulated" ? amx_emulated::gemm_kernels() : avx512_vnni_emulated::gemm_kernels();
    t.dwconv = avx512_vnni_emulated::dwconv_kernels();
    if (isa == "avx512_vnni_emulated") {
      t.winograd = avx512_vnni_emulated::winograd_kernels();
      t.direct_conv = avx512_vnni_emulated::direct_conv_kernels();
    }
    t.bytes = overlay(r, t.bytes, avx512_vbmi_emulated::byte_kernels());  // whether or not this CPU has VBMI
    return t;
  }
#endif
#endif
  (void)f;
  throw InternalError("no kernel table for ISA path '" + isa + "'");
}

Registry build_registry() {
  Registry r;
#if defined(QR_WITH_X86)
  const bool x86 = true;
#else
  const bool x86 = false;
#endif
#if defined(QR_WITH_EMULATED)
  const bool emulated = true;
#else
  const bool emulated = false;
#endif
  const CpuFeatures& f = cpu_features();
  IsaSelection s = select_isas(f, x86, emulated);
  r.real = s.real;
  r.emulated = s.test_only;
  for (const auto& v : {s.real, s.test_only})
    for (const auto& isa : v) r.tables[isa] = make_table(r, isa, f);
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

const std::vector<std::string> kKnownIsas = {"scalar",        "avx2",          "avx_vnni",          "avx512_vnni",
                                             "amx",           "avx_vnni_evex", "avx_vnni_emulated", "avx512_vnni_emulated",
                                             "amx_emulated"};

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

IsaSelection select_isas(const CpuFeatures& f, bool x86, bool emulated) {
  IsaSelection s;
  std::vector<std::string> ascending = {"scalar"};
  if (x86) {
    const bool has_avx2 = f.avx2 && f.fma && f.os_avx;
    const bool has_avx512 =
        has_avx2 && f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq && f.avx512_vnni && f.os_avx512;
    const bool has_amx = has_avx512 && f.amx_tile && f.amx_int8 && f.os_amx && f.amx_permitted;
    // VEX vpdpbusd on ymm needs only the AVX state in XCR0.
    const bool has_avx_vnni = has_avx2 && f.avx_vnni;
    // The EVEX form on ymm: AVX512_VNNI + AVX512VL, with the AVX-512 state.
    const bool has_vnni_vl = has_avx2 && f.avx512f && f.avx512vl && f.avx512_vnni && f.os_avx512;
    if (has_avx2) {
      ascending.push_back("avx2");
      if (has_avx_vnni) ascending.push_back("avx_vnni");  // ranks below avx512_vnni: picked only without it
      if (has_avx512) ascending.push_back("avx512_vnni");
      if (has_amx) ascending.push_back("amx");
      if (has_vnni_vl) s.test_only.push_back("avx_vnni_evex");
      if (emulated) {
        for (const char* e : {"avx_vnni_emulated", "avx512_vnni_emulated", "amx_emulated"}) s.test_only.push_back(e);
      }
    }
  }
  s.real.assign(ascending.rbegin(), ascending.rend());
  return s;
}

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
