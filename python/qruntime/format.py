"""The .qnn file: its bytes (a safetensors container) and the validation of the quantized graph it holds.

A .qnn file is a safetensors file. Its first 8 bytes are the header length N (unsigned, little
endian); the next N bytes are a JSON object (padded with spaces so that N is a multiple of 8) that
maps each tensor name to {"dtype", "shape", "data_offsets"} and holds "__metadata__", a flat
object of strings; the rest of the file is the tensors' raw little-endian bytes, back to back. The
metadata says what the file is: `qnn_format` (the schema version), `producer`, `graph` (the op
list as JSON) and `sha256`. docs/format.md is the reference.

The integrity hash (format 2) covers the whole file's meaning: it is the SHA-256 of the header in
canonical form (the header object without `__metadata__.sha256`, as JSON with sorted keys and no
whitespace) followed by the data section. Editing the graph, a tensor entry or the data breaks it;
re-padding the header does not, as it changes nothing the file says. Format 1 files (whose hash
covers the data section alone) still load, with a warning that their header is unprotected.

Reading trusts nothing: the header length is checked against the file before anything is read or
allocated from it, every tensor entry must tile the data section exactly (no overlap, no gap, no
trailing bytes), the checksum must match, and the graph is checked against `OPS` (every op, attr,
value, dtype, tensor role and shape the engine relies on) before anyone builds on it. Every failure
is a FormatError whose message starts with the field at fault. Nothing in the file is ever
executed (no pickle). Shape propagation through the graph is left to the engine.

Writing is deterministic: tensors in sorted name order, JSON with sorted keys and no spaces, so
write -> read -> write gives the same bytes.
"""
import hashlib
import json
import math
import os
import stat
import struct
import warnings
import weakref

import numpy as np

from .errors import FormatError, FormatWarning

FORMAT_VERSION = "2"
SUPPORTED_VERSIONS = ("1", "2")  # "1": the same schema, with a hash of the data section only

# safetensors dtype codes and the numpy dtypes they hold (little endian in the file).
_DTYPES = {"I8": np.dtype("<i1"), "U8": np.dtype("<u1"), "F32": np.dtype("<f4"), "I32": np.dtype("<i4")}
_CODES = {dtype: code for code, dtype in _DTYPES.items()}
_METADATA_KEYS = ("qnn_format", "producer", "graph", "sha256")
_INT32_MAX = 2**31 - 1  # every int in the graph reaches C++ as an int32
_FLOAT32_TINY = float(np.finfo(np.float32).tiny)
_FLOAT32_MAX = float(np.finfo(np.float32).max)


# --- the op table -------------------------------------------------------------------------------
# Plain classes, not dataclasses: building eight dataclasses and importing pathlib for one write were
# half of `import qruntime` (17 of 33 ms, Zen 3), which a process that only loads and runs pays.

class Int:
    """An int attr (a JSON bool is not one) in [lo, hi]."""
    __slots__ = ("lo", "hi")

    def __init__(self, lo, hi=_INT32_MAX):
        self.lo, self.hi = lo, hi

    def error(self, value):
        if not _is_int(value) or not self.lo <= value <= self.hi:
            return f"must be an int in [{self.lo}, {self.hi}]"
        return None


class IntList:
    """A list of exactly `length` ints, each in [lo, 2^31 - 1]."""
    __slots__ = ("length", "lo")

    def __init__(self, length, lo):
        self.length, self.lo = length, lo

    def error(self, value):
        if not (isinstance(value, list) and len(value) == self.length
                and all(_is_int(v) and self.lo <= v <= _INT32_MAX for v in value)):
            return f"must be a list of {self.length} ints >= {self.lo}"
        return None


class Dims:
    """NCHW dims to reduce over: a list of 1 to 3 distinct ints in [1, 3] in increasing order (never the batch)."""

    def error(self, value):
        if not (isinstance(value, list) and 1 <= len(value) <= 3 and all(_is_int(v) and 1 <= v <= 3 for v in value)
                and all(a < b for a, b in zip(value, value[1:]))):
            return "must be a list of 1 to 3 distinct ints in [1, 3], in increasing order"
        return None


class Float:
    """A JSON number with a fraction or exponent (1e-06, 0.5; not 1) in [lo, hi]: an int attr would reach
    the engine as an int."""
    __slots__ = ("lo", "hi")

    def __init__(self, lo, hi):
        self.lo, self.hi = lo, hi

    def error(self, value):
        if not (isinstance(value, float) and math.isfinite(value) and self.lo <= value <= self.hi):
            return f"must be a number written with a fraction or exponent, in [{self.lo:g}, {self.hi:g}]"
        return None


class Bool:
    """A JSON true/false (not 0/1)."""

    def error(self, value):
        return None if isinstance(value, bool) else "must be a bool (true or false)"


class Choice:
    """One of a few strings."""
    __slots__ = ("options",)

    def __init__(self, options):
        self.options = options

    def error(self, value):
        if not (isinstance(value, str) and value in self.options):
            return "must be one of " + ", ".join(repr(o) for o in self.options)
        return None


class TensorRole:
    """A constant an op reads from the file. `shape` entries are fixed sizes (ints) or dimension
    names (any size >= 1, equal wherever the same name appears in the op's roles, e.g. "oc").
    `values`: None, "int8_symmetric" (no -128), "finite", "positive" (finite and > 0) or "index" (>= 0)."""
    __slots__ = ("dtype", "shape", "required", "values")

    def __init__(self, dtype, shape, required=True, values=None):
        self.dtype, self.shape, self.required, self.values = dtype, shape, required, values


class OpSpec:
    """What an op computes (one line), its (input dtype, output dtype) pairs (all inputs share one
    dtype), how many inputs it takes (max None = any number), its attrs, its tensor roles, and
    whether its output must carry its input's quantization (ops that never requantize)."""
    __slots__ = ("doc", "dtypes", "inputs", "attrs", "tensors", "same_qparams")

    def __init__(self, doc, dtypes, inputs=(1, 1), attrs=None, tensors=None, same_qparams=False):
        self.doc, self.dtypes, self.inputs, self.same_qparams = doc, dtypes, inputs, same_qparams
        self.attrs = {} if attrs is None else attrs
        self.tensors = {} if tensors is None else tensors


