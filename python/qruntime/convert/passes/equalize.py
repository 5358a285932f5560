"""Pass (optional): cross-layer equalization of consecutive layers (Nagel et al. 2019, "Data-free quantization").

For a layer A (conv2d or linear, no activation or ReLU) whose output only a layer B reads (a conv2d with
groups 1, a depthwise conv2d, or a linear after a linear), A's output channel i can be divided by any
s_i > 0 and B's weights reading it multiplied by s_i: ReLU(x / s) = ReLU(x) / s, so the function is the
same. With r1_i = max |A's weights of output channel i| and r2_i = max |B's weights reading channel i|,
s_i = sqrt(r1_i / r2_i) gives both the range sqrt(r1_i r2_i): per-channel int8 weights of B lose less
on the channels A made large, and the activation between no longer spends its 256 codes on a few
channels. A few sweeps settle chains (a layer is B of one pair and A of the next).

The IR value between then holds the fx value divided by s per channel: Graph.value_scales records s,
and Graph.to_ir applies it to what calibration observes.
"""
import copy

import numpy as np

SWEEPS = 4


def equalize(graph):
    """A new graph with every eligible (A, B) pair equalized; value_scales holds each rescaled value's divisors."""
    graph = graph.with_nodes([copy.copy(n) for n in graph.nodes])
    readers = {}
    for node in graph.nodes:
        for v in set(node.inputs):
            readers.setdefault(v, []).append(node)
    pairs = [(a, readers[a.output][0]) for a in graph.nodes if _equalizable(a, readers.get(a.output, []), graph)]
    for _ in range(SWEEPS):
        for a, b in pairs:
            r1 = np.abs(a.params["weight"]).reshape(a.params["weight"].shape[0], -1).max(axis=1).astype(np.float64)
            r2 = _input_channel_ranges(b)
            s = np.where((r1 > 0) & (r2 > 0), np.sqrt(r1 / np.where(r2 > 0, r2, 1.0)), 1.0)
            _scale_output_channels(a, 1.0 / s)
            _scale_input_channels(b, s)
            graph.value_scales[a.output] = graph.value_scales.get(a.output, np.ones_like(s)) * s
    return graph


def _equalizable(a, readers, graph):
    if a.op not in ("conv2d", "linear") or a.attrs.get("act", "none") not in ("none", "relu"):
        return False
    if len(readers) != 1 or a.output in graph.outputs or a.output in graph.channels_last:
        return False
    b = readers[0]
    if b.inputs != [a.output]:
        return False
    if a.op == "linear":
        return b.op == "linear"
    channels = a.params["weight"].shape[0]
    return b.op == "conv2d" and (b.attrs["groups"] == 1 or b.attrs["groups"] == channels == b.params["weight"].shape[0])


def _depthwise(b):
    return b.op == "conv2d" and b.attrs["groups"] > 1


def _input_channel_ranges(b):
    """max |w| over everything B computes from each input channel."""
    w = np.abs(b.params["weight"]).astype(np.float64)
    if _depthwise(b):  # output channel i reads input channel i alone
        return w.reshape(w.shape[0], -1).max(axis=1)
    return np.moveaxis(w, 1, 0).reshape(w.shape[1], -1).max(axis=1)


def _scale_output_channels(a, factor):
    shape = (-1,) + (1,) * (a.params["weight"].ndim - 1)
    a.params = dict(a.params, weight=(a.params["weight"] * factor.reshape(shape)).astype(np.float32))
    if a.params.get("bias") is not None:
        a.params["bias"] = (a.params["bias"] * factor).astype(np.float32)


def _scale_input_channels(b, factor):
    w = b.params["weight"]
    shape = (-1, 1, 1, 1) if _depthwise(b) else (1, -1) + (1,) * (w.ndim - 2)
    b.params = dict(b.params, weight=(w * factor.reshape(shape)).astype(np.float32))
