"""Quantized add, concat and lookup tables: exact against the numpy reference of docs/quantization.md,
against PyTorch's quantized ops (x86 engine), at 1-3 threads, and bad arguments rejected by name."""
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import qruntime
from qruntime import ops

from qruntime import reference as ref
from lsb import LsbTally

SETTINGS = settings(max_examples=150, derandomize=True, database=None, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

SCALES = st.sampled_from([0.0123, 0.02, 0.05, 0.1, 0.37, 1.0, 2.5])
ZPS = st.sampled_from([0, 1, 77, 127, 128, 200, 255])
BROADCASTS = ["full", "channel4d", "channel1d", "scalar1", "scalar0"]


def _b_shape(a_shape, how):
    c = a_shape[1]
    return {"full": a_shape, "channel4d": (1, c, 1, 1), "channel1d": (c,), "scalar1": (1,), "scalar0": ()}[how]


def _as_numpy_broadcast(b, a_shape, how):
    """b reshaped so numpy broadcasts it the way ops.add does (a 1-D b is per channel there)."""
    return b.reshape(1, a_shape[1], 1, 1) if how == "channel1d" else b


@SETTINGS
@given(st.tuples(st.integers(1, 3), st.integers(1, 70), st.integers(1, 20), st.integers(1, 20)),
       st.sampled_from(BROADCASTS), SCALES, ZPS, SCALES, ZPS, SCALES, ZPS, st.booleans(), st.integers(0, 2**32 - 1))
def test_add_equals_reference(shape, how, sa, za, sb, zb, sy, zy, relu, seed):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, shape, dtype=np.uint8)
    b = rng.integers(0, 256, _b_shape(shape, how), dtype=np.uint8)
    got = ops.add(a, sa, za, b, sb, zb, sy, zy, relu=relu)
    assert got.shape == shape and got.dtype == np.uint8
    want = ref.add(a, sa, za, _as_numpy_broadcast(b, shape, how), sb, zb, sy, zy, relu)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("relu", [False, True])
def test_add_equals_reference_on_every_path(any_path, rng, relu):
    """The full add on each ISA path's kernel: every length's tail (the AVX2 kernel takes 32 values
    a step), zero points at both ends, decimal scales with many exact .5 results, and multipliers
    from tiny to large enough that most outputs clamp."""
    qparams = DECIMAL_QPARAMS + [(1e-4, 0), (3.0, 255), (0.9, 128)]
    for i, n in enumerate([1, 7, 31, 32, 33, 64, 95, 1000, 4099]):
        a = rng.integers(0, 256, (n,), dtype=np.uint8)
        b = rng.integers(0, 256, (n,), dtype=np.uint8)
        (sa, za), (sb, zb), (sy, zy) = (qparams[(i + j) % len(qparams)] for j in (0, 3, 7))
        got = ops.add(a, sa, za, b, sb, zb, sy, zy, relu=relu, isa=any_path)
        np.testing.assert_array_equal(got, ref.add(a, sa, za, b, sb, zb, sy, zy, relu=relu), err_msg=f"n={n}")
        np.testing.assert_array_equal(got, ops.add(a, sa, za, b, sb, zb, sy, zy, relu=relu, isa="scalar"))
    # One large case whose outputs spread over the whole range.
    a = rng.integers(0, 256, (3, 64, 17, 19), dtype=np.uint8)
    b = rng.integers(0, 256, a.shape, dtype=np.uint8)
    got = ops.add(a, 0.05, 128, b, 0.0123, 7, 0.03, 100, relu=relu, isa=any_path)
    np.testing.assert_array_equal(got, ref.add(a, 0.05, 128, b, 0.0123, 7, 0.03, 100, relu=relu))
    assert len(np.unique(got)) > 100 and np.mean(got == (100 if relu else 0)) > 0.05 and np.mean(got == 255) > 0.05


