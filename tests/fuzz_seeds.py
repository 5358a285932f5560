"""The valid seed graphs the .qnn fuzzer mutates: small, hand-built, together using every op of the format.

Each seed is (graph, tensors, default_hw): a graph dict and numpy tensors as docs/format.md describes
them, and the spatial size an input dimension declared -1 (dynamic) usually gets. They are built from
a fixed generator, so every campaign mutates the same seeds.
"""
import json

import numpy as np

_CONV = {"stride": [1, 1], "padding": [0, 0, 0, 0], "dilation": [1, 1], "groups": 1, "act": "none"}


class _Builder:
    """Appends ops (and their output values and tensors) to a graph with one float32 input 'x'."""

    def __init__(self, shape, rng):
        self.rng = rng
        self.tensors = {}
        self.graph = {"inputs": [{"name": "x", "shape": shape}], "outputs": [],
                      "values": {"x": {"dtype": "float32"}}, "ops": []}

    def op(self, kind, inputs, out, q=None, attrs=None, tensors=None):
        """Adds op `kind` producing value `out`: uint8 with q = (scale, zero_point), or float32 if q is None."""
        self.graph["values"][out] = ({"dtype": "float32"} if q is None else
                                     {"dtype": "uint8", "scale": float(np.float32(q[0])), "zero_point": q[1]})
        self.graph["ops"].append({"op": kind, "name": out, "inputs": list(inputs), "outputs": [out],
                                  "attrs": attrs or {}, "tensors": tensors or {}})
        return out

    def weights(self, name, shape, quantized=True, bias=True):
        """The tensor roles of a conv/linear named `name`: int8 weight + w_scale (or float32 weight), bias."""
        rng, roles = self.rng, {}
        if quantized:
            self.tensors[f"{name}.weight"] = rng.integers(-127, 128, shape).astype(np.int8)
            self.tensors[f"{name}.w_scale"] = rng.uniform(0.002, 0.01, shape[0]).astype(np.float32)
            roles["w_scale"] = f"{name}.w_scale"
        else:
            self.tensors[f"{name}.weight"] = rng.normal(0, 0.3, shape).astype(np.float32)
        roles["weight"] = f"{name}.weight"
        if bias:
            self.tensors[f"{name}.bias"] = rng.normal(0, 0.3, shape[0]).astype(np.float32)
            roles["bias"] = f"{name}.bias"
        return roles

    def conv(self, inp, out, q, shape, quantized=True, bias=True, **attrs):
        kind = "conv2d" if quantized else "conv2d_float"
        return self.op(kind, [inp], out, q, dict(_CONV, **attrs), self.weights(out, shape, quantized, bias))

    def linear(self, inp, out, q, shape, quantized=True, bias=True, act="none"):
        kind = "linear" if quantized else "linear_float"
        return self.op(kind, [inp], out, q, {"act": act}, self.weights(out, shape, quantized, bias))

    def lut(self, inp, out, q):
        self.tensors[f"{out}.table"] = self.rng.integers(0, 256, 256).astype(np.uint8)
        return self.op("lut", [inp], out, q, tensors={"table": f"{out}.table"})

    def keep(self, kind, inp, out, attrs=None):
        """An op that keeps its input's quantization (max_pool2d, flatten)."""
        v = self.graph["values"][inp]
        return self.op(kind, [inp], out, None if v["dtype"] == "float32" else (v["scale"], v["zero_point"]), attrs)

    def done(self, *outputs):
        self.graph["outputs"] = list(outputs)
        # A JSON round trip: no list is shared between two ops, so a mutation edits exactly one place.
        return json.loads(json.dumps(self.graph)), self.tensors


def _pool(kernel, stride, padding, ceil_mode=False, **extra):
    return dict(kernel=kernel, stride=stride, padding=padding, ceil_mode=ceil_mode, **extra)


