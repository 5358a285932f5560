"""quantize's pooled_range_margin: the calibrated ranges of values computed after a global pool are widened
(docs/quantization.md, "Pooled range margin"); every other value keeps its calibrated quantization."""
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import qruntime
from qruntime.convert.quantize import pooled_range_margin_targets
from qruntime.convert.trace import trace
from qruntime.convert import passes


class PooledHead(nn.Module):
    """conv -> SE (pool, 1x1 conv + ReLU, 1x1 conv, hardsigmoid, mul) -> pool -> flatten -> linear, tanh."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc1, self.fc2 = nn.Conv2d(8, 4, 1), nn.Conv2d(4, 8, 1)
        self.head = nn.Linear(8, 6)
        self.out = nn.Linear(6, 5)

    def forward(self, x):
        x = self.conv(x)
        s = F.hardsigmoid(self.fc2(F.relu(self.fc1(F.adaptive_avg_pool2d(x, 1)))))
        x = x * s
        h = self.head(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))
        return self.out(torch.tanh(h))


class FlattenHead(nn.Module):
    """No global pool: a conv map flattened into linears (the seed CNN's head)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc1, self.fc2 = nn.Linear(4 * 8 * 8, 10), nn.Linear(10, 5)

    def forward(self, x):
        return self.fc2(F.relu(self.fc1(torch.flatten(F.relu(self.conv(x)), 1))))


def data(seed=0, batches=4):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((8, 3, 8, 8)).astype(np.float32) for _ in range(batches)]


def quantized_values(model, margin):
    torch.manual_seed(0)
    q = qruntime.quantize(model, data(), progress=False, bias_correction=False, pooled_range_margin=margin)
    return {v: (d["scale"], d["zero_point"]) for v, d in q.graph["values"].items() if d["dtype"] == "uint8"}


def test_margin_widens_values_after_a_global_pool_only():
    torch.manual_seed(0)
    model = PooledHead().eval()
    graph, _ = trace(model, torch.from_numpy(data()[0]))
    graph = passes.run_all(graph)
    ops = {n.output: n for n in graph.nodes}
    targets = pooled_range_margin_targets(graph)
    by_op = sorted(ops[v].op for v in targets)
    # the SE's pool and its two 1x1 convs, the head's pool, flatten (tied to the pool) and both linears;
    # not the hardsigmoid (bounded), the tanh (bounded), the conv or the mul (spatial maps)
    assert by_op == ["adaptive_avg_pool2d", "adaptive_avg_pool2d", "conv2d", "conv2d", "flatten", "linear", "linear"]

    off, on = quantized_values(model, 1.0), quantized_values(model, 2.0)
    assert off.keys() == on.keys()
    widened = {v for v in off if on[v] != off[v]}
    assert widened and widened <= targets
    for v in widened:
        (s1, z1), (s2, z2) = off[v], on[v]
        assert s2 == pytest.approx(2 * s1, rel=1e-6)
        assert abs(z2 - z1) <= 1  # [lo, hi] becomes [2 lo, 2 hi]: the zero point stays
    relu = next(v for v in targets if ops[v].op == "conv2d" and ops[v].attrs.get("act") == "relu")
    assert on[relu][1] == 0  # a ReLU's lower bound stays 0
    for v, node in ops.items():
        if node.op in ("hardsigmoid", "tanh", "mul") or v == graph.nodes[0].output:
            assert on[v] == off[v], v
    flatten = next(v for v in targets if ops[v].op == "flatten")
    assert on[flatten] == on[ops[flatten].inputs[0]]  # flatten keeps the pool's quantization


def test_no_global_pool_no_margin():
    """A flatten head (and so an MLP) keeps its calibrated ranges: nothing in it comes from a global pool."""
    torch.manual_seed(0)
    model = FlattenHead().eval()
    assert quantized_values(model, 2.0) == quantized_values(model, 1.0)


def test_margin_one_turns_it_off_and_default_is_two():
    torch.manual_seed(0)
    model = PooledHead().eval()
    torch.manual_seed(0)
    default = qruntime.quantize(model, data(), progress=False, bias_correction=False)
    values = {v: (d["scale"], d["zero_point"]) for v, d in default.graph["values"].items() if d["dtype"] == "uint8"}
    assert values == quantized_values(model, 2.0) != quantized_values(model, 1.0)


@pytest.mark.parametrize("bad", [0.5, 0.0, -2.0, math.nan, math.inf, "2", None, True])
def test_bad_margin_raises(bad):
    with pytest.raises(ValueError, match="pooled_range_margin"):
        qruntime.quantize(PooledHead().eval(), data(), progress=False, pooled_range_margin=bad)
