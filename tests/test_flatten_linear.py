"""A flatten whose one reader is a linear keeps its NHWC order, and the linear's weights are permuted
at load to match (executor.cc): the same products, summed exactly, so every path still equals the
reference; where the channels are not known at load, or others read the flatten, it transposes."""
import numpy as np
import pytest

from qruntime import reference
from qruntime.model import Model

KEPT = "c++ (NHWC order kept: the linear reads it)"


def _u8(scale, zp):
    return {"dtype": "uint8", "scale": float(np.float32(scale)), "zero_point": zp}


def _op(kind, inputs, output, attrs=None, tensors=None):
    return {"op": kind, "name": output, "inputs": inputs, "outputs": [output], "attrs": attrs or {},
            "tensors": tensors or {}}


def _graph(rng, before_flatten, second_reader=False, c_in=3, any_channels=False):
    """quantize -> [before_flatten ops] -> flatten -> linear -> dequantize, 9x9 input (7x7 after a
    3x3 max pool of stride 1); with second_reader the flatten also feeds a dequantize output."""
    t = {"c.weight": rng.integers(-127, 128, (6, c_in, 3, 3), dtype=np.int8),
         "c.w_scale": rng.uniform(0.002, 0.01, 6).astype(np.float32)}
    conv = {"stride": [1, 1], "padding": [1, 1, 1, 1], "dilation": [1, 1], "groups": 1, "act": "relu"}
    pool = {"kernel": [3, 3], "stride": [1, 1], "padding": [0, 0], "dilation": [1, 1], "ceil_mode": False}
    values = {"x": {"dtype": "float32"}, "q": _u8(0.02, 128), "c": _u8(0.05, 0), "m": _u8(0.05, 0),
              "cat": _u8(0.05, 0), "f": _u8(0.05, 0), "fc": _u8(0.1, 128), "y": {"dtype": "float32"},
              "fy": {"dtype": "float32"}}
    ops = [_op("quantize", ["x"], "q")]
    last, channels, hw = "q", c_in, 9
    for kind in before_flatten:
        if kind == "conv2d":
            ops.append(_op("conv2d", [last], "c", conv, {"weight": "c.weight", "w_scale": "c.w_scale"}))
            last, channels = "c", 6
        elif kind == "max_pool2d":
            ops.append(_op("max_pool2d", [last], "m", pool))
            values["m"] = dict(values[last])  # max pooling keeps its input's quantization
            last, hw = "m", hw - 2
        elif kind == "add":  # keeps its inputs' channels
            ops.append(_op("add", [last, last], "s", {"act": "none"}))
            values["s"] = _u8(0.1, 0)
            last = "s"
        elif kind == "concat":  # channels the load-time rewrite does not follow
            ops.append(_op("concat", [last, last], "cat", {"axis": 1}))
            values["cat"] = dict(values[last])
            last, channels = "cat", 2 * channels
    k = channels * hw * hw
    t["fc.weight"] = rng.integers(-127, 128, (10, k), dtype=np.int8)
    t["fc.w_scale"] = rng.uniform(0.0005, 0.002, 10).astype(np.float32)
    t["fc.bias"] = rng.normal(0, 0.5, 10).astype(np.float32)
    values["f"] = dict(values[last])
    ops += [_op("flatten", [last], "f"),
            _op("linear", ["f"], "fc", {"act": "none"}, {"weight": "fc.weight", "w_scale": "fc.w_scale", "bias": "fc.bias"}),
            _op("dequantize", ["fc"], "y")]
    outputs = ["y"]
    if second_reader:
        ops.append(_op("dequantize", ["f"], "fy"))
        outputs.append("fy")
    values = {name: v for name, v in values.items() if name in {"x"} | {o["outputs"][0] for o in ops}}
    used = {name for o in ops for name in o["tensors"].values()}
    t = {name: v for name, v in t.items() if name in used}
    shape = [-1, -1 if any_channels else c_in, 9, 9]
    graph = {"inputs": [{"name": "x", "shape": shape}], "outputs": outputs, "values": values, "ops": ops}
    return graph, t


def _check(any_path, rng, graph, tensors, want_kernel, c_in=3):
    model = Model(graph, tensors, isa=any_path)
    x = rng.normal(0, 1.5, (3, c_in, 9, 9)).astype(np.float32)
    got = model.run(x)
    want = reference.run_graph(graph, tensors, [x])
    for g, w in zip(got if isinstance(got, (list, tuple)) else [got], want):
        np.testing.assert_array_equal(g, w)
    kernels = {r["name"]: r["kernel"] for r in model.profile(x, repeat=1)}
    assert kernels["f"] == want_kernel


@pytest.mark.parametrize("before", [["conv2d"], ["conv2d", "max_pool2d"], ["max_pool2d"], ["conv2d", "add"]])
def test_flatten_keeps_nhwc_and_equals_the_reference(any_path, rng, before):
    """After a conv (channels from its weights), through a pool (which keeps them), or straight from
    the quantized input (its declared channels)."""
    graph, tensors = _graph(rng, before)
    _check(any_path, rng, graph, tensors, KEPT)


def test_flatten_transposes_when_it_must(any_path, rng):
    # A second reader needs NCHW order; after a concat the channels are not followed at load.
    graph, tensors = _graph(rng, ["conv2d"], second_reader=True)
    _check(any_path, rng, graph, tensors, "c++")
    graph, tensors = _graph(rng, ["conv2d", "concat"])
    _check(any_path, rng, graph, tensors, "c++")
    # Straight from an input of any channel count: not known at load.
    graph, tensors = _graph(rng, ["max_pool2d"], any_channels=True)
    _check(any_path, rng, graph, tensors, "c++")


def test_one_channel_needs_no_permutation(rng):
    # C = 1: NHWC and NCHW orders agree; the linear keeps its weights as they are.
    graph, tensors = _graph(rng, ["max_pool2d"], c_in=1)
    _check("scalar", rng, graph, tensors, "c++", c_in=1)
