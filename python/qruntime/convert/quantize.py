"""Float IR + calibrated ranges -> the quantized graph of docs/format.md, and qruntime.quantize itself.

Rules (docs/quantization.md): activations uint8 per tensor, asymmetric, with the range widened to
hold 0; weights int8 symmetric per output channel in [-127, 127]; biases stay float32 (the engine
quantizes them at scale s_x * s_w). Max pooling, flatten, gather_channels, resize and pad keep their
input's quantization. Unary functions become 256-entry tables. softmax / log_softmax and the layers
keep_float selects (module paths or node names) run in float32 kernels (float islands), with dequantize /
quantize ops where the data type changes.
"""
import math

import numpy as np

from ..errors import UnsupportedOpError
from ..ops import make_lut

# Unary ops that become lookup tables: float64 numpy functions of the real value.
_SQRT2 = math.sqrt(2.0)
_erf = np.vectorize(math.erf, otypes=[np.float64])


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


_UNARY = {
    "relu": lambda a: (lambda x: np.maximum(x, 0.0)),
    "relu6": lambda a: (lambda x: np.clip(x, 0.0, 6.0)),
    "hardtanh": lambda a: (lambda x: np.clip(x, a["min_val"], a["max_val"])),
    "hardswish": lambda a: (lambda x: x * np.clip(x + 3.0, 0.0, 6.0) / 6.0),
    "hardsigmoid": lambda a: (lambda x: np.clip(x + 3.0, 0.0, 6.0) / 6.0),
    "sigmoid": lambda a: _sigmoid,
    "tanh": lambda a: np.tanh,
    "silu": lambda a: (lambda x: x * _sigmoid(x)),
    "leaky_relu": lambda a: (lambda x: np.where(x >= 0.0, x, x * a["negative_slope"])),
    "scale_shift": lambda a: (lambda x: x * a["scale"] + a["shift"]),
    "gelu": lambda a: ((lambda x: 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3))))
                       if a.get("approximate", "none") == "tanh" else (lambda x: 0.5 * x * (1.0 + _erf(x / _SQRT2)))),
}


