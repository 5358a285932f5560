"""Pooling (max, average, adaptive average): exact against the numpy reference of docs/quantization.md,
against PyTorch's quantized ops (x86 engine), at 1-3 threads, and bad arguments rejected by name."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import qruntime
from qruntime import ops

from qruntime import reference as ref
from lsb import LsbTally

# Fixed seed (derandomize), no example database written into the tree, bounded run time.
SETTINGS = settings(max_examples=150, derandomize=True, database=None, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

SCALES = st.sampled_from([0.0123, 0.05, 0.1, 0.37, 1.0, 2.5])
ZPS = st.sampled_from([0, 1, 77, 127, 128, 200, 255])


def _input(seed, shape):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


@st.composite
def pool_cases(draw, dilated):
    """A valid pooling configuration: the kernel (dilated) fits in the padded input."""
    kh, kw = draw(st.integers(1, 7)), draw(st.integers(1, 7))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    dh, dw = (draw(st.integers(1, 3)), draw(st.integers(1, 3))) if dilated else (1, 1)
    ph, pw = draw(st.integers(0, kh // 2)), draw(st.integers(0, kw // 2))
    h = draw(st.integers(max(1, dh * (kh - 1) + 1 - 2 * ph), 40))
    w = draw(st.integers(max(1, dw * (kw - 1) + 1 - 2 * pw), 40))
    n, c = draw(st.integers(1, 3)), draw(st.integers(1, 70))
    ceil_mode = draw(st.booleans())
    x = _input(draw(st.integers(0, 2**32 - 1)), (n, c, h, w))
    return x, dict(kernel_size=(kh, kw), stride=(sh, sw), padding=(ph, pw), ceil_mode=ceil_mode), (dh, dw)


@SETTINGS
@given(pool_cases(dilated=True))
def test_max_pool2d_equals_reference(case):
    x, kw, dilation = case
    got = ops.max_pool2d(x, dilation=dilation, **kw)
    np.testing.assert_array_equal(got, ref.max_pool2d(x, dilation=dilation, **kw))


@SETTINGS
@given(pool_cases(dilated=False), SCALES, ZPS, st.booleans(), st.one_of(st.none(), st.integers(1, 60)),
       st.one_of(st.none(), st.tuples(SCALES, ZPS)))
def test_avg_pool2d_equals_reference(case, scale, zp, count_include_pad, divisor, out_q):
    x, kw, _ = case
    out_scale, out_zp = out_q if out_q else (None, None)
    args = dict(kw, count_include_pad=count_include_pad, divisor_override=divisor, out_scale=out_scale, out_zp=out_zp)
    got = ops.avg_pool2d(x, scale, zp, **args)
    np.testing.assert_array_equal(got, ref.avg_pool2d(x, scale, zp, **args))


@SETTINGS
@given(st.integers(1, 3), st.integers(1, 70), st.integers(1, 40), st.integers(1, 40), st.integers(1, 45),
       st.integers(1, 45), SCALES, ZPS, st.one_of(st.none(), st.tuples(SCALES, ZPS)), st.integers(0, 2**32 - 1))
def test_adaptive_avg_pool2d_equals_reference(n, c, h, w, oh, ow, scale, zp, out_q, seed):
    x = _input(seed, (n, c, h, w))
    out_scale, out_zp = out_q if out_q else (None, None)
    got = ops.adaptive_avg_pool2d(x, scale, zp, (oh, ow), out_scale, out_zp)
    assert got.shape == (n, c, oh, ow)
    np.testing.assert_array_equal(got, ref.adaptive_avg_pool2d(x, scale, zp, (oh, ow), out_scale, out_zp))


def test_max_pool_ignores_padding_not_zero():
    # Every real value is negative (codes 10 < zp 100): padding read as real 0 (code 100) would win
    # at the border; ignored padding leaves 10 everywhere.
    x = np.full((1, 2, 5, 5), 10, np.uint8)
    np.testing.assert_array_equal(ops.max_pool2d(x, 3, 1, 1), np.full((1, 2, 5, 5), 10, np.uint8))


def test_max_pool_window_missing_the_input_gives_code_zero():
    # h = w = 2, kernel 2 dilated by 3, padding 1: the one window samples rows -1 and 2 only.
    x = np.full((1, 1, 2, 2), 200, np.uint8)
    np.testing.assert_array_equal(ops.max_pool2d(x, 2, 1, 1, 3), [[[[0]]]])


@pytest.mark.parametrize("zp", [0, 1, 2, 127])
def test_avg_pool_ties_go_to_the_even_code_whatever_the_zero_point(zp):
    # Means 1.5 and 2.5 of the codes: half-even gives 2 and 2. Rounding (mean - zp) first and adding
    # zp afterwards would make these depend on zp's parity.
    x = np.array([[[[1, 2, 2, 3], [1, 2, 2, 3]]]], np.uint8)
    np.testing.assert_array_equal(ops.avg_pool2d(x, 0.1, zp, 2), [[[[2, 2]]]])


def test_avg_pool_divisors():
    # 3x3 input of code 9 (zp 0), kernel 3, padding 1 -> corner windows hold 4 inputs of 9 positions.
    x = np.full((1, 1, 3, 3), 9, np.uint8)
    np.testing.assert_array_equal(ops.avg_pool2d(x, 1.0, 0, 3, 1, 1)[0, 0, 0], [4, 6, 4])  # 36/9, 54/9, 36/9
    np.testing.assert_array_equal(ops.avg_pool2d(x, 1.0, 0, 3, 1, 1, count_include_pad=False)[0, 0, 0], [9, 9, 9])
    np.testing.assert_array_equal(ops.avg_pool2d(x, 1.0, 0, 3, 1, 1, divisor_override=2)[0, 0, 0], [18, 27, 18])
    # Output quantization: real 9 at scale 0.5, zp 3 is code 21.
    np.testing.assert_array_equal(ops.avg_pool2d(x, 1.0, 0, 3, 1, 1, False, False, None, 0.5, 3)[0, 0, 0], [21] * 3)


def test_adaptive_windows_overlap_like_torch():
    # h = 5 to 3 outputs: windows [0, 2), [1, 4), [3, 5).
    x = np.array([[[[0, 30, 60, 90, 120]]]], np.uint8).transpose(0, 1, 3, 2).copy()
    got = ops.adaptive_avg_pool2d(x, 1.0, 0, (3, 1))
    np.testing.assert_array_equal(got[0, 0, :, 0], [15, 60, 105])


def test_nchw_layout_and_non_contiguous_input(rng):
    x = rng.integers(0, 256, (2, 3, 8, 6), dtype=np.uint8)
    per_channel = np.stack([ops.max_pool2d(x[:, c:c + 1], 2) for c in range(3)], axis=1)[:, :, 0]
    np.testing.assert_array_equal(ops.max_pool2d(x, 2), per_channel)
    xt = np.asfortranarray(x)
    np.testing.assert_array_equal(ops.avg_pool2d(xt, 0.1, 5, 3, 2, 1), ops.avg_pool2d(x, 0.1, 5, 3, 2, 1))
    empty = ops.max_pool2d(np.zeros((0, 4, 5, 5), np.uint8), 2)
    assert empty.shape == (0, 4, 2, 2)
    assert ops.avg_pool2d(np.zeros((2, 0, 5, 5), np.uint8), 0.1, 0, 2).shape == (2, 0, 2, 2)


@pytest.mark.parametrize("n_threads", [1, 2, 3])
def test_thread_counts_give_identical_results(rng, threads, n_threads):
    # Big enough that every op splits into many tasks.
    x = rng.integers(0, 256, (2, 64, 57, 57), dtype=np.uint8)
    qruntime.set_num_threads(n_threads)
    np.testing.assert_array_equal(ops.max_pool2d(x, 3, 2, 1, ceil_mode=True), ref.max_pool2d(x, 3, 2, 1, ceil_mode=True))
    np.testing.assert_array_equal(ops.avg_pool2d(x, 0.05, 17, 3, 2, 1, True, False, None, 0.07, 3),
                                  ref.avg_pool2d(x, 0.05, 17, 3, 2, 1, True, False, None, 0.07, 3))
    np.testing.assert_array_equal(ops.adaptive_avg_pool2d(x, 0.05, 17, (7, 9)),
                                  ref.adaptive_avg_pool2d(x, 0.05, 17, (7, 9)))


# ---- PyTorch's quantized ops (x86 engine) as the outside oracle ----

torch = pytest.importorskip("torch")
F = torch.nn.functional


def _tq(x, scale, zp):
    torch.backends.quantized.engine = "x86"
    return torch._make_per_tensor_quantized_tensor(torch.from_numpy(x), scale, zp)


def _configs(rng, count, dilated):
    for _ in range(count):
        k = tuple(int(v) for v in rng.integers(1, 8, 2))
        s = tuple(int(v) for v in rng.integers(1, 4, 2))
        d = tuple(int(v) for v in rng.integers(1, 4, 2)) if dilated else (1, 1)
        p = (int(rng.integers(0, k[0] // 2 + 1)), int(rng.integers(0, k[1] // 2 + 1)))
        h = int(rng.integers(max(1, d[0] * (k[0] - 1) + 1 - 2 * p[0]), 41))
        w = int(rng.integers(max(1, d[1] * (k[1] - 1) + 1 - 2 * p[1]), 41))
        shape = (int(rng.integers(1, 4)), int(rng.integers(1, 71)), h, w)
        yield rng.integers(0, 256, shape, dtype=np.uint8), k, s, p, d, bool(rng.integers(0, 2))


def test_max_pool2d_equals_torch(rng):
    for x, k, s, p, d, ceil_mode in _configs(rng, 80, dilated=True):
        theirs = F.max_pool2d(_tq(x, 0.1, 7), k, s, p, d, ceil_mode=ceil_mode).int_repr().numpy()
        np.testing.assert_array_equal(ops.max_pool2d(x, k, s, p, d, ceil_mode), theirs, err_msg=f"{k} {s} {p} {d}")


def test_avg_pool2d_within_one_lsb_of_torch(rng):
    """PyTorch's NCHW average pool computes nearbyint(float(sum) * float(1 / d) + zp) in float32,
    the formula of docs/quantization.md, so the two agree bit for bit here (ties included)."""
    tally = LsbTally(min_total=100_000)
    for i, (x, k, s, p, _, ceil_mode) in enumerate(_configs(rng, 80, dilated=False)):
        scale, zp = [(0.05, 0), (0.1, 1), (0.0123, 127), (0.37, 200)][i % 4]
        cip = i % 3 != 0
        div = [None, None, 3, 10][i % 4]
        theirs = F.avg_pool2d(_tq(x, scale, zp), k, s, p, ceil_mode, cip, div).int_repr().numpy()
        tally.add(ops.avg_pool2d(x, scale, zp, k, s, p, ceil_mode, cip, div), theirs, f"{k} {s} {p}")
    tally.check()


def _random_qparams(rng):
    """A scale as calibration would give one (any float32, log-uniform) and a zero point."""
    return float(np.float32(np.exp(rng.uniform(np.log(0.002), np.log(0.5))))), int(rng.integers(0, 256))


def test_adaptive_avg_pool2d_within_one_lsb_of_torch(rng):
    """PyTorch rounds the mean of the raw codes, sum(q) * float32 reciprocal built as
    ((1 / kh) / kw) in float32; ours uses float32(1 / (kh kw)) on sum(q - zp) and adds zp before
    rounding (docs/quantization.md). The two can only part next to a .5 boundary."""
    tally = LsbTally(min_total=100_000)
    for i in range(150):
        n, c, h, w = int(rng.integers(1, 4)), int(rng.integers(1, 71)), int(rng.integers(1, 41)), int(rng.integers(1, 41))
        if h == w == 1 and c > 1:
            continue  # PyTorch is wrong there: test_adaptive_from_one_pixel_repeats_it
        out = (int(rng.integers(1, 46)), int(rng.integers(1, 46)))
        x = rng.integers(0, 256, (n, c, h, w), dtype=np.uint8)
        scale, zp = _random_qparams(rng)
        theirs = F.adaptive_avg_pool2d(_tq(x, scale, zp), out).int_repr().numpy()
        tally.add(ops.adaptive_avg_pool2d(x, scale, zp, out), theirs, f"{x.shape} -> {out}")
    tally.check()


def test_adaptive_from_one_pixel_repeats_it(rng):
    """Every window of a 1x1 input is that pixel. PyTorch's quantized op gets this wrong for C > 1:
    an (N, C, 1, 1) tensor counts as channels-last contiguous too, and its channels-last kernel then
    reads the wrong elements (values off by up to 255). Its float op is the oracle here."""
    x = rng.integers(0, 256, (2, 5, 1, 1), dtype=np.uint8)
    for out in [(1, 1), (2, 3), (7, 1)]:
        got = ops.adaptive_avg_pool2d(x, 0.1, 3, out)
        np.testing.assert_array_equal(got, np.broadcast_to(x, (2, 5) + out))
        as_float = F.adaptive_avg_pool2d(torch.from_numpy(x).float(), out).numpy()
        np.testing.assert_array_equal(got, as_float.astype(np.uint8))


# ---- bad arguments ----

X = np.zeros((1, 2, 6, 6), np.uint8)

POOL_CASES = [
    # (call, exception, the argument the message must name)
    (lambda: ops.max_pool2d(X.astype(np.int8), 2), TypeError, "x_q"),
    (lambda: ops.max_pool2d(X.tolist(), 2), TypeError, "x_q"),
    (lambda: ops.max_pool2d(X[0], 2), ValueError, "x_q"),
    (lambda: ops.max_pool2d(np.zeros((1, 2, 0, 6), np.uint8), 1), ValueError, "x_q"),
    (lambda: ops.max_pool2d(X, 0), ValueError, "kernel_size"),
    (lambda: ops.max_pool2d(X, -2), ValueError, "kernel_size"),
    (lambda: ops.max_pool2d(X, 2.0), TypeError, "kernel_size"),
    (lambda: ops.max_pool2d(X, (2, 2, 2)), ValueError, "kernel_size"),
    (lambda: ops.max_pool2d(X, True), TypeError, "kernel_size"),
    (lambda: ops.max_pool2d(X, 2**40), ValueError, "kernel_size"),
    (lambda: ops.max_pool2d(X, 7), ValueError, "kernel_size"),  # larger than the (unpadded) input
    (lambda: ops.max_pool2d(X, 3, dilation=3), ValueError, "kernel_size"),  # 7 wide once dilated
    (lambda: ops.max_pool2d(X, 2, stride=0), ValueError, "stride"),
    (lambda: ops.max_pool2d(X, 2, stride=(1, -1)), ValueError, "stride"),
    (lambda: ops.max_pool2d(X, 2, dilation=0), ValueError, "dilation"),
    (lambda: ops.max_pool2d(X, 2, padding=-1), ValueError, "padding"),
    (lambda: ops.max_pool2d(X, 3, padding=2), ValueError, "padding"),  # more than half the kernel
    (lambda: ops.max_pool2d(X, (3, 5), padding=(1, 3)), ValueError, "padding"),
    (lambda: ops.max_pool2d(X, 2, ceil_mode=1), TypeError, "ceil_mode"),
    (lambda: ops.avg_pool2d(X, 0.1, 0, 3, padding=2), ValueError, "padding"),
    (lambda: ops.avg_pool2d(X, 0.1, 0, 7), ValueError, "kernel_size"),
    (lambda: ops.avg_pool2d(X, 0.1, 0, 2, stride=0), ValueError, "stride"),
    (lambda: ops.avg_pool2d(X, 0.0, 0, 2), ValueError, "x_scale"),
    (lambda: ops.avg_pool2d(X, float("nan"), 0, 2), ValueError, "x_scale"),
    (lambda: ops.avg_pool2d(X, 0.1, 256, 2), ValueError, "x_zp"),
    (lambda: ops.avg_pool2d(X, 0.1, 1.0, 2), TypeError, "x_zp"),
    (lambda: ops.avg_pool2d(X, 0.1, 0, 2, out_scale=-1.0), ValueError, "out_scale"),
    (lambda: ops.avg_pool2d(X, 0.1, 0, 2, out_zp=-1), ValueError, "out_zp"),
    (lambda: ops.avg_pool2d(X, 0.1, 0, 2, divisor_override=0), ValueError, "divisor_override"),
    (lambda: ops.avg_pool2d(X, 0.1, 0, 2, divisor_override=-3), ValueError, "divisor_override"),
    (lambda: ops.avg_pool2d(X, 0.1, 0, 2, divisor_override=2.0), TypeError, "divisor_override"),
    (lambda: ops.avg_pool2d(X, 0.1, 0, 2, count_include_pad=None), TypeError, "count_include_pad"),
    (lambda: ops.avg_pool2d(X, 1e-30, 0, 2, out_scale=1e30), ValueError, "scale"),  # multiplier underflows
    (lambda: ops.adaptive_avg_pool2d(X, 0.1, 0, 0), ValueError, "output_size"),
    (lambda: ops.adaptive_avg_pool2d(X, 0.1, 0, (2, 0)), ValueError, "output_size"),
    (lambda: ops.adaptive_avg_pool2d(X, 0.1, 0, (2, 2, 2)), ValueError, "output_size"),
    (lambda: ops.adaptive_avg_pool2d(X, 0.1, 0, "2"), TypeError, "output_size"),
    (lambda: ops.adaptive_avg_pool2d(X, 0.1, 0, (None, 1.5)), TypeError, "output_size"),
    (lambda: ops.adaptive_avg_pool2d(X.astype(np.float32), 0.1, 0, 2), TypeError, "x_q"),
    (lambda: ops.adaptive_avg_pool2d(X, 0.1, -1, 2), ValueError, "x_zp"),
]


@pytest.mark.parametrize("call,exc,name", POOL_CASES, ids=[f"{c[2]}-{i}" for i, c in enumerate(POOL_CASES)])
def test_bad_arguments_are_named(call, exc, name):
    with pytest.raises(exc, match=name):
        call()


def test_windows_too_big_for_int32_sums_are_rejected():
    x = np.zeros((1, 1, 2902, 2902), np.uint8)  # 2902^2 = 8,421,604 > (2^31 - 1) / 255
    with pytest.raises(ValueError, match="kernel_size"):
        ops.avg_pool2d(x, 0.1, 0, 2902)
    with pytest.raises(ValueError, match="output_size"):
        ops.adaptive_avg_pool2d(x, 0.1, 0, 1)
    assert ops.max_pool2d(x, 2902).shape == (1, 1, 1, 1)  # max needs no sum


def test_native_entry_points_check_shapes_themselves():
    """The C++ side re-checks what the numpy front already did: no call reads out of bounds."""
    core = qruntime._core
    with pytest.raises(ValueError, match="x_q"):
        core.max_pool2d(np.zeros((6, 6, 2), np.uint8), (2, 2), (2, 2), (0, 0), (1, 1), False)
    with pytest.raises(ValueError, match="padding"):
        core.max_pool2d(np.zeros((1, 6, 6, 2), np.uint8), (2, 2), (2, 2), (5, 5), (1, 1), False)
    with pytest.raises(ValueError, match="stride"):
        core.avg_pool2d(np.zeros((1, 6, 6, 2), np.uint8), 0.1, 0, (2, 2), (0, 1), (0, 0), False, True, 0, 0.1, 0)
    with pytest.raises(ValueError, match="divisor_override"):
        core.avg_pool2d(np.zeros((1, 6, 6, 2), np.uint8), 0.1, 0, (2, 2), (1, 1), (0, 0), False, True, -1, 0.1, 0)
    with pytest.raises(ValueError, match="x_scale"):
        core.adaptive_avg_pool2d(np.zeros((1, 6, 6, 2), np.uint8), 0.0, 0, (2, 2), 0.1, 0)
    with pytest.raises(TypeError):
        core.max_pool2d(np.zeros((1, 6, 6, 2), np.int8), (2, 2), (2, 2), (0, 0), (1, 1), False)
