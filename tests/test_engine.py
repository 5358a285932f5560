"""The C++ engine on hand-built graphs: every op against qruntime.reference.run_graph, bit for bit on
every ISA path; plans per shape; threads; the op list equals the file format's."""
import threading

import numpy as np
import pytest

import qruntime
from qruntime import _core, format as qnn_format, reference
from qruntime.model import Model


def _u8(scale, zp):
    return {"dtype": "uint8", "scale": float(np.float32(scale)), "zero_point": zp}


def _weights(rng, shape):
    return rng.integers(-127, 128, size=shape).astype(np.int8), rng.uniform(0.002, 0.01, shape[0]).astype(np.float32)


def every_op_graph(rng, hw=9):
    """A graph that uses every op of the format once or more, with random weights and scales."""
    t = {}
    t["c1.weight"], t["c1.w_scale"] = _weights(rng, (8, 3, 3, 3))
    t["c1.bias"] = rng.normal(0, 0.5, 8).astype(np.float32)
    t["d1.weight"], t["d1.w_scale"] = _weights(rng, (8, 1, 3, 3))
    t["e1.weight"], t["e1.w_scale"] = _weights(rng, (4, 8, 1, 1))
    t["fc.weight"], t["fc.w_scale"] = _weights(rng, (10, 48))
    t["fc.bias"] = rng.normal(0, 0.5, 10).astype(np.float32)
    t["l1.table"] = rng.integers(0, 256, 256).astype(np.uint8)
    t["cf.weight"] = rng.normal(0, 0.2, (5, 8, 3, 3)).astype(np.float32)
    t["cf.bias"] = rng.normal(0, 0.1, 5).astype(np.float32)
    t["lf.weight"] = rng.normal(0, 0.3, (3, 10)).astype(np.float32)
    values = {
        "x": {"dtype": "float32"}, "q0": _u8(0.02, 128), "c1": _u8(0.05, 0), "d1": _u8(0.03, 0), "a1": _u8(0.06, 0),
        "l1": _u8(0.04, 10), "m1": _u8(0.04, 10), "p1": _u8(0.035, 12), "e1": _u8(0.05, 120), "cat": _u8(0.05, 60),
        "g": _u8(0.04, 50), "f": _u8(0.04, 50), "fc": _u8(0.1, 128), "fo": {"dtype": "float32"},
        "sm": {"dtype": "float32"}, "lsm": {"dtype": "float32"}, "mf": {"dtype": "float32"}, "cf": {"dtype": "float32"},
        "lf": {"dtype": "float32"},
    }

    def op(kind, inputs, output, attrs=None, tensors=None):
        return {"op": kind, "name": output, "inputs": inputs, "outputs": [output], "attrs": attrs or {},
                "tensors": tensors or {}}

    conv = {"stride": [1, 1], "padding": [1, 1, 1, 1], "dilation": [1, 1], "groups": 1, "act": "relu"}
    ops = [
        op("quantize", ["x"], "q0"),
        op("conv2d", ["q0"], "c1", conv, {"weight": "c1.weight", "w_scale": "c1.w_scale", "bias": "c1.bias"}),
        op("conv2d", ["c1"], "d1", dict(conv, groups=8, act="relu6"), {"weight": "d1.weight", "w_scale": "d1.w_scale"}),
        op("add", ["c1", "d1"], "a1", {"act": "relu"}),
        op("lut", ["a1"], "l1", {}, {"table": "l1.table"}),
        op("max_pool2d", ["l1"], "m1", {"kernel": [3, 3], "stride": [2, 2], "padding": [1, 1], "dilation": [1, 1],
                                       "ceil_mode": False}),
        op("avg_pool2d", ["m1"], "p1", {"kernel": [2, 2], "stride": [1, 1], "padding": [0, 0], "ceil_mode": False,
                                       "count_include_pad": True, "divisor_override": 0}),
        op("conv2d", ["p1"], "e1", dict(conv, padding=[0, 0, 0, 0], act="none"),
           {"weight": "e1.weight", "w_scale": "e1.w_scale"}),
        op("concat", ["p1", "e1"], "cat", {"axis": 1}),
        op("adaptive_avg_pool2d", ["cat"], "g", {"output_size": [2, 2]}),
        op("flatten", ["g"], "f"),
        op("linear", ["f"], "fc", {"act": "none"}, {"weight": "fc.weight", "w_scale": "fc.w_scale", "bias": "fc.bias"}),
        op("dequantize", ["fc"], "fo"),
        op("softmax", ["fo"], "sm", {"dim": 1}),
        op("log_softmax", ["fo"], "lsm", {"dim": 1}),
        op("linear_float", ["fo"], "lf", {"act": "relu"}, {"weight": "lf.weight"}),
        op("dequantize", ["m1"], "mf"),
        op("conv2d_float", ["mf"], "cf", dict(conv, act="none"), {"weight": "cf.weight", "bias": "cf.bias"}),
    ]
    graph = {"inputs": [{"name": "x", "shape": [-1, 3, hw, hw]}], "outputs": ["fo", "sm", "lsm", "lf", "cf"],
             "values": values, "ops": ops}
    return graph, t


