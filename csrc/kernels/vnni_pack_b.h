// The B packing the vpdpbusd paths share (avx_vnni, avx512_vnni, and amx through avx512_vnni's):
// panels of NR columns, each K group of 4 bytes of one column in one int32 lane. Plain C++ with
// internal linkage, as the epilogue headers: each ISA unit compiles its own copy.
#pragma once
#include <cstddef>
#include <cstdint>

namespace {

// b: n rows of k int8 (row stride ldb) into dst, zeroed, as panels of `groups` (>= ceil(k / 4)) K
// groups x NR columns x 4 bytes.
template <int NR>
void pack_b_vnni_groups(const int8_t* b, ptrdiff_t ldb, int n, int k, int groups, int8_t* dst) {
  const size_t pbytes = static_cast<size_t>(groups) * NR * 4;
  for (int j = 0; j < n; ++j) {
    int8_t* col = dst + static_cast<size_t>(j / NR) * pbytes + (j % NR) * 4;
    const int8_t* row = b + j * ldb;
    for (int p = 0; p < k; ++p) col[(p / 4) * NR * 4 + (p % 4)] = row[p];
  }
}

}  // namespace
