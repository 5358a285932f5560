"""Tests of convert/trace.py: every supported torch form maps to the right IR op with the right attrs."""
import pytest

torch = pytest.importorskip("torch")
import torch.fx  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from qruntime.convert.trace import trace  # noqa: E402
from qruntime.errors import UnsupportedOpError  # noqa: E402

# The IR is evaluated below with the same torch ops the model uses, in float32; only the order of
# additions can differ (explicit F.pad + conv against conv's own padding; BatchNorm folded into float32
# conv weights by the passes).
RTOL, ATOL = 1e-5, 1e-6

IMAGE = (2, 4, 6, 6)
FEATURES = (2, 8)


class Wrap(nn.Module):
    """A model whose forward is fn(self, x): one torch form per test case."""

    def __init__(self, fn, **modules):
        super().__init__()
        self.fn = fn
        for name, module in modules.items():
            self.add_module(name, module)

    def forward(self, x):
        return self.fn(self, x)


def _act(y, act):
    return {"none": y, "relu": F.relu(y), "relu6": F.relu6(y)}[act]


def _eval_node(node, xs):
    """One IR node computed from its attrs and params with torch functional ops."""
    a = node.attrs
    p = {k: torch.from_numpy(v) for k, v in node.params.items()}
    x = xs[0]
    if node.op == "conv2d":
        top, left, bottom, right = a["padding"]
        y = F.conv2d(F.pad(x, (left, right, top, bottom)), p["weight"], p.get("bias"),
                     a["stride"], 0, a["dilation"], a["groups"])
        return _act(y, a["act"])
    if node.op == "linear":
        return _act(F.linear(x, p["weight"], p.get("bias")), a["act"])
    if node.op == "batchnorm":
        return F.batch_norm(x, p["mean"], p["var"], p["weight"], p["bias"], False, 0.0, a["eps"])
    if node.op == "affine":
        return x * p["scale"][None, :, None, None] + p["shift"][None, :, None, None]
    if node.op == "max_pool2d":
        return F.max_pool2d(x, a["kernel"], a["stride"], a["padding"], a["dilation"], a["ceil_mode"])
    if node.op == "avg_pool2d":
        return F.avg_pool2d(x, a["kernel"], a["stride"], a["padding"], a["ceil_mode"],
                            a["count_include_pad"], a["divisor_override"] or None)
    if node.op == "adaptive_avg_pool2d":
        return F.adaptive_avg_pool2d(x, a["output_size"])
    if node.op == "reduce":
        assert a["keepdim"] or (x.dim() == 4 and len(a["dims"]) == 2)  # the ranks the engine holds
        return (torch.mean if a["mode"] == "mean" else torch.sum)(x, a["dims"], keepdim=a["keepdim"])
    if node.op == "flatten":
        assert x.dim() == 4
        return x.reshape(x.shape[0], -1)
    if node.op == "add":
        assert xs[0].shape == xs[1].shape
        return _act(xs[0] + xs[1], a["act"])
    if node.op == "cat":
        assert a["axis"] >= 1
        return torch.cat(xs, a["axis"])
    if node.op in ("softmax", "log_softmax"):
        assert a["dim"] >= 1
        return getattr(F, node.op)(x, a["dim"])
    if node.op == "gelu":
        return F.gelu(x, approximate=a["approximate"])
    if node.op == "hardtanh":
        return torch.clamp(x, a["min_val"], a["max_val"])
    if node.op == "leaky_relu":
        return F.leaky_relu(x, a["negative_slope"])
    if node.op == "prelu":
        return F.prelu(x, p["weight"])
    if node.op == "scale_shift":
        return x * a["scale"] + a["shift"]
    if node.op == "mul":
        assert xs[0].shape == xs[1].shape or (xs[0].dim() == 4 and 1 in (xs[0].shape[2], xs[1].shape[2]))
        return xs[0] * xs[1]
    if node.op in ("dropout", "identity"):
        return x
    unary = {"relu": F.relu, "relu6": F.relu6, "hardswish": F.hardswish, "hardsigmoid": F.hardsigmoid,
             "sigmoid": torch.sigmoid, "tanh": torch.tanh, "silu": F.silu}
    return unary[node.op](x)


def run_ir(graph, *inputs):
    values = dict(zip(graph.inputs, inputs))
    for node in graph.nodes:
        assert node.output not in values, f"value {node.output} produced twice"
        values[node.output] = _eval_node(node, [values[v] for v in node.inputs])
    return [values[v] for v in graph.outputs]


def conv(**kwargs):
    return nn.Conv2d(4, 6, 3, **kwargs)


def prelu(channels):
    module = nn.PReLU(channels)
    with torch.no_grad():
        module.weight.copy_(torch.linspace(-0.5, 0.9, channels))
    return module


