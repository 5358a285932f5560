"""Shared fixtures: ISA parametrization (real and emulated paths) and seeded random data."""
import zlib

import numpy as np
import pytest

import qruntime

pytest_plugins = ["trained_models"]

ALL_ISAS = ["scalar", "avx2", "avx_vnni", "avx512_vnni", "amx", "avx_vnni_evex", "avx_vnni_emulated",
            "avx512_vnni_emulated", "amx_emulated"]
# Test-only paths on real hardware: the AVX-VNNI kernel in EVEX encoding (AVX-512 VNNI + VL CPUs).
REAL_TEST_ONLY = {"avx_vnni_evex"}
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


# ISA coverage: which path each test ran on, reported at the end of the run (issue: every path on
# every host; .ci/run shows this table).
_ISA_ARGS = ("any_path", "simd_isa", "isa")
_coverage = {}


def _isa_of(item):
    params = getattr(getattr(item, "callspec", None), "params", {})
    for name in _ISA_ARGS:
        if params.get(name) in ALL_ISAS:
            return params[name]
    return None


def pytest_runtest_logreport(report):
    isa = getattr(report, "_qr_isa", None)
    if isa is None:
        return
    if (report.when == "call") or (report.when == "setup" and report.outcome != "passed"):
        counts = _coverage.setdefault(isa, {"passed": 0, "failed": 0, "skipped": 0})
        counts[report.outcome] = counts.get(report.outcome, 0) + 1


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    outcome.get_result()._qr_isa = _isa_of(item)


def pytest_terminal_summary(terminalreporter):
    if not _coverage:
        return
    real = qruntime.available_isas()
    tr = terminalreporter
    tr.section("ISA coverage on this host")
    tr.write_line(f"host: {qruntime.cpu_info()['brand']}; dispatch picks: {qruntime.isa()}")
    tr.write_line(f"{'isa path':24} {'on this host':16} {'passed':>7} {'failed':>7} {'skipped':>8}")
    for isa in ALL_ISAS:
        kind = ("real" if isa in real else "real, test-only" if isa in REAL_TEST_ONLY and isa in HERE
                else "emulated" if isa in HERE else "absent")
        c = _coverage.get(isa, {})
        tr.write_line(f"{isa:24} {kind:16} {c.get('passed', 0):7} {c.get('failed', 0):7} {c.get('skipped', 0):8}")
