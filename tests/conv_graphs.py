"""A model graph for the conv kernel tests: quantize -> a chain of conv2d nodes (ReLU) -> dequantize,
with seeded int8 weights, so a test can see which kernel each node's packer chose and compare the
run with the reference and the scalar path."""
import numpy as np


def conv_chain(rng, c, convs):
    """(graph, tensors) for an input of c channels; convs: (name, out channels, kernel, stride,
    padding, dilation) per node, in order, each reading the previous one's output."""
    def u8(scale, zp):
        return {"dtype": "uint8", "scale": float(np.float32(scale)), "zero_point": zp}

    def op(kind, inputs, out, attrs=None, name=None):
        tensors = {k: f"{name}.{k}" for k in ("weight", "w_scale", "bias")} if name else {}
        return {"op": kind, "name": out, "inputs": inputs, "outputs": [out], "attrs": attrs or {}, "tensors": tensors}

    tensors, values = {}, {"x": {"dtype": "float32"}, "q": u8(0.02, 131), "y": {"dtype": "float32"}}
    ops = [op("quantize", ["x"], "q")]
    prev, c_in = "q", c
    for name, oc, k, stride, pad, dilation in convs:
        shape = (oc, c_in, k, k)
        tensors[f"{name}.weight"] = rng.integers(-127, 128, shape, dtype=np.int8)
        tensors[f"{name}.w_scale"] = rng.uniform(0.0005, 0.002, oc).astype(np.float32)
        tensors[f"{name}.bias"] = rng.normal(0, 0.5, oc).astype(np.float32)
        attrs = {"stride": [stride, stride], "padding": [pad] * 4, "dilation": [dilation, dilation], "groups": 1,
                 "act": "relu"}
        values[name] = u8(0.05, 0)
        ops.append(op("conv2d", [prev], name, attrs, name))
        prev, c_in = name, oc
    ops.append(op("dequantize", [prev], "y"))
    graph = {"inputs": [{"name": "x", "shape": [-1, c, -1, -1]}], "outputs": ["y"], "values": values, "ops": ops}
    return graph, tensors