def batchnorm(**kwargs):
    bn = nn.BatchNorm2d(4, **kwargs)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(4, generator=g))
        bn.running_var.copy_(torch.rand(4, generator=g) + 0.5)
        if bn.weight is not None:
            bn.weight.copy_(torch.randn(4, generator=g))
            bn.bias.copy_(torch.randn(4, generator=g))
    return bn


# (id, model factory, input shape, expected IR ops)
CASES = [
    ("conv_int_padding", lambda: Wrap(lambda m, x: m.c(x), c=conv(padding=1)), IMAGE, ["conv2d"]),
    ("conv_pair_args", lambda: Wrap(lambda m, x: m.c(x), c=nn.Conv2d(
        4, 6, (3, 5), stride=(2, 1), padding=(1, 2), dilation=(1, 2), bias=False)), IMAGE, ["conv2d"]),
    ("conv_groups", lambda: Wrap(lambda m, x: m.c(x), c=nn.Conv2d(4, 8, 3, groups=2)), IMAGE, ["conv2d"]),
    ("conv_depthwise", lambda: Wrap(lambda m, x: m.c(x), c=nn.Conv2d(4, 4, 3, stride=2, groups=4)),
     IMAGE, ["conv2d"]),
    ("conv_same_even_kernel", lambda: Wrap(lambda m, x: m.c(x), c=nn.Conv2d(4, 6, 4, padding="same")),
     IMAGE, ["conv2d"]),
    ("conv_same_dilated", lambda: Wrap(lambda m, x: m.c(x), c=conv(padding="same", dilation=2)),
     IMAGE, ["conv2d"]),
    ("conv_valid", lambda: Wrap(lambda m, x: m.c(x), c=conv(padding="valid")), IMAGE, ["conv2d"]),
    ("F.conv2d", lambda: Wrap(lambda m, x: F.conv2d(x, m.c.weight, m.c.bias, stride=2, padding=1), c=conv()),
     IMAGE, ["conv2d"]),
    ("linear", lambda: Wrap(lambda m, x: m.l(x), l=nn.Linear(8, 5)), FEATURES, ["linear"]),
    ("linear_no_bias", lambda: Wrap(lambda m, x: m.l(x), l=nn.Linear(8, 5, bias=False)), FEATURES, ["linear"]),
    ("F.linear", lambda: Wrap(lambda m, x: F.linear(x, m.l.weight, m.l.bias), l=nn.Linear(8, 5)),
     FEATURES, ["linear"]),
    ("batchnorm", lambda: Wrap(lambda m, x: m.bn(x), bn=batchnorm()), IMAGE, ["batchnorm"]),
    ("batchnorm_no_affine", lambda: Wrap(lambda m, x: m.bn(x), bn=batchnorm(affine=False)), IMAGE, ["batchnorm"]),
    ("ReLU", lambda: Wrap(lambda m, x: m.a(x), a=nn.ReLU()), IMAGE, ["relu"]),
    ("ReLU_inplace", lambda: Wrap(lambda m, x: m.a(x.sigmoid()), a=nn.ReLU(inplace=True)), IMAGE,
     ["sigmoid", "relu"]),
    ("F.relu", lambda: Wrap(lambda m, x: F.relu(x)), IMAGE, ["relu"]),
    ("F.relu_inplace", lambda: Wrap(lambda m, x: F.relu(x, inplace=True)), IMAGE, ["relu"]),
    ("torch.relu", lambda: Wrap(lambda m, x: torch.relu(x)), IMAGE, ["relu"]),
    ("torch.relu_", lambda: Wrap(lambda m, x: torch.relu_(x)), IMAGE, ["relu"]),
    (".relu()", lambda: Wrap(lambda m, x: x.relu()), IMAGE, ["relu"]),
    (".relu_()", lambda: Wrap(lambda m, x: x.relu_()), IMAGE, ["relu"]),
    ("ReLU6_module", lambda: Wrap(lambda m, x: m.a(x), a=nn.ReLU6()), IMAGE, ["relu6"]),
    ("F.relu6", lambda: Wrap(lambda m, x: F.relu6(x)), IMAGE, ["relu6"]),
    ("Hardtanh(0,6)", lambda: Wrap(lambda m, x: m.a(x), a=nn.Hardtanh(0.0, 6.0)), IMAGE, ["relu6"]),
    ("F.hardtanh(0,6)", lambda: Wrap(lambda m, x: F.hardtanh(x, 0, 6)), IMAGE, ["relu6"]),
    ("Hardtanh(-2,3)", lambda: Wrap(lambda m, x: m.a(x), a=nn.Hardtanh(-2.0, 3.0)), IMAGE, ["hardtanh"]),
    ("F.hardtanh", lambda: Wrap(lambda m, x: F.hardtanh(x)), IMAGE, ["hardtanh"]),
    ("Hardswish", lambda: Wrap(lambda m, x: m.a(x), a=nn.Hardswish()), IMAGE, ["hardswish"]),
    ("F.hardswish", lambda: Wrap(lambda m, x: F.hardswish(x)), IMAGE, ["hardswish"]),
    ("Hardsigmoid", lambda: Wrap(lambda m, x: m.a(x), a=nn.Hardsigmoid()), IMAGE, ["hardsigmoid"]),
    ("F.hardsigmoid", lambda: Wrap(lambda m, x: F.hardsigmoid(x)), IMAGE, ["hardsigmoid"]),
    ("Sigmoid", lambda: Wrap(lambda m, x: m.a(x), a=nn.Sigmoid()), IMAGE, ["sigmoid"]),
    ("torch.sigmoid", lambda: Wrap(lambda m, x: torch.sigmoid(x)), IMAGE, ["sigmoid"]),
    (".sigmoid()", lambda: Wrap(lambda m, x: x.sigmoid()), IMAGE, ["sigmoid"]),
    ("Tanh", lambda: Wrap(lambda m, x: m.a(x), a=nn.Tanh()), IMAGE, ["tanh"]),
    ("torch.tanh", lambda: Wrap(lambda m, x: torch.tanh(x)), IMAGE, ["tanh"]),
    (".tanh()", lambda: Wrap(lambda m, x: x.tanh()), IMAGE, ["tanh"]),
    ("SiLU", lambda: Wrap(lambda m, x: m.a(x), a=nn.SiLU()), IMAGE, ["silu"]),
    ("F.silu", lambda: Wrap(lambda m, x: F.silu(x)), IMAGE, ["silu"]),
    ("GELU", lambda: Wrap(lambda m, x: m.a(x), a=nn.GELU()), IMAGE, ["gelu"]),
    ("GELU_tanh", lambda: Wrap(lambda m, x: m.a(x), a=nn.GELU(approximate="tanh")), IMAGE, ["gelu"]),
    ("F.gelu_tanh", lambda: Wrap(lambda m, x: F.gelu(x, approximate="tanh")), IMAGE, ["gelu"]),
    ("MaxPool2d", lambda: Wrap(lambda m, x: m.p(x), p=nn.MaxPool2d(3, 2, 1, ceil_mode=True)), IMAGE,
     ["max_pool2d"]),
    ("MaxPool2d_dilated", lambda: Wrap(lambda m, x: m.p(x), p=nn.MaxPool2d(2, dilation=2)), IMAGE,
     ["max_pool2d"]),
    ("F.max_pool2d", lambda: Wrap(lambda m, x: F.max_pool2d(x, 2)), IMAGE, ["max_pool2d"]),
    ("F.max_pool2d_args", lambda: Wrap(lambda m, x: F.max_pool2d(x, (3, 2), stride=1, padding=1)), IMAGE,
     ["max_pool2d"]),
    ("AvgPool2d", lambda: Wrap(lambda m, x: m.p(x), p=nn.AvgPool2d(
        3, 2, 1, ceil_mode=True, count_include_pad=False)), IMAGE, ["avg_pool2d"]),
    ("AvgPool2d_divisor", lambda: Wrap(lambda m, x: m.p(x), p=nn.AvgPool2d(2, divisor_override=3)), IMAGE,
     ["avg_pool2d"]),
    ("F.avg_pool2d", lambda: Wrap(lambda m, x: F.avg_pool2d(x, 2)), IMAGE, ["avg_pool2d"]),
    ("F.avg_pool2d_args", lambda: Wrap(lambda m, x: F.avg_pool2d(x, 3, 1, 1)), IMAGE, ["avg_pool2d"]),
    ("AdaptiveAvgPool2d", lambda: Wrap(lambda m, x: m.p(x), p=nn.AdaptiveAvgPool2d(1)), IMAGE,
     ["adaptive_avg_pool2d"]),
    ("AdaptiveAvgPool2d_pair", lambda: Wrap(lambda m, x: m.p(x), p=nn.AdaptiveAvgPool2d((2, 3))), IMAGE,
     ["adaptive_avg_pool2d"]),
    ("F.adaptive_avg_pool2d", lambda: Wrap(lambda m, x: F.adaptive_avg_pool2d(x, 3)), IMAGE,
     ["adaptive_avg_pool2d"]),
    (".mean((2,3))", lambda: Wrap(lambda m, x: x.mean((2, 3))), IMAGE, ["reduce"]),
    ("torch.mean", lambda: Wrap(lambda m, x: torch.mean(x, (2, 3))), IMAGE, ["reduce"]),
    (".mean(dim=(-1,-2))", lambda: Wrap(lambda m, x: x.mean(dim=(-1, -2))), IMAGE, ["reduce"]),
    ("mean_keepdim", lambda: Wrap(lambda m, x: torch.mean(x, dim=[3, 2], keepdim=True)), IMAGE, ["reduce"]),
    (".sum(1,keepdim)", lambda: Wrap(lambda m, x: x.sum(1, keepdim=True)), IMAGE, ["reduce"]),
    ("torch.sum(1,2)", lambda: Wrap(lambda m, x: torch.sum(x, (1, 2))), IMAGE, ["reduce"]),
    (".sum(-1)", lambda: Wrap(lambda m, x: x.sum(dim=-1, keepdim=True)), FEATURES, ["reduce"]),
    ("mean_all_keepdim", lambda: Wrap(lambda m, x: x.mean((1, 2, 3), keepdim=True)), IMAGE, ["reduce"]),
    ("mean(1).flatten", lambda: Wrap(lambda m, x: x.mean(1).flatten(1)), IMAGE, ["reduce", "flatten"]),
    ("mean(3).relu().view", lambda: Wrap(lambda m, x: x.mean(3).relu().view(x.size(0), -1)), IMAGE,
     ["reduce", "relu", "flatten"]),
    ("sum_all.view", lambda: Wrap(lambda m, x: x.sum((1, 2, 3)).view(-1, 1)), IMAGE, ["reduce", "flatten"]),
    ("mean_features.view", lambda: Wrap(lambda m, x: x.mean(1).view(-1, 1)), FEATURES, ["reduce"]),
    ("channels_last.mean", lambda: Wrap(lambda m, x: x.permute(0, 2, 3, 1).mean((1, 2))), IMAGE, ["reduce"]),
    ("channels_last.sum(-1)", lambda: Wrap(lambda m, x: x.permute(0, 2, 3, 1).sum(-1, keepdim=True).permute(
        0, 3, 1, 2)), IMAGE, ["reduce"]),
    ("view(n,c,-1).mean", lambda: Wrap(lambda m, x: x.view(x.size(0), x.size(1), -1).mean(-1)), IMAGE, ["reduce"]),
    ("channels_last.flatten.mean", lambda: Wrap(lambda m, x: x.permute(0, 2, 3, 1).flatten(1).mean(1, keepdim=True)),
     IMAGE, ["reduce", "flatten"]),
    ("Flatten", lambda: Wrap(lambda m, x: m.f(x), f=nn.Flatten()), IMAGE, ["flatten"]),
    ("torch.flatten", lambda: Wrap(lambda m, x: torch.flatten(x, 1)), IMAGE, ["flatten"]),
    (".flatten(1)", lambda: Wrap(lambda m, x: x.flatten(1)), IMAGE, ["flatten"]),
    (".view(size(0),-1)", lambda: Wrap(lambda m, x: x.view(x.size(0), -1)), IMAGE, ["flatten"]),
    (".view(size()[0],-1)", lambda: Wrap(lambda m, x: x.view(x.size()[0], -1)), IMAGE, ["flatten"]),
    (".reshape(shape[0],-1)", lambda: Wrap(lambda m, x: x.reshape(x.shape[0], -1)), IMAGE, ["flatten"]),
    ("torch.reshape", lambda: Wrap(lambda m, x: torch.reshape(x, (x.shape[0], -1))), IMAGE, ["flatten"]),
    (".view(-1,CHW)", lambda: Wrap(lambda m, x: x.view(-1, 4 * 6 * 6)), IMAGE, ["flatten"]),
    (".view(size(0),CHW)", lambda: Wrap(lambda m, x: x.view((x.size(0), 4 * 6 * 6))), IMAGE, ["flatten"]),
    ("flatten_rank2", lambda: Wrap(lambda m, x: m.f(x), f=nn.Flatten()), FEATURES, ["identity"]),
    ("operator.add", lambda: Wrap(lambda m, x: x.relu() + x.sigmoid()), IMAGE, ["relu", "sigmoid", "add"]),
    ("torch.add", lambda: Wrap(lambda m, x: torch.add(x.relu(), x)), IMAGE, ["relu", "add"]),
    (".add()", lambda: Wrap(lambda m, x: x.relu().add(x)), IMAGE, ["relu", "add"]),
    (".add_()", lambda: Wrap(lambda m, x: x.relu().add_(x)), IMAGE, ["relu", "add"]),
    ("x*y", lambda: Wrap(lambda m, x: x.relu() * x.sigmoid()), IMAGE, ["relu", "sigmoid", "mul"]),
    ("squeeze_excitation", lambda: Wrap(lambda m, x: x * F.hardsigmoid(m.c(F.adaptive_avg_pool2d(x, 1))),
                                        c=nn.Conv2d(4, 4, 1)), IMAGE,
     ["adaptive_avg_pool2d", "conv2d", "hardsigmoid", "mul"]),
    ("se_scale_first", lambda: Wrap(lambda m, x: torch.mul(x.mean((2, 3), keepdim=True).sigmoid(), x)), IMAGE,
     ["reduce", "sigmoid", "mul"]),
    (".mul_()", lambda: Wrap(lambda m, x: x.relu().mul_(x)), IMAGE, ["relu", "mul"]),
    ("x+c", lambda: Wrap(lambda m, x: x + 1.5), IMAGE, ["scale_shift"]),
    ("c+x", lambda: Wrap(lambda m, x: 2 + x), IMAGE, ["scale_shift"]),
    ("torch.add_alpha", lambda: Wrap(lambda m, x: torch.add(x, 2.0, alpha=3)), IMAGE, ["scale_shift"]),
    ("x-c", lambda: Wrap(lambda m, x: x - 0.5), IMAGE, ["scale_shift"]),
    ("c-x", lambda: Wrap(lambda m, x: 1 - x), IMAGE, ["scale_shift"]),
    (".sub(c)", lambda: Wrap(lambda m, x: x.sub(3)), IMAGE, ["scale_shift"]),
    ("x*c", lambda: Wrap(lambda m, x: x * 0.25), IMAGE, ["scale_shift"]),
    ("c*x", lambda: Wrap(lambda m, x: 3 * x), IMAGE, ["scale_shift"]),
    ("x/c", lambda: Wrap(lambda m, x: x / 6), IMAGE, ["scale_shift"]),
    ("torch.div", lambda: Wrap(lambda m, x: torch.div(x, -2.0)), IMAGE, ["scale_shift"]),
    ("hardsigmoid_by_hand", lambda: Wrap(lambda m, x: F.relu6(x + 3) / 6), IMAGE,
     ["scale_shift", "relu6", "scale_shift"]),
    ("LeakyReLU", lambda: Wrap(lambda m, x: m.a(x), a=nn.LeakyReLU(0.2)), IMAGE, ["leaky_relu"]),
    ("F.leaky_relu", lambda: Wrap(lambda m, x: F.leaky_relu(x)), IMAGE, ["leaky_relu"]),
    ("PReLU_one", lambda: Wrap(lambda m, x: m.a(x), a=nn.PReLU(init=0.3)), IMAGE, ["leaky_relu"]),
    ("PReLU_channels", lambda: Wrap(lambda m, x: m.a(x), a=prelu(4)), IMAGE, ["prelu"]),
    ("PReLU_features", lambda: Wrap(lambda m, x: m.a(x), a=prelu(8)), FEATURES, ["prelu"]),
    ("F.prelu", lambda: Wrap(lambda m, x: F.prelu(x, m.a.weight), a=prelu(4)), IMAGE, ["prelu"]),
    ("torch.clamp", lambda: Wrap(lambda m, x: torch.clamp(x, -0.5, 2)), IMAGE, ["hardtanh"]),
    ("clamp_min", lambda: Wrap(lambda m, x: x.clamp(min=0.1)), IMAGE, ["hardtanh"]),
    ("clamp_max", lambda: Wrap(lambda m, x: torch.clip(x, max=1)), IMAGE, ["hardtanh"]),
    ("clamp(0)", lambda: Wrap(lambda m, x: x.clamp(0)), IMAGE, ["relu"]),
    ("torch.cat", lambda: Wrap(lambda m, x: torch.cat([x.relu(), x.sigmoid()], 1)), IMAGE,
     ["relu", "sigmoid", "cat"]),
    ("torch.cat_negative_dim", lambda: Wrap(lambda m, x: torch.cat((x, x.relu()), dim=-1)), IMAGE,
     ["relu", "cat"]),
    ("Dropout", lambda: Wrap(lambda m, x: m.d(x), d=nn.Dropout(0.5)), IMAGE, ["dropout"]),
    ("Dropout2d", lambda: Wrap(lambda m, x: m.d(x), d=nn.Dropout2d()), IMAGE, ["dropout"]),
    ("AlphaDropout", lambda: Wrap(lambda m, x: m.d(x), d=nn.AlphaDropout()), IMAGE, ["dropout"]),
    ("F.dropout", lambda: Wrap(lambda m, x: F.dropout(x, 0.5, training=m.training)), IMAGE, ["dropout"]),
    ("F.dropout2d", lambda: Wrap(lambda m, x: F.dropout2d(x, 0.5, False)), IMAGE, ["dropout"]),
    ("Identity", lambda: Wrap(lambda m, x: m.i(x), i=nn.Identity()), IMAGE, ["identity"]),
    (".contiguous()", lambda: Wrap(lambda m, x: x.contiguous()), IMAGE, ["identity"]),
    ("Softmax", lambda: Wrap(lambda m, x: m.s(x), s=nn.Softmax(dim=1)), FEATURES, ["softmax"]),
    ("Softmax_negative_dim", lambda: Wrap(lambda m, x: m.s(x), s=nn.Softmax(dim=-1)), IMAGE, ["softmax"]),
    ("F.softmax", lambda: Wrap(lambda m, x: F.softmax(x, -1)), FEATURES, ["softmax"]),
    ("torch.softmax", lambda: Wrap(lambda m, x: torch.softmax(x, 1)), FEATURES, ["softmax"]),
    (".softmax(1)", lambda: Wrap(lambda m, x: x.softmax(1)), IMAGE, ["softmax"]),
    ("LogSoftmax", lambda: Wrap(lambda m, x: m.s(x), s=nn.LogSoftmax(1)), FEATURES, ["log_softmax"]),
    ("F.log_softmax", lambda: Wrap(lambda m, x: F.log_softmax(x, dim=1)), FEATURES, ["log_softmax"]),
    ("torch.log_softmax", lambda: Wrap(lambda m, x: torch.log_softmax(x, -1)), FEATURES, ["log_softmax"]),
    (".log_softmax(1)", lambda: Wrap(lambda m, x: x.log_softmax(1)), FEATURES, ["log_softmax"]),
]


