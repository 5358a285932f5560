"""Argument checks shared by the numpy front ends: each error names the argument it is about."""
import math
import numbers

import numpy as np

_FLOAT32_TINY = float(np.finfo(np.float32).tiny)
_FLOAT32_MAX = float(np.finfo(np.float32).max)


def array(value, name, dtype, ndim=None, contiguous=True):
    """`value` as an ndarray of exactly `dtype` (no silent casts), of rank `ndim`, made C-contiguous
    unless the caller reorders it anyway (contiguous=False)."""
    if not isinstance(value, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray of {np.dtype(dtype).name}, got {type(value).__name__}")
    if value.dtype != np.dtype(dtype):
        raise TypeError(f"{name} must have dtype {np.dtype(dtype).name}, got {value.dtype}")
    if ndim is not None and value.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {value.shape}")
    if not contiguous or value.flags.c_contiguous:
        return value  # (np.ascontiguousarray would also turn a 0-d array into shape (1,))
    return np.ascontiguousarray(value)


def scale(value, name):
    """A positive, finite scale that survives the conversion to float32 (the kernels' type)."""
    if type(value) is not float and (isinstance(value, bool) or not isinstance(value, numbers.Real)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    v = float(value)
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be finite and > 0, got {v}")
    if not _FLOAT32_TINY <= v <= _FLOAT32_MAX:
        raise ValueError(f"{name} must be a normal float32 value, got {v}")
    return v


def is_int(value):
    # type(...) is int first: the ABC check costs a microsecond, and per-layer calls add up.
    return type(value) is int or (isinstance(value, numbers.Integral) and not isinstance(value, bool))


def zero_point(value, name):
    """A uint8 zero point."""
    if not is_int(value):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    v = int(value)
    if not 0 <= v <= 255:
        raise ValueError(f"{name} must be in [0, 255], got {v}")
    return v


def scales(value, name, count):
    """One scale, or `count` per-channel scales, as a float32 array of 1 or `count` values."""
    if not isinstance(value, np.ndarray) and isinstance(value, numbers.Real) and not isinstance(value, bool):
        return np.array([scale(value, name)], dtype=np.float32)
    if not isinstance(value, np.ndarray):
        raise TypeError(f"{name} must be a float or a numpy array of {count} floats, got {type(value).__name__}")
    if value.dtype.kind != "f":
        raise TypeError(f"{name} must hold floats, got dtype {value.dtype}")
    if value.ndim != 1 or value.shape[0] not in (1, count):
        raise ValueError(f"{name} must hold 1 or {count} values (one per output channel), got shape {value.shape}")
    # The values themselves (finite, > 0, normal as float32) are checked where they are used, in
    # C++ (requant.cc), which names this argument: one pass instead of several numpy ones.
    if value.dtype == np.float32:
        return np.ascontiguousarray(value)
    with np.errstate(over="ignore", under="ignore"):
        return np.ascontiguousarray(value, dtype=np.float32)


def bias(value, name, count):
    """None, or `count` finite floats as float32."""
    if value is None:
        return None
    if not isinstance(value, np.ndarray):
        raise TypeError(f"{name} must be a numpy array of {count} floats or None, got {type(value).__name__}")
    if value.dtype.kind != "f":
        raise TypeError(f"{name} must hold floats, got dtype {value.dtype}")
    if value.shape != (count,):
        raise ValueError(f"{name} must have shape ({count},), got {value.shape}")
    # Finiteness (after the float32 conversion) is checked in C++ (requant.cc), naming this argument.
    if value.dtype == np.float32:
        return np.ascontiguousarray(value)
    with np.errstate(over="ignore"):
        return np.ascontiguousarray(value, dtype=np.float32)


def finite(x, name):
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} must not hold NaN or inf")


def flag(value, name):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return bool(value)


_INT32_MAX = 2**31 - 1


def _int(value, name, minimum):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int or a pair of ints, got {type(value).__name__}")
    v = int(value)
    if not minimum <= v <= _INT32_MAX:
        raise ValueError(f"{name} must be in [{minimum}, {_INT32_MAX}], got {v}")
    return v


def int_pair(value, name, minimum):
    """PyTorch's int-or-pair argument (kernel_size, stride, ...) as a tuple (h, w) of ints >= minimum."""
    if isinstance(value, (tuple, list)):
        if len(value) not in (1, 2):
            raise ValueError(f"{name} must be an int or a pair of ints, got {len(value)} values")
        values = [_int(v, name, minimum) for v in value]
        return (values[0], values[-1])
    v = _int(value, name, minimum)
    return (v, v)


def isa(value):
    """An ISA path's name for the C++ side: "" for None (the active path), else a path of this machine."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise TypeError(f"isa must be a str or None, got {type(value).__name__}")
    from . import _core
    known = _core.available_isas(True)
    if value not in known:
        raise ValueError(f"isa must be one of {known} on this machine, got {value!r}")
    return value
