"""Shared fixtures: ISA parametrization (real and emulated paths) and seeded random data."""
import zlib

import numpy as np
import pytest

import qruntime

ALL_ISAS = ["scalar", "avx2", "avx512_vnni", "amx", "avx512_vnni_emulated", "amx_emulated"]
HERE = qruntime.available_isas(emulated=True)


@pytest.fixture(params=[i for i in ALL_ISAS if i != "scalar"])
def simd_isa(request):
    """Every non-scalar ISA path; one this machine (or build) lacks is reported skipped."""
    if request.param not in HERE:
        pytest.skip(f"ISA path {request.param} is not available on this host/build")
    return request.param


@pytest.fixture
def rng(request):
    """A generator seeded from the test's id: stable across runs, so failures reproduce."""
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


@pytest.fixture
def threads():
    """Restores the thread count a test changes."""
    before = qruntime.get_num_threads()
    yield
    qruntime.set_num_threads(before)


@pytest.fixture(params=ALL_ISAS)
def any_path(request):
    """Every ISA path including scalar; one this machine (or build) lacks is reported skipped."""
    if request.param not in HERE:
        pytest.skip(f"ISA path {request.param} is not available on this host/build")
    return request.param
