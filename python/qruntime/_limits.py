"""The size limits of qruntime (the C++ side enforces the same numbers) and the activation memory cap.

A .qnn file is input from outside, and a few bytes of it (an output size, a padding) can ask for an
activation of any size; so can a qruntime.ops call. Every value's bytes are therefore checked,
before anything is allocated or copied, against a cap (docs/format.md, "Limits"):
`qruntime.load(..., max_activation_bytes=)` sets it per model, `set_max_activation_bytes` the
default for models loaded afterwards and the limit of qruntime.ops outputs.
"""
import numbers

from . import _core

INT32_MAX = 2**31 - 1
MAX_DIM = INT32_MAX  # every dimension of an input or an output
MAX_ARG = INT32_MAX  # every int argument: kernel, stride, padding, dilation, output_size, groups, ...
MAX_K = 65536  # int32 accumulation is exact up to here: 255 * 127 * 65536 < 2**31
MAX_POOL_WINDOW_AREA = INT32_MAX // 255  # an average pool's int32 window sum of uint8 values cannot overflow
DEFAULT_MAX_ACTIVATION_BYTES = _core.Engine.default_max_activation_bytes()  # 4 GiB, from the C++ side
_LARGEST = 2**62  # beyond any machine; keeps the C++ side's sums of value sizes far from wrapping

_max_activation_bytes = DEFAULT_MAX_ACTIVATION_BYTES


def check_max_activation_bytes(value, name="max_activation_bytes"):
    """`value` as a byte cap: an int in [1, 2^62]."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int (bytes), got {type(value).__name__}")
    if not 1 <= value <= _LARGEST:
        raise ValueError(f"{name} must be in [1, 2^62] bytes, got {value}")
    return int(value)


def set_max_activation_bytes(n):
    """Sets the cap for models loaded from now on and for qruntime.ops outputs (default 4 GiB)."""
    global _max_activation_bytes
    _max_activation_bytes = check_max_activation_bytes(n, "set_max_activation_bytes: n")


def get_max_activation_bytes():
    """The cap new models and qruntime.ops calls get (bytes)."""
    return _max_activation_bytes
