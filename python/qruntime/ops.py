"""numpy front of the C++ quantized ops (DESIGN.md §7), with PyTorch's quantization arguments.

Tensors are uint8 with a per-tensor (scale, zero_point); weights are int8 in [-127, 127] with
per-channel (or one) scales. Every call checks its arguments and raises TypeError / ValueError
naming the bad one; `isa=` runs a particular ISA path (default: the active one, `qruntime.isa()`).
"""
import numpy as np

from . import _checks, _core
from ._core import PackedWeights
from ._pool_ops import adaptive_avg_pool2d, add, avg_pool2d, concat, lut, make_lut, max_pool2d

__all__ = [
    "quantize", "dequantize", "pack_weights", "gemm_u8s8s32", "linear", "PackedWeights",
    "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "add", "concat", "lut", "make_lut",
]

MAX_K = 65536  # int32 accumulation is exact up to here: 255 * 127 * 65536 < 2**31

_ACTIVATIONS = {"none": 0, "relu": 1, "relu6": 2}


def _isa(isa):
    if isa is None:
        return ""
    if not isinstance(isa, str):
        raise TypeError(f"isa must be a str or None, got {type(isa).__name__}")
    known = _core.available_isas(True)
    if isa not in known:
        raise ValueError(f"isa must be one of {known} on this machine, got {isa!r}")
    return isa


def quantize(x, scale, zero_point):
    """uint8 q = clamp(round_half_even(x / scale) + zero_point, 0, 255), in float32."""
    x = _checks.array(x, "x", np.float32)
    s = _checks.scale(scale, "scale")
    zp = _checks.zero_point(zero_point, "zero_point")
    _checks.finite(x, "x")
    return _core.quantize(x, s, zp)


def dequantize(q, scale, zero_point):
    """float32 x = (q - zero_point) * scale."""
    q = _checks.array(q, "q", np.uint8)
    return _core.dequantize(q, _checks.scale(scale, "scale"), _checks.zero_point(zero_point, "zero_point"))


def _pack(b, name, isa):
    b = _checks.array(b, name, np.int8, ndim=2)
    n, k = b.shape
    if n == 0 or k == 0:
        raise ValueError(f"{name} must not have a zero-size dimension, got shape {b.shape}")
    if k > MAX_K:
        raise ValueError(f"{name} has K = {k}; at most {MAX_K} is supported (exact int32 accumulation)")
    if np.any(b == -128):
        raise ValueError(f"{name} must hold values in [-127, 127] (symmetric int8); found -128")
    return _core.pack_weights(b, _isa(isa))


def pack_weights(b, isa=None):
    """Prepacks int8 weights (N x K, values in [-127, 127]) once for repeated gemm/linear calls."""
    return _pack(b, "b", isa)


def _weights(w, name, isa):
    if isinstance(w, PackedWeights):
        if isa is not None and _isa(isa) != w.isa:
            raise ValueError(f"{name} was packed for isa {w.isa!r}, not {isa!r}")
        return w
    return _pack(w, name, isa)


def _activations(a, name, k):
    a = _checks.array(a, name, np.uint8, ndim=2)
    if a.shape[1] != k:
        raise ValueError(f"{name} has K = {a.shape[1]} but the weights have K = {k}")
    return a


def gemm_u8s8s32(a, b, *, isa=None):
    """int32 C (M x N) = a (uint8, M x K) . b (int8, N x K, or PackedWeights)^T, exactly."""
    w = _weights(b, "b", isa)
    return _core.gemm_u8s8s32(_activations(a, "a", w.k), w)


def linear(x_q, x_scale, x_zp, w_q, w_scale, bias, out_scale, out_zp, relu=False, *, relu6=False, isa=None):
    """uint8 y (M x N) = requantize(x_q . w_q^T + bias), PyTorch's quantized linear arguments.

    w_scale is one float or N per-channel floats; bias is None or N floats (real units).
    """
    w = _weights(w_q, "w_q", isa)
    x_q = _activations(x_q, "x_q", w.k)
    relu = _checks.flag(relu, "relu")
    relu6 = _checks.flag(relu6, "relu6")
    act = "relu6" if relu6 else "relu" if relu else "none"
    return _core.linear(
        x_q,
        _checks.scale(x_scale, "x_scale"),
        _checks.zero_point(x_zp, "x_zp"),
        w,
        _checks.scales(w_scale, "w_scale", w.n),
        _checks.bias(bias, "bias", w.n),
        _checks.scale(out_scale, "out_scale"),
        _checks.zero_point(out_zp, "out_zp"),
        _ACTIVATIONS[act],
    )
