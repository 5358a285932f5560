"""numpy reference of every quantized op and of whole graphs: the oracle the C++ kernels and engine equal.

Each function is docs/quantization.md written as float64 numpy, NCHW, with every float32 step of the
spec done as an exact float64 operation rounded once to float32. It shares no code with the C++
loops: pooling sums shifted strided slices of a padded copy instead of walking windows, conv unfolds
the padded input. `run_op` runs one op of a quantized graph (docs/format.md) with them, and `run_graph`
interprets a whole graph op by op through it.
"""
import math

import numpy as np

F32 = np.float32


def quantize(x, scale, zp):
    """q = clamp(round_half_even(x / scale) + zp, 0, 255), the division in float32."""
    v = np.asarray(x, dtype=F32) / F32(scale)
    return np.clip(np.rint(v.astype(np.float64)) + zp, 0, 255).astype(np.uint8)


def dequantize(q, scale, zp):
    return ((q.astype(np.int32) - zp).astype(F32) * F32(scale)).astype(F32)


def gemm(a, b):
    """Exact int64 A . B^T."""
    return a.astype(np.int64) @ b.astype(np.int64).T


def linear(x_q, x_scale, x_zp, w_q, w_scale, bias, out_scale, out_zp, act="none"):
    """The requantized linear layer, every step as the spec words it (float32 where it says so)."""
    n, k = w_q.shape
    sx, sy = float(F32(x_scale)), float(F32(out_scale))
    sw = np.broadcast_to(np.asarray(w_scale, dtype=F32), (n,)).astype(np.float64)
    acc_scale = sx * sw
    mult = (acc_scale / sy).astype(F32)
    if bias is None:
        bq = np.zeros(n)
    else:
        limit = 2147483647.0 - 255.0 * 127.0 * k
        bq = np.clip(np.rint(np.asarray(bias, dtype=F32).astype(np.float64) / acc_scale), -limit, limit)
    acc = gemm(x_q, w_q) - x_zp * w_q.astype(np.int64).sum(axis=1) + bq.astype(np.int64)
    assert np.all(np.abs(acc) < 2**31), "the spec keeps every accumulator in int32"
    v = (acc.astype(F32).astype(np.float64) * mult.astype(np.float64)).astype(F32)  # one float32 product
    lo = out_zp if act in ("relu", "relu6") else 0
    hi = min(255, out_zp + int(np.rint(6.0 / sy))) if act == "relu6" else 255
    v = np.clip(v.astype(np.float64), lo - out_zp, hi - out_zp)
    return (np.rint(v) + out_zp).astype(np.uint8)


def _pads(padding):
    if np.ndim(padding) == 0:
        return (padding,) * 4
    return tuple(padding) * 2 if len(padding) == 2 else tuple(padding)


def conv2d(x_q, x_scale, x_zp, w_q, w_scale, bias, out_scale, out_zp, stride=1, padding=0, dilation=1, groups=1,
           act="none"):
    """The requantized conv: the exact integer convolution (padding holds x_zp, i.e. real zero),
    then the same per-channel requantization as linear."""
    sh, sw = (stride, stride) if np.ndim(stride) == 0 else stride
    dh, dw = (dilation, dilation) if np.ndim(dilation) == 0 else dilation
    pt, pl, pb, pr = _pads(padding)
    n, c, h, w = x_q.shape
    oc, icg, kh, kw = w_q.shape
    xp = np.full((n, c, h + pt + pb, w + pl + pr), x_zp, dtype=np.int64)
    xp[:, :, pt:pt + h, pl:pl + w] = x_q
    oh = (h + pt + pb - dh * (kh - 1) - 1) // sh + 1
    ow = (w + pl + pr - dw * (kw - 1) - 1) // sw + 1
    ocg = oc // groups
    out = np.empty((n, oc, oh, ow), np.uint8)
    for g in range(groups):
        # Unfold: rows are output pixels, columns (ic, ky, kx) like torch's weight layout.
        cols = np.empty((n, oh, ow, icg, kh, kw), np.int64)
        for ky in range(kh):
            for kx in range(kw):
                patch = xp[:, g * icg:(g + 1) * icg, ky * dh:ky * dh + sh * (oh - 1) + 1:sh,
                           kx * dw:kx * dw + sw * (ow - 1) + 1:sw]
                cols[..., ky, kx] = patch.transpose(0, 2, 3, 1)
        a = cols.reshape(n * oh * ow, icg * kh * kw)
        wg = w_q[g * ocg:(g + 1) * ocg].reshape(ocg, -1)
        sw_g = np.broadcast_to(np.asarray(w_scale, np.float32), (oc,))[g * ocg:(g + 1) * ocg]
        bias_g = None if bias is None else np.asarray(bias)[g * ocg:(g + 1) * ocg]
        # The zero point is already real zero in the padding; linear() subtracts zp * colsum from
        # the raw products, so hand it the unfolded uint8 rows.
        y = linear(a.astype(np.uint8), x_scale, x_zp, wg, sw_g, bias_g, out_scale, out_zp, act)
        out[:, g * ocg:(g + 1) * ocg] = y.reshape(n, oh, ow, ocg).transpose(0, 3, 1, 2)
    return out