def qparams(lo, hi):
    """(scale, zero_point) of uint8 asymmetric quantization over [lo, hi], widened to hold 0."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    span = hi - lo
    if not span > 1e-12:
        # A constant-zero tensor: any scale holds it exactly. Not a tiny one: the next layer quantizes
        # its bias at s_x * s_w, and a tiny s_x would push that bias out of int32.
        return float(np.float32(1.0 / 255.0)), 0
    scale = float(np.float32(span / 255.0))
    zp = int(min(255, max(0, round(-lo / scale))))
    return scale, zp


def quantize_weight(w, per_channel, bits=8):
    """int8 weights in [-q, q] (q = 127 for 8 bits, 64 for 7) and float32 scales (one per output channel,
    repeated when per tensor). 7-bit weights make every pair |w1| + |w2| <= 128: the AVX2 fast path."""
    qmax = 127.0 if bits == 8 else 64.0
    oc = w.shape[0]
    flat = np.asarray(w, np.float64).reshape(oc, -1)
    amax = np.abs(flat).max(axis=1) if per_channel else np.full(oc, np.abs(flat).max())
    scale = np.where(amax > 0, amax / qmax, 1.0).astype(np.float32)
    q = np.clip(np.rint(flat / scale.astype(np.float64)[:, None]), -qmax, qmax).astype(np.int8)
    return q.reshape(w.shape), scale


class WeightQuantizer:
    """quantize_weight, remembering its results for the arrays it has seen: bias correction and min_sqnr build
    the same layers dozens of times in one quantize call (mobilenet_v3_large: 8,000 calls, 40 % of it)."""

    def __init__(self):
        self._done = {}

    def __call__(self, w, per_channel, bits):
        key = (id(w), bool(per_channel), bits)
        hit = self._done.get(key)
        if hit is None or hit[0] is not w:  # the array itself is kept, so its id cannot be reused meanwhile
            hit = (w,) + quantize_weight(w, per_channel, bits)
            self._done[key] = hit
        return hit[1], hit[2]


def _ints(v):
    return [int(x) for x in v]


class _Emitter:
    """Builds the quantized graph op by op, tracking which dtype versions of each IR value exist."""

    def __init__(self, ranges, per_channel, weight_bits, min_scales=None, bias_corrections=None,
                 weight_quantizer=quantize_weight):
        self.quantize_weight = weight_quantizer
        self.ranges = ranges
        self.min_scales = min_scales or {}  # value -> the least scale its readers' biases allow
        self.per_channel = per_channel
        self.weight_bits = weight_bits
        self.bias_corrections = bias_corrections or {}  # int8 layer name -> what its bias gains (bias_correction.py)
        self.values, self.ops, self.tensors = {}, [], {}
        self.u8, self.f32 = {}, {}  # IR value -> name of its uint8 / float32 version

    def range_of(self, v, graph):
        if v in self.ranges:
            return self.ranges[v]
        # A value the fx graph does not have (the keepdim half of a reduce a flatten follows): the flatten's range.
        users = graph.consumers(v)
        if len(users) == 1 and users[0].op == "flatten" and users[0].output in self.ranges:
            return self.ranges[users[0].output]
        raise ValueError(f"no calibration range for value {v!r}: it was never computed during calibration")

    def tensor(self, base, array):
        name, i = base, 1
        while name in self.tensors:
            i += 1
            name = f"{base}#{i}"
        self.tensors[name] = array
        return name

    def op(self, kind, name, inputs, output, attrs=None, tensors=None):
        self.ops.append({"op": kind, "name": name, "inputs": list(inputs), "outputs": [output],
                         "attrs": attrs or {}, "tensors": tensors or {}})

    def add_u8(self, v, name, scale, zp):
        self.values[name] = {"dtype": "uint8", "scale": float(scale), "zero_point": int(zp)}
        self.u8[v] = name
        return name

    def add_f32(self, v, name):
        self.values[name] = {"dtype": "float32"}
        self.f32[v] = name
        return name

    def qparams_of(self, v, graph):
        """(scale, zero_point) of value v: its calibrated range, widened where a reader's bias needs it."""
        lo, hi = self.range_of(v, graph)
        least = self.min_scales.get(v, 0.0)
        if least and (max(hi, 0.0) - min(lo, 0.0)) / 255.0 < least:
            # Tiny activations (a dying random net, GoogLeNet's last block) against a real bias: at s_x * s_w
            # the bias would pass int32 and be clamped, zeroing the output. A coarser grid keeps it exact.
            lo, hi = min(lo, 0.0), max(hi, 0.0)
            grow = 255.0 * least * 1.0001 / max(hi - lo, 1e-300)
            lo, hi = (lo * grow, hi * grow) if hi - lo > 0 else (0.0, 255.0 * least * 1.0001)
        return qparams(lo, hi)

    def need_u8(self, v, graph):
        if v not in self.u8:
            scale, zp = self.qparams_of(v, graph)
            q = self.add_u8(v, f"{v}:q" if v in self.values else v, scale, zp)
            self.op("quantize", v, [self.f32[v]], q)
        return self.u8[v]

    def need_f32(self, v):
        if v not in self.f32:
            f = self.add_f32(v, f"{v}:f" if v in self.values else v)
            self.op("dequantize", v, [self.u8[v]], f)
        return self.f32[v]

    def out_u8(self, node, graph, same_as=None):
        """The uint8 output value of node: its own calibrated quantization, or that of `same_as`."""
        if same_as is not None:
            q = self.values[same_as]
            return self.add_u8(node.output, node.output, q["scale"], q["zero_point"])
        return self.add_u8(node.output, node.output, *self.qparams_of(node.output, graph))


def _int8_bias(node, bias_corrections):
    """The float32 bias of node's int8 form: its own, plus its bias correction if it has one (else None)."""
    bias, correction = node.params.get("bias"), bias_corrections.get(node.name)
    if correction is None:
        return None if bias is None else np.asarray(bias, np.float32)
    return correction if bias is None else (np.asarray(bias, np.float32) + correction).astype(np.float32)