_ACT = Choice(("none", "relu", "relu6"))
_CONV_ATTRS = {"stride": IntList(2, 1), "padding": IntList(4, 0), "dilation": IntList(2, 1),
               "groups": Int(1), "act": _ACT}
_W_SCALE = TensorRole("float32", ("oc",), values="positive")
_BIAS = TensorRole("float32", ("oc",), required=False, values="finite")
_U8 = (("uint8", "uint8"),)
UNARY_FLOAT_FUNCTIONS = ("relu", "relu6", "hardtanh", "leaky_relu", "scale_shift", "sigmoid", "tanh", "hardswish",
                         "hardsigmoid", "silu", "gelu", "gelu_tanh")
_F32 = (("float32", "float32"),)

# Op name -> spec. The engine's C++ op list (csrc/ops/op_list.inc) has exactly these names.
OPS = {
    "quantize": OpSpec("q = clamp(round_half_even(x / scale) + zero_point, 0, 255), the output's quantization",
                       (("float32", "uint8"),)),
    "dequantize": OpSpec("x = (q - zero_point) * scale, the input's quantization", (("uint8", "float32"),)),
    "conv2d": OpSpec("2-D convolution, int32 accumulation, requantized to the output (+ fused ReLU/ReLU6)",
                     _U8, attrs=_CONV_ATTRS,
                     tensors={"weight": TensorRole("int8", ("oc", "ic/groups", "kh", "kw"), values="int8_symmetric"),
                              "w_scale": _W_SCALE, "bias": _BIAS}),
    "linear": OpSpec("y = x w^T + bias on (N, K), int32 accumulation, requantized (+ fused ReLU/ReLU6)",
                     _U8, attrs={"act": _ACT},
                     tensors={"weight": TensorRole("int8", ("oc", "k"), values="int8_symmetric"),
                              "w_scale": _W_SCALE, "bias": _BIAS}),
    "conv2d_float": OpSpec("2-D convolution in float32 (a layer kept in float)", _F32, attrs=_CONV_ATTRS,
                           tensors={"weight": TensorRole("float32", ("oc", "ic/groups", "kh", "kw"), values="finite"),
                                    "bias": _BIAS}),
    "linear_float": OpSpec("y = x w^T + bias in float32 (a layer kept in float)", _F32, attrs={"act": _ACT},
                           tensors={"weight": TensorRole("float32", ("oc", "k"), values="finite"), "bias": _BIAS}),
    "max_pool2d": OpSpec("maximum over each window (padding never wins); keeps the input's quantization", _U8,
                         attrs={"kernel": IntList(2, 1), "stride": IntList(2, 1), "padding": IntList(2, 0),
                                "dilation": IntList(2, 1), "ceil_mode": Bool()},
                         same_qparams=True),
    "avg_pool2d": OpSpec("mean over each window, requantized to the output", _U8,
                         attrs={"kernel": IntList(2, 1), "stride": IntList(2, 1), "padding": IntList(2, 0),
                                "ceil_mode": Bool(), "count_include_pad": Bool(), "divisor_override": Int(0)}),
    "adaptive_avg_pool2d": OpSpec("mean over PyTorch's adaptive windows to an (oh, ow) output, requantized", _U8,
                                  attrs={"output_size": IntList(2, 1)}),
    "resize": OpSpec("F.interpolate, nearest or bilinear, to a size, by scale factors, or to the H and W of a second "
                     "input; keeps the input's quantization", _U8, inputs=(1, 2),
                     attrs={"mode": Choice(("nearest", "bilinear")), "align_corners": Bool(), "size": IntList(2, 0),
                            "scale_h": Float(0.0, 2147483647.0), "scale_w": Float(0.0, 2147483647.0)},
                     same_qparams=True),
    "pad": OpSpec("constant padding of H and W with one code; keeps the input's quantization", _U8,
                  attrs={"padding": IntList(4, 0), "fill_code": Int(0, 255)}, same_qparams=True),
    "add": OpSpec("elementwise sum of two same-shape inputs, requantized (+ fused ReLU)", _U8, inputs=(2, 2),
                  attrs={"act": Choice(("none", "relu"))}),
    "sub": OpSpec("elementwise difference a - b of two same-shape inputs, requantized (+ fused ReLU)", _U8,
                  inputs=(2, 2), attrs={"act": Choice(("none", "relu"))}),
    "mul": OpSpec("elementwise product of two inputs of one shape, or of (N, C, H, W) and (N, C, 1, 1) in either "
                  "order, requantized", _U8, inputs=(2, 2)),
    "concat": OpSpec("inputs joined along an NCHW axis, each requantized to the output", _U8, inputs=(1, None),
                     attrs={"axis": Int(1, 3)}),
    "lut": OpSpec("y = table[x]: any unary function of uint8 codes (sigmoid, hardswish, ...)", _U8,
                  tensors={"table": TensorRole("uint8", (256,))}),
    "lut_channels": OpSpec("y[..., c] = table[c][x[..., c]]: a per-channel function of uint8 codes (PReLU)", _U8,
                           tensors={"table": TensorRole("uint8", ("c", 256))}),
    "layer_norm": OpSpec("each pixel's channels (each row of (N, F)) normalised to mean 0, variance 1, times weight "
                         "plus bias, requantized", _U8, attrs={"eps": Float(1e-30, 1e30)},
                         tensors={"weight": TensorRole("float32", ("c",), values="finite"),
                                  "bias": TensorRole("float32", ("c",), values="finite")}),
    "group_norm": OpSpec("per image and group of channels, normalised over the group's channels and all pixels, "
                         "times weight plus bias per channel, requantized", _U8,
                         attrs={"eps": Float(1e-30, 1e30), "groups": Int(1)},
                         tensors={"weight": TensorRole("float32", ("c",), values="finite"),
                                  "bias": TensorRole("float32", ("c",), values="finite")}),
    "reduce": OpSpec("sum or mean over NCHW dims of the input, requantized; keepdim keeps them as size 1, else "
                     "two dims of a rank-4 input leave (N, the other dim)", _U8,
                     attrs={"mode": Choice(("mean", "sum")), "dims": Dims(), "keepdim": Bool()}),
    "flatten": OpSpec("(N, C, H, W) -> (N, C*H*W) in NCHW order; keeps the dtype and quantization",
                      _U8 + _F32, same_qparams=True),
    "gather_channels": OpSpec("output channel i is input channel index[i] (channel shuffle, chunks, slices); keeps "
                              "the dtype and quantization", _U8 + _F32,
                              tensors={"index": TensorRole("int32", ("c",), values="index")}, same_qparams=True),
    "softmax": OpSpec("softmax over the channels / features (dim 1), in float32", _F32, attrs={"dim": Int(1, 1)}),
    "log_softmax": OpSpec("log of softmax over dim 1, in float32", _F32, attrs={"dim": Int(1, 1)}),
    "unary_float": OpSpec("y = fn(x) elementwise in float32 (a function kept in float); a, b are fn's parameters "
                          "(hardtanh: min, max; leaky_relu: slope; scale_shift: x * a + b), else 0", _F32,
                          attrs={"fn": Choice(UNARY_FLOAT_FUNCTIONS), "a": Float(-_FLOAT32_MAX, _FLOAT32_MAX),
                                 "b": Float(-_FLOAT32_MAX, _FLOAT32_MAX)}),
    "binary_float": OpSpec("a + b, a - b or a * b in float32 of two inputs of one shape (mul: also (N, C, H, W) and "
                           "(N, C, 1, 1) in either order)", _F32, inputs=(2, 2),
                           attrs={"fn": Choice(("add", "sub", "mul"))}),
    "layer_norm_float": OpSpec("layer_norm in float32 (over the features of each token of (N, S, F))", _F32,
                               attrs={"eps": Float(1e-30, 1e30)},
                               tensors={"weight": TensorRole("float32", ("c",), values="finite"),
                                        "bias": TensorRole("float32", ("c",), values="finite")}),
    # A transformer encoder (docs/quantization.md, "Transformer encoders"): float32 (N, S, F) activations.
    "embedding": OpSpec("(N, S) int64 token ids -> (N, S, F): (word[id] + token_type[0]) + position[s]; the word "
                        "table float32 (word) or int8 per id (word_q, word_scale)", (("int64", "float32"),),
                        tensors={"word": TensorRole("float32", ("vocab", "f"), required=False, values="finite"),
                                 "word_q": TensorRole("int8", ("vocab", "f"), required=False, values="int8_symmetric"),
                                 "word_scale": TensorRole("float32", ("vocab",), required=False, values="positive"),
                                 "position": TensorRole("float32", ("positions", "f"), values="finite"),
                                 "token_type": TensorRole("float32", ("types", "f"), required=False, values="finite")}),
    "attention_bias": OpSpec("(N, S) int64 attention mask of 0/1 -> the additive bias (0 or float32's lowest)",
                             (("int64", "float32"),)),
    "attention": OpSpec("multi-head attention of q, k, v (N, S, F) with the (N, S) additive bias: softmax(q k^T * "
                        "scale + bias) v per head, in float32; inputs q, k, v, bias, or qkv (N, S, 3F: q, k and v "
                        "as column blocks) and bias", _F32, inputs=(2, 4),
                        attrs={"heads": Int(1), "scale": Float(1e-30, 1e30)}),
    "linear_dynamic": OpSpec("y = x w^T + bias on (N, K) or (N, S, K) float32, each row (times in_scale per "
                             "feature) quantized to uint8 at run time (or with the static x_scale, x_zero_point), int32 accumulation "
                             "(+ fused GELU)", _F32, attrs={"act": Choice(("none", "gelu"))},
                             tensors={"weight": TensorRole("int8", ("oc", "k"), values="int8_symmetric"),
                                      "w_scale": _W_SCALE, "bias": _BIAS,
                                      "in_scale": TensorRole("float32", ("k",), required=False, values="positive"),
                                      # The static option: one calibrated scale and zero point for every row.
                                      "x_scale": TensorRole("float32", (1,), required=False, values="positive"),
                                      "x_zero_point": TensorRole("uint8", (1,), required=False)}),
}


