"""qruntime.compare on trained digits models: a row per int8 layer, SQNR and sensitivity recomputed independently
(the C++ engine on one-op graphs, torch hooks), a spoiled layer named worst, clipping, float islands,
channels-last values, the JSON, the plot and the argument checks."""
import json
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn

import qruntime
from qruntime import reference
from qruntime.model import Model
from test_channels_last import Block, images
from test_convert import sqnr_db

BOUNDARIES = ("quantize", "dequantize")


def measured_batches(digits):
    """Two batches of test images: the report must add up over batches."""
    return [digits[2][:32], digits[2][32:64]]


def calibration(digits):
    return [digits[0][i:i + 64] for i in range(0, 256, 64)]


def fp32(model, x):
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def outputs_of(module, model, batches):
    """module's float outputs while model runs on each batch (numpy, concatenated)."""
    seen = []
    hook = module.register_forward_hook(lambda m, i, o: seen.append(o.detach().numpy().copy()))  # None: o is kept
    try:
        for b in batches:
            fp32(model, b)
    finally:
        hook.remove()
    return np.concatenate(seen)


@pytest.fixture(scope="module")
def compared(trained, digits):
    """name -> (model, quantized Model, its Report on measured_batches), made once per module."""
    cache = {}

    def get(name):
        if name not in cache:
            model, _ = trained(name)
            qm = qruntime.quantize(model, calibration(digits), progress=False)
            cache[name] = model, qm, qruntime.compare(model, qm, measured_batches(digits))
        return cache[name]

    return get


@pytest.mark.parametrize("name", ["seed_cnn", "small_resnet", "small_mobilenetv2"])
def test_a_row_per_int8_layer_and_the_output_sqnr_of_model_run(compared, digits, name):
    model, qm, report = compared(name)
    layers = [op["name"] for op in qm.graph["ops"] if op["op"] not in BOUNDARIES]
    assert sorted(r["name"] for r in report.rows) == sorted(layers)
    assert report.skipped == [] and report.images == 64
    for r in report.rows:
        assert np.isfinite(r["sqnr_db"]) and np.isfinite(r["sensitivity_db"]), r
        assert 0.0 <= r["clipped"] <= 1.0 and r["dtype"] == "uint8" and r["note"] is None
    sensitivities = [r["sensitivity_db"] for r in report.rows]
    assert sensitivities == sorted(sensitivities)  # worst first
    x = np.concatenate(measured_batches(digits))
    assert report.output_sqnr == pytest.approx(sqnr_db(fp32(model, x), qm.run(x)), rel=1e-9)
    # The last int8 layer's value is the output before its dequantize: the same SQNR.
    last = qm.graph["ops"][-1]
    assert last["op"] == "dequantize"
    row = next(r for r in report.rows if r["value"] == last["inputs"][0])
    assert row["sqnr_db"] == pytest.approx(report.output_sqnr, rel=1e-9)
    text = str(report).splitlines()
    assert text[0].startswith(f"output SQNR {report.output_sqnr:.1f} dB over 64 images")
    assert text[1].split()[:4] == ["#", "name", "op", "SQNR"]
    assert [line.split()[1] for line in text[3:]] == [r["name"] for r in report.rows]


def one_op_model(qm, name, input_shape):
    """The int8 op `name` of qm alone, as a Model the engine runs: float in, quantize on its input's grid, the op,
    dequantize: a second implementation of 'this layer alone in int8' for the sensitivity."""
    graph = qm.graph
    op = next(o for o in graph["ops"] if o["name"] == name and o["op"] not in BOUNDARIES)
    (x,), y = op["inputs"], op["outputs"][0]
    f32 = {"dtype": "float32"}
    ops = [{"op": "quantize", "name": "q", "inputs": ["in"], "outputs": [x], "attrs": {}, "tensors": {}}, op,
           {"op": "dequantize", "name": "dq", "inputs": [y], "outputs": ["out"], "attrs": {}, "tensors": {}}]
    sub = {"inputs": [{"name": "in", "shape": [-1, *input_shape]}], "outputs": ["out"], "ops": ops,
           "values": {"in": f32, x: graph["values"][x], y: graph["values"][y], "out": f32}}
    return Model(sub, {t: qm._tensors[t] for t in op["tensors"].values()})


@pytest.mark.parametrize("layer, reads", [("conv2", "relu1"), ("fc2", "fc1")])
def test_sensitivity_is_the_output_sqnr_with_that_layer_alone_in_int8(compared, digits, layer, reads):
    model, qm, report = compared("seed_cnn")
    x = np.concatenate(measured_batches(digits))
    want = fp32(model, x)
    # The float input of the layer (conv2 reads relu1's output; fc2 reads relu(fc1), the ReLU a function call).
    layer_in = outputs_of(getattr(model, reads), model, [x])
    layer_in = np.maximum(layer_in, 0) if reads == "fc1" else layer_in
    alone = one_op_model(qm, layer, layer_in.shape[1:]).run(layer_in)
    # The rest of the network in float, with this layer's output (its fused ReLU included) replaced.
    hook = getattr(model, layer).register_forward_hook(lambda m, i, o: torch.from_numpy(alone))
    got = fp32(model, x)
    hook.remove()
    row = next(r for r in report.rows if r["name"] == layer)
    assert row["sensitivity_db"] == pytest.approx(sqnr_db(want, got), rel=1e-6)


