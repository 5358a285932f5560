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