@SETTINGS
@given(st.integers(1, 4), st.integers(1, 4), st.integers(-4, 3), st.data())
def test_concat_equals_reference(count, ndim, axis_draw, data):
    ndim = max(ndim, 1)
    axis = axis_draw % (2 * ndim) - ndim  # both negative and positive axes
    base = list(data.draw(st.tuples(*[st.integers(1, 9)] * ndim)))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    arrays, scales, zps = [], [], []
    out_scale, out_zp = data.draw(SCALES), data.draw(ZPS)
    for _ in range(count):
        shape = list(base)
        shape[axis] = data.draw(st.integers(0, 9))
        arrays.append(rng.integers(0, 256, shape, dtype=np.uint8))
        # Some inputs already in the output quantization (copied), some not.
        same = data.draw(st.booleans())
        scales.append(out_scale if same else data.draw(SCALES))
        zps.append(out_zp if same else data.draw(ZPS))
    got = ops.concat(arrays, scales, zps, out_scale, out_zp, axis=axis)
    np.testing.assert_array_equal(got, ref.concat(arrays, scales, zps, out_scale, out_zp, axis=axis))


def test_concat_copies_inputs_in_the_output_quantization(rng):
    a = rng.integers(0, 256, (2, 3, 4, 5), dtype=np.uint8)
    b = rng.integers(0, 256, (2, 6, 4, 5), dtype=np.uint8)
    y = ops.concat([a, b], [0.1, 0.2], [10, 20], 0.2, 20)
    np.testing.assert_array_equal(y[:, 3:], b)  # same quantization: bytes unchanged
    assert not np.array_equal(y[:, :3], a)  # requantized (scale halves, codes shift)
    np.testing.assert_array_equal(y[:, :3], ref.requantize(a, 0.1, 10, 0.2, 20))
    # Equal scale, other zero point: an exact shift, saturating at the ends.
    z = ops.concat([a], [0.2], [0], 0.2, 30, axis=0)
    np.testing.assert_array_equal(z, np.minimum(a.astype(np.int32) + 30, 255).astype(np.uint8))


@SETTINGS
@given(st.lists(st.integers(0, 6), min_size=0, max_size=4), st.integers(0, 2**32 - 1))
def test_lut_is_a_table_lookup(shape, seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, shape, dtype=np.uint8)
    table = rng.integers(0, 256, 256, dtype=np.uint8)
    got = ops.lut(x, table)
    assert got.shape == x.shape
    np.testing.assert_array_equal(got, table[x])


def test_lut_on_every_code_and_strided_input():
    x = np.arange(256, dtype=np.uint8).reshape(16, 16)
    table = (255 - np.arange(256)).astype(np.uint8)
    np.testing.assert_array_equal(ops.lut(x, table), 255 - x)
    np.testing.assert_array_equal(ops.lut(x.T, table), 255 - x.T)
    np.testing.assert_array_equal(ops.lut(x, table[::-1].copy()), x)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _gelu(x):
    return 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))


def _hardswish(x):
    return x * np.clip(x + 3.0, 0.0, 6.0) / 6.0


def _hardsigmoid(x):
    return np.clip(x / 6.0 + 0.5, 0.0, 1.0)


def _silu(x):
    return x * _sigmoid(x)


@pytest.mark.parametrize("fn", [_sigmoid, np.tanh, _hardswish, _hardsigmoid, _silu, _gelu])
@pytest.mark.parametrize("q", [(0.05, 128, 1 / 256, 0), (0.1, 0, 0.02, 77), (0.0123, 255, 0.037, 200), (1.0, 3, 1.0, 3)])
def test_make_lut_equals_the_formula(fn, q):
    table = ops.make_lut(fn, *q)
    assert table.dtype == np.uint8 and table.shape == (256,)
    np.testing.assert_array_equal(table, ref.make_lut(fn, *q))
    assert len(np.unique(table)) > 3 or q[0] == 1.0


def test_make_lut_rounds_half_to_even_and_clamps():
    # Identity on real values with in = out quantization except out scale 2: q -> (q - 8) / 2 + 8.
    table = ops.make_lut(lambda x: x, 1.0, 8, 2.0, 8)
    np.testing.assert_array_equal(table[7:12], [8, 8, 8, 9, 10])  # -0.5, 0, 0.5, 1, 1.5 -> 0, 0, 0, 1, 2
    assert table[0] == 4 and table[255] == 132
    np.testing.assert_array_equal(ops.make_lut(lambda x: x * 1000.0, 1.0, 128, 1.0, 128)[[0, 127, 128, 129, 255]],
                                  [0, 0, 128, 255, 255])


