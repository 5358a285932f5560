"""pad (F.pad with a constant): engine == reference bit for bit on every ISA path, equal to torch's float pad
of the dequantized input, bad attributes refused, and the converter's F.pad / ConstantPad2d / ZeroPad2d."""
import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import qruntime
from qruntime import reference
from qruntime.model import Model

Q = {"dtype": "uint8", "scale": float(np.float32(0.05)), "zero_point": 100}


def pad_graph(shape, padding, fill_code):
    def op(kind, inputs, output, attrs=None):
        return {"op": kind, "name": output, "inputs": inputs, "outputs": [output], "attrs": attrs or {}, "tensors": {}}

    ops = [op("quantize", ["x"], "q"), op("pad", ["q"], "p", {"padding": list(padding), "fill_code": fill_code}),
           op("dequantize", ["p"], "y")]
    return {"inputs": [{"name": "x", "shape": [-1, *shape[1:]]}], "outputs": ["y"], "ops": ops,
            "values": {"x": {"dtype": "float32"}, "q": Q, "p": dict(Q), "y": {"dtype": "float32"}}}


@pytest.mark.parametrize("shape, padding, fill_code", [
    ((2, 3, 5, 7), (1, 2, 3, 4), 100),   # the zero point: torch's zero padding
    ((1, 67, 1, 1), (0, 5, 0, 0), 0),
    ((3, 1, 4, 2), (2, 0, 0, 1), 255),
    ((1, 4, 3, 3), (0, 0, 0, 0), 17),
])
def test_engine_equals_reference_and_torch(shape, padding, fill_code, any_path, rng):
    x = ((rng.integers(0, 256, shape) - Q["zero_point"]) * Q["scale"]).astype(np.float32)
    graph = pad_graph(shape, padding, fill_code)
    got = Model(graph, {}, isa=any_path).run(x)
    np.testing.assert_array_equal(got, reference.run_graph(graph, {}, [x])[0])
    top, left, bottom, right = padding
    value = float(np.float32((fill_code - Q["zero_point"]) * np.float32(Q["scale"])))
    want = F.pad(torch.from_numpy(x), (left, right, top, bottom), value=value).numpy()
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("change, message", [
    ({"fill_code": 256}, r"attrs.fill_code: must be an int in \[0, 255\]"),
    ({"fill_code": 1.0}, r"attrs.fill_code: must be an int"),
    ({"padding": [1, 1, -1, 1]}, r"attrs.padding: must be a list of 4 ints >= 0"),
    ({"padding": [1, 1]}, r"attrs.padding: must be a list of 4 ints >= 0"),
])
def test_bad_attributes_are_format_errors(change, message):
    graph = pad_graph((1, 2, 3, 3), (1, 1, 1, 1), 0)
    graph["ops"][1]["attrs"].update(change)
    with pytest.raises(qruntime.FormatError, match=message):
        Model(graph, {})


def test_huge_padding_is_refused_by_the_plan():
    graph = pad_graph((1, 2, -1, -1), (0, 2**31 - 1, 0, 2**31 - 1), 0)
    with pytest.raises(ValueError, match=r"op 'p' \(pad\)"):
        Model(graph, {}).run(np.zeros((1, 2, 3, 3), np.float32))


class Padded(nn.Module):
    def __init__(self, pad):
        super().__init__()
        self.conv, self.pad, self.head = nn.Conv2d(3, 4, 3), pad, nn.Conv2d(4, 2, 3)

    def forward(self, x):
        return self.head(self.pad(torch.relu(self.conv(x))))


@pytest.mark.parametrize("pad, fill", [
    (lambda x: F.pad(x, (1, 2, 0, 3)), "zero_point"),
    (lambda x: F.pad(x, (2, 1), value=0.5), 0.5),
    (nn.ZeroPad2d((1, 0, 2, 1)), "zero_point"),
    (nn.ConstantPad2d(1, -3.0), -3.0),  # below the input's range (ReLU: >= 0): clamped to its lowest code
])
def test_converts_and_tracks_float(pad, fill, any_path):
    torch.manual_seed(0)
    model = Padded(pad).eval()
    rng = np.random.default_rng(0)
    calib = [rng.uniform(-1, 1, (4, 3, 10, 12)).astype(np.float32) for _ in range(3)]
    q = qruntime.quantize(model, calib, progress=False)
    op = next(o for o in q.graph["ops"] if o["op"] == "pad")
    xq = q.graph["values"][op["inputs"][0]]
    if fill == "zero_point":
        assert op["attrs"]["fill_code"] == xq["zero_point"]
    else:
        code = np.rint(np.float32(fill) / np.float32(xq["scale"])) + xq["zero_point"]
        assert op["attrs"]["fill_code"] == int(np.clip(code, 0, 255))
    x = rng.uniform(-1, 1, (2, 3, 10, 12)).astype(np.float32)
    got = Model(q.graph, q._tensors, isa=any_path).run(x)
    np.testing.assert_array_equal(got, reference.run_graph(q.graph, q._tensors, [x])[0])
    if fill != -3.0:  # the clamped pad value is not the model's any more
        with torch.no_grad():
            ref = model(torch.from_numpy(x)).numpy()
        assert 10 * np.log10(np.sum(ref ** 2) / np.sum((ref - got) ** 2)) > 25


@pytest.mark.parametrize("call, reason", [
    (lambda x: F.pad(x, (1, 1, 1, 1), mode="reflect"), r"mode='reflect'"),
    (lambda x: F.pad(x, (1, -1, 0, 0)), r"pad=\(1, -1, 0, 0\) has a negative size, a crop"),
    (lambda x: F.pad(x, (1, 1, 1, 1, 1, 1)),
     r"pad=\(1, 1, 1, 1, 1, 1\) \(only \(left, right\) or \(left, right, top, bottom\)"),
])
def test_unsupported_pads_are_named(call, reason):
    class Wrap(nn.Module):
        def forward(self, x):
            return call(x)

    calib = [np.zeros((2, 3, 6, 6), np.float32)]
    with pytest.raises(qruntime.UnsupportedOpError, match=r"torch.nn.functional.pad at node .*: " + reason):
        qruntime.quantize(Wrap(), calib, progress=False)
