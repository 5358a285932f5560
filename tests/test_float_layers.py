"""The engine's float32 conv2d and linear (layers kept in float): each output is its bias plus its products
added one by one in a fixed order (taps in order, then the group's input channels), so its bits are
those of that sequential float32 sum, on any thread count; and they stay within float rounding of
qruntime.reference's float64 sums. Geometries cover the engine's blocks of 32 outputs and their tails,
groups, depthwise convs, strides, dilations and uneven padding."""
import numpy as np
import pytest

import qruntime
from qruntime import reference
from qruntime.model import Model


def one_op_model(kind, x_shape, tensors, attrs):
    """A Model of a single float op from a float32 input to its output."""
    graph = {"inputs": [{"name": "x", "shape": [-1, *x_shape[1:]]}], "outputs": ["y"],
             "values": {"x": {"dtype": "float32"}, "y": {"dtype": "float32"}},
             "ops": [{"op": kind, "name": "y", "inputs": ["x"], "outputs": ["y"], "attrs": attrs,
                      "tensors": {role: f"y.{role}" for role in tensors}}]}
    return Model(graph, {f"y.{role}": t for role, t in tensors.items()})


def activation(v, act):
    if act != "none":
        v = np.maximum(v, np.float32(0))
    return np.minimum(v, np.float32(6)) if act == "relu6" else v


def sequential_conv(x, w, bias, stride, padding, dilation, groups, act):
    """float32, every output summed one product at a time: bias, then taps (ky, kx) in order, then the
    group's input channels in order. Padding adds zero products, which change nothing but a zero's sign."""
    (sh, sw), (dh, dw), (pt, pl, pb, pr) = stride, dilation, padding
    n, c, h, wd = x.shape
    oc, icg, kh, kw = w.shape
    ocg = oc // groups
    xp = np.zeros((n, c, h + pt + pb, wd + pl + pr), np.float32)
    xp[:, :, pt:pt + h, pl:pl + wd] = x
    oh, ow = (h + pt + pb - dh * (kh - 1) - 1) // sh + 1, (wd + pl + pr - dw * (kw - 1) - 1) // sw + 1
    acc = np.zeros((n, oc, oh, ow), np.float32) + bias[None, :, None, None]
    for ky in range(kh):
        for kx in range(kw):
            for ic in range(icg):
                for g in range(groups):
                    patch = xp[:, g * icg + ic, ky * dh:ky * dh + sh * (oh - 1) + 1:sh,
                               kx * dw:kx * dw + sw * (ow - 1) + 1:sw]
                    acc[:, g * ocg:(g + 1) * ocg] += patch[:, None] * w[g * ocg:(g + 1) * ocg, ic, ky, kx][None, :, None, None]
    return activation(acc, act)


def sequential_linear(x, w, bias, act):
    acc = np.zeros((x.shape[0], w.shape[0]), np.float32) + bias[None]
    for k in range(w.shape[1]):
        acc += x[:, k:k + 1] * w[:, k][None]
    return activation(acc, act)


CONVS = {  # name: (in channels, out channels, kernel, stride, padding, dilation, groups)
    "3x3, 70 outputs (two blocks and a tail)": (3, 70, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),
    "2x3, strided and dilated, uneven padding": (16, 33, (2, 3), (2, 1), (0, 2, 1, 0), (1, 2), 1),
    "groups of 2 inputs and 3 outputs": (8, 12, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 4),
    "depthwise, 40 channels, dilated": (40, 40, (3, 3), (1, 1), (2, 2, 2, 2), (2, 2), 40),
    "depthwise 5x5, 7 channels, strided": (7, 7, (5, 5), (2, 2), (2, 1, 2, 1), (1, 1), 7),
    "depthwise, two outputs per channel": (8, 16, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 8),
    "1x1, 64 inputs": (64, 8, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1),
}


@pytest.mark.parametrize("act", ["none", "relu", "relu6"])
@pytest.mark.parametrize("name", CONVS)
def test_conv2d_float_is_the_sequential_float32_sum(name, act, rng, threads):
    c, oc, kernel, stride, padding, dilation, groups = CONVS[name]
    x = rng.normal(0, 2, (2, c, 9, 7)).astype(np.float32)
    w = rng.normal(0, 1, (oc, c // groups, *kernel)).astype(np.float32)
    bias = rng.normal(0, 1, oc).astype(np.float32)
    attrs = {"stride": list(stride), "padding": list(padding), "dilation": list(dilation), "groups": groups,
             "act": act}
    model = one_op_model("conv2d_float", x.shape, {"weight": w, "bias": bias}, attrs)
    want = sequential_conv(x, w, bias, stride, padding, dilation, groups, act)
    for count in (1, 2):
        qruntime.set_num_threads(count)
        got = model.run(x)
        np.testing.assert_array_equal(got, want, err_msg=f"{count} thread(s)")
    np.testing.assert_allclose(got, reference.conv2d_float(x, w, bias, stride, padding, dilation, groups, act),
                               rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("act", ["none", "relu6"])
@pytest.mark.parametrize("rows, k, n", [(1, 5, 1), (1, 100, 70), (3, 33, 7), (4, 16, 33)])
def test_linear_float_is_the_sequential_float32_sum(rows, k, n, act, rng, threads):
    x = rng.normal(0, 2, (rows, k)).astype(np.float32)
    w = rng.normal(0, 1, (n, k)).astype(np.float32)
    bias = rng.normal(0, 1, n).astype(np.float32)
    model = one_op_model("linear_float", x.shape, {"weight": w, "bias": bias}, {"act": act})
    want = sequential_linear(x, w, bias, act)
    for count in (1, 2):
        qruntime.set_num_threads(count)
        np.testing.assert_array_equal(model.run(x), want, err_msg=f"{count} thread(s)")
    np.testing.assert_allclose(model.run(x), reference.linear_float(x, w, bias, act), rtol=1e-4, atol=1e-4)
