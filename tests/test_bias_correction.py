"""Bias correction (on by default): output SQNR with and without it on trained digits models, what it does to
the biases, the mean error it removes, and where it does not apply."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn as nn

import qruntime
from qruntime import reference
from qruntime.convert import bias_correction
from test_convert import calibration, fp32_logits, sqnr_db

MODELS = ("seed_cnn", "small_resnet", "small_mobilenetv2")
SQNR_TOLERANCE_DB = 0.2  # the bound: bias correction may cost at most this much anywhere


@pytest.fixture(scope="module")
def pair(trained, digits):
    """(name, weight_bits) -> (model, int8 with bias correction, int8 without), made once per module."""
    cache = {}

    def get(name, weight_bits=8):
        if (name, weight_bits) not in cache:
            model, _ = trained(name)
            cache[name, weight_bits] = (model,) + tuple(
                qruntime.quantize(model, calibration(digits), progress=False, weight_bits=weight_bits,
                                  bias_correction=on) for on in (True, False))
        return cache[name, weight_bits]
    return get


# weight_bits=7: coarser weights everywhere, the narrow layers (seed CNN's 32-channel conv1, the
# MobileNet's 16-channel depthwise convs) most of all: the stress the issue names.
@pytest.mark.parametrize("weight_bits", [8, 7])
@pytest.mark.parametrize("name", MODELS)
def test_output_sqnr_rises_or_stays(name, weight_bits, pair, digits):
    model, corrected, plain = pair(name, weight_bits)
    x_test = digits[2]
    ref = fp32_logits(model, x_test)
    with_correction, without = sqnr_db(ref, corrected.run(x_test)), sqnr_db(ref, plain.run(x_test))
    print(f"{name} weight_bits={weight_bits}: {without:.2f} dB without, {with_correction:.2f} dB with")
    assert with_correction >= without - SQNR_TOLERANCE_DB


def int8_biases(q):
    """{layer name: its float32 bias} of every int8 conv2d / linear op."""
    return {op["name"]: q._tensors[op["tensors"]["bias"]] for op in q.graph["ops"]
            if op["op"] in ("conv2d", "linear") and "bias" in op["tensors"]}


def test_correction_shifts_only_the_int8_biases(pair):
    _, corrected, plain = pair("small_resnet")
    assert corrected.graph["quantization"]["bias_correction"] is True
    assert plain.graph["quantization"]["bias_correction"] is False
    shifted, original = int8_biases(corrected), int8_biases(plain)
    assert shifted.keys() == original.keys() and len(shifted) == 10
    for name in shifted:
        assert not np.array_equal(shifted[name], original[name]), name
        # a fine adjustment: each channel moves by a small part of the bias's spread
        assert np.max(np.abs(shifted[name] - original[name])) < 0.5 * np.ptp(original[name]) + 1e-3, name
    # everything else is the same file: the weights, scales and the activation ranges
    for role in ("weight", "w_scale"):
        for op_a, op_b in zip(corrected.graph["ops"], plain.graph["ops"]):
            if role in op_a["tensors"]:
                np.testing.assert_array_equal(corrected._tensors[op_a["tensors"][role]],
                                              plain._tensors[op_b["tensors"][role]])
    assert corrected.graph["values"] == plain.graph["values"]


def test_the_last_layer_has_no_mean_error_left_on_the_calibration_data(pair, digits):
    # The classifier's output has no activation after it: corrected in the last wave with every layer before
    # it done, its mean error per class on the calibration data is what rounding to its output grid leaves.
    model, corrected, plain = pair("small_mobilenetv2")
    x = np.concatenate(calibration(digits))
    ref = fp32_logits(model, x)
    step = corrected.graph["values"][corrected.graph["ops"][-1]["inputs"][0]]["scale"]
    mean_error = {name: np.abs((ref - q.run(x)).mean(axis=0)) for name, q in
                  (("corrected", corrected), ("plain", plain))}
    assert mean_error["corrected"].max() < 0.1 * step
    assert mean_error["plain"].max() > 3 * mean_error["corrected"].max()


def test_the_engine_runs_the_corrected_model_as_the_reference_does(pair, digits, any_path):
    _, corrected, _ = pair("small_mobilenetv2")
    m = qruntime.Model(corrected.graph, corrected._tensors, isa=any_path)
    x = digits[2][:7]
    np.testing.assert_array_equal(m.run(x), reference.run_graph(corrected.graph, corrected._tensors, [x])[0])


def test_layers_kept_in_float_keep_their_bias(trained, digits):
    model, _ = trained("seed_cnn")
    q = qruntime.quantize(model, calibration(digits, batches=2), progress=False, keep_float=["fc1"])
    ops = {op["name"]: op for op in q.graph["ops"] if op["op"] not in ("quantize", "dequantize")}
    assert ops["fc1"]["op"] == "linear_float"
    np.testing.assert_array_equal(q._tensors[ops["fc1"]["tensors"]["bias"]], model.fc1.bias.detach().numpy())
    assert not np.array_equal(q._tensors[ops["fc2"]["tensors"]["bias"]], model.fc2.bias.detach().numpy())


class ChannelsLastBlock(nn.Module):
    """ConvNeXt's pattern: a Linear over the channels of a permuted NCHW tensor (a 1x1 conv in the IR)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.norm = nn.LayerNorm(8)
        self.pwconv = nn.Linear(8, 12)

    def forward(self, x):
        x = self.conv(x).permute(0, 2, 3, 1)
        return self.pwconv(self.norm(x)).permute(0, 3, 1, 2)