def spoil(qm, layer, factor):
    """qm with one conv's weight scales multiplied by factor: its outputs come out that much too large."""
    tensors = dict(qm._tensors)
    op = next(o for o in qm.graph["ops"] if o["name"] == layer)
    tensors[op["tensors"]["w_scale"]] = tensors[op["tensors"]["w_scale"]] * np.float32(factor)
    return Model(qm.graph, tensors)


def test_a_spoiled_layer_is_named_worst(compared, digits):
    model, qm, clean = compared("small_resnet")
    layer = "layer2.0.conv1"
    assert clean.rows[0]["name"] != layer  # so naming it below is the spoiling's doing
    broken = qruntime.compare(model, spoil(qm, layer, 8), measured_batches(digits))
    assert broken.rows[0]["name"] == layer
    before = next(r for r in clean.rows if r["name"] == layer)
    # 8x too large outputs saturate the grid: tens of dB lost, far beyond any layer's difference in the clean model.
    assert broken.rows[0]["sensitivity_db"] < before["sensitivity_db"] - 20
    assert broken.output_sqnr < clean.output_sqnr - 20
    # The layers before it are untouched.
    order = [op["name"] for op in qm.graph["ops"]]
    for r in broken.rows:
        if order.index(r["name"]) < order.index(layer):
            assert r["sqnr_db"] == next(c["sqnr_db"] for c in clean.rows if c["name"] == r["name"])


def test_clipped_is_the_share_of_float_values_outside_the_grid(trained, digits):
    model, _ = trained("seed_cnn")
    dim = [b * np.float32(0.5) for b in calibration(digits)]
    qm = qruntime.quantize(model, dim, progress=False)  # ranges from images half as bright as the measured ones
    batches = measured_batches(digits)
    report = qruntime.compare(model, qm, batches, sensitivity=False)
    f = outputs_of(model.relu1, model, batches).astype(np.float64)
    q = qm.graph["values"]["relu1"]
    s, zp = float(np.float32(q["scale"])), q["zero_point"]
    outside = np.count_nonzero((f < (-zp - 0.5) * s) | (f > (255 - zp + 0.5) * s)) / f.size
    row = next(r for r in report.rows if r["name"] == "conv1")
    assert outside > 0.01 and row["clipped"] == outside
    assert all(r["sensitivity_db"] is None for r in report.rows)
    sqnrs = [r["sqnr_db"] for r in report.rows]
    assert sqnrs == sorted(sqnrs)  # without sensitivity: worst SQNR first
    # minmax ranges hold every value of the data they were calibrated on: nothing clips there.
    on_calibration = qruntime.compare(model, qm, dim[:1], sensitivity=False)
    assert [r["clipped"] for r in on_calibration.rows] == [0.0] * len(on_calibration.rows)


def test_float_islands_get_sqnr_but_no_sensitivity(trained, digits):
    model, _ = trained("seed_cnn")
    qm = qruntime.quantize(model, calibration(digits), keep_float=["fc1"], progress=False)
    report = qruntime.compare(model, qm, measured_batches(digits))
    fc1 = next(r for r in report.rows if r["name"] == "fc1")
    assert fc1["op"] == "linear_float" and fc1["dtype"] == "float32"
    assert fc1["sensitivity_db"] is None and fc1["clipped"] is None and "float island" in fc1["note"]
    assert np.isfinite(fc1["sqnr_db"])
    assert report.rows[-1] is fc1  # the only row without a sensitivity goes after the measured ones
    assert "(runs in float32 (a float island))" in str(report).splitlines()[-1]


def test_channels_last_values_line_up(rng):
    # channels == height == width: a value read in the wrong layout would still have the right shape.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), Block(8), nn.Flatten(1), nn.Linear(8 * 8 * 8, 10)).eval()
    qm = qruntime.quantize(model, [images(rng, 8, 8) for _ in range(3)], progress=False)
    x = images(rng, 16, 8)
    report = qruntime.compare(model, qm, [x])
    rows = {r["name"]: r for r in report.rows}
    assert {"1.norm", "1.fc1", "1.act", "1.fc2"} <= set(rows)
    # A layout mix-up pairs unrelated elements: about 0 dB or below; 8-bit values of a calibrated layer sit far above.
    assert min(min(r["sqnr_db"], r["sensitivity_db"]) for r in report.rows) > 20
    # The LayerNorm's value, recomputed: torch's (N, H, W, C) output against the int8 graph's NCHW value.
    norm = outputs_of(model[1].norm, model, [x])
    value = qm.graph["values"][rows["1.norm"]["value"]]
    codes = reference.run_graph(qm.graph, qm._tensors, [x], keep=True)[rows["1.norm"]["value"]]
    got = reference.dequantize(codes, value["scale"], value["zero_point"])
    assert rows["1.norm"]["sqnr_db"] == pytest.approx(sqnr_db(norm.transpose(0, 3, 1, 2), got), rel=1e-9)


