"""resize (F.interpolate, nearest and bilinear): engine == reference bit for bit on every ISA path, against
torch's float op on the dequantized input, the output size from a size, scale factors or another input,
bad attributes refused; and the converter's interpolate / Upsample end to end."""
import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import qruntime
from qruntime import reference
from qruntime.model import Model

Q = {"dtype": "uint8", "scale": float(np.float32(0.05)), "zero_point": 100}


def resize_graph(shape, mode, align_corners=False, size=(0, 0), scale=(0.0, 0.0), like=None):
    """quantize -> resize -> dequantize; with `like` (a second input's shape) the output takes its H and W."""
    def op(kind, inputs, output, attrs=None):
        return {"op": kind, "name": output, "inputs": inputs, "outputs": [output], "attrs": attrs or {}, "tensors": {}}

    attrs = {"mode": mode, "align_corners": align_corners, "size": list(size), "scale_h": float(scale[0]),
             "scale_w": float(scale[1])}
    inputs = [{"name": "x", "shape": [-1, *shape[1:]]}]
    values = {"x": {"dtype": "float32"}, "q": Q, "r": dict(Q), "y": {"dtype": "float32"}}
    ops = [op("quantize", ["x"], "q")]
    if like is not None:
        inputs.append({"name": "l", "shape": [-1, *like[1:]]})
        values.update(l={"dtype": "float32"}, ql=dict(Q, zero_point=3))
        ops.append(op("quantize", ["l"], "ql"))
    ops += [op("resize", ["q", "ql"] if like is not None else ["q"], "r", attrs), op("dequantize", ["r"], "y")]
    return {"inputs": inputs, "outputs": ["y"], "values": values, "ops": ops}


def codes(rng, shape):
    """Inputs on the quantization grid, with runs of 0 and 255 (the extremes of the int32 sums)."""
    q = rng.integers(0, 256, shape)
    q[..., ::3, :] = np.where(q[..., ::3, :] > 127, 255, 0)
    return ((q - Q["zero_point"]) * Q["scale"]).astype(np.float32)


def run_both(graph, xs, isa):
    got = Model(graph, {}, isa=isa).run(xs)
    want = reference.run_graph(graph, {}, xs if isinstance(xs, list) else [xs])[0]
    return got, want


# (input shape, mode, align_corners, size, scale factors): odd sizes, up and down, equal, 1 pixel, wide channels.
CASES = [
    ((2, 3, 5, 7), "bilinear", False, (11, 4), (0, 0)),
    ((2, 3, 5, 7), "bilinear", True, (11, 4), (0, 0)),
    ((1, 17, 9, 6), "bilinear", False, (9, 13), (0, 0)),   # equal height: torch copies rows
    ((1, 2, 1, 1), "bilinear", True, (3, 5), (0, 0)),
    ((1, 2, 6, 6), "bilinear", True, (1, 1), (0, 0)),      # align_corners to one pixel: the corner
    ((1, 67, 4, 3), "bilinear", False, (0, 0), (2.0, 2.0)),
    ((1, 5, 7, 5), "bilinear", False, (0, 0), (1.5, 2.3)),  # a scale factor that is not size / size
    ((1, 5, 7, 5), "bilinear", True, (0, 0), (0.5, 3.0)),
    ((2, 3, 5, 7), "nearest", False, (11, 4), (0, 0)),
    ((2, 3, 4, 3), "nearest", False, (8, 6), (0, 0)),
    ((1, 4, 3, 4), "nearest", False, (0, 0), (1.2, 2.3)),  # torch's shortcuts: out == in, out == 2 in
    ((1, 4, 9, 10), "nearest", False, (0, 0), (1 / 3, 0.7)),
]


