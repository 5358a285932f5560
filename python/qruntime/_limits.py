"""The size limits of qruntime.ops in one place (the C++ ops enforce the same numbers), and the output-size setting."""
import numbers

INT32_MAX = 2**31 - 1
MAX_DIM = INT32_MAX  # every dimension of an input or an output
MAX_ARG = INT32_MAX  # every int argument: kernel, stride, padding, dilation, output_size, groups, ...
MAX_K = 65536  # int32 accumulation is exact up to here: 255 * 127 * 65536 < 2**31
MAX_POOL_WINDOW_AREA = INT32_MAX // 255  # an average pool's int32 window sum of uint8 values cannot overflow
DEFAULT_MAX_ACTIVATION_BYTES = 4 * 2**30

_max_activation_bytes = DEFAULT_MAX_ACTIVATION_BYTES


def set_max_activation_bytes(n):
    """The largest output, in bytes, that an op may return (an int >= 1; DEFAULT_MAX_ACTIVATION_BYTES at start)."""
    global _max_activation_bytes
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise TypeError(f"set_max_activation_bytes: n must be an int, got {type(n).__name__}")
    if n < 1:
        raise ValueError(f"set_max_activation_bytes: n must be >= 1, got {n}")
    _max_activation_bytes = int(n)


def get_max_activation_bytes():
    """The largest output, in bytes, that an op may return."""
    return _max_activation_bytes
