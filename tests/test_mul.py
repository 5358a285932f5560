"""The mul op (squeeze-excitation's x * scale, and products of same-shape activations): engine ==
reference bit for bit on every ISA path, against the float product within a quantization step, bad
shapes and scales refused; and the converter's SE blocks and constant arithmetic end to end."""
import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import qruntime
from qruntime import reference
from qruntime.model import Model


def _u8(scale, zp):
    return {"dtype": "uint8", "scale": float(np.float32(scale)), "zero_point": zp}


def mul_graph(shape_a, shape_b, qa=(0.05, 128), qb=(0.01, 0), qy=(0.02, 100), swap=False):
    """Two float inputs, each quantized, multiplied (in the given or swapped order), dequantized."""
    values = {"a": {"dtype": "float32"}, "b": {"dtype": "float32"}, "qa": _u8(*qa), "qb": _u8(*qb), "m": _u8(*qy),
              "y": {"dtype": "float32"}}

    def op(kind, inputs, output):
        return {"op": kind, "name": output, "inputs": inputs, "outputs": [output], "attrs": {}, "tensors": {}}

    ops = [op("quantize", ["a"], "qa"), op("quantize", ["b"], "qb"),
           op("mul", ["qb", "qa"] if swap else ["qa", "qb"], "m"), op("dequantize", ["m"], "y")]
    return {"inputs": [{"name": "a", "shape": [-1, *shape_a[1:]]}, {"name": "b", "shape": [-1, *shape_b[1:]]}],
            "outputs": ["y"], "values": values, "ops": ops}


CASES = [((2, 8, 5, 7), (2, 8, 5, 7)),     # same shape
         ((2, 8, 5, 7), (2, 8, 1, 1)),     # squeeze-excitation: one weight per image and channel
         ((3, 67, 4, 4), (3, 67, 1, 1)),   # channels past a vector width, odd
         ((1, 1, 9, 3), (1, 1, 1, 1)),
         ((4, 33), (4, 33))]               # (N, F)


@pytest.mark.parametrize("swap", [False, True])
@pytest.mark.parametrize("shape_a, shape_b", CASES)
def test_engine_equals_reference(shape_a, shape_b, swap, any_path, rng):
    a = rng.uniform(-6, 6, shape_a).astype(np.float32)
    b = rng.uniform(0, 2.5, shape_b).astype(np.float32)
    graph = mul_graph(shape_a, shape_b, swap=swap)
    got = Model(graph, {}, isa=any_path).run([a, b])
    want = reference.run_graph(graph, {}, [a, b])[0]
    np.testing.assert_array_equal(got, want)
    # Against the float product: within one output step plus the inputs' rounding.
    bound = 0.02 + 0.5 * 0.05 * np.abs(b) + 0.5 * 0.01 * np.abs(a) + 0.5 * 0.05 * 0.01
    inside = (a * b > -100 * 0.02) & (a * b < 155 * 0.02)  # the output's range
    assert np.all((np.abs(got - a * b) <= bound)[np.broadcast_to(inside, got.shape)])


@pytest.mark.parametrize("per_channel", [False, True], ids=["same_shape", "per_channel"])
def test_extreme_codes_and_ties(per_channel, any_path):
    # Every pair of codes (the whole 256 x 256 table), with multipliers that are exact (ties) and not.
    # Per channel: channel c's 256 pixels hold every code, its one b code is c.
    codes = np.arange(256, dtype=np.float32)
    if per_channel:
        a = np.broadcast_to(codes.reshape(1, 1, 16, 16), (1, 256, 16, 16)).copy()
        b = codes.reshape(1, 256, 1, 1)
    else:
        a = np.repeat(codes, 256).reshape(1, 256, 16, 16)
        b = np.tile(codes, 256).reshape(1, 256, 16, 16)
    for qa, qb, qy in [((1.0, 0), (1.0, 0), (256.0, 0)), ((1.0, 128), (1.0, 7), (2.0 ** 8, 128)),
                       ((1.0, 255), (1.0, 255), (1000.0, 3)), ((1.0, 1), (1.0, 0), (0.5, 0))]:
        graph = mul_graph(a.shape, b.shape, qa, qb, qy)
        xs = [(a - qa[1]) * qa[0], (b - qb[1]) * qb[0]]  # real values that quantize to exactly these codes
        got = Model(graph, {}, isa=any_path).run(xs)
        want = reference.run_graph(graph, {}, xs)[0]
        np.testing.assert_array_equal(got, want, err_msg=str((qa, qb, qy)))
        codes = np.rint(want / np.float32(qy[0])) + qy[1]
        assert codes.min() >= 0 and codes.max() <= 255 and len(np.unique(codes)) > 60  # a real spread