@pytest.mark.parametrize("n_threads", [1, 2, 3])
def test_thread_counts_give_identical_results(rng, threads, n_threads):
    qruntime.set_num_threads(n_threads)
    a = rng.integers(0, 256, (2, 96, 40, 41), dtype=np.uint8)
    b = rng.integers(0, 256, a.shape, dtype=np.uint8)
    bc = rng.integers(0, 256, (1, 96, 1, 1), dtype=np.uint8)
    np.testing.assert_array_equal(ops.add(a, 0.05, 3, b, 0.07, 250, 0.1, 128),
                                  ref.add(a, 0.05, 3, b, 0.07, 250, 0.1, 128))
    np.testing.assert_array_equal(ops.add(a, 0.05, 3, bc, 0.07, 250, 0.1, 128, relu=True),
                                  ref.add(a, 0.05, 3, bc, 0.07, 250, 0.1, 128, relu=True))
    np.testing.assert_array_equal(ops.add(a, 0.05, 3, bc[:1, :1, :1, :1], 0.07, 250, 0.1, 128),
                                  ref.add(a, 0.05, 3, bc[:1, :1, :1, :1], 0.07, 250, 0.1, 128))
    args = ([a, b, a], [0.05, 0.1, 0.07], [3, 128, 5], 0.1, 128)
    for axis in (0, 1, 3):
        np.testing.assert_array_equal(ops.concat(*args, axis=axis), ref.concat(*args, axis=axis))
    table = rng.integers(0, 256, 256, dtype=np.uint8)
    np.testing.assert_array_equal(ops.lut(a, table), table[a])


# ---- PyTorch's quantized ops (x86 engine) as the outside oracle ----

torch = pytest.importorskip("torch")
F = torch.nn.functional


def _tq(x, scale, zp):
    torch.backends.quantized.engine = "x86"
    return torch._make_per_tensor_quantized_tensor(torch.from_numpy(np.ascontiguousarray(x)), scale, zp)


def _random_qparams(rng):
    """A scale as calibration would give one (any float32, log-uniform) and a zero point."""
    return float(np.float32(np.exp(rng.uniform(np.log(0.002), np.log(0.5))))), int(rng.integers(0, 256))


# Decimal scales whose ratios put many exact values on, or within float32 noise of, a .5 boundary.
DECIMAL_QPARAMS = [(0.05, 128), (0.0123, 0), (0.1, 1), (0.37, 200), (0.02, 255), (0.05, 77), (0.2, 3), (0.025, 9)]


def _add_exact(a, za, sa, b, zb, sb, sy):
    """The real result in output steps, float64 from the float32 scales (error ~1e-13 of a step)."""
    f = [float(np.float32(v)) for v in (sa, sb, sy)]
    return ((a.astype(np.float64) - za) * f[0] + (b.astype(np.float64) - zb) * f[1]) / f[2]


def _off_half(v):
    """Distance of v from the nearest .5 boundary."""
    return np.abs(v - np.floor(v) - 0.5)


@pytest.mark.parametrize("relu", [False, True])
def test_add_within_one_lsb_of_torch(rng, relu):
    """PyTorch dequantizes both inputs to float32 (an FMA in its vector loop), adds, and multiplies
    by a float32 1 / s_y; ours folds 1 / s_y into each input's multiplier (docs/quantization.md).
    Same real value: only outputs within float32 error of a .5 boundary can part, by one step."""
    op = torch.ops.quantized.add_relu if relu else torch.ops.quantized.add
    tally = LsbTally(min_total=100_000)
    for i in range(60):
        shape = (int(rng.integers(1, 4)), int(rng.integers(1, 71)), int(rng.integers(1, 21)), int(rng.integers(1, 21)))
        how = BROADCASTS[i % len(BROADCASTS)]
        a = rng.integers(0, 256, shape, dtype=np.uint8)
        b = rng.integers(0, 256, _b_shape(shape, how), dtype=np.uint8)
        (sa, za), (sb, zb), (sy, zy) = _random_qparams(rng), _random_qparams(rng), _random_qparams(rng)
        theirs = op(_tq(a, sa, za), _tq(_as_numpy_broadcast(b, shape, how), sb, zb), sy, zy).int_repr().numpy()
        tally.add(ops.add(a, sa, za, b, sb, zb, sy, zy, relu=relu), theirs, f"{shape} {how}")
    tally.check()