@pytest.mark.filterwarnings("ignore:Using padding='same'")  # torch notes its own copy for even kernels
@pytest.mark.parametrize("make_model, shape, ops", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_form_maps_to_op_with_right_attrs(make_model, shape, ops):
    model = make_model().eval()
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    graph, gm = trace(model, x)
    assert [n.op for n in graph.nodes] == ops
    with torch.no_grad():
        want = model(x.clone())  # clone: some forms run in place
        (got,) = run_ir(graph, x.clone())
    torch.testing.assert_close(got, want, rtol=RTOL, atol=ATOL)
    assert isinstance(gm, torch.fx.GraphModule)


@pytest.mark.filterwarnings("ignore:Using padding='same'")  # torch notes its own copy for even kernels
@pytest.mark.parametrize("padding, kernel, dilation, expected", [
    (1, 3, 1, [1, 1, 1, 1]),
    ((1, 2), 3, 1, [1, 2, 1, 2]),
    ("valid", 3, 1, [0, 0, 0, 0]),
    ("same", 4, 1, [1, 1, 2, 2]),     # the odd pixel goes to the bottom/right, as PyTorch does
    ("same", 3, 2, [2, 2, 2, 2]),
])
def test_conv_padding_attr(padding, kernel, dilation, expected):
    model = Wrap(lambda m, x: m.c(x), c=nn.Conv2d(4, 6, kernel, padding=padding, dilation=dilation))
    graph, _ = trace(model, torch.randn(IMAGE))
    assert graph.nodes[0].attrs["padding"] == expected


def test_params_are_float32_copies_and_conv_attrs():
    model = Wrap(lambda m, x: m.c(x), c=nn.Conv2d(4, 8, 3, stride=(2, 1), dilation=(1, 2), groups=2))
    graph, _ = trace(model, torch.randn(IMAGE))
    (node,) = graph.nodes
    assert node.name == "c" and node.inputs == ["x"] and node.output == "c"
    assert node.attrs == {"stride": [2, 1], "padding": [0, 0, 0, 0], "dilation": [1, 2], "groups": 2, "act": "none"}
    assert node.params["weight"].dtype.name == "float32" and node.params["weight"].shape == (8, 2, 3, 3)
    node.params["weight"][...] = 0  # the IR owns its arrays: the model's weights do not change
    assert model.c.weight.abs().sum() > 0


def test_reduce_values_keep_fx_names():
    # Dims dropped by the op itself: its output is the fx node's value.
    graph, _ = trace(Wrap(lambda m, x: x.mean((2, 3)).relu()), torch.randn(IMAGE))
    reduce, relu = graph.nodes
    assert (reduce.output, reduce.attrs) == ("mean", {"mode": "mean", "dims": [2, 3], "keepdim": False})
    assert relu.inputs == ["mean"] and graph.shapes["mean"] == (2, 4)
    # (N, H, W): the fx node's name holds the keepdim value, which the flatten after it reads.
    graph, _ = trace(Wrap(lambda m, x: x.sum(1).flatten(1)), torch.randn(IMAGE))
    reduce, flatten = graph.nodes
    assert (reduce.output, reduce.attrs) == ("sum_1", {"mode": "sum", "dims": [1], "keepdim": True})
    assert flatten.inputs == ["sum_1"] and graph.shapes["sum_1"] == (2, 1, 6, 6)
    # A flatten right after the keepdim value: that value is a new name, the flatten takes the fx node's.
    graph, gm = trace(Wrap(lambda m, x: x.permute(0, 2, 3, 1).flatten(1).mean(1, keepdim=True)), torch.randn(IMAGE))
    reduce, flatten = graph.nodes
    assert reduce.inputs == ["x"] and reduce.attrs["dims"] == [1, 2, 3]
    assert reduce.output not in {n.name for n in gm.graph.nodes} and reduce.output.startswith("mean")
    assert flatten.inputs == [reduce.output] and flatten.output == "mean"
    assert graph.shapes[reduce.output] == (2, 1, 1, 1)


def test_shapes_inputs_and_tuple_outputs():
    model = Wrap(lambda m, x: (m.c(x), m.c(x).flatten(1)), c=conv())
    graph, _ = trace(model, torch.randn(IMAGE))
    assert graph.inputs == ["x"]
    assert graph.outputs == [graph.nodes[0].output, "flatten"]
    assert graph.shapes["x"] == IMAGE and graph.shapes["flatten"] == (2, 6 * 4 * 4)
    assert all(graph.shapes[n.output] for n in graph.nodes)


class TwoInputs(nn.Module):
    def forward(self, a, b):
        return [a.relu() + b]


def test_several_inputs():
    a, b = torch.randn(IMAGE), torch.randn(IMAGE)
    graph, _ = trace(TwoInputs(), (a, b))
    assert graph.inputs == ["a", "b"] and [n.op for n in graph.nodes] == ["relu", "add"]
    torch.testing.assert_close(run_ir(graph, a, b)[0], TwoInputs()(a, b)[0], rtol=RTOL, atol=ATOL)


def test_wrong_number_of_example_inputs_is_a_value_error():
    with pytest.raises(ValueError, match="example_input.*2 input"):
        trace(TwoInputs(), torch.randn(IMAGE))


def test_bad_argument_types():
    with pytest.raises(TypeError, match="model"):
        trace(lambda x: x, torch.randn(IMAGE))
    with pytest.raises(TypeError, match="example_input"):
        trace(nn.ReLU(), [[1.0, 2.0]])


@pytest.mark.parametrize("fn, what", [(lambda m, x: (x.relu(), x.size(0)), "output 1 is int"),
                                       (lambda m, x: {"y": x.relu(), "n": x.size(0)}, "output 'n' is int")],
                         ids=["int", "dict"])
def test_non_tensor_output_is_a_value_error(fn, what):
    with pytest.raises(ValueError, match="a tensor, a tuple/list of tensors or a dict of tensors; " + what):
        trace(Wrap(fn), torch.randn(IMAGE))


def test_dict_output_records_its_keys():
    graph, _ = trace(Wrap(lambda m, x: {"out": x.relu(), "aux": x.sigmoid()}), torch.randn(IMAGE))
    assert graph.output_keys == ["out", "aux"] and len(graph.outputs) == 2


class Erf(nn.Module):
    def forward(self, x):
        return torch.erf(x)


class ThreeUnsupported(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1, padding_mode="reflect"), nn.ReLU(), Erf())
        self.head = nn.Sequential(nn.LSTM(32, 4))

    def forward(self, x):
        out, _ = self.head(self.features(x).flatten(1))
        return out