@pytest.mark.parametrize("shape, mode, align_corners, size, scale", CASES)
def test_engine_equals_reference_and_torch(shape, mode, align_corners, size, scale, any_path, rng):
    x = codes(rng, shape)
    graph = resize_graph(shape, mode, align_corners, size, scale)
    got, want = run_both(graph, x, any_path)
    np.testing.assert_array_equal(got, want)
    kw = {"size": size} if size != (0, 0) else {"scale_factor": scale}
    if mode == "bilinear":
        kw["align_corners"] = align_corners
    torch_y = F.interpolate(torch.from_numpy(x), mode=mode, **kw).numpy()
    assert got.shape == torch_y.shape
    if mode == "nearest":
        np.testing.assert_array_equal(got, torch_y)  # the same codes, picked by torch's own index rule
    else:
        # One rounding of the code (0.5 step) plus the 11-bit weights (at most 255 * 2^-11 = 0.125 step)
        # plus torch's float32 arithmetic: within 0.63 of a step, less than the one step the op promises.
        assert np.abs(got - torch_y).max() <= 0.63 * Q["scale"]


def test_every_weight_and_code_extreme(any_path):
    # Upscaling 2 -> 2049 visits 2048 distinct weights; codes 0 and 255 next to each other.
    x = np.array([[0, 255], [255, 0]], np.float32).reshape(1, 1, 2, 2)
    x = ((x - Q["zero_point"]) * Q["scale"]).astype(np.float32)
    for align_corners in (False, True):
        graph = resize_graph(x.shape, "bilinear", align_corners, size=(2049, 2049))
        got, want = run_both(graph, x, any_path)
        np.testing.assert_array_equal(got, want)


def test_size_from_second_input_follows_it_at_run_time(any_path, rng):
    graph = resize_graph((1, 3, -1, -1), "bilinear", like=(1, 2, -1, -1))
    model = Model(graph, {}, isa=any_path)
    for (h, w), (lh, lw) in [((4, 5), (16, 20)), ((7, 3), (9, 11)), ((6, 6), (2, 3))]:
        x, like = codes(rng, (2, 3, h, w)), codes(rng, (2, 2, lh, lw))
        got = model.run([x, like])
        assert got.shape == (2, 3, lh, lw)
        np.testing.assert_array_equal(got, reference.run_graph(graph, {}, [x, like])[0])


def test_scale_factor_output_size_at_run_time(rng):
    model = Model(resize_graph((1, 2, -1, -1), "nearest", scale=(1.5, 0.5)), {})
    assert model.run(codes(rng, (1, 2, 5, 7))).shape == (1, 2, 7, 3)  # floor(5 * 1.5), floor(7 * 0.5)
    with pytest.raises(ValueError, match=r"op 'r' \(resize\): a scale factor of 0.5.* turns size 1 into 0.5"):
        model.run(codes(rng, (1, 2, 3, 1)))


@pytest.mark.parametrize("change, message", [
    (dict(mode="bicubic"), r"attrs.mode: must be one of 'nearest', 'bilinear'"),
    (dict(mode="nearest", align_corners=True), r"attrs.align_corners: only bilinear has it"),
    (dict(size=[4, 4], scale_h=2.0, scale_w=2.0), r"attrs: a resize needs either size"),
    (dict(size=[0, 0]), r"attrs: a resize needs either size"),
    (dict(size=[4, 0]), r"attrs: a resize needs either size"),
    (dict(size=[0, 0], scale_h=2.0), r"attrs: a resize needs either size"),
    (dict(size=[0, 0], scale_h=2, scale_w=2.0), r"attrs.scale_h: must be a number written with a fraction"),
    (dict(scale_w=-1.0), r"attrs.scale_w: must be a number"),
    (dict(size=[-1, 4]), r"attrs.size: must be a list of 2 ints >= 0"),
    (dict(align_corners=1), r"attrs.align_corners: must be a bool"),
])
def test_bad_attributes_are_format_errors(change, message):
    graph = resize_graph((1, 2, 3, 3), "bilinear", size=(4, 4))
    graph["ops"][1]["attrs"].update(change)
    with pytest.raises(qruntime.FormatError, match=message):
        Model(graph, {})


def test_second_input_excludes_size_and_scale():
    graph = resize_graph((1, 2, 3, 3), "bilinear", like=(1, 2, 5, 5))
    graph["ops"][2]["attrs"]["size"] = [4, 4]
    with pytest.raises(qruntime.FormatError, match=r"a resize with a second input takes that input's H and W"):
        Model(graph, {})


def test_changed_quantization_is_refused():
    graph = resize_graph((1, 2, 3, 3), "bilinear", size=(4, 4))
    graph["values"]["r"] = dict(Q, zero_point=5)
    with pytest.raises(qruntime.FormatError, match=r"must keep the quantization of 'q'"):
        Model(graph, {})