F64 = np.float64


def _f32(x):
    return float(F32(x))


def _pair(v):
    return (v, v) if np.isscalar(v) else (v[0], v[-1])


def out_size(n, k, s, p, d, ceil_mode):
    """PyTorch's pooling_output_shape."""
    num = n + 2 * p - d * (k - 1) - 1
    o = (-(-num // s) if ceil_mode else num // s) + 1
    if ceil_mode and (o - 1) * s >= n + p:
        o -= 1
    return o


def _windows(x, fill, k, s, p, d, ceil_mode):
    """Yields, per kernel offset, the (N, C, OH, OW) slice of x padded with `fill` (int64)."""
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = k, s, p, d
    oh, ow = out_size(h, kh, sh, ph, dh, ceil_mode), out_size(w, kw, sw, pw, dw, ceil_mode)
    assert oh >= 1 and ow >= 1
    # Enough padding after the input for the last window of ceil mode.
    pb = max(0, (oh - 1) * sh + dh * (kh - 1) - ph - (h - 1))
    pr = max(0, (ow - 1) * sw + dw * (kw - 1) - pw - (w - 1))
    xp = np.full((n, c, ph + h + pb, pw + w + pr), fill, dtype=np.int64)
    xp[:, :, ph:ph + h, pw:pw + w] = x
    for i in range(kh):
        for j in range(kw):
            yield xp[:, :, i * dh: i * dh + (oh - 1) * sh + 1: sh, j * dw: j * dw + (ow - 1) * sw + 1: sw]


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    k = _pair(kernel_size)
    s = k if stride is None else _pair(stride)
    best = None
    for win in _windows(x, -1, k, s, _pair(padding), _pair(dilation), ceil_mode):
        best = win.copy() if best is None else np.maximum(best, win)
    return np.maximum(best, 0).astype(np.uint8)  # an all-padding window gives code 0


def _average_out(acc, d, x_scale, out_scale, out_zp):
    """y = clamp(round_half_even(float32(float32(acc) * m) + float32(zp_y)), 0, 255)."""
    m = (F64(_f32(x_scale)) / F64(_f32(out_scale)) / np.asarray(d, dtype=F64)).astype(F32)
    v = (np.asarray(acc).astype(F32).astype(F64) * m.astype(F64)).astype(F32)  # one float32 product
    v = v + F32(out_zp)  # float32 + float32
    return np.clip(np.rint(v.astype(F64)), 0, 255).astype(np.uint8)


def avg_pool2d(x, x_scale, x_zp, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None, out_scale=None, out_zp=None):
    out_scale = x_scale if out_scale is None else out_scale
    out_zp = x_zp if out_zp is None else out_zp
    k = _pair(kernel_size)
    s = k if stride is None else _pair(stride)
    p = _pair(padding)
    ones = np.ones(x.shape, dtype=np.int64)
    total = sum(_windows(x, 0, k, s, p, (1, 1), ceil_mode))
    count = sum(_windows(ones, 0, k, s, p, (1, 1), ceil_mode))
    n, c, h, w = x.shape
    oh, ow = total.shape[2:]
    if divisor_override is not None:
        d = np.full((oh, ow), divisor_override)
    elif count_include_pad:
        # The window clipped to the padded input, per dimension.
        sz_h = np.minimum(np.arange(oh) * s[0] - p[0] + k[0], h + p[0]) - (np.arange(oh) * s[0] - p[0])
        sz_w = np.minimum(np.arange(ow) * s[1] - p[1] + k[1], w + p[1]) - (np.arange(ow) * s[1] - p[1])
        d = np.outer(sz_h, sz_w)
    else:
        d = count
    assert np.all(count > 0)
    return _average_out(total - count * x_zp, np.broadcast_to(d, total.shape), x_scale, out_scale, out_zp)


def adaptive_avg_pool2d(x, x_scale, x_zp, output_size, out_scale=None, out_zp=None):
    out_scale = x_scale if out_scale is None else out_scale
    out_zp = x_zp if out_zp is None else out_zp
    n, c, h, w = x.shape
    oh, ow = _pair(output_size)
    acc = np.zeros((n, c, oh, ow), dtype=np.int64)
    d = np.zeros((oh, ow), dtype=np.int64)
    xi = x.astype(np.int64)
    for i in range(oh):
        hs, he = (i * h) // oh, -((-(i + 1) * h) // oh)
        for j in range(ow):
            ws, we = (j * w) // ow, -((-(j + 1) * w) // ow)
            cnt = (he - hs) * (we - ws)
            acc[:, :, i, j] = xi[:, :, hs:he, ws:we].sum(axis=(2, 3)) - cnt * x_zp
            d[i, j] = cnt
    return _average_out(acc, np.broadcast_to(d, acc.shape), x_scale, out_scale, out_zp)


def _axis_scale(n_in, n_out, align_corners, scale_factor):
    """torch's area_pixel_compute_scale in float32: input pixels per output pixel."""
    if align_corners:
        return F32(n_in - 1) / F32(n_out - 1) if n_out > 1 else F32(0)
    return F32(1.0 / scale_factor) if scale_factor > 0 else F32(n_in) / F32(n_out)


def resize_extent(n_in, scale_factor):
    """The output size for a scale factor, as torch: int64(double(in) * scale_factor)."""
    return int(float(n_in) * scale_factor)


def nearest_source(n_in, n_out, scale_factor):
    """The input index each output index reads: torch's nearest_idx (its exact shortcuts, then float32)."""
    if n_out == n_in:
        return np.arange(n_out)
    if n_out == 2 * n_in:
        return np.arange(n_out) // 2
    src = np.arange(n_out).astype(F32) * _axis_scale(n_in, n_out, False, scale_factor)
    return np.minimum(np.floor(src).astype(np.int64), n_in - 1)


def linear_taps(n_in, n_out, align_corners, scale_factor):
    """(i0, i1, w1) per output index: the two inputs it reads and the second one's 11-bit weight."""
    if n_out == n_in:
        return np.arange(n_out), np.arange(n_out), np.zeros(n_out, np.int64)
    scale = _axis_scale(n_in, n_out, align_corners, scale_factor)
    at = np.arange(n_out).astype(F32)
    src = scale * at if align_corners else np.maximum(scale * (at + F32(0.5)) - F32(0.5), F32(0))
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    lam = np.clip(src - i0.astype(F32), F32(0), F32(1))
    w1 = np.rint(lam.astype(F64) * 2048.0).astype(np.int64)  # lam * 2^11 is exact
    return i0, i0 + (i0 < n_in - 1), w1


def resize(x, size, mode, align_corners=False, scale_factors=(0.0, 0.0)):
    """docs/quantization.md "resize": codes copied (nearest) or interpolated with 11-bit weights and one
    rounding, half up (bilinear). size (oh, ow); scale_factors only shape the source index, as in torch."""
    (oh, ow), (fh, fw) = size, scale_factors
    n, c, h, w = x.shape
    y = np.empty((n, c, oh, ow), np.uint8)  # first: a size past the memory fails here, before its index tables
    if mode == "nearest":
        y[...] = x[:, :, nearest_source(h, oh, fh)][:, :, :, nearest_source(w, ow, fw)]
        return y
    y0, y1, wy = linear_taps(h, oh, align_corners, fh)
    x0, x1, wx = linear_taps(w, ow, align_corners, fw)
    q = x.astype(np.int64)
    rows = (2048 - wy)[:, None] * q[:, :, y0] + wy[:, None] * q[:, :, y1]  # (N, C, oh, w)
    acc = (2048 - wx) * rows[:, :, :, x0] + wx * rows[:, :, :, x1]
    y[...] = (acc + (1 << 21)) >> 22
    return y


def pad(x, padding, fill_code):
    """Constant padding [top, left, bottom, right] of H and W with one code."""
    t, l, b, r = padding
    return np.pad(x, ((0, 0), (0, 0), (t, b), (l, r)), constant_values=fill_code)


def _term(q, zp, scale, out_scale):
    """float32(q - zp) * float32(s / s_y), one float32 product."""
    m = F32(F64(_f32(scale)) / F64(_f32(out_scale)))
    return (np.asarray(q, dtype=np.int64) - zp).astype(F32).astype(F64) * F64(m)


def add(a, a_scale, a_zp, b, b_scale, b_zp, out_scale, out_zp, relu=False, subtract=False):
    """b already broadcastable to a by numpy's rules (per-channel b as (1, C, 1, 1)); subtract: a - b."""
    ta = _term(a, a_zp, a_scale, out_scale).astype(F32)
    tb = _term(b, b_zp, b_scale, out_scale).astype(F32) * F32(-1.0 if subtract else 1.0)
    v = (ta.astype(F64) + tb.astype(F64)).astype(F32)  # one float32 add
    lo = (out_zp if relu else 0) - out_zp
    v = np.clip(v.astype(F64), lo, 255 - out_zp)
    return (np.rint(v) + out_zp).astype(np.uint8)


def mul(a, a_scale, a_zp, b, b_scale, b_zp, out_scale, out_zp):
    """docs/quantization.md "mul": the exact integer product of the centred codes, one float32 product."""
    m = F32(float(F32(a_scale)) * float(F32(b_scale)) / float(F32(out_scale)))
    prod = (a.astype(np.int64) - a_zp) * (b.astype(np.int64) - b_zp)  # broadcasts (N, C, 1, 1) over H, W
    v = np.clip((prod.astype(F32) * m).astype(np.float64), -out_zp, 255 - out_zp)
    return (np.rint(v) + out_zp).astype(np.uint8)


def layer_norm(x, x_scale, weight, bias, eps, out_scale, out_zp):
    """docs/quantization.md "layer_norm": over dim 1 of NCHW or (N, F); exact integer moments, then float64
    steps in the spec's order."""
    c = x.shape[1]
    q = np.moveaxis(x.astype(np.int64), 1, -1)  # (..., C): one row per pixel
    s1 = q.sum(axis=-1, keepdims=True)
    s2 = (q * q).sum(axis=-1, keepdims=True)
    sx, sy, count = float(F32(x_scale)), float(F32(out_scale)), float(c)
    var = (c * s2 - s1 * s1).astype(np.float64) / (count * count) * (sx * sx)
    a = sx * (1.0 / np.sqrt(var + eps)) / count / sy
    shift = np.asarray(bias, F32).astype(np.float64) / sy + out_zp
    t = (c * q - s1).astype(np.float64) * a * np.asarray(weight, F32).astype(np.float64) + shift
    return np.moveaxis(np.rint(np.clip(t, 0.0, 255.0)).astype(np.uint8), -1, 1)


def group_norm(x, x_scale, weight, bias, eps, groups, out_scale, out_zp):
    """docs/quantization.md "group_norm": exact integer sums per (image, group), then float64 steps in order."""
    n, c, h, w = x.shape
    q = x.astype(np.int64).reshape(n, groups, -1)
    count = float(q.shape[2])
    s1 = q.sum(axis=2, keepdims=True)
    s2 = (q * q).sum(axis=2, keepdims=True)
    sx, sy = float(F32(x_scale)), float(F32(out_scale))
    mean = s1.astype(F64) / count
    var = np.maximum(s2.astype(F64) / count - mean * mean, 0.0)
    a = (sx / np.sqrt(var * (sx * sx) + eps) / sy).reshape(n, groups, 1, 1, 1)
    mean = mean.reshape(n, groups, 1, 1, 1)
    qg = q.reshape(n, groups, c // groups, h, w).astype(F64)
    gamma = np.asarray(weight, F32).astype(F64).reshape(1, groups, c // groups, 1, 1)
    shift = (np.asarray(bias, F32).astype(F64) / sy + out_zp).reshape(1, groups, c // groups, 1, 1)
    t = (qg - mean) * a * gamma + shift
    return np.rint(np.clip(t, 0.0, 255.0)).astype(np.uint8).reshape(n, c, h, w)


def reduce(x, x_scale, x_zp, dims, keepdim, mode, out_scale, out_zp):
    """docs/quantization.md "reduce": over NCHW `dims`, the int64 sum of the codes minus the zero point, then
    float64 steps left to right: acc * (s_x / s_y) / d + zp_y, d the count for a mean (1 for a sum)."""
    dims = tuple(dims)
    count = math.prod(x.shape[d] for d in dims)
    acc = x.astype(np.int64).sum(axis=dims, keepdims=keepdim) - count * x_zp
    ratio = F64(_f32(x_scale)) / F64(_f32(out_scale))
    v = acc.astype(F64) * ratio / F64(count if mode == "mean" else 1) + F64(out_zp)
    return np.rint(np.clip(v, 0.0, 255.0)).astype(np.uint8)


def requantize(q, scale, zp, out_scale, out_zp):
    if _f32(scale) == _f32(out_scale) and zp == out_zp:
        return q.copy()
    v = _term(q, zp, scale, out_scale).astype(F32).astype(F64)
    v = np.clip(v, -out_zp, 255 - out_zp)
    return (np.rint(v) + out_zp).astype(np.uint8)


def concat(arrays, scales, zps, out_scale, out_zp, axis=1):
    return np.concatenate([requantize(a, s, z, out_scale, out_zp) for a, s, z in zip(arrays, scales, zps)], axis=axis)


def make_lut(fn, in_scale, in_zp, out_scale, out_zp):
    """One code at a time with Python floats (float64), as docs/quantization.md words it."""
    si, so = _f32(in_scale), _f32(out_scale)
    table = []
    for q in range(256):
        y = float(fn(np.array([si * (q - in_zp)]))[0])
        table.append(min(255, max(0, round(y / so) + out_zp)))  # Python's round is half to even
    return np.array(table, dtype=np.uint8)


def _act(v, act):
    if act in ("relu", "relu6"):
        v = np.maximum(v, 0)
    return np.minimum(v, 6) if act == "relu6" else v


def conv2d_float(x, w, bias, stride, padding, dilation, groups, act="none"):
    """float32 conv (zero padding), summed in float64: the engine's float32 sums differ by rounding."""
    sh, sw = stride
    dh, dw = dilation
    pt, pl, pb, pr = padding
    n, c, h, wd = x.shape
    oc, icg, kh, kw = w.shape
    xp = np.zeros((n, c, h + pt + pb, wd + pl + pr))
    xp[:, :, pt:pt + h, pl:pl + wd] = x
    oh = (h + pt + pb - dh * (kh - 1) - 1) // sh + 1
    ow = (wd + pl + pr - dw * (kw - 1) - 1) // sw + 1
    ocg = oc // groups
    y = np.zeros((n, oc, oh, ow))
    for g in range(groups):
        xs = xp[:, g * icg:(g + 1) * icg]
        for ky in range(kh):
            for kx in range(kw):
                patch = xs[:, :, ky * dh:ky * dh + sh * (oh - 1) + 1:sh, kx * dw:kx * dw + sw * (ow - 1) + 1:sw]
                y[:, g * ocg:(g + 1) * ocg] += np.einsum("nchw,oc->nohw", patch, w[g * ocg:(g + 1) * ocg, :, ky, kx])
    if bias is not None:
        y += np.asarray(bias, F64)[None, :, None, None]
    return _act(y, act).astype(F32)


def linear_float(x, w, bias, act="none"):
    y = np.asarray(x, F64) @ np.asarray(w, F64).T
    if bias is not None:
        y += np.asarray(bias, F64)
    return _act(y, act).astype(F32)


def softmax(x, dim, log=False):
    x = np.asarray(x, F64)
    v = x - x.max(axis=dim, keepdims=True)
    lse = np.log(np.exp(v).sum(axis=dim, keepdims=True))
    return (v - lse if log else np.exp(v - lse)).astype(F32)


_ERF = np.vectorize(math.erf, otypes=[F64])
UNARY_FLOAT = {
    "relu": lambda v, a, b: np.maximum(v, 0.0),
    "relu6": lambda v, a, b: np.clip(v, 0.0, 6.0),
    "hardtanh": lambda v, a, b: np.minimum(np.maximum(v, a), b),
    "leaky_relu": lambda v, a, b: np.where(v >= 0.0, v, v * a),
    "scale_shift": lambda v, a, b: v * a + b,
    "sigmoid": lambda v, a, b: 1.0 / (1.0 + np.exp(-v)),
    "tanh": lambda v, a, b: np.tanh(v),
    "hardswish": lambda v, a, b: v * np.clip(v + 3.0, 0.0, 6.0) / 6.0,
    "hardsigmoid": lambda v, a, b: np.clip(v + 3.0, 0.0, 6.0) / 6.0,
    "silu": lambda v, a, b: v / (1.0 + np.exp(-v)),
    "gelu": lambda v, a, b: 0.5 * v * (1.0 + _ERF(v / math.sqrt(2.0))),
    "gelu_tanh": lambda v, a, b: 0.5 * v * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (v + 0.044715 * v ** 3))),
}


def unary_float(x, fn, a, b):
    """fn in float64 on float32 values, rounded once to float32 (the engine's double steps, up to libm)."""
    with np.errstate(over="ignore"):
        return UNARY_FLOAT[fn](np.asarray(x, F64), a, b).astype(F32)


def binary_float(a, b, fn):
    """float32 a + b, a - b or a * b; b may be (N, C, 1, 1) against a's (N, C, H, W) (either order for mul)."""
    a, b = np.asarray(a, F32), np.asarray(b, F32)
    with np.errstate(over="ignore", invalid="ignore"):
        return {"add": np.add, "sub": np.subtract, "mul": np.multiply}[fn](a, b).astype(F32)


def layer_norm_float(x, weight, bias, eps):
    """LayerNorm over dim 1 (the last dim of a (N, S, F) value) in float64, rounded once to float32."""
    axis = -1 if np.ndim(x) == 3 else 1
    v = np.moveaxis(np.asarray(x, F64), axis, -1)
    mean = v.mean(axis=-1, keepdims=True)
    var = ((v - mean) ** 2).mean(axis=-1, keepdims=True)
    y = (v - mean) / np.sqrt(var + eps) * np.asarray(weight, F64) + np.asarray(bias, F64)
    return np.moveaxis(y.astype(F32), -1, axis)


# --- transformer encoders (docs/quantization.md, "Transformer encoders"): every step a float32 op ---------

_ERF_P = [F32(c) for c in (-2.72614225801306e-10, 2.77068142495902e-08, -2.10102402082508e-06,
                           -5.69250639462346e-05, -7.34990630326855e-04, -2.95459980854025e-03,
                           -1.60960333262415e-02)]
_ERF_Q = [F32(c) for c in (-1.45660718464996e-05, -2.13374055278905e-04, -1.68282697438203e-03,
                           -7.37332916720468e-03, -1.42647390514189e-02)]
_EXP_C = [F32(c) for c in (1 / 720, 1 / 120, 1 / 24, 1 / 6, 0.5, 1.0, 1.0)]
F32_LOWEST = F32(np.finfo(F32).min)


def erf_q(x):
    """The spec's rational erf, in float32 steps."""
    t = np.clip(np.asarray(x, F32), F32(-4), F32(4))
    u = t * t
    p = _ERF_P[0]
    for c in _ERF_P[1:]:
        p = p * u + c
    p = p * t
    q = _ERF_Q[0]
    for c in _ERF_Q[1:]:
        q = q * u + c
    return (p / q).astype(F32)


def exp_q(t):
    """The spec's exp for t <= 0, in float32 steps: 0 below -87."""
    t = np.asarray(t, F32)
    live = t >= F32(-87)
    tc = np.where(live, t, F32(-87)).astype(F32)
    n = np.rint(tc * F32(1.44269504))
    r = tc - n * F32(0.693359375)
    r = r - n * F32(-2.12194440e-4)
    p = _EXP_C[0]
    for c in _EXP_C[1:]:
        p = p * r + c
    return np.where(live, p * np.ldexp(F32(1), n.astype(np.int32)).astype(F32), F32(0)).astype(F32)


def quantize_rows(x, static=None):
    """Per-row (per-token) uint8 quantization: (codes, scale (rows, 1), zero point (rows, 1) float32); with
    static = (scale, zero_point), every row takes those."""
    x = np.asarray(x, F32)
    with np.errstate(all="ignore"):  # NaN and inf as the engine's selects take them: never a max, code 0
        if static is None:
            lo = np.fmin(np.fmin.reduce(x, axis=-1, keepdims=True), F32(0))
            hi = np.fmax(np.fmax.reduce(x, axis=-1, keepdims=True), F32(0))
            s = (hi - lo) / F32(255)
            s = np.where(s == 0, F32(1), s).astype(F32)
            zp = _codes(np.rint(-lo / s))
        else:
            s = np.full((x.shape[0], 1), static[0], F32)
            zp = np.full((x.shape[0], 1), static[1], F32)
        q = _codes(np.rint(x / s) + zp).astype(np.uint8)
    return q, s, zp


def _codes(v):
    """min(max(v, 0), 255) with a NaN sent to 0 (the engine's `v > 0 ? v : 0` selects)."""
    v = np.where(v > 0, v, F32(0))
    return np.where(v < 255, v, F32(255)).astype(F32)


def linear_dynamic(x, w_q, w_scale, bias, act="none", in_scale=None, x_scale=None, x_zero_point=None):
    """linear_dynamic on (..., K) float32: per-row codes (of x * in_scale; with x_scale and x_zero_point the
    static ones), the exact int GEMM, the float32 epilogue."""
    x = np.asarray(x, F32)
    if in_scale is not None:
        x = (x * np.asarray(in_scale, F32)).astype(F32)
    lead = x.shape[:-1]
    static = None if x_scale is None else (F32(np.asarray(x_scale).reshape(-1)[0]),
                                           F32(np.asarray(x_zero_point).reshape(-1)[0]))
    q, s, zp = quantize_rows(x.reshape(-1, x.shape[-1]), static)
    acc = gemm(q, w_q)
    d = acc - zp.astype(np.int64) * w_q.astype(np.int64).sum(axis=1)
    y = d.astype(F32) * (s * np.asarray(w_scale, F32)).astype(F32)
    if bias is not None:
        y = y + np.asarray(bias, F32)
    if act == "gelu":
        y = y * (F32(0.5) + F32(0.5) * erf_q(y * F32(0.70710678)))
    return y.astype(F32).reshape(*lead, w_q.shape[0])


def embedding(ids, word, position, token_type=None, word_scale=None):
    """(word[id] + token_type[0]) + position[s]; an int8 word table is float32(q) * word_scale[id] first."""
    ids = np.asarray(ids)
    if ids.size and (ids.min() < 0 or ids.max() >= word.shape[0]):
        raise ValueError(f"token ids must be in [0, {word.shape[0]})")
    if ids.shape[1] > position.shape[0]:
        raise ValueError(f"a sequence of {ids.shape[1]} tokens is longer than the {position.shape[0]} positions")
    y = word[ids] if word_scale is None else (word[ids].astype(F32) * word_scale[ids][..., None]).astype(F32)
    if token_type is not None:
        y = y + token_type[0]
    return (y + position[:ids.shape[1]]).astype(F32)


def attention_bias(mask):
    mask = np.asarray(mask)
    if not np.isin(mask, (0, 1)).all():
        raise ValueError("attention_mask must hold only 0 and 1")
    return np.where(mask == 1, F32(0), F32_LOWEST).astype(F32)


def attention(q, k, v, bias, heads, scale):
    """Multi-head attention with the spec's sum orders (d order, 8 lanes for Z, j order for the output)."""
    with np.errstate(all="ignore"):
        return _attention(q, k, v, bias, heads, scale)


def _attention(q, k, v, bias, heads, scale):
    n, s, f = q.shape
    dh = f // heads
    out = np.empty_like(q)
    for h in range(heads):
        cols = slice(h * dh, (h + 1) * dh)
        qh, kh, vh = q[:, :, cols], k[:, :, cols], v[:, :, cols]
        t = np.zeros((n, s, s), F32)
        for d in range(dh):
            t = t + qh[:, :, d:d + 1] * kh[:, None, :, d]
        t = t * F32(scale) + bias[:, None, :]
        m = t[..., 0]
        for j in range(1, s):  # the engine's running `t > m ? t : m`: a NaN after the first never wins
            m = np.where(t[..., j] > m, t[..., j], m)
        e = exp_q(t - m[..., None])
        padded = np.concatenate([e, np.zeros((n, s, -s % 8), F32)], axis=-1).reshape(n, s, -1, 8)
        lanes = np.zeros((n, s, 8), F32)
        for block in range(padded.shape[2]):
            lanes = lanes + padded[:, :, block]
        z = ((lanes[..., 0] + lanes[..., 1]) + (lanes[..., 2] + lanes[..., 3])) + \
            ((lanes[..., 4] + lanes[..., 5]) + (lanes[..., 6] + lanes[..., 7]))
        p = e / z[..., None]
        o = np.zeros((n, s, dh), F32)
        for j in range(s):
            o = o + p[:, :, j:j + 1] * vh[:, None, j, :]
        out[:, :, cols] = o
    return out


def run_op(graph, tensors, op, xs):
    """The output of one op of a quantized graph (docs/format.md) for its input arrays xs, in the order of
    op["inputs"]: uint8 codes for uint8 values, float32 for float32 ones, NCHW. graph gives the values'
    quantization; tensors the op's constants."""
    values = graph["values"]

    def qp(name):
        return values[name].get("scale"), values[name].get("zero_point")

    kind, a, t = op["op"], op["attrs"], {role: tensors[name] for role, name in op["tensors"].items()}
    xsc, xzp = qp(op["inputs"][0])
    osc, ozp = qp(op["outputs"][0])
    if kind == "quantize":
        y = quantize(xs[0], osc, ozp)
    elif kind == "dequantize":
        y = dequantize(xs[0], xsc, xzp)
    elif kind == "conv2d":
        y = conv2d(xs[0], xsc, xzp, t["weight"], t["w_scale"], t.get("bias"), osc, ozp, stride=tuple(a["stride"]),
                   padding=tuple(a["padding"]), dilation=tuple(a["dilation"]), groups=a["groups"], act=a["act"])
    elif kind == "linear":
        y = linear(xs[0], xsc, xzp, t["weight"], t["w_scale"], t.get("bias"), osc, ozp, act=a["act"])
    elif kind == "conv2d_float":
        y = conv2d_float(xs[0], t["weight"], t.get("bias"), a["stride"], a["padding"], a["dilation"], a["groups"],
                         a["act"])
    elif kind == "linear_float":
        y = linear_float(xs[0], t["weight"], t.get("bias"), a["act"])
    elif kind == "max_pool2d":
        y = max_pool2d(xs[0], a["kernel"], a["stride"], a["padding"], a["dilation"], a["ceil_mode"])
    elif kind == "avg_pool2d":
        y = avg_pool2d(xs[0], xsc, xzp, a["kernel"], a["stride"], a["padding"], a["ceil_mode"],
                       a["count_include_pad"], a["divisor_override"] or None, osc, ozp)
    elif kind == "adaptive_avg_pool2d":
        y = adaptive_avg_pool2d(xs[0], xsc, xzp, tuple(a["output_size"]), osc, ozp)
    elif kind == "resize":
        fh, fw = a["scale_h"], a["scale_w"]
        if len(xs) == 2:
            size = xs[1].shape[2:]
        elif fh > 0:
            size = (resize_extent(xs[0].shape[2], fh), resize_extent(xs[0].shape[3], fw))
        else:
            size = a["size"]
        y = resize(xs[0], size, a["mode"], a["align_corners"], (fh, fw))
    elif kind == "pad":
        y = pad(xs[0], a["padding"], a["fill_code"])
    elif kind in ("add", "sub"):
        bsc, bzp = qp(op["inputs"][1])
        y = add(xs[0], xsc, xzp, xs[1], bsc, bzp, osc, ozp, relu=a["act"] == "relu", subtract=kind == "sub")
    elif kind == "mul":
        y = mul(xs[0], xsc, xzp, xs[1], *qp(op["inputs"][1]), osc, ozp)
    elif kind == "concat":
        y = concat(xs, [qp(v)[0] for v in op["inputs"]], [qp(v)[1] for v in op["inputs"]], osc, ozp, a["axis"])
    elif kind == "lut":
        y = t["table"][xs[0]]
    elif kind == "lut_channels":
        channel = np.arange(xs[0].shape[1]).reshape(-1, *[1] * (xs[0].ndim - 2))
        y = t["table"][channel, xs[0]]
    elif kind == "layer_norm":
        y = layer_norm(xs[0], xsc, t["weight"], t["bias"], a["eps"], osc, ozp)
    elif kind == "group_norm":
        y = group_norm(xs[0], xsc, t["weight"], t["bias"], a["eps"], a["groups"], osc, ozp)
    elif kind == "reduce":
        y = reduce(xs[0], xsc, xzp, a["dims"], a["keepdim"], a["mode"], osc, ozp)
    elif kind == "flatten":
        y = xs[0].reshape(xs[0].shape[0], -1)
    elif kind == "gather_channels":
        y = xs[0][:, t["index"]]
    elif kind in ("softmax", "log_softmax"):
        y = softmax(xs[0], a["dim"], log=kind == "log_softmax")
    elif kind == "unary_float":
        y = unary_float(xs[0], a["fn"], a["a"], a["b"])
    elif kind == "binary_float":
        y = binary_float(xs[0], xs[1], a["fn"])
    elif kind == "layer_norm_float":
        y = layer_norm_float(xs[0], t["weight"], t["bias"], a["eps"])
    elif kind == "embedding":
        y = embedding(xs[0], t["word"] if "word" in t else t["word_q"], t["position"], t.get("token_type"),
                      t.get("word_scale"))
    elif kind == "attention_bias":
        y = attention_bias(xs[0])
    elif kind == "attention":
        qkv = np.split(xs[0], 3, axis=-1) if len(xs) == 2 else xs[:3]  # a fused qkv: its three column blocks
        y = attention(*qkv, xs[-1], a["heads"], a["scale"])
    elif kind == "linear_dynamic":
        y = linear_dynamic(xs[0], t["weight"], t["w_scale"], t.get("bias"), a["act"], t.get("in_scale"),
                           t.get("x_scale"), t.get("x_zero_point"))
    else:
        raise ValueError(f"op {op['name']!r}: unknown op {kind!r}")
    return y


def run_graph(graph, tensors, inputs, keep=False):
    """Outputs (float32, NCHW) of a quantized graph for float32 NCHW inputs, op by op in numpy.

    keep=True: {value name: array} of every value instead (the inputs and each op's output, uint8 codes
    or float32), in graph order: what qruntime.compare reads the int8 model's activations from."""
    vals = {spec["name"]: np.asarray(x, np.int64 if graph["values"][spec["name"]]["dtype"] == "int64" else F32)
            for spec, x in zip(graph["inputs"], inputs)}
    for op in graph["ops"]:
        vals[op["outputs"][0]] = run_op(graph, tensors, op, [vals[v] for v in op["inputs"]])
    if keep:
        return vals
    return [vals[name] for name in graph["outputs"]]
