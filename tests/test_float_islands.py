"""Float islands: keep_float takes any module path or node name; the ops inside with a float32 kernel
(conv/linear, LayerNorm, add/sub/mul, affine, elementwise functions) run in float between a dequantize and a
quantize, the same bits on every ISA path, close to the reference and to torch; summary() names them."""
import numpy as np
import pytest
import torch
import torch.nn as nn

import qruntime
from qruntime import reference
from qruntime.model import Model
from test_channels_last import Block, images, tiny_convnext, torch_out
from test_convert import sqnr_db
from test_trace import Wrap


def convert(model, rng, keep_float=(), calibration=None):
    calibration = calibration or [images(rng, 8) for _ in range(3)]
    return qruntime.quantize(model, calibration, keep_float=keep_float, progress=False)


def test_a_whole_block_in_float(rng):
    model = tiny_convnext()
    calibration = [images(rng, 8) for _ in range(3)]
    q = convert(model, rng, keep_float=["2"], calibration=calibration)  # the first ConvNeXt block, by module path
    block_ops = {op["name"]: op["op"] for op in q.graph["ops"] if op["name"].startswith("2.")}
    assert block_ops == {"2.dwconv": "conv2d_float", "2.norm": "layer_norm_float", "2.fc1": "conv2d_float",
                         "2.act": "unary_float", "2.fc2": "conv2d_float"}
    assert [op["op"] for op in q.graph["ops"]].count("add") == 2  # the residual adds are the model's, not the blocks'

    assert set(q.float_ops()) == set(block_ops)
    text = q.summary(input_shape=(1, 3, 16, 16))
    assert "float islands: 5 op(s) run in float32 (2.dwconv, 2.norm, 2.fc1, 2.act, 2.fc2)" in text
    x = images(rng, 32)
    want = torch_out(model, x)
    all_int8 = convert(model, rng, calibration=calibration)
    assert sqnr_db(want, q.run(x)) >= sqnr_db(want, all_int8.run(x)) - 0.5  # the float block costs nothing


def test_float_ops_same_bits_on_every_path_and_close_to_reference(rng):
    model = Wrap(lambda s, x: s.norm(torch.sigmoid(s.c1(x)) * s.c2(x) - torch.tanh(s.c3(x)) + s.c1(x)),
                 c1=nn.Conv2d(3, 6, 3), c2=nn.Conv2d(3, 6, 3), c3=nn.Conv2d(3, 6, 3), norm=nn.BatchNorm2d(6)).eval()
    with torch.no_grad():
        model.norm.running_var.uniform_(0.5, 2.0)
    names = ["sigmoid", "mul", "tanh", "sub", "add", "norm"]
    q = convert(model, rng, keep_float=names)
    kinds = {op["name"]: op["op"] for op in q.graph["ops"]}
    assert [kinds[n] for n in names] == ["unary_float", "binary_float", "unary_float", "binary_float",
                                         "binary_float", "conv2d_float"]
    x = images(rng, 4)
    outs = [Model(q.graph, q._tensors, isa=isa).run(x) for isa in qruntime.available_isas()]
    for other in outs[1:]:
        np.testing.assert_array_equal(outs[0], other)
    np.testing.assert_allclose(outs[0], reference.run_graph(q.graph, q._tensors, [x])[0], rtol=1e-5, atol=1e-5)
    assert sqnr_db(torch_out(model, x), outs[0]) > 30


@pytest.mark.parametrize("fn", [lambda x: torch.nn.functional.gelu(x, approximate="tanh"), torch.tanh,
                                nn.functional.hardswish, nn.functional.silu, lambda x: x.clamp(-0.5, None),
                                lambda x: nn.functional.leaky_relu(x, 0.2), lambda x: x * 3 - 1, nn.functional.gelu],
                         ids=["gelu_tanh", "tanh", "hardswish", "silu", "clamp_min", "leaky", "scale_shift", "gelu"])
def test_each_function_in_float_matches_torch(fn, rng):
    model = Wrap(lambda s, x: fn(s.c(x)), c=nn.Conv2d(3, 4, 3)).eval()
    q = convert(model, rng, keep_float=["c"] + [n for n in ("gelu", "tanh", "hardswish", "silu", "clamp", "leaky_relu",
                                                            "mul", "sub")
                                               if n in {op["name"] for op in convert(model, rng).graph["ops"]}])
    assert q.graph["ops"][-1]["op"] == "unary_float"  # the output stays float: no requantization at the end
    x = images(rng, 4)
    np.testing.assert_allclose(q.run(x), torch_out(model, x), rtol=1e-4, atol=1e-4)


def test_bad_names_are_refused(rng):
    model = Wrap(lambda s, x: torch.flatten(s.pool(s.c(x)), 1), c=nn.Conv2d(3, 4, 3), pool=nn.MaxPool2d(2)).eval()
    with pytest.raises(ValueError, match="'nope' is neither a module path nor a node name"):
        convert(model, rng, keep_float=["nope"])
    with pytest.raises(ValueError, match=r"'pool' holds only ops without a float32 kernel \(\['max_pool2d'\]\)"):
        convert(model, rng, keep_float=["pool"])
    with pytest.raises(TypeError, match="module paths or node names"):
        convert(model, rng, keep_float=[3])


def test_layer_norm_float_against_torch(rng):
    model = nn.Sequential(nn.Conv2d(3, 8, 1), Block(8)).eval()
    q = convert(model, rng, keep_float=["1.norm", "1.dwconv", "1.fc1", "1.act", "1.fc2", "0"])
    x = images(rng, 2)
    assert "layer_norm_float" in [op["op"] for op in q.graph["ops"]]
    # Only the residual add is int8 here: the output is within a few of its steps of torch.
    step = q.graph["values"][q.graph["ops"][-2]["outputs"][0]]["scale"]
    assert np.abs(q.run(x) - torch_out(model, x)).max() < 4 * step