def _weights(em, node, per_channel):
    w_q, w_scale = em.quantize_weight(node.params["weight"], per_channel, em.weight_bits)
    t = {"weight": em.tensor(f"{node.name}.weight", w_q), "w_scale": em.tensor(f"{node.name}.w_scale", w_scale)}
    bias = _int8_bias(node, em.bias_corrections)
    if bias is not None:
        t["bias"] = em.tensor(f"{node.name}.bias", bias)
    return t


def _float_weights(em, node):
    t = {"weight": em.tensor(f"{node.name}.weight", np.asarray(node.params["weight"], np.float32))}
    if node.params.get("bias") is not None:
        t["bias"] = em.tensor(f"{node.name}.bias", np.asarray(node.params["bias"], np.float32))
    return t


def _conv_attrs(a):
    return {"stride": _ints(a["stride"]), "padding": _ints(a["padding"]), "dilation": _ints(a["dilation"]),
            "groups": int(a["groups"]), "act": a.get("act", "none")}


def _emit_layout_op(em, node, graph, tensors=None):
    """An op that only moves values (flatten, gather_channels): on whichever dtype version of its input
    exists, keeping a uint8 input's quantization."""
    v = node.inputs[0]
    if v in em.u8:
        x = em.u8[v]
        em.op(node.op, node.name, [x], em.out_u8(node, graph, same_as=x), {}, tensors)
    else:
        em.op(node.op, node.name, [em.f32[v]], em.add_f32(node.output, node.output), {}, tensors)


def _emit_channel_tables(em, node, graph, functions):
    """lut_channels: channel c's codes through functions[c] (float64 functions of the real value)."""
    x = em.need_u8(node.inputs[0], graph)
    xq, yq = em.values[x], em.values[em.out_u8(node, graph)]
    tables = np.stack([make_lut(fn, xq["scale"], xq["zero_point"], yq["scale"], yq["zero_point"]) for fn in functions])
    em.op("lut_channels", node.name, [x], node.output, {}, {"table": em.tensor(f"{node.name}.table", tables)})


# IR ops that have a float32 kernel, so keep_float can run them in float (a float island).
FLOAT_FORMS = ("conv2d", "linear", "affine", "layer_norm", "add", "sub", "mul") + tuple(_UNARY)


def _unary_float_attrs(kind, a):
    """unary_float's fn, a, b for an IR unary op (docs/format.md)."""
    big = float(np.finfo(np.float32).max)
    if kind == "gelu":
        return {"fn": "gelu_tanh" if a.get("approximate") == "tanh" else "gelu", "a": 0.0, "b": 0.0}
    if kind == "hardtanh":
        lo, hi = a.get("min_val"), a.get("max_val")
        return {"fn": "hardtanh", "a": -big if lo is None else float(lo), "b": big if hi is None else float(hi)}
    if kind == "leaky_relu":
        return {"fn": "leaky_relu", "a": float(a["negative_slope"]), "b": 0.0}
    if kind == "scale_shift":
        return {"fn": "scale_shift", "a": float(a["scale"]), "b": float(a["shift"])}
    return {"fn": kind, "a": 0.0, "b": 0.0}


def _emit_float(em, node, graph):
    """node in float32 between a dequantize and a quantize (each added only where the dtype changes)."""
    kind, a = node.op, node.attrs
    xs = [em.need_f32(v) for v in node.inputs]
    y = em.add_f32(node.output, node.output)
    if kind in ("conv2d", "linear"):
        attrs = _conv_attrs(a) if kind == "conv2d" else {"act": a.get("act", "none")}
        em.op(kind + "_float", node.name, xs, y, attrs, _float_weights(em, node))
    elif kind == "affine":  # a depthwise 1x1 float conv
        scale = np.asarray(node.params["scale"], np.float32)
        tensors = {"weight": em.tensor(f"{node.name}.weight", scale.reshape(-1, 1, 1, 1)),
                   "bias": em.tensor(f"{node.name}.bias", np.asarray(node.params["shift"], np.float32))}
        attrs = {"stride": [1, 1], "padding": [0, 0, 0, 0], "dilation": [1, 1], "groups": int(scale.size), "act": "none"}
        em.op("conv2d_float", node.name, xs, y, attrs, tensors)
    elif kind == "layer_norm":
        tensors = {role: em.tensor(f"{node.name}.{role}", np.asarray(node.params[role], np.float32))
                   for role in ("weight", "bias")}
        em.op("layer_norm_float", node.name, xs, y, {"eps": float(a["eps"])}, tensors)
    elif kind in ("add", "sub", "mul"):
        em.op("binary_float", node.name, xs, y, {"fn": kind})
        if a.get("act", "none") == "relu":  # a fused ReLU: its own op in float
            relu = em.add_f32(node.output, f"{node.output}:relu")
            em.op("unary_float", node.name, [y], relu, {"fn": "relu", "a": 0.0, "b": 0.0})
    else:
        em.op("unary_float", node.name, xs, y, _unary_float_attrs(kind, a))