def test_equalized_values_line_up(compared, trained, digits):
    # cross_layer_equalization divides some values per channel (conv1's and fc1's outputs in the seed CNN):
    # compare must rescale the float model's tensors the same way, or those rows would read ~0 dB
    model, _ = trained("seed_cnn")
    plain = {row["name"]: row for row in compared("seed_cnn")[2].rows}
    qm = qruntime.quantize(model, calibration(digits), progress=False, cross_layer_equalization=True)
    assert qm.graph["quantization"]["cross_layer_equalization"] is True
    rows = {row["name"]: row for row in qruntime.compare(model, qm, measured_batches(digits)).rows}
    assert rows.keys() == plain.keys()
    for name in ("conv1", "fc1"):
        assert rows[name]["sqnr_db"] > plain[name]["sqnr_db"] - 3.0 > 20.0, (name, rows[name], plain[name])
        assert rows[name]["sensitivity_db"] > plain[name]["sensitivity_db"] - 3.0


def test_run_graph_keeps_every_value_and_run_op_runs_one(compared, digits):
    _, qm, _ = compared("seed_cnn")
    graph, tensors = qm.graph, qm._tensors
    x = digits[2][:4]
    values = reference.run_graph(graph, tensors, [x], keep=True)
    assert list(values) == [graph["inputs"][0]["name"]] + [op["outputs"][0] for op in graph["ops"]]
    np.testing.assert_array_equal(values[graph["outputs"][0]], reference.run_graph(graph, tensors, [x])[0])
    np.testing.assert_array_equal(values[graph["outputs"][0]], qm.run(x))
    for op in graph["ops"]:
        y = reference.run_op(graph, tensors, op, [values[v] for v in op["inputs"]])
        np.testing.assert_array_equal(y, values[op["outputs"][0]])
        assert y.dtype == (np.uint8 if graph["values"][op["outputs"][0]]["dtype"] == "uint8" else np.float32)


def test_to_json_round_trips(compared):
    _, _, report = compared("seed_cnn")
    doc = json.loads(report.to_json())
    assert doc == {"output_sqnr_db": report.output_sqnr, "images": 64, "rows": report.rows, "skipped": []}
    exact = dict(report.rows[0], sqnr_db=float("inf"))  # no error at all: JSON has no infinity
    text = qruntime.Report([exact], float("inf"), [], 1).to_json()
    assert json.loads(text)["rows"][0]["sqnr_db"] == "inf" and json.loads(text)["output_sqnr_db"] == "inf"


def test_plot_draws_sqnr_through_the_network(compared, tmp_path):
    from matplotlib.image import imread
    _, _, report = compared("small_resnet")
    path = report.plot(tmp_path / "sqnr.png")
    assert path == tmp_path / "sqnr.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] >= 300 and pixels.shape[1] >= 600
    assert len(np.unique(pixels.reshape(-1, pixels.shape[2]), axis=0)) > 10  # drawn on, not a blank canvas


def test_plot_without_matplotlib_says_what_to_install(compared, tmp_path, monkeypatch):
    _, _, report = compared("seed_cnn")
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if it were not installed
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match=r"pip install 'qruntime\[plot\]'"):
        report.plot(tmp_path / "sqnr.png")
    assert not (tmp_path / "sqnr.png").exists()


def test_bad_arguments_are_named(compared, trained, digits):
    model, qm, _ = compared("seed_cnn")
    data = measured_batches(digits)
    with pytest.raises(TypeError, match="^model must be a torch.nn.Module, got Model"):
        qruntime.compare(qm, qm, data)
    with pytest.raises(TypeError, match="^qmodel must be a qruntime.Model .* got SeedCNN"):
        qruntime.compare(model, model, data)
    with pytest.raises(ValueError, match="^data holds no batches"):
        qruntime.compare(model, qm, [])
    with pytest.raises(TypeError, match="^data must be an iterable of batches"):
        qruntime.compare(model, qm, 5)
    with pytest.raises(TypeError, match="^data item 1 must be a tensor"):
        qruntime.compare(model, qm, [data[0], "images"])
    with pytest.raises(TypeError, match="^sensitivity must be True or False"):
        qruntime.compare(model, qm, data, sensitivity="yes")
    other, _ = trained("small_resnet")
    with pytest.raises(ValueError, match="^qmodel.*was qmodel converted from this model"):
        qruntime.compare(other, qm, data)
