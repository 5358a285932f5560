"""The `qruntime` command as a user runs it: each subcommand in a subprocess on a converted digits model, its
--json output parsed and checked against the Python API; bad usage exits 2 with one line on stderr."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import qruntime
from test_convert import sqnr_db

# The folder holding the qruntime package this test imported: the subprocess must run the same one.
PACKAGE_PARENT = str(Path(qruntime.__file__).resolve().parent.parent)

FACTORY_MODULE = '''"""A model factory as a user writes one for `qruntime convert`."""
from qruntime import zoo


def build():
    return zoo.build("seed_cnn")


def broken():
    raise RuntimeError("no weights\\nhere")
'''


def cli(*args, cwd):
    """`python -m qruntime args` in cwd: the completed process (stdout, stderr as text)."""
    path = [PACKAGE_PARENT] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(path))
    return subprocess.run([sys.executable, "-m", "qruntime", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def cli_main(*args):
    from qruntime.cli import main
    return main([str(a) for a in args])


def ok_json(done):
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def batches(x, size):
    return [x[i:i + size] for i in range(0, len(x), size)]


@pytest.fixture(scope="module")
def work(tmp_path_factory, trained, digits):
    """A folder with digits_model.py (a factory), the trained seed CNN's state_dict, calibration and test inputs,
    and model.qnn converted from them by `qruntime convert --json`, whose parsed output is work["converted"]."""
    folder = tmp_path_factory.mktemp("cli")
    model, _ = trained("seed_cnn")
    (folder / "digits_model.py").write_text(FACTORY_MODULE)
    torch.save(model.state_dict(), folder / "weights.pt")
    np.save(folder / "calib.npy", digits[0][:128])
    np.save(folder / "x.npy", digits[2][:64])
    done = cli("convert", "digits_model.py:build", "--weights", "weights.pt", "--calib", "calib.npy",
               "-o", "model.qnn", "--json", cwd=folder)
    return {"folder": folder, "model": model, "converted": ok_json(done)}


def test_convert_writes_what_quantize_makes(work, digits):
    doc, folder = work["converted"], work["folder"]
    qm = qruntime.load(folder / "model.qnn")
    assert doc["output"] == "model.qnn" and doc["bytes"] == (folder / "model.qnn").stat().st_size
    assert doc["ops"] == len(qm.graph["ops"]) and doc["float_ops"] == []
    assert (doc["method"], doc["weight_bits"], doc["calibration_images"]) == ("minmax", 8, 128)
    assert doc["inputs"] == [{"name": "x", "shape": [None, 1, 28, 28], "dtype": "float32"}]
    want = qruntime.quantize(work["model"], batches(digits[0][:128], 32), progress=False)
    x = digits[2][:64]
    np.testing.assert_array_equal(qm.run(x), want.run(x))


def test_convert_options_and_an_npz_of_a_dotted_module(work, digits):
    folder = work["folder"]
    np.savez(folder / "calib.npz", x=digits[0][:100], y=digits[1][:100])
    done = cli("convert", "digits_model:build", "--weights", "weights.pt", "--calib", "calib.npz", "--batch-size", 50,
               "--method", "percentile", "--keep-float", "fc1", "--weight-bits", 7, "-o", "w7.qnn", "--json",
               cwd=folder)
    doc = ok_json(done)
    assert (doc["method"], doc["weight_bits"], doc["calibration_images"]) == ("percentile", 7, 100)
    assert doc["float_ops"] == ["fc1"]
    want = qruntime.quantize(work["model"], batches(digits[0][:100], 50), method="percentile", keep_float=["fc1"],
                             weight_bits=7, progress=False)
    x = digits[2][:64]
    np.testing.assert_array_equal(qruntime.load(folder / "w7.qnn").run(x), want.run(x))


def test_convert_accuracy_options(work, digits):
    folder = work["folder"]
    x, calib = digits[2][:64], batches(digits[0][:128], 32)
    all_int8 = qruntime.quantize(work["model"], calib, progress=False, bias_correction=False)
    with torch.no_grad():  # min_sqnr is measured on the calibration data
        target = sqnr_db(work["model"](torch.from_numpy(digits[0][:128])).numpy(), all_int8.run(digits[0][:128]))
    done = cli("convert", "digits_model.py:build", "--weights", "weights.pt", "--calib", "calib.npy", "--min-sqnr",
               f"{target + 3:.2f}", "--no-bias-correction", "--cross-layer-equalization", "-o", "mixed.qnn", "--json",
               cwd=folder)
    doc = ok_json(done)
    assert doc["bias_correction"] is False and doc["cross_layer_equalization"] is True and doc["float_ops"]
    want = qruntime.quantize(work["model"], calib, progress=False, min_sqnr=round(target + 3, 2),
                             bias_correction=False, cross_layer_equalization=True)
    assert doc["float_ops"] == want.float_ops()
    np.testing.assert_array_equal(qruntime.load(folder / "mixed.qnn").run(x), want.run(x))


def test_convert_and_compare_as_text(work, digits, capsys, monkeypatch):
    # In this process (main is what the subprocesses run): the text forms, without another torch start-up each.
    monkeypatch.chdir(work["folder"])
    assert cli_main("convert", "digits_model.py:build", "--calib", "calib.npy", "-o", "random.qnn") == 0
    out = capsys.readouterr()
    assert out.err == "" and out.out.startswith("wrote random.qnn: 8 ops, ")
    assert out.out.rstrip().endswith("minmax ranges from 128 images, 8-bit weights")
    assert cli_main("compare", "digits_model.py:build", "model.qnn", "--data", "x.npy", "--weights", "weights.pt",
                    "--no-sensitivity") == 0
    lines = capsys.readouterr().out.splitlines()
    want = qruntime.compare(work["model"], qruntime.load("model.qnn"), batches(digits[2][:64], 32), sensitivity=False)
    assert lines[0].startswith(f"output SQNR {want.output_sqnr:.1f} dB over 64 images; 6 layers")
    assert [line.split()[1] for line in lines[3:]] == [r["name"] for r in want.rows]
    assert all(line.split()[4] == "-" for line in lines[3:])  # no sensitivity column


def test_compare_prints_the_report(work, digits):
    folder = work["folder"]
    doc = ok_json(cli("compare", "digits_model.py:build", "model.qnn", "--data", "x.npy", "--weights", "weights.pt",
                      "--json", cwd=folder))
    qm = qruntime.load(folder / "model.qnn")
    want = qruntime.compare(work["model"], qm, batches(digits[2][:64], 32))
    assert doc["images"] == 64 and doc["skipped"] == []
    assert doc["output_sqnr_db"] == pytest.approx(want.output_sqnr, rel=1e-9)
    assert [r["name"] for r in doc["rows"]] == [r["name"] for r in want.rows]
    assert [r["sensitivity_db"] for r in doc["rows"]] == pytest.approx([r["sensitivity_db"] for r in want.rows],
                                                                       rel=1e-9)


def test_info_summary_run_and_bench_as_json(work, digits):
    folder = work["folder"]
    info = ok_json(cli("info", "--json", cwd=folder))
    assert info["brand"] == qruntime.cpu_info()["brand"] and qruntime.isa() in info["available_isas"]
    qm = qruntime.load(folder / "model.qnn")
    summary = ok_json(cli("summary", "model.qnn", "--batch", 3, "--json", cwd=folder))
    assert [r["name"] for r in summary["ops"]] == [op["name"] for op in qm.graph["ops"]]
    assert summary["input_shapes"] == [[3, 1, 28, 28]] and summary["ops"][1]["shape"] == [3, 32, 26, 26]
    assert summary["macs"] == sum(r["macs"] for r in summary["ops"]) > 0
    run = ok_json(cli("run", "model.qnn", "x.npy", "--json", cwd=folder))
    assert [o["name"] for o in run["outputs"]] == ["fc2:f"] and run["outputs"][0]["shape"] == [64, 10]
    np.testing.assert_array_equal(np.array(run["outputs"][0]["values"], np.float32), qm.run(digits[2][:64]))
    saved = ok_json(cli("run", "model.qnn", "x.npy", "-o", "y.npy", "--json", cwd=folder))
    assert saved["output_file"] == "y.npy" and "values" not in saved["outputs"][0]
    np.testing.assert_array_equal(np.load(folder / "y.npy"), qm.run(digits[2][:64]))
    bench = ok_json(cli("bench", "model.qnn", "--batch", 2, "--repeat", 3, "--profile", "--json", cwd=folder))
    assert (bench["batch"], bench["repeat"], bench["isa"]) == (2, 3, qruntime.isa())
    assert 0 < bench["median_ms"] <= bench["p90_ms"]
    assert [r["name"] for r in bench["profile"]] == [op["name"] for op in qm.graph["ops"]]


BAD_USAGE = [
    (["summary", "missing.qnn"], "qruntime summary: [Errno 2] No such file or directory: 'missing.qnn'"),
    (["summary", "x.npy", "--json"], "qruntime summary: header length"),
    (["run", "model.qnn", "missing.npy"], "qruntime run: input: cannot read 'missing.npy'"),
    (["convert", "digits_model.py:build", "--calib", "missing.npy", "-o", "m.qnn"],
     "qruntime convert: --calib: cannot read 'missing.npy'"),
    (["convert", "digits_model.py:build", "--calib", "calib.npy", "--weights", "x.npy", "-o", "m.qnn"],
     "qruntime convert: --weights: 'x.npy' is not a state_dict"),
    (["compare", "digits_model.py:build", "model.qnn", "--data", "missing.npy"],
     "qruntime compare: --data: cannot read 'missing.npy'"),
    (["convert", "digits_model.py:nothing", "--calib", "calib.npy", "-o", "m.qnn"],
     "qruntime convert: 'digits_model.py:nothing': 'digits_model.py' has no function 'nothing'"),
    (["convert", "digits_model.py:broken", "--calib", "calib.npy", "-o", "m.qnn"],
     "qruntime convert: 'digits_model.py:broken': broken() raised RuntimeError: no weights here"),
    (["compare", "no_such_module:build", "model.qnn", "--data", "x.npy"],
     "qruntime compare: 'no_such_module:build': cannot import 'no_such_module'"),
    (["convert", "digits_model.py", "--calib", "calib.npy", "-o", "m.qnn"],
     "qruntime convert: 'digits_model.py' is not MODULE:FACTORY"),
    (["convert", "digits_model.py:build", "--calib", "calib.npy", "-o", "m.qnn", "--method", "best"],
     "qruntime convert: argument --method: invalid choice: 'best'"),
    (["convert", "digits_model.py:build", "--calib", "calib.npy", "-o", "m.qnn", "--weight-bits", "4"],
     "qruntime convert: argument --weight-bits: invalid choice: 4"),
    (["convert", "digits_model.py:build", "--calib", "calib.npy", "-o", "m.qnn", "--min-sqnr", "lots"],
     "qruntime convert: argument --min-sqnr: must be a number of dB"),
    (["convert", "digits_model.py:build", "--calib", "calib.npy"],
     "qruntime convert: the following arguments are required: -o/--output"),
    (["bench", "model.qnn", "--repeat", "0", "--json"], "qruntime bench: argument --repeat: must be an int >= 1"),
    (["info", "--verbose"], "qruntime info: unrecognized arguments: --verbose"),
    (["deploy"], "qruntime: argument command: invalid choice: 'deploy'"),
]


@pytest.mark.parametrize("args, says", [BAD_USAGE[i] for i in (0, 6, 10, 16)],
                         ids=["missing file", "bad factory", "bad option", "no such command"])
def test_bad_usage_exits_2_with_one_line(work, args, says):
    done = cli(*args, cwd=work["folder"])
    assert done.returncode == 2 and done.stdout == ""
    assert len(done.stderr.splitlines()) == 1 and done.stderr.startswith(says), done.stderr


@pytest.mark.parametrize("args, says", BAD_USAGE)
def test_every_bad_usage_is_one_line(work, args, says, capsys, monkeypatch):
    monkeypatch.chdir(work["folder"])  # main itself, as the subprocesses above run it
    assert cli_main(*args) == 2
    out = capsys.readouterr()
    assert out.out == "" and len(out.err.splitlines()) == 1 and out.err.startswith(says), out.err
