"""Tests of the float-IR passes (convert/passes) on small hand-built graphs."""
import copy

import numpy as np
import pytest

from qruntime.convert import ir
from qruntime.convert.passes import dead_code, fold_bn, fuse_activations, remove_noops, run_all


def node(op, output, inputs, name=None, params=None, **attrs):
    return ir.Node(op=op, name=name or output, inputs=list(inputs), output=output, attrs=attrs,
                   params=params or {})


def conv(output, inputs, rng, oc=4, ic=3, groups=1, bias=True, act="none"):
    params = {"weight": rng.standard_normal((oc, ic // groups, 3, 3)).astype(np.float32)}
    if bias:
        params["bias"] = rng.standard_normal(oc).astype(np.float32)
    return node("conv2d", output, inputs, params=params, stride=[1, 1], padding=[1, 1, 1, 1],
                dilation=[1, 1], groups=groups, act=act)


def batchnorm(output, inputs, rng, channels=4):
    params = {"mean": rng.standard_normal(channels), "var": rng.uniform(0.2, 2.0, channels),
              "weight": rng.standard_normal(channels), "bias": rng.standard_normal(channels)}
    return node("batchnorm", output, inputs, params={k: v.astype(np.float32) for k, v in params.items()},
                eps=1e-3)


def graph(nodes, outputs, inputs=("x",)):
    return ir.Graph(inputs=list(inputs), outputs=list(outputs), nodes=nodes, shapes={"x": (2, 3, 5, 5)})


def structure(g):
    """What a pass may change, in comparable form: ops, wiring, attrs and parameter values."""
    return (g.inputs, g.outputs, [(n.op, n.name, n.inputs, n.output, n.attrs,
                                   {k: v.tolist() for k, v in n.params.items()}) for n in g.nodes])


def check_pure(pass_fn, g):
    """Runs pass_fn and asserts it left its input graph as it was."""
    before = structure(copy.deepcopy(g))
    result = pass_fn(g)
    assert structure(g) == before
    return result


def wiring(g):
    return [(n.op, n.inputs, n.output) for n in g.nodes]


# --- remove_noops -------------------------------------------------------------------------------------


def test_remove_noops_rewires_consumers_through_chains(rng):
    g = graph([conv("c", ["x"], rng), node("dropout", "d", ["c"]), node("identity", "i", ["d"]),
               node("relu", "r", ["i"]), node("add", "a", ["i", "r"], act="none")], ["a"])
    out = check_pure(remove_noops, g)
    assert wiring(out) == [("conv2d", ["x"], "c"), ("relu", ["c"], "r"), ("add", ["c", "r"], "a")]
    assert out.outputs == ["a"]


def test_remove_noops_graph_output_becomes_the_noop_input(rng):
    g = graph([conv("c", ["x"], rng), node("dropout", "d", ["c"]), node("relu", "r", ["d"])], ["d", "r"])
    out = check_pure(remove_noops, g)
    assert out.outputs == ["c", "r"]
    assert wiring(out) == [("conv2d", ["x"], "c"), ("relu", ["c"], "r")]


def test_remove_noops_output_may_become_the_graph_input():
    out = check_pure(remove_noops, graph([node("identity", "i", ["x"])], ["i"]))
    assert out.nodes == [] and out.outputs == ["x"]


# --- fold_bn --------------------------------------------------------------------------------------------


def torch_conv(n, x):
    torch = pytest.importorskip("torch")
    p = {k: torch.from_numpy(v).double() for k, v in n.params.items()}
    return torch.nn.functional.conv2d(x, p["weight"], p.get("bias"), padding=1, groups=n.attrs["groups"])


def torch_bn(n, x):
    torch = pytest.importorskip("torch")
    p = {k: torch.from_numpy(v).double() for k, v in n.params.items()}
    return torch.nn.functional.batch_norm(x, p["mean"], p["var"], p["weight"], p["bias"], False, 0.0,
                                          n.attrs["eps"])


@pytest.mark.parametrize("groups, bias", [(1, True), (1, False), (2, True)])
def test_fold_bn_into_conv_matches_conv_then_bn(rng, groups, bias):
    torch = pytest.importorskip("torch")
    c = conv("c", ["x"], rng, oc=4, ic=4, groups=groups, bias=bias)
    bn = batchnorm("bn", ["c"], rng)
    g = graph([c, bn, node("relu", "r", ["bn"])], ["r"])
    out = check_pure(fold_bn, g)
    assert wiring(out) == [("conv2d", ["x"], "bn"), ("relu", ["bn"], "r")]
    merged = out.nodes[0]
    assert merged.name == "c" and merged.attrs == c.attrs
    assert {k: v.dtype for k, v in merged.params.items()} == {"weight": np.float32, "bias": np.float32}
    x = torch.from_numpy(rng.standard_normal((2, 4, 5, 5))).double()
    want = torch_bn(bn, torch_conv(c, x))
    got = torch_conv(merged, x)
    # float32 storage of the folded weights: a relative error of a few float32 ulps.
    assert ((got - want).abs().max() / want.abs().max()).item() < 1e-5


# case -> (nodes, graph outputs) in which the batchnorm "bn" cannot be folded
CANNOT_FOLD = {
    "conv_has_other_consumer": lambda rng: (
        [conv("c", ["x"], rng), node("relu", "r", ["c"]), batchnorm("bn", ["c"], rng)], ["bn", "r"]),
    "conv_is_graph_output": lambda rng: ([conv("c", ["x"], rng), batchnorm("bn", ["c"], rng)], ["bn", "c"]),
    "after_relu": lambda rng: (
        [conv("c", ["x"], rng), node("relu", "r", ["c"]), batchnorm("bn", ["r"], rng)], ["bn"]),
    "conv_has_act": lambda rng: ([conv("c", ["x"], rng, act="relu"), batchnorm("bn", ["c"], rng)], ["bn"]),
    "graph_input": lambda rng: ([batchnorm("bn", ["x"], rng, channels=3)], ["bn"]),
}


@pytest.mark.parametrize("case", list(CANNOT_FOLD))
def test_fold_bn_leaves_an_affine_when_it_cannot_fold(rng, case):
    nodes, outputs = CANNOT_FOLD[case](rng)
    g = graph(nodes, outputs)
    bn = g.producer("bn")
    out = check_pure(fold_bn, g)
    assert [n.op for n in out.nodes] == ["affine" if n.op == "batchnorm" else n.op for n in nodes]
    affine = out.producer("bn")
    assert affine.inputs == bn.inputs and affine.name == "bn"
    if g.producer("c") is not None:
        assert out.producer("c").params["weight"].tolist() == g.producer("c").params["weight"].tolist()
    p = {k: v.astype(np.float64) for k, v in bn.params.items()}
    scale = p["weight"] / np.sqrt(p["var"] + bn.attrs["eps"])
    assert affine.params["scale"].dtype == np.float32 and affine.params["shift"].dtype == np.float32
    np.testing.assert_allclose(affine.params["scale"], scale, rtol=1e-6)
    np.testing.assert_allclose(affine.params["shift"], p["bias"] - p["mean"] * scale, rtol=1e-6, atol=1e-7)


# --- fuse_activations -------------------------------------------------------------------------------------


@pytest.mark.parametrize("producer_op, act_op, act_attrs, fused_act", [
    ("conv2d", "relu", {}, "relu"),
    ("conv2d", "relu6", {}, "relu6"),
    ("conv2d", "hardtanh", {"min_val": 0.0, "max_val": 6.0}, "relu6"),
    ("linear", "relu", {}, "relu"),
    ("linear", "relu6", {}, "relu6"),
    ("add", "relu", {}, "relu"),
    ("add", "relu6", {}, None),
    ("conv2d", "hardtanh", {"min_val": -1.0, "max_val": 1.0}, None),
    ("conv2d", "sigmoid", {}, None),
    ("max_pool2d", "relu", {}, None),
])
def test_fuse_activation_into_producer(producer_op, act_op, act_attrs, fused_act):
    producer_attrs = {"act": "none"} if producer_op in ("conv2d", "linear", "add") else {}
    inputs = ["x", "x"] if producer_op == "add" else ["x"]
    g = graph([node(producer_op, "p", inputs, name="layer", **producer_attrs),
               node(act_op, "a", ["p"], **act_attrs), node("sigmoid", "s", ["a"])], ["s"])
    out = check_pure(fuse_activations, g)
    if fused_act is None:
        assert wiring(out) == wiring(g)
    else:
        assert wiring(out) == [(producer_op, inputs, "a"), ("sigmoid", ["a"], "s")]
        assert out.nodes[0].attrs["act"] == fused_act and out.nodes[0].name == "layer"


def test_fuse_needs_a_single_consumer_and_no_graph_output():
    two_consumers = graph([node("conv2d", "c", ["x"], act="none"), node("relu", "r", ["c"]),
                           node("add", "a", ["c", "r"], act="none")], ["a"])
    assert wiring(check_pure(fuse_activations, two_consumers)) == wiring(two_consumers)
    output = graph([node("linear", "l", ["x"], act="none"), node("relu", "r", ["l"])], ["r", "l"])
    assert wiring(check_pure(fuse_activations, output)) == wiring(output)


def test_fuse_does_not_stack_activations():
    g = graph([node("conv2d", "c", ["x"], act="none"), node("relu", "r1", ["c"]), node("relu6", "r2", ["r1"])],
              ["r2"])
    out = check_pure(fuse_activations, g)
    assert wiring(out) == [("conv2d", ["x"], "r1"), ("relu6", ["r1"], "r2")]
    assert out.nodes[0].attrs["act"] == "relu"


# --- dead_code ------------------------------------------------------------------------------------------


def test_dead_code_keeps_only_what_reaches_an_output():
    g = graph([node("relu", "r", ["x"]), node("sigmoid", "dead1", ["x"]), node("tanh", "t", ["r"]),
               node("relu", "dead2", ["dead1"]), node("add", "a", ["r", "t"], act="none")], ["a", "r"],
              inputs=["x", "unused"])
    out = check_pure(dead_code, g)
    assert [n.output for n in out.nodes] == ["r", "t", "a"]
    assert out.inputs == ["x", "unused"] and out.outputs == ["a", "r"]


# --- run_all ------------------------------------------------------------------------------------------------


def test_run_all_order_lets_noops_not_block_folding_and_fusion(rng):
    g = graph([conv("c", ["x"], rng, ic=3), node("dropout", "d", ["c"]), batchnorm("bn", ["d"], rng),
               node("identity", "i", ["bn"]), node("relu", "r", ["i"]), node("sigmoid", "unused", ["r"]),
               node("flatten", "f", ["r"])], ["f"])
    out = check_pure(run_all, g)
    assert wiring(out) == [("conv2d", ["x"], "r"), ("flatten", ["r"], "f")]
    assert out.nodes[0].attrs["act"] == "relu" and out.nodes[0].name == "c"
