"""The .qnn reader/writer: round trips, byte-exact determinism, safetensors compatibility, and every bad file."""
import copy
import hashlib
import json
import pathlib
import random
import re
import struct

import numpy as np
import pytest
import safetensors.numpy

import qruntime
from qruntime import format as qnn
from qruntime.errors import FormatError

DOCS = pathlib.Path(__file__).resolve().parent.parent / "docs" / "format.md"


def small_model():
    """A valid graph using most ops: quantize -> conv2d -> lut, add(conv, lut) -> adaptive_avg_pool2d ->
    flatten -> linear (no bias: an optional role left out) -> dequantize -> softmax."""
    rng = np.random.default_rng(7)
    u8 = lambda scale, zp: {"dtype": "uint8", "scale": scale, "zero_point": zp}  # noqa: E731
    graph = {
        "inputs": [{"name": "x", "shape": [-1, 3, 8, 8]}],
        "outputs": ["out"],
        "values": {"x": {"dtype": "float32"}, "q0": u8(0.02, 128), "q1": u8(0.05, 0), "q2": u8(0.01, 3),
                   "q3": u8(0.07, 0), "q4": u8(0.03, 1), "q5": u8(0.03, 1), "q6": u8(0.125, 100),
                   "f7": {"dtype": "float32"}, "out": {"dtype": "float32"}},
        "ops": [
            {"op": "quantize", "name": "x", "inputs": ["x"], "outputs": ["q0"], "attrs": {}, "tensors": {}},
            {"op": "conv2d", "name": "conv1", "inputs": ["q0"], "outputs": ["q1"],
             "attrs": {"stride": [1, 1], "padding": [1, 1, 1, 1], "dilation": [1, 1], "groups": 1, "act": "relu"},
             "tensors": {"weight": "conv1.weight", "w_scale": "conv1.w_scale", "bias": "conv1.bias"}},
            {"op": "lut", "name": "sigmoid", "inputs": ["q1"], "outputs": ["q2"], "attrs": {},
             "tensors": {"table": "sigmoid.table"}},
            {"op": "add", "name": "add", "inputs": ["q1", "q2"], "outputs": ["q3"], "attrs": {"act": "none"},
             "tensors": {}},
            {"op": "adaptive_avg_pool2d", "name": "pool", "inputs": ["q3"], "outputs": ["q4"],
             "attrs": {"output_size": [1, 1]}, "tensors": {}},
            {"op": "flatten", "name": "flatten", "inputs": ["q4"], "outputs": ["q5"], "attrs": {}, "tensors": {}},
            {"op": "linear", "name": "fc", "inputs": ["q5"], "outputs": ["q6"], "attrs": {"act": "none"},
             "tensors": {"weight": "fc.weight", "w_scale": "fc.w_scale"}},
            {"op": "dequantize", "name": "fc", "inputs": ["q6"], "outputs": ["f7"], "attrs": {}, "tensors": {}},
            {"op": "softmax", "name": "softmax", "inputs": ["f7"], "outputs": ["out"], "attrs": {"dim": 1},
             "tensors": {}},
        ],
    }
    tensors = {
        "conv1.weight": rng.integers(-127, 128, (4, 3, 3, 3), dtype=np.int8),
        "conv1.w_scale": rng.uniform(0.001, 0.01, 4).astype(np.float32),
        "conv1.bias": rng.normal(size=4).astype(np.float32),
        "sigmoid.table": rng.integers(0, 256, 256, dtype=np.uint8),
        "fc.weight": rng.integers(-127, 128, (5, 4), dtype=np.int8),
        "fc.w_scale": rng.uniform(0.001, 0.01, 5).astype(np.float32),
    }
    return graph, tensors


def whole_file_sha256(data):
    """docs/format.md's format-2 hash, written out here independently of format.py: SHA-256 of the
    header without __metadata__.sha256 as canonical JSON, then the data section."""
    header, start = header_of(data)
    header["__metadata__"].pop("sha256", None)
    canonical = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(canonical + bytes(data[start:])).hexdigest()


