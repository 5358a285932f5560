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
    """The engine's std::max(v, 0) and std::min(v, 6): v unless the bound is strictly past it (a -0.0 stays)."""
    if act != "none":
        v = np.where(v < 0, np.float32(0), v)
    return np.where(np.float32(6) < v, np.float32(6), v) if act == "relu6" else v


def sequential_conv(x, w, bias, stride, padding, dilation, groups, act):
    """float32, every output summed one product at a time: bias, then the taps (ky, kx) inside the image in
    order, then the group's input channels in order."""
    (sh, sw), (dh, dw), (pt, pl, pb, pr) = stride, dilation, padding
    n, c, h, wd = x.shape
    oc, icg, kh, kw = w.shape
    ocg = oc // groups
    xp = np.zeros((n, c, h + pt + pb, wd + pl + pr), np.float32)
    xp[:, :, pt:pt + h, pl:pl + wd] = x
    oh, ow = (h + pt + pb - dh * (kh - 1) - 1) // sh + 1, (wd + pl + pr - dw * (kw - 1) - 1) // sw + 1
    acc = np.broadcast_to(bias[None, :, None, None], (n, oc, oh, ow)).copy()  # a -0.0 bias stays -0.0
    rows, cols = np.arange(oh) * sh - pt, np.arange(ow) * sw - pl  # each output's window, top left
    for ky in range(kh):
        for kx in range(kw):
            iy, ix = rows + ky * dh, cols + kx * dw
            inside = ((iy >= 0) & (iy < h))[:, None] & ((ix >= 0) & (ix < wd))[None, :]
            for ic in range(icg):
                for g in range(groups):
                    patch = xp[:, g * icg + ic, ky * dh:ky * dh + sh * (oh - 1) + 1:sh,
                               kx * dw:kx * dw + sw * (ow - 1) + 1:sw]
                    out = slice(g * ocg, (g + 1) * ocg)
                    added = acc[:, out] + patch[:, None] * w[out, ic, ky, kx][None, :, None, None]
                    acc[:, out] = np.where(inside, added, acc[:, out])  # a tap outside adds nothing
    return activation(acc, act)


def sequential_linear(x, w, bias, act):
    acc = np.broadcast_to(bias[None], (x.shape[0], w.shape[0])).copy()
    for k in range(w.shape[1]):
        acc += x[:, k:k + 1] * w[:, k][None]
    return activation(acc, act)


def same_bits(got, want, what):
    """Equal as bit patterns: a -0.0 where the sum gives +0.0 fails too."""
    assert got.shape == want.shape, what
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32), err_msg=what)


def with_zeros(rng, a):
    """a with about a tenth of its entries +0.0 and a tenth -0.0: the signs of zero sums are pinned too."""
    a = a.copy()
    pick = rng.random(a.shape)
    a[pick < 0.1] = 0.0
    a[pick > 0.9] = -0.0
    return a


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
    x = with_zeros(rng, rng.normal(0, 2, (2, c, 9, 7)).astype(np.float32))
    w = with_zeros(rng, rng.normal(0, 1, (oc, c // groups, *kernel)).astype(np.float32))
    bias = with_zeros(rng, rng.normal(0, 1, oc).astype(np.float32))
    attrs = {"stride": list(stride), "padding": list(padding), "dilation": list(dilation), "groups": groups,
             "act": act}
    model = one_op_model("conv2d_float", x.shape, {"weight": w, "bias": bias}, attrs)
    want = sequential_conv(x, w, bias, stride, padding, dilation, groups, act)
    for count in (1, 2):
        qruntime.set_num_threads(count)
        got = model.run(x)
        same_bits(got, want, f"{count} thread(s)")
    np.testing.assert_allclose(got, reference.conv2d_float(x, w, bias, stride, padding, dilation, groups, act),
                               rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("act", ["none", "relu6"])
@pytest.mark.parametrize("rows, k, n", [(1, 5, 1), (1, 100, 70), (3, 33, 7), (37, 16, 33)])  # 37: 16-row chunks
def test_linear_float_is_the_sequential_float32_sum(rows, k, n, act, rng, threads):
    x = with_zeros(rng, rng.normal(0, 2, (rows, k)).astype(np.float32))
    w = with_zeros(rng, rng.normal(0, 1, (n, k)).astype(np.float32))
    bias = with_zeros(rng, rng.normal(0, 1, n).astype(np.float32))
    model = one_op_model("linear_float", x.shape, {"weight": w, "bias": bias}, {"act": act})
    want = sequential_linear(x, w, bias, act)
    for count in (1, 2):
        qruntime.set_num_threads(count)
        same_bits(model.run(x), want, f"{count} thread(s)")
    np.testing.assert_allclose(model.run(x), reference.linear_float(x, w, bias, act), rtol=1e-4, atol=1e-4)
