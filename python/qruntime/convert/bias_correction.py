"""Bias correction: each int8 layer's bias shifted by the mean error of its output on the calibration data.

A conv or linear computes W x + b in the float model. In the int8 model it computes W_q x_q + b: int8
weights, and the input the int8 model actually delivers to it (its own rounding and everything upstream
included). Over the calibration data the difference of the two pre-activations has a mean per output
channel, e[c] = mean over images and positions of (W x + b - W_q x_q - b)[c]; adding e to the bias makes
the layer's output right on average (docs/quantization.md "Bias correction").

Layers are corrected in waves, in graph order: a layer's x_q is measured on the engine with every layer
before it already corrected, so no drift is corrected twice. A wave holds the layers whose inputs no
uncorrected layer reaches, so a chain of n layers takes n engine runs over the calibration data, a
wide block one. Each run starts where the last one stopped, from the values live there (kept per batch,
uint8 as uint8), so together they run the model about once rather than once per wave.

Only the sums of W x over images and positions are needed, and a sum of a conv is W applied to the input
summed under each tap: no conv is run for them, and W is applied once, to the sums over every batch.
"""
import numpy as np

from ..reference import dequantize
from .quantize import quantize_weight


class BiasCorrection:
    """The corrections {layer name: e (float32, one per output channel)} of an IR graph's int8 conv2d / linear.

    Two steps: taps() gives calibrate() the functions that see each layer's float input (the float
    pre-activation means); run() then measures the int8 side wave by wave."""

    def __init__(self, graph, per_channel, weight_bits, keep_float=(), weight_quantizer=quantize_weight):
        import torch

        self._graph = graph
        self._nodes = [n for n in graph.nodes if n.op in ("conv2d", "linear") and n.name not in keep_float]
        self._weights = {}
        for node in self._nodes:
            w = np.asarray(node.params["weight"], np.float32)
            w_q, w_scale = weight_quantizer(node.params["weight"], per_channel, weight_bits)
            dequantized = w_q.astype(np.float32) * w_scale.reshape(-1, *[1] * (w.ndim - 1))
            self._weights[node.name] = torch.from_numpy(w), torch.from_numpy(dequantized)
        self._float_sums = {n.name: 0.0 for n in self._nodes}
        self._float_counts = dict.fromkeys(self._float_sums, 0)

    def taps(self):
        """{fx node name: [fn(tensor)]}: each fn adds one batch of a layer's float input to its float mean."""
        taps = {}
        for node in self._nodes:
            taps.setdefault(node.inputs[0], []).append(self._float_tap(node))
        return taps

    def _float_tap(self, node):
        weight, _ = self._weights[node.name]

        def observe(x):  # x: the IR's value (calibrate's to_ir)
            sums, positions = _input_sums(node, x, weight.shape)
            self._float_sums[node.name] = self._float_sums[node.name] + sums
            self._float_counts[node.name] += positions
        return observe

    def run(self, build_graph, batches, make_model, keep_float=()):
        """{layer name: e}. build_graph(corrections) -> (.qnn graph dict, tensors) of the int8 model with those
        corrections; make_model(graph, tensors) -> Model; batches: the calibration inputs (numpy arrays);
        keep_float: layers that run in float in this model (beyond those given to the constructor)."""
        corrections = {}
        measured = [n for n in self._nodes if self._float_counts[n.name] and n.name not in keep_float]
        waves = self._waves(measured)
        resume = None
        for w, wave in enumerate(waves):
            graph, tensors = build_graph(corrections)
            if resume is None or not resume.still_holds(graph, tensors):
                resume = _Resume.at_inputs(graph, batches)
            open_layers = {n.name for later in waves[w:] for n in later}
            probe = _Probe(graph, tensors, [n.name for n in wave], resume, open_layers)
            model = make_model(probe.graph, probe.tensors)
            sums = {n.name: 0.0 for n in wave}
            counts = dict.fromkeys(sums, 0)
            captured = []
            for fed in resume.values:
                outputs = model.run(probe.inputs(fed))
                outputs = outputs if isinstance(outputs, list) else [outputs]
                for node in wave:
                    batch_sums, positions = _input_sums(node, outputs[probe.position[node.name]],
                                                        self._weights[node.name][1].shape)
                    sums[node.name] = sums[node.name] + batch_sums
                    counts[node.name] += positions
                captured.append(probe.capture(fed, outputs))
            resume = probe.next_resume(captured)
            for node in wave:
                weight, dequantized = self._weights[node.name]
                float_mean = _weighted(node, weight, self._float_sums[node.name]) / self._float_counts[node.name]
                int8_mean = _weighted(node, dequantized, sums[node.name]) / counts[node.name]
                corrections[node.name] = (float_mean - int8_mean).astype(np.float32)
        return corrections

    def _waves(self, nodes):
        """nodes grouped so that no node is reached from an int8 layer of its own or a later group."""
        layers = {n.name for n in nodes}
        depth = {}  # value -> how many corrected layers lie on the longest path to it
        for node in self._graph.nodes:
            before = max((depth.get(v, 0) for v in node.inputs), default=0)
            depth[node.output] = before + (1 if node.name in layers else 0)
        waves = {}
        for node in nodes:
            waves.setdefault(depth[node.output], []).append(node)
        return [waves[d] for d in sorted(waves)]