def test_every_unsupported_op_is_listed_in_one_error():
    with pytest.raises(UnsupportedOpError) as info:
        trace(ThreeUnsupported(), torch.randn(2, 1, 4, 4))
    lines = str(info.value).splitlines()
    items = [line for line in lines if line.startswith("  - ")]
    assert len(items) == 3, lines
    conv_line, erf_line, lstm_line = items
    assert "Conv2d" in conv_line and "'features.0'" in conv_line and "padding_mode='reflect'" in conv_line
    assert "torch.erf" in erf_line and "'features.2'" in erf_line and __file__ in erf_line
    assert "LSTM" in lstm_line and "'head.0'" in lstm_line
    assert "keep_float=[...]" in lines[-1]


@pytest.mark.parametrize("fn, modules, shape, reason", [
    (lambda m, x: m.p(x), {"p": nn.AdaptiveAvgPool2d((None, 2))}, IMAGE, "None entries"),
    (lambda m, x: x.mean(1), {}, IMAGE, "it has shape (2, 6, 6), and only (N, F) and NCHW tensors can be read"),
    (lambda m, x: x.mean(), {}, IMAGE, "mean over every dim of a (2, 4, 6, 6) tensor, the batch too"),
    (lambda m, x: x.sum(0), {}, IMAGE, "dim=0 is the batch dim"),
    (lambda m, x: x.sum((2, 3), dtype=torch.float64), {}, IMAGE, "dtype=torch.float64"),
    (lambda m, x: x.view(x.size(0), 2, -1).mean(2), {}, IMAGE, "not whole rows, columns or channels"),
    (lambda m, x: x.flatten(2), {}, IMAGE, "start_dim=2"),
    (lambda m, x: x.view(2, -1), {}, IMAGE, "the batch must stay dim 0"),
    (lambda m, x: x.view(x.size(0), 4, -1), {}, IMAGE, "not a reordering or selection of channels"),
    (lambda m, x: x - x.mean((2, 3), keepdim=True), {}, IMAGE, "broadcasting sub"),
    (lambda m, x: x / x.sigmoid(), {}, IMAGE, "division by a tensor"),
    (lambda m, x: x * x.mean(1, keepdim=True), {}, IMAGE, "broadcasting mul"),
    (lambda m, x: x + m.c.weight, {"c": nn.Conv2d(4, 6, 1)}, (6, 4, 1, 1), "only one number, or one value per channel"),
    (lambda m, x: x + x.mean((2, 3), keepdim=True), {}, IMAGE, "broadcasting add"),
    (lambda m, x: torch.add(x, x, alpha=2), {}, IMAGE, "alpha=2"),
    (lambda m, x: torch.cat([x, x], 0), {}, IMAGE, "batch dim"),
    (lambda m, x: F.softmax(x, 0), {}, FEATURES, "batch dim"),
    (lambda m, x: F.dropout(x, 0.5), {}, IMAGE, "training=True"),
    (lambda m, x: m.bn(x), {"bn": nn.BatchNorm2d(4, track_running_stats=False)}, IMAGE, "track_running_stats"),
    (lambda m, x: m.l(x), {"l": nn.Linear(6, 3)}, IMAGE, "input of shape (2, 4, 6, 6)"),
    (lambda m, x: x[:, 0], {}, IMAGE, "indexing with"),
    (lambda m, x: m.c(x), {"c": nn.Conv2d(4, 4, 3, padding_mode="circular")}, IMAGE, "padding_mode='circular'"),
    (lambda m, x: m.c(x), {"c": nn.Conv2d(4, 4, 1, padding=1)}, IMAGE, "padding [1, 1] not smaller than the kernel's"),
], ids=["adaptive_none", "mean_dim1", "mean_all", "sum_batch", "sum_dtype", "mean_half_channels", "flatten2",
        "view_constant_batch", "view_rank3", "sub_broadcast", "div_tensor", "mul_broadcast",
        "add_constant_tensor", "add_broadcast", "add_alpha", "cat_batch", "softmax_batch", "dropout_training",
        "bn_batch_stats", "linear_rank4", "slice", "conv_circular", "conv_padding_past_kernel"])
