"""Model: a quantized graph bound to the C++ engine — run, inputs, outputs, summary, profile, save."""
import math
import warnings
from collections.abc import Mapping

import numpy as np

from . import _core, _limits, format as qnn_format

_INT_LIKE = (bool, int, np.integer)


def _engine_spec(graph, tensors):
    """The graph as the plain lists _core.Engine takes (value indices instead of names)."""
    index = {name: i for i, name in enumerate(graph["values"])}
    values = []
    for v in graph["values"].values():
        values.append((v["dtype"], float(v.get("scale", 1.0)), int(v.get("zero_point", 0))))
    ops = []
    for op in graph["ops"]:
        ints, strs, floats = {}, {}, {}
        for key, val in op["attrs"].items():
            if isinstance(val, str):
                strs[key] = val
            elif isinstance(val, (float, np.floating)):
                floats[key] = float(val)
            elif isinstance(val, _INT_LIKE):
                ints[key] = [int(val)]
            else:
                ints[key] = [int(x) for x in val]
        # Contiguous and aligned: a tensor viewed in the file's bytes may start at any offset.
        arrays = {role: np.require(tensors[name], requirements=["C", "A"]) for role, name in op["tensors"].items()}
        ops.append((op["op"], op["name"], [index[v] for v in op["inputs"]], [index[v] for v in op["outputs"]],
                    ints, strs, floats, arrays))
    inputs = [index[i["name"]] for i in graph["inputs"]]
    shapes = [list(i["shape"]) for i in graph["inputs"]]
    return values, inputs, shapes, [index[o] for o in graph["outputs"]], ops


def _isa(isa):
    if isa is None:
        return ""
    known = _core.available_isas(True)
    if isa not in known:
        raise ValueError(f"isa must be one of {known} on this machine, got {isa!r}")
    return isa


def _read_array(x, name):
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # a torch tensor, without importing torch
        x = x.detach().cpu().numpy()
    try:
        return np.asarray(x)
    except Exception as e:  # noqa: BLE001 - anything numpy cannot read is a bad input
        raise ValueError(f"{name} cannot be read as an array: {e}") from None


def _as_float32(x, name):
    a = _read_array(x, name)
    if a.dtype.kind not in "biuf":
        raise ValueError(f"{name} has dtype {a.dtype}, which cannot be cast to float32")
    a = np.ascontiguousarray(a, dtype=np.float32)
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} holds NaN or inf; the model expects finite values")
    return a


def _as_int64(x, name):
    """Token ids and masks: integers only (a float array of ids is a mistake, not a cast)."""
    a = _read_array(x, name)
    if a.dtype.kind not in "biu":
        raise ValueError(f"{name} has dtype {a.dtype}; it takes integers (int64 token ids or a 0/1 mask)")
    if a.dtype.kind == "u" and a.size and a.max() > np.iinfo(np.int64).max:
        raise ValueError(f"{name} holds values beyond int64")
    return np.ascontiguousarray(a, dtype=np.int64)


