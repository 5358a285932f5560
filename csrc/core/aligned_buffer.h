// An owning, 64-byte aligned, zero-initialised byte buffer (prepacked weights, scratch).
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <new>
#include <string>
#include <utility>

#include "core/limits.h"

namespace qr {

class AlignedBuffer {
 public:
  static constexpr size_t kAlign = 64;

  AlignedBuffer() = default;
  explicit AlignedBuffer(size_t bytes) { reset(bytes); }
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
  AlignedBuffer(AlignedBuffer&& o) noexcept
      : raw_(std::exchange(o.raw_, nullptr)), ptr_(std::exchange(o.ptr_, nullptr)), size_(std::exchange(o.size_, 0)) {}
  AlignedBuffer& operator=(AlignedBuffer&& o) noexcept {
    std::swap(raw_, o.raw_);
    std::swap(ptr_, o.ptr_);
    std::swap(size_, o.size_);
    return *this;
  }
  ~AlignedBuffer() { std::free(raw_); }

  // Discards the contents; the new buffer is zero-filled. Through calloc, aligned by hand: for a
  // large buffer glibc hands over fresh pages, which the kernel has zeroed, and skips the memset
  // (the memset after aligned_alloc was ~4 ms of a 55-67 ms ResNet-18 load, Zen 3, fresh process).
  void reset(size_t bytes) {
    std::free(raw_);
    raw_ = ptr_ = nullptr;
    size_ = 0;
    if (bytes == 0) return;
    if (bytes > SIZE_MAX / 2) throw OutOfMemory("could not allocate " + std::to_string(bytes) + " bytes");
    const size_t rounded = (bytes + kAlign - 1) / kAlign * kAlign;
    raw_ = std::calloc(1, rounded + kAlign - 1);
    if (!raw_) throw OutOfMemory("could not allocate " + std::to_string(rounded) + " bytes");
    const uintptr_t at = (reinterpret_cast<uintptr_t>(raw_) + kAlign - 1) / kAlign * kAlign;
    ptr_ = static_cast<char*>(raw_) + (at - reinterpret_cast<uintptr_t>(raw_));
    size_ = bytes;
  }

  // Grows (never shrinks) a scratch buffer; contents are not preserved.
  void ensure(size_t bytes) {
    if (bytes > size_) reset(bytes);
  }

  template <class T>
  T* as() { return static_cast<T*>(ptr_); }
  template <class T>
  const T* as() const { return static_cast<const T*>(ptr_); }
  size_t size() const { return size_; }

 private:
  void* raw_ = nullptr;  // what calloc returned, for free
  void* ptr_ = nullptr;  // raw_ rounded up to kAlign
  size_t size_ = 0;
};

}  // namespace qr
