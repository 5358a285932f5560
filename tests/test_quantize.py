"""quantize / dequantize: exact against the reference, within 1 LSB of PyTorch, round trips."""
import numpy as np
import pytest

from qruntime import ops

from qruntime import reference


@pytest.mark.parametrize("scale,zp", [(0.1, 0), (0.0173, 1), (1.0, 127), (0.5, 128), (3e-3, 255)])
def test_quantize_equals_reference(rng, scale, zp):
    x = rng.normal(0, 100 * scale, (7, 33, 5)).astype(np.float32)
    # Exact ties (k + 0.5) * scale round half to even.
    x.flat[:8] = ((np.arange(8) - 4 + 0.5) * np.float32(scale)).astype(np.float32)
    got = ops.quantize(x, scale, zp)
    assert got.dtype == np.uint8 and got.shape == x.shape
    np.testing.assert_array_equal(got, reference.quantize(x, scale, zp))
    assert got.min() == 0 or zp == 0 or got.max() == 255  # the range is exercised, clamping included


def test_quantize_ties_to_even():
    got = ops.quantize(np.array([0.5, 1.5, 2.5, -0.5, -1.5], np.float32), 1.0, 10)
    np.testing.assert_array_equal(got, [10, 12, 12, 10, 8])


@pytest.mark.parametrize("scale,zp", [(0.1, 0), (0.0173, 1), (1.0, 127), (3e-3, 255)])
def test_dequantize_equals_reference(scale, zp):
    q = np.arange(256, dtype=np.uint8).reshape(16, 16)
    got = ops.dequantize(q, scale, zp)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, reference.dequantize(q, scale, zp))


def test_round_trip_within_half_step(rng):
    x = rng.uniform(-1, 1, 1000).astype(np.float32)
    scale, zp = 2 / 255, 128
    back = ops.dequantize(ops.quantize(x, scale, zp), scale, zp)
    assert np.max(np.abs(back - x)) <= scale / 2 + 1e-7


torch = pytest.importorskip("torch")


def test_quantize_matches_torch(rng):
    """torch multiplies by a float32 inverse scale where we divide, so a value next to a rounding
    tie can land one step apart; ours is the correctly rounded quotient."""
    x = rng.normal(0, 3, 100000).astype(np.float32)
    for scale, zp in [(0.05, 128), (0.0173, 3), (0.1, 255)]:
        ours = ops.quantize(x, scale, zp).astype(np.int32)
        theirs = torch.quantize_per_tensor(torch.from_numpy(x), scale, zp, torch.quint8).int_repr().numpy().astype(np.int32)
        diff = np.abs(ours - theirs)
        assert diff.max() <= 1 and np.count_nonzero(diff) <= 0.001 * x.size