def _has_float_form(node, graph):
    # An affine runs in float as a depthwise conv, which takes NCHW only; on (N, F) it stays a table per feature.
    return node.op in FLOAT_FORMS and not (node.op == "affine" and len(graph.shapes[node.inputs[0]]) != 4)


def keep_float_nodes(graph, keep_float):
    """The IR node names keep_float selects: each entry is a node name or a module path, which selects every
    node inside it. ValueError for an entry that selects nothing, or only ops without a float32 kernel."""
    chosen = set()
    for k in keep_float:
        inside = [n for n in graph.nodes if n.name == k or n.name.startswith(k + ".")]
        if not inside:
            raise ValueError(f"keep_float: {k!r} is neither a module path nor a node name of the model's converted "
                             f"layers (they include {sorted(n.name for n in graph.nodes)[:12]})")
        floatable = [n.name for n in inside if _has_float_form(n, graph)]
        if not floatable:
            raise ValueError(f"keep_float: {k!r} holds only ops without a float32 kernel "
                             f"({sorted({n.op for n in inside})}); the ops that can run in float are "
                             f"{', '.join(FLOAT_FORMS)} (affine on NCHW only)")
        chosen.update(floatable)
    return chosen


def _emit(em, node, graph, keep_float):
    kind, a = node.op, node.attrs
    if node.name in keep_float:
        _emit_float(em, node, graph)
    elif kind in ("conv2d", "linear"):
        x = em.need_u8(node.inputs[0], graph)
        attrs = _conv_attrs(a) if kind == "conv2d" else {"act": a.get("act", "none")}
        em.op(kind, node.name, [x], em.out_u8(node, graph), attrs, _weights(em, node, em.per_channel))
    elif kind == "affine" and len(graph.shapes[node.inputs[0]]) == 2:  # per feature of (N, F): a table each
        _emit_channel_tables(em, node, graph, [lambda v, s=float(s), t=float(t): v * s + t
                                               for s, t in zip(node.params["scale"], node.params["shift"])])
    elif kind == "affine":  # a lone BatchNorm, a layer scale: a depthwise 1x1 conv whose weights are its scales
        x = em.need_u8(node.inputs[0], graph)
        scale = np.asarray(node.params["scale"], np.float32)
        conv = type(node)(op="conv2d", name=node.name, inputs=node.inputs, output=node.output,
                          params={"weight": scale.reshape(-1, 1, 1, 1), "bias": node.params["shift"]})
        attrs = {"stride": [1, 1], "padding": [0, 0, 0, 0], "dilation": [1, 1], "groups": int(scale.size), "act": "none"}
        em.op("conv2d", node.name, [x], em.out_u8(node, graph), attrs, _weights(em, conv, True))
    elif kind in _UNARY:
        x = em.need_u8(node.inputs[0], graph)
        xq = em.values[x]
        y = em.out_u8(node, graph)
        yq = em.values[y]
        table = make_lut(_UNARY[kind](a), xq["scale"], xq["zero_point"], yq["scale"], yq["zero_point"])
        em.op("lut", node.name, [x], y, {}, {"table": em.tensor(f"{node.name}.table", table)})
    elif kind == "prelu":  # a slope per channel: a table per channel
        _emit_channel_tables(em, node, graph, [_UNARY["leaky_relu"]({"negative_slope": float(s)})
                                               for s in np.asarray(node.params["weight"], np.float64)])
    elif kind == "max_pool2d":
        x = em.need_u8(node.inputs[0], graph)
        attrs = {"kernel": _ints(a["kernel"]), "stride": _ints(a["stride"]), "padding": _ints(a["padding"]),
                 "dilation": _ints(a["dilation"]), "ceil_mode": bool(a["ceil_mode"])}
        em.op("max_pool2d", node.name, [x], em.out_u8(node, graph, same_as=x), attrs)
    elif kind == "avg_pool2d":
        x = em.need_u8(node.inputs[0], graph)
        attrs = {"kernel": _ints(a["kernel"]), "stride": _ints(a["stride"]), "padding": _ints(a["padding"]),
                 "ceil_mode": bool(a["ceil_mode"]), "count_include_pad": bool(a["count_include_pad"]),
                 "divisor_override": int(a.get("divisor_override") or 0)}
        em.op("avg_pool2d", node.name, [x], em.out_u8(node, graph), attrs)
    elif kind == "adaptive_avg_pool2d":
        x = em.need_u8(node.inputs[0], graph)
        em.op("adaptive_avg_pool2d", node.name, [x], em.out_u8(node, graph), {"output_size": _ints(a["output_size"])})
    elif kind == "reduce":
        x = em.need_u8(node.inputs[0], graph)
        attrs = {"mode": a["mode"], "dims": _ints(a["dims"]), "keepdim": bool(a["keepdim"])}
        em.op("reduce", node.name, [x], em.out_u8(node, graph), attrs)
    elif kind == "layer_norm":
        x = em.need_u8(node.inputs[0], graph)
        tensors = {role: em.tensor(f"{node.name}.{role}", np.asarray(node.params[role], np.float32))
                   for role in ("weight", "bias")}
        em.op("layer_norm", node.name, [x], em.out_u8(node, graph), {"eps": float(a["eps"])}, tensors)
    elif kind == "group_norm":
        x = em.need_u8(node.inputs[0], graph)
        tensors = {role: em.tensor(f"{node.name}.{role}", np.asarray(node.params[role], np.float32))
                   for role in ("weight", "bias")}
        em.op("group_norm", node.name, [x], em.out_u8(node, graph), {"eps": float(a["eps"]), "groups": int(a["groups"])},
              tensors)
    elif kind == "resize":  # keeps x's quantization; a second input only lends its H and W
        xs = [em.need_u8(v, graph) for v in node.inputs]
        size, scale = a["size"] or [0, 0], a["scale"] or [0.0, 0.0]
        attrs = {"mode": a["mode"], "align_corners": bool(a["align_corners"]), "size": _ints(size),
                 "scale_h": float(scale[0]), "scale_w": float(scale[1])}
        em.op("resize", node.name, xs, em.out_u8(node, graph, same_as=xs[0]), attrs)
    elif kind == "pad":  # keeps x's quantization: the pad value becomes one of x's codes (clamped to its range)
        x = em.need_u8(node.inputs[0], graph)
        xq = em.values[x]
        code = np.rint(np.float32(a["value"]) / np.float32(xq["scale"])) + xq["zero_point"]
        attrs = {"padding": _ints(a["padding"]), "fill_code": int(np.clip(code, 0, 255))}
        em.op("pad", node.name, [x], em.out_u8(node, graph, same_as=x), attrs)
    elif kind == "flatten":
        _emit_layout_op(em, node, graph)
    elif kind == "gather_channels":
        _emit_layout_op(em, node, graph, {"index": em.tensor(f"{node.name}.index", np.asarray(a["index"], np.int32))})
    elif kind in ("add", "sub"):
        xs = [em.need_u8(v, graph) for v in node.inputs]
        em.op(kind, node.name, xs, em.out_u8(node, graph), {"act": a.get("act", "none")})
    elif kind == "mul":
        xs = [em.need_u8(v, graph) for v in node.inputs]
        em.op("mul", node.name, xs, em.out_u8(node, graph))
    elif kind == "cat":
        xs = [em.need_u8(v, graph) for v in node.inputs]
        em.op("concat", node.name, xs, em.out_u8(node, graph), {"axis": int(a["axis"])})
    elif kind in ("softmax", "log_softmax"):
        if int(a["dim"]) != 1:
            raise UnsupportedOpError(f"{kind} over dim {a['dim']} at {node.name!r}: only dim 1 (features or channels) "
                                     "is supported")
        x = em.need_f32(node.inputs[0])
        em.op(kind, node.name, [x], em.add_f32(node.output, node.output), {"dim": 1})
    else:
        raise UnsupportedOpError(f"op {kind!r} at {node.name!r} has no quantized form")


