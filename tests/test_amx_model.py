"""The scalar AMX tile model of the emulated build, checked against hand-worked tiles, and the
packed weight layouts of every path checked against docs/kernels.md."""
import struct

import numpy as np
import pytest

import qruntime
from qruntime import ops

core = pytest.importorskip("qruntime._core")
if not hasattr(core, "_amx_model"):
    pytest.skip("this build has no emulated ISA paths (QRUNTIME_EMULATED_ISAS=OFF)", allow_module_level=True)
amx = core._amx_model


def config(shapes, palette=1):
    """A 64-byte palette-1 tile config: shapes maps tile -> (rows, colsb)."""
    colsb = [0] * 16
    rows = [0] * 16
    for t, (r, c) in shapes.items():
        rows[t], colsb[t] = r, c
    return struct.pack("<BB14x16H16B", palette, 0, *colsb, *rows)


@pytest.fixture(autouse=True)
def _release():
    yield
    amx.release()


def load(t, values, dtype=np.uint8):
    amx.loadd(t, np.ascontiguousarray(np.asarray(values, dtype=dtype).view(np.uint8)))


def stored_i32(t, rows, cols):
    return amx.stored(t, rows, cols * 4).view(np.int32)


def test_hand_worked_partial_tile():
    # C (2x2 int32) += A (2 rows x 8 bytes: K = 8) . B (2 rows of 4-byte groups x 2 columns).
    amx.loadconfig(config({0: (2, 8), 1: (2, 8), 2: (2, 8)}))
    load(1, [[1, 2, 3, 4, 5, 6, 7, 8], [255, 0, 0, 0, 0, 0, 0, 255]])
    # B row g holds k = 4g..4g+3 of column 0, then of column 1.
    # column 0: k0..7 = 1, 1, 1, 1, 1, 1, 1, 1; column 1: k0..7 = -1, 0, 0, 0, 0, 0, 0, 2
    load(2, [[1, 1, 1, 1, -1, 0, 0, 0], [1, 1, 1, 1, 0, 0, 0, 2]], dtype=np.int8)
    amx.zero(0)
    amx.dpbusd(0, 1, 2)
    # row 0: col 0 = 1+2+...+8 = 36; col 1 = -1 + 2*8 = 15
    # row 1: col 0 = 255 + 255 = 510; col 1 = -255 + 2*255 = 255
    np.testing.assert_array_equal(stored_i32(0, 2, 2), [[36, 15], [510, 255]])


def test_accumulates_over_calls_and_extremes():
    amx.loadconfig(config({0: (16, 64), 4: (16, 64), 6: (16, 64)}))
    load(4, np.full((16, 64), 255))
    load(6, np.full((16, 64), -127), dtype=np.int8)
    amx.zero(0)
    for _ in range(3):
        amx.dpbusd(0, 4, 6)
    np.testing.assert_array_equal(stored_i32(0, 16, 16), np.full((16, 16), 3 * 64 * 255 * -127))


