"""Bias correction (on by default): output SQNR with and without it on trained digits models, what it does to
the biases, the mean error it removes, and where it does not apply."""
import numpy as np
import pytest
import torch
import torch.nn as nn

import qruntime
from qruntime import reference
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
