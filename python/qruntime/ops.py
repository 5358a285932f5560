"""numpy front of the C++ quantized ops (DESIGN.md §7), with PyTorch's quantization arguments.

Tensors are uint8 with a per-tensor (scale, zero_point); weights are int8 in [-127, 127] with
per-channel (or one) scales. Every call checks its arguments and raises TypeError / ValueError
naming the op and the bad argument, from the shapes and scalars alone before it copies any array (so
a huge non-contiguous view with a wrong shape costs nothing); the limits are in _limits.py. `isa=`
runs a particular ISA path (default: the active one, `qruntime.isa()`).
"""
import numpy as np

from . import _checks, _core, _limits
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

MAX_K = _limits.MAX_K  # still read here by callers

_ACTIVATIONS = {"none": 0, "relu": 1, "relu6": 2}
_SIDES = ("top", "left", "bottom", "right")


_isa = _checks.isa
_op = _checks.op


@_op("quantize")
def quantize(x, scale, zero_point):
    """uint8 q = clamp(round_half_even(x / scale) + zero_point, 0, 255), in float32."""
    x = _checks.array(x, "x", np.float32)
    s = _checks.scale(scale, "scale")
    zp = _checks.zero_point(zero_point, "zero_point")
    _checks.output(x.shape, np.uint8)
    _checks.finite(x, "x")
    return _core.quantize(_checks.contiguous(x), s, zp)


@_op("dequantize")
def dequantize(q, scale, zero_point):
    """float32 x = (q - zero_point) * scale."""
    q = _checks.array(q, "q", np.uint8)
    s = _checks.scale(scale, "scale")
    zp = _checks.zero_point(zero_point, "zero_point")
    _checks.output(q.shape, np.float32)
    return _core.dequantize(_checks.contiguous(q), s, zp)


def _weight_shape(b, name):
    """(n, k) of unpacked weights (N x K int8), from the shape alone."""
    b = _checks.array(b, name, np.int8, ndim=2)
    n, k = b.shape
    if n == 0 or k == 0:
        raise ValueError(f"{name} must not have a zero-size dimension, got shape {b.shape}")
    _max_k(k, f"{name} has K = {k}")
    return n, k


def _max_k(k, what):
    if k > MAX_K:
        raise ValueError(f"{what}; at most {MAX_K} is supported (exact int32 accumulation)")


def _symmetric(w, name):
    """w made contiguous, after a scan for -128: the weights are symmetric int8."""
    w = _checks.contiguous(w)
    if np.any(w == -128):
        raise ValueError(f"{name} must hold values in [-127, 127] (symmetric int8); found -128")
    return w


@_op("pack_weights")
def pack_weights(b, isa=None):
    """Prepacks int8 weights (N x K, values in [-127, 127]) once for repeated gemm/linear calls."""
    _weight_shape(b, "b")
    return _packed(b, "b", _isa(isa))


def _weights_nk(w, name, isa):
    """(n, k) of PackedWeights or of unpacked weights, before any packing; isa is _isa()'s name."""
    if isinstance(w, PackedWeights):
        if isa and isa != w.isa:
            raise ValueError(f"{name} was packed for isa {w.isa!r}, not {isa!r}")
        return w.n, w.k
    return _weight_shape(w, name)


def _packed(w, name, isa):
    """PackedWeights as they are; unpacked weights (shape already checked) packed now."""
    return w if isinstance(w, PackedWeights) else _core.pack_weights(_symmetric(w, name), isa)


def _qparams(x_scale, x_zp, out_scale, out_zp):
    return (_checks.scale(x_scale, "x_scale"), _checks.zero_point(x_zp, "x_zp"),
            _checks.scale(out_scale, "out_scale"), _checks.zero_point(out_zp, "out_zp"))


def _activations(a, name, k):
    a = _checks.array(a, name, np.uint8, ndim=2)
    if a.shape[1] != k:
        raise ValueError(f"{name} has K = {a.shape[1]} but the weights have K = {k}")
    return a


@_op("gemm_u8s8s32")
def gemm_u8s8s32(a, b, *, isa=None):
    """int32 C (M x N) = a (uint8, M x K) . b (int8, N x K, or PackedWeights)^T, exactly."""
    isa = _isa(isa)
    n, k = _weights_nk(b, "b", isa)
    a = _activations(a, "a", k)
    _checks.output((a.shape[0], n), np.int32)
    w = _packed(b, "b", isa)
    return _core.gemm_u8s8s32(_checks.contiguous(a), w)


