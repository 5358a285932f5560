// What this CPU and OS support, read once (the only cpuid / xgetbv / arch_prctl code in qruntime).
#pragma once
#include <string>

namespace qr {

struct CpuFeatures {
  std::string vendor, brand;
  bool avx2 = false, fma = false;
  bool avx512f = false, avx512bw = false, avx512vl = false, avx512dq = false, avx512_vnni = false;
  bool avx512_vbmi = false;  // vpermi2b on bytes; not implied by VNNI (Cascade Lake lacks it)
  bool avx_vnni = false;     // VEX vpdpbusd on ymm (CPUID.(7,1):EAX bit 4); Alder Lake and later clients
  bool amx_tile = false, amx_int8 = false;
  bool os_avx = false;     // XCR0: SSE and AVX state
  bool os_avx512 = false;  // XCR0: opmask, ZMM_Hi256, Hi16_ZMM
  bool os_amx = false;     // XCR0: XTILECFG, XTILEDATA
  bool amx_permitted = false;  // the kernel granted XTILEDATA to this process (arch_prctl)
  long l2_bytes = 0;           // one core's L2 cache (CPUID 0x80000006, Intel and AMD); 0 when unknown
};

// Reads the CPU once; AMX permission is requested from the OS on that first call.
const CpuFeatures& cpu_features();

}  // namespace qr
