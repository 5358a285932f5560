"""The AVX-VNNI GEMM (qgemm_u8s8_6x16__avxvnni, docs/kernels.md "avx_vnni") on each of its builds:
avx_vnni (VEX, real AVX-VNNI), avx_vnni_evex (EVEX, real AVX-512 VNNI + VL) and avx_vnni_emulated
(SIMDe on AVX2). Every row, column and K tail of the 6x16 tile, bit-equal to scalar."""
import numpy as np
import pytest

import qruntime
from qruntime import ops

HERE = qruntime.available_isas(emulated=True)
PATHS = ["avx_vnni", "avx_vnni_evex", "avx_vnni_emulated"]


@pytest.fixture(params=PATHS)
def isa(request):
    if request.param not in HERE:
        pytest.skip(f"ISA path {request.param} is not available on this host/build")
    return request.param


def _exact(a, b):
    return (a.astype(np.float64) @ b.astype(np.float64).T).astype(np.int64)


def test_every_tail_extremes(isa):
    """M = 1..13, N = 1..40, K = 1..70: all-255 A against +-127 B (the largest |products|), int32 out."""
    rng = np.random.default_rng(19)
    for k in range(1, 71):
        a_full = np.full((13, k), 255, np.uint8)
        b_full = np.where(rng.random((40, k)) < 0.5, 127, -127).astype(np.int8)
        b_full[0] = 127   # one all-positive and one all-negative column: the extreme sums
        b_full[1] = -127
        want = _exact(a_full, b_full)
        for n in range(1, 41):
            w = ops.pack_weights(b_full[:n], isa=isa)
            ws = ops.pack_weights(b_full[:n], isa="scalar")
            for m in range(1, 14):
                got = ops.gemm_u8s8s32(a_full[:m], w)
                np.testing.assert_array_equal(got, want[:m, :n], err_msg=f"{isa} M={m} N={n} K={k}")
                if m in (1, 6, 7, 13):
                    np.testing.assert_array_equal(got, ops.gemm_u8s8s32(a_full[:m], ws))


def test_every_tail_random(isa):
    """The same tails with random A and B: catches a packing slip the constant A would hide."""
    rng = np.random.default_rng(20)
    for k in range(1, 71):
        a_full = rng.integers(0, 256, (13, k), dtype=np.uint8)
        b_full = rng.integers(-127, 128, (40, k), dtype=np.int8)
        want = _exact(a_full, b_full)
        for n in range(1, 41):
            w = ops.pack_weights(b_full[:n], isa=isa)
            for m in range(1, 14):
                np.testing.assert_array_equal(ops.gemm_u8s8s32(a_full[:m], w), want[:m, :n],
                                              err_msg=f"{isa} M={m} N={n} K={k}")


@pytest.mark.parametrize("m,n,k", [(256, 1024, 1024), (49, 512, 4608), (97, 33, 1001), (1, 1000, 2048),
                                   (193, 257, 65), (7, 17, 65536)])
def test_large_shapes(isa, m, n, k, threads):
    rng = np.random.default_rng(m * 7 + n * 3 + k)
    if isa.endswith("_emulated") and m * n * k > 60_000_000:
        m = max(1, m // 8)
    a = rng.integers(0, 256, (m, k), dtype=np.uint8)
    a[0] = 255
    b = rng.integers(-127, 128, (n, k), dtype=np.int8)
    b[0] = 127
    want = ops.gemm_u8s8s32(a, b, isa="scalar")
    np.testing.assert_array_equal(want, _exact(a, b))
    for nt in (1, 2):
        qruntime.set_num_threads(nt)
        np.testing.assert_array_equal(ops.gemm_u8s8s32(a, b, isa=isa), want)


def test_requantized_linear_bit_equal(isa):
    """The avx2 epilogue behind the kernel: bias, multipliers, zero point and clamps, every column tail."""
    rng = np.random.default_rng(21)
    for n in (1, 7, 8, 9, 15, 16, 17, 31, 40, 100):
        for m in (1, 5, 6, 7, 13):
            k = int(rng.integers(1, 300))
            x = rng.integers(0, 256, (m, k), dtype=np.uint8)
            w = rng.integers(-127, 128, (n, k), dtype=np.int8)
            bias = rng.uniform(-20, 20, n).astype(np.float32)
            args = (x, 0.02, int(rng.integers(0, 256)), w, rng.uniform(1e-3, 1e-2, n).astype(np.float32), bias,
                    float(rng.uniform(0.05, 0.5)), int(rng.integers(0, 256)))
            for act in ({}, {"relu": True}, {"relu6": True}):
                got = ops.linear(*args, **act, isa=isa)
                np.testing.assert_array_equal(got, ops.linear(*args, **act, isa="scalar"), err_msg=f"M={m} N={n} {act}")


def test_kernel_table_replaces_only_gemm():
    """Depthwise, eltwise and byte moves of the avx_vnni tables are avx2's."""
    for isa in [p for p in PATHS if p in HERE]:
        assert ops.pack_weights(np.ones((3, 5), np.int8), isa=isa).isa == isa
        assert qruntime._core.byte_kernels_isa(isa) == qruntime._core.byte_kernels_isa("avx2")