def foreign_qnn(graph, tensors, /, **metadata):
    """A .qnn built by the safetensors package itself, without qruntime's checks (so it can be bad):
    `metadata` overrides the default keys (None drops one); the sha256 is made right unless given
    (format 1's over the data section, format 2's over the header and the data)."""
    meta = {"qnn_format": "2", "producer": "test", "graph": json.dumps(graph), "sha256": "0" * 64}
    meta.update(metadata)
    meta = {k: v for k, v in meta.items() if v is not None}
    data = bytearray(safetensors.numpy.save(tensors, metadata=meta))
    if meta.get("sha256") == "0" * 64 and "sha256" not in metadata:
        start = 8 + struct.unpack("<Q", data[:8])[0]
        at = data.index(b"0" * 64, 8, start)
        digest = hashlib.sha256(data[start:]) if meta.get("qnn_format") == "1" else None
        data[at:at + 64] = (digest.hexdigest() if digest else whole_file_sha256(data)).encode()
    return bytes(data)


def header_of(data):
    length = struct.unpack("<Q", data[:8])[0]
    return json.loads(data[8:8 + length]), 8 + length


def raises_naming(field, data):
    """from_bytes(data) raises FormatError whose message contains `field` (literally)."""
    with pytest.raises(FormatError, match=re.escape(field)):
        qnn.from_bytes(data)


# --- good files ---------------------------------------------------------------------------------

def test_round_trip_keeps_graph_and_tensors():
    graph, tensors = small_model()
    graph_back, tensors_back = qnn.from_bytes(qnn.to_bytes(graph, tensors))
    assert graph_back == graph
    assert sorted(tensors_back) == sorted(tensors)
    for name, array in tensors.items():
        assert tensors_back[name].dtype == array.dtype and tensors_back[name].shape == array.shape
        np.testing.assert_array_equal(tensors_back[name], array)
        assert tensors_back[name].flags.writeable and tensors_back[name].flags.aligned


def test_write_read_write_gives_identical_bytes(tmp_path):
    graph, tensors = small_model()
    qnn.write(tmp_path / "a.qnn", graph, tensors)
    qnn.write(tmp_path / "b.qnn", *qnn.read(tmp_path / "a.qnn"))
    assert (tmp_path / "a.qnn").read_bytes() == (tmp_path / "b.qnn").read_bytes()
    # Same content given in another dict order: still the same bytes.
    shuffled = dict(reversed(list(tensors.items())))
    assert qnn.to_bytes(graph, shuffled) == (tmp_path / "a.qnn").read_bytes()


def test_file_is_a_valid_safetensors_file(tmp_path):
    graph, tensors = small_model()
    path = tmp_path / "m.qnn"
    qnn.write(path, graph, tensors)
    loaded = safetensors.numpy.load_file(str(path))
    assert sorted(loaded) == sorted(tensors)
    for name, array in tensors.items():
        np.testing.assert_array_equal(loaded[name], array)
        assert loaded[name].dtype == array.dtype
    with safetensors.safe_open(str(path), framework="numpy") as f:
        metadata = f.metadata()
    assert metadata["qnn_format"] == "2"
    assert metadata["producer"] == f"qruntime {qruntime.__version__}"
    assert json.loads(metadata["graph"]) == graph


def test_header_layout():
    graph, tensors = small_model()
    data = qnn.to_bytes(graph, tensors)
    header, data_start = header_of(data)
    assert (data_start - 8) % 8 == 0
    assert set(header.pop("__metadata__")) == {"qnn_format", "producer", "graph", "sha256"}
    names = sorted(header, key=lambda n: header[n]["data_offsets"])
    assert names == sorted(tensors)  # data in sorted name order
    assert header["conv1.bias"] == {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}
    assert header["conv1.weight"] == {"dtype": "I8", "shape": [4, 3, 3, 3], "data_offsets": [32, 140]}
    assert header_of(data)[0]["__metadata__"]["sha256"] == whole_file_sha256(data)


def test_reads_a_file_written_by_the_safetensors_package():
    graph, tensors = small_model()
    graph_back, tensors_back = qnn.from_bytes(foreign_qnn(graph, tensors))
    assert graph_back == graph
    for name, array in tensors.items():
        np.testing.assert_array_equal(tensors_back[name], array)