class Model:
    """A quantized model ready to run. Build one with qruntime.load or qruntime.quantize."""

    def __init__(self, graph, tensors, *, isa=None, max_activation_bytes=None, _validated=False, _source=None):
        """isa: run on this ISA path (qruntime.available_isas(emulated=True)); default: the active one.
        max_activation_bytes: the most activation memory one run may take (default:
        qruntime.get_max_activation_bytes(), 4 GiB); a run that would need more raises ValueError."""
        if max_activation_bytes is None:
            max_activation_bytes = _limits.get_max_activation_bytes()
        self.max_activation_bytes = _limits.check_max_activation_bytes(max_activation_bytes)
        if not _validated:
            qnn_format.validate(graph, tensors)
        self._graph = graph
        self._tensor_bytes = {name: t.nbytes for name, t in tensors.items()}
        self._warned_integer = False
        spec = _engine_spec(graph, tensors)
        try:
            # A file's tensors, read for this build alone (the file stays open for later reads), go as
            # they are packed: a load then never holds them and their packed copies all at once.
            self._engine = _core.Engine(*spec, isa=_isa(isa), max_activation_bytes=self.max_activation_bytes,
                                        release_tensors=_source is not None)
        except ValueError as e:
            raise qnn_format.FormatError(str(e)) from None
        # The engine keeps its own (packed) copy of the tensors but those it borrows (a transformer's
        # word table), whose arrays the model keeps. It keeps the tensors too unless they can be read
        # again from a file kept open (qnn_format.SourceFile).
        arrays = [op[-1] for op in spec[-1]]  # each op's {role: the array the engine was given}
        self._borrowed = [arrays[i][role] for i, role in self._engine.borrowed_tensors()]
        self._source = _source
        self._held = tensors if _source is None else None

    @property
    def _tensors(self):
        """name -> array of the model's constants (for save, pickling, compare)."""
        return self._held if self._source is None else self._source.read()[1]

    @property
    def inputs(self):
        """[{"name", "shape" (None where any size goes), "dtype"}] of the graph inputs, NCHW."""
        values = self._graph["values"]
        return [{"name": i["name"], "shape": tuple(None if d == -1 else d for d in i["shape"]),
                 "dtype": values[i["name"]]["dtype"]} for i in self._graph["inputs"]]

    @property
    def outputs(self):
        """[{"name", "dtype"}] of the graph outputs (float32, NCHW); with "key" too when run returns a dict."""
        keys = self._graph.get("output_keys")
        return [{"name": o, "dtype": "float32", **({"key": keys[i]} if keys else {})}
                for i, o in enumerate(self._graph["outputs"])]

    @property
    def graph(self):
        return self._graph

    def _inputs(self, x):
        specs = self._graph["inputs"]
        if isinstance(x, Mapping):  # by input name, e.g. a tokenizer's {"input_ids": ..., "attention_mask": ...}
            names = [s["name"] for s in specs]
            if set(x) != set(names):
                raise ValueError(f"the model's inputs are {names}; got keys {sorted(map(str, x))}")
            x = [x[n] for n in names]
        xs = list(x) if isinstance(x, (list, tuple)) else [x]
        if len(xs) != len(specs):
            raise ValueError(f"the model takes {len(specs)} input(s), got {len(xs)}")
        arrays = []
        for spec, xi in zip(specs, xs):
            name = f"input {spec['name']!r}"
            dtype = self._graph["values"][spec["name"]]["dtype"]
            self._check_input_bytes(xi, name, dtype)
            if dtype == "int64":
                a = _as_int64(xi, name)
            else:
                self._warn_if_integer(xi, name)
                a = _as_float32(xi, name)
            want = spec["shape"]
            shown = "(" + ", ".join("N" if i == 0 else ("any" if d == -1 else str(d)) for i, d in enumerate(want)) + ")"
            if a.ndim != len(want):
                raise ValueError(f"{name} must be {len(want)}-D {shown}, got shape {a.shape}")
            if a.shape[0] == 0:
                raise ValueError(f"{name} has batch size 0")
            for axis, (got, exp) in enumerate(zip(a.shape, want)):
                if axis and exp != -1 and got != exp:
                    what = {1: "channels"}.get(axis, "size") if len(want) == 4 else "features"
                    raise ValueError(f"{name} has {got} {what} on axis {axis}; expected shape {shown}, got {a.shape}")
            arrays.append(a)
        int_inputs = [(s["name"], a.shape) for s, a in zip(specs, arrays) if a.dtype == np.int64]
        if len({shape for _, shape in int_inputs}) > 1:  # token ids and their mask go together
            raise ValueError("the integer inputs must have one shape (N, S); got "
                             + ", ".join(f"{n!r} {s}" for n, s in int_inputs))
        return arrays

    def _warn_if_integer(self, x, name):
        """Once per model: integer images (uint8 0-255) into a model calibrated on floats (often 0-1 or
        normalised) give wrong answers silently, as qruntime quantizes x as the floats it stands for."""
        dtype = getattr(x, "dtype", None)
        kind = getattr(dtype, "kind", None) or ("i" if str(dtype).startswith(("torch.int", "torch.uint")) else None)
        if kind in ("b", "i", "u") and not self._warned_integer:
            self._warned_integer = True
            warnings.warn(f"{name} is an integer array ({dtype}); the model takes the float values it was calibrated "
                          "on (e.g. images scaled to [0, 1] and normalised): convert x the same way first",
                          UserWarning, stacklevel=4)

    def _check_input_bytes(self, x, name, dtype="float32"):
        """Refuses an input whose float32 copy alone would pass the cap, before that copy is made."""
        shape = getattr(x, "shape", None)
        if isinstance(shape, tuple) and all(isinstance(d, int) for d in shape):
            nbytes = (8 if dtype == "int64" else 4) * math.prod(shape)
            if nbytes > self.max_activation_bytes:
                raise ValueError(f"{name} of shape {tuple(shape)} takes {nbytes} bytes as {dtype}, more than "
                                 f"max_activation_bytes ({self.max_activation_bytes} bytes); pass a larger "
                                 "max_activation_bytes to qruntime.load, or run smaller batches")

    def run(self, x):
        """float32 outputs for x (numpy array or torch tensor, NCHW, or a list of them): one C++ call.
        One output is an array, several a list; a model whose forward returned a dict gives {key: array}."""
        out = self._engine.run(self._inputs(x))
        keys = self._graph.get("output_keys")
        if keys is not None:
            return dict(zip(keys, out))
        return out[0] if len(out) == 1 else out

    def profile(self, x, repeat=10):
        """Per-op time over `repeat` runs: a list of dicts (op, name, shape, kernel, ms, share, gmacs)
        that prints as a table."""
        if isinstance(repeat, bool) or not isinstance(repeat, int) or repeat < 1:
            raise ValueError(f"repeat must be an int >= 1, got {repeat!r}")
        arrays = self._inputs(x)
        self._engine.run(arrays)  # plan and warm up outside the timing
        _, seconds = self._engine.profile(arrays, repeat)
        rows = self._op_rows([a.shape for a in arrays])
        total = sum(seconds) or 1.0
        for row, s in zip(rows, seconds):
            row["ms"] = 1e3 * s / repeat
            row["share"] = s / total
            row["gmacs"] = row["macs"] * repeat / s / 1e9 if s > 0 and row["macs"] else 0.0
        return Profile(rows)

    def _op_rows(self, input_shapes):
        shapes, _ = self._engine.value_shapes([list(s) for s in input_shapes])
        shape_of = dict(zip(self._graph["values"], shapes))
        info = self._engine.op_info([list(s) for s in input_shapes])
        rows = []
        for op, (kernel, macs) in zip(self._graph["ops"], info):
            out = op["outputs"][0]
            v = self._graph["values"][out]
            rows.append({
                "op": op["op"], "name": op["name"], "shape": shape_of[out], "kernel": kernel, "macs": macs,
                "scale": v.get("scale"), "zero_point": v.get("zero_point"),
                "weight_bytes": sum(self._tensor_bytes[t] for t in op["tensors"].values()),
            })
        return rows

    def summary(self, batch=1, input_shape=None):
        """The op table (op, name, output shape, output scale/zero point, MACs, weight bytes, kernel) with totals.

        input_shape: the (N, C, H, W) to show it for (a list of shapes for several inputs); needed
        when the model takes any H and W, else its own size at `batch`."""
        shapes = self.input_shapes(batch, input_shape)
        batch = shapes[0][0]
        rows = self._op_rows(shapes)
        head = f"{'op':<20} {'name':<28} {'output shape':<18} {'scale':>10} {'zp':>4} {'MACs':>12} {'weights':>10}  kernel"
        lines = [head, "-" * len(head)]
        for r in rows:
            scale = f"{r['scale']:.4g}" if r["scale"] is not None else "float"
            zp = str(r["zero_point"]) if r["zero_point"] is not None else ""
            lines.append(f"{r['op']:<20} {r['name'][:28]:<28} {str(r['shape']):<18} {scale:>10} {zp:>4} "
                         f"{r['macs']:>12,} {r['weight_bytes']:>10,}  {r['kernel']}")
        lines.append("-" * len(head))
        lines.append(f"{len(rows)} ops, {sum(r['macs'] for r in rows):,} MACs at batch {batch}, "
                     f"{sum(self._tensor_bytes.values()):,} bytes of constants")
        islands = self.float_ops()
        if islands:
            shown = ", ".join(islands[:8]) + (", ..." if len(islands) > 8 else "")
            lines.append(f"float islands: {len(islands)} op(s) run in float32 ({shown})")
        return "\n".join(lines)

    def float_ops(self):
        """Names of the ops that compute in float32 (layers kept in float, softmax): the float islands.
        A transformer's linear_dynamic is not one (its GEMM is int8, only its input and output are float)."""
        values = self._graph["values"]
        return [op["name"] for op in self._graph["ops"] if op["op"] not in ("quantize", "dequantize", "linear_dynamic")
                and values[op["outputs"][0]]["dtype"] == "float32"]

    def input_shapes(self, batch=1, input_shape=None):
        """The full input shapes for `batch` (or as `input_shape` gives them, checked against the model)."""
        specs = self._graph["inputs"]
        if input_shape is None:
            free = [s["name"] for s in specs if -1 in s["shape"][1:]]
            if free:
                raise ValueError(f"the model takes inputs of any height and width ({', '.join(map(repr, free))}): "
                                 "give input_shape, e.g. input_shape=(1, 3, 224, 224)")
            return [[batch] + list(s["shape"][1:]) for s in specs]
        shapes = [input_shape] if len(specs) == 1 and not isinstance(input_shape[0], (list, tuple)) else input_shape
        if len(shapes) != len(specs) or not all(isinstance(s, (list, tuple)) for s in shapes):
            raise ValueError(f"input_shape must be {len(specs)} shape(s), got {input_shape!r}")
        out = []
        for spec, shape in zip(specs, shapes):
            want = spec["shape"]
            if len(shape) != len(want) or not all(isinstance(d, int) and d >= 1 for d in shape) or any(
                    w not in (-1, d) for w, d in zip(want[1:], shape[1:])):
                shown = tuple("N" if i == 0 else "any" if d == -1 else d for i, d in enumerate(want))
                raise ValueError(f"input_shape {tuple(shape)} does not fit input {spec['name']!r} of shape {shown}")
            out.append(list(shape))
        return out

    def save(self, path):
        """Writes the model as a .qnn file (docs/format.md)."""
        digest = qnn_format.write(path, self._graph, self._tensors)
        if self._source is not None:
            self._source.follow_rewrite(path, digest)

    def __reduce__(self):
        """Pickles (and copies) as the .qnn file's bytes and max_activation_bytes: what save() writes
        and load() takes. Unpickling validates those bytes as qruntime.load validates a file (FormatError
        if they are wrong) and prepares the weights for the CPU it runs on. An `isa` given to Model()
        does not travel: it names a path of this CPU, which the receiving one may lack, and every path
        gives the same bits; the copy runs on its own active ISA. max_activation_bytes travels, so
        a worker keeps the memory cap its sender set."""
        return _unpickle, (qnn_format.to_bytes(self._graph, self._tensors), self.max_activation_bytes)

    def __repr__(self):
        return f"<qruntime.Model: {len(self._graph['ops'])} ops, inputs {[i['shape'] for i in self.inputs]}>"