# --- bytes ----------------------------------------------------------------------------------------

def write(path, graph, tensors):
    """Validate `graph` and `tensors` (dict name -> ndarray) and write them to `path` as a .qnn file;
    returns its sha256."""
    validate(graph, tensors)  # before the file is opened: a bad graph never truncates it
    data, digest = _sealed(graph, tensors)
    with open(path, "wb") as f:
        f.write(data)
    return digest


def read(path):
    """The (graph, tensors) a .qnn file holds; FormatError naming the field if anything is wrong."""
    with open(path, "rb") as f:
        graph, tensors, _ = _read_open(f.fileno())
        return graph, tensors


def read_kept_open(path):
    """read(), and the file as a SourceFile to read again later (None where it cannot stay open: not a
    regular file, or this process already keeps many open), so its bytes need not stay in memory."""
    with open(path, "rb") as f:
        graph, tensors, digest = _read_open(f.fileno())
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode) or SourceFile.open_count >= SourceFile.limit():
            return graph, tensors, None
        return graph, tensors, SourceFile(os.dup(f.fileno()), digest)


def _read_open(fd):
    """(graph, tensors, the file's sha256) of the .qnn file open at fd, read from its start."""
    # A file that is not a .qnn usually fails here, before it is read whole.
    size = os.fstat(fd).st_size
    header_length = _header_length(os.pread(fd, 8, 0) if size >= 8 else b"", size)
    header_bytes = bytearray(header_length)
    _pread_exact(fd, memoryview(header_bytes), 8)
    data_start = 8 + header_length
    header, metadata, layout = _parse_header(header_bytes, size - data_start)
    hasher = _hasher(header, metadata)
    # An array per tensor, not views of one buffer, so each can go on its own (a model whose engine
    # borrows its word table keeps only that); uninitialised, as the read fills it.
    arrays = {}
    for name, (dtype, shape, begin, _) in sorted(layout.items(), key=lambda item: item[1][2:]):
        array = np.empty(shape, dtype)
        raw = array.reshape(-1).view(np.uint8)
        _pread_exact(fd, raw, data_start + begin)
        hasher.update(raw)  # in file order: the layout tiles the data section
        arrays[name] = array
    _check_digest(hasher, metadata)
    graph = _loads(metadata["graph"], "__metadata__.graph")
    tensors = {name: arrays[name] for name in layout}
    validate(graph, tensors)
    return graph, tensors, metadata["sha256"]