def test_ops_table_matches_the_docs():
    ops_section = DOCS.read_text().split("### Ops", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(\w+)` \|", ops_section, flags=re.M)
    assert rows == list(qnn.OPS)


# --- bad container --------------------------------------------------------------------------------

def test_wrong_magic():
    _, tensors = small_model()
    raises_naming("not a .qnn file", safetensors.numpy.save(tensors))
    raises_naming("not a .qnn file", safetensors.numpy.save(tensors, metadata={"format": "pt"}))


def test_not_a_safetensors_file(tmp_path):
    path = tmp_path / "picture.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    with pytest.raises(FormatError, match="header length"):
        qnn.read(path)


@pytest.mark.parametrize("where, field", [
    (0, "header length"), (5, "header length"), (8, "header length"), (100, "header length"),
    ("header end", "data_offsets"), ("data middle", "data_offsets"), ("last byte", "data_offsets"),
])
def test_truncated(tmp_path, where, field):
    data = qnn.to_bytes(*small_model())
    _, data_start = header_of(data)
    cut = {"header end": data_start, "data middle": (data_start + len(data)) // 2, "last byte": len(data) - 1}
    path = tmp_path / "cut.qnn"
    path.write_bytes(data[:cut.get(where, where)])
    with pytest.raises(FormatError, match=field):
        qnn.read(path)


def test_header_length_past_end_of_file(tmp_path):
    data = qnn.to_bytes(*small_model())
    path = tmp_path / "m.qnn"
    path.write_bytes(struct.pack("<Q", 2**62) + data[8:])
    with pytest.raises(FormatError, match=r"header length: 4611686018427387904 bytes claimed"):
        qnn.read(path)
    raises_naming("header length", struct.pack("<Q", len(data) - 7) + data[8:])


def test_header_not_json_or_not_an_object():
    raises_naming("header: not valid JSON", struct.pack("<Q", 8) + b"{nope!!}")
    raises_naming("header: not UTF-8", struct.pack("<Q", 8) + b"{\xff\xfe    }")
    raises_naming("header: must be a JSON object", struct.pack("<Q", 8) + b"[1, 2]  ")


def test_duplicate_json_keys_are_rejected():
    data = qnn.to_bytes(*small_model())
    _, start = header_of(data)
    text = data[8:start].replace(b'{"__metadata__":', b'{"fc.weight":{},"__metadata__":', 1)
    text += b" " * (-len(text) % 8)
    raises_naming("duplicate key 'fc.weight'", struct.pack("<Q", len(text)) + text + data[start:])


def test_unknown_format_version():
    graph, tensors = small_model()
    with pytest.raises(FormatError, match=r"__metadata__\.qnn_format: unknown version '3'.*supports '1', '2'"):
        qnn.from_bytes(foreign_qnn(graph, tensors, qnn_format="3"))


def test_metadata_keys():
    graph, tensors = small_model()
    raises_naming("__metadata__.graph", foreign_qnn(graph, tensors, graph=None))
    raises_naming("__metadata__.license", foreign_qnn(graph, tensors, license="MIT"))
    raises_naming("__metadata__.sha256", foreign_qnn(graph, tensors, sha256="abc"))


def test_sha256_mismatch():
    data = bytearray(qnn.to_bytes(*small_model()))
    data[-1] ^= 0x01
    raises_naming("sha256", bytes(data))


def edit_header(data, old, new):
    """`data` with one header edit (same length, so the layout stays valid) and the old hash kept."""
    header_end = header_of(data)[1]
    assert len(old) == len(new) and data.count(old, 8, header_end) == 1
    return data[:header_end].replace(old, new) + data[header_end:]


def test_graph_edit_breaks_the_hash():
    # Format 1 hashed only the data: this edit of the graph (a stride) went unnoticed.
    data = qnn.to_bytes(*small_model())
    edited = edit_header(data, b'\\"stride\\":[1,1]', b'\\"stride\\":[2,1]')
    raises_naming("sha256: the header and tensor data hash to", edited)
    # A tensor entry's shape too (fc.weight (5, 4) read as (4, 5): the same bytes).
    edited = edit_header(data, b'"shape":[5,4]', b'"shape":[4,5]')
    raises_naming("sha256", edited)


def test_header_padding_is_not_content():
    # Re-padding the header changes no field: the canonical header hashes the same.
    data = qnn.to_bytes(*small_model())
    header, start = header_of(data)
    text = data[8:start].rstrip(b" ") + b" " * (16 + (-len(data[8:start].rstrip(b" ")) % 8))
    graph_back, _ = qnn.from_bytes(struct.pack("<Q", len(text)) + text + data[start:])
    assert graph_back == small_model()[0]


def test_format_1_file_loads_with_a_warning():
    graph, tensors = small_model()
    old = foreign_qnn(graph, tensors, qnn_format="1")
    with pytest.warns(qruntime.FormatWarning, match="format 1: its sha256 covers the tensor data only"):
        graph_back, _ = qnn.from_bytes(old)
    assert graph_back == graph
    # Its hash is still checked, over the data section.
    broken = bytearray(old)
    broken[-1] ^= 0x01
    raises_naming("sha256: the tensor data hash to", bytes(broken))
    # Written again, it is format 2.
    assert header_of(qnn.to_bytes(graph_back, tensors))[0]["__metadata__"]["qnn_format"] == "2"


@pytest.mark.parametrize("entry, field", [
    ({"dtype": "F64"}, "tensor 'fc.weight' dtype"),
    ({"dtype": "I8", "shape": [5, -4]}, "tensor 'fc.weight' shape"),
    ({"shape": [5, 3]}, "tensor 'fc.weight' data_offsets"),       # 15 bytes claimed in a 20-byte slot
    ({"data_offsets": [20, 40]}, "tensor 'fc.weight' data_offsets"),
    ({"layout": "nchw"}, "tensor 'fc.weight'.layout: unknown key"),
])
def test_bad_tensor_entry(entry, field):
    data = qnn.to_bytes(*small_model())
    header, start = header_of(data)
    header["fc.weight"].update(entry)
    text = json.dumps(header).encode()
    raises_naming(field, struct.pack("<Q", len(text)) + text + data[start:])


def test_overlap_gap_and_trailing_bytes():
    data = qnn.to_bytes(*small_model())
    header, start = header_of(data)

    def with_header(h, body=data[start:]):
        text = json.dumps(h).encode()
        return struct.pack("<Q", len(text)) + text + body

    overlapping = copy.deepcopy(header)
    overlapping["conv1.weight"]["data_offsets"] = overlapping["conv1.bias"]["data_offsets"] = [0, 16]
    overlapping["conv1.bias"]["shape"], overlapping["conv1.weight"]["shape"] = [4], [16]
    raises_naming("overlaps", with_header(overlapping))
    raises_naming("gap of 108 bytes", with_header({k: v for k, v in header.items() if k != "conv1.weight"}))
    raises_naming("data section: its last 4 bytes", with_header(header, data[start:] + b"\0" * 4))


# --- bad graph ------------------------------------------------------------------------------------

def bad_file(edit_graph=None, edit_tensors=None):
    graph, tensors = small_model()
    if edit_graph:
        edit_graph(graph)
    if edit_tensors:
        edit_tensors(tensors)
    return foreign_qnn(graph, tensors)


def test_missing_tensor():
    raises_naming("ops[1].tensors.w_scale: missing tensor 'conv1.w_scale'",
                  bad_file(edit_tensors=lambda t: t.pop("conv1.w_scale")))


def test_missing_required_role():
    raises_naming("ops[6].tensors.w_scale: required", bad_file(lambda g: g["ops"][6]["tensors"].pop("w_scale"),
                                                               lambda t: t.pop("fc.w_scale")))


@pytest.mark.parametrize("name, bad, field", [
    ("conv1.w_scale", np.ones(3, np.float32), "tensor 'conv1.w_scale' shape: must be (oc=4,)"),
    ("conv1.weight", np.ones((4, 27), np.int8), "tensor 'conv1.weight' shape"),
    ("sigmoid.table", np.ones(255, np.uint8), "tensor 'sigmoid.table' shape: must be (256,)"),
    ("conv1.bias", np.ones(5, np.float32), "tensor 'conv1.bias' shape"),
])
def test_shape_mismatch(name, bad, field):
    raises_naming(field, bad_file(edit_tensors=lambda t: t.update({name: bad})))


def test_dtype_mismatch():
    raises_naming("tensor 'conv1.weight' dtype: must be int8, got float32",
                  bad_file(edit_tensors=lambda t: t.update({"conv1.weight": t["conv1.weight"].astype(np.float32)})))


def test_weight_holding_minus_128():
    def put_min(t):
        t["fc.weight"][2, 1] = -128
    raises_naming("tensor 'fc.weight' values", bad_file(edit_tensors=put_min))


@pytest.mark.parametrize("bad", [0.0, -1.0, np.nan, np.inf])
def test_weight_scale_not_positive_finite(bad):
    def put(t):
        t["conv1.w_scale"][1] = bad
    raises_naming("tensor 'conv1.w_scale' values", bad_file(edit_tensors=put))


def test_unreferenced_tensor():
    raises_naming("tensor 'old.weight': not referenced",
                  bad_file(edit_tensors=lambda t: t.update({"old.weight": np.zeros(3, np.int8)})))


def test_unknown_op():
    raises_naming("ops[2].op: unknown op 'gelu'", bad_file(lambda g: g["ops"][2].update(op="gelu")))


@pytest.mark.parametrize("attr, value, field", [
    ("stride", [1, True], "ops[1].attrs.stride"),       # a bool is not an int
    ("stride", [1], "ops[1].attrs.stride"),             # wrong length
    ("dilation", [0, 1], "ops[1].attrs.dilation"),
    ("padding", [1, 1, -1, 1], "ops[1].attrs.padding"),
    ("groups", 1.0, "ops[1].attrs.groups"),
    ("groups", True, "ops[1].attrs.groups"),
    ("groups", 2**31, "ops[1].attrs.groups"),
    ("groups", 3, "ops[1].attrs.groups: 3 does not divide"),
    ("act", "gelu", "ops[1].attrs.act"),
    ("bias", True, "ops[1].attrs.bias: unknown key"),
])
def test_bad_conv_attr(attr, value, field):
    raises_naming(field, bad_file(lambda g: g["ops"][1]["attrs"].update({attr: value})))


@pytest.mark.parametrize("edit, field", [
    (lambda g: g["ops"][1]["attrs"].update(stride=(1, 1)), "ops[1].attrs.stride"),
    (lambda g: g["values"]["q2"].update(scale=np.float32(0.5)), "values['q2'].scale"),
    (lambda g: g["values"]["q2"].update(zero_point=np.int64(3)), "values['q2'].zero_point"),
])
def test_validate_wants_plain_json_types(edit, field):
    """Tuples and numpy scalars would not survive a round trip unchanged (or json.dumps at all)."""
    graph, tensors = small_model()
    edit(graph)
    with pytest.raises(FormatError, match=re.escape(field)):
        qnn.validate(graph, tensors)


def test_missing_attr():
    raises_naming("ops[4].attrs.output_size: missing", bad_file(lambda g: g["ops"][4]["attrs"].clear()))


def test_value_used_before_defined():
    def swap(g):
        g["ops"][2], g["ops"][3] = g["ops"][3], g["ops"][2]   # add before the lut that feeds it
    raises_naming("ops[2].inputs[1]: value 'q2' is used before it is defined", bad_file(swap))


@pytest.mark.parametrize("edit, field", [
    (lambda g: g["ops"][3].update(inputs=["q1"]), "ops[3].inputs: must be a list of 2"),
    (lambda g: g["ops"][2].update(outputs=["q2", "q9"]), "ops[2].outputs: must be a list of exactly one"),
    (lambda g: g["ops"][2].update(outputs=["q1"]), "ops[2].outputs[0]: value 'q1' is already defined"),
    (lambda g: g["ops"][0].update(outputs=["x"]), "ops[0].outputs[0]: value 'x' is already defined"),
    (lambda g: g["values"].pop("q3"), "ops[3].outputs[0]: value 'q3' has no entry in values"),
    (lambda g: g["values"]["q1"].update(dtype="float32"), "values['q1'].scale: unknown key"),
    (lambda g: g["values"].update(q1={"dtype": "float32"}), "ops[1].outputs[0]: value 'q1' is float32"),
    (lambda g: g["values"].update(f7=g["values"]["q6"]), "ops[7].outputs[0]: value 'f7' is uint8"),
    (lambda g: g["values"]["q2"].update(scale=0.0), "values['q2'].scale"),
    (lambda g: g["values"]["q2"].update(scale=1e-50), "values['q2'].scale"),
    (lambda g: g["values"]["q2"].update(zero_point=256), "values['q2'].zero_point"),
    (lambda g: g["values"]["q2"].update(zero_point=3.0), "values['q2'].zero_point"),
    (lambda g: g["values"]["q5"].update(zero_point=2), "ops[5].outputs[0]: value 'q5' must keep the quantization"),
    (lambda g: g["values"].update(spare={"dtype": "float32"}), "values['spare']: not used"),
    (lambda g: g["inputs"][0].update(shape=[1, 3, 8, 8]), "inputs[0].shape"),
    (lambda g: g["inputs"][0].update(shape=[-1, 3, 8, 8, 8]), "inputs[0].shape"),
    (lambda g: g["inputs"][0].update(shape=[-1, 0, 8, 8]), "inputs[0].shape"),
    (lambda g: g["inputs"].append({"name": "x", "shape": [-1, 3]}), "inputs[1].name: 'x' is listed twice"),
    (lambda g: g.update(outputs=["q6"]), "outputs[0]: 'q6' is uint8"),
    (lambda g: g.update(outputs=["x"]), "outputs[0]: 'x' is not produced by any op"),
    (lambda g: g.update(outputs=[]), "outputs: must be a non-empty list"),
    (lambda g: g.update(version=2), "graph.version: unknown key"),
    (lambda g: g["ops"][8]["attrs"].update(dim=0), "ops[8].attrs.dim"),
    (lambda g: g["ops"][5]["tensors"].update(table="sigmoid.table"), "ops[5].tensors.table: unknown role"),
])
def test_bad_graph(edit, field):
    raises_naming(field, bad_file(edit))


def test_graph_json_invalid():
    graph, tensors = small_model()
    raises_naming("__metadata__.graph: not valid JSON", foreign_qnn(graph, tensors, graph="{'ops': []}"))
    graph["values"]["q2"]["scale"] = float("nan")   # json.dumps writes NaN, which is not JSON
    raises_naming("__metadata__.graph: not valid JSON", foreign_qnn(graph, tensors))
    raises_naming("graph: must be an object", foreign_qnn(graph, tensors, graph="[]"))


def test_pool_attrs():
    graph, tensors = small_model()
    graph["values"]["q4b"] = dict(graph["values"]["q4"])
    graph["ops"].insert(5, {"op": "max_pool2d", "name": "mp", "inputs": ["q4"], "outputs": ["q4b"],
                            "attrs": {"kernel": [1, 1], "stride": [1, 1], "padding": [0, 0], "dilation": [1, 1],
                                      "ceil_mode": False}, "tensors": {}})
    graph["ops"][6]["inputs"] = ["q4b"]
    assert qnn.from_bytes(qnn.to_bytes(graph, tensors))[0] == graph
    for attr, value, field in [("ceil_mode", 0, "ops[5].attrs.ceil_mode: must be a bool"),
                               ("padding", [1, 0], "ops[5].attrs.padding: [1, 0] is more than half the kernel")]:
        bad = copy.deepcopy(graph)
        bad["ops"][5]["attrs"][attr] = value
        raises_naming(field, foreign_qnn(bad, tensors))


def test_write_refuses_a_bad_graph_and_leaves_the_file_alone(tmp_path):
    graph, tensors = small_model()
    path = tmp_path / "m.qnn"
    qnn.write(path, graph, tensors)
    before = path.read_bytes()
    graph["ops"][2]["op"] = "gelu"
    with pytest.raises(FormatError, match=re.escape("ops[2].op")):
        qnn.write(path, graph, tensors)
    assert path.read_bytes() == before


@pytest.mark.parametrize("name, bad, field", [
    ("conv1.bias", np.zeros(4, np.float64), "tensor 'conv1.bias' dtype: float64 cannot be stored"),
    ("conv1.bias", [0.0] * 4, "tensor 'conv1.bias': must be a numpy array"),
    ("conv1.bias", np.zeros(4, ">f4"), "tensor 'conv1.bias' dtype"),
])
def test_write_refuses_tensors_it_cannot_store(name, bad, field):
    graph, tensors = small_model()
    tensors[name] = bad
    with pytest.raises(FormatError, match=re.escape(field)):
        qnn.to_bytes(graph, tensors)


# --- fuzz -----------------------------------------------------------------------------------------

def test_random_corruption_raises_only_format_error():
    """Byte flips anywhere (most land in the header) and truncations: FormatError or, rarely, a file that
    still reads (a flip in JSON whitespace); never another exception."""
    data = qnn.to_bytes(*small_model())
    rnd = random.Random(1234)
    outcomes = {"error": 0, "read": 0}
    for trial in range(600):
        corrupt = bytearray(data)
        for _ in range(rnd.randint(1, 4)):
            corrupt[rnd.randrange(len(corrupt))] = rnd.randrange(256)
        if trial % 3 == 0:
            corrupt = corrupt[:rnd.randrange(len(corrupt) + 1)]
        try:
            qnn.from_bytes(bytes(corrupt))
            outcomes["read"] += 1
        except FormatError:
            outcomes["error"] += 1
    assert outcomes["error"] > 500


def test_random_graph_mutations_raise_only_format_error():
    """Structural fuzz past the checksum: a field of the graph deleted, or replaced by a value of
    another type or an edge value, in a file whose sha256 is right."""
    graph, tensors = small_model()
    replacements = [None, True, 0, -1, 2**63, 1.5, float("inf"), "", "x", "q1", [], [1, 1], {}, {"a": 1}]
    paths = []

    def collect(node, path):
        paths.append(path)
        children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for key, child in children:
            collect(child, path + [key])

    collect(graph, [])
    rnd = random.Random(99)
    failures = 0
    for _ in range(300):
        path = rnd.choice(paths[1:])
        mutated = copy.deepcopy(graph)
        parent = mutated
        for key in path[:-1]:
            parent = parent[key]
        if rnd.random() < 0.25:
            del parent[path[-1]]
        else:
            parent[path[-1]] = rnd.choice(replacements)
        try:
            qnn.from_bytes(foreign_qnn(mutated, tensors))
        except FormatError:
            failures += 1
    assert failures > 200


def test_quantization_record():
    graph, tensors = small_model()
    graph["quantization"] = {"weight_bits": 8, "method": "mse", "per_channel": True}
    assert qnn.from_bytes(qnn.to_bytes(graph, tensors))[0] == graph
    graph["quantization"]["bias_correction"] = True  # optional: files from before it load too
    assert qnn.from_bytes(qnn.to_bytes(graph, tensors))[0] == graph
    for key, bad in (("weight_bits", 6), ("weight_bits", True), ("method", "median"), ("per_channel", 1),
                     ("bias_correction", 1), ("bias_correction", "yes")):
        g = copy.deepcopy(graph)
        g["quantization"][key] = bad
        with pytest.raises(FormatError, match=f"quantization.{key}"):
            qnn.validate(g, tensors)
    g = copy.deepcopy(graph)
    g["quantization"]["extra"] = 1
    with pytest.raises(FormatError, match="quantization.extra: unknown key"):
        qnn.validate(g, tensors)
    # 7-bit files hold weights in [-64, 64] only.
    g = copy.deepcopy(graph)
    g["quantization"]["weight_bits"] = 7
    with pytest.raises(FormatError, match=r"weight_bits is 7 but the weights leave \[-64, 64\]"):
        qnn.validate(g, tensors)
    seven = {k: (np.clip(v, -64, 64) if v.dtype == np.int8 else v) for k, v in tensors.items()}
    qnn.validate(g, seven)