def _unpickle(data, max_activation_bytes):
    """The Model a pickle holds (Model.__reduce__): the file's bytes read as load() reads a file."""
    graph, tensors = qnn_format.from_bytes(data)  # checks the hash, then validates the graph
    return Model(graph, tensors, max_activation_bytes=max_activation_bytes, _validated=True)


def load(path, threads=None, *, max_activation_bytes=None):
    """Reads and validates a .qnn file and prepares it for the CPU (weights prepacked for the active ISA).

    threads, if given, sets qruntime's thread count (shared by every model in the process).
    max_activation_bytes: the most activation memory one run may take (default
    qruntime.get_max_activation_bytes(), 4 GiB); a larger need raises ValueError naming the op."""
    if threads is not None:
        from .dispatch import set_num_threads
        set_num_threads(threads)
    graph, tensors, source = qnn_format.read_kept_open(path)
    # Validated by the read; the file stays open in place of its bytes in memory
    return Model(graph, tensors, max_activation_bytes=max_activation_bytes, _validated=True, _source=source)


class Profile(list):
    """Model.profile's rows (dicts: op, name, shape, kernel, macs, ms, share, gmacs, ...); prints as a table."""

    def __str__(self):
        head = f"{'op':<20} {'name':<28} {'output shape':<20} {'ms':>9} {'share':>7} {'rate':>14}  kernel"
        lines = [head, "-" * len(head)]
        for r in self:
            if r["macs"]:
                rate = f"{r['gmacs']:8.1f} GMAC/s"
            else:
                nbytes = math.prod(r["shape"]) * (1 if r["scale"] is not None else 4)
                rate = f"{nbytes / (r['ms'] * 1e6):8.2f} GB/s" if r["ms"] > 0 else ""
            lines.append(f"{r['op']:<20} {r['name'][:28]:<28} {str(r['shape']):<20} {r['ms']:9.4f} {r['share']:7.1%} "
                         f"{rate:>14}  {r['kernel']}")
        lines.append("-" * len(head))
        lines.append(f"total {sum(r['ms'] for r in self):.3f} ms over {len(self)} ops (GB/s counts output bytes)")
        return "\n".join(lines)
