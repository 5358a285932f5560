"""layer_norm (over the channels of each pixel, or each row of (N, F)): engine == reference on every ISA
path, within one quantization step of torch's float LayerNorm, bad attributes and shapes refused."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import qruntime
from qruntime import reference
from qruntime.model import Model

X_Q = {"dtype": "uint8", "scale": 0.05, "zero_point": 100}
Y_Q = {"dtype": "uint8", "scale": 0.03, "zero_point": 120}


def ln_graph(shape, channels, rng, eps=1e-6, y_q=Y_Q):
    ops = [{"op": "quantize", "name": "q", "inputs": ["x"], "outputs": ["q"], "attrs": {}, "tensors": {}},
           {"op": "layer_norm", "name": "ln", "inputs": ["q"], "outputs": ["n"], "attrs": {"eps": eps},
            "tensors": {"weight": "ln.weight", "bias": "ln.bias"}},
           {"op": "dequantize", "name": "y", "inputs": ["n"], "outputs": ["y"], "attrs": {}, "tensors": {}}]
    graph = {"inputs": [{"name": "x", "shape": [-1, *shape[1:]]}], "outputs": ["y"], "ops": ops,
             "values": {"x": {"dtype": "float32"}, "q": X_Q, "n": y_q, "y": {"dtype": "float32"}}}
    tensors = {"ln.weight": rng.uniform(0.5, 1.5, channels).astype(np.float32),
               "ln.bias": rng.uniform(-0.5, 0.5, channels).astype(np.float32)}
    return graph, tensors


def run_both(graph, tensors, x, isa):
    got = Model(graph, tensors, isa=isa).run(x)
    np.testing.assert_array_equal(got, reference.run_graph(graph, tensors, [x])[0])
    return got


@pytest.mark.parametrize("shape", [(2, 5, 3, 7), (1, 96, 4, 4), (3, 384), (1, 1, 2, 3), (2, 67, 1, 1)])
def test_engine_equals_reference(shape, any_path, rng):
    graph, tensors = ln_graph(shape, shape[1], rng)
    x = rng.uniform(-5, 7.5, shape).astype(np.float32)
    run_both(graph, tensors, x, any_path)


def test_adversarial_rows(any_path, rng):
    """Constant rows (variance 0: the output is the bias), all codes 255 or 0, one outlier per row, a huge eps,
    and outputs that clamp at both ends."""
    shape = (4, 64, 3, 3)
    x = np.full(shape, 7.75, np.float32)              # all 255 after quantize
    x[1] = -5.0                                       # all 0
    x[2] = 0.3
    x[2, 5] = 7.75                                    # one outlier
    x[3] = rng.choice([-5.0, 7.75], size=(64, 3, 3))  # two levels
    for eps in (1e-30, 1e-6, 10.0):
        graph, tensors = ln_graph(shape, 64, rng, eps=eps)
        tensors["ln.weight"][:8] = np.float32(40.0)  # saturates the output range
        tensors["ln.bias"][8:16] = np.float32(-9.0)
        run_both(graph, tensors, x, any_path)


def test_within_a_step_of_torch(rng):
    shape = (2, 48, 5, 6)
    graph, tensors = ln_graph(shape, 48, rng)
    x = rng.normal(0.5, 2.0, shape).astype(np.float32)
    got = run_both(graph, tensors, x, None)
    # torch on the dequantized input, channels-last as ConvNeXt does it.
    xq = reference.dequantize(reference.quantize(x, X_Q["scale"], X_Q["zero_point"]), X_Q["scale"], X_Q["zero_point"])
    want = F.layer_norm(torch.from_numpy(xq).permute(0, 2, 3, 1), (48,), torch.from_numpy(tensors["ln.weight"]),
                        torch.from_numpy(tensors["ln.bias"]), 1e-6).permute(0, 3, 1, 2).numpy()
    inside = (want > (0 - Y_Q["zero_point"]) * Y_Q["scale"]) & (want < (255 - Y_Q["zero_point"]) * Y_Q["scale"])
    assert inside.mean() > 0.95
    err = np.abs(got - want)[inside]
    assert err.max() <= 0.5 * Y_Q["scale"] * 1.001, err.max() / Y_Q["scale"]


def test_bad_attributes_and_shapes(rng):
    graph, tensors = ln_graph((1, 8, 2, 2), 8, rng)
    x = np.zeros((1, 8, 2, 2), np.float32)
    for eps, message in ((0.0, r"attrs.eps: must be a number"), (1, r"attrs.eps: must be a number"),
                         (float("nan"), r"attrs.eps"), ("1e-5", r"attrs.eps")):
        graph["ops"][1]["attrs"]["eps"] = eps
        with pytest.raises(qruntime.FormatError, match=message):
            Model(graph, tensors)
    graph["ops"][1]["attrs"]["eps"] = 1e-5
    with pytest.raises(qruntime.FormatError, match=r"op 'ln' \(layer_norm\): expects a 2-D or 4-D input with 8 channels"):
        Model(ln_graph((1, 9, 2, 2), 8, rng)[0], tensors)
    bad = dict(tensors, **{"ln.bias": np.zeros(7, np.float32)})
    with pytest.raises(qruntime.FormatError, match=r"tensor 'ln.bias' shape: must be \(c=8,\)"):
        Model(graph, bad)
    bad = dict(tensors, **{"ln.weight": np.full(8, np.inf, np.float32)})
    with pytest.raises(qruntime.FormatError, match=r"tensor 'ln.weight' values: must be finite"):
        Model(graph, bad)
    graph["ops"][1]["attrs"] = {}
    with pytest.raises(qruntime.FormatError, match=r"eps"):
        Model(graph, tensors)
    assert Model(ln_graph((1, 8, 2, 2), 8, rng)[0], tensors).run(x).shape == x.shape


def gn_graph(shape, groups, rng, eps=1e-5):
    graph, tensors = ln_graph(shape, shape[1], rng, eps)
    graph["ops"][1].update(op="group_norm", attrs={"eps": eps, "groups": groups})
    return graph, tensors


@pytest.mark.parametrize("shape, groups", [((2, 8, 5, 7), 4), ((1, 6, 3, 3), 1), ((2, 12, 4, 1), 12), ((1, 32, 9, 9), 8)])
def test_group_norm_engine_equals_reference(shape, groups, any_path, rng):
    graph, tensors = gn_graph(shape, groups, rng)
    x = rng.uniform(-5, 7.75, shape).astype(np.float32)
    x[0, :shape[1] // groups] = 1.0  # a constant group: variance 0
    run_both(graph, tensors, x, any_path)


def test_group_norm_within_a_step_of_torch(rng):
    shape = (2, 16, 6, 5)
    graph, tensors = gn_graph(shape, 4, rng)
    x = rng.normal(0.5, 2.0, shape).astype(np.float32)
    got = run_both(graph, tensors, x, None)
    xq = reference.dequantize(reference.quantize(x, X_Q["scale"], X_Q["zero_point"]), X_Q["scale"], X_Q["zero_point"])
    want = F.group_norm(torch.from_numpy(xq), 4, torch.from_numpy(tensors["ln.weight"]),
                        torch.from_numpy(tensors["ln.bias"]), 1e-5).numpy()
    inside = (want > -Y_Q["zero_point"] * Y_Q["scale"]) & (want < (255 - Y_Q["zero_point"]) * Y_Q["scale"])
    assert inside.mean() > 0.95
    assert np.abs(got - want)[inside].max() <= 0.5 * Y_Q["scale"] * 1.001


def test_group_norm_model_converts(any_path, rng):
    torch.manual_seed(3)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3), torch.nn.GroupNorm(4, 16), torch.nn.SiLU(),
                                torch.nn.Conv2d(16, 8, 3), torch.nn.GroupNorm(2, 8, affine=False)).eval()
    calib = [rng.uniform(-1, 1, (8, 3, 12, 12)).astype(np.float32) for _ in range(3)]
    q = qruntime.quantize(model, calib, progress=False)
    assert [op["op"] for op in q.graph["ops"]].count("group_norm") == 2
    x = rng.uniform(-1, 1, (4, 3, 12, 12)).astype(np.float32)
    got = Model(q.graph, q._tensors, isa=any_path).run(x)
    np.testing.assert_array_equal(got, reference.run_graph(q.graph, q._tensors, [x])[0])
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    assert 10 * np.log10(np.sum(want ** 2) / np.sum((want - got) ** 2)) > 25


def test_group_norm_groups_must_divide_the_channels(rng):
    graph, tensors = gn_graph((1, 8, 2, 2), 3, rng)
    with pytest.raises(qruntime.FormatError, match=r"attrs.groups: 3 does not divide the 8 channels"):
        Model(graph, tensors)
