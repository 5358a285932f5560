"""The avx2 path's two GEMM kernels: per-panel routing by the weight-pair bound, and bits equal to scalar."""
import re

import numpy as np
import pytest

import qruntime
from qruntime import ops, reference
from qruntime.model import Model

from test_engine import every_op_graph

pytestmark = pytest.mark.skipif("avx2" not in qruntime.available_isas(), reason="this host has no AVX2")

FAST_ALL = "vpmaddubsw: every packed weight pair has |w1|+|w2| <= 128"
# The pairs the kernel multiplies are (k, k + 1) for even k; these sit exactly at the bound.
AT_BOUND = [(64, 64), (-64, -64), (127, 1), (-1, -127), (127, -1), (1, 127), (0, 127), (-127, 0)]
M_SIZES = [1, 2, 4, 5, 6, 9, 17, 40, 41]
N_SIZES = [1, 8, 9, 15, 16, 17, 24, 25, 33, 50]  # tails of 8 or fewer columns take the one-vector kernel
K_SIZES = [1, 2, 3, 4, 5, 7, 8, 9, 31, 63, 64, 65, 129]


def _exact(a, b):
    return (a.astype(np.float64) @ b.astype(np.float64).T).astype(np.int64)


def _check(a, b):
    """Packs b for avx2, checks the product against numpy and scalar; returns the kernel note."""
    w = ops.pack_weights(b, isa="avx2")
    got = ops.gemm_u8s8s32(a, w)
    np.testing.assert_array_equal(got, _exact(a, b))
    np.testing.assert_array_equal(got, ops.gemm_u8s8s32(a, b, isa="scalar"))
    return w.kernel_choice


def _pairs_over(b):
    """Packed pairs (b[n, 2p], b[n, 2p+1]) with |w1| + |w2| > 128; an odd K's last weight pairs with 0."""
    k = b.shape[1]
    w = np.abs(b.astype(np.int64))
    return int((w[:, 0:k - 1:2] + w[:, 1::2] > 128).sum())