@_op("linear")
def linear(x_q, x_scale, x_zp, w_q, w_scale, bias, out_scale, out_zp, relu=False, *, relu6=False, isa=None):
    """uint8 y (M x N) = requantize(x_q . w_q^T + bias), PyTorch's quantized linear arguments.

    w_scale is one float or N per-channel floats; bias is None or N floats (real units).
    """
    isa = _isa(isa)
    n, k = _weights_nk(w_q, "w_q", isa)
    x_q = _activations(x_q, "x_q", k)
    act = _activation(relu, relu6)
    s_x, zp_x, s_y, zp_y = _qparams(x_scale, x_zp, out_scale, out_zp)
    ws = _checks.scales(w_scale, "w_scale", n)
    b = _checks.bias(bias, "bias", n)
    _checks.output((x_q.shape[0], n), np.uint8)
    w = _packed(w_q, "w_q", isa)
    return _core.linear(_checks.contiguous(x_q), s_x, zp_x, w, _checks.float32(ws), _checks.float32(b), s_y, zp_y, act)


def _activation(relu, relu6):
    relu = _checks.flag(relu, "relu")
    relu6 = _checks.flag(relu6, "relu6")
    return _ACTIVATIONS["relu6" if relu6 else "relu" if relu else "none"]


def _pair(value, name):
    """An int or a pair of ints (height, width), each in [1, 2**31 - 1]."""
    if type(value) is int and 1 <= value <= _limits.MAX_ARG:  # the common case, without the general checks
        return [value, value]
    v = (value, value) if _checks.is_int(value) else value
    if not isinstance(v, (tuple, list)) or len(v) != 2 or not all(_checks.is_int(i) for i in v):
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    return [_checks.int_arg(i, name, 1) for i in v]


def _padding(value):
    """int p, (ph, pw) or (top, left, bottom, right), each in [0, 2**31 - 1], as [top, left, bottom, right]."""
    if type(value) is int and 0 <= value <= _limits.MAX_ARG:  # the common case, without the general checks
        return [value] * 4
    if _checks.is_int(value):
        v = [value] * 4
    elif isinstance(value, (tuple, list)) and len(value) in (2, 4) and all(_checks.is_int(i) for i in value):
        v = list(value) * 2 if len(value) == 2 else list(value)
    else:
        raise TypeError(f"padding must be an int, a pair or four ints (top, left, bottom, right), got {value!r}")
    return [_checks.int_arg(i, "padding", 0) for i in v]


def _groups(groups):
    return _checks.int_arg(groups, "groups", 1)


def _conv_weight_shape(w_q, groups):
    """(oc, icg, kh, kw) of unpacked conv weights, from the shape alone."""
    w_q = _checks.array(w_q, "w_q", np.int8, ndim=4)
    if 0 in w_q.shape:
        raise ValueError(f"w_q must not have a zero-size dimension, got shape {w_q.shape}")
    oc, icg, kh, kw = w_q.shape
    if oc % groups:
        raise ValueError(f"groups ({groups}) must divide the output channels of w_q ({oc})")
    _max_k(icg * kh * kw, f"w_q has IC/groups * KH * KW = {icg * kh * kw}")
    return oc, icg, kh, kw


@_op("pack_conv2d")
def pack_conv2d(w_q, groups=1, isa=None, *, stride=None, dilation=None):
    """Prepacks conv weights (OC, IC/groups, KH, KW) int8 in [-127, 127] once for repeated calls.

    With stride and dilation given, the packer may choose a kernel for that geometry: exact Winograd
    for a 3x3 conv of one group at stride 1 or 2, on a path that has it (``PackedConv2d.winograd``;
    ``kernel_choice`` names the variant and says why), or a direct kernel for a first layer of few
    input channels at dilation 1 (``PackedConv2d.direct``), and weights packed that way refuse other
    geometries. Without them, the weights run with any geometry.
    """
    groups = _groups(groups)
    _conv_weight_shape(w_q, groups)
    if (stride is None) != (dilation is None):
        raise ValueError("pack_conv2d takes stride and dilation together, or neither")
    geometry = None if stride is None else (_pair(stride, "stride"), _pair(dilation, "dilation"))
    return _packed_conv(w_q, groups, _isa(isa), geometry)