# Ops whose output pixel depends on its input's pixel alone: a 1x1 input stays 1x1 at any image size.
_PER_PIXEL = tuple(_UNARY) + ("affine", "prelu", "layer_norm", "gather_channels", "dropout", "identity")


def _to_1x1(node):
    """Whether node's output is 1x1 at any input size: a pool to 1x1, or a reduce over H and W."""
    if node is not None and node.op == "reduce":
        return {2, 3} <= set(node.attrs["dims"])
    return node is not None and node.op == "adaptive_avg_pool2d" and _ints(node.attrs["output_size"]) == [1, 1]


def _spatially_free(graph):
    """True when any input height and width work: every flatten reads a pool to 1x1, directly or through
    per-pixel ops (ConvNeXt's LayerNorm after its pool), and every reduce that drops dims drops H and W."""
    for n in graph.nodes:
        if n.op == "reduce" and not n.attrs["keepdim"] and not _to_1x1(n):
            return False
        if n.op == "flatten":
            src = graph.producer(n.inputs[0])
            while src is not None and src.op in _PER_PIXEL:
                src = graph.producer(src.inputs[0])
            if not _to_1x1(src):
                return False
    return True


_INT32_MAX = 2147483647.0
_KEEPS_QUANTIZATION = ("max_pool2d", "flatten", "gather_channels", "resize", "pad")


