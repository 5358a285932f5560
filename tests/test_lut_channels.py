"""lut_channels (a table per channel: PReLU with a slope per channel): engine == reference on every
ISA path, a converted PReLU model tracks float, bad tables and shapes refused."""
import numpy as np
import pytest
import torch
import torch.nn as nn

import qruntime
from qruntime import reference
from qruntime.model import Model


def lut_graph(shape, channels, rng):
    q = {"dtype": "uint8", "scale": 0.05, "zero_point": 100}
    ops = [{"op": "quantize", "name": "q", "inputs": ["x"], "outputs": ["q"], "attrs": {}, "tensors": {}},
           {"op": "lut_channels", "name": "t", "inputs": ["q"], "outputs": ["t"], "attrs": {},
            "tensors": {"table": "t.table"}},
           {"op": "dequantize", "name": "y", "inputs": ["t"], "outputs": ["y"], "attrs": {}, "tensors": {}}]
    graph = {"inputs": [{"name": "x", "shape": [-1, *shape[1:]]}], "outputs": ["y"], "ops": ops,
             "values": {"x": {"dtype": "float32"}, "q": q, "t": dict(q, zero_point=7), "y": {"dtype": "float32"}}}
    return graph, {"t.table": rng.integers(0, 256, (channels, 256)).astype(np.uint8)}


@pytest.mark.parametrize("shape", [(2, 5, 3, 7), (1, 67, 2, 2), (3, 9)])
def test_engine_equals_reference(shape, any_path, rng):
    graph, tensors = lut_graph(shape, shape[1], rng)
    x = rng.uniform(-6, 8, shape).astype(np.float32)
    got = Model(graph, tensors, isa=any_path).run(x)
    np.testing.assert_array_equal(got, reference.run_graph(graph, tensors, [x])[0])


def test_channel_count_must_match(rng):
    graph, tensors = lut_graph((1, 5, 3, 3), 4, rng)
    with pytest.raises(qruntime.FormatError, match=r"op 't' \(lut_channels\): expects a 2-D or 4-D input with 4 channels"):
        Model(graph, tensors)
    tensors["t.table"] = np.zeros((5, 255), np.uint8)
    with pytest.raises(qruntime.FormatError, match=r"tensor 't.table' shape: must be \(c, 256\)"):
        Model(graph, tensors)


def test_prelu_model_converts_and_tracks_float(any_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.PReLU(6), nn.Conv2d(6, 4, 1), nn.PReLU()).eval()
    with torch.no_grad():
        model[1].weight.copy_(torch.linspace(-0.5, 0.5, 6))
    rng = np.random.default_rng(0)
    calib = [rng.uniform(-1, 1, (8, 3, 10, 10)).astype(np.float32) for _ in range(3)]
    q = qruntime.quantize(model, calib, progress=False)
    assert [op["op"] for op in q.graph["ops"]].count("lut_channels") == 1  # the one-slope PReLU is a plain lut
    x = rng.uniform(-1, 1, (2, 3, 10, 10)).astype(np.float32)
    got = Model(q.graph, q._tensors, isa=any_path).run(x)
    np.testing.assert_array_equal(got, reference.run_graph(q.graph, q._tensors, [x])[0])
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    assert 10 * np.log10(np.sum(ref ** 2) / np.sum((ref - got) ** 2)) > 30
