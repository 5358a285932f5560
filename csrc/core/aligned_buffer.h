// An owning, 64-byte aligned, zero-initialised byte buffer (prepacked weights, scratch).
#pragma once
#include <cstddef>
#include <cstdlib>
#include <cstring>
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
  AlignedBuffer(AlignedBuffer&& o) noexcept : ptr_(std::exchange(o.ptr_, nullptr)), size_(std::exchange(o.size_, 0)) {}
  AlignedBuffer& operator=(AlignedBuffer&& o) noexcept {
    std::swap(ptr_, o.ptr_);
    std::swap(size_, o.size_);
    return *this;
  }
  ~AlignedBuffer() { std::free(ptr_); }

  // Discards the contents; the new buffer is zero-filled.
  void reset(size_t bytes) {
    std::free(ptr_);
    ptr_ = nullptr;
    size_ = 0;
    if (bytes == 0) return;
    size_t rounded = (bytes + kAlign - 1) / kAlign * kAlign;
    ptr_ = std::aligned_alloc(kAlign, rounded);
    if (!ptr_) throw OutOfMemory("could not allocate " + std::to_string(rounded) + " bytes");
    std::memset(ptr_, 0, rounded);
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
  void* ptr_ = nullptr;
  size_t size_ = 0;
};

}  // namespace qr
