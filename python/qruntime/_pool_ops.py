"""numpy front of the pooling and elementwise ops: max/avg/adaptive pooling, add, concat, lut.

Arrays are NCHW at this boundary, as in PyTorch; the C++ ops run on NHWC (the engine's layout), so
the ops whose result depends on the layout (pooling, per-channel add) convert here and only here.
Elementwise ops and concat give the same bytes in either layout and run on the array as given.
Every op checks all its shapes and arguments (limits in _limits.py) before it copies or converts
an array. The rounding of every op is specified in docs/quantization.md.
"""
import math
import numbers

import numpy as np

from . import _checks, _core, _limits

__all__ = ["max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "add", "concat", "lut", "make_lut"]


_op = _checks.op
_AXES = ("height", "width")


def _nchw_input(x, name):
    """An NCHW uint8 input of spatial size >= 1x1, checked without a copy."""
    x = _checks.array(x, name, np.uint8, ndim=4)
    if x.shape[2] == 0 or x.shape[3] == 0:
        raise ValueError(f"{name} must have a spatial size (H, W) of at least (1, 1), got shape {x.shape}")
    return x


def _nhwc(x):
    return _checks.contiguous(x.transpose(0, 2, 3, 1))


def _to_nchw(y):
    return np.ascontiguousarray(y.transpose(0, 3, 1, 2))


def _out_qparams(x_scale, x_zp, out_scale, out_zp):
    s = _checks.scale(x_scale, "x_scale")
    zp = _checks.zero_point(x_zp, "x_zp")
    s_out = s if out_scale is None else _checks.scale(out_scale, "out_scale")
    zp_out = zp if out_zp is None else _checks.zero_point(out_zp, "out_zp")
    return s, zp, s_out, zp_out


def _stride(stride, kernel):
    if stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0):
        return kernel  # torch: stride defaults to kernel_size
    return _checks.int_pair(stride, "stride", 1)


def _pooled_extent(size, k, s, p, d, ceil_mode):
    """torch's pooling_output_shape for one axis, in Python ints (floor division of negatives too)."""
    out = (size + 2 * p - d * (k - 1) - 1 + (s - 1 if ceil_mode else 0)) // s + 1
    if ceil_mode and out > 0 and (out - 1) * s >= size + p:
        out -= 1  # the last window must start inside the input or its left padding
    return out


def _pooled_shape(x, k, s, p, d, ceil_mode):
    """(N, C, OH, OW) of a max or average pool of NCHW x: each padding at most half the kernel, then
    the (dilated) kernel within the padded input (the C++ checks' order)."""
    for axis in range(2):
        if p[axis] > k[axis] // 2:
            raise ValueError(f"padding ({_AXES[axis]}) is {p[axis]}; at most kernel_size//2 = {k[axis] // 2} "
                             f"(kernel_size {k[axis]})")
    out = [_pooled_extent(x.shape[2 + axis], k[axis], s[axis], p[axis], d[axis], ceil_mode) for axis in range(2)]
    for axis in range(2):
        if out[axis] < 1:
            raise ValueError(f"kernel_size ({_AXES[axis]}) {k[axis]} (dilation {d[axis]}) is larger than the "
                             f"padded input {x.shape[2 + axis] + 2 * p[axis]}: the output would be {out[axis]}")
    return (x.shape[0], x.shape[1], *out)


def _window_area(kh, kw, what):
    """An average's window of kh x kw uint8 values: its int32 sum cannot overflow."""
    if kh * kw > _limits.MAX_POOL_WINDOW_AREA:
        raise ValueError(f"{what} makes windows of {kh} x {kw} = {kh * kw} elements; at most "
                         f"{_limits.MAX_POOL_WINDOW_AREA} (int32 sums of uint8 values)")


