"""torch.fx tracing of a PyTorch model into the float IR (convert/ir.py), reporting every unsupported op at once."""
import collections.abc
import copy
import math
import operator
import os
import re
from dataclasses import replace

import numpy as np
import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F
from torch.fx.node import _get_qualified_name
from torch.fx.passes.shape_prop import ShapeProp, TensorMetadata

from ..errors import UnsupportedOpError
from . import ir
from .layout import Layout, LayoutError

_TORCH_DIR = os.path.dirname(torch.__file__)
_FRAME = re.compile(r'File "(.+)", line (\d+), in ')
_NOOP_OPS = ("dropout", "identity")
_IN_PLACE_OPERATORS = (operator.iadd, operator.isub, operator.imul, operator.itruediv)
# fx node meta key: the node's output is this Layout of the IR value named after the node (_Mapper.rearranged).
VIEW_META = "qruntime_view"


class _Unsupported(Exception):
    """A mapper's verdict that one fx node cannot be converted; the message is the reason ("" = the op itself)."""


def trace(model, example_input):
    """Trace `model` with torch.fx into an ir.Graph; returns (graph, the traced fx.GraphModule).

    example_input is a tensor, or a tuple/list of tensors for a model with several inputs. The user's
    model is never modified: a deep copy in eval mode is traced and run once on (a copy of) the example
    to record every value's shape. Raises UnsupportedOpError listing every op that cannot be mapped.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    examples = _example_tensors(example_input)
    model = copy.deepcopy(model).eval()
    gm = _symbolic_trace(model, stack_traces=False)
    _propagate_shapes(gm, examples)
    try:
        return _Mapper(gm).graph(), gm
    except UnsupportedOpError:
        # Traced again with stack traces, so the error can name lines of forward(). Only here: a process's
        # first stack trace costs torch 1.7-3 s (Zen 3), most of a small model's quantize.
        gm = _symbolic_trace(model, stack_traces=True)
        _propagate_shapes(gm, examples)
        return _Mapper(gm).graph(), gm


def _example_tensors(example_input):
    if isinstance(example_input, torch.Tensor):
        return [example_input]
    if (isinstance(example_input, (tuple, list)) and example_input
            and all(isinstance(t, torch.Tensor) for t in example_input)):
        return list(example_input)
    raise TypeError("example_input must be a torch.Tensor or a non-empty tuple/list of tensors, "
                    f"got {type(example_input).__name__}")


def _symbolic_trace(model, stack_traces):
    # What torch.fx.symbolic_trace does; with stack_traces, messages can point at the line of forward().
    tracer = fx.Tracer()
    tracer.record_stack_traces = stack_traces
    try:
        graph = tracer.trace(model)
    except Exception as e:
        raise ValueError(
            f"the model could not be traced by torch.fx ({type(e).__name__}: {e}). The usual causes are "
            "data-dependent control flow in forward (an `if` or loop on tensor values) and calling "
            "non-torch code (numpy, math, Python builtins) on tensors; rewrite that part of forward "
            "with torch operations") from e
    return fx.GraphModule(tracer.root, graph, type(model).__name__)


def _propagate_shapes(gm, examples):
    placeholders = [n.name for n in gm.graph.nodes if n.op == "placeholder"]
    if len(placeholders) != len(examples):
        raise ValueError(f"example_input: the model's forward takes {len(placeholders)} input(s) "
                         f"({', '.join(placeholders)}) but {len(examples)} tensor(s) were given")
    try:
        with torch.no_grad():
            # Copies: an in-place op on an input must not change the caller's tensor.
            ShapeProp(gm).propagate(*[t.detach().clone() for t in examples])
    except Exception as e:
        raise ValueError(f"example_input: running the traced model on it failed "
                         f"({type(e).__name__}: {e})") from e


def _arg(node, index, name, default=None):
    """Argument `name` of an fx call, given positionally at `index` or as a keyword."""
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)


def _to_numpy(tensor):
    return tensor.detach().to(device="cpu", dtype=torch.float32).numpy().copy()


def _function_name(fn):
    try:
        name = _get_qualified_name(fn)
    except Exception:  # torch's helper refuses some callables (lambdas, partials); the repr still names them
        return getattr(fn, "__qualname__", repr(fn))
    for private, public in (("_operator.", "operator."), ("torch._C._nn.", "torch.nn.functional."),
                            ("torch._C._special.special_", "torch.special.")):
        if name.startswith(private):
            return public + name[len(private):]
    return name


def _user_frame(stack_trace):
    """'file:line' of the innermost frame of the model's own code in an fx stack trace, or None."""
    frames = [m for m in _FRAME.finditer(stack_trace or "") if not m.group(1).startswith(_TORCH_DIR)]
    return f"{frames[-1].group(1)}:{frames[-1].group(2)}" if frames else None


def _is_stochastic_depth(fn):
    # torchvision wraps it for fx (a call_function node); matched by name: torchvision is not imported.
    return (getattr(fn, "__name__", None) == "stochastic_depth"
            and getattr(fn, "__module__", "").endswith("ops.stochastic_depth"))


