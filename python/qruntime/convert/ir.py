"""The float IR between tracing and quantization: a flat, topologically ordered list of nodes.

Every value is named after the torch.fx node whose output it equals numerically (in eval mode), so
the calibration run of the traced module can observe it by that name. Passes keep that invariant:
when a pass merges nodes (conv + BatchNorm, conv + ReLU), the merged node's output takes the name
of the last node it absorbed.

Ops and their fields (attrs are plain Python values, params float32 numpy arrays):
  conv2d        params weight (oc, ic/groups, kh, kw), bias (oc) optional;
                attrs stride [2], padding [4] (top, left, bottom, right), dilation [2], groups, act
  linear        params weight (oc, k), bias optional; attrs act
  act is "none" | "relu" | "relu6" (set by the fuse pass)
  batchnorm     params mean, var, weight, bias (C); attrs eps        (removed by fold_bn)
  affine        params scale, shift (C): y = x * scale[c] + shift[c] (a BatchNorm with no conv before it,
                a layer scale x * p, x + p for a parameter p with one value per channel)
  layer_norm    params weight, bias (C); attrs eps: over dim 1 (the channels of NCHW, the features of (N, F))
  group_norm    params weight, bias (C); attrs eps, groups: NCHW, per image over each group's channels and H, W
  relu, relu6, hardswish, hardsigmoid, sigmoid, tanh, silu            no attrs
  gelu          attrs approximate "none" | "tanh"
  hardtanh      attrs min_val, max_val (either may be None: open on that side)
  leaky_relu    attrs negative_slope (also PReLU with one slope)
  prelu         params weight (C): a slope per channel
  scale_shift   attrs scale, shift: y = x * scale + shift (arithmetic with constant numbers)
  max_pool2d    attrs kernel [2], stride [2], padding [2], dilation [2], ceil_mode
  avg_pool2d    attrs kernel [2], stride [2], padding [2], ceil_mode, count_include_pad, divisor_override (0 = none)
  adaptive_avg_pool2d  attrs output_size [2]
  resize        attrs mode "nearest" | "bilinear", align_corners, size [oh, ow] or None, scale [fh, fw] or None;
                a second input (when both are None) lends its H and W: F.interpolate(x, size=y.shape[-2:])
  pad           attrs padding [top, left, bottom, right] >= 0, value (a number): constant padding of H, W
  reduce        attrs mode "mean" | "sum", dims (sorted NCHW dims >= 1), keepdim: x.mean(dims) / x.sum(dims);
                keepdim False only for two dims of a rank-4 input (the result is then (N, the dim left))
  flatten       rank-4 NCHW -> (N, C*H*W) in NCHW order; no attrs
  add, sub      two inputs of the same shape (sub: the first minus the second); attrs act ("none" | "relu")
  mul           two inputs of the same shape, or (N, C, H, W) and (N, C, 1, 1) in either order
  cat           attrs axis (>= 1, non-negative)
  gather_channels  attrs index [C']: output channel i is input channel index[i] (layout.py's channel maps)
  softmax, log_softmax   attrs dim (>= 1, non-negative)
  dropout, identity      removed by remove_noops
"""
import dataclasses
from dataclasses import dataclass, field


@dataclass
class Node:
    op: str
    name: str                      # module path (e.g. "layer1.0.conv1") or the fx node name of a function call
    inputs: list
    output: str
    attrs: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)


@dataclass
class Graph:
    inputs: list                   # value names of the graph inputs (float32 tensors)
    outputs: list                  # value names of the graph outputs
    nodes: list                    # topologically ordered
    shapes: dict = field(default_factory=dict)  # value name -> shape (batch included) seen while tracing
    output_keys: list = None       # forward returned a dict: its keys, one per output; else None
    # values whose torch tensor is the (N, H, W, C) permutation of the NCHW value the IR means (ConvNeXt's
    # channels-last view, named after the fx node that computes it): calibration data must be permuted back
    channels_last: set = field(default_factory=set)
    # value -> per-channel divisors: the IR value is the torch value divided by them (passes/equalize.py)
    value_scales: dict = field(default_factory=dict)

    def with_nodes(self, nodes, outputs=None):
        """A copy of this graph with other nodes (and outputs): what a pass returns."""
        return dataclasses.replace(self, nodes=list(nodes), inputs=list(self.inputs),
                                   outputs=list(self.outputs if outputs is None else outputs),
                                   shapes=dict(self.shapes), channels_last=set(self.channels_last),
                                   value_scales=dict(self.value_scales))

    def to_ir(self, value, tensor):
        """The IR's value `value` from the torch tensor of the fx node of that name (NCHW, rescaled)."""
        if value in self.channels_last:
            tensor = tensor.permute(0, 3, 1, 2)
        scales = self.value_scales.get(value)
        if scales is not None:
            import torch
            tensor = tensor / torch.from_numpy(scales.astype("float32")).reshape(1, -1, *[1] * (tensor.dim() - 2))
        return tensor

    def consumers(self, value):
        return [n for n in self.nodes if value in n.inputs]

    def producer(self, value):
        for n in self.nodes:
            if n.output == value:
                return n
        return None