def test_a_layer_reading_a_channels_last_view_is_corrected(rng):
    torch.manual_seed(0)
    model = ChannelsLastBlock().eval()
    # 7 x 9 pixels: a permutation mix-up of (H, W, C) could not pass as (C, H, W) unnoticed
    batches = [rng.uniform(0, 1, (8, 3, 7, 9)).astype(np.float32) for _ in range(4)]
    corrected, plain = (qruntime.quantize(model, batches, progress=False, bias_correction=on) for on in (True, False))
    assert "pwconv" in corrected.graph["values"] and "pwconv" in int8_biases(corrected)
    assert not np.array_equal(int8_biases(corrected)["pwconv"], int8_biases(plain)["pwconv"])
    x = np.concatenate(batches)
    ref = fp32_logits(model, x)
    assert sqnr_db(ref, corrected.run(x)) >= sqnr_db(ref, plain.run(x)) - SQNR_TOLERANCE_DB


def test_bias_correction_must_be_a_bool(trained, digits):
    model, _ = trained("seed_cnn")
    with pytest.raises(TypeError, match="bias_correction"):
        qruntime.quantize(model, calibration(digits, batches=1), progress=False, bias_correction="yes")


class LongSkips(nn.Module):
    """Values that stay live across waves: a skip over three convs, a branch in float, a concat of all three,
    so most waves resume from values that an earlier wave's run left."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.a1, self.a2, self.a3 = (nn.Conv2d(8, 8, 3, padding=1) for _ in range(3))
        self.side = nn.Conv2d(8, 8, 1)
        self.mix = nn.Conv2d(24, 8, 1)
        self.fc = nn.Linear(8 * 6 * 7, 10)

    def forward(self, x):
        s = torch.relu(self.stem(x))
        side = torch.sigmoid(self.side(s))
        a = self.a3(torch.relu(self.a2(torch.relu(self.a1(s)))))
        y = torch.relu(self.mix(torch.cat([a + s, side, s], 1)))
        return self.fc(y.flatten(1))


def corrections_from_the_inputs(bc, build_graph, batches, make_model, keep_float=()):
    """What BiasCorrection.run must equal: each wave measured on the whole int8 model, run from its inputs."""
    corrections = {}
    measured = [n for n in bc._nodes if bc._float_counts[n.name] and n.name not in keep_float]
    for wave in bc._waves(measured):
        graph, tensors = build_graph(corrections)
        names = {n.name for n in wave}
        layer_input = {op["name"]: op["inputs"][0] for op in graph["ops"]
                       if op["op"] in ("conv2d", "linear") and op["name"] in names}
        seen = sorted(set(layer_input.values()))
        probe = {key: val for key, val in graph.items() if key != "output_keys"}
        probe["ops"] = graph["ops"] + [{"op": "dequantize", "name": f"{v}:seen", "inputs": [v], "outputs": [f"{v}:seen"],
                                        "attrs": {}, "tensors": {}} for v in seen]
        probe["values"] = dict(graph["values"], **{f"{v}:seen": {"dtype": "float32"} for v in seen})
        probe["outputs"] = graph["outputs"] + [f"{v}:seen" for v in seen]
        model = make_model(probe, tensors)
        sums = {name: 0.0 for name in names}
        counts = dict.fromkeys(names, 0)
        for x in batches:
            outputs = dict(zip(probe["outputs"], model.run(x)))
            for node in wave:
                batch_sums, positions = bias_correction._input_sums(node, outputs[f"{layer_input[node.name]}:seen"],
                                                                    bc._weights[node.name][1].shape)
                sums[node.name] = sums[node.name] + batch_sums
                counts[node.name] += positions
        for node in wave:
            weight, dequantized = bc._weights[node.name]
            float_mean = bias_correction._weighted(node, weight, bc._float_sums[node.name]) / bc._float_counts[node.name]
            int8_mean = bias_correction._weighted(node, dequantized, sums[node.name]) / counts[node.name]
            corrections[node.name] = (float_mean - int8_mean).astype(np.float32)
    return corrections


@pytest.mark.parametrize("keep_float", [(), ("side",), ("a2",)])
def test_waves_resumed_from_the_last_run_give_the_corrections_of_runs_from_the_inputs(keep_float, rng, monkeypatch):
    torch.manual_seed(0)
    model = LongSkips().eval()
    batches = [rng.uniform(0, 1, (4, 3, 6, 7)).astype(np.float32) for _ in range(3)]
    resumed, direct, ops_run = [], [], []
    run = bias_correction.BiasCorrection.run

    def both(self, build_graph, batches, make_model, keep_float=()):
        def counting(graph, tensors):
            ops_run.extend(op["name"] for op in graph["ops"])
            return make_model(graph, tensors)
        resumed.append(run(self, build_graph, batches, counting, keep_float))
        direct.append(corrections_from_the_inputs(self, build_graph, batches, make_model, keep_float))
        return resumed[-1]
    monkeypatch.setattr(bias_correction.BiasCorrection, "run", both)
    q = qruntime.quantize(model, batches, progress=False, keep_float=keep_float)
    assert len(resumed) == 1 and resumed[0].keys() == direct[0].keys()
    assert len(resumed[0]) == 7 - len(keep_float)
    for name in direct[0]:
        assert np.array_equal(resumed[0][name], direct[0][name]), name
    # each wave ran from where the last one stopped: the runs together hold about one model, not one per wave
    model_ops = [op["name"] for op in q.graph["ops"]]
    assert len([name for name in ops_run if name in model_ops]) < 1.5 * len(model_ops), (ops_run, model_ops)


@pytest.mark.parametrize("attrs", [
    {"stride": [1, 1], "padding": [1, 1, 1, 1], "dilation": [1, 1], "groups": 1},
    {"stride": [2, 3], "padding": [0, 2, 1, 0], "dilation": [1, 1], "groups": 2},
    {"stride": [1, 2], "padding": [2, 2, 2, 2], "dilation": [2, 1], "groups": 6},  # depthwise, dilated
])
def test_the_summed_pre_activation_is_the_sum_of_the_conv(attrs, rng):
    x = torch.from_numpy(rng.uniform(0, 3, (3, 6, 9, 11)).astype(np.float32))
    w = torch.from_numpy(rng.normal(0, 1, (12, 6 // attrs["groups"], 3, 3)))
    node = SimpleNamespace(op="conv2d", attrs=attrs)
    sums, positions = bias_correction._input_sums(node, x, w.shape)
    total = bias_correction._weighted(node, w, sums)
    top, left, bottom, right = attrs["padding"]
    y = torch.nn.functional.conv2d(torch.nn.functional.pad(x.double(), (left, right, top, bottom)), w, None,
                                   attrs["stride"], 0, attrs["dilation"], attrs["groups"])
    assert positions == y.shape[0] * y.shape[2] * y.shape[3]
    np.testing.assert_allclose(total, y.sum(dim=(0, 2, 3)).numpy(), rtol=1e-12, atol=1e-9)


def test_the_summed_pre_activation_of_a_linear_counts_every_token(rng):
    x = rng.uniform(-2, 2, (2, 5, 7)).astype(np.float32)  # (batch, seq, features)
    w = torch.from_numpy(rng.normal(0, 1, (4, 7)))
    node = SimpleNamespace(op="linear", attrs={})
    sums, positions = bias_correction._input_sums(node, x, w.shape)
    total = bias_correction._weighted(node, w, sums)
    assert positions == 10
    np.testing.assert_allclose(total, (x.reshape(-1, 7).astype(np.float64) @ w.numpy().T).sum(0), rtol=1e-12)


def test_a_resume_point_is_dropped_once_anything_before_it_changes():
    """A later wave's correction can move an earlier value's scale (the least scale its readers' biases
    need): values kept from before that must not be fed to the next run."""
    ops = [{"op": "quantize", "name": "x", "inputs": ["x"], "outputs": ["x:q"], "attrs": {}, "tensors": {}},
           {"op": "conv2d", "name": "c", "inputs": ["x:q"], "outputs": ["c"], "attrs": {}, "tensors": {"weight": "w"}}]
    values = {"x": {"dtype": "float32"}, "x:q": {"dtype": "uint8", "scale": 0.1, "zero_point": 3},
              "c": {"dtype": "uint8", "scale": 0.2, "zero_point": 0}}
    tensors = {"w": np.ones((2, 1, 1, 1), np.int8)}
    resume = bias_correction._Resume(2, [], ops, {"x:q": values["x:q"], "c": values["c"]}, dict(tensors))
    graph = {"ops": ops, "values": values}
    assert resume.still_holds(graph, tensors)
    rescaled = {"ops": ops, "values": dict(values, **{"x:q": dict(values["x:q"], scale=0.11)})}
    assert not resume.still_holds(rescaled, tensors)
    assert not resume.still_holds(graph, {"w": np.full((2, 1, 1, 1), 2, np.int8)})
    assert not resume.still_holds({"ops": ops[:1] + [dict(ops[1], name="d")], "values": values}, tensors)
