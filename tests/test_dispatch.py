"""CPU detection and ISA dispatch: reported paths, QRUNTIME_ISA capping, clear errors."""
import os
import subprocess
import sys

import pytest

import qruntime

from conftest import ALL_ISAS


def _run(code, isa_env):
    env = dict(os.environ)
    env.pop("QRUNTIME_ISA", None)
    if isa_env is not None:
        env["QRUNTIME_ISA"] = isa_env
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)


def test_cpu_info_shape():
    info = qruntime.cpu_info()
    assert set(info) >= {"vendor", "brand", "flags", "os_support", "available_isas", "isa", "num_threads"}
    # QRUNTIME_ISA may select an emulated path (test builds); it is never picked by itself.
    assert info["isa"] == qruntime.isa() and info["isa"] in info["available_isas"] + info["emulated_isas"]


def test_available_isas_best_first_and_consistent_with_flags():
    real = qruntime.available_isas()
    assert real[-1] == "scalar"
    order = ["amx", "avx512_vnni", "avx2", "scalar"]
    assert real == [i for i in order if i in real]
    flags = qruntime.cpu_info()["flags"]
    assert ("avx2" in real) == (flags["avx2"] and flags["fma"])
    if "avx512_vnni" in real:
        assert flags["avx512_vnni"] and flags["avx512bw"]
    if "amx" in real:
        assert flags["amx_int8"] and qruntime.cpu_info()["os_support"]["amx_permitted"]
    # Automatic dispatch picks the best real path, never an emulated one.
    if os.environ.get("QRUNTIME_ISA") is None:
        assert qruntime.isa() == real[0]


def test_emulated_paths_listed_only_on_request():
    assert not any(i.endswith("_emulated") for i in qruntime.available_isas())
    emulated = [i for i in qruntime.available_isas(emulated=True) if i.endswith("_emulated")]
    # The test build (scripts/test.sh) always has them on an x86 host with AVX2.
    if "avx2" in qruntime.available_isas():
        assert emulated == ["avx512_vnni_emulated", "amx_emulated"]


@pytest.mark.parametrize("name", ALL_ISAS)
def test_qruntime_isa_env_caps_or_errors(name):
    r = _run("import qruntime; print(qruntime.isa())", name)
    if name in qruntime.available_isas(emulated=True):
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == name
    else:
        assert r.returncode != 0
        assert "ValueError" in r.stderr and f"QRUNTIME_ISA='{name}' is not available" in r.stderr


def test_unknown_qruntime_isa_is_a_clear_error():
    r = _run("import qruntime, numpy as np; qruntime.ops.gemm_u8s8s32(np.zeros((1,1),np.uint8), np.zeros((1,1),np.int8))", "sse9")
    assert r.returncode != 0
    assert "QRUNTIME_ISA='sse9' is not an ISA path" in r.stderr and "Segmentation" not in r.stderr


def test_capped_path_is_used_by_kernels():
    code = (
        "import qruntime, numpy as np\n"
        "w = qruntime.ops.pack_weights(np.ones((2, 3), np.int8))\n"
        "print(qruntime.isa(), w.isa)\n"
    )
    r = _run(code, "scalar")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["scalar", "scalar"]
