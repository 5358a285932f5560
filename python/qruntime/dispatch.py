"""CPU features, ISA paths and threads: the Python face of csrc/dispatch and the thread pool."""
from . import _core


def cpu_info() -> dict:
    """The CPU's vendor, brand, relevant feature flags, OS support, and the ISA paths it can run."""
    info = _core.cpu_info()
    info["available_isas"] = _core.available_isas(False)
    info["emulated_isas"] = [i for i in _core.available_isas(True) if i.endswith("_emulated")]
    # Paths only an explicit isa= or QRUNTIME_ISA selects: the emulated ones and avx_vnni_evex (the
    # AVX-VNNI kernel in EVEX encoding, run on AVX-512 VNNI hardware).
    info["test_only_isas"] = [i for i in _core.available_isas(True) if i not in info["available_isas"]]
    info["isa"] = _core.isa()
    info["num_threads"] = _core.get_num_threads()
    return info


def isa() -> str:
    """The ISA path in use: the best this CPU and OS support, capped by QRUNTIME_ISA."""
    return _core.isa()


def available_isas(emulated: bool = False) -> list:
    """ISA paths this machine runs, best first; with emulated=True, the test-only paths too (the test
    build's emulated paths, and avx_vnni_evex on AVX-512 VNNI hardware)."""
    return _core.available_isas(bool(emulated))


def set_num_threads(n: int) -> None:
    """Threads for every kernel call from now on (n >= 1). Results do not depend on it."""
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"n must be an int, got {type(n).__name__}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    _core.set_num_threads(n)
