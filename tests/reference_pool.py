"""numpy float64 references of the pooling, add, concat and LUT formulas in docs/quantization.md (NCHW).

Written independently of the C++ loops: pooling sums shifted strided slices of a padded copy (one
per kernel offset) instead of walking windows, and every float32 step of the spec is done as an
exact float64 operation rounded once to float32.
"""
import numpy as np

F32 = np.float32
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


def _term(q, zp, scale, out_scale):
    """float32(q - zp) * float32(s / s_y), one float32 product."""
    m = F32(F64(_f32(scale)) / F64(_f32(out_scale)))
    return (np.asarray(q, dtype=np.int64) - zp).astype(F32).astype(F64) * F64(m)


def add(a, a_scale, a_zp, b, b_scale, b_zp, out_scale, out_zp, relu=False):
    """b already broadcastable to a by numpy's rules (per-channel b as (1, C, 1, 1))."""
    ta = _term(a, a_zp, a_scale, out_scale).astype(F32)
    tb = _term(b, b_zp, b_scale, out_scale).astype(F32)
    v = (ta.astype(F64) + tb.astype(F64)).astype(F32)  # one float32 add
    lo = (out_zp if relu else 0) - out_zp
    v = np.clip(v.astype(F64), lo, 255 - out_zp)
    return (np.rint(v) + out_zp).astype(np.uint8)


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