def test_k_not_a_multiple_of_four_relies_on_zero_padding():
    # K = 6 real values: the packer pads B with zeros to K = 8, so whatever A holds in its last two
    # bytes (here 255) contributes nothing.
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (3, 8), dtype=np.uint8)
    a[:, 6:] = 255
    w = rng.integers(-127, 128, (5, 6), dtype=np.int8)  # 5 columns, K = 6
    b = np.zeros((2, 5, 4), np.int8)
    for n in range(5):
        for k in range(6):
            b[k // 4, n, k % 4] = w[n, k]
    amx.loadconfig(config({0: (3, 20), 1: (3, 8), 2: (2, 20)}))
    load(1, a)
    load(2, b.reshape(2, 20), dtype=np.int8)
    amx.zero(0)
    amx.dpbusd(0, 1, 2)
    want = a[:, :6].astype(np.int64) @ w.T.astype(np.int64)
    np.testing.assert_array_equal(stored_i32(0, 3, 5), want)


def test_store_writes_only_the_configured_shape():
    amx.loadconfig(config({3: (2, 4)}))
    amx.zero(3)
    out = amx.stored(3, 3, 8)
    np.testing.assert_array_equal(out[:2, :4], 0)
    assert np.all(out[2] == 0xAB) and np.all(out[:, 4:] == 0xAB)


@pytest.mark.parametrize(
    "setup,call,match",
    [
        (None, lambda: amx.zero(0), "before ldtilecfg"),
        ({0: (16, 64)}, lambda: amx.zero(8), "out of range"),
        ({0: (16, 64)}, lambda: amx.zero(1), "not configured"),
        ({0: (2, 8), 1: (2, 8), 2: (3, 8)}, lambda: amx.dpbusd(0, 1, 2), "rows\\(B\\)"),
        ({0: (2, 8), 1: (3, 8), 2: (2, 8)}, lambda: amx.dpbusd(0, 1, 2), "rows\\(A\\)"),
        ({0: (2, 12), 1: (2, 8), 2: (2, 8)}, lambda: amx.dpbusd(0, 1, 2), "colsb\\(B\\)"),
        ({0: (2, 8), 1: (2, 8)}, lambda: amx.dpbusd(0, 1, 1), "different tiles"),
    ],
)
def test_faults(setup, call, match):
    if setup is not None:
        amx.loadconfig(config(setup))
    with pytest.raises(RuntimeError, match=match):
        call()


@pytest.mark.parametrize("bad,match", [({0: (17, 64)}, "exceeds"), ({0: (16, 65)}, "exceeds"), ({0: (0, 8)}, "not both")])
def test_bad_configs_fault(bad, match):
    with pytest.raises(RuntimeError, match=match):
        amx.loadconfig(config(bad))
    with pytest.raises(RuntimeError, match="palette"):
        amx.loadconfig(config({0: (1, 4)}, palette=2))


def test_array_smaller_than_tile_is_refused():
    amx.loadconfig(config({0: (16, 64)}))
    with pytest.raises(ValueError):
        amx.loadd(0, np.zeros((4, 64), np.uint8))


# Packed layouts (docs/kernels.md), rebuilt here from the description.
def _expected_avx2(b, packed):
    """Per panel: a 64-byte header (int32 kernel, int32 pairs over the bound),
    then the body of the kernel the panel takes, in a slot sized for the larger body. The
    vpmaddubsw body's group order comes from the step table read back from `packed`; the table
    itself is checked against its rules (a permutation of the groups, runs, pairs under the bound)."""
    n, k = b.shape
    nr, kp, g_all = 16, (k + 1) // 2, (k + 3) // 4
    table = -(-(8 + 6 * g_all) // 64) * 64
    slot = 64 + max(kp * nr * 2, g_all * nr * 4 + table)
    got = packed.view(np.uint8).reshape(-1, slot)
    out = np.zeros((-(-n // nr), slot), np.uint8)
    for j0 in range(0, n, nr):
        cols = np.zeros((nr, g_all * 4), np.int8)
        cols[:min(nr, n - j0), :k] = b[j0:j0 + nr]
        w = np.abs(cols.astype(np.int64))
        over = int((w[:, 0:k - 1:2] + w[:, 1:k:2] > 128).sum())
        panel = out[j0 // nr]
        if over:  # vpmaddwd: [pairs][16 columns][2 x int8]
            body = np.zeros((kp, nr, 2), np.int8)
            for p in range(k):
                body[p // 2, :, p % 2] = cols[:, p]
        else:  # vpmaddubsw: groups in step order, then the step table
            t = got[j0 // nr, 64 + g_all * 64:]
            run_groups, runs = t[:8].view("<i4")
            counts = t[8:8 + 4 * runs].view("<u2").reshape(runs, 2)
            order = t[8 + 4 * runs:8 + 4 * runs + 2 * g_all].view("<u2").astype(np.int64)
            assert sorted(order) == list(range(g_all)) and counts.sum() + counts[:, 0].sum() == g_all
            half = w.reshape(nr, g_all, 2, 2).sum(axis=3)  # [column][group][half]
            u = 0
            for s_, (pairs, singles) in enumerate(counts):
                steps = order[u:u + 2 * pairs + singles]
                assert ((steps >= s_ * run_groups) & (steps < (s_ + 1) * run_groups)).all()
                assert (np.diff(steps[2 * pairs:]) > 0).all()
                for g1, g2 in steps[:2 * pairs].reshape(-1, 2):
                    assert (half[:, g1] + half[:, g2] <= 128).all()
                u += 2 * pairs + singles
            if not counts[:, 0].any():
                assert (order == np.arange(g_all)).all()
            body = cols.reshape(nr, g_all, 4).transpose(1, 0, 2)[order]
            tail = np.concatenate([np.array([run_groups, runs], "<i4").view(np.uint8), counts.reshape(-1).view(np.uint8),
                                   order.astype("<u2").view(np.uint8)])
            panel[64 + g_all * 64:64 + g_all * 64 + tail.size] = tail
        panel[:8] = np.array([0 if over else 1, over], "<i4").view(np.uint8)
        raw = body.reshape(-1).view(np.uint8)
        panel[64:64 + raw.size] = raw
    return out.reshape(-1).view(np.int8)


def _expected_packed(isa, b, packed):
    n, k = b.shape
    if isa == "scalar":
        return b.reshape(-1)
    if isa == "avx2":
        return _expected_avx2(b, packed)
    nr = 16 if isa.startswith("avx_vnni") else 32  # avx_vnni, avx_vnni_evex: panels of 16 columns
    groups = -(-k // 64) * 16 if isa == "amx" else (k + 3) // 4
    out = np.zeros((-(-n // nr), groups, nr, 4), np.int8)
    for j in range(n):
        for p in range(k):
            out[j // nr, p // 4, j % nr, p % 4] = b[j, p]
    return out.reshape(-1)


# avx2: 64 keeps every panel on its vpmaddubsw layout; 16 also pairs the groups of K >= 96
@pytest.mark.parametrize("limit", [127, 64, 16])
@pytest.mark.parametrize("n,k", [(1, 1), (3, 5), (33, 63), (17, 65), (64, 130), (20, 203)])
def test_packed_layouts_match_the_docs(any_path, n, k, limit):
    rng = np.random.default_rng(n * 1000 + k)
    b = rng.integers(-limit, limit + 1, (n, k), dtype=np.int8)
    w = ops.pack_weights(b, isa=any_path)
    np.testing.assert_array_equal(w.packed, _expected_packed(any_path.replace("_emulated", ""), b, w.packed))
    np.testing.assert_array_equal(w.colsum, b.astype(np.int64).sum(axis=1))