def _cnn(rng):
    """Dynamic H/W: conv (padded, depthwise strided, grouped dilated asymmetric), pools, adaptive pool
    then a global max pool (kernel = its output size, stride 1), flatten, linear, dequantize, softmax; a mean
    over C and W that drops them (N, H)."""
    b = _Builder([-1, 3, -1, -1], rng)
    b.op("quantize", ["x"], "q0", (0.02, 128))
    b.conv("q0", "c1", (0.05, 0), (8, 3, 3, 3), padding=[1, 1, 1, 1], act="relu")
    b.conv("c1", "dw", (0.03, 0), (8, 1, 3, 3), bias=False, stride=[2, 2], padding=[1, 1, 1, 1], groups=8,
           act="relu6")
    b.conv("dw", "gc", (0.04, 3), (8, 4, 3, 3), dilation=[2, 2], padding=[2, 1, 2, 3], groups=2)
    b.keep("max_pool2d", "gc", "mp", _pool([3, 3], [2, 2], [1, 1], dilation=[1, 1]))
    b.op("avg_pool2d", ["mp"], "ap", (0.035, 12),
         _pool([2, 2], [1, 1], [1, 1], True, count_include_pad=False, divisor_override=0))
    b.op("adaptive_avg_pool2d", ["ap"], "g", (0.03, 5), {"output_size": [3, 3]})
    b.keep("max_pool2d", "g", "gm", _pool([3, 3], [1, 1], [0, 0], dilation=[1, 1]))
    b.keep("flatten", "gm", "f")
    b.linear("f", "fc", (0.1, 128), (10, 8))
    b.op("dequantize", ["fc"], "fo")
    b.op("softmax", ["fo"], "sm", attrs={"dim": 1})
    b.op("reduce", ["ap"], "rd", (0.04, 20), {"mode": "mean", "dims": [1, 3], "keepdim": False})
    b.op("dequantize", ["rd"], "ro")
    return b.done("fo", "sm", "ro"), 12


def _branches(rng):
    """Fixed non-square input: 1x1 conv, lut, add, sub, 3x3 conv, concat on axes 1, 2 and 3 (one input),
    dilated ceil-mode max pool, avg pool with a divisor, a grouped strided dilated float conv."""
    b = _Builder([-1, 4, 7, 9], rng)
    b.op("quantize", ["x"], "q0", (0.03, 120))
    b.conv("q0", "a", (0.04, 0), (6, 4, 1, 1), act="relu")
    b.lut("a", "t", (0.02, 7))
    b.op("add", ["a", "t"], "s", (0.05, 0), {"act": "relu"})
    b.conv("s", "c", (0.05, 100), (6, 6, 3, 3), padding=[1, 1, 1, 1])
    b.op("concat", ["s", "c"], "cc", (0.06, 60), {"axis": 1})
    b.op("concat", ["c", "a"], "ch", (0.05, 90), {"axis": 2})
    b.op("sub", ["t", "a"], "d", (0.03, 128), {"act": "none"})
    b.op("concat", ["d"], "cw", (0.03, 11), {"axis": 3})
    b.keep("max_pool2d", "cc", "mp", _pool([2, 3], [2, 1], [1, 1], True, dilation=[2, 1]))
    b.op("avg_pool2d", ["ch"], "ap", (0.04, 30),
         _pool([3, 3], [2, 2], [1, 1], count_include_pad=True, divisor_override=5))
    b.op("dequantize", ["mp"], "o1")
    b.op("dequantize", ["ap"], "o2")
    b.op("dequantize", ["cw"], "o3")
    b.conv("o1", "cf", None, (6, 4, 3, 3), quantized=False, stride=[2, 1], dilation=[1, 2], padding=[1, 2, 1, 2],
           groups=3)
    return b.done("o1", "o2", "o3", "cf"), 9


def _mlp(rng):
    """(N, F) input: linears with and without bias and ReLU/ReLU6, lut, concat on features, float linear,
    softmax and log_softmax, a mean over the features (N, 1)."""
    b = _Builder([-1, 16], rng)
    b.op("quantize", ["x"], "q0", (0.03, 128))
    b.linear("q0", "h1", (0.05, 0), (12, 16), act="relu")
    b.lut("h1", "h2", (0.04, 3))
    b.linear("h2", "h3", (0.03, 0), (12, 12), bias=False, act="relu6")
    b.op("concat", ["h1", "h3"], "hc", (0.05, 10), {"axis": 1})
    b.linear("hc", "h4", (0.08, 128), (10, 24))
    b.op("dequantize", ["h4"], "o")
    b.linear("o", "lf", None, (5, 10), quantized=False, act="relu")
    b.op("log_softmax", ["lf"], "out", attrs={"dim": 1})
    b.op("softmax", ["o"], "sm", attrs={"dim": 1})
    b.op("reduce", ["h3"], "hm", (0.02, 0), {"mode": "mean", "dims": [1], "keepdim": True})
    b.op("dequantize", ["hm"], "om")
    return b.done("o", "out", "sm", "om"), 1


