"""Argument checks shared by the numpy front ends: each error names the argument it is about."""
import functools
import math
import numbers

import numpy as np

from . import _limits

_FLOAT32_TINY = float(np.finfo(np.float32).tiny)
_FLOAT32_MAX = float(np.finfo(np.float32).max)


def op(name):
    """Decorator of a public op: its TypeError / ValueError messages start with "name: "."""
    def decorate(fn):
        @functools.wraps(fn)
        def checked(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except (TypeError, ValueError) as e:
                # Rewrite the message in place: the type (a pybind11 or numpy subclass too) and the
                # traceback stay; a message that already starts with the op's name is left alone.
                if len(e.args) == 1 and isinstance(e.args[0], str) and not _starts_with_word(e.args[0], name):
                    e.args = (f"{name}: {e.args[0]}",)
                raise
        return checked
    return decorate


def _starts_with_word(message, word):
    return message.startswith(word) and not message[len(word):len(word) + 1].isidentifier()


def array(value, name, dtype, ndim=None):
    """`value` itself, checked to be an ndarray of exactly `dtype` (no silent casts), of rank `ndim`, whose
    dimensions fit an int32. Never copies: an op checks all its shapes before it pays for contiguous()."""
    if not isinstance(value, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray of {np.dtype(dtype).name}, got {type(value).__name__}")
    if value.dtype != np.dtype(dtype):
        raise TypeError(f"{name} must have dtype {np.dtype(dtype).name}, got {value.dtype}")
    if ndim is not None and value.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {value.shape}")
    _dims(value.shape, name)
    return value


def _dims(shape, name):
    if shape and max(shape) > _limits.MAX_DIM:  # one builtin call on the common path
        axis, d = max(enumerate(shape), key=lambda item: item[1])
        raise ValueError(f"{name} has dimension {axis} of size {d} (shape {shape}); at most {_limits.MAX_DIM}")


def contiguous(x):
    """x as a C-contiguous array: the copy an op makes once every check has passed."""
    if x.flags.c_contiguous:
        return x  # (np.ascontiguousarray would also turn a 0-d array into shape (1,))
    return np.ascontiguousarray(x)


def output(shape, dtype):
    """Refuses an output of `shape` whose dimensions do not fit an int32 or whose bytes exceed the
    max_activation_bytes setting, before the op allocates it (or copies any input)."""
    _dims(shape, "the output")
    nbytes = math.prod(shape) * np.dtype(dtype).itemsize
    limit = _limits.get_max_activation_bytes()
    if nbytes > limit:
        raise ValueError(f"the output of shape {tuple(shape)} ({np.dtype(dtype).name}) would take {nbytes} bytes; "
                         f"at most max_activation_bytes = {limit}")


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
    """One scale (as a float32 array of 1), or `count` per-channel scales: checked here, converted by
    float32() once every other argument has passed."""
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
    return value


def bias(value, name, count):
    """None, or `count` floats: checked here, converted by float32() (finiteness is checked in C++,
    requant.cc, after the conversion, naming this argument)."""
    if value is None:
        return None
    if not isinstance(value, np.ndarray):
        raise TypeError(f"{name} must be a numpy array of {count} floats or None, got {type(value).__name__}")
    if value.dtype.kind != "f":
        raise TypeError(f"{name} must hold floats, got dtype {value.dtype}")
    if value.shape != (count,):
        raise ValueError(f"{name} must have shape ({count},), got {value.shape}")
    return value


def float32(value):
    """A float array checked by scales() or bias() (or None) as C-contiguous float32."""
    if value is None or (value.dtype == np.float32 and value.flags.c_contiguous):
        return value
    with np.errstate(over="ignore", under="ignore"):  # out-of-range values are rejected in C++, by name
        return np.ascontiguousarray(value, dtype=np.float32)


def finite(x, name):
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} must not hold NaN or inf")


def flag(value, name):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return bool(value)


def int_arg(value, name, minimum, kind="an int"):
    """An int argument (kernel, stride, padding, ...) in [minimum, 2**31 - 1]; `kind` says what the
    argument may be in the TypeError."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be {kind}, got {type(value).__name__}")
    v = int(value)
    if not minimum <= v <= _limits.MAX_ARG:
        raise ValueError(f"{name} must be in [{minimum}, {_limits.MAX_ARG}], got {v}")
    return v


def int_pair(value, name, minimum):
    """PyTorch's int-or-pair argument (kernel_size, stride, ...) as a tuple (h, w) of ints >= minimum."""
    if isinstance(value, (tuple, list)):
        if len(value) not in (1, 2):
            raise ValueError(f"{name} must be an int or a pair of ints, got {len(value)} values")
        values = [int_arg(v, name, minimum, "an int or a pair of ints") for v in value]
        return (values[0], values[-1])
    v = int_arg(value, name, minimum, "an int or a pair of ints")
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
