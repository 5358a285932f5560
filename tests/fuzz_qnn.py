"""The .qnn fuzz engine: structure-aware mutations of seed graphs and raw byte edits, reproducible from
(seed, index), and the verdict of one case (reader -> engine -> qruntime.reference, compared).

A case is make_case(seed, index): a seed graph from fuzz_seeds with 1-3 graph mutations, resealed by
qruntime.format._encode (a correct hash, no validation) so it reaches the reader's graph checks and
the engine; or raw edits of the file's bytes (flips, truncation, header length, header JSON entries),
resealed where the header still parses. evaluate(case) reads it, builds a qruntime.Model, runs it on
an input of the declared shape and compares with reference.run_graph. fuzz_sandbox runs evaluate in
worker processes with memory and time limits, so crashes and hangs become verdicts too.
"""
import hashlib
import json
import math
import os
import re
import resource
import signal
import struct
import time
from dataclasses import dataclass

import numpy as np

import fuzz_seeds
import qruntime
from qruntime import format as qnn, reference

# Values an int attr, list element or shape dimension is set to: the edges of every range and type.
SPECIAL = (0, -1, 1, 2, 3, 2**31 - 1, 2**31, 2**62, -2**63, True, 1.5, 1e-30, 1e30, 1e-31, "x", None, [])
# Ints the validator accepts (>= 1, <= 2^31 - 1) that stress the engine's size arithmetic.
BIG = (2, 3, 7, 64, 1000, 2**16, 2**20, 2**30 - 1, 2**30, 2**31 - 1)
SCALES = (0.0, -1.0, 1e-45, 1e-38, float(np.finfo(np.float32).tiny), 1e-10, 1e-5, 1.0, 255.0, 1e10, 1e38,
          float(np.finfo(np.float32).max), 3.5e38, 1e300, 1, True, "x", None)
ZERO_POINTS = (0, 1, 127, 128, 254, 255, 256, -1, 1.5, True, 2**31, None)
FLOATS = (float("nan"), float("inf"), -float("inf"), 0.0, -1.0, 1e-45, 1e-38, 1e9, 1e38, 3.4e38, -3.4e38)
NAMES = ("", "ü", "a b", "x" * 300, "0", "__metadata__", "inputs", "\t", "\x00")
ACTS = ("none", "relu", "relu6", "gelu", "")
SIZES = (1, 2, 3, 4, 5, 7, 8, 13, 16, 31, 64)  # a dynamic H/W gets the seed's default size or one of these
MAX_INPUT_ELEMENTS = 1 << 22  # a declared input larger than this is not built (outcome "skipped")
MAX_ACTIVATION_BYTES = 256 << 20  # the workers' qruntime.set_max_activation_bytes (see prepare_worker)
CLEAN = (ValueError, TypeError)  # what a bad file may raise (qruntime.FormatError is a ValueError)
FLOAT_OPS = ("conv2d_float", "linear_float", "softmax", "log_softmax")  # float32 sums vs float64
DEFAULT_ATTRS = {
    "conv2d": {"stride": [1, 1], "padding": [0, 0, 0, 0], "dilation": [1, 1], "groups": 1, "act": "none"},
    "linear": {"act": "none"},
    "max_pool2d": {"kernel": [2, 2], "stride": [2, 2], "padding": [0, 0], "dilation": [1, 1], "ceil_mode": False},
    "avg_pool2d": {"kernel": [2, 2], "stride": [2, 2], "padding": [0, 0], "ceil_mode": False,
                   "count_include_pad": True, "divisor_override": 0},
    "adaptive_avg_pool2d": {"output_size": [1, 1]},
    "add": {"act": "none"},
    "sub": {"act": "none"},
    "concat": {"axis": 1},
    "softmax": {"dim": 1},
    "layer_norm": {"eps": 1e-5},
    "group_norm": {"eps": 1e-5, "groups": 1},
    "reduce": {"mode": "mean", "dims": [2, 3], "keepdim": True},
    "layer_norm_float": {"eps": 1e-5},
    "unary_float": {"fn": "tanh", "a": 0.0, "b": 0.0},
    "binary_float": {"fn": "add"},
    "attention": {"heads": 1, "scale": 0.25},
    "linear_dynamic": {"act": "none"},
}
DEFAULT_ATTRS.update(conv2d_float=DEFAULT_ATTRS["conv2d"], linear_float=DEFAULT_ATTRS["linear"],
                     log_softmax=DEFAULT_ATTRS["softmax"])


@dataclass
class Case:
    seed: int
    index: int
    data: bytes
    desc: str  # the seed and every mutation, one line
    default_hw: int


def _pick(rng, seq):
    return seq[int(rng.integers(len(seq)))]


def _big(rng):
    """A valid but extreme size: one of BIG, or log-uniform in [2, 2^31 - 1]."""
    return _pick(rng, BIG) if rng.random() < 0.6 else min(int(2 ** rng.uniform(1, 31)), 2**31 - 1)


def _at(graph, i):
    op = graph["ops"][i]
    return f"ops[{i}]({op.get('op')} {op.get('name')!r})" if isinstance(op, dict) else f"ops[{i}]"


def _ops(graph, kinds=None, key=None):
    """Indices of the ops (dicts) of `kinds` (all if None) whose `key` entry is a dict (if given)."""
    return [i for i, op in enumerate(graph["ops"]) if isinstance(op, dict)
            and (kinds is None or op.get("op") in kinds) and (key is None or isinstance(op.get(key), dict))]


def _show(value):
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


# --- graph mutations: each edits (graph, tensors) in place and says what it did, or None if it cannot ---

def mut_attr(rng, g, t):
    """Any attr or list element -> a SPECIAL / BIG value or an activation name; or an attr dropped / added."""
    sites = [(i, k) for i in _ops(g, key="attrs") for k in g["ops"][i]["attrs"]]
    if not sites:
        return None
    i, k = _pick(rng, sites)
    attrs = g["ops"][i]["attrs"]
    value = _pick(rng, SPECIAL + BIG + ACTS)
    r = rng.random()
    if isinstance(attrs[k], list) and attrs[k] and r < 0.75:
        j = int(rng.integers(len(attrs[k])))
        attrs[k][j] = value
        return f"{_at(g, i)}.attrs.{k}[{j}] = {_show(value)}"
    if r < 0.85:
        attrs[k] = value
        return f"{_at(g, i)}.attrs.{k} = {_show(value)}"
    if r < 0.92:
        del attrs[k]
        return f"{_at(g, i)}.attrs.{k} removed"
    attrs["bogus"] = value
    return f"{_at(g, i)}.attrs.bogus = {_show(value)} added"


