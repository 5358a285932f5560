"""The thread pool: default size from the affinity mask, concurrent callers, identical results."""
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import qruntime
from qruntime import ops


def test_default_threads_follow_affinity_mask():
    cpus = sorted(os.sched_getaffinity(0))
    code = f"import os; os.sched_setaffinity(0, {{{cpus[0]}}}); import qruntime; print(qruntime.get_num_threads())"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "1"
    r = subprocess.run([sys.executable, "-c", "import qruntime; print(qruntime.get_num_threads())"],
                       capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == str(len(cpus))


@pytest.mark.parametrize("n_threads", [1, 2, 3])
def test_concurrent_callers_get_serial_results(rng, threads, n_threads):
    qruntime.set_num_threads(n_threads)
    a = rng.integers(0, 256, (8, 130, 300), dtype=np.uint8)
    b = rng.integers(-127, 128, (70, 300), dtype=np.int8)
    w = ops.pack_weights(b)
    serial = [ops.linear(a[i], 0.05, 7, w, 0.01, None, 0.5, 9) for i in range(len(a))]
    with ThreadPoolExecutor(max_workers=4) as ex:
        for _ in range(5):
            results = list(ex.map(lambda i: ops.linear(a[i], 0.05, 7, w, 0.01, None, 0.5, 9), range(len(a))))
            for got, want in zip(results, serial):
                np.testing.assert_array_equal(got, want)


def test_resizing_the_pool_repeatedly(rng, threads):
    a = rng.integers(0, 256, (100, 64), dtype=np.uint8)
    b = rng.integers(-127, 128, (96, 64), dtype=np.int8)
    want = ops.gemm_u8s8s32(a, b, isa="scalar")
    for n in [1, 4, 2, 3, 1, 2]:
        qruntime.set_num_threads(n)
        np.testing.assert_array_equal(ops.gemm_u8s8s32(a, b), want)



def test_concurrent_convs_get_serial_results(rng, threads):
    """conv2d from several Python threads at once (GIL released, the pool busy): the same bits as
    one call at a time, for the GEMM, the depthwise and (where the path has it) the Winograd paths."""
    qruntime.set_num_threads(2)
    x = rng.integers(0, 256, (6, 1, 16, 20, 20), dtype=np.uint8)
    w = rng.integers(-127, 128, (24, 16, 3, 3), dtype=np.int8)
    w3 = ops.pack_conv2d(w)
    wino = ops.pack_conv2d(w, stride=1, dilation=1)  # Winograd on avx2, the GEMM elsewhere
    wdw = ops.pack_conv2d(rng.integers(-127, 128, (16, 1, 3, 3), dtype=np.int8), groups=16)

    def each(i):
        outs = (ops.conv2d(x[i], 0.05, 7, w3, 0.01, None, 0.5, 9, padding=1),
                ops.conv2d(x[i], 0.05, 7, wino, 0.01, None, 0.5, 9, padding=1),
                ops.conv2d(x[i], 0.05, 7, wdw, 0.01, None, 0.5, 9, stride=2, padding=1, groups=16))
        return [np.ascontiguousarray(o) for o in outs]

    serial = [each(i) for i in range(len(x))]
    for a, b, _ in serial:
        np.testing.assert_array_equal(a, b)
    with ThreadPoolExecutor(max_workers=4) as ex:
        for _ in range(5):
            for got, want in zip(ex.map(each, range(len(x))), serial):
                for g, w_ in zip(got, want):
                    np.testing.assert_array_equal(g, w_)
