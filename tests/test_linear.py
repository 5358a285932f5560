"""Quantized linear: exact against the float64 reference of docs/quantization.md on every ISA path,
and within 1 LSB of PyTorch's own quantized linear (x86 engine)."""
import numpy as np
import pytest

import qruntime
from qruntime import ops

from qruntime import reference
from lsb import LsbTally


def _layer(rng, m, k, n, per_channel=True, with_bias=True):
    x_q = rng.integers(0, 256, (m, k), dtype=np.uint8)
    w_q = rng.integers(-127, 128, (n, k), dtype=np.int8)
    # Scales as a calibrated layer would have them: output range about that of the accumulators.
    x_scale, x_zp = 0.02, int(rng.integers(0, 256))
    w_scale = (rng.uniform(0.5, 2.0, n) * 0.01).astype(np.float32) if per_channel else 0.0123
    bias = rng.normal(0, 1.0, n).astype(np.float32) if with_bias else None
    out_scale = float(0.02 * 0.01 * 127 * 128 * np.sqrt(k) / 64)
    out_zp = int(rng.integers(0, 256))
    return x_q, x_scale, x_zp, w_q, w_scale, bias, out_scale, out_zp


@pytest.mark.parametrize("per_channel", [True, False])
@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("act", ["none", "relu", "relu6"])
def test_linear_equals_reference(any_path, rng, per_channel, with_bias, act):
    for m, k, n in [(1, 1, 1), (7, 13, 33), (33, 129, 65), (100, 300, 17), (16, 1024, 96)]:
        args = _layer(rng, m, k, n, per_channel, with_bias)
        got = ops.linear(*args, relu=act == "relu", relu6=act == "relu6", isa=any_path)
        want = reference.linear(*args, act=act)
        assert got.dtype == np.uint8 and got.shape == (m, n)
        np.testing.assert_array_equal(got, want, err_msg=f"{any_path} {m}x{k}x{n}")
        # The outputs must actually spread over the uint8 range, or the check proves little.
        if m * n > 500 and act == "none":
            assert 0 < np.mean((got > 0) & (got < 255)) and len(np.unique(got)) > 30


def test_linear_simd_equals_scalar(simd_isa, rng):
    for m, k, n in [(1, 1024, 1024), (17, 65, 257), (129, 255, 31), (256, 27, 32)]:
        args = _layer(rng, m, k, n)
        np.testing.assert_array_equal(ops.linear(*args, isa=simd_isa), ops.linear(*args, isa="scalar"))


def test_rounding_ties_go_to_even(any_path):
    # acc * m lands exactly on .5: 1 * 0.5, 3 * 0.5, 5 * 0.5 -> 0, 2, 2 (half to even), plus zp 10.
    x_q = np.array([[1], [3], [5], [0]], dtype=np.uint8)
    w_q = np.array([[1]], dtype=np.int8)
    got = ops.linear(x_q, 0.5, 0, w_q, 1.0, None, 1.0, 10, isa=any_path)
    np.testing.assert_array_equal(got[:, 0], [10, 12, 12, 10])


def test_saturating_extremes(any_path):
    k = 4096
    x_q = np.full((2, k), 255, dtype=np.uint8)
    w_q = np.stack([np.full(k, 127, np.int8), np.full(k, -127, np.int8)])
    got = ops.linear(x_q, 1.0, 0, w_q, 1.0, None, 1.0, 128, isa=any_path)
    np.testing.assert_array_equal(got, [[255, 0], [255, 0]])


def test_huge_bias_is_clamped_not_wrapped(any_path):
    # bias / (s_x s_w) far beyond int32: the spec clamps it, so the output saturates the right way.
    x_q = np.full((1, 8), 200, np.uint8)
    w_q = np.full((2, 8), 100, np.int8)
    bias = np.array([3e38, -3e38], np.float32)
    got = ops.linear(x_q, 1e-3, 0, w_q, 1e-3, bias, 1.0, 100, isa=any_path)
    np.testing.assert_array_equal(got, [[255, 0]])
    np.testing.assert_array_equal(got, reference.linear(x_q, 1e-3, 0, w_q, 1e-3, bias, 1.0, 100))


def test_zero_rows(any_path):
    got = ops.linear(np.zeros((0, 4), np.uint8), 1.0, 0, np.ones((3, 4), np.int8), 1.0, None, 1.0, 0, isa=any_path)
    assert got.shape == (0, 3) and got.dtype == np.uint8


@pytest.mark.parametrize("n_threads", [1, 2, 3])
def test_linear_thread_counts(any_path, rng, threads, n_threads):
    args = _layer(rng, 200, 300, 150)
    qruntime.set_num_threads(n_threads)
    got = ops.linear(*args, isa=any_path)
    np.testing.assert_array_equal(got, reference.linear(*args))