def _bias_min_scales(graph, per_channel, weight_bits, keep_float, bias_corrections, weight_quantizer=quantize_weight):
    """value -> the least input scale s_x at which every int8 conv/linear reading it can hold its bias
    in int32 at scale s_x * s_w[c] (docs/quantization.md: |b_q| <= 2^31 - 1 - 255 * 127 * K)."""
    least = {}
    for node in graph.nodes:
        bias = _int8_bias(node, bias_corrections)
        if node.op not in ("conv2d", "linear") or node.name in keep_float or bias is None:
            continue
        weight = node.params["weight"]
        _, w_scale = weight_quantizer(weight, per_channel, weight_bits)
        k = int(np.prod(weight.shape[1:]))
        room = _INT32_MAX - 255.0 * 127.0 * k
        need = float(np.max(np.abs(bias.astype(np.float64)) / (w_scale.astype(np.float64) * room)))
        v = node.inputs[0]
        while True:  # ops that keep their input's quantization pass the need on to it
            least[v] = max(least.get(v, 0.0), need)
            producer = graph.producer(v)
            if producer is None or producer.op not in _KEEPS_QUANTIZATION:
                break
            v = producer.inputs[0]
    return least


# Outputs of functions bounded on both sides: their calibrated range already sits inside a known interval,
# so a margin would only coarsen their grid (MobileNetV3's SE gates are hardsigmoids of pooled values).
_BOUNDED = ("sigmoid", "hardsigmoid", "tanh", "hardtanh", "relu6")

DEFAULT_POOLED_RANGE_MARGIN = 2.0


def _after_global_pool(graph):
    """The values computed from a pool to 1x1 (or a reduce over H and W): one number per (image, channel)."""
    found = set()
    for node in graph.nodes:
        if _to_1x1(node) or any(v in found for v in node.inputs):
            found.add(node.output)
    return found


