"""Hugging Face BERT encoders (BertModel: BERT, MiniLM, ...) -> the transformer ops of docs/format.md.

The graph: embedding (word + token type 0 + position) and LayerNorm; per layer, q, k and v as one
`linear_dynamic` of 3F outputs (int8 weights per output channel, each token's input quantized at run
time), `attention` over the additive mask reading them as qkv, the output projection, residual add and LayerNorm, the GELU MLP
(GELU fused into its first linear), residual add and LayerNorm. Each linear's input is smoothed
(SmoothQuant, alpha 0.5): feature j is multiplied by `in_scale[j] = 1 / s[j]` before the per-token
quantization and the weight column by `s[j]`, with `s[j] = sqrt(max|x_j| / max|w_j|)` from the
calibration batches, so the few outlier features of BERT's LayerNorm outputs stop setting every
token's scale (docs/quantization.md). With activations="static" each linear's input takes one scale
and zero point calibrated on the batches instead (x_scale, x_zero_point). Inputs `input_ids` and
`attention_mask` (int64, (N, S), any N and S up to the position table); output `last_hidden_state`
(N, S, F). Pooling is the caller's.

The graph is read off the module tree, not traced. transformers 5 no longer has its fx tracer, and
torch.export gives an ATen graph whose mask construction and attention dispatch (sdpa, eager, ...)
change with the transformers release and `attn_implementation`; BERT's modules and their
computation have not changed since 2018. Each module is checked to be what the graph assumes (types,
activation, position embedding kind, no decoder), and the converted model is run against the torch
model on the calibration batches: a relative that computes something else fails there, with the
measured agreement in the error, instead of converting to a wrong model.
"""
import numpy as np

from ..errors import UnsupportedOpError
from .quantize import quantize_weight

# Token-level cosine (last_hidden_state vs torch fp32) below which the conversion is refused: int8
# weights and per-token activations keep it above 0.999 on MiniLM; a model whose forward differs from
# BERT's (other position ids, another activation) lands far below.
MIN_TOKEN_COSINE = 0.98


def is_hf_encoder(model):
    """Whether `model` is a Hugging Face BertModel (a task model such as BertForSequenceClassification
    is not: its head would be dropped; pass its .bert and apply the head yourself)."""
    return _bert(model) is not None


def _bert(model):
    if type(model).__name__ == "BertModel" and hasattr(model, "embeddings") and hasattr(model, "encoder"):
        return model
    return None


def _require(cond, where, what):
    if not cond:
        raise UnsupportedOpError(f"{where}: {what}; qruntime converts BERT encoders (BertModel) as transformers "
                                 "defines them")


# The smoothing factor's bounds: features that never moved (max 0) or weights of 0 would give 0 or inf.
_SMOOTH_MIN, _SMOOTH_MAX = 1e-4, 1e4


def smoothing(x_absmax, w):
    """in_scale (float32, per input feature) for weights w (out, in) and the input's calibrated |x| maxima;
    the weights to quantize are w / in_scale, so x * in_scale . (w / in_scale)^T is x . w^T."""
    w_absmax = np.abs(np.asarray(w, np.float64)).max(axis=0)
    s = np.sqrt(np.maximum(x_absmax, 1e-12) / np.maximum(w_absmax, 1e-12))
    in_scale = (1.0 / np.clip(s, _SMOOTH_MIN, _SMOOTH_MAX)).astype(np.float32)
    return in_scale, (np.asarray(w, np.float64) / in_scale.astype(np.float64)).astype(np.float32)