def test_unsupported_arguments_are_named(fn, modules, shape, reason):
    model = Wrap(fn, **modules)
    with pytest.raises(UnsupportedOpError, match="keep_float") as info:
        trace(model, torch.randn(shape))
    assert reason in str(info.value)


class OverwritesInput(nn.Module):
    def __init__(self):
        super().__init__()
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        y = x.sigmoid()
        z = self.act(y)  # y is overwritten here, so `y - z` is 0 in eager mode
        return y - z


def test_in_place_op_whose_input_is_read_later_is_reported():
    with pytest.raises(UnsupportedOpError, match="'act'.*in place"):
        trace(OverwritesInput(), torch.randn(IMAGE))


def test_example_input_is_not_modified_by_in_place_ops():
    x = torch.randn(IMAGE)
    before = x.clone()
    trace(Wrap(lambda m, x: x.relu_()), x)
    assert torch.equal(x, before)


class DataDependent(nn.Module):
    def forward(self, x):
        if x.sum() > 0:
            return x
        return -x


def test_untraceable_model_is_a_value_error_naming_fx_and_the_cause():
    with pytest.raises(ValueError) as info:
        trace(DataDependent(), torch.randn(IMAGE))
    message = str(info.value)
    assert "torch.fx" in message and "TraceError" in message and "control flow" in message
    assert isinstance(info.value.__cause__, torch.fx.proxy.TraceError)