def _input_sums(node, x, weight_shape):
    """A conv2d / linear IR node's input summed under each of its weights over every image and output
    position, in float64: (in channels, kh * kw) for a conv, (features,) for a linear; and the number of
    positions. The sum of W x over them is W applied to these (_weighted): a batch costs a pass over x."""
    import torch
    import torch.nn.functional as F

    x = torch.as_tensor(x)
    if node.op == "linear":
        rows = x.reshape(-1, weight_shape[1])
        return rows.sum(dim=0, dtype=torch.float64), rows.shape[0]
    images = x.shape[0]
    top, left, bottom, right = node.attrs["padding"]
    # zeros: the int8 conv pads with the zero point, a real 0
    x = F.pad(x.sum(dim=0, dtype=torch.float64), (left, right, top, bottom))
    (sh, sw), (dh, dw) = node.attrs["stride"], node.attrs["dilation"]
    kh, kw = weight_shape[2:]
    ho, wo = (x.shape[1] - dh * (kh - 1) - 1) // sh + 1, (x.shape[2] - dw * (kw - 1) - 1) // sw + 1
    taps = torch.stack([x[:, i * dh:i * dh + sh * (ho - 1) + 1:sh, j * dw:j * dw + sw * (wo - 1) + 1:sw].sum(dim=(1, 2))
                        for i in range(kh) for j in range(kw)], dim=1)
    return taps, images * ho * wo