def pooled_range_margin_targets(graph):
    """Values whose calibrated range gets the pooled range margin (docs/quantization.md): computed after a
    global pool, of shape (N, F) or (N, C, 1, 1), not the output of a bounded function (sigmoid, ...,
    or a conv/linear with a fused ReLU6). Ops that keep their input's quantization (flatten, max pooling,
    ...) follow their input, so a tied pair never gets two ranges."""
    after = _after_global_pool(graph)
    targets = set()
    for node in graph.nodes:
        v = node.output
        if node.op in _KEEPS_QUANTIZATION or node.op in ("dropout", "identity"):
            if node.inputs and node.inputs[0] in targets:
                targets.add(v)
            continue
        shape = graph.shapes.get(v)
        pooled_shape = shape is not None and (len(shape) == 2 or (len(shape) == 4 and tuple(shape[2:]) == (1, 1)))
        bounded = node.op in _BOUNDED or node.attrs.get("act", "none") == "relu6"
        if v in after and pooled_shape and not bounded:
            targets.add(v)
    return targets


def check_pooled_range_margin(margin):
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not math.isfinite(margin) or margin < 1.0:
        raise ValueError(f"pooled_range_margin must be a finite number >= 1 (1 turns it off), got {margin!r}")
    return float(margin)


def widen_pooled_ranges(graph, ranges, margin):
    """ranges with each pooled_range_margin_targets value's max (and min, when negative) times margin. A
    lower bound >= 0 (a ReLU's 0) stays where it is."""
    margin = check_pooled_range_margin(margin)
    if margin == 1.0:
        return dict(ranges)
    widened = dict(ranges)
    for v in pooled_range_margin_targets(graph):
        if v in widened:
            lo, hi = widened[v]
            widened[v] = (lo * margin if lo < 0 else lo, hi * margin if hi > 0 else hi)
    return widened


def build_quantized_graph(graph, ranges, *, per_channel=True, keep_float=(), weight_bits=8, method="minmax",
                          bias_corrections=None, weight_quantizer=quantize_weight, equalized=False):
    """(graph dict, tensors) of the .qnn for a passed IR graph and its calibrated ranges.

    bias_corrections: {layer name: float32 per-channel shift} added to those layers' int8 biases.
    weight_quantizer: quantize_weight, or a WeightQuantizer shared by the builds of one quantize call.
    equalized: graph went through passes.equalize (recorded, so compare can rescale the float values)."""
    bias_corrections = bias_corrections or {}
    least_scales = _bias_min_scales(graph, per_channel, weight_bits, set(keep_float), bias_corrections,
                                    weight_quantizer)
    em = _Emitter(ranges, per_channel, weight_bits, least_scales, bias_corrections, weight_quantizer)
    free_hw = _spatially_free(graph)
    inputs = []
    for v in graph.inputs:
        em.add_f32(v, v)
        shape = [-1] + [int(d) for d in graph.shapes[v][1:]]
        if len(shape) == 4 and free_hw:
            shape[2] = shape[3] = -1
        inputs.append({"name": v, "shape": shape})
    for node in graph.nodes:
        _emit(em, node, graph, set(keep_float))
    outputs = [em.need_f32(v) for v in graph.outputs]
    record = {"weight_bits": weight_bits, "method": method, "per_channel": bool(per_channel),
              "bias_correction": bool(bias_corrections)}
    if equalized:
        record["cross_layer_equalization"] = True
    result = {"inputs": inputs, "outputs": outputs, "values": em.values, "ops": em.ops, "quantization": record}
    if graph.output_keys is not None:
        result["output_keys"] = list(graph.output_keys)
    return result, em.tensors