def test_add_is_exactly_rounded_when_the_multipliers_are_exact(rng):
    """With s_a / s_y and s_b / s_y exact in float32 (0.05 -> 0.1 is 1/2; 0.2 -> 0.1 is 2), each
    product and the sum are exact, so ours is the correctly rounded value, ties to even: about a
    quarter of these outputs are exact .5 ties. PyTorch's float32 dequantize / 1 / s_y steps are not
    exact there and break such ties either way, so it differs by one step on many of them."""
    ties = differ = 0
    for sa, sb, sy in [(0.05, 0.05, 0.1), (0.05, 0.2, 0.1), (0.025, 0.1, 0.1), (0.2, 0.05, 0.4)]:
        for za, zb, zy in [(0, 0, 0), (128, 77, 1), (3, 255, 200)]:
            a = rng.integers(0, 256, 20000, dtype=np.uint8)
            b = rng.integers(0, 256, 20000, dtype=np.uint8)
            v = _add_exact(a, za, sa, b, zb, sb, sy)
            want = np.clip(np.rint(v) + zy, 0, 255)
            ours = ops.add(a, sa, za, b, sb, zb, sy, zy)
            np.testing.assert_array_equal(ours, want)
            ties += int(np.count_nonzero(_off_half(v) == 0))
            theirs = torch.ops.quantized.add(_tq(a, sa, za), _tq(b, sb, zb), sy, zy).int_repr().numpy()
            diff = np.abs(ours.astype(np.int32) - theirs)
            assert diff.max() <= 1
            differ += int(np.count_nonzero(diff))
    assert ties > 10000 and differ > 0


def test_add_differs_from_torch_only_next_to_half_steps(rng):
    """With decimal scales many results sit on or within float32 noise of a .5 boundary, where the
    two float32 formulas can round either way (neither is always the exactly rounded one when the
    multipliers are inexact). Every difference is one step, at such a point."""
    for qa in DECIMAL_QPARAMS:
        for qb in DECIMAL_QPARAMS[::3]:
            for sy, zy in DECIMAL_QPARAMS[1::2]:
                a = rng.integers(0, 256, 1000, dtype=np.uint8)
                b = rng.integers(0, 256, 1000, dtype=np.uint8)
                ours = ops.add(a, *qa, b, *qb, sy, zy).astype(np.int32)
                theirs = torch.ops.quantized.add(_tq(a, *qa), _tq(b, *qb), sy, zy).int_repr().numpy()
                diff = np.abs(ours - theirs)
                assert diff.max() <= 1
                v = _add_exact(a, qa[1], qa[0], b, qb[1], qb[0], sy)
                assert np.all(_off_half(v[diff > 0]) < 1e-5), (qa, qb, sy)


def _concat_case(rng, qparams):
    axis = int(rng.integers(0, 4))
    base = [int(rng.integers(1, 4)), int(rng.integers(1, 40)), int(rng.integers(1, 20)), int(rng.integers(1, 20))]
    arrays, qs = [], []
    for _ in range(int(rng.integers(1, 4))):
        shape = list(base)
        shape[axis] = int(rng.integers(1, 20))
        arrays.append(rng.integers(0, 256, shape, dtype=np.uint8))
        qs.append(qparams())
    return arrays, qs, qparams(), axis


def test_concat_within_one_lsb_of_torch(rng):
    """PyTorch dequantizes to float32, concatenates and quantizes with a float32 inverse scale; ours
    is one float32 multiply by s_x / s_y: the same up to float32 rounding next to a .5 boundary."""
    tally = LsbTally(min_total=100_000)
    for i in range(60):
        # Every third output quantization equals one input's, which must then be copied unchanged.
        arrays, qs, (sy, zy), axis = _concat_case(rng, lambda: _random_qparams(rng))
        if i % 3 == 0:
            sy, zy = qs[0]
        theirs = torch.ops.quantized.cat([_tq(a, s, z) for a, (s, z) in zip(arrays, qs)], axis, sy, zy)
        ours = ops.concat(arrays, [s for s, _ in qs], [z for _, z in qs], sy, zy, axis=axis)
        tally.add(ours, theirs.int_repr().numpy(), f"axis {axis}")
    tally.check()


