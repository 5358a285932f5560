"""reduce (x.mean(dims) / x.sum(dims)): engine == reference on every ISA path, every dims / keepdim form, the
exact-integer rounding rule, within half an output step of torch, bad attributes and shapes refused, and the
forms models write converting end to end."""
import functools

import numpy as np
import pytest
import torch
import torch.nn as nn

import qruntime
from qruntime import reference
from qruntime.model import Model

# Every dims / keepdim pair a rank-4 input takes: keepdim always, dropping dims only for two of them.
RANK4_FORMS = [(d, True) for d in ([1], [2], [3], [1, 2], [1, 3], [2, 3], [1, 2, 3])] + [
    (d, False) for d in ([1, 2], [1, 3], [2, 3])]
ZERO_POINTS = (0, 1, 127, 128, 255)


def reduce_graph(shape, dims, keepdim, mode, x_q=(0.05, 100), y_q=(0.07, 30)):
    ops = [{"op": "quantize", "name": "q", "inputs": ["x"], "outputs": ["q"], "attrs": {}, "tensors": {}},
           {"op": "reduce", "name": "r", "inputs": ["q"], "outputs": ["r"],
            "attrs": {"mode": mode, "dims": dims, "keepdim": keepdim}, "tensors": {}},
           {"op": "dequantize", "name": "y", "inputs": ["r"], "outputs": ["y"], "attrs": {}, "tensors": {}}]
    values = {"x": {"dtype": "float32"}, "q": {"dtype": "uint8", "scale": x_q[0], "zero_point": x_q[1]},
              "r": {"dtype": "uint8", "scale": y_q[0], "zero_point": y_q[1]}, "y": {"dtype": "float32"}}
    return {"inputs": [{"name": "x", "shape": [-1, *shape[1:]]}], "outputs": ["y"], "ops": ops, "values": values}


def run_both(graph, x, isa):
    got = Model(graph, {}, isa=isa).run(x)
    want = reference.run_graph(graph, {}, [x])[0]
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, want)
    return got


def codes(y, q):
    """The uint8 codes behind a dequantized output (y = (code - zp) * s in float32)."""
    return (np.rint(y.astype(np.float64) / np.float32(q[0])) + q[1]).astype(np.int64)


def forms(rank):
    return RANK4_FORMS if rank == 4 else [([1], True)]


@pytest.mark.parametrize("shape", [(2, 5, 3, 7), (1, 1, 1, 1), (3, 17, 1, 1), (1, 33, 9, 2), (2, 16, 15, 17),
                                   (4, 63), (1, 1)])
def test_engine_equals_reference(shape, any_path, rng):
    for dims, keepdim in forms(len(shape)):
        for mode in ("mean", "sum"):
            for zx, zy in zip(ZERO_POINTS, ZERO_POINTS[::-1]):
                count = np.prod([shape[d] for d in dims])
                y_scale = 0.05 * (1.0 if mode == "mean" else np.sqrt(count))  # a sum spreads over more codes
                graph = reduce_graph(shape, dims, keepdim, mode, (0.05, zx), (y_scale, zy))
                x = rng.uniform(-14.0, 14.0, shape).astype(np.float32)  # past both ends: codes 0 and 255 too
                got = run_both(graph, x, any_path)
                want_shape = np.sum(x, axis=tuple(dims), keepdims=keepdim).shape
                assert got.shape == want_shape, (dims, keepdim)


def test_sums_past_int32_and_saturated_outputs(any_path):
    """Every code 255 over more than 2^31 / 255 codes (an int32 sum would wrap), and outputs clamped at both ends."""
    shape = (1, 1, 4096, 2100)
    assert shape[2] * shape[3] * 255 > 2**31
    x = np.full(shape, 1e3, np.float32)  # code 255 everywhere
    for mode, y_q, expected in (("mean", (0.05, 0), 255), ("sum", (0.05 * shape[2] * shape[3], 0), 255),
                                ("sum", (0.05, 0), 255), ("sum", (0.05, 255), 255)):
        graph = reduce_graph(shape, [2, 3], True, mode, (0.05, 0), y_q)
        assert codes(run_both(graph, x, any_path), y_q).ravel().tolist() == [expected]
    # The other end: every code 0 with zero point 255 sums to the most negative value, clamped to code 0.
    graph = reduce_graph(shape, [1, 2, 3], True, "sum", (0.05, 255), (0.05, 255))
    assert codes(run_both(graph, np.full(shape, -1e3, np.float32), any_path), (0.05, 255)).ravel().tolist() == [0]


