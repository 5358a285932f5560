"""qruntime.compare: which layer of an int8 model lost the accuracy, measured against the float model it came from.

Per layer (each op of the .qnn graph whose output the float model also computes), on the given data:
- SQNR, dB: 10 log10(sum f^2 / sum (f - q)^2) between the float model's activation f and the int8
  model's dequantized value q, every layer before it in int8 too: the error as it has accumulated.
- sensitivity, dB: the model's output SQNR when that layer alone runs in int8 (its inputs quantized on
  their grids in the .qnn, everything else in float): the error the layer causes by itself.
- clipped: the share of f outside the layer's uint8 grid [(0 - zp) s, (255 - zp) s] by more than half
  a step, i.e. clamped rather than rounded: a range chosen too narrow for this data.

The values line up by name: a .qnn value is named after the torch.fx node that computes it in the
float model (convert/ir.py), with a suffix on the converter's copies (":q" a uint8 copy of a float
value, ":f" a float copy, ":relu" a float island's fused ReLU). Where the fx node holds the value in
another layout (ConvNeXt's channels-last view), trace.py records that layout on the node and it is
undone here. The int8 activations come from reference.run_graph (bit-identical to the engine), the
one-layer runs from reference.run_op, the output SQNR from Model.run itself.
"""
import functools
import json
import math

import numpy as np

from . import reference

_BOUNDARIES = ("quantize", "dequantize")  # conversions between a layer's dtype and its neighbour's: not layers
_COPY_SUFFIXES = (":q", ":f", ":relu")


def _sqnr(signal, noise):
    """10 log10(signal / noise) in dB; inf when there is no error at all, -inf for error on a zero signal."""
    if noise == 0.0:
        return math.inf
    if signal == 0.0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


class _Energy:
    """Running sums of a signal's and its error's energy over batches, in float64."""

    def __init__(self):
        self.signal = 0.0
        self.noise = 0.0

    def add(self, reference_values, values):
        for f, q in zip(reference_values, values):
            f = np.asarray(f, np.float64)
            self.signal += float(np.sum(f * f))
            self.noise += float(np.sum((f - np.asarray(q, np.float64)) ** 2))

    def db(self):
        return _sqnr(self.signal, self.noise)


def _flat_outputs(result):
    """The output tensors/arrays of a forward or Model.run, in graph order: one, a list/tuple, or a dict."""
    if isinstance(result, dict):
        return list(result.values())
    if isinstance(result, (list, tuple)):
        return list(result)
    return [result]


def _base_name(value):
    """The IR value (= fx node) name a .qnn value copies: "relu:q" -> "relu"."""
    for suffix in _COPY_SUFFIXES:
        if value.endswith(suffix):
            return value[:-len(suffix)]
    return value


class _FloatSource:
    """Where a .qnn value's float activation is in the float model: an fx node's output, with the layout
    trace.py recorded on it undone, reshaped to the value's shape (x.mean's pooled half is its flatten's)."""

    def __init__(self, node, scales=None):
        from .convert.trace import VIEW_META
        self.node = node.name
        self.layout = node.meta.get(VIEW_META)
        # per-channel divisors of a value cross-layer equalization rescaled (the IR's Graph.value_scales)
        self.scales = None if scales is None else np.asarray(scales, np.float32)

    def get(self, recorded, shape):
        """The float activation, float32, in the .qnn value's layout and `shape`."""
        a = recorded[self.node].numpy()
        if self.layout is not None:
            flat = self._flat(a)
            value = np.empty_like(flat)
            value[:, self.layout.index.ravel()] = flat
            a = value
        a = a.reshape(shape)
        return a if self.scales is None else a / self._channels(a)

    def _channels(self, a):
        return self.scales.reshape(1, -1, *[1] * (a.ndim - 2))

    def to_model(self, value, like):
        """A .qnn-layout array as the tensor the fx node outputs (shaped like `like`)."""
        import torch
        a = np.asarray(value, np.float32)
        if self.scales is not None:
            a = a * self._channels(a)
        if self.layout is not None:
            a = a.reshape(a.shape[0], -1)[:, self.layout.index.ravel()]
        return torch.from_numpy(np.ascontiguousarray(a).reshape(like.shape))

    def _flat(self, a):
        if a.shape[1:] != self.layout.index.shape:
            raise ValueError(f"data: a batch gives {self.node!r} the shape {a.shape[1:]} per image, the traced "
                             f"example {self.layout.index.shape}: give batches of one image size (or example_inputs "
                             "of theirs)")
        return a.reshape(a.shape[0], -1)