def _total_pairs(b):
    return b.shape[0] * ((b.shape[1] + 1) // 2)


def test_random_small_weights_take_vpmaddubsw(rng):
    for m in M_SIZES:
        for k in K_SIZES:
            n = N_SIZES[(m + k) % len(N_SIZES)]
            a = rng.integers(0, 256, (m, k), dtype=np.uint8)
            b = rng.integers(-64, 65, (n, k), dtype=np.int8)
            assert _check(a, b).startswith(FAST_ALL), (m, k, n)


def test_random_full_range_weights_take_vpmaddwd(rng):
    for m in M_SIZES:
        for k in [31, 63, 64, 65, 129, 1000]:
            n = N_SIZES[(m + k) % len(N_SIZES)]
            a = rng.integers(0, 256, (m, k), dtype=np.uint8)
            b = rng.integers(-127, 128, (n, k), dtype=np.int8)
            want = f"vpmaddwd: {_pairs_over(b)} of {_total_pairs(b)} weight pairs have |w1|+|w2| > 128"
            assert _check(a, b) == want, (m, k, n)


def test_large_shapes_on_both_kernels(rng):
    for m, k, n in [(256, 1024, 1024), (300, 515, 200), (4096, 64, 64)]:
        a = rng.integers(0, 256, (m, k), dtype=np.uint8)
        assert _check(a, rng.integers(-64, 65, (n, k), dtype=np.int8)).startswith(FAST_ALL)
        assert _check(a, rng.integers(-127, 128, (n, k), dtype=np.int8)).startswith("vpmaddwd: ")


@pytest.mark.parametrize("pair", AT_BOUND)
def test_every_pair_at_the_bound_is_exact(pair, rng):
    """|w1| + |w2| = 128 with activations 255: the int16 pair sums reach +-32640 and must not saturate."""
    for k in [1, 2, 3, 4, 5, 7, 63, 64, 65, 1024, 1025]:
        for m, n in [(1, 1), (5, 16), (6, 17), (41, 33)]:
            b = np.resize(np.array(pair, np.int8), (n, k))  # pairs start at even k: (w1, w2) each time
            a = np.full((m, k), 255, np.uint8)
            assert _check(a, b).startswith(FAST_ALL), (pair, k)
            assert _check(rng.integers(0, 256, (m, k), dtype=np.uint8), b).startswith(FAST_ALL)


def test_pairs_at_the_bound_mixed_per_column(rng):
    pairs = np.array(AT_BOUND, np.int8)
    for k in [2, 3, 10, 65, 130]:
        n = 37
        b = pairs[rng.integers(0, len(pairs), (n, (k + 1) // 2))].reshape(n, -1)[:, :k]
        a = np.full((9, k), 255, np.uint8)
        assert _check(a, b).startswith(FAST_ALL)
        a[:, ::3] = 0
        assert _check(a, b).startswith(FAST_ALL)


@pytest.mark.parametrize("k", [2, 3, 5, 64, 65, 1000])
def test_one_over_the_bound_routes_the_layer_to_vpmaddwd(k):
    """(64, 65) everywhere: vpmaddubsw would saturate (255 * 129 = 32895), so a wrong route shows in the bits."""
    n = 33
    b = np.resize(np.array([64, 65], np.int8), (n, k))
    a = np.full((7, k), 255, np.uint8)
    over = n * (k // 2)
    assert _check(a, b) == f"vpmaddwd: {over} of {_total_pairs(b)} weight pairs have |w1|+|w2| > 128"


def test_odd_k_last_weight_pairs_with_padding():
    # K = 3: pairs (64, 64) and (127, padding 0): both within the bound.
    b = np.array([[64, 64, 127]] * 20, np.int8)
    assert _check(np.full((6, 3), 255, np.uint8), b).startswith(FAST_ALL)
    # The (64, 65) pair sits between two pairs, not inside one: (0, 64), (65, 0) are fine.
    b = np.array([[0, 64, 65, 0]] * 20, np.int8)
    assert _check(np.full((6, 4), 255, np.uint8), b).startswith(FAST_ALL)


def test_panels_of_one_layer_take_different_kernels(rng):
    """Columns 16-31 (panel 1) hold one pair over the bound; panels 0, 2, 3 stay on vpmaddubsw."""
    k, n = 130, 50
    b = rng.integers(-64, 65, (n, k), dtype=np.int8)
    b[20, 40:42] = (-64, -65)
    a = np.full((45, k), 255, np.uint8)
    note = _check(a, b)
    assert note.startswith(f"vpmaddubsw on 3 of 4 panels, vpmaddwd on 1: 1 of {n * 65} weight pairs have |w1|+|w2| > 128")
    a = rng.integers(0, 256, (45, k), dtype=np.uint8)
    assert _check(a, b) == note
    # Dropping leading columns moves the offending column to other panel positions, then out.
    for n0 in [1, 5, 16, 20, 21, 33]:
        note = _check(a, b[n0:])
        assert note.startswith(FAST_ALL) if n0 > 20 else "vpmaddwd on 1: 1 of" in note, n0


@pytest.mark.parametrize("limit", [64, 127])
def test_requantized_output_equals_scalar(limit, rng):
    m, k, n = 23, 77, 45
    x = rng.integers(0, 256, (m, k), dtype=np.uint8)
    w = rng.integers(-limit, limit + 1, (n, k), dtype=np.int8)
    w_scale = rng.uniform(0.002, 0.01, n).astype(np.float32)
    bias = rng.normal(0, 1, n).astype(np.float32)
    for relu in (False, True):
        args = (x, 0.02, 128, w, w_scale, bias, 0.5, 100, relu)
        np.testing.assert_array_equal(ops.linear(*args, isa="avx2"), ops.linear(*args, isa="scalar"))


@pytest.mark.parametrize("limit", [64, 127])
@pytest.mark.parametrize("icg", [3, 4, 5])
def test_conv2d_equals_scalar(limit, icg, rng):
    """k x k conv rows come from im2col: K = 9 * channels per group covers both reads of A, in place
    (K % 4 == 0) and padded."""
    x = rng.integers(0, 256, (2, icg * 2, 11, 13), dtype=np.uint8)
    w_scale = rng.uniform(0.002, 0.01, 18).astype(np.float32)
    for groups in (1, 2):
        w = rng.integers(-limit, limit + 1, (18, icg * 2 // groups, 3, 3), dtype=np.int8)
        args = (x, 0.03, 7, w, w_scale, None, 0.4, 3)
        kw = dict(stride=(1, 2), padding=1, groups=groups)
        np.testing.assert_array_equal(ops.conv2d(*args, **kw, isa="avx2"), ops.conv2d(*args, **kw, isa="scalar"))


def test_engine_reports_the_kernel_choice(rng):
    graph, tensors = every_op_graph(rng)
    tensors["e1.weight"] = np.clip(tensors["e1.weight"], -64, 64)  # 1x1 conv, K = 8
    fc = tensors["fc.weight"]  # linear, K = 48, full range
    model = Model(graph, tensors, isa="avx2")
    x = rng.normal(0, 1.5, (2, 3, 9, 9)).astype(np.float32)
    kernels = {r["name"]: r["kernel"] for r in model.profile(x, repeat=1)}
    assert kernels["e1"].startswith(f"gemm avx2 ({FAST_ALL}")
    assert kernels["c1"].startswith("direct avx2 (direct: 3-channel 3x3")  # a first layer: no GEMM
    over = f"{_pairs_over(fc)} of {_total_pairs(fc)} weight pairs have |w1|+|w2| > 128"
    assert kernels["fc"] == f"gemm avx2 (vpmaddwd: {over})"
    assert kernels["d1"] == "dwconv avx2 (vpmaddwd: fewer than 32 channels)"  # 8 channels
    assert f"gemm avx2 ({FAST_ALL}" in model.summary()
    # The first output is the dequantized end of the int8 chain: exact, so equal to scalar's.
    np.testing.assert_array_equal(model.run(x)[0], Model(graph, tensors, isa="scalar").run(x)[0])


def test_other_paths_have_no_kernel_choice():
    b = np.ones((3, 5), np.int8)

    def dw_choice(isa):
        return ops.pack_conv2d(np.ones((32, 1, 3, 3), np.int8), groups=32, isa=isa).dw_kernel_choice

    for isa in qruntime.available_isas(emulated=True):
        if isa != "avx2":
            assert ops.pack_weights(b, isa=isa).kernel_choice == ""
            # The AVX-512 paths (amx reuses them for depthwise) and the avx_vnni ones have one depthwise
            # kernel, on packed tap quads; AVX-512's quads of a 3x3 are its columns.
            avx512 = isa.startswith(("avx512", "amx"))
            want = "" if isa == "scalar" else "vpdpbusd on tap quads, by columns" if avx512 else "vpdpbusd on tap quads"
            assert dw_choice(isa) == want


# A conv whose group spans every channel, with dilation 1 across and kw * channels a multiple of 4,
# hands the avx2 path its rows as segments (one per tap row, read from the input in place; windows
# that meet the padding are gathered); other convs, and layers with a vpmaddwd panel, take whole rows.
@pytest.mark.parametrize("c,k,stride,pad,dil", [
    (4, 3, 1, 1, 1), (8, 3, 2, 1, 1), (32, 3, 1, 0, 1), (32, 3, 1, 1, 1), (12, 5, 2, 2, 1), (8, 1, 1, 0, 1),
    (16, 3, 1, 2, (2, 1)),  # dilated down only: segments still contiguous
    (8, 3, 1, 2, (1, 2)),   # dilated across: whole rows
    (32, 3, 1, 2, (1, 2)),  # whole rows, B packed in runs of 96 bytes (limit 16: pairs in runs)
    (3, 3, 1, 1, 1),        # 9 bytes per tap row: whole rows
    (4, 2, 1, (0, 1, 1, 0), 1),
])
@pytest.mark.parametrize("limit", [64, 127, 16])  # 16: K >= 96 pairs its groups (all but a few)
@pytest.mark.parametrize("n_out", [40, 41])  # a last panel of 8 columns (one vector) and of 9 (two)
def test_conv_rows_as_segments_equal_scalar(c, k, stride, pad, dil, limit, n_out, rng):
    x = rng.integers(0, 256, (2, c, 13, 17), dtype=np.uint8)
    w = rng.integers(-limit, limit + 1, (n_out, c, k, k), dtype=np.int8)
    w_scale = rng.uniform(0.002, 0.01, n_out).astype(np.float32)
    bias = rng.normal(0, 1, n_out).astype(np.float32)
    args = (x, 0.03, 7, w, w_scale, bias, 0.4, 3)
    kw = dict(stride=stride, padding=pad, dilation=dil)
    # Packed for any geometry: the GEMM (for its own geometry a stride-1 3x3 conv would run Winograd).
    got = ops.conv2d(x, 0.03, 7, ops.pack_conv2d(w, isa="avx2"), w_scale, bias, 0.4, 3, **kw)
    np.testing.assert_array_equal(got, ops.conv2d(*args, **kw, isa="scalar"))
    np.testing.assert_array_equal(got, reference.conv2d(*args, **kw))


def test_conv_segments_with_a_vpmaddwd_panel_equal_scalar(rng):
    """One panel over the bound: the block's rows are put together from the segments for it."""
    x = rng.integers(0, 256, (1, 16, 12, 12), dtype=np.uint8)
    w = rng.integers(-64, 65, (40, 16, 3, 3), dtype=np.int8)
    w[35, 0, 0, 0], w[35, 1, 0, 0] = 64, 65   # column 35 (third panel): K 0 and 1 (tap 0, channels 0, 1)
    b = np.ascontiguousarray(w.transpose(0, 2, 3, 1).reshape(40, -1))  # the conv's B: K ordered (ky, kx, ic)
    assert ops.pack_weights(b, isa="avx2").kernel_choice.startswith("vpmaddubsw on 2 of 3 panels, vpmaddwd on 1")
    args = (x, 0.03, 7, w, np.full(40, 0.004, np.float32), None, 0.4, 3)
    gemm = ops.pack_conv2d(w, isa="avx2")  # for any geometry: the GEMM, not Winograd
    np.testing.assert_array_equal(ops.conv2d(x, 0.03, 7, gemm, *args[4:], padding=1),
                                  ops.conv2d(*args, padding=1, isa="scalar"))


# Pairs of groups of 4 K (gemm_avx2_maddubs.h, kQuadBound): their int16 sums are added before one
# vpmaddwd, exact when every column's 4 weights of each half of the two groups sum to |w| <= 128.
def _paired(note):
    """(groups paired, groups in vpmaddubsw panels) from a kernel note; (0, 0) without pairs."""
    m = re.search(r"; (\d+) of (\d+) groups of 4 K summed in int16 pairs \(sum of 4 \|w\| <= 128\)$", note)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def _halves_at(value, n, groups, signs=(1, 1, 1, 1)):
    """Weights whose every half group (K 2h, 2h + 1) has |w1| + |w2| = value, split many ways."""
    splits = [(value, 0), (0, value), (value // 2, value - value // 2), (1, value - 1), (value - 1, 1)]
    b = np.zeros((n, 4 * groups), np.int8)
    for j in range(n):
        for p in range(0, 4 * groups, 2):
            w1, w2 = splits[(j + p // 2) % len(splits)]
            b[j, p], b[j, p + 1] = w1 * signs[p % 4], w2 * signs[(p + 1) % 4]
    return b


@pytest.mark.parametrize("signs", [(1, 1, 1, 1), (-1, -1, -1, -1), (1, -1, 1, -1), (1, 1, -1, -1)])
def test_pairs_at_the_quad_bound_are_exact(signs, rng):
    """Any two groups sit exactly at the bound (64 + 64 per half); activations of 255 make the int16
    sums +-255 * 128, the largest the bound allows."""
    g, n = 30, 33
    b = _halves_at(64, n, g, signs)
    note = _check(np.full((11, 4 * g), 255, np.uint8), b)
    assert note.startswith(FAST_ALL) and _paired(note) == (3 * g, 3 * g)
    assert _check(rng.integers(0, 256, (11, 4 * g), dtype=np.uint8), b) == note


def test_a_group_over_the_quad_bound_by_one_stays_single(rng):
    g = 30
    b = _halves_at(64, 16, g)
    b[5, 28:30] = (64, 1)  # group 7, column 5: a half of 65 fits no partner (65 + 64 > 128)
    note = _check(np.full((9, 4 * g), 255, np.uint8), b)
    assert note.startswith(FAST_ALL) and _paired(note) == (g - 2, g)  # group 7 and one of the other 29
    _check(rng.integers(0, 256, (9, 4 * g), dtype=np.uint8), b)


@pytest.mark.parametrize("k", [96, 97, 130, 203, 1000])
def test_pairs_with_row_and_column_tails_equal_scalar(k, rng):
    """Small weights pair (nearly) every group; every tile height (1-5 rows) and both column
    kernels (<= 8 valid columns: one vector)."""
    for m in [1, 2, 3, 4, 5, 6, 11, 40, 41]:
        n = [1, 8, 9, 16, 17, 24, 33][m % 7]
        b = rng.integers(-16, 17, (n, k), dtype=np.int8)
        paired, total = _paired(_check(rng.integers(0, 256, (m, k), dtype=np.uint8), b))
        assert paired >= total - 2 * ((n + 15) // 16) and total == (n + 15) // 16 * ((k + 3) // 4), (m, n, k)


def test_few_groups_or_few_pairs_keep_k_order(rng):
    # Under 24 groups the kernel without the table runs; uniform weights of +-64 rarely pair at all.
    assert _paired(_check(rng.integers(0, 256, (7, 92), dtype=np.uint8), rng.integers(-16, 17, (20, 92), dtype=np.int8))) == (0, 0)
    assert _paired(_check(rng.integers(0, 256, (7, 200), dtype=np.uint8), rng.integers(-64, 65, (20, 200), dtype=np.int8))) == (0, 0)


def test_paired_conv_segments_and_threads_equal_scalar(rng, threads):
    """A 3x3 conv of 32 channels: runs of 24 groups (its segments), pairs inside each; at 2 threads a
    batch of few rows splits the panels and gathers the segments into rows once."""
    w = rng.integers(-16, 17, (48, 32, 3, 3), dtype=np.int8)
    b = np.ascontiguousarray(w.transpose(0, 2, 3, 1).reshape(48, -1))
    assert _paired(ops.pack_weights(b, isa="avx2").kernel_choice)[0] > 0
    w_scale = rng.uniform(0.002, 0.01, 48).astype(np.float32)
    for shape in [(2, 32, 12, 12), (1, 32, 3, 3)]:
        x = rng.integers(0, 256, shape, dtype=np.uint8)
        args = (x, 0.03, 7, w, w_scale, None, 0.4, 3)
        want = ops.conv2d(*args, padding=1, isa="scalar")
        gemm = ops.pack_conv2d(w, isa="avx2")  # for any geometry: the GEMM, not Winograd
        for t in (1, 2, 3):
            qruntime.set_num_threads(t)
            np.testing.assert_array_equal(ops.conv2d(x, 0.03, 7, gemm, w_scale, None, 0.4, 3, padding=1), want)