@pytest.mark.parametrize("shape, dims", [((3, 6, 2, 2), [2, 3]), ((2, 4, 3, 2), [1, 3]), ((5, 10), [1]),
                                         ((2, 14, 3, 5), [1]), ((2, 8, 6, 6), [1, 2, 3])])
def test_mean_with_equal_quantization_is_the_codes_mean_rounded_half_to_even(shape, dims, any_path, rng):
    """docs/quantization.md: with r = 1 the mean is round_half_even(sum(q) / count), exactly, whatever the zero
    point. Image 0's outputs are ties 7.5 and image 1's 8.5 (both go to 8); the rest random codes."""
    count = int(np.prod([shape[d] for d in dims]))
    kept = [n for i, n in enumerate(shape) if i not in dims]
    for zp in ZERO_POINTS:
        q = rng.integers(0, 256, kept + [count])
        q[0, ..., :count // 2], q[0, ..., count // 2:] = 7, 8
        q[1, ..., :count // 2], q[1, ..., count // 2:] = 8, 9
        q = np.moveaxis(q.reshape(kept + [shape[d] for d in dims]), range(len(kept), len(shape)), dims)
        x = ((q - zp) * np.float32(0.05)).astype(np.float32)  # quantizes back to exactly these codes
        assert np.array_equal(reference.quantize(x, 0.05, zp), q)
        div, rem = np.divmod(q.sum(axis=tuple(dims), keepdims=True), count)
        want = div + ((2 * rem > count) | ((2 * rem == count) & (div % 2 == 1)))
        got = codes(run_both(reduce_graph(shape, dims, True, "mean", (0.05, zp), (0.05, zp)), x, any_path), (0.05, zp))
        np.testing.assert_array_equal(got, want)
        assert (got[:2] == 8).all()


@pytest.mark.parametrize("mode", ["mean", "sum"])
@pytest.mark.parametrize("shape, dims, keepdim", [((2, 24, 5, 6), [2, 3], False), ((2, 24, 5, 6), [1], True),
                                                  ((3, 7, 9, 4), [1, 3], False), ((2, 5, 4, 3), [1, 2, 3], True),
                                                  ((4, 96), [1], True)])
def test_within_half_a_step_of_torch(mode, shape, dims, keepdim, rng):
    x_q = (0.05, 120)
    x = rng.normal(0.3, 2.0, shape).astype(np.float32)
    xq = reference.dequantize(reference.quantize(x, *x_q), *x_q)
    want = (torch.mean if mode == "mean" else torch.sum)(torch.from_numpy(xq), dims, keepdim=keepdim).numpy()
    lo, hi = min(want.min(), 0.0), max(want.max(), 0.0)  # the output's range covers every result: no clamping
    y_scale = float(np.float32((hi - lo) / 250))
    y_q = (y_scale, int(round(-lo / y_scale)) + 2)
    got = run_both(reduce_graph(shape, dims, keepdim, mode, x_q, y_q), x, None)
    # Half a step from the one rounding; the slack covers torch's float32 sum and the float32 dequantize.
    assert np.abs(got - want).max() <= 0.5 * y_scale * 1.001


def test_bad_attributes_are_refused_by_the_file_check():
    for attrs, message in (
            ({"mode": "max", "dims": [2, 3], "keepdim": True}, r"attrs.mode: must be one of 'mean', 'sum'"),
            ({"mode": "mean", "dims": [], "keepdim": True}, r"attrs.dims: must be a list of 1 to 3 distinct ints"),
            ({"mode": "mean", "dims": [0], "keepdim": True}, r"attrs.dims"),
            ({"mode": "mean", "dims": [4], "keepdim": True}, r"attrs.dims"),
            ({"mode": "mean", "dims": [3, 2], "keepdim": True}, r"attrs.dims"),
            ({"mode": "mean", "dims": [2, 2], "keepdim": True}, r"attrs.dims"),
            ({"mode": "mean", "dims": [1, 2, 3, 3], "keepdim": True}, r"attrs.dims"),
            ({"mode": "mean", "dims": [2.0], "keepdim": True}, r"attrs.dims"),
            ({"mode": "mean", "dims": 2, "keepdim": True}, r"attrs.dims"),
            ({"mode": "sum", "dims": [2, 3], "keepdim": 0}, r"attrs.keepdim: must be a bool"),
            ({"mode": "sum", "dims": [2], "keepdim": False}, r"attrs.keepdim: false needs exactly two dims"),
            ({"mode": "sum", "dims": [1, 2, 3], "keepdim": False}, r"attrs.keepdim: false needs exactly two dims"),
            ({"mode": "sum", "dims": [2, 3]}, r"attrs.keepdim: missing"),
            ({"mode": "sum", "dims": [2, 3], "keepdim": True, "axis": 1}, r"attrs.axis: unknown key")):
        graph = reduce_graph((1, 4, 3, 3), [2, 3], True, "mean")
        graph["ops"][1]["attrs"] = attrs
        with pytest.raises(qruntime.FormatError, match=r"ops\[1\]\." + message):
            Model(graph, {})


def test_bad_attributes_and_shapes_are_refused_by_the_engine():
    # Past the file check (a caller building the engine from a graph it did not validate): the engine's own.
    for attrs, message in (({"mode": "max", "dims": [2, 3], "keepdim": True}, "'mode' must be mean or sum"),
                           ({"mode": "mean", "dims": [3, 2], "keepdim": True}, "'dims' must be distinct NCHW dims"),
                           ({"mode": "mean", "dims": [0], "keepdim": True}, "'dims' must be distinct NCHW dims"),
                           ({"mode": "mean", "dims": [1, 2, 3, 1], "keepdim": True}, "'dims' must have 1 to 3"),
                           ({"mode": "mean", "dims": [3], "keepdim": False}, "keepdim false needs exactly two dims")):
        graph = reduce_graph((1, 4, 3, 3), [2, 3], True, "mean")
        graph["ops"][1]["attrs"] = attrs
        with pytest.raises(qruntime.FormatError, match=r"op 'r' \(reduce\): .*" + message):
            Model(graph, {}, _validated=True)
    # Shapes: a rank-2 input has only dim 1 to reduce, and keeps it (its rank-1 result has no engine value).
    for dims, keepdim in (([2], True), ([1, 2], False)):
        with pytest.raises(qruntime.FormatError, match=r"op 'r' \(reduce\): reduces a 4-D input, or dim 1 of a 2-D"):
            Model(reduce_graph((1, 8), dims, keepdim, "sum"), {})
    assert Model(reduce_graph((1, 8), [1], True, "sum"), {}).run(np.ones((3, 8), np.float32)).shape == (3, 1)


def test_a_count_past_the_exact_limit_is_refused_before_any_memory():
    # 2^46 codes per output (within the activation cap raised to 2^62 bytes): refused while the graph is planned.
    graph = reduce_graph((1, 1, 2**23, 2**23), [2, 3], True, "sum")
    with pytest.raises(qruntime.FormatError, match=rf"op 'r' \(reduce\): sums {2**46} codes per output, more than the "
                                                   rf"exact limit {2**53 // 255} "):
        Model(graph, {}, max_activation_bytes=2**62)


# --- converting the forms models write ------------------------------------------------------------

class Head(nn.Module):
    """A conv (so the reduce reads a calibrated activation), then one reduce form, then whatever follows it."""

    def __init__(self, fn, **modules):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fn = fn
        for name, module in modules.items():
            self.add_module(name, module)

    def forward(self, x):
        return self.fn(self, self.conv(x))


# id -> (forward after the conv, extra modules' builders (called after seeding: modules built at import would
# take whatever the global RNG holds, a different model per process), the reduce ops' (mode, dims, keepdim),
# H and W free at run time)
FORMS = {
    "mean(2,3)->linear": (lambda m, x: m.fc(x.mean((2, 3))), {"fc": lambda: nn.Linear(8, 5)}, [("mean", [2, 3], False)],
                          True),
    "torch.mean(-1,-2,keepdim)->conv": (lambda m, x: m.c(torch.mean(x, (-1, -2), keepdim=True)),
                                        {"c": lambda: nn.Conv2d(8, 4, 1)}, [("mean", [2, 3], True)], True),
    "sum(1,keepdim)": (lambda m, x: x.sum(dim=1, keepdim=True), {}, [("sum", [1], True)], True),
    "torch.sum(1,2)": (lambda m, x: torch.sum(x, (1, 2)), {}, [("sum", [1, 2], False)], False),
    "mean(1).flatten->linear": (lambda m, x: m.fc(torch.mean(x, 1).flatten(1)), {"fc": lambda: nn.Linear(42, 3)},
                                [("mean", [1], True)], False),
    "sum(-1).view": (lambda m, x: x.sum(-1).view(x.size(0), -1), {}, [("sum", [3], True)], False),
    "mean(all,keepdim)": (lambda m, x: x.mean((1, 2, 3), keepdim=True), {}, [("mean", [1, 2, 3], True)], True),
    "channels_last.mean(1,2)": (lambda m, x: x.permute(0, 2, 3, 1).mean((1, 2)), {}, [("mean", [2, 3], False)],
                                True),
    "view(n,c,-1).mean(-1)": (lambda m, x: x.view(x.size(0), x.size(1), -1).mean(-1), {}, [("mean", [2, 3], False)],
                              True),
    "slice.mean": (lambda m, x: x[:, 2:6].mean((2, 3)), {}, [("mean", [2, 3], False)], True),
    "linear->mean(-1,keepdim)": (lambda m, x: m.fc(x.flatten(1)).mean(-1, keepdim=True),
                                 {"fc": lambda: nn.Linear(8 * 6 * 7, 10)}, [("mean", [1], True)], False),
    "cbam_spatial_map": (lambda m, x: torch.sigmoid(m.s(torch.cat([x.mean(1, keepdim=True), x.sum(1, keepdim=True)],
                                                                  1))),
                         {"s": lambda: nn.Conv2d(2, 1, 3, padding=1)}, [("mean", [1], True), ("sum", [1], True)], True),
}


@functools.lru_cache(maxsize=None)
def converted(name):
    fn, modules, _, _ = FORMS[name]
    torch.manual_seed(7)
    model = Head(fn, **{key: build() for key, build in modules.items()}).eval()
    rng = np.random.default_rng(11)
    calib = [rng.uniform(-1, 1, (8, 3, 6, 7)).astype(np.float32) for _ in range(3)]
    return model, qruntime.quantize(model, calib, progress=False), calib


@pytest.mark.parametrize("name", FORMS)
def test_forms_convert_and_match_torch(name, any_path):
    model, q, calib = converted(name)
    _, _, reduces, free_hw = FORMS[name]
    assert [(op["attrs"]["mode"], op["attrs"]["dims"], op["attrs"]["keepdim"]) for op in q.graph["ops"]
            if op["op"] == "reduce"] == reduces
    assert (q.graph["inputs"][0]["shape"][2:] == [-1, -1]) == free_hw
    # A calibration batch (minmax ranges: nothing clips), and for a model free in H and W another size too, its
    # inputs a little inside the calibration's (-1, 1) so that its outputs stay in the calibrated ranges.
    other = np.random.default_rng(5).uniform(-0.8, 0.8, (5, 3, 9, 5)).astype(np.float32)
    xs = [calib[0]] + ([other] if free_hw else [])
    for x in xs:
        got = Model(q.graph, q._tensors, isa=any_path).run(x)
        np.testing.assert_array_equal(got, reference.run_graph(q.graph, q._tensors, [x])[0])
        with torch.no_grad():
            want = model(torch.from_numpy(x)).numpy()
        assert got.shape == want.shape
        assert 10 * np.log10(np.sum(want ** 2) / np.sum((want - got) ** 2)) > 30, x.shape