def _float_source(value, graph, nodes, value_scales):
    """(_FloatSource, None) for a .qnn value the float model computes, else (None, why not)."""
    values = graph["values"]
    if value + ":relu" in values:
        return None, "a float island's value before its fused ReLU: the model only holds the value after it"
    node = nodes.get(_base_name(value))
    if node is not None and node.op not in ("get_attr", "output"):
        return _FloatSource(node, value_scales.get(node.name)), None
    # A value the fx graph does not have (the pooled half of x.mean): the elements of its flatten reader's.
    readers = [op for op in graph["ops"] if value in op["inputs"]]
    if len(readers) == 1 and readers[0]["op"] == "flatten":
        node = nodes.get(_base_name(readers[0]["outputs"][0]))
        if node is not None:
            return _FloatSource(node), None
    return None, "the float model has no tensor of this value (the converter made it)"


@functools.cache
def _interpreter():
    import torch.fx

    class Run(torch.fx.Interpreter):
        """The float model with chosen node outputs recorded (copied as computed: a later in-place op may
        overwrite them) and chosen node outputs replaced."""

        def __init__(self, gm, record=(), replace=None):
            super().__init__(gm)
            self.record, self.replace, self.recorded = set(record), replace or {}, {}

        def run_node(self, n):
            if n.name in self.replace:
                return self.replace[n.name]
            out = super().run_node(n)
            if n.name in self.record and isinstance(out, torch.Tensor):
                self.recorded[n.name] = out.detach().clone()
            return out

    return Run


def _run_float(gm, x, record=(), replace=None):
    """(recorded fx outputs by node name, [output tensors]) of the float model on a batch x."""
    run = _interpreter()(gm, record, replace)
    out = run.run(x.clone())  # a copy: an in-place op on the input must not change x for the next run
    return run.recorded, [t.detach() for t in _flat_outputs(out)]


class _Layer:
    """One row being measured: an op of the .qnn graph, where its values are in the float model, its sums."""

    def __init__(self, position, op, graph, source, input_sources, note):
        self.position, self.op, self.source = position, op, source
        self.value = op["outputs"][0]
        q = graph["values"][self.value]
        self.dtype, self.scale, self.zero_point = q["dtype"], q.get("scale"), q.get("zero_point")
        self.input_sources = input_sources  # None: no sensitivity (note says why)
        self.note = note
        self.error = _Energy()
        self.sensitivity = _Energy()
        self.outside = 0
        self.count = 0

    def measure(self, recorded, ref):
        q = ref[self.value]
        f = self.source.get(recorded, q.shape).astype(np.float64)
        if self.dtype == "uint8":
            s = float(np.float32(self.scale))
            q = reference.dequantize(q, self.scale, self.zero_point)
            # Half a step past either end: clamped instead of rounded.
            lo, hi = (-self.zero_point - 0.5) * s, (255 - self.zero_point + 0.5) * s
            self.outside += int(np.count_nonzero((f < lo) | (f > hi)))
            self.count += f.size
        self.error.add([f], [q])

    def alone_in_int8(self, gm, x, graph, tensors, recorded, ref):
        """The float model's outputs on x with this layer's output taken from its int8 op alone."""
        xs = []
        for name, source in zip(self.op["inputs"], self.input_sources):
            v = graph["values"][name]
            xs.append(reference.quantize(source.get(recorded, ref[name].shape), v["scale"], v["zero_point"]))
        y = reference.run_op(graph, tensors, self.op, xs)
        y = reference.dequantize(y, self.scale, self.zero_point)
        _, outputs = _run_float(gm, x, replace={self.source.node: self.source.to_model(y, recorded[self.source.node])})
        return outputs

    def row(self):
        return {
            "position": self.position, "name": self.op["name"], "op": self.op["op"], "value": self.value,
            "dtype": self.dtype, "sqnr_db": self.error.db(),
            "sensitivity_db": self.sensitivity.db() if self.input_sources is not None else None,
            "clipped": self.outside / self.count if self.dtype == "uint8" and self.count else None,
            "scale": self.scale, "zero_point": self.zero_point, "note": self.note,
        }


def _plan(graph, gm, sensitivity, value_scales):
    """(layers to measure, skipped [{"name", "op", "value", "reason"}]) for the .qnn graph against the fx graph."""
    nodes = {n.name: n for n in gm.graph.nodes}
    values = graph["values"]
    layers, skipped = [], []
    for position, op in enumerate(graph["ops"]):
        if op["op"] in _BOUNDARIES:
            continue
        out = op["outputs"][0]
        source, why = _float_source(out, graph, nodes, value_scales)
        if source is None:
            skipped.append({"name": op["name"], "op": op["op"], "value": out, "reason": why})
            continue
        input_sources, note = None, None
        if values[out]["dtype"] != "uint8" or any(values[v]["dtype"] != "uint8" for v in op["inputs"]):
            note = "runs in float32 (a float island)"
        elif sensitivity:
            found = [_float_source(v, graph, nodes, value_scales) for v in op["inputs"]]
            missing = [v for v, (s, _) in zip(op["inputs"], found) if s is None]
            if missing:
                note = f"no sensitivity: the float model has no tensor of its input {missing[0]!r}"
            else:
                input_sources = [s for s, _ in found]
        layers.append(_Layer(position, op, graph, source, input_sources, note))
    return layers, skipped