@pytest.mark.parametrize("shape_a, shape_b", [((2, 8, 5, 5), (2, 8, 5, 1)), ((2, 8, 5, 5), (1, 8, 1, 1)),
                                              ((2, 8, 5, 5), (2, 4, 1, 1)), ((2, 8), (2, 8, 1, 1))])
def test_shapes_that_do_not_broadcast_are_refused(shape_a, shape_b):
    graph = mul_graph(shape_a, shape_b)
    with pytest.raises(ValueError, match=r"op 'm' \(mul\): inputs must have the same shape, or one \(N, C, H, W\)"):
        Model(graph, {}).run([np.zeros(shape_a, np.float32), np.zeros(shape_b, np.float32)])


def test_unusable_scales_are_a_format_error():
    graph = mul_graph((1, 2, 2, 2), (1, 2, 2, 2), qa=(1e30, 0), qb=(1e30, 0), qy=(1e-30, 0))
    with pytest.raises(qruntime.FormatError, match=r"a_scale \* b_scale / out_scale must be a finite float32"):
        Model(graph, {})
    bad = mul_graph((1, 2, 2, 2), (1, 2, 2, 2))
    bad["ops"][2]["inputs"] = ["qa"]
    with pytest.raises(qruntime.FormatError, match=r"ops\[2\]\.inputs: must be a list of 2 value names"):
        Model(bad, {})


class SqueezeExcitation(nn.Module):
    """torchvision's SqueezeExcitation block, written out (pool -> 1x1 conv -> ReLU -> 1x1 conv -> gate)."""

    def __init__(self, c, squeeze, gate):
        super().__init__()
        self.fc1, self.fc2, self.gate = nn.Conv2d(c, squeeze, 1), nn.Conv2d(squeeze, c, 1), gate

    def forward(self, x):
        s = self.gate(self.fc2(F.relu(self.fc1(F.adaptive_avg_pool2d(x, 1)))))
        return s * x


class SENet(nn.Module):
    def __init__(self, gate):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.se = SqueezeExcitation(16, 4, gate)
        self.head = nn.Conv2d(16, 8, 1)

    def forward(self, x):
        x = F.hardswish(self.stem(x))
        x = self.se(x)
        return (self.head(x) - 0.5) * 2.0 / 3.0  # constant arithmetic: tables


@pytest.mark.parametrize("gate", [nn.Hardsigmoid(), nn.Sigmoid()], ids=["hardsigmoid", "sigmoid"])
def test_squeeze_excitation_converts_and_tracks_float(gate, any_path):
    torch.manual_seed(0)
    model = SENet(gate).eval()
    g = np.random.default_rng(0)
    calib = [g.uniform(-1, 1, (8, 3, 12, 12)).astype(np.float32) for _ in range(4)]
    q = qruntime.quantize(model, calib, progress=False)
    assert [op["op"] for op in q.graph["ops"]].count("mul") == 1
    x = g.uniform(-1, 1, (4, 3, 12, 12)).astype(np.float32)
    got = Model(q.graph, q._tensors, isa=any_path).run(x)
    np.testing.assert_array_equal(got, reference.run_graph(q.graph, q._tensors, [x])[0])
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    sqnr = 10 * np.log10(np.sum(ref ** 2) / np.sum((ref - got) ** 2))
    assert sqnr > 25, sqnr
