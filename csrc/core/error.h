// Error types thrown by the native core; the bindings map them to Python exceptions.
#pragma once
#include <stdexcept>
#include <string>

namespace qr {

// A bad argument from the caller (maps to ValueError).
struct ValueError : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

// An internal invariant that failed (maps to RuntimeError); never the caller's fault.
struct InternalError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

#define QR_CHECK_ARG(cond, msg)                  \
  do {                                           \
    if (!(cond)) throw ::qr::ValueError(msg);    \
  } while (0)

}  // namespace qr
