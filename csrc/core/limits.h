// Size arithmetic that cannot wrap, and the limits every shape the engine accepts stays within.
//
// Sizes come from outside: a .qnn file's attributes and a caller's arrays. Computed naively in
// int64 they wrap (24 * 2147437309 * 1073764994 is negative) and a buffer sized from the wrapped
// number is overrun. So every product or sum of sizes that comes from outside goes through the
// checked helpers here, and every value's shape is held to the limits below before any memory is
// planned or touched (docs/format.md, "Limits"): a dimension fits an int32, an element count and a
// byte count fit an int64 without wrapping, and one run's activations stay under a configurable cap.
#pragma once
#include <cstddef>
#include <cstdint>
#include <new>
#include <string>
#include <utility>

namespace qr {

// Every dimension, attribute and element count handed to a kernel fits an int32.
constexpr int64_t kMaxDim = 2147483647;
// The default cap on the activation memory one run may plan (Engine, qruntime.ops outputs).
constexpr int64_t kDefaultMaxActivationBytes = int64_t{4} << 30;

// a * b and a + b for non-negative sizes; false (out untouched) when the result passes INT64_MAX.
inline bool checked_mul(int64_t a, int64_t b, int64_t* out) { return !__builtin_mul_overflow(a, b, out); }
inline bool checked_add(int64_t a, int64_t b, int64_t* out) { return !__builtin_add_overflow(a, b, out); }

// a * b, or INT64_MAX when it would pass it: for costs and estimates that only need "very large".
inline int64_t saturating_mul(int64_t a, int64_t b) {
  int64_t r;
  return checked_mul(a, b, &r) ? r : INT64_MAX;
}

// Thrown when memory cannot be had; the message names what asked and how many bytes (the bindings
// turn any std::bad_alloc into Python's MemoryError with this text).
class OutOfMemory : public std::bad_alloc {
 public:
  explicit OutOfMemory(std::string msg) : msg_(std::move(msg)) {}
  const char* what() const noexcept override { return msg_.c_str(); }

 private:
  std::string msg_;
};

}  // namespace qr