def _weighted(node, weight, sums):
    """The sum of W x from _input_sums (summed over batches): one float64 per output channel."""
    import torch

    w = weight.double()
    if node.op == "linear":
        return (w @ sums).numpy()
    groups, out_channels = node.attrs["groups"], w.shape[0]
    total = torch.einsum("gok,gk->go", w.reshape(groups, out_channels // groups, -1), sums.reshape(groups, -1))
    return total.reshape(out_channels).numpy()


_LAYERS = ("conv2d", "linear")


class _Resume:
    """Where one wave's engine run leaves the int8 model for the next: every value some op at or after op `at`
    still reads, per calibration batch ({value: array}; uint8 values as uint8), and the ops, value specs
    and tensors before `at` that made them, so a later wave can tell that they still hold."""

    def __init__(self, at, values, ops, specs, tensors):
        self.at, self.values, self._ops, self._specs, self._tensors = at, values, ops, specs, tensors

    @classmethod
    def at_inputs(cls, graph, batches):
        names = [i["name"] for i in graph["inputs"]]
        values = [dict(zip(names, x if isinstance(x, (list, tuple)) else [x])) for x in batches]
        return cls(0, values, [], {}, {})

    def still_holds(self, graph, tensors):
        """Whether graph's first `at` ops are the ones the values came from: a later wave's corrections can
        still move an earlier value's scale (the least scale its readers' biases need, quantize.py)."""
        ops = graph["ops"][:self.at]
        return (ops == self._ops and all(graph["values"][v] == spec for v, spec in self._specs.items())
                and all(np.array_equal(tensors[t], a) for t, a in self._tensors.items()))


class _Probe:
    """The int8 model from a resume point to the last op a wave's layers' inputs need: fed the values live at
    the resume point, it outputs those inputs dequantized, and the values the next wave resumes from."""

    def __init__(self, graph, tensors, layer_names, resume, open_layers):
        ops, values = graph["ops"], graph["values"]
        self._graph_values = values
        produced_at = {i["name"]: -1 for i in graph["inputs"]}
        produced_at.update((out, i) for i, op in enumerate(ops) for out in op["outputs"])
        last_read = {}
        for i, op in enumerate(ops):
            for v in op["inputs"]:
                last_read[v] = i
        layer_of = {op["name"]: op for op in ops if op["op"] in _LAYERS}
        sources = [layer_of[name]["inputs"][0] for name in layer_names]
        start = resume.at
        end = max([start] + [produced_at[v] + 1 for v in sources])
        # The next wave resumes before the first layer whose bias is still open (this wave's included)
        first_open = next((i for i, op in enumerate(ops) if op["op"] in _LAYERS and op["name"] in open_layers),
                          len(ops))
        self._next_at = min(first_open, end)

        def live(at):
            return [v for v, i in produced_at.items() if i < at and last_read.get(v, -1) >= at]
        window = ops[start:end]
        read = {v for op in window for v in op["inputs"]} | set(sources)
        self._fed = [v for v in live(start) if v in read]
        self._carried = [v for v in live(self._next_at) if produced_at[v] < start]
        self._captured = [v for v in live(self._next_at) if produced_at[v] >= start]
        self._next_ops = ops[:self._next_at]

        given = {i["name"]: i for i in graph["inputs"]}
        first = resume.values[0] if resume.values else {}
        inputs, lead, probe_values = [], [], {}
        for v in self._fed:
            if v in given:
                inputs.append(given[v])
            elif values[v]["dtype"] == "uint8":  # fed dequantized; quantizing gives back the same bytes
                inputs.append({"name": f"{v}:resume", "shape": [-1, *first[v].shape[1:]]})
                lead.append(_unary("quantize", f"{v}:resume", f"{v}:resume", v))
                probe_values[f"{v}:resume"] = {"dtype": "float32"}
            else:
                inputs.append({"name": v, "shape": [-1, *first[v].shape[1:]]})
        outputs, tail, self.position = [], [], {}
        for name, source in zip(layer_names, sources):
            probe = f"{source}:bias_correction"
            if probe not in outputs:
                tail.append(_unary("dequantize", probe, source, probe))
                outputs.append(probe)
            self.position[name] = outputs.index(probe)
        self._first_capture = len(outputs)
        self._capturable = all(values[v]["dtype"] in ("uint8", "float32") for v in self._captured)
        if self._capturable:
            for v in self._captured:
                if values[v]["dtype"] == "uint8":
                    tail.append(_unary("dequantize", f"{v}:resume", v, f"{v}:resume"))
                    outputs.append(f"{v}:resume")
                else:
                    outputs.append(v)
        probe_ops = lead + window + tail
        used = {v for op in probe_ops for v in op["inputs"] + op["outputs"]}
        probe_values.update({v: spec for v, spec in values.items() if v in used})
        probe_values.update({v: {"dtype": "float32"} for v in outputs if v not in values})
        self.tensors = {t: tensors[t] for op in window for t in op["tensors"].values()}
        self.graph = {key: val for key, val in graph.items() if key != "output_keys"}
        self.graph.update(inputs=inputs, ops=probe_ops, values=probe_values, outputs=outputs)
        self._next_specs = {v: values[v] for op in self._next_ops for v in op["outputs"]}
        self._next_tensors = {t: tensors[t] for op in self._next_ops for t in op["tensors"].values()}

    def inputs(self, fed):
        """The engine's inputs for one batch's resume values."""
        arrays = []
        for v in self._fed:
            spec = self._graph_values[v]
            arrays.append(dequantize(fed[v], spec["scale"], spec["zero_point"]) if spec["dtype"] == "uint8" else fed[v])
        return arrays

    def capture(self, fed, outputs):
        """One batch's values for the next wave, or None where they cannot be fed back exactly."""
        if not self._capturable:
            return None
        got = {v: fed[v] for v in self._carried}
        for v, out in zip(self._captured, outputs[self._first_capture:]):
            spec = self._graph_values[v]
            if spec["dtype"] == "uint8":
                # The bytes the engine had: out = (q - zp) * scale, which one float32 division inverts
                # exactly for any normal scale; the check guards that.
                scale, zp = np.float32(spec["scale"]), np.float32(spec["zero_point"])
                codes = np.rint(out / scale)
                if not np.array_equal(codes * scale, out) or np.any(codes < -zp) or np.any(codes > 255 - zp):
                    return None
                out = (codes + zp).astype(np.uint8)
            elif not np.all(np.isfinite(out)):
                return None  # a float value the engine would refuse as an input (a run from the inputs takes it)
            got[v] = out
        return got

    def next_resume(self, captured):
        """The next wave's resume point (None: it starts from the graph inputs)."""
        if any(c is None for c in captured):
            return None
        return _Resume(self._next_at, captured, self._next_ops, self._next_specs, self._next_tensors)


def _unary(kind, name, source, output):
    return {"op": kind, "name": name, "inputs": [source], "outputs": [output], "attrs": {}, "tensors": {}}
