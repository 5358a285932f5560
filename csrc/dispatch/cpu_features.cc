// CPUID, XGETBV and the AMX permission request (Linux arch_prctl).
#include "dispatch/cpu_features.h"

#include <cstdint>
#include <cstring>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif
#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace qr {
namespace {

#if defined(__x86_64__) || defined(__i386__)
uint64_t xgetbv0() {
  uint32_t lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (static_cast<uint64_t>(hi) << 32) | lo;
}

bool request_amx_permission() {
#if defined(__linux__) && defined(SYS_arch_prctl)
  constexpr int kArchReqXcompPerm = 0x1023;
  constexpr int kXFeatureXTileData = 18;
  return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXFeatureXTileData) == 0;
#else
  return false;
#endif
}

CpuFeatures detect() {
  CpuFeatures f;
  unsigned a, b, c, d;
  if (!__get_cpuid(0, &a, &b, &c, &d)) return f;
  const unsigned max_leaf = a;
  char vendor[13] = {};
  std::memcpy(vendor, &b, 4);
  std::memcpy(vendor + 4, &d, 4);
  std::memcpy(vendor + 8, &c, 4);
  f.vendor = vendor;

  unsigned ext_max = __get_cpuid_max(0x80000000u, nullptr);
  if (ext_max >= 0x80000004u) {
    char brand[49] = {};
    for (unsigned i = 0; i < 3; ++i) {
      __get_cpuid(0x80000002u + i, &a, &b, &c, &d);
      std::memcpy(brand + 16 * i, &a, 4);
      std::memcpy(brand + 16 * i + 4, &b, 4);
      std::memcpy(brand + 16 * i + 8, &c, 4);
      std::memcpy(brand + 16 * i + 12, &d, 4);
    }
    f.brand = brand;
    size_t s = f.brand.find_first_not_of(' ');
    size_t e = f.brand.find_last_not_of(' ');
    f.brand = s == std::string::npos ? "" : f.brand.substr(s, e - s + 1);
  }
  if (ext_max >= 0x80000006u) {
    __get_cpuid(0x80000006u, &a, &b, &c, &d);
    f.l2_bytes = static_cast<long>(c >> 16) * 1024;  // ECX[31:16]: KB
  }

  __get_cpuid(1, &a, &b, &c, &d);
  const bool osxsave = (c >> 27) & 1;
  f.fma = (c >> 12) & 1;
  const bool avx = (c >> 28) & 1;
  uint64_t xcr0 = osxsave ? xgetbv0() : 0;
  f.os_avx = avx && (xcr0 & 0x6) == 0x6;
  f.os_avx512 = f.os_avx && (xcr0 & 0xE0) == 0xE0;
  f.os_amx = (xcr0 & (3ull << 17)) == (3ull << 17);

  if (max_leaf >= 7) {
    __cpuid_count(7, 0, a, b, c, d);
    const unsigned max_subleaf7 = a;
    f.avx2 = (b >> 5) & 1;
    f.avx512f = (b >> 16) & 1;
    f.avx512dq = (b >> 17) & 1;
    f.avx512bw = (b >> 30) & 1;
    f.avx512vl = (b >> 31) & 1;
    f.avx512_vbmi = (c >> 1) & 1;
    f.avx512_vnni = (c >> 11) & 1;
    f.amx_tile = (d >> 24) & 1;
    f.amx_int8 = (d >> 25) & 1;
    if (max_subleaf7 >= 1) {
      __cpuid_count(7, 1, a, b, c, d);
      f.avx_vnni = (a >> 4) & 1;
    }
  }
  if (f.amx_tile && f.amx_int8 && f.os_amx) f.amx_permitted = request_amx_permission();
  return f;
}
#else
CpuFeatures detect() { return CpuFeatures{}; }
#endif

}  // namespace

const CpuFeatures& cpu_features() {
  static const CpuFeatures f = detect();
  return f;
}

}  // namespace qr