def test_concat_is_exactly_rounded_when_the_multiplier_is_exact(rng):
    """0.05 -> 0.1 (multiplier 1/2 exactly): half of the codes are .5 ties, rounded to even by ours;
    PyTorch's float32 x * (1 / s_y) lands a float32 step off .5 and rounds some of them up."""
    x = np.tile(np.arange(256, dtype=np.uint8), 4)
    for zx, zy in [(0, 0), (1, 128), (200, 3)]:
        want = np.clip(np.rint((x.astype(np.float64) - zx) / 2) + zy, 0, 255)
        ours = ops.concat([x], [0.05], [zx], 0.1, zy, axis=0)
        np.testing.assert_array_equal(ours, want)
        theirs = torch.ops.quantized.cat([_tq(x, 0.05, zx)], 0, 0.1, zy).int_repr().numpy()
        assert np.abs(ours.astype(np.int32) - theirs).max() <= 1


def test_concat_differs_from_torch_only_next_to_half_steps(rng):
    for sx, zx in DECIMAL_QPARAMS:
        for sy, zy in DECIMAL_QPARAMS:
            x = np.arange(256, dtype=np.uint8)
            ours = ops.concat([x], [sx], [zx], sy, zy, axis=0).astype(np.int32)
            theirs = torch.ops.quantized.cat([_tq(x, sx, zx)], 0, sy, zy).int_repr().numpy()
            diff = np.abs(ours - theirs)
            assert diff.max() <= 1
            v = (x.astype(np.float64) - zx) * float(np.float32(sx)) / float(np.float32(sy))
            assert np.all(_off_half(v[diff > 0]) < 1e-5), (sx, sy)


TORCH_ACTIVATIONS = [
    # (our float64 function, PyTorch's quantized op given (qx, out_scale, out_zp) -> quantized tensor)
    (_sigmoid, lambda t, s, z: torch.ops.quantized.sigmoid(t, s, z)),
    (np.tanh, lambda t, s, z: torch.tanh(t)),  # fixed output quantization (2/256, 128)
    (_hardsigmoid, lambda t, s, z: F.hardsigmoid(t)),  # fixed (1/256, 0)
    (_hardswish, lambda t, s, z: torch.ops.quantized.hardswish(t, s, z)),
    (_gelu, lambda t, s, z: F.gelu(t)),  # keeps the input's quantization
]


@pytest.mark.parametrize("fn,torch_op", TORCH_ACTIVATIONS, ids=["sigmoid", "tanh", "hardsigmoid", "hardswish", "gelu"])
def test_lut_matches_torch_quantized_activations(rng, fn, torch_op):
    """make_lut (float64) + lut against PyTorch's quantized activations (float32), on every code.
    They agree except where PyTorch's float32 value lands on the wrong side of a .5 step: a few in
    10^5 codes (tanh, hardsigmoid), always within 1e-4 of the step, where the float64 table is the
    correctly rounded one (checked against mpmath while writing this test)."""
    tally = LsbTally(min_total=100_000)
    codes = np.arange(256, dtype=np.uint8)
    for _ in range(400):
        s_in, zp_in = float(np.float32(rng.uniform(0.002, 0.2))), int(rng.integers(0, 256))
        s_out, zp_out = float(np.float32(rng.uniform(0.002, 0.1))), int(rng.integers(0, 256))
        theirs = torch_op(_tq(codes, s_in, zp_in), s_out, zp_out)
        table = ops.make_lut(fn, s_in, zp_in, theirs.q_scale(), theirs.q_zero_point())
        ours = ops.lut(codes, table)
        tally.add(ours, theirs.int_repr().numpy(), "lut")
        differ = ours != theirs.int_repr().numpy()
        if differ.any():
            v = fn(float(np.float32(s_in)) * (codes[differ].astype(np.float64) - zp_in)) / theirs.q_scale()
            assert np.all(_off_half(v) < 1e-4)
    tally.check()


