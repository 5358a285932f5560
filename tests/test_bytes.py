"""The byte moves of the kernel table (lut, lut_channels, the channel gather and concat's
requantizing copy): bit-equal to the scalar reference on every ISA path, at every tail length,
channel count and index pattern, and the VBMI kernels chosen only where the CPU has VBMI."""
import numpy as np
import pytest

import qruntime
from qruntime import _core, ops
from qruntime.model import Model
from qruntime import reference

LENGTHS = list(range(0, 201)) + [255, 256, 257, 511, 1000, 4096 + 17, 65536 * 3 + 5]
CHANNELS = list(range(1, 521))


def test_byte_kernels_follow_the_vbmi_bit():
    here = qruntime.available_isas(emulated=True)
    vbmi = qruntime.cpu_info()["flags"]["avx512_vbmi"]
    expected = {"scalar": "scalar", "avx2": "scalar", "avx_vnni": "scalar", "avx_vnni_evex": "scalar",
                "avx_vnni_emulated": "scalar", "avx512_vnni": "avx512_vbmi" if vbmi else "scalar",
                "amx": "avx512_vbmi" if vbmi else "scalar",
                "avx512_vnni_emulated": "avx512_vbmi_emulated", "amx_emulated": "avx512_vbmi_emulated"}
    for isa in here:
        assert _core.byte_kernels_isa(isa) == expected[isa], isa


def test_lut_every_length_and_code(any_path, rng):
    table = rng.integers(0, 256, 256, dtype=np.uint8)
    buf = rng.integers(0, 256, LENGTHS[-1] + 64, dtype=np.uint8)
    for n in LENGTHS:
        off = n % 61  # misaligned starts
        x = buf[off:off + n]
        got = ops.lut(x, table, isa=any_path)
        np.testing.assert_array_equal(got, table[x], err_msg=f"n={n}")
    codes = np.tile(np.arange(256, dtype=np.uint8), 3)
    for t in (table, np.arange(256, dtype=np.uint8), (255 - np.arange(256)).astype(np.uint8)):
        np.testing.assert_array_equal(ops.lut(codes, t, isa=any_path), t[codes])
        np.testing.assert_array_equal(ops.lut(codes, t, isa=any_path), ops.lut(codes, t, isa="scalar"))


def test_lut_channels_every_channel_count(any_path, rng):
    for c in CHANNELS:
        rows = 1 + c % 3
        tables = rng.integers(0, 256, (c, 256), dtype=np.uint8)
        x = rng.integers(0, 256, (rows, c), dtype=np.uint8)
        got = _core.lut_channels(x, tables, any_path)
        np.testing.assert_array_equal(got, tables[np.arange(c), x], err_msg=f"c={c}")
        np.testing.assert_array_equal(got, _core.lut_channels(x, tables, "scalar"))


def _patterns(c, rng):
    """Index patterns over c input channels: name -> index."""
    half = c // 2
    p = {
        "identity": np.arange(c),
        "even": np.arange(0, c, 2),
        "odd": np.arange(1, c, 2),
        "even_then_odd": np.concatenate([np.arange(0, c, 2), np.arange(1, c, 2)]),
        "interleave_halves": np.stack([np.arange(half), np.arange(half, 2 * half)], 1).reshape(-1),
        "reversed": np.arange(c)[::-1],
        "random_repeats": rng.integers(0, c, max(1, c + rng.integers(-c // 2, c // 2 + 1))),
        "slice": np.arange(c // 3, c),
        "spanning": np.concatenate([np.arange(0, c, 7), np.arange(c - 1, -1, -5)]),  # > 128 bytes apart in a chunk
    }
    return {k: v.astype(np.int32) for k, v in p.items() if v.size}


def test_gather_every_channel_count_and_pattern(any_path, rng):
    for c in CHANNELS:
        x = rng.integers(0, 256, (2 + c % 2, c), dtype=np.uint8)
        for name, index in _patterns(c, rng).items():
            got = _core.gather_channels(x, index.tolist(), any_path)
            np.testing.assert_array_equal(got, x[:, index], err_msg=f"c={c} {name}")


@pytest.mark.parametrize("c", [116, 232, 464, 1024])
def test_gather_shufflenet_patterns(any_path, rng, c):
    x = rng.integers(0, 256, (49, c), dtype=np.uint8)
    for name, index in _patterns(c, rng).items():
        got = _core.gather_channels(x, index.tolist(), any_path)
        np.testing.assert_array_equal(got, x[:, index], err_msg=name)
        np.testing.assert_array_equal(got, _core.gather_channels(x, index.tolist(), "scalar"))


def test_gather_plans_use_windows_for_shufflenet_indices():
    for c in (232, 464):
        half = c // 2
        even, odd = list(range(0, c, 2)), list(range(1, c, 2))
        shuffle = [v for pair in zip(range(half), range(half, c)) for v in pair]
        assert all(w == 1 for w in _core.gather_channels_windows(even))
        assert all(w == 1 for w in _core.gather_channels_windows(odd))
        assert all(1 <= w <= 2 for w in _core.gather_channels_windows(shuffle))
    # Indices that spread over more than 4 windows in one chunk are gathered byte by byte.
    spread = list(range(0, 64 * 200, 200))
    assert _core.gather_channels_windows(spread) == [0]
    x = np.arange(2 * 12800, dtype=np.uint32).astype(np.uint8).reshape(2, 12800)
    for isa in qruntime.available_isas(emulated=True):
        np.testing.assert_array_equal(_core.gather_channels(x, spread, isa), x[:, spread])


def test_gather_rejects_an_index_past_the_row():
    with pytest.raises(ValueError, match="do not hold channel 4"):
        _core.gather_channels(np.zeros((2, 4), np.uint8), [0, 4])


def test_concat_requantizing_copy_every_length(any_path, rng):
    for n in list(range(0, 201)) + [232, 464, 1000]:
        a = rng.integers(0, 256, (3, n), dtype=np.uint8)
        b = rng.integers(0, 256, (3, (n * 7) % 131), dtype=np.uint8)
        args = ([a, b], [0.05, 0.11], [3, 200], 0.07, 128)
        got = ops.concat(*args, isa=any_path)
        np.testing.assert_array_equal(got, ops.concat(*args, isa="scalar"), err_msg=f"n={n}")


def test_engine_lut_node_equals_reference(any_path, rng):
    q = {"dtype": "uint8", "scale": 0.05, "zero_point": 100}
    graph = {"inputs": [{"name": "x", "shape": [-1, 37, 3, 5]}], "outputs": ["y"],
             "ops": [{"op": "quantize", "name": "q", "inputs": ["x"], "outputs": ["q"], "attrs": {}, "tensors": {}},
                     {"op": "lut", "name": "t", "inputs": ["q"], "outputs": ["t"], "attrs": {},
                      "tensors": {"table": "t.table"}},
                     {"op": "dequantize", "name": "y", "inputs": ["t"], "outputs": ["y"], "attrs": {}, "tensors": {}}],
             "values": {"x": {"dtype": "float32"}, "q": q, "t": dict(q, zero_point=7), "y": {"dtype": "float32"}}}
    tensors = {"t.table": rng.integers(0, 256, 256).astype(np.uint8)}
    x = rng.uniform(-6, 8, (2, 37, 3, 5)).astype(np.float32)
    got = Model(graph, tensors, isa=any_path).run(x)
    np.testing.assert_array_equal(got, reference.run_graph(graph, tensors, [x])[0])