class _Mapper:
    """One pass over a shape-propagated fx graph, building IR nodes and collecting every unsupported node."""

    def __init__(self, gm):
        self.gm = gm
        self.modules = dict(gm.named_modules())
        self.order = {node: i for i, node in enumerate(gm.graph.nodes)}
        self.taken_names = {node.name for node in gm.graph.nodes}
        self.shapes = {}
        self.size_nodes = set()
        self.unsupported_nodes = set()
        self.layouts = {}       # fx node -> Layout: a tensor that only rearranges a real value (layout.py)
        self.layout_lists = {}  # fx node -> [Layout]: the pieces of a chunk/split, picked by getitem
        self.materialized = {}  # fx node -> the IR value a layout became when a real op first read it
        self.pending = []       # IR nodes those materializations need, emitted before the op that reads

    def graph(self):
        inputs, outputs, nodes, problems, keys = [], [], [], [], None
        for node in self.gm.graph.nodes:
            if node.op == "placeholder":
                inputs.append(node.name)
                self.shapes[node.name] = self.shape(node)
            elif node.op == "output":
                try:
                    outputs, keys = self._outputs(node)
                except _Unsupported as e:
                    problems.append(f"  - the model's output: {e}")
                nodes.extend(self.pending)  # layouts the graph outputs read
            elif node.op == "get_attr":
                continue  # parameters and constants are read by the nodes that use them
            elif self._is_size(node):
                self.size_nodes.add(node)  # consumed by the view/reshape that uses it
            else:
                try:
                    new = self._map(node)
                except _Unsupported as e:
                    self.unsupported_nodes.add(node)
                    self.pending = []
                    problems.append(self._describe(node, str(e)))
                    continue
                new, self.pending = self.pending + new, []
                for n in new:
                    self.shapes.setdefault(n.output, self.shape(node))
                nodes.extend(new)
        if problems:
            raise UnsupportedOpError("\n".join(
                [f"qruntime cannot convert {len(problems)} operation(s) of this model:"] + problems +
                ["Layers that are supported but should run in float32 can be named in "
                 "quantize(..., keep_float=[...]); the operations above must be rewritten with supported "
                 "ones (or reported as a missing feature)."]))
        # values whose fx tensor is the NHWC view of the IR's own value of that name (not any other
        # layout recorded under its own name, such as a reduce's rank-3 view of its keepdim result)
        channels_last = {node.name for node in self.layouts
                         if isinstance(node, torch.fx.Node) and self.channels_last(node) == node.name}
        return ir.Graph(inputs=inputs, outputs=outputs, nodes=nodes, shapes=self.shapes, output_keys=keys,
                        channels_last=channels_last)

    # --- values -------------------------------------------------------------------------------------

    def is_tensor(self, arg):
        return isinstance(arg, fx.Node) and isinstance(arg.meta.get("tensor_meta"), TensorMetadata)

    def shape(self, arg):
        if not self.is_tensor(arg):
            raise _Unsupported(f"'{arg}' is not a tensor")
        return tuple(int(d) for d in arg.meta["tensor_meta"].shape)

    def rank(self, arg):
        return len(self.shape(arg))

    def tensor(self, arg, role="input"):
        """The IR value name of a tensor argument computed from the model's inputs (a layout is
        materialized first: see layout.py)."""
        if arg in self.layouts:
            return self.materialize(arg)
        if not isinstance(arg, fx.Node):
            raise _Unsupported(f"{role} is the constant {arg!r} (only tensors computed from the input are supported)")
        if arg.op == "get_attr":
            raise _Unsupported(f"{role} is the constant tensor '{arg.target}' (only tensors computed from "
                               "the input are supported)")
        if not self.is_tensor(arg):
            raise _Unsupported(f"{role} '{arg.name}' is not a tensor")
        return arg.name

    def layout(self, arg):
        """The Layout of a tensor argument: its recorded one, or the identity of a real value."""
        if arg in self.layouts:
            return self.layouts[arg]
        return Layout.of(self.tensor(arg), self.shape(arg))

    def channels_last(self, arg):
        """The real NCHW value of which `arg` is arg.permute(0, 2, 3, 1) (ConvNeXt's channels-last view,
        which is how the engine stores activations anyway), or None."""
        layout = self.layouts.get(arg)
        if layout is None or len(layout.source_shape) != 3:
            return None
        c, h, w = layout.source_shape
        view = np.arange(c * h * w).reshape(c, h, w).transpose(1, 2, 0)
        return layout.source if np.array_equal(layout.index, view) else None

    def as_channels_last(self, node, channels):
        """Records node's output, (N, H, W, channels), as the channels-last view of the real value node.name."""
        n, h, w = self.shape(node)[:3]
        self.shapes[node.name] = (n, channels, h, w)
        self.rearranged(node, Layout.of(node.name, (n, channels, h, w)).permute([0, 2, 3, 1]))

    def rearranged(self, node, layout):
        """Records that fx node's output is `layout` of the real IR value of the same name (a full rearrangement,
        channels-last): node.meta[VIEW_META] keeps it on the returned GraphModule, so qruntime.compare can line
        the float model's tensor up with the int8 model's value."""
        self.layouts[node] = layout
        node.meta[VIEW_META] = layout

    def pointwise_input(self, node, arg):
        """The IR value an elementwise op on `arg` reads. When arg rearranges all the elements of a real value
        in a way no op materializes (channels-last), the op runs on that value and node's output is the same
        rearrangement of its result."""
        layout = self.layouts.get(arg)
        if layout is None or self._materializes(layout) or not np.array_equal(
                np.sort(layout.index, axis=None), np.arange(math.prod(layout.source_shape))):
            return self.tensor(arg)
        self.shapes[node.name] = (self.shape(arg)[0],) + layout.source_shape
        self.rearranged(node, Layout(node.name, layout.source_shape, layout.index, layout.spatial))
        return layout.source

    @staticmethod
    def _materializes(layout):
        return (layout.is_identity() or (layout.is_flatten() and len(layout.source_shape) == 3)
                or layout.channel_map() is not None)

    def materialize(self, arg):
        """The IR value holding the logical tensor `arg`, emitting the op that makes it once."""
        if arg in self.materialized:
            return self.materialized[arg]
        layout = self.layouts[arg]
        channels = layout.channel_map()
        if layout.is_identity():
            name = layout.source
        elif layout.is_flatten() and len(layout.source_shape) == 3:
            name = arg.name
            self.pending.append(ir.Node("flatten", arg.name, [layout.source], name))
        elif channels is not None:
            name = arg.name
            self.pending.append(ir.Node("gather_channels", arg.name, [layout.source], name,
                                        {"index": [int(c) for c in channels]}))
        else:
            rank = layout.index.ndim + 1  # x.mean(1) of NCHW is (N, H, W): no op reads rank 3
            hint = "" if rank in (2, 4) else (f"; it has shape {self.shape(arg)}, and only (N, F) and NCHW tensors "
                                              "can be read (view or flatten it to one of those first)")
            raise _Unsupported(f"'{arg.name}' rearranges the elements of '{layout.source}' in a way that is not a "
                               f"reordering or selection of channels (nor a flatten){hint}")
        self.shapes[name] = self.shape(arg)
        self.materialized[arg] = name
        return name

    def first_input(self, node):
        x = node.args[0] if node.args else node.kwargs.get("input")
        if x is None:
            raise _Unsupported("no input tensor")
        return x

    def param(self, arg, role):
        """A float32 copy of a parameter/buffer argument (a get_attr node); None stays None."""
        if arg is None:
            return None
        if isinstance(arg, fx.Node) and arg.op == "get_attr":
            value = self.gm
            for part in arg.target.split("."):
                value = getattr(value, part)
            if isinstance(value, torch.Tensor):
                return _to_numpy(value)
        raise _Unsupported(f"{role} is computed in forward (only a parameter or buffer of the model is supported)")

    def const(self, value, role):
        """`value` if it holds no fx node (a value computed while the model runs cannot become an attribute)."""
        if isinstance(value, fx.Node) or (isinstance(value, (tuple, list))
                                          and any(isinstance(v, fx.Node) for v in value)):
            raise _Unsupported(f"{role} is computed in forward (only constants are supported)")
        return value

    def pair(self, value, role):
        value = self.const(value, role)
        if isinstance(value, int) and not isinstance(value, bool):
            return [value, value]
        if (isinstance(value, (tuple, list)) and len(value) == 2
                and all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
            return [int(v) for v in value]
        raise _Unsupported(f"{role}={value!r}")

    def axis(self, dim, rank, role):
        """`dim` normalised non-negative; it must not be the batch dim."""
        dim = self.const(dim, role)
        if not isinstance(dim, int) or not -rank <= dim < rank:
            raise _Unsupported(f"{role}={dim!r}")
        if dim % rank == 0:
            raise _Unsupported(f"{role}={dim} is the batch dim")
        return dim % rank

    def fresh_name(self, base):
        name, suffix = base, 1
        while name in self.taken_names:
            name, suffix = f"{base}_{suffix}", suffix + 1
        self.taken_names.add(name)
        return name

    def ir_node(self, op, node, inputs, attrs=None, params=None, output=None):
        name = node.target if node.op == "call_module" else node.name
        return ir.Node(op=op, name=name, inputs=inputs, output=output or node.name,
                       attrs=attrs or {}, params=params or {})

    # --- sizes (x.size(), x.shape, their items and arithmetic) ------------------------------------

    def _is_size(self, node):
        if node.op == "call_method" and node.target == "size":
            return True
        if node.op == "call_function" and node.target is getattr and node.args[1] == "shape":
            return True
        if self.is_tensor(node) or node.op not in ("call_function", "call_method"):
            return False
        return bool(node.all_input_nodes) and all(n in self.size_nodes for n in node.all_input_nodes)

    def is_batch_size(self, arg):
        """Whether `arg` is a tensor's dim 0 (x.size(0), x.size()[0], x.shape[0]): the batch size."""
        if arg not in self.size_nodes:
            return False
        if arg.op == "call_method":
            return _arg(arg, 1, "dim") == 0
        if arg.target is operator.getitem and arg.args[1] == 0:
            source = arg.args[0]
            return ((source.op == "call_method" and _arg(source, 1, "dim") is None)
                    or source.target is getattr)
        return False

    # --- nodes --------------------------------------------------------------------------------------

    def _map(self, node):
        if node.op == "call_module":
            module = self.modules[node.target]
            mapper = _MODULE_MAPPERS.get(type(module))
            if mapper is None:
                raise _Unsupported("")
            new = mapper(self, node, module)
        elif node.op == "call_function":
            if node.target is operator.getitem:
                if node.args[0] in self.unsupported_nodes:
                    return []  # picks an output of an op already reported
                return _getitem(self, node)
            mapper = (_FUNCTION_MAPPERS.get(node.target)
                      if isinstance(node.target, collections.abc.Hashable) else None)
            if mapper is None and _is_stochastic_depth(node.target):
                mapper = _stochastic_depth
            if mapper is None:
                raise _Unsupported("")
            new = mapper(self, node)
        else:
            mapper = _METHOD_MAPPERS.get(node.target)
            if mapper is None:
                raise _Unsupported("")
            new = mapper(self, node)
        if not new or new[-1].op not in _NOOP_OPS:
            self._check_in_place(node)
        return new

    def _check_in_place(self, node):
        # The IR is pure: an op that overwrites its input is only right if nothing reads that input later.
        if node.op == "call_module":
            in_place = getattr(self.modules[node.target], "inplace", False) is True
        elif node.op == "call_method":
            in_place = node.target.endswith("_") and not node.target.startswith("_")
        else:
            in_place = (node.target in _IN_PLACE_OPERATORS or node.kwargs.get("inplace") is True
                        or getattr(node.target, "__name__", "").endswith("_"))
        source = node.args[0] if in_place and node.args else None
        if not isinstance(source, fx.Node):
            return
        later = [u.name for u in source.users if self.order[u] > self.order[node]]
        if later:
            raise _Unsupported(f"it overwrites its input '{source.name}' in place and '{source.name}' is "
                               f"read again afterwards (by {', '.join(later)}); use the value it returns instead")

    def _outputs(self, node):
        """(value names, dict keys or None) of what forward returns: a tensor, a tuple/list of tensors, or a
        dict of tensors with string keys (torchvision's segmentation models return {"out": ...})."""
        result = node.args[0]
        keys = None
        if isinstance(result, dict):  # fx hands it over as an immutable_dict
            keys = list(result)
            bad = [k for k in keys if not (isinstance(k, str) and k)]
            if bad:
                raise ValueError(f"model: forward returns a dict whose keys must be non-empty strings, got {bad[0]!r}")
        values = list(result.values()) if keys is not None else (
            list(result) if isinstance(result, (tuple, list)) else [result])
        for i, value in enumerate(values):
            label = f"output {keys[i]!r}" if keys is not None else f"output {i}"
            if not self.is_tensor(value):
                what = type(value).__name__ if not isinstance(value, fx.Node) else value.meta.get("type")
                raise ValueError(f"model: forward must return a tensor, a tuple/list of tensors or a dict of "
                                 f"tensors; {label} is {getattr(what, '__name__', what)}")
            if value.op == "get_attr":
                raise ValueError(f"model: {label} is the constant '{value.target}', not computed from the input")
        return [self.tensor(value) if value in self.layouts else value.name for value in values], keys

    def _describe(self, node, reason):
        if node.op == "call_module":
            line = f"  - {type(self.modules[node.target]).__name__} at module '{node.target}'"
        else:
            what = _function_name(node.target) if node.op == "call_function" else f"Tensor.{node.target}"
            line = f"  - {what} at node '{node.name}'"
            stack = node.meta.get("nn_module_stack")
            if stack:
                line += f" in module '{list(stack.values())[-1][0]}'"
            frame = _user_frame(node.stack_trace)
            if frame:
                line += f" ({frame})"
        return line + (f": {reason}" if reason else "")


# --- mappers: (mapper, fx node[, module]) -> list of ir.Node; raise _Unsupported with the reason -----


def _unary(op):
    def mapper(ctx, node, module=None):
        x = ctx.first_input(node)
        if op in _NOOP_OPS and x in ctx.layouts:  # the same rearrangement: no op at all
            return _relayout(ctx, node, lambda layout: layout)
        return [ctx.ir_node(op, node, [ctx.pointwise_input(node, x)])]
    return mapper


def _conv2d(ctx, node, x, weight, bias, stride, padding, dilation, groups):
    if ctx.rank(x) != 4:
        raise _Unsupported(f"input of rank {ctx.rank(x)} (only NCHW inputs are supported)")
    stride, dilation = ctx.pair(stride, "stride"), ctx.pair(dilation, "dilation")
    padding = ctx.const(padding, "padding")
    if padding == "valid":
        pad = [0, 0, 0, 0]
    elif padding == "same":
        total = [d * (k - 1) for d, k in zip(dilation, weight.shape[2:])]
        # PyTorch puts the odd pixel of an uneven total at the bottom/right.
        pad = [total[0] // 2, total[1] // 2, total[0] - total[0] // 2, total[1] - total[1] // 2]
    else:
        ph, pw = ctx.pair(padding, "padding")
        pad = [ph, pw, ph, pw]
    extent = [d * (k - 1) + 1 for d, k in zip(dilation, weight.shape[2:])]
    if any(p >= extent[i % 2] for i, p in enumerate(pad)):
        # The .qnn format's limit (docs/format.md, "Limits"): such padding only adds outputs that see no input.
        raise _Unsupported(f"padding {pad[:2]} not smaller than the kernel's dilated extent {extent}")
    groups = ctx.const(groups, "groups")
    params = {"weight": weight} if bias is None else {"weight": weight, "bias": bias}
    return [ctx.ir_node("conv2d", node, [ctx.tensor(x)],
                        {"stride": stride, "padding": pad, "dilation": dilation, "groups": int(groups),
                         "act": "none"}, params)]


def _conv2d_module(ctx, node, conv):
    if conv.padding_mode != "zeros":
        raise _Unsupported(f"padding_mode={conv.padding_mode!r} (only zero padding is supported)")
    return _conv2d(ctx, node, ctx.first_input(node), _to_numpy(conv.weight),
                   None if conv.bias is None else _to_numpy(conv.bias),
                   conv.stride, conv.padding, conv.dilation, conv.groups)


def _conv2d_function(ctx, node):
    weight = ctx.param(_arg(node, 1, "weight"), "weight")
    if weight.ndim != 4:
        raise _Unsupported(f"weight of rank {weight.ndim}")
    return _conv2d(ctx, node, node.args[0], weight, ctx.param(_arg(node, 2, "bias"), "bias"),
                   _arg(node, 3, "stride", 1), _arg(node, 4, "padding", 0),
                   _arg(node, 5, "dilation", 1), _arg(node, 6, "groups", 1))


def _linear(ctx, node, x, weight, bias):
    params = {"weight": weight} if bias is None else {"weight": weight, "bias": bias}
    source = ctx.channels_last(x)
    if source is not None:  # over the channels of a channels-last view (ConvNeXt): a 1x1 conv of the real value
        params["weight"] = weight.reshape(*weight.shape, 1, 1)
        ctx.as_channels_last(node, weight.shape[0])
        return [ctx.ir_node("conv2d", node, [source], {"stride": [1, 1], "padding": [0, 0, 0, 0], "dilation": [1, 1],
                                                       "groups": 1, "act": "none"}, params)]
    if ctx.rank(x) != 2:
        raise _Unsupported(f"input of shape {ctx.shape(x)} (only (N, features) inputs, or an NCHW tensor permuted "
                           "to (N, H, W, C), are supported)")
    return [ctx.ir_node("linear", node, [ctx.tensor(x)], {"act": "none"}, params)]


def _linear_module(ctx, node, linear):
    return _linear(ctx, node, ctx.first_input(node), _to_numpy(linear.weight),
                   None if linear.bias is None else _to_numpy(linear.bias))


def _linear_function(ctx, node):
    return _linear(ctx, node, ctx.first_input(node), ctx.param(_arg(node, 1, "weight"), "weight"),
                   ctx.param(_arg(node, 2, "bias"), "bias"))


def _batchnorm_module(ctx, node, bn):
    """BatchNorm2d on NCHW, BatchNorm1d on (N, F): folded into the layer before it, else a per-channel affine."""
    x = ctx.first_input(node)
    if ctx.rank(x) != (2 if isinstance(bn, nn.BatchNorm1d) else 4):
        raise _Unsupported(f"input of rank {ctx.rank(x)} (only NCHW inputs for BatchNorm2d, (N, F) for BatchNorm1d, "
                           "are supported)")
    if bn.running_mean is None:
        raise _Unsupported("track_running_stats=False (it normalises with batch statistics in eval mode)")
    channels = bn.num_features
    params = {"mean": _to_numpy(bn.running_mean), "var": _to_numpy(bn.running_var),
              "weight": np.ones(channels, np.float32) if bn.weight is None else _to_numpy(bn.weight),
              "bias": np.zeros(channels, np.float32) if bn.bias is None else _to_numpy(bn.bias)}
    return [ctx.ir_node("batchnorm", node, [ctx.tensor(x)], {"eps": float(bn.eps)}, params)]


def _norm_params(ctx, channels, weight, bias, eps):
    """(params, eps) of a LayerNorm/GroupNorm: a missing weight is ones, a missing bias zeros (no affine)."""
    eps = _number(ctx, eps, "eps")
    if eps < 1e-30:
        raise _Unsupported(f"eps={eps!r} (at least 1e-30 is supported)")
    params = {"weight": np.ones(channels, np.float32) if weight is None else weight.reshape(-1),
              "bias": np.zeros(channels, np.float32) if bias is None else bias.reshape(-1)}
    return params, eps


def _layer_norm(ctx, node, normalized_shape, weight, bias, eps):
    """LayerNorm over the last dim: the features of (N, F), or the channels of a channels-last view."""
    x = ctx.first_input(node)
    shape = ctx.shape(x)
    normalized_shape = ctx.const(normalized_shape, "normalized_shape")
    normalized = tuple(normalized_shape) if isinstance(normalized_shape, (tuple, list)) else (normalized_shape,)
    if normalized != shape[-1:]:
        raise _Unsupported(f"normalized_shape={normalized_shape!r} of a {shape} tensor (only the last dim is supported)")
    params, eps = _norm_params(ctx, shape[-1], weight, bias, eps)
    source = ctx.channels_last(x)
    if source is not None:
        ctx.as_channels_last(node, shape[-1])
    elif len(shape) == 2:
        source = ctx.tensor(x)
    else:
        raise _Unsupported(f"LayerNorm over the last dim of a {shape} tensor (only over the features of (N, F), or "
                           "the channels of an NCHW tensor permuted to (N, H, W, C), are supported)")
    return [ctx.ir_node("layer_norm", node, [source], {"eps": eps}, params)]


def _layer_norm_module(ctx, node, module):
    # elementwise_affine=False (or bias=False) leaves weight/bias None: ones and zeros in _norm_params.
    weight = None if module.weight is None else _to_numpy(module.weight)
    bias = None if module.bias is None else _to_numpy(module.bias)
    return _layer_norm(ctx, node, module.normalized_shape, weight, bias, module.eps)


def _layer_norm_function(ctx, node):
    return _layer_norm(ctx, node, _arg(node, 1, "normalized_shape"), ctx.param(_arg(node, 2, "weight"), "weight"),
                       ctx.param(_arg(node, 3, "bias"), "bias"), _arg(node, 4, "eps", 1e-5))


def _group_norm(ctx, node, groups, weight, bias, eps):
    x = ctx.first_input(node)
    shape = ctx.shape(x)
    if len(shape) != 4:
        raise _Unsupported(f"input of shape {shape} (only NCHW inputs are supported)")
    groups = ctx.const(groups, "num_groups")
    params, eps = _norm_params(ctx, shape[1], weight, bias, eps)
    return [ctx.ir_node("group_norm", node, [ctx.tensor(x)], {"eps": eps, "groups": int(groups)}, params)]


def _group_norm_module(ctx, node, module):
    weight = None if module.weight is None else _to_numpy(module.weight)
    bias = None if module.bias is None else _to_numpy(module.bias)
    return _group_norm(ctx, node, module.num_groups, weight, bias, module.eps)


def _group_norm_function(ctx, node):
    return _group_norm(ctx, node, _arg(node, 1, "num_groups"), ctx.param(_arg(node, 2, "weight"), "weight"),
                       ctx.param(_arg(node, 3, "bias"), "bias"), _arg(node, 4, "eps", 1e-5))


def _clamp(ctx, node, min_val, max_val):
    """hardtanh / clamp / clip: None leaves that side open (torch.clamp's default)."""
    min_val, max_val = (None if v is None else _number(ctx, v, role)
                        for v, role in ((min_val, "min"), (max_val, "max")))
    x = ctx.pointwise_input(node, ctx.first_input(node))
    if (min_val, max_val) == (0.0, 6.0):
        return [ctx.ir_node("relu6", node, [x])]
    if (min_val, max_val) == (0.0, None):
        return [ctx.ir_node("relu", node, [x])]
    if (min_val, max_val) == (None, None):
        return [ctx.ir_node("identity", node, [x])]
    return [ctx.ir_node("hardtanh", node, [x], {"min_val": min_val, "max_val": max_val})]


def _clamp_function(ctx, node):
    return _clamp(ctx, node, _arg(node, 1, "min", None), _arg(node, 2, "max", None))


def _leaky_relu(ctx, node, slope):
    return [ctx.ir_node("leaky_relu", node, [ctx.pointwise_input(node, ctx.first_input(node))],
                        {"negative_slope": _number(ctx, slope, "negative_slope")})]


def _leaky_relu_module(ctx, node, module):
    return _leaky_relu(ctx, node, module.negative_slope)


def _leaky_relu_function(ctx, node):
    return _leaky_relu(ctx, node, _arg(node, 1, "negative_slope", 0.01))


def _prelu(ctx, node, weight):
    x = ctx.first_input(node)
    slopes = weight.reshape(-1)
    if slopes.size == 1:
        return _leaky_relu(ctx, node, float(slopes[0]))
    if ctx.rank(x) not in (2, 4) or ctx.shape(x)[1] != slopes.size:
        raise _Unsupported(f"{slopes.size} slopes for an input of shape {ctx.shape(x)} (one per channel, dim 1)")
    return [ctx.ir_node("prelu", node, [ctx.tensor(x)], params={"weight": slopes})]


def _prelu_module(ctx, node, module):
    return _prelu(ctx, node, _to_numpy(module.weight))


def _prelu_function(ctx, node):
    return _prelu(ctx, node, ctx.param(_arg(node, 1, "weight"), "weight"))


def _hardtanh_module(ctx, node, module):
    return _clamp(ctx, node, module.min_val, module.max_val)


def _hardtanh_function(ctx, node):
    return _clamp(ctx, node, _arg(node, 1, "min_val", -1.0), _arg(node, 2, "max_val", 1.0))


def _gelu(ctx, node, approximate):
    approximate = ctx.const(approximate, "approximate")
    if approximate not in ("none", "tanh"):
        raise _Unsupported(f"approximate={approximate!r}")
    return [ctx.ir_node("gelu", node, [ctx.pointwise_input(node, ctx.first_input(node))],
                        {"approximate": approximate})]


def _gelu_module(ctx, node, module):
    return _gelu(ctx, node, module.approximate)


def _gelu_function(ctx, node):
    return _gelu(ctx, node, _arg(node, 1, "approximate", "none"))


def _pool_input(ctx, node):
    x = ctx.first_input(node)
    if ctx.rank(x) != 4:
        raise _Unsupported(f"input of rank {ctx.rank(x)} (only NCHW inputs are supported)")
    return ctx.tensor(x)


def _pool_stride(ctx, stride, kernel):
    """The pools' stride as a pair; torch's default (None or empty) is the kernel size."""
    stride = ctx.const(stride, "stride")
    return ctx.pair(stride, "stride") if stride not in (None, (), []) else kernel


def _max_pool2d(ctx, node, kernel, stride, padding, dilation, ceil_mode, return_indices):
    if ctx.const(return_indices, "return_indices"):
        raise _Unsupported("return_indices=True")
    kernel = ctx.pair(kernel, "kernel_size")
    attrs = {"kernel": kernel, "stride": _pool_stride(ctx, stride, kernel),
             "padding": ctx.pair(padding, "padding"), "dilation": ctx.pair(dilation, "dilation"),
             "ceil_mode": bool(ctx.const(ceil_mode, "ceil_mode"))}
    return [ctx.ir_node("max_pool2d", node, [_pool_input(ctx, node)], attrs)]


def _max_pool2d_module(ctx, node, pool):
    return _max_pool2d(ctx, node, pool.kernel_size, pool.stride, pool.padding, pool.dilation,
                       pool.ceil_mode, pool.return_indices)


def _max_pool2d_function(ctx, node):
    return _max_pool2d(ctx, node, _arg(node, 1, "kernel_size"), _arg(node, 2, "stride"),
                       _arg(node, 3, "padding", 0), _arg(node, 4, "dilation", 1),
                       _arg(node, 5, "ceil_mode", False), _arg(node, 6, "return_indices", False))


def _avg_pool2d(ctx, node, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override):
    kernel = ctx.pair(kernel, "kernel_size")
    divisor_override = ctx.const(divisor_override, "divisor_override")
    attrs = {"kernel": kernel, "stride": _pool_stride(ctx, stride, kernel),
             "padding": ctx.pair(padding, "padding"), "ceil_mode": bool(ctx.const(ceil_mode, "ceil_mode")),
             "count_include_pad": bool(ctx.const(count_include_pad, "count_include_pad")),
             "divisor_override": int(divisor_override or 0)}
    return [ctx.ir_node("avg_pool2d", node, [_pool_input(ctx, node)], attrs)]


def _avg_pool2d_module(ctx, node, pool):
    return _avg_pool2d(ctx, node, pool.kernel_size, pool.stride, pool.padding, pool.ceil_mode,
                       pool.count_include_pad, pool.divisor_override)


def _avg_pool2d_function(ctx, node):
    return _avg_pool2d(ctx, node, _arg(node, 1, "kernel_size"), _arg(node, 2, "stride"),
                       _arg(node, 3, "padding", 0), _arg(node, 4, "ceil_mode", False),
                       _arg(node, 5, "count_include_pad", True), _arg(node, 6, "divisor_override"))


def _adaptive_avg_pool2d(ctx, node, output_size):
    output_size = ctx.const(output_size, "output_size")
    if isinstance(output_size, (tuple, list)) and None in output_size:
        raise _Unsupported(f"output_size={tuple(output_size)!r} (None entries are not supported)")
    size = ctx.pair(output_size, "output_size")
    if min(size) < 1:
        raise _Unsupported(f"output_size={output_size!r}")
    return [ctx.ir_node("adaptive_avg_pool2d", node, [_pool_input(ctx, node)], {"output_size": size})]


def _adaptive_avg_pool2d_module(ctx, node, pool):
    return _adaptive_avg_pool2d(ctx, node, pool.output_size)


def _adaptive_avg_pool2d_function(ctx, node):
    return _adaptive_avg_pool2d(ctx, node, _arg(node, 1, "output_size"))


_RESIZE_MODES = ("nearest", "bilinear")


def _shape_of(ctx, node):
    """The tensor whose shape `node` is (x.shape, x.size()), or None."""
    if node not in ctx.size_nodes:
        return None
    if node.op == "call_method" and node.target == "size" and _arg(node, 1, "dim") is None:
        return node.args[0]
    if node.op == "call_function" and node.target is getattr and node.args[1] == "shape":
        return node.args[0]
    return None


def _dim_of(ctx, node):
    """(tensor, dim) for a size item that is one dimension of a tensor (x.size(2), x.shape[-1]), or None."""
    if not isinstance(node, fx.Node) or node not in ctx.size_nodes:
        return None
    if node.op == "call_method" and node.target == "size" and isinstance(_arg(node, 1, "dim"), int):
        return node.args[0], _arg(node, 1, "dim")
    if node.op == "call_function" and node.target is operator.getitem and isinstance(node.args[1], int):
        source = _shape_of(ctx, node.args[0])
        return None if source is None else (source, node.args[1])
    return None


def _hw_source(ctx, size):
    """The tensor whose height and width `size` is (x.shape[-2:], x.size()[2:], (x.size(2), x.shape[3])),
    or None: the resize then follows that tensor's size at run time."""
    if isinstance(size, fx.Node) and size.op == "call_function" and size.target is operator.getitem:
        source, key = size.args
        tensor = _shape_of(ctx, source) if isinstance(source, fx.Node) else None
        if tensor is not None and isinstance(key, slice) and ctx.rank(tensor) == 4 and list(range(4)[key]) == [2, 3]:
            return tensor
    if isinstance(size, (tuple, list)) and len(size) == 2:
        h, w = _dim_of(ctx, size[0]), _dim_of(ctx, size[1])
        if h and w and h[0] is w[0] and ctx.rank(h[0]) == 4 and (h[1] % 4, w[1] % 4) == (2, 3):
            return h[0]
    return None


def _resize(ctx, node, size, scale_factor, mode, align_corners, recompute_scale_factor=None, antialias=False):
    """F.interpolate / nn.Upsample: to a constant size, by constant scale factors, or to another tensor's H, W."""
    x = ctx.first_input(node)
    if ctx.rank(x) != 4:
        raise _Unsupported(f"input of rank {ctx.rank(x)} (only NCHW inputs are supported)")
    mode = ctx.const(mode, "mode")
    if mode not in _RESIZE_MODES:
        raise _Unsupported(f"mode={mode!r} (only 'nearest' and 'bilinear' are supported)")
    if ctx.const(antialias, "antialias"):
        raise _Unsupported("antialias=True")
    if ctx.const(recompute_scale_factor, "recompute_scale_factor"):
        raise _Unsupported("recompute_scale_factor=True (leave it unset: the scale factor then sets the sampling)")
    attrs = {"mode": mode, "align_corners": bool(ctx.const(align_corners, "align_corners")), "size": None,
             "scale": None}
    inputs = [ctx.tensor(x)]
    reference = _hw_source(ctx, size) if size is not None else None
    if reference is not None:
        inputs.append(ctx.tensor(reference, "the tensor whose size the output takes"))
    elif size is not None:
        attrs["size"] = ctx.pair(size, "size")
        if min(attrs["size"]) < 1:
            raise _Unsupported(f"size={size!r}")
    else:
        scale = ctx.const(scale_factor, "scale_factor")
        scale = list(scale) if isinstance(scale, (tuple, list)) else [scale, scale]
        if len(scale) != 2 or not all(_is_number(f) and math.isfinite(f) and f > 0 for f in scale):
            raise _Unsupported(f"scale_factor={scale_factor!r}")
        attrs["scale"] = [float(f) for f in scale]
    return [ctx.ir_node("resize", node, inputs, attrs)]


def _interpolate_function(ctx, node):
    return _resize(ctx, node, _arg(node, 1, "size"), _arg(node, 2, "scale_factor"), _arg(node, 3, "mode", "nearest"),
                   _arg(node, 4, "align_corners"), _arg(node, 5, "recompute_scale_factor"),
                   _arg(node, 6, "antialias", False))


def _upsample_module(ctx, node, module):
    return _resize(ctx, node, module.size, module.scale_factor, module.mode, module.align_corners,
                   module.recompute_scale_factor)


def _pad(ctx, node, pad, mode, value):
    """F.pad / nn.ConstantPad2d / nn.ZeroPad2d with a constant, on the last two dims (W, or W and H)."""
    x = ctx.first_input(node)
    if ctx.rank(x) != 4:
        raise _Unsupported(f"input of rank {ctx.rank(x)} (only NCHW inputs are supported)")
    mode = ctx.const(mode, "mode")
    if mode != "constant":
        raise _Unsupported(f"mode={mode!r} (only 'constant' is supported)")
    pad = ctx.const(pad, "pad")
    if not (isinstance(pad, (tuple, list)) and len(pad) in (2, 4)
            and all(isinstance(p, int) and not isinstance(p, bool) for p in pad)):
        raise _Unsupported(f"pad={pad!r} (only (left, right) or (left, right, top, bottom): the last two dims)")
    if min(pad) < 0:
        raise _Unsupported(f"pad={tuple(pad)} has a negative size, a crop (only padding is supported)")
    left, right, top, bottom = list(pad) + [0] * (4 - len(pad))
    value = 0.0 if value is None else _number(ctx, value, "value")
    return [ctx.ir_node("pad", node, [ctx.tensor(x)], {"padding": [top, left, bottom, right], "value": value})]


def _pad_function(ctx, node):
    return _pad(ctx, node, _arg(node, 1, "pad"), _arg(node, 2, "mode", "constant"), _arg(node, 3, "value"))


def _pad_module(ctx, node, module):
    return _pad(ctx, node, module.padding, "constant", module.value)


def _reduce(mode):
    """x.mean(dims) / x.sum(dims) and torch.mean / torch.sum, over any dims but the batch, keepdim or not."""
    def mapper(ctx, node):
        x = ctx.first_input(node)
        dim = ctx.const(_arg(node, 1, "dim"), "dim")
        keepdim = bool(ctx.const(_arg(node, 2, "keepdim", False), "keepdim"))
        dtype = ctx.const(node.kwargs.get("dtype"), "dtype")
        if dtype is not None:
            raise _Unsupported(f"dtype={dtype}")
        shape = ctx.shape(x)
        if dim is None or dim == () or dim == []:  # torch: every dim, the batch too
            raise _Unsupported(f"{mode} over every dim of a {shape} tensor, the batch too (only dims after the batch "
                               "are supported)")
        dims = sorted({ctx.axis(d, len(shape), "dim") for d in ([dim] if isinstance(dim, int) else dim)})
        layout = ctx.layouts.get(x)
        real = layout is None or ctx._materializes(layout)
        if real:
            if len(shape) not in (2, 4):
                raise _Unsupported(f"{mode} of a rank-{len(shape)} tensor (only (N, F) and NCHW tensors)")
            layout = Layout.of(ctx.tensor(x), shape)
        try:
            summed, result = layout.reduce(dims, node.name)
        except LayoutError as e:
            raise _Unsupported(str(e)) from None
        if real:
            summed = dims  # the model's own dims: the same sum at any H and W, whatever size they had here
        elif not summed:  # every output is one element (the dims have size 1 here): a view, no op
            ctx.layouts[node] = replace(result, source=layout.source).reshape(ctx.shape(node))
            return []
        value_shape = shape[:1] + result.source_shape  # the keepdim result, as the op makes it
        result = result.reshape(ctx.shape(node))
        attrs = {"mode": mode, "dims": summed, "keepdim": True}
        if result.is_identity():
            return [ctx.ir_node("reduce", node, [layout.source], attrs)]
        if result.is_flatten():  # (N, K) in NCHW order: the op drops two dims itself, else a flatten after it
            if len(summed) == 2 and len(value_shape) == 4:
                return [ctx.ir_node("reduce", node, [layout.source], dict(attrs, keepdim=False))]
            kept = ctx.fresh_name(f"{node.name}__keepdim")
            ctx.shapes[kept] = value_shape
            return [ctx.ir_node("reduce", node, [layout.source], attrs, output=kept),
                    ctx.ir_node("flatten", node, [kept])]
        # A rank the engine does not hold ((N, H, W), (N,)), or the order of a rearranged input: the op's keepdim
        # result, read through a layout by the ops after it (a view back to rank 2 or 4).
        ctx.shapes[node.name] = value_shape
        ctx.layouts[node] = result
        return [ctx.ir_node("reduce", node, [layout.source], attrs)]
    return mapper


def _full_flatten(ctx, node, x, description):
    """flatten for a rank-4 value, identity for a rank-2 one (already flat)."""
    rank = ctx.rank(x)
    if x in ctx.layouts:  # a flatten of a rearranged value: one more view of its elements
        return _relayout(ctx, node, lambda layout: layout.reshape(ctx.shape(node)), x)
    if rank == 4:
        return [ctx.ir_node("flatten", node, [ctx.tensor(x)])]
    if rank == 2:
        return [ctx.ir_node("identity", node, [ctx.tensor(x)])]
    raise _Unsupported(f"{description} of a rank-{rank} tensor (only rank-4 NCHW tensors can be flattened)")


def _flatten(ctx, node, start_dim, end_dim):
    x = ctx.first_input(node)
    start_dim, end_dim = ctx.const(start_dim, "start_dim"), ctx.const(end_dim, "end_dim")
    rank = ctx.rank(x)
    if not (rank >= 2 and isinstance(start_dim, int) and isinstance(end_dim, int)
            and -rank <= start_dim < rank and -rank <= end_dim < rank
            and start_dim % rank == 1 and end_dim % rank == rank - 1):
        raise _Unsupported(f"flatten(start_dim={start_dim}, end_dim={end_dim}) of a rank-{rank} tensor "
                           "(only a flatten from dim 1 to the last dim is supported)")
    return _full_flatten(ctx, node, x, "flatten")


def _flatten_module(ctx, node, module):
    return _flatten(ctx, node, module.start_dim, module.end_dim)


def _flatten_function(ctx, node):
    return _flatten(ctx, node, _arg(node, 1, "start_dim", 0), _arg(node, 2, "end_dim", -1))


def _reshape(ctx, node):
    x = ctx.first_input(node)
    if node.op == "call_function":  # torch.reshape(x, shape)
        shape = _arg(node, 1, "shape")
    else:  # x.view(a, b) / x.view((a, b)) / x.reshape(...)
        shape = node.args[1:] or node.kwargs.get("shape", node.kwargs.get("size"))
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = shape[0]
    shape = list(shape) if isinstance(shape, (tuple, list)) else [shape]
    features = math.prod(ctx.shape(x)[1:])

    def is_int(value, expected):
        return isinstance(value, int) and not isinstance(value, bool) and value == expected

    batch_then_rest = (len(shape) == 2 and ctx.is_batch_size(shape[0])
                       and (is_int(shape[1], -1) or is_int(shape[1], features)))
    any_then_features = len(shape) == 2 and is_int(shape[0], -1) and is_int(shape[1], features)
    description = f"{node.target}({', '.join(str(d) for d in shape)})"
    if (batch_then_rest or any_then_features) and x not in ctx.layouts:
        return _full_flatten(ctx, node, x, description)
    # Any other view keeps the batch first (x.size(0), or -1 with the rest per image) and becomes a layout.
    if not (shape and (ctx.is_batch_size(shape[0]) or is_int(shape[0], -1))) or any(
            is_int(d, -1) for d in shape[1:]) and is_int(shape[0], -1):
        raise _Unsupported(f"{description} of a {ctx.shape(x)} tensor: the batch must stay dim 0 "
                           "(x.size(0) or -1 first)")
    return _relayout(ctx, node, lambda layout: layout.reshape(ctx.shape(node)))


def _relayout(ctx, node, change, source=None):
    """Records node's output as a rearrangement of a real value (layout.py): no IR node yet."""
    try:
        ctx.layouts[node] = change(ctx.layout(source if source is not None else ctx.first_input(node)))
    except LayoutError as e:
        raise _Unsupported(str(e)) from None
    return []


def _transpose(ctx, node):
    x = ctx.first_input(node)
    rank = ctx.rank(x)
    d0, d1 = (ctx.const(_arg(node, i, name), name) for i, name in ((1, "dim0"), (2, "dim1")))
    if not all(isinstance(d, int) and -rank <= d < rank for d in (d0, d1)):
        raise _Unsupported(f"transpose({d0}, {d1}) of a rank-{rank} tensor")
    dims = list(range(rank))
    dims[d0 % rank], dims[d1 % rank] = dims[d1 % rank], dims[d0 % rank]
    return _relayout(ctx, node, lambda layout: layout.permute(dims))


def _permute(ctx, node):
    x = ctx.first_input(node)
    rank = ctx.rank(x)
    dims = node.args[1:] if node.op == "call_method" else [_arg(node, 1, "dims")]
    if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
        dims = dims[0]
    dims = [ctx.const(d, "dims") for d in dims]
    if sorted(d % rank if isinstance(d, int) else d for d in dims) != list(range(rank)):
        raise _Unsupported(f"permute{tuple(dims)} of a rank-{rank} tensor")
    return _relayout(ctx, node, lambda layout: layout.permute([d % rank for d in dims]))


def _contiguous(ctx, node):
    x = ctx.first_input(node)
    if x in ctx.layouts:
        return _relayout(ctx, node, lambda layout: layout)
    return [ctx.ir_node("identity", node, [ctx.tensor(x)])]


def _pieces(ctx, node, dim, bounds):
    """node's output is a tuple of the [start, stop) pieces of its input along dim (chunk, split)."""
    x = ctx.first_input(node)
    rank = ctx.rank(x)
    dim = ctx.axis(dim, rank, "dim")
    try:
        layout = ctx.layout(x)
        ctx.layout_lists[node] = [layout.take(dim, np.arange(a, b)) for a, b in bounds]
    except LayoutError as e:
        raise _Unsupported(str(e)) from None
    return []


def _chunk(ctx, node):
    x = ctx.first_input(node)
    chunks = ctx.const(_arg(node, 1, "chunks"), "chunks")
    dim = _arg(node, 2, "dim", 0)
    size = ctx.shape(x)[ctx.axis(dim, ctx.rank(x), "dim")]
    step = -(-size // chunks)  # torch.chunk: pieces of ceil(size / chunks), the last one shorter
    return _pieces(ctx, node, dim, [(a, min(a + step, size)) for a in range(0, size, step)])


def _split(ctx, node):
    x = ctx.first_input(node)
    sizes = ctx.const(_arg(node, 1, "split_size_or_sections", node.kwargs.get("split_size")), "split_size")
    dim = _arg(node, 2, "dim", 0)
    size = ctx.shape(x)[ctx.axis(dim, ctx.rank(x), "dim")]
    if isinstance(sizes, int):
        sizes = [min(sizes, size - a) for a in range(0, size, sizes)]
    starts = np.cumsum([0] + list(sizes))
    return _pieces(ctx, node, dim, list(zip(starts[:-1], starts[1:])))


def _getitem(ctx, node):
    """A piece of a chunk/split, or x[...] with plain slices (the batch dim untouched)."""
    source, key = node.args
    if source in ctx.layout_lists:
        ctx.layouts[node] = ctx.layout_lists[source][ctx.const(key, "index")]
        return []
    if not ctx.is_tensor(source):
        raise _Unsupported("indexing of a value that is not a tensor")
    key = key if isinstance(key, tuple) else (key,)
    shape = ctx.shape(source)
    if Ellipsis in key or len(key) > len(shape) or not all(isinstance(k, slice) for k in key):
        raise _Unsupported(f"indexing with {key!r} (only slices, as in x[:, a:b], are supported)")
    if key[0] != slice(None):
        raise _Unsupported("slicing the batch dim")

    def take(layout):
        for dim, k in enumerate(key[1:], start=1):
            if k != slice(None):
                layout = layout.take(dim, np.arange(shape[dim])[ctx.const(k, "slice")])
        return layout
    return _relayout(ctx, node, take, source)


def _number(ctx, value, role):
    """A Python int or float constant (not a bool, not a tensor) as a float."""
    value = ctx.const(value, role)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _Unsupported(f"{role} is {value!r} (only a finite number is supported)")
    return float(value)


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _scale_shift(ctx, node, x, scale, shift):
    """y = x * scale + shift with constant numbers: a lookup table once quantized."""
    return [ctx.ir_node("scale_shift", node, [ctx.pointwise_input(node, x)], {"scale": scale, "shift": shift})]


def _operands(node, name="other"):
    return node.args[0] if node.args else node.kwargs.get("input"), _arg(node, 1, name)


def _is_parameter(arg):
    return isinstance(arg, fx.Node) and arg.op == "get_attr"


def _by_parameter(ctx, node, x, value, scale, shift):
    """y = x * scale + shift where the parameter `value` is one of them (the other a number): one number is a
    table; one value per channel (of NCHW, of (N, F), or of a channels-last view) a per-channel affine op."""
    shape, out_shape = ctx.shape(x), ctx.shape(node)
    if out_shape != shape:
        raise _Unsupported(f"a parameter of shape {tuple(value.shape)} broadcast against {shape} changes its shape")
    if value.size == 1:
        number = float(value.reshape(()))
        return _scale_shift(ctx, node, x, number if scale is None else scale, number if shift is None else shift)
    channels = value.reshape(-1)
    source = ctx.channels_last(x)
    if source is not None and value.shape[-1:] == shape[-1:] and value.size == shape[-1]:
        ctx.as_channels_last(node, shape[-1])
    elif (len(shape) in (2, 4) and value.size == shape[1]
          and value.shape[1 - len(shape):] == (shape[1],) + (1,) * (len(shape) - 2)):  # (C, 1, 1) or (F,)
        source = ctx.tensor(x)
    else:
        raise _Unsupported(f"a parameter of shape {tuple(value.shape)} with an input of shape {shape} (only one number, "
                           "or one value per channel, are supported)")
    ones, zeros = np.ones_like(channels), np.zeros_like(channels)
    params = {"scale": channels if scale is None else ones * np.float32(scale),
              "shift": channels if shift is None else zeros + np.float32(shift)}
    return [ctx.ir_node("affine", node, [source], params=params)]


def _add(ctx, node):
    a, b = _operands(node)
    alpha = ctx.const(node.kwargs.get("alpha", 1), "alpha")
    if (_is_parameter(a) or _is_parameter(b)) and alpha == 1:  # x + p
        x, p = (b, a) if _is_parameter(a) else (a, b)
        return _by_parameter(ctx, node, x, ctx.param(p, "the added tensor"), 1.0, None)
    if _is_number(a) or _is_number(b):  # x + alpha * c, or c + alpha * x
        alpha = _number(ctx, alpha, "alpha")
        if _is_number(b):
            return _scale_shift(ctx, node, a, 1.0, alpha * _number(ctx, b, "the added constant"))
        return _scale_shift(ctx, node, b, alpha, _number(ctx, a, "the added constant"))
    names = [ctx.tensor(a, "operand"), ctx.tensor(b, "operand")]
    if alpha != 1:
        raise _Unsupported(f"alpha={alpha}")
    if ctx.shape(a) != ctx.shape(b):
        raise _Unsupported(f"broadcasting add of shapes {ctx.shape(a)} and {ctx.shape(b)} "
                           "(only operands of the same shape are supported)")
    return [ctx.ir_node("add", node, names, {"act": "none"})]


def _sub(ctx, node):
    a, b = _operands(node)
    alpha = _number(ctx, node.kwargs.get("alpha", 1), "alpha")
    if _is_number(b):  # x - c
        return _scale_shift(ctx, node, a, 1.0, -alpha * _number(ctx, b, "the subtracted constant"))
    if _is_number(a):  # c - x
        return _scale_shift(ctx, node, b, -alpha, _number(ctx, a, "the constant"))
    if _is_parameter(b) and alpha == 1:  # x - p
        return _by_parameter(ctx, node, a, -ctx.param(b, "the subtracted tensor"), 1.0, None)
    if _is_parameter(a) and alpha == 1:  # p - x
        return _by_parameter(ctx, node, b, ctx.param(a, "the tensor"), -1.0, None)
    names = [ctx.tensor(a, "operand"), ctx.tensor(b, "operand")]
    if alpha != 1:
        raise _Unsupported(f"alpha={alpha}")
    if ctx.shape(a) != ctx.shape(b):
        raise _Unsupported(f"broadcasting sub of shapes {ctx.shape(a)} and {ctx.shape(b)} "
                           "(only operands of the same shape are supported)")
    return [ctx.ir_node("sub", node, names, {"act": "none"})]


def _mul(ctx, node):
    a, b = _operands(node)
    if _is_number(a) or _is_number(b):  # x * c, c * x
        x, c = (b, a) if _is_number(a) else (a, b)
        return _scale_shift(ctx, node, x, _number(ctx, c, "the factor"), 0.0)
    if _is_parameter(a) or _is_parameter(b):  # x * p: ConvNeXt's layer scale
        x, p = (b, a) if _is_parameter(a) else (a, b)
        return _by_parameter(ctx, node, x, ctx.param(p, "the factor"), None, 0.0)
    names = [ctx.tensor(a, "operand"), ctx.tensor(b, "operand")]
    sa, sb = ctx.shape(a), ctx.shape(b)
    small, big = sorted((sa, sb), key=math.prod)
    per_image_channel = len(big) == 4 and small == (big[0], big[1], 1, 1)
    if sa != sb and not per_image_channel:
        raise _Unsupported(f"broadcasting mul of shapes {sa} and {sb} (only operands of the same shape, or "
                           "(N, C, H, W) by (N, C, 1, 1) as in squeeze-excitation, are supported)")
    return [ctx.ir_node("mul", node, names)]


def _div(ctx, node):
    a, b = _operands(node)
    mode = ctx.const(node.kwargs.get("rounding_mode"), "rounding_mode")
    if mode is not None:
        raise _Unsupported(f"rounding_mode={mode!r}")
    if not _is_number(b):
        raise _Unsupported("division by a tensor (only division by a constant number is supported)")
    c = _number(ctx, b, "the divisor")
    if c == 0.0:
        raise _Unsupported("division by zero")
    return _scale_shift(ctx, node, a, 1.0 / c, 0.0)


def _stochastic_depth(ctx, node):
    """torchvision.ops.stochastic_depth(input, p, mode, training): the identity in eval mode."""
    if ctx.const(_arg(node, 3, "training", True), "training"):
        raise _Unsupported("training=True: stochastic depth drops rows at random (pass training=self.training)")
    return [ctx.ir_node("identity", node, [ctx.tensor(ctx.first_input(node))])]


def _cat(ctx, node):
    tensors = _arg(node, 0, "tensors")
    if not isinstance(tensors, (tuple, list)) or not tensors:
        raise _Unsupported("tensors is not a list of tensors")
    names = [ctx.tensor(t) for t in tensors]
    ranks = {ctx.rank(t) for t in tensors}
    if len(ranks) != 1:
        raise _Unsupported(f"inputs of different ranks {sorted(ranks)}")
    dim = _arg(node, 1, "dim", node.kwargs.get("axis", 0))
    return [ctx.ir_node("cat", node, names, {"axis": ctx.axis(dim, ranks.pop(), "dim")})]


def _dropout_function(default_training):
    def mapper(ctx, node):
        if ctx.const(_arg(node, 2, "training", default_training), "training"):
            raise _Unsupported("training=True: this dropout is active in eval mode too "
                               "(pass training=self.training)")
        return [ctx.ir_node("dropout", node, [ctx.tensor(ctx.first_input(node))])]
    return mapper


def _softmax(op):
    def node_for(ctx, node, dim, dtype):
        if ctx.const(dtype, "dtype") is not None:
            raise _Unsupported(f"dtype={dtype}")
        x = ctx.first_input(node)
        rank = ctx.rank(x)
        if dim is None:  # PyTorch's legacy implicit dim (torch.nn.functional._get_softmax_dim)
            dim = 0 if rank in (0, 1, 3) else 1
        return [ctx.ir_node(op, node, [ctx.tensor(x)], {"dim": ctx.axis(dim, rank, "dim")})]

    def module_mapper(ctx, node, module):
        return node_for(ctx, node, module.dim, None)

    def function_mapper(ctx, node):
        return node_for(ctx, node, _arg(node, 1, "dim"), _arg(node, 2, "dtype"))
    return module_mapper, function_mapper


_softmax_module, _softmax_function = _softmax("softmax")
_log_softmax_module, _log_softmax_function = _softmax("log_softmax")

_MODULE_MAPPERS = {
    nn.Conv2d: _conv2d_module,
    nn.Linear: _linear_module,
    nn.BatchNorm2d: _batchnorm_module,
    nn.BatchNorm1d: _batchnorm_module,
    nn.LayerNorm: _layer_norm_module,
    nn.GroupNorm: _group_norm_module,
    nn.ReLU: _unary("relu"),
    nn.ReLU6: _unary("relu6"),
    nn.Hardtanh: _hardtanh_module,
    nn.Hardswish: _unary("hardswish"),
    nn.LeakyReLU: _leaky_relu_module,
    nn.PReLU: _prelu_module,
    nn.Hardsigmoid: _unary("hardsigmoid"),
    nn.Sigmoid: _unary("sigmoid"),
    nn.Tanh: _unary("tanh"),
    nn.SiLU: _unary("silu"),
    nn.GELU: _gelu_module,
    nn.MaxPool2d: _max_pool2d_module,
    nn.AvgPool2d: _avg_pool2d_module,
    nn.AdaptiveAvgPool2d: _adaptive_avg_pool2d_module,
    nn.Flatten: _flatten_module,
    nn.ZeroPad2d: _pad_module,
    nn.ConstantPad2d: _pad_module,
    nn.Upsample: _upsample_module,
    nn.UpsamplingNearest2d: _upsample_module,
    nn.UpsamplingBilinear2d: _upsample_module,
    nn.Dropout: _unary("dropout"),
    nn.Dropout1d: _unary("dropout"),
    nn.Dropout2d: _unary("dropout"),
    nn.Dropout3d: _unary("dropout"),
    nn.AlphaDropout: _unary("dropout"),
    nn.FeatureAlphaDropout: _unary("dropout"),
    nn.Identity: _unary("identity"),
    nn.Softmax: _softmax_module,
    nn.LogSoftmax: _log_softmax_module,
}

_FUNCTION_MAPPERS = {
    F.conv2d: _conv2d_function,
    F.linear: _linear_function,
    F.layer_norm: _layer_norm_function,
    F.group_norm: _group_norm_function,
    F.relu: _unary("relu"),
    torch.relu: _unary("relu"),
    torch.relu_: _unary("relu"),
    F.relu6: _unary("relu6"),
    F.hardtanh: _hardtanh_function,
    F.hardtanh_: _hardtanh_function,
    F.hardswish: _unary("hardswish"),
    F.leaky_relu: _leaky_relu_function,
    F.leaky_relu_: _leaky_relu_function,
    F.prelu: _prelu_function,
    torch.prelu: _prelu_function,
    F.hardsigmoid: _unary("hardsigmoid"),
    torch.sigmoid: _unary("sigmoid"),
    torch.tanh: _unary("tanh"),
    F.silu: _unary("silu"),
    F.gelu: _gelu_function,
    F.max_pool2d: _max_pool2d_function,
    F.avg_pool2d: _avg_pool2d_function,
    F.adaptive_avg_pool2d: _adaptive_avg_pool2d_function,
    F.interpolate: _interpolate_function,
    F.pad: _pad_function,
    torch.mean: _reduce("mean"),
    torch.sum: _reduce("sum"),
    torch.flatten: _flatten_function,
    torch.reshape: _reshape,
    operator.add: _add,
    operator.iadd: _add,
    torch.add: _add,
    operator.sub: _sub,
    operator.isub: _sub,
    torch.sub: _sub,
    torch.subtract: _sub,
    operator.mul: _mul,
    operator.imul: _mul,
    torch.mul: _mul,
    torch.multiply: _mul,
    operator.truediv: _div,
    operator.itruediv: _div,
    torch.div: _div,
    torch.divide: _div,
    torch.true_divide: _div,
    torch.clamp: _clamp_function,
    torch.clip: _clamp_function,
    torch.transpose: _transpose,
    torch.swapaxes: _transpose,
    torch.permute: _permute,
    torch.chunk: _chunk,
    torch.split: _split,
    torch.cat: _cat,
    torch.concat: _cat,
    torch.concatenate: _cat,
    F.dropout: _dropout_function(True),
    F.dropout1d: _dropout_function(True),
    F.dropout2d: _dropout_function(True),
    F.dropout3d: _dropout_function(True),
    F.alpha_dropout: _dropout_function(False),
    F.feature_alpha_dropout: _dropout_function(False),
    F.softmax: _softmax_function,
    torch.softmax: _softmax_function,
    F.log_softmax: _log_softmax_function,
    torch.log_softmax: _log_softmax_function,
}

_METHOD_MAPPERS = {
    "relu": _unary("relu"),
    "relu_": _unary("relu"),
    "sigmoid": _unary("sigmoid"),
    "sigmoid_": _unary("sigmoid"),
    "tanh": _unary("tanh"),
    "tanh_": _unary("tanh"),
    "mean": _reduce("mean"),
    "sum": _reduce("sum"),
    "flatten": _flatten_function,
    "view": _reshape,
    "reshape": _reshape,
    "add": _add,
    "add_": _add,
    "sub": _sub,
    "sub_": _sub,
    "mul": _mul,
    "mul_": _mul,
    "div": _div,
    "div_": _div,
    "clamp": _clamp_function,
    "clamp_": _clamp_function,
    "clip": _clamp_function,
    "clip_": _clamp_function,
    "transpose": _transpose,
    "swapaxes": _transpose,
    "permute": _permute,
    "chunk": _chunk,
    "split": _split,
    "softmax": _softmax_function,
    "log_softmax": _log_softmax_function,
    "contiguous": _contiguous,
}