def compare(model, qmodel, data, *, example_inputs=None, sensitivity=True):
    """Where an int8 model loses accuracy: each layer's SQNR, sensitivity and clipping against the float model.

    model: the float torch.nn.Module that qmodel was converted from (not modified).
    qmodel: a qruntime.Model, from qruntime.quantize or qruntime.load.
    data: the batches to measure on, as qruntime.quantize takes them (tensors, numpy arrays or (x, y)
        pairs; read once, so a generator works). A few hundred images are plenty.
    example_inputs: the input to trace the model with (default: the first batch).
    sensitivity: also run, per int8 layer, the float model with that layer alone in int8 (one float
        forward per layer and batch: the slow part; False skips it).

    Returns a Report: rows (worst first: by sensitivity where it was measured, else by SQNR), output_sqnr,
    skipped; print it for a table, to_json() for JSON, plot(path) for a chart of SQNR through the network.
    Each op of the .qnn graph is a row, except quantize/dequantize (their error shows in the rows after
    them) and values the float model has no tensor of (listed in skipped, with the reason). The int8
    activations are computed by qruntime.reference in numpy: slower than Model.run, bit for bit the same."""
    try:
        import torch
    except ImportError:
        raise ImportError("qruntime.compare runs the PyTorch model and needs torch: "
                          "pip install 'qruntime[torch]'") from None
    from .convert.calibrate import batches, first_and_rest
    from .convert.trace import trace
    from .model import Model

    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(qmodel, Model):
        raise TypeError(f"qmodel must be a qruntime.Model (from qruntime.quantize or qruntime.load), "
                        f"got {type(qmodel).__name__}")
    if not isinstance(sensitivity, bool):
        raise TypeError(f"sensitivity must be True or False, got {sensitivity!r}")
    graph, tensors = qmodel.graph, qmodel._tensors
    if len(graph["inputs"]) != 1:
        raise ValueError(f"qmodel takes {len(graph['inputs'])} inputs; compare feeds each batch of data to a model "
                         "with one input")
    first, items = first_and_rest(batches(data, "data"))
    if first is None:
        raise ValueError("data holds no batches")
    if example_inputs is None:
        example = first
    else:
        example = example_inputs[0] if isinstance(example_inputs, (tuple, list)) else example_inputs
        example = next(batches([example], "example_inputs"))
    ir, gm = trace(model, example)
    value_scales = {}
    if graph.get("quantization", {}).get("cross_layer_equalization"):
        from .convert import passes
        value_scales = passes.equalize(passes.run_all(ir)).value_scales  # the same scales quantize chose
    placeholders = [n.name for n in gm.graph.nodes if n.op == "placeholder"]
    if placeholders != [graph["inputs"][0]["name"]]:
        raise ValueError(f"qmodel's input {graph['inputs'][0]['name']!r} is not the input of model "
                         f"({', '.join(map(repr, placeholders))}): was qmodel converted from this model?")
    layers, skipped = _plan(graph, gm, sensitivity, value_scales)
    if not layers:
        raise ValueError("qmodel has no layer whose value model computes: was qmodel converted from this model?")
    record = {layer.source.node for layer in layers}
    record |= {s.node for layer in layers for s in layer.input_sources or ()}
    output = _Energy()
    images = 0
    with torch.no_grad():
        for x in items:
            recorded, float_out = _run_float(gm, x, record)
            ref = reference.run_graph(graph, tensors, [x.numpy()], keep=True)
            _check_shapes(layers, recorded, ref)
            float_out = [t.numpy() for t in float_out]
            output.add(float_out, _flat_outputs(qmodel.run(x.numpy())))
            for layer in layers:
                layer.measure(recorded, ref)
                if layer.input_sources is not None:
                    alone = layer.alone_in_int8(gm, x, graph, tensors, recorded, ref)
                    layer.sensitivity.add(float_out, [t.numpy() for t in alone])
            images += x.shape[0]
    return Report([layer.row() for layer in layers], output.db(), skipped, images)


def _check_shapes(layers, recorded, ref):
    """A value whose two sides hold different numbers of elements means qmodel is another model's."""
    for layer in layers:
        got, want = recorded[layer.source.node], ref[layer.value]
        if got.numel() != want.size:
            raise ValueError(f"qmodel's value {layer.value!r} has shape {tuple(want.shape)} but model's tensor "
                             f"{layer.source.node!r} has {tuple(got.shape)}: was qmodel converted from this model?")