def _linear(em, path, module, inp, act="none", fused=(), name=None):
    """One linear_dynamic for the Linear at module `path` (its calibrated input statistics), named `name`
    (default: path); with `fused` (more Linears on the same input) their weights and biases are stacked
    after the first's into one op (the attention's q, k and v): one quantized input, one GEMM."""
    import torch

    name = name or path
    modules = [module, *fused]
    for m in modules:
        _require(isinstance(m, torch.nn.Linear), name, f"expected a Linear, found {type(m).__name__}")
    _require(len({m.bias is None for m in modules}) == 1, name, "fused linears with and without a bias")
    w = np.concatenate([m.weight.detach().to(torch.float32).cpu().numpy() for m in modules])
    tensors = {}
    if path in em.input_absmax:
        in_scale, w = smoothing(em.input_absmax[path], w)
        tensors["in_scale"] = em.tensor(f"{name}.in_scale", in_scale)
    if path in em.static_ranges:
        in_scale = em.tensors[tensors["in_scale"]] if "in_scale" in tensors else None
        x_scale, x_zero_point = static_input(in_scale, *em.static_ranges[path])
        tensors["x_scale"] = em.tensor(f"{name}.x_scale", x_scale)
        tensors["x_zero_point"] = em.tensor(f"{name}.x_zero_point", x_zero_point)
    q, scale = quantize_weight(w, em.per_channel, em.weight_bits)
    tensors.update({"weight": em.tensor(f"{name}.weight", q), "w_scale": em.tensor(f"{name}.w_scale", scale)})
    if module.bias is not None:
        tensors["bias"] = em.tensor(f"{name}.bias", np.concatenate(
            [m.bias.detach().to(torch.float32).cpu().numpy() for m in modules]))
    return em.op("linear_dynamic", name, [inp], {"act": act}, tensors)


def static_input(in_scale, lo, hi):
    """x_scale (float32 (1,)) and x_zero_point (uint8 (1,)) of a linear's static input quantization: the
    per-row rule of docs/quantization.md applied once to the calibrated range of x * in_scale, from the
    per-feature minima `lo` and maxima `hi` of x (in_scale > 0 keeps each feature's order)."""
    f32 = np.float32
    lo, hi = np.asarray(lo, f32), np.asarray(hi, f32)
    if in_scale is not None:
        lo, hi = lo * np.asarray(in_scale, f32), hi * np.asarray(in_scale, f32)
    lo, hi = min(f32(0), lo.min()), max(f32(0), hi.max())
    s = f32(hi - lo) / f32(255)
    s = f32(1) if s == 0 else s
    zp = np.clip(np.rint(-lo / s), 0, 255)
    return np.array([s], f32), np.array([zp], np.uint8)


def _layer_norm(em, name, module, inp):
    import torch

    _require(isinstance(module, torch.nn.LayerNorm) and module.elementwise_affine and module.weight is not None
             and module.bias is not None, name, "expected a LayerNorm with weight and bias")
    return em.op("layer_norm_float", name, [inp], {"eps": float(module.eps)},
                 {"weight": em.tensor(f"{name}.weight", module.weight.detach().float().cpu().numpy()),
                  "bias": em.tensor(f"{name}.bias", module.bias.detach().float().cpu().numpy())})


def _is_erf_gelu(act):
    import torch

    if isinstance(act, torch.nn.GELU):
        return act.approximate == "none"
    # transformers' GELUActivation: F.gelu (erf form) unless built with use_gelu_python (the same function).
    return type(act).__name__ == "GELUActivation"


class _Emitter:
    def __init__(self, per_channel, weight_bits, input_absmax, static_ranges):
        self.per_channel, self.weight_bits, self.input_absmax = per_channel, weight_bits, input_absmax
        self.static_ranges = static_ranges
        self.values = {"input_ids": {"dtype": "int64"}, "attention_mask": {"dtype": "int64"}}
        self.ops, self.tensors = [], {}

    def tensor(self, name, array):
        self.tensors[name] = np.ascontiguousarray(array)
        return name

    def op(self, kind, name, inputs, attrs, tensors=None):
        out = f"{name}:out"
        self.values[out] = {"dtype": "float32"}
        self.ops.append({"op": kind, "name": name, "inputs": list(inputs), "outputs": [out], "attrs": attrs,
                         "tensors": tensors or {}})
        return out


def input_ranges(model, batches):
    """{linear module path: (min, max) of its input per feature} of the encoder's linears over the batches
    (padding tokens left out: the engine computes them but nothing reads them)."""
    import torch

    bert = _bert(model)
    ranges, hooks, keep = {}, [], {}

    def record(name):
        def hook(_module, args):
            x = args[0].detach().float()
            x = x[keep["mask"]] if x.dim() == 3 and x.shape[:2] == keep["mask"].shape else x.reshape(-1, x.shape[-1])
            lo, hi = x.amin(dim=0).numpy().astype(np.float64), x.amax(dim=0).numpy().astype(np.float64)
            if name in ranges:
                lo, hi = np.minimum(ranges[name][0], lo), np.maximum(ranges[name][1], hi)
            ranges[name] = (lo, hi)
        return hook

    for name, module in bert.encoder.named_modules():
        if isinstance(module, torch.nn.Linear):
            hooks.append(module.register_forward_pre_hook(record(f"encoder.{name}")))
    try:
        with torch.inference_mode():
            for ids, mask in batches:
                keep["mask"] = torch.from_numpy(mask).bool()
                bert(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask))
    finally:
        for h in hooks:
            h.remove()
    return ranges


