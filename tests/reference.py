"""numpy float64 implementations of docs/quantization.md: the oracle the scalar kernels must equal."""
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
