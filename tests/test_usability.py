"""What a new user meets first: integer images, a calibration batch of the wrong shape, quantize
without torch, summaries and profiles of models that take any input size, the CLI's --input-shape."""
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

import qruntime
from qruntime import cli, format as qnn_format
from qruntime.model import Model


def _u8(scale=0.05, zp=0):
    return {"dtype": "uint8", "scale": scale, "zero_point": zp}


def pooling_model(hw):
    """x (N, 2, hw, hw) -> quantize -> max pool 2x2 -> dequantize; hw=-1: any height and width."""
    pool = {"kernel": [2, 2], "stride": [2, 2], "padding": [0, 0], "dilation": [1, 1], "ceil_mode": False}
    ops = [{"op": "quantize", "name": "q", "inputs": ["x"], "outputs": ["q"], "attrs": {}, "tensors": {}},
           {"op": "max_pool2d", "name": "pool", "inputs": ["q"], "outputs": ["p"], "attrs": pool, "tensors": {}},
           {"op": "dequantize", "name": "y", "inputs": ["p"], "outputs": ["y"], "attrs": {}, "tensors": {}}]
    graph = {"inputs": [{"name": "x", "shape": [-1, 2, hw, hw]}], "outputs": ["y"], "ops": ops,
             "values": {"x": {"dtype": "float32"}, "q": _u8(), "p": _u8(), "y": {"dtype": "float32"}}}
    return Model(graph, {}), graph


def test_integer_input_warns_once():
    model, _ = pooling_model(8)
    x = np.random.default_rng(0).integers(0, 256, (1, 2, 8, 8), dtype=np.uint8)
    with pytest.warns(UserWarning, match=r"input 'x' is an integer array \(uint8\).*calibrated on"):
        model.run(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.run(x)  # once per model
        model.run(x.astype(np.float32) / 255)  # floats never warn
    with pytest.warns(UserWarning, match=r"torch.int64"):
        pooling_model(8)[0].run(torch.zeros((1, 2, 8, 8), dtype=torch.int64))


def test_calibration_batch_of_the_wrong_shape_names_the_expected_one(trained, digits):
    model, _ = trained("seed_cnn")
    x = digits[0][:8]
    bad = np.zeros((8, 1, 20, 20), np.float32)
    with pytest.raises(ValueError, match=r"calibration batch 1 of shape \(8, 1, 20, 20\) does not fit the model; "
                                         r"the model was traced with \(8, 1, 28, 28\)"):
        qruntime.quantize(model, [x, bad], progress=False)


def test_quantize_without_torch_says_what_to_install():
    code = ("import sys; sys.modules['torch'] = None\n"  # as if torch were not installed
            "import qruntime\n"
            "try:\n    qruntime.quantize(object(), [])\nexcept ImportError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "pip install 'qruntime[torch]'" in out.stdout


def test_summary_of_a_model_that_takes_any_size():
    model, _ = pooling_model(-1)
    with pytest.raises(ValueError, match=r"any height and width \('x'\): give input_shape"):
        model.summary()
    text = model.summary(input_shape=(3, 2, 64, 48))
    assert "(3, 2, 32, 24)" in text and "at batch 3" in text
    for bad in [(1, 3, 64, 64), (1, 2, 64), (0, 2, 8, 8)]:
        with pytest.raises(ValueError, match="input_shape"):
            model.summary(input_shape=bad)
    assert "(4, 2, 4, 4)" in pooling_model(8)[0].summary(batch=4)


def test_profile_prints_as_a_table():
    model, _ = pooling_model(8)
    rows = model.profile(np.zeros((2, 2, 8, 8), np.float32), repeat=2)
    assert [r["name"] for r in rows] == ["q", "pool", "y"]
    text = str(rows)
    assert text.splitlines()[0].split()[:5] == ["op", "name", "output", "shape", "ms"]
    assert "max_pool2d" in text and "(2, 2, 4, 4)" in text and text.splitlines()[-1].startswith("total ")


def test_cli_input_shape(tmp_path, capsys):
    _, graph = pooling_model(-1)
    path = tmp_path / "m.qnn"
    qnn_format.write(path, graph, {})
    assert cli.main(["summary", str(path)]) == 2
    assert "give input_shape" in capsys.readouterr().err
    assert cli.main(["summary", str(path), "--input-shape", "1,2,30,20"]) == 0
    assert "(1, 2, 15, 10)" in capsys.readouterr().out
    assert cli.main(["bench", str(path), "--input-shape", "2,2,16,16", "--repeat", "3", "--profile"]) == 0
    out = capsys.readouterr().out
    assert "batch 2" in out and "(2, 2, 8, 8)" in out
    assert cli.main(["summary", str(path), "--input-shape", "1,x"]) == 2  # one line, no usage dump
    assert capsys.readouterr().err == ("qruntime summary: argument --input-shape: must be comma-separated ints like "
                                       "1,3,224,224, got '1,x'\n")