def test_silu_lut_within_one_lsb_of_torch_float32(rng):
    """PyTorch has no quantized SiLU; its FX lowering runs dequantize -> float32 silu -> quantize.
    That float32 path is the comparison; ours is the float64 value rounded once."""
    tally = LsbTally(min_total=100_000)
    for _ in range(400):
        s_in, zp_in = float(np.float32(rng.uniform(0.005, 0.1))), int(rng.integers(0, 256))
        s_out, zp_out = float(np.float32(rng.uniform(0.005, 0.05))), int(rng.integers(0, 256))
        codes = np.arange(256, dtype=np.uint8)
        theirs = torch.quantize_per_tensor(F.silu(_tq(codes, s_in, zp_in).dequantize()), s_out, zp_out, torch.quint8)
        tally.add(ops.lut(codes, ops.make_lut(_silu, s_in, zp_in, s_out, zp_out)), theirs.int_repr().numpy(), "silu")
    tally.check()


# ---- bad arguments ----

A = np.zeros((2, 3, 4, 5), np.uint8)
T = np.arange(256).astype(np.uint8)


def _add(**over):
    args = dict(a=A, a_scale=0.1, a_zp=3, b=A, b_scale=0.2, b_zp=5, out_scale=0.3, out_zp=7)
    args.update(over)
    return ops.add(**args)


def _concat(**over):
    args = dict(arrays=[A, A], scales=[0.1, 0.2], zps=[1, 2], out_scale=0.3, out_zp=7)
    args.update(over)
    return ops.concat(**args)


ELTWISE_CASES = [
    (lambda: _add(a=A.astype(np.int8)), TypeError, "a"),
    (lambda: _add(a=A.tolist()), TypeError, "a"),
    (lambda: _add(b=A.astype(np.float32)), TypeError, "b"),
    (lambda: _add(b=np.zeros((2, 3, 4, 4), np.uint8)), ValueError, "b"),
    (lambda: _add(b=np.zeros((1, 4, 1, 1), np.uint8)), ValueError, "b"),  # 4 channels, a has 3
    (lambda: _add(b=np.zeros(5, np.uint8)), ValueError, "b"),  # numpy would broadcast over W; not a channel vector
    (lambda: _add(b=np.zeros((2,), np.uint8)), ValueError, "b"),
    (lambda: _add(b=np.zeros((1, 1, 1, 1, 1), np.uint8)), ValueError, "b"),  # more dims than a
    (lambda: _add(a_scale=0.0), ValueError, "a_scale"),
    (lambda: _add(b_scale=float("inf")), ValueError, "b_scale"),
    (lambda: _add(out_scale=-1), ValueError, "out_scale"),
    (lambda: _add(a_scale="1"), TypeError, "a_scale"),
    (lambda: _add(a_zp=256), ValueError, "a_zp"),
    (lambda: _add(b_zp=-1), ValueError, "b_zp"),
    (lambda: _add(out_zp=3.0), TypeError, "out_zp"),
    (lambda: _add(relu="yes"), TypeError, "relu"),
    (lambda: _add(a_scale=1e30, out_scale=1e-10), ValueError, "a_scale / out_scale"),
    (lambda: _concat(arrays=A), TypeError, "arrays"),
    (lambda: _concat(arrays=[]), ValueError, "arrays"),
    (lambda: _concat(arrays=[A, A.astype(np.int8)]), TypeError, r"arrays\[1\]"),
    (lambda: _concat(arrays=[A, np.zeros((2, 3, 4, 6), np.uint8)]), ValueError, r"arrays\[1\]"),
    (lambda: _concat(arrays=[A, np.zeros((2, 3, 4), np.uint8)]), ValueError, r"arrays\[1\]"),
    (lambda: _concat(arrays=[np.zeros((), np.uint8)] * 2), ValueError, r"arrays\[0\]"),
    (lambda: _concat(scales=[0.1]), ValueError, "scales"),
    (lambda: _concat(scales=0.1), TypeError, "scales"),
    (lambda: _concat(scales=[0.1, 0.0]), ValueError, r"scales\[1\]"),
    (lambda: _concat(scales=[0.1, None]), TypeError, r"scales\[1\]"),
    (lambda: _concat(zps=[1, 2, 3]), ValueError, "zps"),
    (lambda: _concat(zps=[1, 300]), ValueError, r"zps\[1\]"),
    (lambda: _concat(out_scale=float("nan")), ValueError, "out_scale"),
    (lambda: _concat(out_zp=-2), ValueError, "out_zp"),
    (lambda: _concat(axis=4), ValueError, "axis"),
    (lambda: _concat(axis=-5), ValueError, "axis"),
    (lambda: _concat(axis=1.0), TypeError, "axis"),
    (lambda: _concat(scales=[1e-30, 0.1], out_scale=1e30), ValueError, r"scales\[0\]"),
    (lambda: ops.lut(A, T[:255]), ValueError, "table"),
    (lambda: ops.lut(A, T.reshape(16, 16)), ValueError, "table"),
    (lambda: ops.lut(A, T.astype(np.int16)), TypeError, "table"),
    (lambda: ops.lut(A, list(T)), TypeError, "table"),
    (lambda: ops.lut(A.astype(np.int8), T), TypeError, "x_q"),
    (lambda: ops.make_lut("tanh", 0.1, 0, 0.1, 0), TypeError, "fn"),
    (lambda: ops.make_lut(lambda x: x[:10], 0.1, 0, 0.1, 0), ValueError, "fn"),
    (lambda: ops.make_lut(lambda x: 1.0, 0.1, 0, 0.1, 0), ValueError, "fn"),
    (lambda: ops.make_lut(lambda x: np.log(x), 0.1, 0, 0.1, 0), ValueError, "fn"),  # log(0), log(<0)
    (lambda: ops.make_lut(lambda x: "abc", 0.1, 0, 0.1, 0), TypeError, "fn"),
    (lambda: ops.make_lut(np.tanh, 0.0, 0, 0.1, 0), ValueError, "in_scale"),
    (lambda: ops.make_lut(np.tanh, 0.1, 256, 0.1, 0), ValueError, "in_zp"),
    (lambda: ops.make_lut(np.tanh, 0.1, 0, -0.1, 0), ValueError, "out_scale"),
    (lambda: ops.make_lut(np.tanh, 0.1, 0, 0.1, 1.5), TypeError, "out_zp"),
]


