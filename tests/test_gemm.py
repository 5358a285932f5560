"""int8 GEMM: every ISA path equals numpy's exact product and the scalar path, bit for bit."""
import numpy as np
import pytest

import qruntime
from qruntime import ops

from qruntime import reference

# DESIGN.md §2.6 / issue sweep: awkward sizes around every tile and block size.
SIZES = list(range(1, 18)) + [31, 32, 33, 63, 64, 65, 127, 128, 129, 255, 256, 257, 1000, 4096]


def _rand(rng, m, k, n):
    a = rng.integers(0, 256, (m, k), dtype=np.uint8)
    b = rng.integers(-127, 128, (n, k), dtype=np.int8)
    return a, b


def _exact(a, b):
    # float64 BLAS is exact here (|sum| < 2^53) and much faster than numpy's int64 matmul.
    return (a.astype(np.float64) @ b.astype(np.float64).T).astype(np.int64)


def _check(a, b, isa):
    want = _exact(a, b)
    got = ops.gemm_u8s8s32(a, b, isa=isa)
    assert got.dtype == np.int32 and got.shape == want.shape
    np.testing.assert_array_equal(got, want)
    return got


def test_scalar_equals_numpy_int64(rng):
    for m, k, n in [(1, 1, 1), (3, 5, 7), (17, 33, 65), (64, 255, 31)]:
        a, b = _rand(rng, m, k, n)
        np.testing.assert_array_equal(ops.gemm_u8s8s32(a, b, isa="scalar"), reference.gemm(a, b))


@pytest.mark.parametrize("isa", ["scalar"] + [i for i in qruntime.available_isas(emulated=True) if i != "scalar"])
def test_small_cube(isa, rng):
    """Every (M, K, N) in 1..17 on one path: all row, column and K tails of every tile."""
    for m in range(1, 18):
        for k in range(1, 18):
            a_full, b_full = _rand(rng, m, k, 17)
            want = _exact(a_full, b_full)
            for n in range(1, 18):
                got = ops.gemm_u8s8s32(a_full, b_full[:n], isa=isa)
                np.testing.assert_array_equal(got, want[:, :n], err_msg=f"{isa} M={m} K={k} N={n}")


def test_size_sweep(simd_isa, rng):
    """Each dimension over SIZES with the others at awkward values; compared with scalar too."""
    big = simd_isa.endswith("_emulated")
    shapes = []
    for s in SIZES:
        shapes += [(s, 65, 33), (17, s, 63), (15, 129, s)]
    shapes += [(1000, 257, 129), (257, 1000, 65), (129, 4096, 33), (4096, 64, 64)]
    if not big:
        shapes += [(1000, 1000, 1000), (4096, 256, 257)]
    for m, k, n in shapes:
        a, b = _rand(rng, m, k, n)
        got = _check(a, b, simd_isa)
        np.testing.assert_array_equal(got, ops.gemm_u8s8s32(a, b, isa="scalar"))


@pytest.mark.parametrize("wval", [127, -127])
def test_k65536_extremes(any_path, wval):
    """The largest K with the largest products: 255 * 127 * 65536 must not wrap or saturate."""
    k = 65536
    a = np.full((3, k), 255, dtype=np.uint8)
    b = np.full((5, k), wval, dtype=np.int8)
    got = ops.gemm_u8s8s32(a, b, isa=any_path)
    assert np.all(got == 255 * wval * k)


def test_k65536_random(any_path, rng):
    a, b = _rand(rng, 9, 65536, 35)
    _check(a, b, any_path)


def test_k_above_limit_rejected():
    with pytest.raises(ValueError, match="K"):
        ops.gemm_u8s8s32(np.zeros((1, 65537), np.uint8), np.zeros((1, 65537), np.int8))


def test_strided_and_misaligned_inputs(any_path, rng):
    a, b = _rand(rng, 40, 200, 50)
    want = _exact(a, b)
    # Non-contiguous views.
    a2 = np.repeat(a, 2, axis=1)[:, ::2]
    b2 = np.repeat(b, 2, axis=0)[::2]
    np.testing.assert_array_equal(ops.gemm_u8s8s32(a2, b2, isa=any_path), want)
    # Fortran order.
    np.testing.assert_array_equal(ops.gemm_u8s8s32(np.asfortranarray(a), np.asfortranarray(b), isa=any_path), want)
    # Misaligned: contiguous arrays starting one byte into a buffer.
    buf_a = np.empty(a.size + 1, np.uint8)
    buf_b = np.empty(b.size + 1, np.int8)
    a3 = buf_a[1:].reshape(a.shape)
    b3 = buf_b[1:].reshape(b.shape)
    a3[...] = a
    b3[...] = b
    assert a3.ctypes.data % 2 == 1 or b3.ctypes.data % 2 == 1
    np.testing.assert_array_equal(ops.gemm_u8s8s32(a3, b3, isa=any_path), want)


@pytest.mark.parametrize("n_threads", [1, 2, 3])
def test_thread_counts_give_identical_results(any_path, n_threads, threads, rng):
    a, b = _rand(rng, 300, 515, 200)
    qruntime.set_num_threads(1)
    one = ops.gemm_u8s8s32(a, b, isa=any_path)
    qruntime.set_num_threads(n_threads)
    assert qruntime.get_num_threads() == n_threads
    np.testing.assert_array_equal(ops.gemm_u8s8s32(a, b, isa=any_path), one)
    np.testing.assert_array_equal(one, _exact(a, b))


def test_prepacked_weights_reused(any_path, rng):
    a, b = _rand(rng, 33, 77, 45)
    w = ops.pack_weights(b, isa=any_path)
    assert (w.n, w.k, w.isa) == (45, 77, any_path)
    for _ in range(3):
        np.testing.assert_array_equal(ops.gemm_u8s8s32(a, w), _exact(a, b))


def test_zero_rows_gives_empty_result(any_path):
    got = ops.gemm_u8s8s32(np.zeros((0, 8), np.uint8), np.ones((3, 8), np.int8), isa=any_path)
    assert got.shape == (0, 3) and got.dtype == np.int32