def _wrap_pair(rng):
    """Two valid sizes (<= 2^31 - 1) whose product times a small factor m (a batch, a channel count, an
    element size) lands just past 2^32 or 2^64: a size computed from them in int32/int64 wraps to a
    small number (the best of a few tries, so the wrapped size is small enough to allocate)."""
    k, m = _pick(rng, (32, 63, 64, 64)), _pick(rng, (1, 2, 3, 4, 6, 8, 12, 16, 24, 32))
    target = -(-(1 << k) // m)
    low = -(-target // (2**31 - 1))
    if low >= 2**31 - 1:
        return _big(rng), _big(rng)
    tries = [(v, -(-target // v)) for v in (int(rng.integers(low, 2**31 - 1)) for _ in range(8))]
    v1, v2 = min(tries, key=lambda p: p[0] * p[1] - target)
    return (v1, v2) if rng.random() < 0.5 else (v2, v1)


def _big_pair(rng):
    """Sizes for both axes: independent, equal, or a wrapping pair."""
    r = rng.random()
    if r < 0.4:
        return _big(rng), _big(rng)
    if r < 0.6:
        return (_big(rng),) * 2
    return _wrap_pair(rng)


def _set_axes(rng, attrs, key, axes, values):
    """attrs[key][a] = values[a] for a in axes (a pool's padding follows its kernel: up to kernel // 2)."""
    for a in axes:
        attrs[key][a] = values[a]
        if key == "kernel" and isinstance(attrs.get("padding"), list) and len(attrs["padding"]) == 2:
            attrs["padding"][a] = _pick(rng, (values[a] // 2, int(rng.integers(values[a] // 2 + 1)),
                                              attrs["padding"][a]))
    pad = f", padding {attrs['padding']}" if key == "kernel" and "padding" in attrs else ""
    return f".attrs.{key}{list(axes)} = {[values[a] for a in axes]}{pad}"


def mut_window(rng, g, t):
    """A pool's kernel (its padding up to kernel // 2, as the validator allows), stride or dilation, or a
    conv's padding, stride or dilation -> valid but extreme sizes, on one axis or both."""
    sites = _ops(g, ("max_pool2d", "avg_pool2d", "conv2d", "conv2d_float", "resize", "pad"), "attrs")
    if not sites:
        return None
    i = _pick(rng, sites)
    attrs = g["ops"][i]["attrs"]
    if g["ops"][i]["op"] == "resize":  # a huge output, by size or by scale factor
        if attrs.get("size") == [0, 0] and isinstance(attrs.get("scale_h"), float):
            attrs["scale_h"], attrs["scale_w"] = (float(v) for v in _big_pair(rng))
            return f"{_at(g, i)}.attrs.scale_h, scale_w = {attrs['scale_h']}, {attrs['scale_w']}"
        if isinstance(attrs.get("size"), list) and attrs["size"] != [0, 0]:
            attrs["size"] = list(_big_pair(rng))
            return f"{_at(g, i)}.attrs.size = {attrs['size']}"
        return None
    if g["ops"][i]["op"] == "pad" and isinstance(attrs.get("padding"), list) and len(attrs["padding"]) == 4:
        side, value = int(rng.integers(4)), _big(rng)
        attrs["padding"][side] = value
        return f"{_at(g, i)}.attrs.padding[{side}] = {value}"
    pool = g["ops"][i]["op"].endswith("pool2d")
    key = _pick(rng, ("kernel", "kernel", "stride", "dilation") if pool else ("padding", "padding", "stride",
                                                                              "dilation"))
    if key not in attrs or not isinstance(attrs[key], list) or len(attrs[key]) < 2:
        return None
    values = _big_pair(rng)
    if key == "padding":  # conv: [top, left, bottom, right]: one side, both of an axis, or all four
        sides = _pick(rng, ([0], [1], [2], [3], [0, 2], [1, 3], [0, 1, 2, 3]))
        for side in sides:
            attrs[key][side] = values[side % 2]
        return f"{_at(g, i)}.attrs.padding{sides} = {[values[side % 2] for side in sides]}"
    return _at(g, i) + _set_axes(rng, attrs, key, _pick(rng, ((0,), (1,), (0, 1))), values)


def mut_linked(rng, g, t):
    """An adaptive pool's output_size and the kernel of a pool reading it set to the same big sizes (a
    global pool over a huge map), with stride 1 and no padding."""
    pools = _ops(g, ("max_pool2d", "avg_pool2d"), "attrs")
    pairs = [(i, j) for i in _ops(g, ("adaptive_avg_pool2d",), "attrs") for j in pools
             if g["ops"][i].get("outputs") and g["ops"][i]["outputs"][0] in (g["ops"][j].get("inputs") or [])]
    if not pairs:
        return None
    i, j = _pick(rng, pairs)
    size, pool = g["ops"][i]["attrs"], g["ops"][j]["attrs"]
    axes, values = _pick(rng, ((0,), (1,), (0, 1), (0, 1))), _big_pair(rng)
    for attrs, key, value in ((size, "output_size", values), (pool, "kernel", values), (pool, "stride", (1, 1)),
                              (pool, "padding", (0, 0))):
        if isinstance(attrs.get(key), list) and len(attrs[key]) == 2:
            for a in axes:
                attrs[key][a] = value[a]
    return (f"{_at(g, i)}.attrs.output_size and {_at(g, j)}.attrs.kernel {list(axes)} = "
            f"{[values[a] for a in axes]} (stride 1, pad 0)")


def mut_input_shape(rng, g, t):
    """A graph input's shape: a dimension -> SPECIAL / BIG, a dimension dropped or added, or not a list."""
    if not (isinstance(g["inputs"], list) and g["inputs"] and isinstance(g["inputs"][0], dict)):
        return None
    j = int(rng.integers(len(g["inputs"])))
    entry = g["inputs"][j]
    shape, r = entry.get("shape"), rng.random()
    if isinstance(shape, list) and shape and r < 0.65:
        d = int(rng.integers(len(shape)))
        shape[d] = _pick(rng, SPECIAL + BIG)
        return f"inputs[{j}].shape[{d}] = {_show(shape[d])}"
    if isinstance(shape, list) and r < 0.85:
        if shape and rng.random() < 0.5:
            shape.pop()
        else:
            shape.append(_pick(rng, (1, 2, -1)))
        return f"inputs[{j}].shape = {shape}"
    entry["shape"] = _pick(rng, SPECIAL)
    return f"inputs[{j}].shape = {_show(entry['shape'])}"


def mut_value(rng, g, t):
    """A value's scale or zero point (of a uint8 value, mostly) -> an edge (the smallest normal float32, the
    largest, 1e-45, 0, wrong types); its dtype changed; or a key dropped or added."""
    if not isinstance(g["values"], dict) or not g["values"]:
        return None
    field = _pick(rng, ("scale", "scale", "scale", "zero_point", "zero_point", "dtype", "drop", "extra"))
    quantized = [n for n, v in g["values"].items() if isinstance(v, dict) and "scale" in v]
    name = _pick(rng, quantized if quantized and field in ("scale", "zero_point") and rng.random() < 0.9
                 else list(g["values"]))
    v = g["values"][name]
    if field == "drop" and v:
        key = _pick(rng, list(v))
        del v[key]
        return f"values[{name!r}].{key} removed"
    new = {"dtype": ("uint8", "float32", "int8", "float64", None, 1), "scale": SCALES, "zero_point": ZERO_POINTS,
           "extra": SPECIAL, "drop": SPECIAL}[field]
    key = "bogus" if field in ("extra", "drop") else field
    v[key] = _pick(rng, new)
    return f"values[{name!r}].{key} = {_show(v[key])}"


def mut_op_kind(rng, g, t):
    """An op's kind -> another op (with that op's default attrs half the time) or a non-op."""
    sites = _ops(g)
    if not sites:
        return None
    i = _pick(rng, sites)
    op = g["ops"][i]
    old, new = op.get("op"), _pick(rng, list(qnn.OPS) + ["", "Conv2d", None])
    op["op"] = new
    desc = f"{_at(g, i)} was {old!r}"
    if new in qnn.OPS and rng.random() < 0.5:
        op["attrs"] = json.loads(json.dumps(DEFAULT_ATTRS.get(new, {})))
        desc += ", default attrs"
    return desc


def mut_wiring(rng, g, t):
    """Op inputs/outputs and graph outputs renamed: undefined, self-reference, a later value (a cycle), an
    earlier value of the same dtype (a well-typed rewiring), duplicates, wrong counts; op names."""
    sites = [i for i in _ops(g) if isinstance(g["ops"][i].get("inputs"), list)
             and isinstance(g["ops"][i].get("outputs"), list)]
    if not sites or not isinstance(g["values"], dict):
        return None
    i = _pick(rng, sites)
    op = g["ops"][i]
    ins, outs = op["inputs"], op["outputs"]
    produced = [o for k in _ops(g) for o in (g["ops"][k].get("outputs") or []) if isinstance(o, str)]
    before = [e["name"] for e in g["inputs"] if isinstance(e, dict)] + produced[:i]
    later = produced[i + 1:]
    dtype = lambda name: (g["values"].get(name) or {}).get("dtype") if isinstance(name, str) else None  # noqa: E731
    action = _pick(rng, ("undefined", "self", "later", "earlier", "earlier", "earlier", "dup_input", "drop_input",
                         "output_existing", "two_outputs", "no_outputs", "junk_inputs", "graph_outputs",
                         "graph_input", "op_name"))
    j = int(rng.integers(len(ins))) if ins else 0
    if action in ("undefined", "self", "later", "earlier") and ins:
        same = [n for n in before if dtype(n) == dtype(ins[j]) and n != ins[j]]
        options = {"undefined": ["nowhere"], "self": outs[:1], "later": later,
                   "earlier": same if same and rng.random() < 0.8 else before}[action]
        if not options:
            return None
        ins[j] = _pick(rng, options)
        return f"{_at(g, i)}.inputs[{j}] = {ins[j]!r} ({action})"
    if action == "dup_input" and ins:
        ins.append(ins[j])
        return f"{_at(g, i)}.inputs += {ins[j]!r}"
    if action == "drop_input" and ins:
        ins.pop(j)
        return f"{_at(g, i)}.inputs[{j}] removed"
    if action == "output_existing" and outs and before:
        outs[0] = _pick(rng, before)
        return f"{_at(g, i)}.outputs[0] = {outs[0]!r} (defined twice)"
    if action == "two_outputs":
        outs.append(_pick(rng, list(g["values"])))
        return f"{_at(g, i)}.outputs = {outs}"
    if action == "no_outputs":
        op["outputs"] = []
        return f"{_at(g, i)}.outputs = []"
    if action == "junk_inputs":
        op["inputs"] = _pick(rng, SPECIAL)
        return f"{_at(g, i)}.inputs = {_show(op['inputs'])}"
    if action == "graph_outputs" and isinstance(g["outputs"], list):
        r = rng.random()
        if r < 0.5:
            g["outputs"].append(_pick(rng, list(g["values"]) + ["nowhere"]))
        elif r < 0.8 and g["outputs"]:
            g["outputs"].pop(int(rng.integers(len(g["outputs"]))))
        else:
            g["outputs"] = _pick(rng, SPECIAL)
        return f"graph outputs = {_show(g['outputs'])}"
    if action == "graph_input" and isinstance(g["inputs"], list) and g["inputs"] and isinstance(g["inputs"][0], dict):
        g["inputs"][0]["name"] = _pick(rng, list(g["values"]) + ["nowhere", 3])
        return f"inputs[0].name = {g['inputs'][0]['name']!r}"
    if action == "op_name":
        op["name"] = _pick(rng, NAMES[:-1] + (None, 5))
        return f"{_at(g, i)}.name = {_show(op['name'])}"
    return None


def _rename(obj, old, new):
    """obj (the graph's lists and dicts) with every string `old` and dict key `old` replaced by `new`."""
    if isinstance(obj, dict):
        return {(new if k == old else k): _rename(v, old, new) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_rename(v, old, new) for v in obj]
    return new if obj == old and isinstance(obj, str) else obj


def mut_rename(rng, g, t):
    """A value or tensor renamed everywhere (odd names: unicode, long, empty, '__metadata__'), or the values
    listed in another order: mostly valid graphs."""
    action = _pick(rng, ("value", "tensor", "shuffle"))
    if action == "shuffle" and isinstance(g["values"], dict):
        names = list(g["values"])
        g["values"] = {n: g["values"][n] for n in (names[k] for k in rng.permutation(len(names)))}
        return "values reordered"
    if action == "tensor" and t:
        old, new = _pick(rng, sorted(t)), _pick(rng, NAMES)
        t[new] = t.pop(old)
        for i in _ops(g, key="tensors"):
            g["ops"][i]["tensors"] = _rename(g["ops"][i]["tensors"], old, new)
        return f"tensor {old!r} renamed {_show(new)}"
    if action == "value" and isinstance(g["values"], dict):
        old, new = _pick(rng, list(g["values"])), _pick(rng, NAMES)
        for key in ("inputs", "outputs", "values", "ops"):
            g[key] = _rename(g[key], old, new)
        return f"value {old!r} renamed {_show(new)}"
    return None


def mut_role(rng, g, t):
    """A tensor role -> another tensor, a missing name or a non-string; a role dropped; an unknown role; a
    bias added (a new tensor of the right size with extreme values)."""
    sites = _ops(g, key="tensors")
    if not sites or not t:
        return None
    i = _pick(rng, sites)
    op, roles = g["ops"][i], g["ops"][i]["tensors"]
    action = _pick(rng, ("other", "other", "missing", "junk", "drop", "unknown", "bias"))
    role = _pick(rng, sorted(roles, key=str)) if roles else "weight"
    if action == "bias":
        weight = t.get(roles.get("weight")) if isinstance(roles.get("weight"), str) else None
        if weight is None or weight.ndim < 1:
            return None
        name = f"{op.get('name')}.fuzz_bias"
        t[name] = np.full(weight.shape[0], _pick(rng, FLOATS[3:]), np.float32)
        roles["bias"] = name
        return f"{_at(g, i)}.tensors.bias = {t[name][0]} x {weight.shape[0]} (new)"
    if action == "drop" and roles:
        del roles[role]
        return f"{_at(g, i)}.tensors.{role} removed"
    value = {"other": _pick(rng, sorted(t)), "missing": "missing.tensor", "junk": _pick(rng, SPECIAL),
             "unknown": _pick(rng, sorted(t))}.get(action)
    roles["bogus" if action == "unknown" else role] = value
    return f"{_at(g, i)}.tensors.{'bogus' if action == 'unknown' else role} = {_show(value)}"


def _fresh(rng, shape, like):
    """Random values of `like`'s dtype: int8 weights, positive scales, normal floats, table bytes."""
    if like.dtype == np.int8:
        return rng.integers(-127, 128, shape).astype(np.int8)
    if like.dtype == np.uint8:
        return rng.integers(0, 256, shape).astype(np.uint8)
    if like.size and like.min() > 0:
        return rng.uniform(0.002, 0.01, shape).astype(like.dtype)
    return rng.normal(0, 0.3, shape).astype(like.dtype)


def _resize(rng, g, t, name):
    """Valid-looking new sizes for tensor `name`: a dimension of a weight changes, and w_scale / bias follow
    its output channels, so the file passes the reader and the engine meets the shape mismatch."""
    old = t[name]
    if old.ndim == 0:
        return None
    shape = list(old.shape)
    d = int(rng.integers(len(shape)))
    shape[d] = _pick(rng, (1, 2, 3, 5, 7, 15, 33, 64, 255, 257, shape[d] + 1, 3 * shape[d]))
    t[name] = _fresh(rng, shape, old)
    if d == 0:  # the output channels: the op's per-channel tensors follow
        for i in _ops(g, key="tensors"):
            roles = g["ops"][i]["tensors"]
            if roles.get("weight") == name:
                for role in ("w_scale", "bias"):
                    other = roles.get(role)
                    if isinstance(other, str) and other in t and t[other].ndim == 1:
                        t[other] = _fresh(rng, (shape[0],), t[other])
    return f"tensor {name!r} resized {tuple(old.shape)} -> {tuple(shape)}"


def mut_tensor(rng, g, t):
    """A tensor -> another storable dtype, a wrong shape, extreme values (-128, NaN, inf, 1e-45, 3.4e38, ...)
    or consistent new sizes."""
    if not t:
        return None
    name = _pick(rng, sorted(t))
    a = t[name]
    action = _pick(rng, ("dtype", "shape", "values", "values", "resize", "resize"))
    if action == "resize":
        return _resize(rng, g, t, name)
    if action == "dtype":
        dtype = _pick(rng, [d for d in (np.int8, np.uint8, np.float32, np.int32) if d != a.dtype])
        with np.errstate(all="ignore"):
            t[name] = a.astype(dtype)
        return f"tensor {name!r} as {np.dtype(dtype).name}"
    if action == "shape":
        variants = [a.reshape(-1), a[None], a[..., :0], np.concatenate([a, a[:1]]) if a.ndim else a[None],
                    a.T.copy(), a.reshape(a.shape[0], -1) if a.ndim else a[None]]
        t[name] = np.ascontiguousarray(_pick(rng, variants))
        return f"tensor {name!r} shape {a.shape} -> {t[name].shape}"
    a = a.copy()
    flat = a.reshape(-1)
    if not flat.size:
        return None
    if a.dtype == np.int8:
        value = _pick(rng, (-128, 127, -127, 0))
    elif a.dtype == np.uint8:
        value = _pick(rng, (0, 255))
    elif a.dtype == np.int32:
        value = _pick(rng, (-2**31, 2**31 - 1, 0))
    else:
        value = _pick(rng, FLOATS)
    everywhere = rng.random() < 0.4
    flat[:] = value if everywhere else flat
    flat[int(rng.integers(flat.size))] = value
    t[name] = a
    return f"tensor {name!r} {'all' if everywhere else 'one element'} = {value}"


def mut_ops_list(rng, g, t):
    """Ops duplicated, removed, swapped, moved; or bypassed (removed with its readers rewired to its input)."""
    ops = g["ops"]
    if not isinstance(ops, list) or not ops:
        return None
    i = int(rng.integers(len(ops)))
    action = _pick(rng, ("duplicate", "remove", "swap", "move", "bypass", "bypass"))
    if action == "duplicate":
        ops.insert(i + 1, json.loads(json.dumps(ops[i])))
    elif action == "remove":
        ops.pop(i)
    elif action == "swap" and i + 1 < len(ops):
        ops[i], ops[i + 1] = ops[i + 1], ops[i]
    elif action == "move":
        ops.insert(0 if rng.random() < 0.5 else len(ops), ops.pop(i))
    elif action == "bypass" and i in _ops(g, key="tensors") and (g["ops"][i].get("inputs") or [None])[0]:
        op = ops.pop(i)
        src, out = op["inputs"][0], (op.get("outputs") or [None])[0]
        for name in op["tensors"].values():
            if isinstance(name, str):
                t.pop(name, None)
        if isinstance(g["values"], dict) and isinstance(out, str):
            g["values"].pop(out, None)
        for key in ("ops", "outputs"):
            g[key] = _rename(g[key], out, src)
        return f"{op.get('op')} {op.get('name')!r} bypassed ({out!r} -> {src!r})"
    else:
        return None
    return f"ops[{i}] {action}"


def mut_graph(rng, g, t):
    """Top-level keys: dropped, unknown, a quantization record (7-bit, with the weights clipped to [-64, 64]
    so it stays valid, or not), an input listed twice."""
    action = _pick(rng, ("drop", "unknown", "seven_bit", "seven_bit", "quantization", "input_twice"))
    if action == "drop":
        key = _pick(rng, sorted(g))
        del g[key]
        return f"graph.{key} removed"
    if action == "unknown":
        g["bogus"] = _pick(rng, SPECIAL)
        return "graph.bogus added"
    if action == "input_twice" and isinstance(g["inputs"], list):
        g["inputs"].append(json.loads(json.dumps(g["inputs"][0])))
        return "graph inputs[0] listed twice"
    if action == "seven_bit":
        g["quantization"] = {"weight_bits": 7, "method": "minmax", "per_channel": True}
        clipped = rng.random() < 0.8
        for name in list(t):
            if clipped and t[name].dtype == np.int8:
                t[name] = np.clip(t[name], -64, 64)
        return f"quantization weight_bits 7, weights {'clipped' if clipped else 'left'}"
    g["quantization"] = {"weight_bits": _pick(rng, (7, 8, 6, True)), "method": _pick(rng, ("minmax", "mse", "x")),
                         "per_channel": _pick(rng, (True, 1))}
    return f"quantization = {g['quantization']}"


# Mutation -> weight. Those that keep a graph valid (window, linked, rename, tensor resizes, same-dtype
# rewiring, bypass, 7-bit) weigh more: a case reaches the engine only if all its mutations pass the reader.
GRAPH_MUTATIONS = ((mut_attr, 3), (mut_window, 3), (mut_linked, 1.5), (mut_input_shape, 1), (mut_value, 2),
                   (mut_op_kind, 1), (mut_wiring, 2), (mut_rename, 1), (mut_role, 1), (mut_tensor, 2.5),
                   (mut_ops_list, 1), (mut_graph, 0.7))


# --- raw mutations of the file's bytes ----------------------------------------------------------------

def _split(data):
    """(header dict, data section) of a file, or None when its header does not parse."""
    try:
        (n,) = struct.unpack("<Q", data[:8])
        header = json.loads(data[8:8 + n])
        return (header, data[8 + n:]) if isinstance(header, dict) else None
    except (ValueError, struct.error):
        return None


def _seal(header, body, reseal):
    """The file for `header` and `body`; with reseal, __metadata__.sha256 recomputed (as format 1 or 2)."""
    meta = header.get("__metadata__")
    if reseal and isinstance(meta, dict):
        if meta.get("qnn_format") == "1":
            meta["sha256"] = hashlib.sha256(body).hexdigest()
        else:
            try:
                meta["sha256"] = qnn._digest(header, body)
            except (TypeError, ValueError, AttributeError):
                pass  # a header the canonical form cannot hold: left unsealed
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + body


def _edit_text(rng, text):
    """A character deleted, inserted or a span duplicated; or a number -> NaN, Infinity, 1e999 (JSON text
    is the only way to write them: the writer refuses non-finite floats)."""
    k = int(rng.integers(len(text) + 1))
    action = _pick(rng, ("delete", "insert", "duplicate", "constant"))
    numbers = [m.span() for m in re.finditer(r"-?\d+(\.\d+)?([eE][-+]?\d+)?", text)]
    if action == "constant" and numbers:
        (a, b), c = _pick(rng, numbers), _pick(rng, ("NaN", "Infinity", "-Infinity", "1e999", "-0", "1E400"))
        return text[:a] + c + text[b:], f"{text[a:b]!r} at {a} -> {c}"
    if action == "delete":
        return text[:k] + text[k + 1:], f"char {k} deleted"
    if action == "insert":
        c = _pick(rng, list('{}[]",:0-.eE \\') + ["\u00e9", "\x00"])
        return text[:k] + c + text[k:], f"{c!r} inserted at {k}"
    span = text[k:k + int(rng.integers(1, 16))]
    return text[:k] + span + text[k:], f"{span!r} duplicated at {k}"


def raw_mutation(rng, data):
    """The file's bytes edited: (new bytes, description)."""
    action = _pick(rng, ("flip", "flip", "truncate", "extend", "header_length", "entry", "entry", "metadata",
                         "data_resealed", "graph_text", "header_text", "repad"))
    parsed = _split(data)
    n = struct.unpack("<Q", data[:8])[0]
    if action == "flip" or parsed is None:
        b = bytearray(data)
        flips = _pick(rng, (1, 1, 2, 4, 16))
        for _ in range(flips):
            pos = int(rng.integers(8 + n)) if rng.random() < 0.5 else int(rng.integers(len(b)))
            b[pos] ^= 1 << int(rng.integers(8))
        return bytes(b), f"{flips} bit flips"
    if action == "truncate":
        k = int(rng.integers(len(data)))
        return data[:k], f"truncated to {k} bytes"
    if action == "extend":
        return data + bytes(int(rng.integers(1, 17))), "zero bytes appended"
    if action == "header_length":
        value = _pick(rng, (0, 1, 7, n - 1, n + 1, n - 8, n + 8, len(data), len(data) - 8, 2**63, 2**64 - 1))
        return struct.pack("<Q", value % 2**64) + data[8:], f"header length {n} -> {value}"
    header, body = parsed
    reseal = rng.random() < 0.75
    sealed = "resealed" if reseal else "not resealed"
    if action == "repad":
        pad = _pick(rng, (b" " * 8, b"\n" * 8, b"\t" * 8, b" " * 3))
        text = data[8:8 + n] + pad
        return struct.pack("<Q", len(text)) + text + data[8 + n:], f"header padded with {pad!r}"
    if action == "header_text":
        text, what = _edit_text(rng, data[8:8 + n].decode("utf-8"))
        text = text.encode("utf-8")
        return struct.pack("<Q", len(text)) + text + body, f"header text: {what}"
    if action == "data_resealed" and body:
        b = bytearray(body)
        b[int(rng.integers(len(b)))] ^= 1 << int(rng.integers(8))
        return _seal(header, bytes(b), True), "a data bit flipped, resealed"
    meta = header["__metadata__"]
    if action == "graph_text":
        meta["graph"], what = _edit_text(rng, meta["graph"])
        return _seal(header, body, reseal), f"graph text: {what}, {sealed}"
    if action == "metadata":
        key = _pick(rng, ("qnn_format", "qnn_format", "producer", "graph", "sha256", "bogus", "drop"))
        if key == "drop":
            key = _pick(rng, sorted(meta))
            del meta[key]
            return _seal(header, body, reseal), f"__metadata__.{key} removed, {sealed}"
        meta[key] = _pick(rng, ("1", "3", "2.0", 2, None, "", "x" * 64, "A" * 64))
        return _seal(header, body, reseal and key != "sha256"), f"__metadata__.{key} = {_show(meta[key])}, {sealed}"
    names = [k for k in header if k != "__metadata__"]
    if not names:
        return _seal(header, body, reseal), "header rewritten"
    name = _pick(rng, names)
    entry = header[name]
    field = _pick(rng, ("dtype", "shape", "shape", "data_offsets", "data_offsets"))
    begin, end = entry["data_offsets"]
    if field == "dtype":
        entry["dtype"] = _pick(rng, ("I8", "U8", "F32", "I32", "F16", "BOOL", "i8", None, 1))
    elif field == "shape":
        count = math.prod(entry["shape"])
        entry["shape"] = _pick(rng, ([count], [count, 1], entry["shape"][::-1], [1] + entry["shape"], [],
                                     entry["shape"][:-1] + [_pick(rng, SPECIAL)], [2**62, 0]))
    else:
        other = header[_pick(rng, names)]["data_offsets"]
        entry["data_offsets"] = _pick(rng, ([end, begin], [begin + 1, end + 1], [begin - 1, end - 1], [0, 0],
                                            [begin, 2**64], [-4, end], [float(begin), end], other,
                                            [begin, end, end], [begin, end + 4]))
    return _seal(header, body, reseal), f"tensor {name!r} {field} = {_show(entry[field])}, {sealed}"


# --- cases -----------------------------------------------------------------------------------------

def _mutate(rng, graph, tensors, count):
    names = [f for f, _ in GRAPH_MUTATIONS]
    weights = np.array([w for _, w in GRAPH_MUTATIONS])
    done = []
    for _ in range(count * 8):  # a mutation that does not apply (None) is redrawn
        if len(done) == count:
            break
        mutation = names[int(rng.choice(len(names), p=weights / weights.sum()))]
        try:
            desc = mutation(rng, graph, tensors)
        except (KeyError, IndexError, TypeError, AttributeError, ValueError, OverflowError):
            desc = None  # an earlier mutation left the graph in a shape this one cannot walk
        if desc:
            done.append(f"{mutation.__name__[4:]}: {desc}")
    return done


def make_case(seed, index, mutate=True):
    """Case `index` of campaign `seed`: the same bytes and description on every run and machine."""
    rng = np.random.default_rng([seed, index])
    name = _pick(rng, fuzz_seeds.seed_names())
    graph, tensors, hw = fuzz_seeds.seed(name)
    r = rng.random() if mutate else 0.0
    descs = [f"seed {name}"] if mutate and r >= 0.03 else [f"seed {name} unmutated"]
    if r >= 0.03:  # 3% of cases: the seed itself, at a random input size
        raw = r >= 0.75
        descs += _mutate(rng, graph, tensors, int(rng.integers(0, 2)) if raw else int(rng.integers(1, 4)))
    data = qnn._encode(graph, tensors)
    if r >= 0.75:
        data, what = raw_mutation(rng, data)
        descs.append(f"bytes: {what}")  # (raw mutations describe themselves)
    return Case(seed, index, data, "; ".join(descs), hw)


# --- one case's verdict -----------------------------------------------------------------------------

def case_inputs(case, graph):
    """(inputs, isa) for the case: the graph's declared input shapes with each -1 filled in (batch 1-3; H/W
    the seed's default size or one of SIZES), normal values, and an ISA path; inputs None if too large."""
    rng = np.random.default_rng([case.seed, case.index, 1])
    batch = _pick(rng, (1, 1, 2, 3))
    xs, tokens = [], None
    for entry in graph["inputs"]:
        dims = [batch] + [d if d != -1 else case.default_hw if rng.random() < 0.5 else _pick(rng, SIZES)
                          for d in entry["shape"][1:]]
        if math.prod(dims) > MAX_INPUT_ELEMENTS:
            return None, None
        if graph["values"].get(entry["name"], {}).get("dtype") == "int64":
            # Token ids (< 50, the encoder seed's vocabulary) or a 0/1 mask with its first token kept, one (N, S)
            # for all (the model refuses two shapes); ids and masks out of range are test_transformer.py's.
            tokens = tokens or dims
            mask = any(op["op"] == "attention_bias" and entry["name"] in op["inputs"] for op in graph["ops"])
            x = rng.integers(0, 2 if mask else 50, tokens)
            if mask:
                x[:, 0] = 1
            xs.append(x.astype(np.int64))
            continue
        xs.append(rng.normal(0, _pick(rng, (0.3, 1.0, 3.0, 30.0)), dims).astype(np.float32))
    isa = _pick(rng, [None, None] + qruntime.available_isas(emulated=True))
    return xs, isa


def output_modes(graph):
    """Per graph output, how to compare it: "exact" (only integer ops and the exact quantize/dequantize),
    "float" (a float32 op on the way: float32 sums vs the reference's float64), "loose" (a float op's result
    was quantized again: one rounding apart can move a code, so only shapes and dtypes are compared)."""
    taint = {}
    for op in graph["ops"]:
        mark = max([taint.get(v, 0) for v in op["inputs"]], default=0)
        if op["op"] in FLOAT_OPS:
            mark = max(mark, 1)
        if op["op"] == "quantize" and mark:
            mark = 2
        taint[op["outputs"][0]] = mark
    return [("exact", "float", "loose")[taint.get(name, 0)] for name in graph["outputs"]]


def _extreme(graph, tensors):
    """Whether float32 overflow is in reach: huge/tiny scales or float constants (then the engine's float32
    sums and the reference's float64 ones can overflow differently, and a clamp after them hides where)."""
    scales = [v.get("scale", 1.0) for v in graph["values"].values()]
    floats = [np.abs(a).max() for a in tensors.values() if a.dtype == np.float32 and a.size]
    return any(not 1e-18 < s < 1e18 for s in scales) or any(f > 1e18 for f in floats)


def compare(graph, tensors, got, want):
    """None if the engine's outputs equal the reference's (per output_modes), else what differs."""
    if len(got) != len(want):
        return f"{len(got)} outputs, the reference has {len(want)}"
    extreme = _extreme(graph, tensors)
    for name, mode, g, w in zip(graph["outputs"], output_modes(graph), got, want):
        g, w = np.asarray(g), np.asarray(w)
        if g.shape != w.shape or g.dtype != w.dtype:
            return f"output {name!r}: engine {g.dtype}{g.shape}, reference {w.dtype}{w.shape}"
        if mode == "loose" or (mode == "float" and extreme):  # float32 overflow: anything after it may differ
            continue
        if mode == "exact":
            same = (g == w) | (np.isnan(g) & np.isnan(w))
        else:
            scale = 1e-5 * max(1.0, float(np.abs(w[np.isfinite(w)]).max(initial=0)))
            same = np.isclose(g, w, rtol=1e-4, atol=scale, equal_nan=True)
        if not same.all():
            k = tuple(int(i) for i in np.argwhere(~same)[0])
            return (f"output {name!r} ({mode}): {int((~same).sum())} of {same.size} elements differ, first at "
                    f"{k}: engine {float(g[k])!r}, reference {float(w[k])!r}")
    return None


def _conv_shape(x, weight, a):
    n, c, h, w = x
    oc, icg, kh, kw = weight.shape
    (sh, sw), (dh, dw), (pt, pl, pb, pr) = a["stride"], a["dilation"], a["padding"]
    oh, ow = (h + pt + pb - dh * (kh - 1) - 1) // sh + 1, (w + pl + pr - dw * (kw - 1) - 1) // sw + 1
    return (n, oc, oh, ow) if c == icg * a["groups"] else None


def _pool_shape(x, a):
    n, c, h, w = x
    d = a.get("dilation", [1, 1])
    size = [reference.out_size(x[2 + i], a["kernel"][i], a["stride"][i], a["padding"][i], d[i], a["ceil_mode"])
            for i in (0, 1)]
    return (n, c, *size)


def _resize_hw(x, ins, a):
    """A resize's output H, W: the second input's, `size`, or int(in * scale) per axis (torch's rule)."""
    if len(ins) == 2:
        return ins[1][2:]
    if a["size"] != [0, 0]:
        return tuple(a["size"])
    return tuple(reference.resize_extent(n, f) for n, f in zip(x[2:], (a["scale_h"], a["scale_w"])))


def _op_shape(op, ins, tensors):
    """The output shape docs/format.md gives `op` for input shapes `ins`, or None if they do not fit it."""
    kind, a, x = op["op"], op["attrs"], ins[0]
    rank4 = all(len(s) == 4 for s in ins)
    if kind in ("conv2d", "conv2d_float") and rank4:
        out = _conv_shape(x, tensors[op["tensors"]["weight"]], a)
    elif kind in ("linear", "linear_float") and len(x) == 2:
        weight = tensors[op["tensors"]["weight"]]
        out = (x[0], weight.shape[0]) if x[1] == weight.shape[1] else None
    elif kind in ("max_pool2d", "avg_pool2d") and rank4:
        out = _pool_shape(x, a)
    elif kind == "adaptive_avg_pool2d" and rank4:
        out = (x[0], x[1], *a["output_size"])
    elif kind == "flatten" and rank4:
        out = (x[0], math.prod(x[1:]))
    elif kind == "concat" and a["axis"] < len(x) and all(len(s) == len(x) for s in ins):
        rest = {s[:a["axis"]] + s[a["axis"] + 1:] for s in ins}
        out = x[:a["axis"]] + (sum(s[a["axis"]] for s in ins),) + x[a["axis"] + 1:] if len(rest) == 1 else None
    elif kind in ("add", "sub"):
        out = x if ins[0] == ins[1] else None
    elif kind == "mul":  # the same shape, or (N, C, H, W) and (N, C, 1, 1) in either order
        small, big = sorted(ins, key=math.prod)
        out = big if small == big or (rank4 and small == (big[0], big[1], 1, 1)) else None
    elif kind == "gather_channels" and len(x) in (2, 4):
        index = tensors[op["tensors"]["index"]]
        out = (x[0], len(index), *x[2:]) if index.max() < x[1] else None
    elif kind == "binary_float":
        small, big = sorted(ins, key=math.prod)
        gate = a["fn"] == "mul" and rank4 and small == (big[0], big[1], 1, 1)
        out = big if small == big or gate else None
    elif kind == "layer_norm_float" and len(x) in (2, 3, 4):
        out = x if tensors[op["tensors"]["weight"]].shape[0] == x[1 if len(x) != 3 else 2] else None
    elif kind == "embedding" and len(x) == 2:
        position = tensors[op["tensors"]["position"]]  # (max positions, F) whichever word table the op has
        out = (*x, position.shape[1]) if x[1] <= position.shape[0] else None
    elif kind == "attention_bias" and len(x) == 2:
        out = x
    elif kind == "attention" and len(x) == 3 and len(ins) == 2:  # qkv (N, S, 3F) and the bias
        f = x[2] // 3
        out = (*x[:2], f) if x[2] % 3 == 0 and ins[1] == x[:2] and f % a["heads"] == 0 else None
    elif kind == "attention" and len(x) == 3:
        out = x if ins[1] == ins[2] == x and ins[3] == x[:2] and x[2] % a["heads"] == 0 else None
    elif kind == "linear_dynamic" and len(x) in (2, 3):
        weight = tensors[op["tensors"]["weight"]]
        out = (*x[:-1], weight.shape[0]) if x[-1] == weight.shape[1] else None
    elif kind in ("quantize", "dequantize", "lut", "softmax", "log_softmax", "unary_float"):
        out = x
    elif kind == "group_norm" and rank4:
        c = tensors[op["tensors"]["weight"]].shape[0]
        out = x if c == x[1] and c % a["groups"] == 0 else None
    elif kind == "layer_norm" and len(x) in (2, 4):
        out = x if tensors[op["tensors"]["weight"]].shape[0] == x[1] else None
    elif kind == "reduce" and (len(x) == 4 or (len(x) == 2 and a["dims"] == [1] and a["keepdim"])):
        out = tuple(1 if i in a["dims"] else d for i, d in enumerate(x) if a["keepdim"] or i not in a["dims"])
    elif kind == "resize" and rank4:
        out = (x[0], x[1], *_resize_hw(x, ins, a))
    elif kind == "pad" and rank4:
        (t, left, b, r) = a["padding"]
        out = (x[0], x[1], x[2] + t + b, x[3] + left + r)
    elif kind == "lut_channels" and len(x) in (2, 4):
        out = x if tensors[op["tensors"]["table"]].shape[0] == x[1] else None
    else:
        out = None
    return out if out is not None and min(out) >= 1 else None


def shape_errors(graph, tensors, input_shapes, engine_shapes):
    """What is wrong with the engine's value shapes (NCHW, in graph["values"] order) against the shapes the
    format's rules give: None if nothing. A shape oracle that needs no memory: it still holds when a shape
    is too large for the reference to compute."""
    spec = {e["name"]: tuple(s) for e, s in zip(graph["inputs"], input_shapes)}
    for op in graph["ops"]:
        ins = [spec.get(v) for v in op["inputs"]]
        out = op["outputs"][0]
        spec[out] = None if None in ins else _op_shape(op, ins, tensors)
    for name, got in zip(graph["values"], engine_shapes):
        if tuple(got) != spec.get(name):
            return f"value {name!r}: engine shape {tuple(got)}, the format's rules give {spec.get(name)}"
    return None


class OverBudget(Exception):
    """The reference ran past its time budget (its loops are Python: a huge valid shape takes minutes)."""


def _within(budget, fn, *args):
    """fn(*args), interrupted by OverBudget after `budget` seconds (None: no limit; main thread only)."""
    if not budget:
        return fn(*args)

    def expire(signum, frame):
        raise OverBudget(f"over {budget:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, budget)
    try:
        return fn(*args)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _attempt(fn):
    try:
        return fn(), None
    except Exception as e:  # noqa: BLE001 - every exception is part of the verdict
        return None, e


def _said(e):
    return f"{type(e).__name__}: {' '.join(str(e).split())[:160]}"


def _debug(action):
    """Faults the harness test injects to prove its verdicts (never used by a campaign)."""
    if action == "abort":
        os.abort()
    if action == "segv":
        os.kill(os.getpid(), signal.SIGSEGV)
    if action == "sleep":
        time.sleep(3600)
    if action == "raise":
        raise KeyError("injected by the harness test")
    if action == "memory":  # a little over the worker's RLIMIT_AS: fails only if the limit holds
        limit = resource.getrlimit(resource.RLIMIT_AS)[0]
        return bytearray((limit if limit != resource.RLIM_INFINITY else 1 << 40) + (1 << 28))
    return None


def _run_engine(graph, tensors, xs, isa, debug):
    """The engine's outputs for xs and every value's shape in its plan."""
    model = qruntime.Model(graph, tensors, isa=isa)
    out = model.run(xs)
    _debug(debug)
    outs = [np.array(o) for o in (out if isinstance(out, list) else [out])]
    if debug == "mismatch" and outs[0].size:
        outs[0].reshape(-1)[0] += 1
    shapes, _ = model._engine.value_shapes([list(x.shape) for x in xs])  # the plan run() just used
    return outs, shapes


def evaluate(case, stage=lambda name: None, debug=None, reference_budget=None):
    """The verdict of one case, a dict: outcome (rejected, ran_equal, memory_error, skipped, mismatch,
    other_exception), stage, error (the exception's type and words), detail, isa, inputs.
    `stage(name)` is called as each stage begins, so a watchdog can say where a crash or hang happened;
    the reference gets `reference_budget` seconds, after which the case is "skipped" (not compared)."""
    verdict = {"outcome": None, "stage": "read", "error": "", "detail": "", "isa": None, "inputs": None}

    def done(outcome, stage_name, error="", detail=""):
        verdict.update(outcome=outcome, stage=stage_name, error=error, detail=detail)
        return verdict

    stage("read")
    parsed, e = _attempt(lambda: qnn.from_bytes(case.data))
    if e is not None:
        return done(_kind(e), "read", _said(e))
    graph, tensors = parsed
    xs, isa = case_inputs(case, graph)
    if xs is None:
        return done("skipped", "inputs", detail=f"declared input shapes {[i['shape'] for i in graph['inputs']]}")
    verdict.update(isa=isa, inputs=[x.shape for x in xs])
    stage("engine")
    got, e_err = _attempt(lambda: _run_engine(graph, tensors, xs, isa, debug))
    if e_err is not None and not isinstance(e_err, CLEAN):
        return done(_kind(e_err), "engine", _said(e_err))
    if e_err is None:
        got, engine_shapes = got
        wrong = shape_errors(graph, tensors, [x.shape for x in xs], engine_shapes)
        if wrong:
            return done("mismatch", "shapes", "", wrong)
    if e_err is not None:
        # A clean refusal is a right answer to a bad file, even where the reference (which checks less:
        # it is a spec of the arithmetic, not of validity) would compute something. The reference is not
        # run: a refusal of a size past the activation cap would have it build that size in numpy, which
        # on a loaded host took past the time limit (a "hang" of the oracle, not of the engine).
        return done("rejected", "engine", _said(e_err))
    stage("reference")
    want, r_err = _attempt(lambda: _within(reference_budget, reference.run_graph, graph, tensors, xs))
    stage("compare")
    if isinstance(r_err, OverBudget):
        return done("skipped", "reference", detail=f"the engine ran; the reference is {r_err}, so unchecked")
    if isinstance(r_err, MemoryError) or (isinstance(r_err, ValueError) and "array is too big" in str(r_err)):
        # numpy could not allocate the reference's padded copy (its words for a size past 2^63 bytes)
        return done("memory_error", "reference", _said(r_err))
    if r_err is not None:
        return done("mismatch", "reference", _said(r_err), "the engine ran, the reference raised")
    differs = compare(graph, tensors, got, want)
    return done("mismatch", "compare", "", differs) if differs else done("ran_equal", "compare")


def _kind(e):
    if isinstance(e, MemoryError):
        return "memory_error"
    return "rejected" if isinstance(e, CLEAN) else "other_exception"


def prepare_worker(threads=1):
    """Process-wide settings of a process that evaluates cases: quiet numpy and warnings, one engine thread."""
    import warnings
    warnings.simplefilter("ignore")  # FormatWarning of format-1 files, numpy's overflow warnings
    np.seterr(all="ignore")
    qruntime.set_num_threads(threads)
    # A lower activation cap than the default 4 GiB: within it every op finishes in a fraction of the
    # time limit, so a "hang" verdict means a loop the cap does not bound, not a big legal shape.
    qruntime.set_max_activation_bytes(MAX_ACTIVATION_BYTES)


def run_case(seed, index, stage=lambda name: None, debug=None, reference_budget=None):
    """make_case + evaluate, the verdict carrying the case's description (what a worker runs)."""
    stage("generate")
    case = make_case(seed, index, mutate=debug is None)
    verdict = evaluate(case, stage, debug, reference_budget)
    verdict["desc"] = case.desc
    return verdict