def _float(rng):
    """Fixed input through float ops: uint8 and float32 flatten, float conv (ReLU6, no bias), GELU, sub and
    LayerNorm in float, float linear (no bias), log_softmax."""
    b = _Builder([-1, 2, 6, 6], rng)
    b.op("quantize", ["x"], "q", (0.05, 128))
    b.keep("flatten", "q", "qf")
    b.op("dequantize", ["qf"], "d1")
    b.op("dequantize", ["q"], "d")
    b.conv("d", "cf0", None, (4, 2, 3, 3), quantized=False, bias=False, act="relu6")
    b.op("unary_float", ["cf0"], "uf", attrs={"fn": "gelu", "a": 0.0, "b": 0.0})
    b.op("binary_float", ["uf", "cf0"], "bf", attrs={"fn": "sub"})
    b.tensors["lnf.weight"] = rng.uniform(0.5, 2.0, 4).astype(np.float32)
    b.tensors["lnf.bias"] = rng.uniform(-1.0, 1.0, 4).astype(np.float32)
    b.op("layer_norm_float", ["bf"], "cf", attrs={"eps": 1e-5}, tensors={"weight": "lnf.weight", "bias": "lnf.bias"})
    b.keep("flatten", "cf", "ff")
    b.linear("ff", "lf", None, (3, 64), quantized=False, bias=False)
    b.op("log_softmax", ["lf"], "out", attrs={"dim": 1})
    return b.done("d1", "out"), 6


def _gates(rng):
    """Dynamic H/W: a squeeze-excitation gate (pool to 1x1, 1x1 convs, a table) times its input, a
    channel shuffle (gather_channels on uint8 and on float32), a same-shape mul, a table per channel, a
    LayerNorm over the channels, a GroupNorm, a sum over the channels (N, 1, H, W)."""
    b = _Builder([-1, 3, -1, -1], rng)
    b.op("quantize", ["x"], "q0", (0.02, 128))
    b.conv("q0", "c1", (0.05, 0), (8, 3, 1, 1), act="relu")
    b.op("adaptive_avg_pool2d", ["c1"], "p", (0.03, 0), {"output_size": [1, 1]})
    b.conv("p", "s1", (0.04, 0), (4, 8, 1, 1), act="relu")
    b.conv("s1", "s2", (0.05, 128), (8, 4, 1, 1))
    b.lut("s2", "gate", (1 / 255, 0))
    b.op("mul", ["gate", "c1"], "se", (0.04, 0))
    b.tensors["sh.index"] = np.array([0, 4, 1, 5, 2, 6, 3, 7], np.int32)
    b.keep("gather_channels", "se", "sh")
    b.graph["ops"][-1]["tensors"] = {"index": "sh.index"}
    b.op("mul", ["sh", "c1"], "m2", (0.06, 3))
    b.tensors["pr.table"] = rng.integers(0, 256, (8, 256)).astype(np.uint8)
    b.op("lut_channels", ["m2"], "pr", (0.05, 9), tensors={"table": "pr.table"})
    b.tensors["ln.weight"] = rng.uniform(0.5, 2.0, 8).astype(np.float32)
    b.tensors["ln.bias"] = rng.uniform(-1.0, 1.0, 8).astype(np.float32)
    b.op("layer_norm", ["pr"], "ln0", (0.03, 128), {"eps": 1e-5}, tensors={"weight": "ln.weight", "bias": "ln.bias"})
    b.op("group_norm", ["ln0"], "ln", (0.03, 120), {"eps": 1e-5, "groups": 4},
         tensors={"weight": "ln.weight", "bias": "ln.bias"})
    b.op("dequantize", ["ln"], "o")
    b.tensors["fg.index"] = np.array([7, 7, 0, 2], np.int32)
    b.keep("gather_channels", "o", "fg")
    b.graph["ops"][-1]["tensors"] = {"index": "fg.index"}
    b.op("reduce", ["ln"], "rs", (0.3, 128), {"mode": "sum", "dims": [1], "keepdim": True})
    b.op("dequantize", ["rs"], "so")
    return b.done("o", "fg", "so"), 10


