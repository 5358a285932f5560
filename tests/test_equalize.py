"""Cross-layer equalization (quantize(..., cross_layer_equalization=True)): the pass keeps the function, equalizes
the weight ranges per channel, records the rescaled values for calibration, and leaves alone what it must."""
import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import qruntime
from qruntime.convert import passes
from qruntime.convert.trace import trace
from test_convert import calibration, fp32_logits, sqnr_db


class Chain(nn.Module):
    """conv -> ReLU -> depthwise conv -> conv -> ReLU6 -> conv, then pool and two linears: every pair kind."""

    def __init__(self):
        super().__init__()
        self.c1, self.dw, self.c2 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.Conv2d(8, 6, 1)
        self.c3 = nn.Conv2d(6, 6, 1)
        self.fc1, self.fc2 = nn.Linear(6, 12), nn.Linear(12, 4)
        with torch.no_grad():  # channels of very different size: what equalization is for
            for layer in (self.c1, self.c2, self.fc1):
                layer.weight.mul_(torch.logspace(-1.5, 1.5, layer.weight.shape[0]).reshape(-1, *[1] * (layer.weight.dim() - 1)))

    def forward(self, x):
        x = self.c2(self.dw(F.relu(self.c1(x))))
        x = self.c3(F.relu6(x))
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.fc2(F.relu(self.fc1(x)))


def run_ir(graph, x):
    """The float IR evaluated with torch: the ops of Chain only."""
    values = {graph.inputs[0]: x}
    for n in graph.nodes:
        a, v = n.attrs, values[n.inputs[0]]
        if n.op == "conv2d":
            top, left, bottom, right = a["padding"]
            y = F.conv2d(F.pad(v, (left, right, top, bottom)), torch.from_numpy(n.params["weight"]),
                         torch.from_numpy(n.params["bias"]), a["stride"], 0, a["dilation"], a["groups"])
        elif n.op == "linear":
            y = F.linear(v, torch.from_numpy(n.params["weight"]), torch.from_numpy(n.params["bias"]))
        elif n.op == "relu6":
            y = F.relu6(v)
        elif n.op in ("adaptive_avg_pool2d", "reduce"):
            y = v.mean((2, 3), keepdim=True)
        elif n.op == "flatten":
            y = v.flatten(1)
        else:
            raise AssertionError(f"run_ir does not know {n.op}")
        if a.get("act") == "relu":
            y = F.relu(y)
        elif a.get("act") == "relu6":
            y = F.relu6(y)
        values[n.output] = y
    return values


@pytest.fixture
def chain_graphs(rng):
    torch.manual_seed(0)
    model = Chain().eval()
    x = torch.from_numpy(rng.uniform(-1, 1, (4, 3, 10, 10)).astype(np.float32))
    graph = passes.run_all(trace(model, x)[0])
    return model, x, graph, passes.equalize(graph)


def test_equalization_keeps_the_function_and_records_the_rescaled_values(chain_graphs):
    model, x, graph, equal = chain_graphs
    before, after = run_ir(graph, x), run_ir(equal, x)
    with torch.no_grad():
        torch.testing.assert_close(after[equal.outputs[0]], model(x), rtol=1e-4, atol=1e-5)
    assert equal.value_scales and not graph.value_scales  # the pass is pure
    for value, scales in equal.value_scales.items():
        # the IR value is the torch value divided per channel: what calibration must observe
        torch.testing.assert_close(after[value], equal.to_ir(value, before[value]), rtol=1e-3, atol=1e-5)
        assert not np.allclose(scales, 1.0)


def test_each_pair_ends_with_equal_ranges_per_channel(chain_graphs):
    _, _, graph, equal = chain_graphs
    nodes = {n.name: n for n in equal.nodes}

    def out_ranges(n):
        return np.abs(n.params["weight"]).reshape(n.params["weight"].shape[0], -1).max(axis=1)

    # c1 -> dw (ReLU between): depthwise, channel i reads channel i. dw -> c2: no activation between.
    # fc1 -> fc2 (ReLU between). The last pair equalized in each chain matches exactly; c1 -> dw, moved
    # again by dw -> c2 after it, is within a few % (it started 1000x apart: Chain's logspace weights).
    def spread(ratio):
        return ratio.max() / ratio.min()
    original = {n.name: n for n in graph.nodes}
    in_dw = np.abs(nodes["dw"].params["weight"]).reshape(8, -1).max(axis=1)
    in_dw_before = np.abs(original["dw"].params["weight"]).reshape(8, -1).max(axis=1)
    assert spread(out_ranges(original["c1"]) / in_dw_before) > 100
    assert spread(out_ranges(nodes["c1"]) / in_dw) < 1.2
    in_c2 = np.abs(nodes["c2"].params["weight"]).max(axis=(0, 2, 3))
    np.testing.assert_allclose(out_ranges(nodes["dw"]), in_c2, rtol=1e-5)
    np.testing.assert_allclose(out_ranges(nodes["fc1"]), np.abs(nodes["fc2"].params["weight"]).max(axis=0), rtol=1e-5)
    # c2 -> ReLU6 -> c3: ReLU6(x / s) != ReLU6(x) / s, so that pair is left alone
    np.testing.assert_array_equal(nodes["c3"].params["weight"], original["c3"].params["weight"])
    assert "c2" not in equal.value_scales


@pytest.mark.parametrize("name", ["seed_cnn", "small_resnet"])
def test_quantize_with_equalization_keeps_accuracy(name, trained, digits):
    model, fp32_acc = trained(name)
    x_test, y_test = digits[2], digits[3]
    ref = fp32_logits(model, x_test)
    plain = qruntime.quantize(model, calibration(digits), progress=False)
    equal = qruntime.quantize(model, calibration(digits), progress=False, cross_layer_equalization=True)
    assert plain.graph["values"] != equal.graph["values"]  # the rescaled values got their own ranges
    ours, before = sqnr_db(ref, equal.run(x_test)), sqnr_db(ref, plain.run(x_test))
    print(f"{name}: {before:.2f} dB, with cross-layer equalization {ours:.2f} dB")
    assert ours >= before - 0.2
    assert 100 * np.mean(equal.run(x_test).argmax(1) == y_test) >= fp32_acc - 1.0


def test_equalization_flag_must_be_a_bool(trained, digits):
    model, _ = trained("seed_cnn")
    with pytest.raises(TypeError, match="cross_layer_equalization"):
        qruntime.quantize(model, calibration(digits, batches=1), progress=False, cross_layer_equalization=1)