# --- the converter ---------------------------------------------------------------------------------

class Seg(nn.Module):
    """A small segmentation net: a strided backbone, a head, and a resize back to the input's size."""

    def __init__(self, resize):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, 2, 1),
                                  nn.ReLU())
        self.head = nn.Conv2d(8, 4, 1)
        self.resize = resize

    def forward(self, x):
        return self.resize(self.head(self.body(x)), x)


def convert(model, size=(16, 20)):
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    calib = [rng.uniform(-1, 1, (4, 3, *size)).astype(np.float32) for _ in range(3)]
    return qruntime.quantize(model.eval(), calib, progress=False)


def sqnr(ref, got):
    return 10 * np.log10(np.sum(ref ** 2) / np.sum((ref - got) ** 2))


@pytest.mark.parametrize("resize, mode", [
    (lambda y, x: F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False), "bilinear"),
    (lambda y, x: F.interpolate(y, size=(x.size(2), x.shape[-1]), mode="bilinear", align_corners=True), "bilinear"),
    (lambda y, x: F.interpolate(y, size=x.size()[2:]), "nearest"),
])
def test_interpolate_to_the_input_size_follows_it(resize, mode, any_path):
    torch.manual_seed(0)
    model = Seg(resize)
    q = convert(model)
    op = next(o for o in q.graph["ops"] if o["op"] == "resize")
    assert len(op["inputs"]) == 2 and op["attrs"]["mode"] == mode
    assert q.graph["inputs"][0]["shape"] == [-1, 3, -1, -1]
    m = Model(q.graph, q._tensors, isa=any_path)
    rng = np.random.default_rng(1)
    for hw in [(16, 20), (24, 12), (13, 17)]:
        x = rng.uniform(-1, 1, (2, 3, *hw)).astype(np.float32)
        got = m.run(x)
        np.testing.assert_array_equal(got, reference.run_graph(q.graph, q._tensors, [x])[0])
        with torch.no_grad():
            ref = model(torch.from_numpy(x)).numpy()
        assert got.shape == ref.shape and sqnr(ref, got) > 25


@pytest.mark.parametrize("module, attrs", [
    (nn.Upsample(scale_factor=2), {"mode": "nearest", "scale_h": 2.0, "size": [0, 0]}),
    (nn.Upsample(scale_factor=(1.5, 2), mode="bilinear"), {"mode": "bilinear", "scale_w": 2.0, "align_corners": False}),
    (nn.UpsamplingBilinear2d(size=(7, 9)), {"mode": "bilinear", "align_corners": True, "size": [7, 9]}),
    (nn.UpsamplingNearest2d(scale_factor=3), {"mode": "nearest", "scale_h": 3.0}),
])
def test_upsample_modules(module, attrs):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), module, nn.Conv2d(4, 2, 1))
    q = convert(model, (8, 10))
    op = next(o for o in q.graph["ops"] if o["op"] == "resize")
    assert attrs.items() <= op["attrs"].items()
    x = np.random.default_rng(2).uniform(-1, 1, (2, 3, 8, 10)).astype(np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    assert sqnr(ref, q.run(x)) > 25


@pytest.mark.parametrize("call, reason", [
    (lambda x: F.interpolate(x, scale_factor=2, mode="bicubic"), r"mode='bicubic'"),
    (lambda x: F.interpolate(x, scale_factor=2, mode="nearest-exact"), r"mode='nearest-exact'"),
    (lambda x: F.interpolate(x, size=(4, 4), mode="bilinear", antialias=True), r"antialias=True"),
    (lambda x: F.interpolate(x, scale_factor=1.5, recompute_scale_factor=True), r"recompute_scale_factor=True"),
    (lambda x: F.interpolate(x, size=(x.shape[2] * 2, x.shape[3] * 2)), r"size is computed in forward"),
])
def test_unsupported_interpolations_are_named(call, reason):
    class Wrap(nn.Module):
        def forward(self, x):
            return call(x)

    with pytest.raises(qruntime.UnsupportedOpError, match=r"torch.nn.functional.interpolate at node .*: " + reason):
        convert(Wrap(), (8, 8))
