"""Bias correction: each int8 layer's bias shifted by the mean error of its output on the calibration data.

A conv or linear computes W x + b in the float model. In the int8 model it computes W_q x_q + b: int8
weights, and the input the int8 model actually delivers to it (its own rounding and everything upstream
included). Over the calibration data the difference of the two pre-activations has a mean per output
channel, e[c] = mean over images and positions of (W x + b - W_q x_q - b)[c]; adding e to the bias makes
the layer's output right on average (docs/quantization.md "Bias correction").

Layers are corrected in waves, in graph order: a layer's x_q is measured on the engine with every layer
before it already corrected, so no drift is corrected twice. A wave holds the layers whose inputs no
uncorrected layer reaches, so a chain of n layers takes n engine runs over the calibration data, a
wide block one.
"""
import numpy as np

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
            y = _pre_activation(node, x, weight)
            self._float_sums[node.name] = self._float_sums[node.name] + y.double().sum(dim=1).numpy()
            self._float_counts[node.name] += y.shape[1]
        return observe

    def run(self, build_graph, batches, make_model, keep_float=()):
        """{layer name: e}. build_graph(corrections) -> (.qnn graph dict, tensors) of the int8 model with those
        corrections; make_model(graph, tensors) -> Model; batches: the calibration inputs (numpy arrays);
        keep_float: layers that run in float in this model (beyond those given to the constructor)."""
        import torch

        corrections = {}
        measured = [n for n in self._nodes if self._float_counts[n.name] and n.name not in keep_float]
        for wave in self._waves(measured):
            probe, tensors, position = _with_inputs_as_outputs(*build_graph(corrections), [n.name for n in wave])
            model = make_model(probe, tensors)
            sums = {n.name: 0.0 for n in wave}
            counts = dict.fromkeys(sums, 0)
            for x in batches:
                outputs = model.run(x)
                outputs = outputs if isinstance(outputs, list) else [outputs]
                for node in wave:
                    x_q = torch.from_numpy(outputs[position[node.name]])
                    y = _pre_activation(node, x_q, self._weights[node.name][1])
                    sums[node.name] = sums[node.name] + y.double().sum(dim=1).numpy()
                    counts[node.name] += y.shape[1]
            for node in wave:
                float_mean = self._float_sums[node.name] / self._float_counts[node.name]
                corrections[node.name] = (float_mean - sums[node.name] / counts[node.name]).astype(np.float32)
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


def _pre_activation(node, x, weight):
    """(W x) of a conv2d / linear IR node, as (out channels, every image and position): no bias, no act."""
    import torch.nn.functional as F

    x = x.float()
    if node.op == "linear":
        return F.linear(x, weight).reshape(-1, weight.shape[0]).T
    top, left, bottom, right = node.attrs["padding"]
    x = F.pad(x, (left, right, top, bottom))  # zeros: the int8 conv pads with the zero point, a real 0
    y = F.conv2d(x, weight, None, node.attrs["stride"], 0, node.attrs["dilation"], node.attrs["groups"])
    return y.transpose(0, 1).reshape(y.shape[1], -1)


def _with_inputs_as_outputs(graph, tensors, layer_names):
    """(graph, tensors, {layer name: output index}): the .qnn graph cut after the last op the named layers'
    inputs need, its outputs those inputs dequantized (layers reading the same value share one)."""
    op_of = {op["name"]: op for op in graph["ops"] if op["op"] in ("conv2d", "linear")}
    sources = [op_of[name]["inputs"][0] for name in layer_names]
    produced_at = {out: i for i, op in enumerate(graph["ops"]) for out in op["outputs"]}
    ops = graph["ops"][:1 + max((produced_at.get(v, -1) for v in sources), default=-1)]
    outputs, position = [], {}
    for name, source in zip(layer_names, sources):
        probe = f"{source}:bias_correction"
        if probe not in outputs:
            ops.append({"op": "dequantize", "name": probe, "inputs": [source], "outputs": [probe], "attrs": {},
                        "tensors": {}})
            outputs.append(probe)
        position[name] = outputs.index(probe)
    used = {v for op in ops for v in op["inputs"] + op["outputs"]} | {i["name"] for i in graph["inputs"]}
    values = {v: spec for v, spec in graph["values"].items() if v in used}
    values.update({probe: {"dtype": "float32"} for probe in outputs})
    kept_tensors = {t: tensors[t] for op in ops for t in op["tensors"].values()}
    probe_graph = {key: val for key, val in graph.items() if key != "output_keys"}
    probe_graph.update(ops=ops, values=values, outputs=outputs)
    return probe_graph, kept_tensors, position