def _pread_exact(fd, buffer, offset):
    """Fills `buffer` from `offset` of fd, which stays where it is (models may share the file)."""
    done, size = 0, len(buffer)
    while done < size:
        if hasattr(os, "preadv"):
            n = os.preadv(fd, [buffer[done:]], offset + done)
        else:
            chunk = os.pread(fd, size - done, offset + done)
            n = len(chunk)
            buffer[done:done + n] = chunk
        if n == 0:
            raise FormatError("header length: the file changed size while it was read")
        done += n


class SourceFile:
    """A loaded .qnn file, kept open so its bytes can be read again (Model.save, pickling) instead of
    held in memory beside the engine's packed weights. Reading it again checks that it still holds
    the model that was loaded: renaming or deleting it does not matter (the open file stays), but a
    file rewritten in place raises FormatError."""
    __slots__ = ("_fd", "_digest", "_close", "__weakref__")
    open_count = 0

    def __init__(self, fd, digest):
        self._fd, self._digest = fd, digest
        SourceFile.open_count += 1
        self._close = weakref.finalize(self, SourceFile._release, fd)

    @staticmethod
    def _release(fd):
        SourceFile.open_count -= 1
        os.close(fd)

    @staticmethod
    def limit():
        """How many files loaded models may keep open: a quarter of the descriptors the process may
        open (at most 256), so the rest of the program keeps its own; beyond it, bytes stay in memory."""
        try:
            import resource
            soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        except (ImportError, OSError, ValueError):
            return 0
        return 256 if soft == resource.RLIM_INFINITY else min(256, soft // 4)

    def read(self):
        """(graph, tensors) as at load, read into fresh arrays; FormatError if the file no longer holds
        that model."""
        try:
            with warnings.catch_warnings():  # a format-1 file warned once, at load
                warnings.simplefilter("ignore", FormatWarning)
                graph, tensors, digest = _read_open(self._fd)
        except FormatError as e:
            raise FormatError(f"the model's .qnn file changed since it was loaded ({e}); load it again") from None
        if digest != self._digest:
            raise FormatError(f"the model's .qnn file was rewritten since it was loaded (sha256 {digest}, "
                              f"loaded {self._digest}); load it again")
        return graph, tensors

    def follow_rewrite(self, path, digest):
        """After this model was saved to `path` as a file of this sha256: if that is this very file, it
        now holds the bytes save() wrote, which are the ones to expect from now on."""
        try:
            same = os.path.samestat(os.fstat(self._fd), os.stat(path))
        except OSError:  # gone again already: nothing to follow
            return
        if same:
            self._digest = digest


def to_bytes(graph, tensors):
    """The .qnn file for `graph` and `tensors`, after validate(); the same inputs give the same bytes."""
    validate(graph, tensors)
    return _encode(graph, tensors)


def _encode(graph, tensors):
    """The bytes of a .qnn file holding `graph` and `tensors`, sealed with its hash but NOT validated
    (to_bytes validates first; the fuzzer uses this to make well-sealed bad files)."""
    return _sealed(graph, tensors)[0]


def _sealed(graph, tensors):
    """_encode's bytes and the sha256 they are sealed with."""
    from . import __version__  # lazily: qruntime/__init__.py imports this module

    entries, chunks, offset = {}, [], 0
    for name in sorted(tensors):
        array = tensors[name]
        code = _CODES[array.dtype]
        chunk = np.ascontiguousarray(array, dtype=_DTYPES[code]).tobytes()
        entries[name] = {"dtype": code, "shape": list(array.shape), "data_offsets": [offset, offset + len(chunk)]}
        chunks.append(chunk)
        offset += len(chunk)
    data = b"".join(chunks)
    entries["__metadata__"] = {"qnn_format": FORMAT_VERSION, "producer": f"qruntime {__version__}",
                               "graph": _dumps(graph)}
    digest = entries["__metadata__"]["sha256"] = _digest(entries, data)
    header = _dumps(entries).encode("utf-8")
    header += b" " * (-len(header) % 8)  # as safetensors pads: the data section starts 8-byte aligned
    return struct.pack("<Q", len(header)) + header + data, digest


def from_bytes(data):
    """The (graph, tensors) held by the bytes of a .qnn file; FormatError naming the field if anything
    is wrong. The tensors are fresh, writable arrays (not views of `data`)."""
    try:
        view = memoryview(data).cast("B")
    except TypeError as e:
        raise TypeError(f"data must be contiguous bytes-like, got {type(data).__name__}") from e
    header_length = _header_length(view[:8], len(view))
    data_start = 8 + header_length
    header, metadata, layout = _parse_header(view[8:data_start], len(view) - data_start)
    hasher = _hasher(header, metadata)
    hasher.update(view[data_start:])
    _check_digest(hasher, metadata)
    graph = _loads(metadata["graph"], "__metadata__.graph")
    tensors = {name: np.frombuffer(view[data_start + begin:data_start + end], dtype=dtype).reshape(shape).copy()
               for name, (dtype, shape, begin, end) in layout.items()}
    validate(graph, tensors)
    return graph, tensors


def _parse_header(header_bytes, data_size):
    """(header, checked __metadata__, tensor layout) of the header's bytes, before a data section of data_size bytes."""
    try:
        header_text = bytes(header_bytes).decode("utf-8")
    except UnicodeDecodeError as e:
        raise FormatError(f"header: not UTF-8 text ({e.reason} at byte {8 + e.start})") from e
    header = _loads(header_text, "header")
    if not isinstance(header, dict):
        raise FormatError(f"header: must be a JSON object, got {type(header).__name__}")
    metadata = _metadata(header.get("__metadata__"))
    return header, metadata, _layout({k: v for k, v in header.items() if k != "__metadata__"}, data_size)


def _hasher(header, metadata):
    """A SHA-256 fed what the file's hash covers before its data: format 2, the canonical header; format 1, nothing."""
    return hashlib.sha256() if metadata["qnn_format"] == "1" else _header_hasher(header)


def _header_hasher(header):
    """A SHA-256 fed the canonical header (without __metadata__.sha256): format 2's hash before the data."""
    canonical = dict(header)
    canonical["__metadata__"] = {k: v for k, v in header["__metadata__"].items() if k != "sha256"}
    return hashlib.sha256(_dumps(canonical).encode("utf-8"))


def _check_digest(hasher, metadata):
    """FormatError unless the hash (fed the data too) is the header's; warns that format 1 covers less."""
    covered = "the tensor data" if metadata["qnn_format"] == "1" else "the header and tensor data"
    digest = hasher.hexdigest()
    if digest != metadata["sha256"]:
        raise FormatError(f"sha256: {covered} hash to {digest}, the header says {metadata['sha256']} "
                          "(the file is corrupt or was edited)")
    if metadata["qnn_format"] == "1":
        warnings.warn("this .qnn file is format 1: its sha256 covers the tensor data only, so an edit of its "
                      "graph would go unnoticed; Model.save() rewrites it as format 2, which covers both",
                      FormatWarning, stacklevel=4)


def _digest(header, data):
    """The format-2 hash: SHA-256 of the canonical header (without __metadata__.sha256), then the data."""
    h = _header_hasher(header)
    h.update(data)
    return h.hexdigest()


def _header_length(first8, size):
    """The header length the first 8 bytes claim, checked against the file's size."""
    if size < 8:
        raise FormatError(f"header length: the file is {size} bytes, shorter than the 8-byte header length "
                          "(truncated, or not a .qnn file)")
    (length,) = struct.unpack("<Q", first8)
    if length > size - 8:
        raise FormatError(f"header length: {length} bytes claimed, but only {size - 8} follow "
                          "(truncated, or not a .qnn file)")
    return length


def _metadata(metadata):
    """The checked __metadata__ object: the magic (qnn_format), the version, the other keys."""
    if not isinstance(metadata, dict) or "qnn_format" not in metadata:
        raise FormatError("not a .qnn file: the header has no __metadata__.qnn_format "
                          "(a safetensors file from something else?)")
    version = metadata["qnn_format"]
    if version not in SUPPORTED_VERSIONS:
        raise FormatError(f"__metadata__.qnn_format: unknown version {_show(version)}; this reader supports "
                          + ", ".join(repr(v) for v in SUPPORTED_VERSIONS))
    for key in _METADATA_KEYS:
        if not isinstance(metadata.get(key), str):
            raise FormatError(f"__metadata__.{key}: missing or not a string")
    for key in metadata:
        if key not in _METADATA_KEYS:
            raise FormatError(f"__metadata__.{_field(key)}: unknown key (format {version} has "
                              + ", ".join(_METADATA_KEYS) + ")")
    sha = metadata["sha256"]
    if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        raise FormatError(f"__metadata__.sha256: must be 64 lowercase hex digits, got {_show(sha)}")
    return metadata


def _layout(header, data_size):
    """name -> (numpy dtype, shape, begin, end) for each tensor entry, checked to tile the data section."""
    layout = {}
    for name, entry in header.items():
        where = f"tensor {_show(name)}"
        _keys(entry, where, ("dtype", "shape", "data_offsets"))
        code = entry["dtype"]
        if not (isinstance(code, str) and code in _DTYPES):
            raise FormatError(f"{where} dtype: unknown {_show(code)} (a .qnn holds " + ", ".join(_DTYPES) + ")")
        shape = entry["shape"]
        if not (isinstance(shape, list) and all(_is_int(d) and d >= 0 for d in shape)):
            raise FormatError(f"{where} shape: must be a list of non-negative ints, got {_show(shape)}")
        offsets = entry["data_offsets"]
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_int(o) for o in offsets)
                and 0 <= offsets[0] <= offsets[1]):
            raise FormatError(f"{where} data_offsets: must be [begin, end] with 0 <= begin <= end, "
                              f"got {_show(offsets)}")
        begin, end = offsets
        needed = _DTYPES[code].itemsize * math.prod(shape)
        if end - begin != needed:
            raise FormatError(f"{where} data_offsets: [{begin}, {end}] hold {end - begin} bytes, "
                              f"but {code} {shape} needs {needed}")
        if end > data_size:
            raise FormatError(f"{where} data_offsets: end {end} is past the data section ({data_size} bytes): "
                              "the file is truncated")
        layout[name] = (_DTYPES[code], tuple(shape), begin, end)
    position, previous = 0, None
    for name, (_, _, begin, end) in sorted(layout.items(), key=lambda item: item[1][2:]):
        if begin < position:
            raise FormatError(f"tensor {_show(name)} data_offsets: [{begin}, {end}] overlaps tensor {_show(previous)}")
        if begin > position:
            raise FormatError(f"tensor {_show(name)} data_offsets: a gap of {begin - position} bytes before it")
        position, previous = end, name
    if position != data_size:
        raise FormatError(f"data section: its last {data_size - position} bytes belong to no tensor")
    return layout