def absmax(ranges):
    """{linear module path: max |input| per feature} from input_ranges()'s per-feature (min, max)."""
    return {name: np.maximum(-lo, hi) for name, (lo, hi) in ranges.items()}


def build_encoder_graph(model, per_channel=True, weight_bits=8, input_absmax=None, static_ranges=None):
    """(graph, tensors) of the quantized encoder: docs/format.md's transformer ops; with input_absmax
    ({linear path: per-feature max |x|}, from absmax(input_ranges())) each linear's input is smoothed; with
    static_ranges ({linear path: per-feature (min, max) of x}, from input_ranges()) each linear's input is
    quantized with one calibrated scale and zero point instead of per token."""
    import torch

    bert = _bert(model)
    _require(bert is not None, "model", f"{type(model).__name__} is not a BertModel")
    cfg = bert.config
    _require(not getattr(cfg, "is_decoder", False) and not getattr(cfg, "add_cross_attention", False), "config",
             "a decoder or cross-attention model")
    emb = bert.embeddings
    _require(getattr(cfg, "position_embedding_type", "absolute") == "absolute", "config.position_embedding_type",
             f"{getattr(cfg, 'position_embedding_type', None)!r} positions (only 'absolute')")
    em = _Emitter(per_channel, weight_bits, input_absmax or {}, static_ranges or {})

    def table(name, module):
        _require(isinstance(module, torch.nn.Embedding), name, "expected an Embedding")
        return em.tensor(f"{name}.weight", module.weight.detach().to(torch.float32).cpu().numpy())

    # The word table in int8 per id (symmetric, a scale per row): 4x smaller, the largest tensor of a small
    # encoder (MiniLM: 47 of 58 MB in float32); it moves the MiniLM cosine by about 2e-5.
    words = table("embeddings.word_embeddings", emb.word_embeddings)
    q, scale = quantize_weight(em.tensors.pop(words), True)
    tables = {"word_q": em.tensor(f"{words}_q", q), "word_scale": em.tensor(f"{words}_scale", scale),
              "position": table("embeddings.position_embeddings", emb.position_embeddings)}
    if getattr(emb, "token_type_embeddings", None) is not None:
        tables["token_type"] = table("embeddings.token_type_embeddings", emb.token_type_embeddings)
    h = em.op("embedding", "embeddings", ["input_ids"], {}, tables)
    h = _layer_norm(em, "embeddings.LayerNorm", emb.LayerNorm, h)
    bias = em.op("attention_bias", "attention_mask.bias", ["attention_mask"], {})
    for i, layer in enumerate(bert.encoder.layer):
        p = f"encoder.layer.{i}"
        sa = layer.attention.self
        heads = int(sa.num_attention_heads)
        head_dim = int(sa.attention_head_size)
        _require(heads * head_dim == sa.query.out_features, f"{p}.attention.self", "heads do not tile the features")
        scale = float(getattr(sa, "scaling", head_dim ** -0.5))
        # q, k and v read the same input: one linear of 3F outputs (the query's calibrated input; its
        # smoothing takes the largest weight of the three per input feature), read by attention as qkv.
        qkv = _linear(em, f"{p}.attention.self.query", sa.query, h, fused=(sa.key, sa.value),
                      name=f"{p}.attention.self.qkv")
        ctx = em.op("attention", f"{p}.attention.self", [qkv, bias], {"heads": heads, "scale": scale})
        out = layer.attention.output
        a = _linear(em, f"{p}.attention.output.dense", out.dense, ctx)
        r = em.op("binary_float", f"{p}.attention.output.add", [a, h], {"fn": "add"})
        h = _layer_norm(em, f"{p}.attention.output.LayerNorm", out.LayerNorm, r)
        _require(_is_erf_gelu(layer.intermediate.intermediate_act_fn), f"{p}.intermediate",
                 f"activation {type(layer.intermediate.intermediate_act_fn).__name__} (only GELU, erf form)")
        f = _linear(em, f"{p}.intermediate.dense", layer.intermediate.dense, h, act="gelu")
        f = _linear(em, f"{p}.output.dense", layer.output.dense, f)
        r = em.op("binary_float", f"{p}.output.add", [f, h], {"fn": "add"})
        h = _layer_norm(em, f"{p}.output.LayerNorm", layer.output.LayerNorm, r)
    em.values["last_hidden_state"] = em.values.pop(h)
    em.ops[-1]["outputs"] = ["last_hidden_state"]
    graph = {"inputs": [{"name": "input_ids", "shape": [-1, -1]}, {"name": "attention_mask", "shape": [-1, -1]}],
             "outputs": ["last_hidden_state"], "values": em.values, "ops": em.ops}
    return graph, em.tensors


