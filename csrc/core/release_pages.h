// Giving memory that is still allocated back to the OS: the whole pages inside a byte range.
#pragma once
#include <cstddef>
#include <cstdint>

#if defined(__linux__)
#include <sys/mman.h>
#include <unistd.h>
#endif

namespace qr {

// The whole pages inside [data, data + bytes) leave the process's resident memory; they stay
// mapped, and read as zeros until written again. For data nothing reads any more but whose owner
// frees it later (a loaded model's file tensors once packed). A no-op where the OS has no such call.
inline void release_pages(const void* data, size_t bytes) {
#if defined(__linux__)
  static const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(data) + page - 1) / page * page;
  const uintptr_t end = (reinterpret_cast<uintptr_t>(data) + bytes) / page * page;
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
#else
  (void)data;
  (void)bytes;
#endif
}

}  // namespace qr