def test_user_model_is_unchanged():
    model = nn.Sequential(nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4), nn.ReLU(inplace=True), nn.Dropout(0.5),
                          nn.Flatten(), nn.Linear(64, 3))
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    graph, gm = trace(model, torch.randn(IMAGE))
    assert all(m.training for m in model.modules())
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert not gm.training
    assert [n.op for n in graph.nodes] == ["conv2d", "batchnorm", "relu", "dropout", "flatten", "linear"]
    assert graph.inputs == ["input_1"] and [n.name for n in graph.nodes][:2] == ["0", "1"]


class BasicBlock(nn.Module):
    """A torchvision-style residual block: BatchNorms to fold, in-place ReLUs to fuse, `out += identity`."""

    def __init__(self, channels):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = batchnorm()
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = batchnorm()

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += x
        return self.relu(out)


def test_traced_residual_block_after_passes_matches_the_model():
    from qruntime.convert.passes import run_all

    model = nn.Sequential(BasicBlock(4), nn.Dropout(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3),
                          nn.Softmax(dim=1)).eval()
    x = torch.randn(IMAGE)
    graph = run_all(trace(model, x)[0])
    assert [(n.op, n.attrs.get("act")) for n in graph.nodes] == [
        ("conv2d", "relu"), ("conv2d", "none"), ("add", "relu"), ("adaptive_avg_pool2d", None),
        ("flatten", None), ("linear", "none"), ("softmax", None)]
    with torch.no_grad():
        torch.testing.assert_close(run_ir(graph, x)[0], model(x), rtol=RTOL, atol=ATOL)