def _packed_conv(w_q, groups, isa, geometry=None):
    """Conv weights whose shape is already checked, packed (for one (stride, dilation) when given)."""
    stride, dilation = geometry if geometry else (None, None)
    return _core.pack_conv2d(_symmetric(w_q, "w_q"), groups, isa, stride, dilation)


def _conv_output_hw(h, w, kernel, stride, dilation, pads):
    """conv2d's output (OH, OW), in Python ints (no overflow): the (dilated) kernel within the padded
    input on both axes first, then each padding smaller than the kernel's extent, so that every
    window reads the input."""
    spans = [d * (k - 1) + 1 for k, d in zip(kernel, dilation)]
    padded = [h + pads[0] + pads[2], w + pads[1] + pads[3]]
    for axis, k, d, span, size in zip(("height", "width"), kernel, dilation, spans, padded):
        if span > size:
            raise ValueError(f"w_q's kernel {axis} {k} (extent {span} with dilation {d}) is larger than the "
                             f"padded input {axis} {size}")
    for side, pad, span in zip(_SIDES, pads, spans * 2):
        if pad > span - 1:
            raise ValueError(f"padding ({side}) is {pad}; at most dilation*(kernel-1) = {span - 1} "
                             f"(it must be smaller than the kernel's extent {span})")
    return [(size - span) // s + 1 for size, span, s in zip(padded, spans, stride)]


@_op("conv2d")
def conv2d(x_q, x_scale, x_zp, w_q, w_scale, bias, out_scale, out_zp, stride=1, padding=0, dilation=1, groups=1,
           relu=False, relu6=False, *, isa=None):
    """uint8 NCHW y = requantize(conv2d(x_q, w_q) + bias), PyTorch's quantized conv arguments.

    w_q is (OC, IC/groups, KH, KW) int8 or a PackedConv2d; w_scale one float or OC floats; padding
    an int, (ph, pw) or (top, left, bottom, right), filled with the input zero point, each side at
    most dilation * (kernel - 1).
    """
    groups = _groups(groups)
    isa = _isa(isa)
    if isinstance(w_q, PackedConv2d):
        if isa and isa != w_q.isa:
            raise ValueError(f"w_q was packed for isa {w_q.isa!r}, not {isa!r}")
        if w_q.groups != groups:
            raise ValueError(f"w_q was packed with groups={w_q.groups}, not groups={groups}")
        oc, icg, (kh, kw) = w_q.out_channels, w_q.in_channels_per_group, w_q.kernel_size
    else:
        oc, icg, kh, kw = _conv_weight_shape(w_q, groups)
    x_q = _checks.array(x_q, "x_q", np.uint8, ndim=4)
    n, c, h, w = x_q.shape
    if c != icg * groups:
        raise ValueError(f"x_q has {c} channels; w_q with groups={groups} expects {icg * groups}")
    if h == 0 or w == 0:
        raise ValueError(f"x_q must have a spatial size of at least 1x1, got {x_q.shape}")
    sh, sw = _pair(stride, "stride")
    dh, dw = _pair(dilation, "dilation")
    pads = _padding(padding)
    oh, ow = _conv_output_hw(h, w, (kh, kw), (sh, sw), (dh, dw), pads)
    act = _activation(relu, relu6)
    s_x, zp_x, s_y, zp_y = _qparams(x_scale, x_zp, out_scale, out_zp)
    ws = _checks.scales(w_scale, "w_scale", oc)
    b = _checks.bias(bias, "bias", oc)
    _checks.output((n, oc, oh, ow), np.uint8)
    packed = w_q if isinstance(w_q, PackedConv2d) else _packed_conv(w_q, groups, isa, ((sh, sw), (dh, dw)))
    # NHWC inside; an NCHW view of NHWC memory (what conv2d returns) goes in without a copy.
    x_nhwc = _checks.contiguous(x_q.transpose(0, 2, 3, 1))
    y = _core.conv2d(x_nhwc, s_x, zp_x, packed, _checks.float32(ws), _checks.float32(b), s_y, zp_y, act, [sh, sw],
                     pads, [dh, dw])
    return y.transpose(0, 3, 1, 2)  # NCHW indexing over NHWC memory, like torch's channels_last
