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
    assert info["isa"] == qruntime.isa() and info["isa"] in info["available_isas"] + info["test_only_isas"]
    assert set(info["emulated_isas"]) <= set(info["test_only_isas"])


def test_available_isas_best_first_and_consistent_with_flags():
    real = qruntime.available_isas()
    assert real[-1] == "scalar"
    order = ["amx", "avx512_vnni", "avx_vnni", "avx2", "scalar"]
    assert real == [i for i in order if i in real]
    flags = qruntime.cpu_info()["flags"]
    assert ("avx2" in real) == (flags["avx2"] and flags["fma"])
    if "avx512_vnni" in real:
        assert flags["avx512_vnni"] and flags["avx512bw"]
    assert ("avx_vnni" in real) == (flags["avx_vnni"] and "avx2" in real)
    here = qruntime.available_isas(emulated=True)
    assert ("avx_vnni_evex" in here) == ("avx2" in real and flags["avx512_vnni"] and flags["avx512vl"]
                                         and qruntime.cpu_info()["os_support"]["avx512"])
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
        assert emulated == ["avx_vnni_emulated", "avx512_vnni_emulated", "amx_emulated"]


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


# The selection as a pure function of the CPU's flags (_core._select_isas feeds dispatch a made-up CPU).
AVX2 = {"avx2": True, "fma": True, "os_avx": True}
AVX512 = {**AVX2, "avx512f": True, "avx512bw": True, "avx512vl": True, "avx512dq": True, "avx512_vnni": True,
          "os_avx512": True}
AMX = {**AVX512, "amx_tile": True, "amx_int8": True, "os_amx": True, "amx_permitted": True}


@pytest.mark.parametrize("flags,real,test_only", [
    ({}, ["scalar"], []),
    ({"avx_vnni": True}, ["scalar"], []),                                  # AVX-VNNI without AVX2/FMA
    ({**AVX2, "os_avx": False, "avx_vnni": True}, ["scalar"], []),         # OS without AVX state
    (AVX2, ["avx2", "scalar"], []),                                        # Haswell .. Zen 3
    ({**AVX2, "avx_vnni": True}, ["avx_vnni", "avx2", "scalar"], []),      # Alder Lake, Zen 5 client without 512
    (AVX512, ["avx512_vnni", "avx2", "scalar"], ["avx_vnni_evex"]),       # Cascade Lake, Ice Lake, Zen 4
    ({**AVX512, "avx_vnni": True}, ["avx512_vnni", "avx_vnni", "avx2", "scalar"], ["avx_vnni_evex"]),
    ({**AMX, "avx_vnni": True}, ["amx", "avx512_vnni", "avx_vnni", "avx2", "scalar"], ["avx_vnni_evex"]),  # SPR
    # AVX-512 state off in XCR0 (or AVX-512 VNNI without VL): no EVEX path, AVX-VNNI still picked.
    ({**AVX512, "os_avx512": False, "avx_vnni": True}, ["avx_vnni", "avx2", "scalar"], []),
    ({**AVX512, "avx512vl": False, "avx_vnni": True}, ["avx_vnni", "avx2", "scalar"], []),
])
def test_select_isas_pure(flags, real, test_only):
    got_real, got_test = qruntime._core._select_isas(flags)
    assert got_real == real and got_test == test_only
    # Picked: the first real path; avx_vnni exactly when the CPU has it and the AVX-512 path is absent.
    assert (got_real[0] == "avx_vnni") == ("avx_vnni" in real and "avx512_vnni" not in real)
    emu_real, emu_test = qruntime._core._select_isas(flags, emulated=True)
    assert emu_real == real
    want = test_only + (["avx_vnni_emulated", "avx512_vnni_emulated", "amx_emulated"] if "avx2" in real else [])
    assert emu_test == want
    assert qruntime._core._select_isas(flags, x86=False, emulated=True) == (["scalar"], [])


def test_select_isas_matches_this_host():
    info = qruntime.cpu_info()
    flags = {**info["flags"], **{"os_" + k: v for k, v in info["os_support"].items() if k != "amx_permitted"},
             "amx_permitted": info["os_support"]["amx_permitted"]}
    real, test_only = qruntime._core._select_isas(flags, emulated=bool(info["emulated_isas"]))
    assert real == qruntime.available_isas()
    assert real + test_only == qruntime.available_isas(emulated=True)