def _dumps(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


def _loads(text, where):
    try:
        return json.loads(text, object_pairs_hook=_object_without_duplicates, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as e:
        raise FormatError(f"{where}: not valid JSON ({e})") from e


def _object_without_duplicates(pairs):
    # json.loads keeps the last of duplicate keys; a file that says two things about one name is bad.
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen = set()
        duplicate = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise ValueError(f"duplicate key {_show(duplicate)}")
    return obj


def _reject_constant(name):
    raise ValueError(f"{name} is not a JSON number")


# --- the graph ------------------------------------------------------------------------------------

def validate(graph, tensors):
    """Check a graph (the JSON-able dict of docs/format.md) and its tensors (dict name -> ndarray)
    against the schema; FormatError naming the first bad field. Used by write and read."""
    if isinstance(graph, dict) and "quantization" in graph:
        _check_quantization(graph["quantization"])
    optional = ("quantization", "output_keys")  # records a file may hold; files without them load too
    _keys({k: v for k, v in graph.items() if k not in optional} if isinstance(graph, dict) else graph, "graph",
          ("inputs", "outputs", "values", "ops"))
    if not isinstance(tensors, dict):
        raise FormatError(f"tensors: must be a dict name -> numpy array, got {type(tensors).__name__}")
    for name, array in tensors.items():
        if not isinstance(name, str) or not name or name == "__metadata__":
            raise FormatError(f"tensor {_show(name)}: a name must be a non-empty string other than '__metadata__'")
        if not isinstance(array, np.ndarray):
            raise FormatError(f"tensor {name!r}: must be a numpy array, got {type(array).__name__}")
        if array.dtype not in _CODES:
            raise FormatError(f"tensor {name!r} dtype: {array.dtype} cannot be stored (int8, uint8, float32, int32)")

    values = graph["values"]
    if not isinstance(values, dict):
        raise FormatError(f"values: must be an object name -> value, got {type(values).__name__}")
    for name, value in values.items():
        _check_value(name, value)

    defined = _check_inputs(graph["inputs"], values)
    used = set(defined)
    produced = set()
    referenced = set()
    ops = graph["ops"]
    if not isinstance(ops, list):
        raise FormatError(f"ops: must be a list, got {type(ops).__name__}")
    for i, op in enumerate(ops):
        where = f"ops[{i}]"
        _keys(op, where, ("op", "name", "inputs", "outputs", "attrs", "tensors"))
        kind = op["op"]
        if not (isinstance(kind, str) and kind in OPS):
            raise FormatError(f"{where}.op: unknown op {_show(kind)} (known: " + ", ".join(OPS) + ")")
        if not (isinstance(op["name"], str) and op["name"]):
            raise FormatError(f"{where}.name: must be a non-empty string, got {_show(op['name'])}")
        spec = OPS[kind]
        label = f"({kind} {op['name']!r})"
        _check_op_values(op, spec, where, label, values, defined)
        output = op["outputs"][0]
        defined.add(output)
        produced.add(output)
        used.update(op["inputs"], op["outputs"])
        _check_attrs(op["attrs"], spec, where, label)
        if kind == "resize":
            _check_resize_size(op, where, label)
        if kind == "embedding":
            _check_word_table(op, where, label)
        if kind == "linear_dynamic":
            _check_static_input(op, where, label)
        if kind == "attention" and len(op["inputs"]) == 3:
            raise FormatError(f"{where}.inputs: attention takes q, k, v and the bias, or qkv and the bias; got 3 "
                              f"inputs {label}")
        referenced.update(_check_op_tensors(op, spec, where, label, tensors))

    outputs = graph["outputs"]
    if not (isinstance(outputs, list) and outputs):
        raise FormatError(f"outputs: must be a non-empty list of value names, got {_show(outputs)}")
    for j, name in enumerate(outputs):
        if not (isinstance(name, str) and name in produced):
            raise FormatError(f"outputs[{j}]: {_show(name)} is not produced by any op")
        if values[name]["dtype"] != "float32":
            raise FormatError(f"outputs[{j}]: {name!r} is {values[name]['dtype']}; graph outputs are float32 "
                              "(end with dequantize)")
        if name in outputs[:j]:
            raise FormatError(f"outputs[{j}]: {name!r} is listed twice")
    if "output_keys" in graph:
        _check_output_keys(graph["output_keys"], len(outputs))

    bits = graph.get("quantization", {}).get("weight_bits", 8)
    if bits == 7:
        for i, op in enumerate(ops):
            if op["op"] in ("conv2d", "linear") and np.abs(tensors[op["tensors"]["weight"]].astype(np.int16)).max() > 64:
                raise FormatError(f"ops[{i}].tensors.weight: quantization.weight_bits is 7 but the weights leave "
                                  f"[-64, 64] ({op['op']} {op['name']!r})")
    for name in values:
        if name not in used:
            raise FormatError(f"values[{name!r}]: not used by any op or graph input")
    for name in tensors:
        if name not in referenced:
            raise FormatError(f"tensor {name!r}: not referenced by any op")


QUANTIZATION_METHODS = ("minmax", "percentile", "mse", "entropy")


_OPTIONAL_QUANTIZATION_FLAGS = ("bias_correction", "cross_layer_equalization")


def _check_quantization(q):
    """The optional graph.quantization record: how the converter made the file (files without it load too).
    bias_correction and cross_layer_equalization are optional too (files made before they existed lack them)."""
    for flag in _OPTIONAL_QUANTIZATION_FLAGS:
        if isinstance(q, dict) and flag in q:
            if not isinstance(q[flag], bool):
                raise FormatError(f"quantization.{flag}: must be true or false, got {_show(q[flag])}")
            q = {k: v for k, v in q.items() if k != flag}
    _keys(q, "quantization", ("weight_bits", "method", "per_channel"))
    if not (_is_int(q["weight_bits"]) and q["weight_bits"] in (7, 8)):
        raise FormatError(f"quantization.weight_bits: must be 7 or 8, got {_show(q['weight_bits'])}")
    if q["method"] not in QUANTIZATION_METHODS:
        raise FormatError(f"quantization.method: must be one of {', '.join(QUANTIZATION_METHODS)}, "
                          f"got {_show(q['method'])}")
    if not isinstance(q["per_channel"], bool):
        raise FormatError(f"quantization.per_channel: must be true or false, got {_show(q['per_channel'])}")


def _check_output_keys(keys, count):
    """The optional graph.output_keys: the model returned a dict; its keys, one per output, in order."""
    if not (isinstance(keys, list) and len(keys) == count):
        raise FormatError(f"output_keys: must be a list of {count} keys, one per output, got {_show(keys)}")
    for j, key in enumerate(keys):
        if not (isinstance(key, str) and key):
            raise FormatError(f"output_keys[{j}]: must be a non-empty string, got {_show(key)}")
        if key in keys[:j]:
            raise FormatError(f"output_keys[{j}]: {key!r} is listed twice")


def _check_value(name, value):
    where = f"values[{_show(name)}]"
    if not (isinstance(name, str) and name):
        raise FormatError(f"{where}: a value name must be a non-empty string")
    dtype = value.get("dtype") if isinstance(value, dict) else None
    if dtype in ("float32", "int64"):  # int64: token ids and masks, graph inputs only
        _keys(value, where, ("dtype",))
    elif dtype == "uint8":
        _keys(value, where, ("dtype", "scale", "zero_point"))
        scale = value["scale"]
        if not (_is_number(scale) and _FLOAT32_TINY <= scale <= _FLOAT32_MAX):
            raise FormatError(f"{where}.scale: must be a finite number > 0 (a normal float32), got {_show(scale)}")
        zero_point = value["zero_point"]
        if not (_is_int(zero_point) and 0 <= zero_point <= 255):
            raise FormatError(f"{where}.zero_point: must be an int in [0, 255], got {_show(zero_point)}")
    else:
        raise FormatError(f"{where}.dtype: must be 'float32', 'uint8' or 'int64', got {_show(dtype)}")


def _check_inputs(inputs, values):
    """The graph inputs' names, after checking each input's entry."""
    if not (isinstance(inputs, list) and inputs):
        raise FormatError(f"inputs: must be a non-empty list, got {_show(inputs)}")
    names = set()
    for j, entry in enumerate(inputs):
        where = f"inputs[{j}]"
        _keys(entry, where, ("name", "shape"))
        name = entry["name"]
        if not (isinstance(name, str) and name in values):
            raise FormatError(f"{where}.name: {_show(name)} has no entry in values")
        if values[name]["dtype"] not in ("float32", "int64"):
            raise FormatError(f"{where}.name: {name!r} is {values[name]['dtype']}; graph inputs are float32 or int64")
        if name in names:
            raise FormatError(f"{where}.name: {name!r} is listed twice")
        names.add(name)
        shape = entry["shape"]
        if not (isinstance(shape, list) and len(shape) in (2, 3, 4) and shape[0] == -1
                and all(_is_int(d) and (d == -1 or 1 <= d <= _INT32_MAX) for d in shape)):
            raise FormatError(f"{where}.shape: must be a list of 2 to 4 ints, each >= 1 or -1 (dynamic), "
                              f"batch first and -1, got {_show(shape)}")
    return names


def _check_op_values(op, spec, where, label, values, defined):
    """The op's inputs and output: names, counts, definition order, dtypes and quantization."""
    inputs, outputs = op["inputs"], op["outputs"]
    least, most = spec.inputs
    if not (isinstance(inputs, list) and least <= len(inputs) and (most is None or len(inputs) <= most)):
        count = f"{least}" if least == most else f"at least {least}" if most is None else f"{least} to {most}"
        raise FormatError(f"{where}.inputs: must be a list of {count} value names {label}, got {_show(inputs)}")
    if not (isinstance(outputs, list) and len(outputs) == 1):
        raise FormatError(f"{where}.outputs: must be a list of exactly one value name {label}, got {_show(outputs)}")
    for j, name in enumerate(inputs):
        if not isinstance(name, str):
            raise FormatError(f"{where}.inputs[{j}]: must be a value name, got {_show(name)} {label}")
        if name not in defined:  # (everything defined has an entry in values)
            raise FormatError(f"{where}.inputs[{j}]: value {name!r} is used before it is defined "
                              f"(no graph input or earlier op produces it) {label}")
    output = outputs[0]
    if not isinstance(output, str):
        raise FormatError(f"{where}.outputs[0]: must be a value name, got {_show(output)} {label}")
    if output in defined:
        raise FormatError(f"{where}.outputs[0]: value {output!r} is already defined (a value is produced once) {label}")
    if output not in values:
        raise FormatError(f"{where}.outputs[0]: value {output!r} has no entry in values {label}")

    takes = dict(spec.dtypes)
    in_dtype = values[inputs[0]]["dtype"]
    for j, name in enumerate(inputs):
        dtype = values[name]["dtype"]
        if dtype not in takes or dtype != in_dtype:
            wanted = " or ".join(takes) if j == 0 else in_dtype
            raise FormatError(f"{where}.inputs[{j}]: value {name!r} is {dtype}, {op['op']} takes {wanted} {label}")
    out_dtype = values[output]["dtype"]
    if out_dtype != takes[in_dtype]:
        raise FormatError(f"{where}.outputs[0]: value {output!r} is {out_dtype}, {op['op']} of {in_dtype} "
                          f"gives {takes[in_dtype]} {label}")
    if spec.same_qparams and out_dtype == "uint8":
        qparams = {k: values[inputs[0]][k] for k in ("scale", "zero_point")}
        if {k: values[output][k] for k in qparams} != qparams:
            raise FormatError(f"{where}.outputs[0]: value {output!r} must keep the quantization of {inputs[0]!r} "
                              f"({qparams}), {op['op']} does not requantize {label}")


def _check_attrs(attrs, spec, where, label):
    _keys(attrs, f"{where}.attrs", tuple(spec.attrs), label)
    for name, rule in spec.attrs.items():
        error = rule.error(attrs[name])
        if error:
            raise FormatError(f"{where}.attrs.{name}: {error}, got {_show(attrs[name])} {label}")
    # PyTorch's rule for pools: at most half the (undilated) kernel of padding.
    if "padding" in attrs and "kernel" in attrs:
        for axis in (0, 1):
            if attrs["padding"][axis] > attrs["kernel"][axis] // 2:
                raise FormatError(f"{where}.attrs.padding: {attrs['padding']} is more than half the kernel "
                                  f"{attrs['kernel']} {label}")
    # reduce: dropped dims leave a rank the engine holds (2) only when two dims of a rank-4 input go.
    if attrs.get("keepdim") is False and len(attrs["dims"]) != 2:
        raise FormatError(f"{where}.attrs.keepdim: false needs exactly two dims, got dims {attrs['dims']} {label}")


def _check_word_table(op, where, label):
    """An embedding's word table is float32 `word`, or int8 `word_q` with its `word_scale`: exactly one."""
    roles = set(op["tensors"]) if isinstance(op["tensors"], dict) else set()
    if not (roles >= {"word"} and not roles & {"word_q", "word_scale"}
            or roles >= {"word_q", "word_scale"} and "word" not in roles):
        raise FormatError(f"{where}.tensors: an embedding takes 'word', or 'word_q' with 'word_scale' {label}")


def _check_static_input(op, where, label):
    """linear_dynamic's static option takes x_scale and x_zero_point together."""
    roles = set(op["tensors"]) if isinstance(op["tensors"], dict) else set()
    if len(roles & {"x_scale", "x_zero_point"}) == 1:
        raise FormatError(f"{where}.tensors: 'x_scale' and 'x_zero_point' go together (the static input "
                          f"quantization) {label}")


def _check_resize_size(op, where, label):
    """A resize's output size comes from exactly one place: `size`, the scale factors, or a second input."""
    a = op["attrs"]
    sized, scaled = a["size"] != [0, 0], (a["scale_h"], a["scale_w"]) != (0.0, 0.0)
    if len(op["inputs"]) == 2:
        if sized or scaled:
            raise FormatError(f"{where}.attrs: a resize with a second input takes that input's H and W; size must be "
                              f"[0, 0] and scale_h, scale_w 0.0, got {a['size']}, {a['scale_h']}, {a['scale_w']} "
                              f"{label}")
    elif sized == scaled or (sized and 0 in a["size"]) or (scaled and 0.0 in (a["scale_h"], a["scale_w"])):
        raise FormatError(f"{where}.attrs: a resize needs either size [oh, ow] >= 1 (scales 0.0) or scale_h and "
                          f"scale_w > 0 (size [0, 0]), got size {a['size']}, scales {a['scale_h']}, {a['scale_w']} "
                          f"{label}")
    if a["mode"] == "nearest" and a["align_corners"]:
        raise FormatError(f"{where}.attrs.align_corners: only bilinear has it; must be false for nearest {label}")


def _check_op_tensors(op, spec, where, label, tensors):
    """The names of the tensors the op references, after checking each against its role."""
    roles = op["tensors"]
    if not isinstance(roles, dict):
        raise FormatError(f"{where}.tensors: must be an object role -> tensor name {label}, got {_show(roles)}")
    for role in roles:
        if role not in spec.tensors:
            known = ", ".join(spec.tensors) or "none"
            raise FormatError(f"{where}.tensors.{_field(role)}: unknown role for {op['op']} (known: {known}) {label}")
    dims = {}  # dimension name -> size, bound by the first role that has it (weight: oc)
    for role, rule in spec.tensors.items():
        if role not in roles:
            if rule.required:
                raise FormatError(f"{where}.tensors.{role}: required by {op['op']} {label}")
            continue
        name = roles[role]
        if not isinstance(name, str):
            raise FormatError(f"{where}.tensors.{role}: must be a tensor name, got {_show(name)} {label}")
        if name not in tensors:
            raise FormatError(f"{where}.tensors.{role}: missing tensor {name!r} (not in the file) {label}")
        array = tensors[name]
        what = f"tensor {name!r}"
        context = f"({op['op']} {role} in {where} {op['name']!r})"
        if array.dtype != np.dtype(rule.dtype):
            raise FormatError(f"{what} dtype: must be {rule.dtype}, got {array.dtype} {context}")
        expected = [f"{d}={dims[d]}" if d in dims else str(d) for d in rule.shape]
        fits = array.ndim == len(rule.shape) and all(
            size == d if isinstance(d, int) else size >= 1 and dims.setdefault(d, size) == size
            for size, d in zip(array.shape, rule.shape))
        if not fits:
            raise FormatError(f"{what} shape: must be ({', '.join(expected)}{',' * (len(expected) == 1)}), "
                              f"got {array.shape} {context}")
        if rule.values == "index" and array.min() < 0:
            raise FormatError(f"{what} values: channel indices are >= 0, this one holds {array.min()} {context}")
        if rule.values == "int8_symmetric" and array.min() < -127:
            raise FormatError(f"{what} values: int8 weights are in [-127, 127], this one holds -128 {context}")
        if rule.values in ("finite", "positive") and not np.isfinite(array).all():
            raise FormatError(f"{what} values: must be finite, holds NaN or inf {context}")
        if rule.values == "positive" and not (array > 0).all():
            raise FormatError(f"{what} values: must be > 0, holds {array.min()} {context}")
    channels = dims.get("oc", dims.get("c"))  # conv: the output channels; group_norm: the channels
    if "groups" in spec.attrs and channels % op["attrs"]["groups"]:
        raise FormatError(f"{where}.attrs.groups: {op['attrs']['groups']} does not divide the "
                          f"{channels} {'output channels of the weight' if 'oc' in dims else 'channels'} {label}")
    if "padding" in spec.attrs and "dilation" in spec.attrs and "weight" in roles:
        _check_conv_padding(op["attrs"], tensors[roles["weight"]].shape[2:], where, label)
    return set(roles.values())


def _check_conv_padding(attrs, kernel, where, label):
    """A conv's padding is smaller than its kernel's dilated extent on every side (docs/format.md,
    "Limits"): more only adds outputs that see no input, and would let a tiny file ask for any size."""
    for side, pad in zip(("top", "left", "bottom", "right"), attrs["padding"]):
        axis = 0 if side in ("top", "bottom") else 1
        extent = attrs["dilation"][axis] * (kernel[axis] - 1) + 1
        if pad >= extent:
            raise FormatError(f"{where}.attrs.padding: {pad} on the {side} is not smaller than the kernel's dilated "
                              f"extent {extent} (kernel {tuple(kernel)}, dilation {attrs['dilation']}) {label}")


def _keys(obj, where, keys, label=""):
    """`obj` is a dict with exactly `keys`."""
    suffix = f" {label}" if label else ""
    if not isinstance(obj, dict):
        raise FormatError(f"{where}: must be an object with keys {', '.join(keys) or '(none)'}, "
                          f"got {_show(obj)}{suffix}")
    for key in keys:
        if key not in obj:
            raise FormatError(f"{where}.{key}: missing{suffix}")
    for key in obj:
        if key not in keys:
            raise FormatError(f"{where}.{_field(key)}: unknown key (known: {', '.join(keys) or 'none'}){suffix}")


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value):
    return _is_int(value) or (isinstance(value, float) and math.isfinite(value))


def _field(key):
    """A key as the last part of a field path: bare if it is a plain string, else its repr."""
    return key if isinstance(key, str) and key.isprintable() and len(key) <= 60 else _show(key)


def _show(value, limit=60):
    """A repr short enough for a message, whatever the file holds."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."