def quantize_model(model, calibration_data, *, example_inputs=None, method="minmax", per_channel=True, keep_float=(),
                   progress=True, weight_bits=8, bias_correction=True, min_sqnr=None,
                   cross_layer_equalization=False, pooled_range_margin=DEFAULT_POOLED_RANGE_MARGIN):
    """qruntime.quantize (see its docstring)."""
    import torch

    from ..model import Model
    from . import passes
    from .bias_correction import BiasCorrection
    from .calibrate import batches, calibrate, first_and_rest
    from .mixed_precision import OutputSQNR, choose_float_layers
    from .observers import make_observer
    from .trace import trace

    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    make_observer(method)  # an unknown method fails before any work
    if isinstance(weight_bits, bool) or weight_bits not in (7, 8):
        raise ValueError(f"weight_bits must be 8 or 7, got {weight_bits!r}")
    for flag, value in (("bias_correction", bias_correction), ("cross_layer_equalization", cross_layer_equalization)):
        if not isinstance(value, bool):
            raise TypeError(f"{flag} must be True or False, got {value!r}")
    if min_sqnr is not None and (isinstance(min_sqnr, bool) or not isinstance(min_sqnr, (int, float))
                                 or not math.isfinite(min_sqnr)):
        raise ValueError(f"min_sqnr must be a finite number of dB (or None), got {min_sqnr!r}")
    check_pooled_range_margin(pooled_range_margin)
    if isinstance(keep_float, str):
        keep_float = (keep_float,)
    keep_float = tuple(keep_float)
    if not all(isinstance(k, str) for k in keep_float):
        raise TypeError("keep_float must be a sequence of module paths or node names (str)")
    first, data = first_and_rest(batches(calibration_data))
    if example_inputs is None:
        if first is None:
            raise ValueError("calibration_data holds no batches")
        example = first
    else:
        example = example_inputs[0] if isinstance(example_inputs, (tuple, list)) else example_inputs
        example = next(batches([example]))
    ir_graph, graph_module = trace(model, example)
    ir_graph = passes.run_all(ir_graph)
    if cross_layer_equalization:
        ir_graph = passes.equalize(ir_graph)
    keep_float = keep_float_nodes(ir_graph, keep_float)
    if bias_correction or min_sqnr is not None:
        data = list(data)  # seen again: bias correction needs the ranges, min_sqnr each candidate's output SQNR
    weight_quantizer = WeightQuantizer()
    correction = (BiasCorrection(ir_graph, per_channel, weight_bits, keep_float, weight_quantizer)
                  if bias_correction else None)
    observed = set(ir_graph.inputs) | {n.output for n in ir_graph.nodes}
    observers = calibrate(graph_module, observed, data, lambda: make_observer(method), progress=progress,
                          example_shape=example.shape, taps=correction.taps() if correction else None,
                          to_ir=ir_graph.to_ir)
    ranges = {v: observer.range() for v, observer in observers.items()}
    warn_clipping(observers, ranges, method)
    ranges = widen_pooled_ranges(ir_graph, ranges, pooled_range_margin)

    def build_graph(float_layers, corrections):
        return build_quantized_graph(ir_graph, ranges, per_channel=per_channel, keep_float=float_layers,
                                     weight_bits=weight_bits, method=method, bias_corrections=corrections,
                                     weight_quantizer=weight_quantizer, equalized=cross_layer_equalization)

    def corrections_for(float_layers):
        if correction is None:
            return {}
        return correction.run(lambda c: build_graph(float_layers, c), [x.numpy() for x in data], Model,
                              keep_float=float_layers)

    def build(float_layers, corrections=None):
        """The Model with these layers in float; its biases corrected for exactly that mix unless given."""
        corrections = corrections_for(float_layers) if corrections is None else corrections
        return Model(*build_graph(float_layers, corrections))

    if min_sqnr is None:
        return build(keep_float)
    candidates = [n.name for n in ir_graph.nodes if n.name not in keep_float and _has_float_form(n, ir_graph)]
    # ranking every candidate uses the all-int8 model's corrections (one correction run, not one each)
    int8_corrections = corrections_for(keep_float)
    _, _, qmodel = choose_float_layers(build, OutputSQNR(graph_module, data), candidates, keep_float,
                                       float(min_sqnr), progress=progress,
                                       quick_build=lambda float_layers: build(float_layers, int8_corrections))
    return qmodel


def warn_clipping(observers, ranges, method):
    """One warning naming every value whose calibrated range clips more than CLIP_LIMIT of its calibration
    values: a clipped output is an error the model makes on the data it was calibrated on."""
    from .observers import CLIP_LIMIT

    shares = {v: observers[v].share_outside(*ranges[v]) for v in observers}
    over = sorted((share, v) for v, share in shares.items() if share > CLIP_LIMIT)[::-1]
    if over:
        import warnings
        shown = ", ".join(f"{v} ({share:.1%})" for share, v in over[:8]) + (", ..." if len(over) > 8 else "")
        warnings.warn(f"method={method!r}: the ranges of {len(over)} value(s) clip more than {CLIP_LIMIT:.0%} of "
                      f"their calibration values: {shown}", UserWarning, stacklevel=4)
