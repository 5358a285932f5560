"""The activation memory cap: how many bytes one model run (or one qruntime.ops call) may plan.

A .qnn file is input from outside, and a few bytes of it (an output size, a padding) can ask for an
activation of any size. Every value's bytes are therefore checked, before anything is allocated or
copied, against this cap (docs/format.md, "Limits"); `qruntime.load(..., max_activation_bytes=)`
sets it per model, `set_max_activation_bytes` the default for models loaded afterwards and for ops.
"""
from . import _core

DEFAULT_MAX_ACTIVATION_BYTES = _core.Engine.default_max_activation_bytes()  # 4 GiB, from the C++ side
_LARGEST = 2**62  # beyond any machine; keeps the C++ side's sums of value sizes far from wrapping

_max_activation_bytes = DEFAULT_MAX_ACTIVATION_BYTES


def check_max_activation_bytes(value, name="max_activation_bytes"):
    """`value` as a byte cap: an int in [1, 2^62]."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int (bytes), got {type(value).__name__}")
    if not 1 <= value <= _LARGEST:
        raise ValueError(f"{name} must be in [1, 2^62] bytes, got {value}")
    return value


def set_max_activation_bytes(n):
    """Sets the cap for models loaded from now on and for qruntime.ops calls (default 4 GiB)."""
    global _max_activation_bytes
    _max_activation_bytes = check_max_activation_bytes(n, "n")


def get_max_activation_bytes():
    """The cap new models and qruntime.ops calls get (bytes)."""
    return _max_activation_bytes
