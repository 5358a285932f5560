"""Layout ops as index maps (convert/layout.py): channel shuffle, chunk/split, channel slices, views
and permutes that come back to NCHW, converted to gather_channels (or nothing), equal to PyTorch, and
the engine's gather_channels equal to the reference on every ISA path."""
import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import qruntime
from qruntime import reference
from qruntime.convert.trace import trace
from qruntime.errors import UnsupportedOpError
from qruntime.model import Model
from test_trace import Wrap


def channel_shuffle(x, groups):
    """torchvision's ShuffleNetV2 channel_shuffle, verbatim in its steps."""
    batchsize, num_channels, height, width = x.size()
    channels_per_group = num_channels // groups
    x = x.view(batchsize, groups, channels_per_group, height, width)
    x = torch.transpose(x, 1, 2).contiguous()
    return x.view(batchsize, num_channels, height, width)


def shuffle_block(m, x):
    """ShuffleNetV2's stride-1 unit: chunk, a branch on one half, cat, shuffle."""
    x1, x2 = x.chunk(2, dim=1)
    return channel_shuffle(torch.cat((x1, F.relu(m.c(x2))), dim=1), 2)


def swap_halves(x):
    a, b = torch.split(x, [3, 5], 1)
    return torch.cat((b, a), 1)


IMAGE = (2, 8, 5, 6)
CASES = [
    ("channel_shuffle", lambda: Wrap(lambda m, x: channel_shuffle(x.relu(), 4)), IMAGE, ["relu", "gather_channels"]),
    ("shuffle_block", lambda: Wrap(shuffle_block, c=nn.Conv2d(4, 4, 1)), IMAGE,
     ["gather_channels", "conv2d", "relu", "gather_channels", "cat", "gather_channels"]),  # x1 gathered when read
    ("split_sizes", lambda: Wrap(lambda m, x: swap_halves(x.relu())), IMAGE,
     ["relu", "gather_channels", "gather_channels", "cat"]),
    ("slice", lambda: Wrap(lambda m, x: x.sigmoid()[:, 2:7]), IMAGE, ["sigmoid", "gather_channels"]),
    ("slice_step", lambda: Wrap(lambda m, x: x.sigmoid()[:, ::3]), IMAGE, ["sigmoid", "gather_channels"]),
    ("permute_roundtrip", lambda: Wrap(lambda m, x: x.relu().permute(0, 2, 3, 1).permute(0, 3, 1, 2)), IMAGE,
     ["relu"]),
    ("view_identity", lambda: Wrap(lambda m, x: x.relu().view(x.size(0), 8, 5, 6)), IMAGE, ["relu"]),
    ("view_then_flatten", lambda: Wrap(lambda m, x: x.relu().view(x.size(0), 2, 4, 30).flatten(1)), IMAGE,
     ["relu", "flatten"]),
    ("features_shuffle", lambda: Wrap(lambda m, x: x.relu().view(-1, 2, 4).transpose(1, 2).reshape(-1, 8)), (3, 8),
     ["relu", "gather_channels"]),
]


@pytest.mark.parametrize("make_model, shape, ops", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_layout_maps_to_gather_and_equals_torch(make_model, shape, ops):
    model = make_model().eval()
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    graph, _ = trace(model, x)
    assert [n.op for n in graph.nodes] == ops
    q = qruntime.quantize(model, [x.numpy()], progress=False)
    with torch.no_grad():
        want = model(x).numpy()
    got = q.run(x.numpy())
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, reference.run_graph(q.graph, q._tensors, [x.numpy()])[0])
    # A few quantization steps (input and output rounding); a wrong channel order is off by far more.
    step = (want.max() - min(want.min(), 0)) / 255
    assert np.abs(got - want).max() <= 3 * step


@pytest.mark.parametrize("fn, reason", [
    (lambda m, x: x.relu().permute(0, 2, 3, 1), "not a reordering or selection of channels"),
    (lambda m, x: x.relu().view(x.size(0), 8, 30)[:, :, :5].reshape(x.size(0), -1), "not a reordering"),
    (lambda m, x: x.relu().transpose(2, 3), "not a reordering or selection of channels"),
    (lambda m, x: x.relu()[1:], "slicing the batch dim"),
    (lambda m, x: x.relu().view(8, -1), "the batch must stay dim 0"),
], ids=["nhwc_output", "view_slice_spatial", "transpose_hw", "batch_slice", "batch_view"])
def test_layouts_that_are_not_channel_maps_are_named(fn, reason):
    with pytest.raises(UnsupportedOpError, match=reason):
        trace(Wrap(fn).eval(), torch.randn(IMAGE))


def _u8(scale, zp):
    return {"dtype": "uint8", "scale": scale, "zero_point": zp}


def gather_graph(shape, index, dtype="uint8"):
    ops = [{"op": "quantize", "name": "q", "inputs": ["x"], "outputs": ["q"], "attrs": {}, "tensors": {}},
           {"op": "gather_channels", "name": "g", "inputs": ["q"], "outputs": ["g"], "attrs": {},
            "tensors": {"index": "g.index"}},
           {"op": "dequantize", "name": "y", "inputs": ["g"], "outputs": ["y"], "attrs": {}, "tensors": {}}]
    values = {"x": {"dtype": "float32"}, "q": _u8(0.1, 7), "g": _u8(0.1, 7), "y": {"dtype": "float32"}}
    if dtype == "float32":  # gather the floats, quantize after
        ops[0]["inputs"], ops[0]["outputs"], ops[1]["inputs"], ops[1]["outputs"] = ["g"], ["q"], ["x"], ["g"]
        ops = [ops[1], ops[0], ops[2]]
        ops[2]["inputs"] = ["q"]
        values["g"] = {"dtype": "float32"}
    graph = {"inputs": [{"name": "x", "shape": [-1, *shape[1:]]}], "outputs": ["y"], "values": values, "ops": ops}
    return graph, {"g.index": np.asarray(index, np.int32)}


@pytest.mark.parametrize("dtype", ["uint8", "float32"])
@pytest.mark.parametrize("shape, index", [((2, 8, 3, 5), [1, 0, 3, 2, 5, 4, 7, 6]), ((1, 70, 2, 2), list(range(69, -1, -2))),
                                          ((3, 5), [4, 4, 0]), ((1, 1, 4, 4), [0, 0, 0])])
def test_engine_gather_equals_reference(shape, index, dtype, any_path, rng):
    graph, tensors = gather_graph(shape, index, dtype)
    x = rng.uniform(-5, 20, shape).astype(np.float32)
    got = Model(graph, tensors, isa=any_path).run(x)
    np.testing.assert_array_equal(got, reference.run_graph(graph, tensors, [x])[0])
    assert got.shape == (shape[0], len(index), *shape[2:])


def test_bad_indices():
    graph, tensors = gather_graph((1, 4, 2, 2), [0, 4])
    with pytest.raises(ValueError, match=r"op 'g' \(gather_channels\): tensor 'index' names channel 4 of an input with 4"):
        Model(graph, tensors)  # fixed input size: planned at load
    graph, tensors = gather_graph((1, 4, 2, 2), [0, -1])
    with pytest.raises(qruntime.FormatError, match=r"tensor 'g.index' values: channel indices are >= 0"):
        Model(graph, tensors)