@pytest.mark.parametrize("wmax", [64, 127])  # 64: the AVX2 vpmaddubsw kernel; 127: vpmaddwd
@pytest.mark.parametrize("act", ["none", "relu", "relu6"])
@pytest.mark.parametrize("out_zp", [0, 37, 255])
def test_requantize_far_outside_the_output_range(any_path, rng, wmax, act, out_zp):
    """Scaled values from about -1e7 to 1e7 around every clamp bound: the low clamp must hold
    however far below it a value lands, not wrap round to a high code."""
    m, k, n = 23, 200, 48
    x_q = rng.integers(0, 256, (m, k), dtype=np.uint8)
    w_q = rng.integers(-wmax, wmax + 1, (n, k), dtype=np.int8)
    # Per channel from 1e-3 to 1e4 times the usual output step: most of each row clamps.
    w_scale = np.geomspace(1e-3, 1e4, n).astype(np.float32) * 1e-2
    bias = rng.normal(0, 10.0, n).astype(np.float32)
    args = (x_q, 0.02, 128, w_q, w_scale, bias, 0.05, out_zp)
    got = ops.linear(*args, relu=act == "relu", relu6=act == "relu6", isa=any_path)
    want = reference.linear(*args, act=act)
    np.testing.assert_array_equal(got, want)
    lo = out_zp if act != "none" else 0
    assert np.mean(got == lo) > 0.2  # the low clamp ran
    if lo < 255:  # and, unless relu leaves nothing above the floor, the high clamp and the middle
        assert np.mean(got == got.max()) > 0.2 and np.mean((got > lo) & (got < got.max())) > 0.02


def test_negative_ties_at_the_low_clamp(any_path):
    # acc * m lands on -0.5, -1.5, -2.5: half to even gives -0, -2, -2, then zp 10 or the relu floor.
    x_q = np.array([[1], [3], [5], [0]], dtype=np.uint8)
    w_q = np.array([[-1]], dtype=np.int8)
    plain = ops.linear(x_q, 0.5, 0, w_q, 1.0, None, 1.0, 10, isa=any_path)
    np.testing.assert_array_equal(plain[:, 0], [10, 8, 8, 10])
    relu = ops.linear(x_q, 0.5, 0, w_q, 1.0, None, 1.0, 10, relu=True, isa=any_path)
    np.testing.assert_array_equal(relu[:, 0], [10, 10, 10, 10])


torch = pytest.importorskip("torch")


def _torch_linear(x_q, x_scale, x_zp, w_q, w_scale, bias, out_scale, out_zp):
    torch.backends.quantized.engine = "x86"
    qx = torch._make_per_tensor_quantized_tensor(torch.from_numpy(x_q), x_scale, x_zp)
    w = torch.from_numpy(w_q)
    if np.ndim(w_scale) == 0:
        qw = torch._make_per_tensor_quantized_tensor(w, float(w_scale), 0)
    else:
        scales = torch.from_numpy(np.asarray(w_scale, np.float64))
        qw = torch._make_per_channel_quantized_tensor(w, scales, torch.zeros(len(w_scale), dtype=torch.int64), 0)
    packed = torch.ops.quantized.linear_prepack(qw, None if bias is None else torch.from_numpy(bias))
    return torch.ops.quantized.linear(qx, packed, out_scale, out_zp).int_repr().numpy()


@pytest.mark.parametrize("per_channel", [True, False])
def test_matches_torch_x86_within_one_lsb(rng, per_channel):
    """On CPUs without VNNI, PyTorch's x86 engine (FBGEMM) sums u8*s8 pairs with the saturating
    vpmaddubsw; PyTorch's own qconfigs avoid the overflow with 7-bit activations (reduce_range), so
    the comparison uses x_q in [0, 127] to hold on every host. Its requantization differs from ours
    (bias added in float, the scales folded in another order), which moves the few outputs that sit
    next to a rounding boundary by one step; ours is the exactly specified one (reference.py)."""
    tally = LsbTally(min_total=20_000)
    for m, k, n in [(64, 256, 128), (16, 1024, 256), (200, 100, 50)]:
        x_q, x_scale, x_zp, w_q, w_scale, bias, out_scale, out_zp = _layer(rng, m, k, n, per_channel)
        x_q = x_q // 2
        x_zp = x_zp // 2
        ours = ops.linear(x_q, x_scale, x_zp, w_q, w_scale, bias, out_scale, out_zp)
        tally.add(ours, _torch_linear(x_q, x_scale, x_zp, w_q, w_scale, bias, out_scale, out_zp), f"{m}x{k}x{n}")
        assert len(np.unique(ours)) > 30
    tally.check()