def _resize(rng):
    """Dynamic H/W, a segmentation head's shape: resize bilinear by scale factors, nearest to a fixed size,
    bilinear with align_corners back to the input's H and W (a second input), constant padding."""
    b = _Builder([-1, 3, -1, -1], rng)
    b.op("quantize", ["x"], "q0", (0.02, 128))
    b.conv("q0", "c1", (0.05, 0), (4, 3, 3, 3), stride=[2, 2], padding=[1, 1, 1, 1], act="relu")
    resize = {"mode": "bilinear", "align_corners": False, "size": [0, 0], "scale_h": 1.5, "scale_w": 2.0}
    b.keep("resize", "c1", "up", resize)
    b.keep("resize", "up", "fx", dict(resize, mode="nearest", size=[5, 7], scale_h=0.0, scale_w=0.0))
    b.keep("pad", "fx", "pd", {"padding": [1, 0, 2, 3], "fill_code": 7})
    back = b.keep("resize", "pd", "back", dict(resize, align_corners=True, scale_h=0.0, scale_w=0.0))
    b.graph["ops"][-1]["inputs"].append("q0")
    b.op("dequantize", [back], "o")
    return b.done("o"), 11


def _encoder(rng):
    """A transformer block on int64 token ids and mask (both (N, S), S dynamic): embedding (int8 word table)
    with a token type table, float LayerNorm, q/k/v as linear_dynamic (one smoothed), attention with the mask's bias, a GELU
    linear, a residual add and LayerNorm over (N, S, F)."""
    f, v, positions = 16, 50, 40
    graph = {"inputs": [{"name": "ids", "shape": [-1, -1]}, {"name": "mask", "shape": [-1, -1]}], "outputs": [],
             "values": {"ids": {"dtype": "int64"}, "mask": {"dtype": "int64"}}, "ops": []}
    tensors = {"word_q": rng.integers(-127, 128, (v, f)).astype(np.int8),
               "word_scale": rng.uniform(0.005, 0.02, v).astype(np.float32),
               "position": rng.normal(0, 1, (positions, f)).astype(np.float32),
               "token_type": rng.normal(0, 1, (2, f)).astype(np.float32),
               "ln.weight": rng.uniform(0.5, 1.5, f).astype(np.float32), "ln.bias": rng.normal(0, 0.1, f).astype(np.float32)}

    def op(kind, inputs, out, attrs=None, roles=None):
        graph["values"][out] = {"dtype": "float32"}
        graph["ops"].append({"op": kind, "name": out, "inputs": inputs, "outputs": [out], "attrs": attrs or {},
                             "tensors": roles or {}})
        return out

    def linear(inp, out, n, k, act="none", smooth=False):
        tensors[f"{out}.weight"] = rng.integers(-127, 128, (n, k)).astype(np.int8)
        tensors[f"{out}.w_scale"] = rng.uniform(0.002, 0.01, n).astype(np.float32)
        tensors[f"{out}.bias"] = rng.normal(0, 0.3, n).astype(np.float32)
        roles = {"weight": f"{out}.weight", "w_scale": f"{out}.w_scale", "bias": f"{out}.bias"}
        if smooth:
            tensors[f"{out}.in_scale"] = rng.uniform(0.25, 4.0, k).astype(np.float32)
            roles["in_scale"] = f"{out}.in_scale"
        return op("linear_dynamic", [inp], out, {"act": act}, roles)

    e = op("embedding", ["ids"], "e", roles={"word_q": "word_q", "word_scale": "word_scale", "position": "position",
                                            "token_type": "token_type"})
    h = op("layer_norm_float", [e], "h", {"eps": 1e-12}, {"weight": "ln.weight", "bias": "ln.bias"})
    bias = op("attention_bias", ["mask"], "bias")
    q, k, val = linear(h, "q", f, f, smooth=True), linear(h, "k", f, f), linear(h, "v", f, f)
    a = op("attention", [q, k, val, bias], "a", {"heads": 2, "scale": 0.35355339059327373})
    g = linear(a, "ff", f, f, act="gelu")
    r = op("binary_float", [g, h], "r", {"fn": "add"})
    op("layer_norm_float", [r], "o", {"eps": 1e-12}, {"weight": "ln.weight", "bias": "ln.bias"})
    graph["outputs"] = ["o"]
    return (json.loads(json.dumps(graph)), tensors), 9


_SEEDS = {"cnn": _cnn, "branches": _branches, "mlp": _mlp, "float": _float, "gates": _gates, "resize": _resize,
          "encoder": _encoder}
_cache = {}


def seed_names():
    return list(_SEEDS)


def seed(name):
    """A fresh copy of seed `name`: (graph, tensors, default_hw); the caller may edit it freely."""
    if name not in _cache:
        (graph, tensors), hw = _SEEDS[name](np.random.default_rng(2024))
        _cache[name] = (json.dumps(graph), tensors, hw)
    text, tensors, hw = _cache[name]
    return json.loads(text), {k: v.copy() for k, v in tensors.items()}, hw