def _token_batches(calibration_data):
    """(input_ids, attention_mask) int64 arrays from pairs, dicts or a tokenizer's BatchEncoding."""
    for batch in calibration_data:
        if hasattr(batch, "keys"):
            ids, mask = batch["input_ids"], batch.get("attention_mask")
        else:
            ids, mask = batch
        ids = np.asarray(ids.detach().cpu().numpy() if hasattr(ids, "detach") else ids)
        mask = np.ones_like(ids) if mask is None else np.asarray(mask.detach().cpu().numpy()
                                                                  if hasattr(mask, "detach") else mask)
        if ids.dtype.kind not in "iu" or mask.dtype.kind not in "biu" or ids.ndim != 2 or mask.shape != ids.shape:
            raise ValueError("calibration_data for an encoder: batches of (input_ids, attention_mask), integer "
                             f"arrays of one shape (N, S); got {ids.dtype} {ids.shape} and {mask.dtype} {mask.shape}")
        yield ids.astype(np.int64), mask.astype(np.int64)


def check_against_torch(qmodel, model, calibration_data):
    """The token-level cosine (mean, min over tokens that are not padding) of qmodel vs the torch model on
    the batches; UnsupportedOpError below MIN_TOKEN_COSINE."""
    import torch

    bert = _bert(model)
    cosines = []
    for ids, mask in _token_batches(calibration_data):
        with torch.inference_mode():
            ref = bert(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).last_hidden_state
        ref = ref.float().numpy()
        got = qmodel.run([ids, mask])
        keep = mask.astype(bool)
        a, b = got[keep].astype(np.float64), ref[keep].astype(np.float64)
        cosines.append((a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-30))
    if not cosines:
        raise ValueError("calibration_data is empty: an encoder is checked against torch on at least one batch")
    c = np.concatenate(cosines)
    if not c.mean() >= MIN_TOKEN_COSINE:
        raise UnsupportedOpError(f"the converted encoder disagrees with {type(model).__name__}: token cosine mean "
                                 f"{c.mean():.4f}, min {c.min():.4f} (expected >= {MIN_TOKEN_COSINE}); its forward "
                                 "is not BERT's")
    return float(c.mean()), float(c.min())


def quantize_encoder(model, calibration_data, *, per_channel=True, weight_bits=8, activations="dynamic"):
    """The quantized Model of a BERT encoder; calibration_data: batches of (input_ids, attention_mask),
    which set the smoothing and check the conversion against torch. activations: "dynamic" (each token's
    linear inputs quantized at run time with their own range) or "static" (one range per linear input,
    from the calibration batches: less work per token, less accurate)."""
    from ..model import Model

    if activations not in ("dynamic", "static"):
        raise ValueError(f"activations must be 'dynamic' or 'static' for a transformer encoder, got {activations!r}")
    batches = list(_token_batches(calibration_data))
    if not batches:
        raise ValueError("calibration_data is empty: an encoder needs at least one batch of (input_ids, attention_mask)")
    ranges = input_ranges(model, batches)
    graph, tensors = build_encoder_graph(model, per_channel=per_channel, weight_bits=weight_bits,
                                         input_absmax=absmax(ranges),
                                         static_ranges=ranges if activations == "static" else None)
    qmodel = Model(graph, tensors)
    check_against_torch(qmodel, model, batches)
    return qmodel


__all__ = ["is_hf_encoder", "quantize_encoder", "build_encoder_graph", "absmax", "input_ranges", "smoothing",
           "static_input", "check_against_torch", "MIN_TOKEN_COSINE"]
