"""Pass: fold each BatchNorm or per-channel affine (a layer scale) into the conv2d/linear before it; a BatchNorm
that cannot fold becomes an affine op."""
import copy

import numpy as np

from .. import ir


_FOLDABLE = ("batchnorm", "affine")


def _scale_shift(bn):
    """float64 (scale, shift) with bn(x) = x * scale + shift per channel (a batchnorm or an affine node)."""
    p = {k: v.astype(np.float64) for k, v in bn.params.items()}
    if bn.op == "affine":
        return p["scale"], p["shift"]
    scale = p["weight"] / np.sqrt(p["var"] + bn.attrs["eps"])
    return scale, p["bias"] - p["mean"] * scale


def fold_bn(graph):
    """A new graph without batchnorm nodes. A batchnorm or affine node whose input is the output of a conv2d or
    linear (with no activation yet) that has no other consumer and is not a graph output is folded into that
    layer's weight and bias, and the merged layer's output takes the folded node's output name; any other
    batchnorm becomes an "affine" node (params scale, shift)."""
    producers = {node.output: node for node in graph.nodes}
    consumers = {}
    for node in graph.nodes:
        for v in set(node.inputs):
            consumers.setdefault(v, []).append(node)
    folded = {}  # conv output -> the merged conv node that replaces it
    for node in graph.nodes:
        if node.op not in _FOLDABLE:
            continue
        conv = producers.get(node.inputs[0])
        if (conv is not None and conv.op in ("conv2d", "linear") and conv.attrs.get("act", "none") == "none"
                and len(consumers[conv.output]) == 1 and conv.output not in graph.outputs):
            folded[conv.output] = _folded_conv(conv, node)
    nodes = []
    for node in graph.nodes:
        if node.output in folded:
            nodes.append(folded[node.output])
        elif node.op in _FOLDABLE and node.inputs[0] not in folded:
            nodes.append(_affine(node))
        elif node.op not in _FOLDABLE:
            nodes.append(node)
    return graph.with_nodes(nodes)


def _folded_conv(conv, bn):
    scale, shift = _scale_shift(bn)
    weight = conv.params["weight"].astype(np.float64)
    bias = conv.params["bias"].astype(np.float64) if "bias" in conv.params else np.zeros(weight.shape[0])
    merged = copy.deepcopy(conv)
    merged.params["weight"] = (weight * scale.reshape(-1, *[1] * (weight.ndim - 1))).astype(np.float32)
    merged.params["bias"] = (bias * scale + shift).astype(np.float32)
    merged.output = bn.output
    return merged


def _affine(bn):
    scale, shift = _scale_shift(bn)
    return ir.Node(op="affine", name=bn.name, inputs=list(bn.inputs), output=bn.output,
                   params={"scale": scale.astype(np.float32), "shift": shift.astype(np.float32)})