def _check_outputs(got, want):
    fo, sm, lsm, lf, cf = got
    np.testing.assert_array_equal(fo, want[0])  # everything up to the dequantize is exact
    np.testing.assert_allclose(sm, want[1], rtol=1e-6, atol=1e-7)  # float ops: float32 vs float64 sums
    np.testing.assert_allclose(lsm, want[2], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(lf, want[3], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(cf, want[4], rtol=1e-5, atol=1e-5)


def test_op_list_matches_the_format():
    assert sorted(_core.engine_op_names()) == sorted(qnn_format.OPS)


def test_every_op_equals_the_reference(any_path, rng):
    graph, tensors = every_op_graph(rng)
    model = Model(graph, tensors, isa=any_path)
    for batch in (1, 3):
        x = rng.normal(0, 1.5, (batch, 3, 9, 9)).astype(np.float32)
        _check_outputs(model.run(x), reference.run_graph(graph, tensors, [x]))


def _input_readers_graph(rng, two_readers, c=3):
    """x -> quantize -> 1x1 conv -> dequantize; with two_readers x also feeds a second quantize,
    added to the first: an input whose only reader is a quantize skips the arena's NHWC copy."""
    t = {}
    t["c.weight"], t["c.w_scale"] = _weights(rng, (5, c, 1, 1))
    values = {"x": {"dtype": "float32"}, "qa": _u8(0.02, 128), "c": _u8(0.05, 60), "y": {"dtype": "float32"}}
    if two_readers:
        values.update(qb=_u8(0.03, 100), s=_u8(0.04, 120))
    op = lambda kind, inputs, out, attrs=None, tensors=None: {  # noqa: E731
        "op": kind, "name": out, "inputs": inputs, "outputs": [out], "attrs": attrs or {}, "tensors": tensors or {}}
    conv = {"stride": [1, 1], "padding": [0, 0, 0, 0], "dilation": [1, 1], "groups": 1, "act": "none"}
    ops = [op("quantize", ["x"], "qa")]
    if two_readers:
        ops += [op("quantize", ["x"], "qb"), op("add", ["qa", "qb"], "s", {"act": "none"})]
    ops += [op("conv2d", ["s" if two_readers else "qa"], "c", conv, {"weight": "c.weight", "w_scale": "c.w_scale"}),
            op("dequantize", ["c"], "y")]
    graph = {"inputs": [{"name": "x", "shape": [-1, c, -1, -1]}], "outputs": ["y"], "values": values, "ops": ops}
    return graph, t


@pytest.mark.parametrize("c", [3, 4])   # RGB has its own interleave
@pytest.mark.parametrize("two_readers", [False, True])
def test_input_layout_change_in_quantize_or_arena(any_path, rng, two_readers, c):
    graph, tensors = _input_readers_graph(rng, two_readers, c)
    model = Model(graph, tensors, isa=any_path)
    # 1 pixel (layouts agree), 3x5, and 37x41 (several blocks of the fused quantize and a partial one)
    for shape in [(2, c, 1, 1), (1, c, 3, 5), (2, c, 37, 41)]:
        x = rng.normal(0, 1.5, shape).astype(np.float32)
        np.testing.assert_array_equal(model.run(x), reference.run_graph(graph, tensors, [x])[0])


def test_batch_size_changes_replan(rng):
    graph, tensors = every_op_graph(rng)
    model = Model(graph, tensors)
    xs = {b: rng.normal(0, 1, (b, 3, 9, 9)).astype(np.float32) for b in (2, 5, 1)}
    first = {b: model.run(x)[0] for b, x in xs.items()}
    for b, x in reversed(list(xs.items())):  # cached plans, arenas reused across shapes
        np.testing.assert_array_equal(model.run(x)[0], first[b])
    # A batch is the concatenation of its images.
    np.testing.assert_array_equal(np.concatenate([model.run(xs[5][i:i + 1])[0] for i in range(5)]), first[5])


@pytest.mark.parametrize("n_threads", [1, 2])
def test_large_batch_runs_in_chunks_with_the_same_bits(any_path, rng, threads, n_threads):
    """A batch whose activations pass the threads' L2 caches runs in chunks of images
    (Engine::chunk_batch): the chunks, a smaller last one among them, give the bits of the images run
    one at a time and of the reference, and the profile sums each op over the chunks."""
    qruntime.set_num_threads(n_threads)
    graph, tensors = every_op_graph(rng)
    model = Model(graph, tensors, isa=any_path)
    chunk_of = lambda n: model._engine.batch_chunk([[n, 3, 9, 9]])  # noqa: E731
    assert chunk_of(1) == 0
    big = chunk_of(100000)
    assert 2 <= big < 100000
    n = next(n for n in range(2 * big + 1, 2 * big + 9) if n % chunk_of(n))  # a smaller last chunk
    chunk = chunk_of(n)
    x = rng.normal(0, 1.5, (n, 3, 9, 9)).astype(np.float32)
    whole = model.run(x)
    edges = sorted({i for b in range(0, n, chunk) for i in (b - 1, b) if 0 <= i < n} | {n - 1})
    for i in edges:
        for got, want in zip(whole, model.run(x[i:i + 1])):
            np.testing.assert_array_equal(got[i:i + 1], want)
    _check_outputs(whole, reference.run_graph(graph, tensors, [x]))
    profile = model.profile(x, repeat=1)
    assert len(profile) == len(graph["ops"]) and all(row["ms"] > 0 for row in profile)


def test_concurrent_runs_equal_serial_runs(rng, threads):
    qruntime.set_num_threads(2)
    graph, tensors = every_op_graph(rng)
    model = Model(graph, tensors)
    xs = [rng.normal(0, 1, (b, 3, 9, 9)).astype(np.float32) for b in (1, 2, 3, 4) * 3]
    serial = [model.run(x) for x in xs]
    results = [None] * len(xs)

    def worker(k):
        for i in range(k, len(xs), 4):
            results[i] = model.run(xs[i])

    workers = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    for got, want in zip(results, serial):
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, w)


def test_run_checks_its_input(rng):
    graph, tensors = every_op_graph(rng)
    model = Model(graph, tensors)
    good = rng.normal(0, 1, (2, 3, 9, 9)).astype(np.float32)
    cases = [
        (good[0], "must be 4-D"),
        (good[:, :2], "2 channels"),
        (good[:, :, :2, :2], r"expected shape \(N, 3, 9, 9\)"),
        (good.astype(np.complex64), "cannot be cast to float32"),
        (np.array([["a"]]), "cannot be cast to float32"),
        (np.where(np.arange(good.size).reshape(good.shape) == 7, np.nan, good), "NaN or inf"),
        (np.full(good.shape, np.inf, np.float32), "NaN or inf"),
        (good[:0], "batch size 0"),
        ([good, good], "takes 1 input"),
    ]
    for x, msg in cases:
        with pytest.raises(ValueError, match=msg):
            model.run(x)
    # float64 and int inputs are cast; a torch tensor is read without copying through Python lists.
    np.testing.assert_array_equal(model.run(good.astype(np.float64))[0], model.run(good)[0])


def test_any_spatial_size_when_declared_so(rng):
    graph, tensors = every_op_graph(rng)
    graph["inputs"][0]["shape"] = [-1, 3, -1, -1]
    model = Model(graph, tensors)
    x = rng.normal(0, 1, (2, 3, 13, 10)).astype(np.float32)
    _check_outputs(model.run(x), reference.run_graph(graph, tensors, [x]))
    with pytest.raises(ValueError, match=r"op 'p1' \(avg_pool2d\).*input \(1, 8, 1, 1\)"):
        model.run(np.zeros((1, 3, 1, 1), np.float32))


def test_bad_graphs_are_format_errors(rng):
    graph, tensors = every_op_graph(rng)
    tensors["fc.weight"] = tensors["fc.weight"][:, :40].copy()  # K no longer matches the flatten
    # The input's size is fixed (all but the batch), so the graph is planned at load: the error comes there.
    with pytest.raises(qruntime.FormatError, match="op 'fc' \\(linear\\): input has 48 features; the weights expect 40"):
        Model(graph, tensors)
    graph, tensors = every_op_graph(rng)
    graph["values"]["m1"] = _u8(0.5, 3)  # max pooling must keep its input's quantization
    with pytest.raises(qruntime.FormatError, match="must keep the quantization"):
        Model(graph, tensors)


def test_summary_and_profile(rng):
    graph, tensors = every_op_graph(rng)
    model = Model(graph, tensors)
    text = model.summary()
    assert "conv2d" in text and "c1" in text and "(1, 8, 9, 9)" in text
    macs_c1 = 8 * 9 * 9 * 27
    assert f"{macs_c1:,}" in text
    rows = model.profile(rng.normal(0, 1, (2, 3, 9, 9)).astype(np.float32), repeat=3)
    assert [r["name"] for r in rows] == [op["name"] for op in graph["ops"]]
    assert abs(sum(r["share"] for r in rows) - 1.0) < 1e-9
    c1 = rows[1]
    # A 3-channel conv: the GEMM, or the direct first-layer kernel on a path that has it.
    kind, path = c1["kernel"].split(" (")[0].split(" ")
    assert c1["macs"] == 2 * macs_c1 and kind in ("gemm", "direct") and path == qruntime.isa() and c1["ms"] > 0