@pytest.mark.parametrize("call,exc,name", ELTWISE_CASES, ids=[f"{c[2]}-{i}" for i, c in enumerate(ELTWISE_CASES)])
def test_bad_arguments_are_named(call, exc, name):
    with pytest.raises(exc, match=name):
        call()


def test_native_entry_points_check_sizes_themselves():
    """The C++ side re-checks what it reads: a b or table of the wrong size never reaches a loop."""
    core = qruntime._core
    a = np.zeros((4, 8), np.uint8)
    with pytest.raises(ValueError, match="b"):
        core.add(a, 0.1, 0, np.zeros(7, np.uint8), 0.1, 0, 0.1, 0, False, True)
    with pytest.raises(ValueError, match="b"):
        core.add(a, 0.1, 0, np.zeros(31, np.uint8), 0.1, 0, 0.1, 0, False, False)
    with pytest.raises(ValueError, match="a_scale"):
        core.add(a, -0.1, 0, a, 0.1, 0, 0.1, 0, False, False)
    with pytest.raises(ValueError, match="table"):
        core.lut(a, np.zeros(255, np.uint8))
    with pytest.raises(ValueError, match="outer"):
        core.concat([a, np.zeros(5, np.uint8)], 4, [0.1, 0.1], [0, 0], 0.1, 0)
    with pytest.raises(TypeError, match="uint8"):
        core.concat([a.astype(np.int16)], 4, [0.1], [0], 0.1, 0)
    with pytest.raises(ValueError, match="scales"):
        core.concat([a], 4, [0.1, 0.2], [0], 0.1, 0)
    with pytest.raises(ValueError, match=r"zps\[0\]"):
        core.concat([a], 4, [0.1], [300], 0.1, 0)
