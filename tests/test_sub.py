"""sub (a - b of two activations): engine == reference on every ISA path, equal to add with b's codes
mirrored where that is exact, a converted x - y model tracks float, fused ReLU, bad shapes refused."""
import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import qruntime
from qruntime import reference
from qruntime.model import Model
from test_convert import sqnr_db
from test_trace import Wrap


def sub_graph(shape, act="none", qa=(0.05, 100), qb=(0.03, 20), qy=(0.04, 128)):
    q = lambda s, z: {"dtype": "uint8", "scale": s, "zero_point": z}  # noqa: E731
    ops = [{"op": "quantize", "name": "qa", "inputs": ["a"], "outputs": ["qa"], "attrs": {}, "tensors": {}},
           {"op": "quantize", "name": "qb", "inputs": ["b"], "outputs": ["qb"], "attrs": {}, "tensors": {}},
           {"op": "sub", "name": "d", "inputs": ["qa", "qb"], "outputs": ["d"], "attrs": {"act": act}, "tensors": {}},
           {"op": "dequantize", "name": "y", "inputs": ["d"], "outputs": ["y"], "attrs": {}, "tensors": {}}]
    spec = [{"name": n, "shape": [-1, *shape[1:]]} for n in ("a", "b")]
    values = {"a": {"dtype": "float32"}, "b": {"dtype": "float32"}, "qa": q(*qa), "qb": q(*qb), "d": q(*qy),
              "y": {"dtype": "float32"}}
    return {"inputs": spec, "outputs": ["y"], "ops": ops, "values": values}


@pytest.mark.parametrize("shape", [(2, 5, 3, 7), (1, 67, 1, 33), (3, 41)])
@pytest.mark.parametrize("act", ["none", "relu"])
def test_engine_equals_reference(shape, act, any_path, rng):
    graph = sub_graph(shape, act)
    a = rng.uniform(-5, 7.75, shape).astype(np.float32)
    b = rng.uniform(-0.6, 7.0, shape).astype(np.float32)
    got = Model(graph, {}, isa=any_path).run([a, b])
    np.testing.assert_array_equal(got, reference.run_graph(graph, {}, [a, b])[0])
    want = np.maximum(a - b, 0) if act == "relu" else a - b
    inside = np.abs(want) < 4.5  # inside the output's range (scale 0.04, zero point 128)
    assert np.abs(got - want)[inside].max() <= 0.04 + 0.05 / 2 + 0.03 / 2 + 1e-6  # one output step + input rounding


def test_mirrored_codes_make_sub_an_add(rng):
    """With b's zero point at 128 and the same scales, a - b equals a + (256 - b) for codes 1..255: the
    negated term is exactly the mirrored code's term, so no bit differs."""
    shape = (2, 8, 5, 5)
    graph = sub_graph(shape, qa=(0.05, 128), qb=(0.05, 128), qy=(0.1, 128))
    b_codes = rng.integers(1, 256, shape)
    b = ((b_codes - 128) * np.float32(0.05)).astype(np.float32)
    a = rng.uniform(-6, 6, shape).astype(np.float32)
    got = Model(graph, {}).run([a, b])
    add = dict(graph, ops=[dict(op, op="add") if op["op"] == "sub" else op for op in graph["ops"]])
    mirrored = ((128 - b_codes) * np.float32(0.05)).astype(np.float32)
    np.testing.assert_array_equal(got, Model(add, {}).run([a, mirrored]))


def test_converted_difference_tracks_float(any_path, rng):
    torch.manual_seed(0)
    model = Wrap(lambda s, x: F.relu(s.c1(x) - torch.sigmoid(s.c2(x))), c1=nn.Conv2d(3, 6, 3), c2=nn.Conv2d(3, 6, 3))
    x = rng.uniform(-1, 1, (4, 3, 12, 12)).astype(np.float32)
    # x is calibrated on: a c1 value of x past the calibrated range (clipped) measured calibration coverage, not sub
    calib = [rng.uniform(-1, 1, (8, 3, 12, 12)).astype(np.float32) for _ in range(3)] + [x]
    q = qruntime.quantize(model.eval(), calib, progress=False)
    assert [op["op"] for op in q.graph["ops"]].count("sub") == 1
    assert next(op for op in q.graph["ops"] if op["op"] == "sub")["attrs"]["act"] == "relu"  # fused
    got = Model(q.graph, q._tensors, isa=any_path).run(x)
    np.testing.assert_array_equal(got, reference.run_graph(q.graph, q._tensors, [x])[0])
    with torch.no_grad():
        assert sqnr_db(model(torch.from_numpy(x)).numpy(), got) > 30  # 32.6-36.1 dB over 40 weight/data seeds


def test_shapes_must_match(rng):
    graph = sub_graph((1, 4, 3, 3))
    graph["inputs"][1]["shape"] = [-1, 4, 1, 1]
    with pytest.raises(qruntime.FormatError, match=r"op 'd' \(sub\): inputs must have the same shape"):
        Model(graph, {})
    with pytest.raises(qruntime.UnsupportedOpError, match="broadcasting sub of shapes"):
        qruntime.quantize(Wrap(lambda s, x: x - x.mean((2, 3), keepdim=True)).eval(),
                          [np.ones((2, 3, 4, 4), np.float32)], progress=False)