@_op("max_pool2d")
def max_pool2d(x_q, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    """uint8 NCHW max pooling with torch.nn.functional.max_pool2d's arguments and output shape.

    Padded positions are ignored (never the maximum); the output keeps x_q's scale and zero point.
    """
    x = _nchw_input(x_q, "x_q")
    k = _checks.int_pair(kernel_size, "kernel_size", 1)
    s = _stride(stride, k)
    p = _checks.int_pair(padding, "padding", 0)
    d = _checks.int_pair(dilation, "dilation", 1)
    ceil_mode = _checks.flag(ceil_mode, "ceil_mode")
    _checks.output(_pooled_shape(x, k, s, p, d, ceil_mode), np.uint8)
    return _to_nchw(_core.max_pool2d(_nhwc(x), k, s, p, d, ceil_mode))


@_op("avg_pool2d")
def avg_pool2d(x_q, x_scale, x_zp, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None, out_scale=None, out_zp=None):
    """uint8 NCHW average pooling with torch.nn.functional.avg_pool2d's arguments and output shape.

    The output quantization defaults to the input's (as in PyTorch); docs/quantization.md gives the
    rounding: y = clamp(round_half_even(float32(sum - count * x_zp) * m + out_zp), 0, 255).
    """
    x = _nchw_input(x_q, "x_q")
    s_x, zp_x, s_y, zp_y = _out_qparams(x_scale, x_zp, out_scale, out_zp)
    k = _checks.int_pair(kernel_size, "kernel_size", 1)
    s = _stride(stride, k)
    p = _checks.int_pair(padding, "padding", 0)
    ceil_mode = _checks.flag(ceil_mode, "ceil_mode")
    count_include_pad = _checks.flag(count_include_pad, "count_include_pad")
    divisor = 0  # none
    if divisor_override is not None:
        divisor = _checks.int_arg(divisor_override, "divisor_override", 1, "an int or None")
    _window_area(*k, f"kernel_size {k}")
    _checks.output(_pooled_shape(x, k, s, p, (1, 1), ceil_mode), np.uint8)
    return _to_nchw(_core.avg_pool2d(_nhwc(x), s_x, zp_x, k, s, p, ceil_mode, count_include_pad, divisor, s_y, zp_y))


def _adaptive_extent(size, out):
    """The longest window of an adaptive pool from size to out along one axis: window i spans
    [floor(i*size/out), ceil((i+1)*size/out)); the largest fractional start, 1 - gcd/out, gives
    ceil((size + out - gcd) / out), capped at size."""
    return min(-(-(size + out - math.gcd(size, out)) // out), size)


@_op("adaptive_avg_pool2d")
def adaptive_avg_pool2d(x_q, x_scale, x_zp, output_size, out_scale=None, out_zp=None):
    """uint8 NCHW adaptive average pooling to output_size (an int, or a pair whose None keeps that input size).

    Output i averages input rows floor(i * H / OH) .. ceil((i + 1) * H / OH) - 1, as in PyTorch; any
    output size, smaller or larger than the input.
    """
    x = _nchw_input(x_q, "x_q")
    s_x, zp_x, s_y, zp_y = _out_qparams(x_scale, x_zp, out_scale, out_zp)
    if isinstance(output_size, (tuple, list)) and len(output_size) == 2:
        size = tuple(x.shape[2 + i] if v is None else v for i, v in enumerate(output_size))
    else:
        size = output_size
    oh, ow = _checks.int_pair(size, "output_size", 1)
    _window_area(_adaptive_extent(x.shape[2], oh), _adaptive_extent(x.shape[3], ow), f"output_size {(oh, ow)}")
    _checks.output((x.shape[0], x.shape[1], oh, ow), np.uint8)
    return _to_nchw(_core.adaptive_avg_pool2d(_nhwc(x), s_x, zp_x, (oh, ow), s_y, zp_y))


def _is_per_channel(a_shape, b_shape):
    if len(a_shape) < 2:
        return False
    c = a_shape[1]
    return b_shape == (c,) or b_shape == (1, c) + (1,) * (len(a_shape) - 2)


@_op("add")
def add(a, a_scale, a_zp, b, b_scale, b_zp, out_scale, out_zp, relu=False, *, isa=None):
    """uint8 y = requantized a + b (torch.ops.quantized.add / add_relu); y has a's shape.

    isa= runs a particular ISA path's add (default: the active one; b of a's shape only, the
    broadcasts are plain C++ on every path). b has a's shape, or holds one value per channel (axis 1 of a): shape (1, C, 1, 1) or (C,) for
    an NCHW a (a 1-D b of length C is always per channel here, not numpy's broadcast over the last
    axis), or one value (shape (1,) or ()). docs/quantization.md gives the formula.
    """
    a = _checks.array(a, "a", np.uint8)
    b = _checks.array(b, "b", np.uint8)
    args = (
        _checks.scale(a_scale, "a_scale"), _checks.zero_point(a_zp, "a_zp"),
        _checks.scale(b_scale, "b_scale"), _checks.zero_point(b_zp, "b_zp"),
        _checks.scale(out_scale, "out_scale"), _checks.zero_point(out_zp, "out_zp"),
    )
    relu = _checks.flag(relu, "relu")
    isa = _checks.isa(isa)
    sa, za, sb, zb, sy, zy = args
    same = b.shape == a.shape
    scalar = not same and b.size == 1 and b.ndim <= a.ndim
    if not (same or scalar or _is_per_channel(a.shape, b.shape)):
        raise ValueError(
            f"b must have a's shape {a.shape}, one value per channel (shape (1, C, 1, 1) or (C,) with "
            f"C = a.shape[1]) or one value; got shape {b.shape}"
        )
    _checks.output(a.shape, np.uint8)
    if same:
        return _core.add(_checks.contiguous(a), sa, za, _checks.contiguous(b), sb, zb, sy, zy, relu, False, isa)
    if scalar:
        return _core.add(_checks.contiguous(a), sa, za, b.reshape(1), sb, zb, sy, zy, relu, False)
    # Per channel: channels last for the C++ op, whose per-channel loop runs over the innermost axis.
    a_cl = np.ascontiguousarray(np.moveaxis(a, 1, -1))
    y = _core.add(a_cl, sa, za, np.ascontiguousarray(b.reshape(-1)), sb, zb, sy, zy, relu, True)
    return np.ascontiguousarray(np.moveaxis(y, -1, 1))


def _per_input(values, name, count, check):
    if isinstance(values, np.ndarray):
        if values.ndim != 1:
            raise ValueError(f"{name} must be 1-D, got shape {values.shape}")
        values = values.tolist()
    if not isinstance(values, (list, tuple)):
        raise TypeError(f"{name} must be a list or tuple with one value per array, got {type(values).__name__}")
    if len(values) != count:
        raise ValueError(f"{name} must hold {count} values (one per array), got {len(values)}")
    return [check(v, f"{name}[{i}]") for i, v in enumerate(values)]


@_op("concat")
def concat(arrays, scales, zps, out_scale, out_zp, axis=1, *, isa=None):
    """uint8 concatenation along `axis` (torch.ops.quantized.cat), each input requantized to
    (out_scale, out_zp); an input already in that quantization is copied unchanged. isa= runs a
    particular ISA path's requantizing copy (a table lookup; default: the active one)."""
    if not isinstance(arrays, (list, tuple)):
        raise TypeError(f"arrays must be a list or tuple of numpy uint8 arrays, got {type(arrays).__name__}")
    if len(arrays) == 0:
        raise ValueError("arrays must not be empty")
    arrs = [_checks.array(a, f"arrays[{i}]", np.uint8) for i, a in enumerate(arrays)]
    sc = _per_input(scales, "scales", len(arrs), _checks.scale)
    zp = _per_input(zps, "zps", len(arrs), _checks.zero_point)
    s_y = _checks.scale(out_scale, "out_scale")
    zp_y = _checks.zero_point(out_zp, "out_zp")
    ndim = arrs[0].ndim
    if ndim == 0:
        raise ValueError("arrays[0] must have at least one dimension to concatenate along")
    if isinstance(axis, (bool, np.bool_)) or not isinstance(axis, numbers.Integral):
        raise TypeError(f"axis must be an int, got {type(axis).__name__}")
    if not -ndim <= axis < ndim:
        raise ValueError(f"axis must be in [{-ndim}, {ndim}) for {ndim}-D arrays, got {axis}")
    axis = int(axis) % ndim
    first = arrs[0].shape
    for i, a in enumerate(arrs[1:], start=1):
        if a.ndim != ndim or a.shape[:axis] != first[:axis] or a.shape[axis + 1:] != first[axis + 1:]:
            raise ValueError(
                f"arrays[{i}] has shape {a.shape}, which does not match arrays[0]'s {first} except along axis {axis}"
            )
    shape = first[:axis] + (sum(a.shape[axis] for a in arrs),) + first[axis + 1:]
    _checks.output(shape, np.uint8)
    outer = math.prod(first[:axis])
    isa = _checks.isa(isa)
    return _core.concat([_checks.contiguous(a) for a in arrs], outer, sc, zp, s_y, zp_y, isa).reshape(shape)


@_op("lut")
def lut(x_q, table, *, isa=None):
    """uint8 y = table[x_q], elementwise, for a table of 256 uint8 values (see make_lut).

    isa= runs a particular ISA path's lookup (default: the active one)."""
    x = _checks.array(x_q, "x_q", np.uint8)
    isa = _checks.isa(isa)
    t = _checks.array(table, "table", np.uint8)
    if t.shape != (256,):
        raise ValueError(f"table must hold 256 uint8 values (shape (256,)), got shape {t.shape}")
    _checks.output(x.shape, np.uint8)
    return _core.lut(_checks.contiguous(x), _checks.contiguous(t), isa)


@_op("make_lut")
def make_lut(fn, in_scale, in_zp, out_scale, out_zp):
    """The 256-entry table of a unary function on quantized values, for lut():

    table[q] = clamp(round_half_even(fn(in_scale * (q - in_zp)) / out_scale) + out_zp, 0, 255),
    in float64 (the scales rounded to float32 first). fn takes and returns a numpy float64 array
    (np.tanh, a sigmoid, hardswish, GELU, SiLU, ...); its values must be finite.
    """
    if not callable(fn):
        raise TypeError(f"fn must be callable (a numpy-vectorised function), got {type(fn).__name__}")
    s_in = float(np.float32(_checks.scale(in_scale, "in_scale")))
    zp_in = _checks.zero_point(in_zp, "in_zp")
    s_out = float(np.float32(_checks.scale(out_scale, "out_scale")))
    zp_out = _checks.zero_point(out_zp, "out_zp")
    x = s_in * (np.arange(256, dtype=np.float64) - zp_in)
    with np.errstate(all="ignore"):  # a non-finite result is rejected below, by name
        raw = fn(x)
    try:
        y = np.asarray(raw, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise TypeError(f"fn must return an array of 256 real numbers, got {type(raw).__name__}") from e
    if y.shape != (256,):
        raise ValueError(f"fn must return 256 values (one per input code), got shape {y.shape}")
    if not np.all(np.isfinite(y)):
        raise ValueError("fn returned NaN or inf, which cannot be quantized")
    with np.errstate(over="ignore"):
        q = np.rint(y / s_out) + zp_out
    return np.clip(q, 0, 255).astype(np.uint8)