def _worst_first(rows):
    """Rows with a sensitivity first, lowest first; then the others by SQNR, lowest first."""
    def key(row):
        s = row["sensitivity_db"]
        return (0, s, row["position"]) if s is not None else (1, row["sqnr_db"], row["position"])
    return sorted(rows, key=key)


def _db(value, width):
    return f"{'-':>{width}}" if value is None else f"{value:{width}.1f}"


def _json_number(value):
    """JSON has no infinity: an SQNR with no noise at all is written "inf" (and -inf, nan likewise)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class Report:
    """qruntime.compare's result.

    rows: a list of dicts, worst first: position (the op's index in the graph), name (module path or node
        name), op, value (the .qnn value), dtype ("uint8", or "float32" for float islands), sqnr_db (float vs
        int8, cumulative), sensitivity_db (output SQNR with this layer alone in int8; None where not
        measured), clipped (share of the float values outside the uint8 grid by more than half a step; None
        for float32 values), scale, zero_point, note (why a measure is missing, else None).
    output_sqnr: the SQNR of Model.run's outputs against the float model's, in dB.
    skipped: [{"name", "op", "value", "reason"}] of the ops that have no row.
    images: how many images were measured."""

    def __init__(self, rows, output_sqnr, skipped, images):
        self.rows = _worst_first(rows)
        self.output_sqnr = output_sqnr
        self.skipped = skipped
        self.images = images

    def __str__(self):
        measured = any(r["sensitivity_db"] is not None for r in self.rows)
        order = ("sensitivity (the output SQNR with that layer alone in int8), then SQNR" if measured
                 else "SQNR (float vs int8, every layer before it in int8 too)")
        head = f"{'#':>4}  {'name':<28} {'op':<20} {'SQNR dB':>8} {'sensitivity dB':>15} {'clipped':>8}"
        lines = [f"output SQNR {self.output_sqnr:.1f} dB over {self.images} images; "
                 f"{len(self.rows)} layers, worst first by {order}", head, "-" * len(head)]
        for r in self.rows:
            clipped = "-" if r["clipped"] is None else f"{r['clipped']:.2%}"
            line = (f"{r['position']:>4}  {r['name'][:28]:<28} {r['op'][:20]:<20} {_db(r['sqnr_db'], 8)} "
                    f"{_db(r['sensitivity_db'], 15)} {clipped:>8}")
            lines.append(line + (f"  ({r['note']})" if r["note"] else ""))
        for s in self.skipped:
            lines.append(f"no row for {s['op']} {s['name']!r} (value {s['value']!r}): {s['reason']}")
        return "\n".join(lines)

    def __repr__(self):
        return f"<qruntime compare Report: {len(self.rows)} layers, output SQNR {self.output_sqnr:.1f} dB>"

    def to_json(self):
        """The report as one JSON document: output_sqnr_db, images, rows (as .rows), skipped. An SQNR with no
        error at all is the string "inf"."""
        rows = [{k: _json_number(v) for k, v in r.items()} for r in self.rows]
        return json.dumps({"output_sqnr_db": _json_number(self.output_sqnr), "images": self.images,
                           "rows": rows, "skipped": self.skipped}, allow_nan=False)

    def plot(self, path):
        """Draws SQNR (and sensitivity, where measured) through the network in graph order to an image file
        (its format from the suffix: .png, .svg, .pdf); returns path. Needs matplotlib."""
        try:
            from matplotlib.figure import Figure
        except ImportError:
            raise ImportError("Report.plot draws with matplotlib: pip install 'qruntime[plot]'") from None
        rows = sorted(self.rows, key=lambda r: r["position"])

        def finite(values):
            return [v if v is not None and math.isfinite(v) else math.nan for v in values]

        at = list(range(len(rows)))
        fig = Figure(figsize=(max(6.0, 0.28 * len(rows) + 2.0), 4.5), layout="constrained")
        ax = fig.add_subplot()
        ax.plot(at, finite([r["sqnr_db"] for r in rows]), "o-", label="SQNR (float vs int8, cumulative)")
        if any(r["sensitivity_db"] is not None for r in rows):
            ax.plot(at, finite([r["sensitivity_db"] for r in rows]), "s--",
                    label="sensitivity (output SQNR, this layer alone in int8)")
        if math.isfinite(self.output_sqnr):
            ax.axhline(self.output_sqnr, color="gray", linewidth=1, linestyle=":",
                       label=f"output SQNR {self.output_sqnr:.1f} dB")
        ax.set_xticks(at, [r["name"] for r in rows], rotation=90, fontsize=7)
        ax.set_ylabel("dB")
        ax.set_title(f"qruntime.compare over {self.images} images")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        fig.savefig(path, dpi=100)
        return path
