"""numpy front of the C++ quantized ops (DESIGN.md §7), with PyTorch's quantization arguments.

Tensors are uint8 with a per-tensor (scale, zero_point); weights are int8 in [-127, 127] with
per-channel (or one) scales. Every call checks its arguments and raises TypeError / ValueError
naming the bad one; `isa=` runs a particular ISA path (default: the active one, `qruntime.isa()`).
"""
import numpy as np

from . import _checks, _core
from ._core import PackedConv2d, PackedWeights
from ._pool_ops import adaptive_avg_pool2d, add, avg_pool2d, concat, lut, make_lut, max_pool2d

__all__ = [
    "quantize",
    "dequantize",
    "pack_weights",
    "gemm_u8s8s32",
    "linear",
    "pack_conv2d",
    "conv2d",
    "max_pool2d",
    "avg_pool2d",
    "adaptive_avg_pool2d",
    "add",
    "concat",
    "lut",
    "make_lut",
    "PackedWeights",
    "PackedConv2d",
]

MAX_K = 65536  # int32 accumulation is exact up to here: 255 * 127 * 65536 < 2**31

_ACTIVATIONS = {"none": 0, "relu": 1, "relu6": 2}


_isa = _checks.isa


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


def _pair(value, name):
    """An int or a pair of ints (height, width), each >= 1."""
    if type(value) is int and value >= 1:  # the common case, without the general checks
        return [value, value]
    v = (value, value) if _checks.is_int(value) else value
    if not isinstance(v, (tuple, list)) or len(v) != 2 or not all(_checks.is_int(i) for i in v):
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    if min(v) < 1:
        raise ValueError(f"{name} must be >= 1, got {value!r}")
    return [int(i) for i in v]


def _padding(value):
    """int p, (ph, pw) or (top, left, bottom, right), each >= 0, as [top, left, bottom, right]."""
    if type(value) is int and value >= 0:  # the common case, without the general checks
        return [value] * 4
    if _checks.is_int(value):
        v = [value] * 4
    elif isinstance(value, (tuple, list)) and len(value) in (2, 4) and all(_checks.is_int(i) for i in value):
        v = list(value) * 2 if len(value) == 2 else list(value)
    else:
        raise TypeError(f"padding must be an int, a pair or four ints (top, left, bottom, right), got {value!r}")
    if min(v) < 0:
        raise ValueError(f"padding must be >= 0, got {value!r}")
    return [int(i) for i in v]


def pack_conv2d(w_q, groups=1, isa=None):
    """Prepacks conv weights (OC, IC/groups, KH, KW) int8 in [-127, 127] once for repeated calls."""
    w_q = _checks.array(w_q, "w_q", np.int8, ndim=4)
    if not _checks.is_int(groups):
        raise TypeError(f"groups must be an int, got {type(groups).__name__}")
    if groups < 1:
        raise ValueError(f"groups must be >= 1, got {groups}")
    if 0 in w_q.shape:
        raise ValueError(f"w_q must not have a zero-size dimension, got shape {w_q.shape}")
    if w_q.shape[0] % groups:
        raise ValueError(f"groups ({groups}) must divide the output channels of w_q ({w_q.shape[0]})")
    k = w_q.shape[1] * w_q.shape[2] * w_q.shape[3]
    if k > MAX_K:
        raise ValueError(f"w_q has IC/groups * KH * KW = {k}; at most {MAX_K} is supported")
    if np.any(w_q == -128):
        raise ValueError("w_q must hold values in [-127, 127] (symmetric int8); found -128")
    return _core.pack_conv2d(w_q, int(groups), _isa(isa))


def conv2d(x_q, x_scale, x_zp, w_q, w_scale, bias, out_scale, out_zp, stride=1, padding=0, dilation=1, groups=1,
           relu=False, relu6=False, *, isa=None):
    """uint8 NCHW y = requantize(conv2d(x_q, w_q) + bias), PyTorch's quantized conv arguments.

    w_q is (OC, IC/groups, KH, KW) int8 or a PackedConv2d; w_scale one float or OC floats; padding
    an int, (ph, pw) or (top, left, bottom, right), filled with the input zero point.
    """
    if isinstance(w_q, PackedConv2d):
        if isa is not None and _isa(isa) != w_q.isa:
            raise ValueError(f"w_q was packed for isa {w_q.isa!r}, not {isa!r}")
        if w_q.groups != groups:
            raise ValueError(f"w_q was packed with groups={w_q.groups}, not groups={groups}")
        packed = w_q
    else:
        packed = pack_conv2d(w_q, groups, isa)
    x_q = _checks.array(x_q, "x_q", np.uint8, ndim=4, contiguous=False)
    expected = packed.in_channels_per_group * packed.groups
    if x_q.shape[1] != expected:
        raise ValueError(f"x_q has {x_q.shape[1]} channels; w_q with groups={groups} expects {expected}")
    if x_q.shape[2] == 0 or x_q.shape[3] == 0:
        raise ValueError(f"x_q must have a spatial size of at least 1x1, got {x_q.shape}")
    stride = _pair(stride, "stride")
    dilation = _pair(dilation, "dilation")
    pads = _padding(padding)
    relu = _checks.flag(relu, "relu")
    relu6 = _checks.flag(relu6, "relu6")
    act = "relu6" if relu6 else "relu" if relu else "none"
    # NHWC inside; an NCHW view of NHWC memory (what conv2d returns) goes in without a copy.
    x_nhwc = np.ascontiguousarray(x_q.transpose(0, 2, 3, 1))
    y = _core.conv2d(
        x_nhwc,
        _checks.scale(x_scale, "x_scale"),
        _checks.zero_point(x_zp, "x_zp"),
        packed,
        _checks.scales(w_scale, "w_scale", packed.out_channels),
        _checks.bias(bias, "bias", packed.out_channels),
        _checks.scale(out_scale, "out_scale"),
        _checks.zero_point(out_zp, "out_zp"),
        _ACTIVATIONS[act],
        stride,
        pads,
        dilation,
    )
    return y.transpose(0, 3, 1, 2)  # NCHW indexing over NHWC memory, like torch's channels_last
