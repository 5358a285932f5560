"""qruntime: exact int8 inference on the CPU with native SIMD kernels, no PyTorch at run time."""
from . import ops
from .compare import Report, compare
from ._core import get_num_threads
from ._limits import get_max_activation_bytes, set_max_activation_bytes
from .dispatch import available_isas, cpu_info, isa, set_num_threads
from .errors import FormatError, FormatWarning, UnsupportedOpError
from .model import Model, load

__version__ = "0.1.0"


def quantize(model, calibration_data, *, example_inputs=None, method="minmax", per_channel=True, keep_float=(),
             progress=True, weight_bits=8, bias_correction=True, min_sqnr=None, cross_layer_equalization=False,
             pooled_range_margin=2.0, activations=None):
    """Converts a trained torch.nn.Module into a quantized Model (needs torch; the model is not modified).

    calibration_data: an iterable of batches (tensors, numpy arrays, or (x, y) tuples, of which x is used).
        A Hugging Face BERT encoder (BertModel) takes batches of (input_ids, attention_mask) or tokenizer
        outputs; its activations are quantized per token at run time and the batches check the converted
        model against torch (convert/transformer.py).
    method: how activation ranges are chosen: "minmax", "percentile" (99.99), "mse" or "entropy".
    keep_float: module paths (e.g. "features.3", every op inside) or node names to run in float32 instead of
        int8 (float islands): conv/linear, LayerNorm, add/sub/mul, affine and elementwise functions.
    weight_bits: 8 (weights in [-127, 127]) or 7 ([-64, 64]: every layer takes the AVX2 fast path).
    bias_correction: shift each int8 conv/linear bias by the mean output error its rounded weights cause on
        the calibration data, per output channel (docs/quantization.md "Bias correction").
    cross_layer_equalization: rescale the channels between consecutive layers (conv/linear, then a conv,
        depthwise conv or linear, with no activation or a ReLU between) so both layers' weights have equal
        ranges per channel; the function is unchanged (docs/quantization.md).
    min_sqnr: a target output SQNR in dB on the calibration data: the fewest, most sensitive layers go to
        float (float islands) until it is reached; a warning says when no choice of layers reaches it.
    pooled_range_margin: the calibrated ranges of values computed after a global pool ((N, C, 1, 1) or (N, F);
        not sigmoid-like outputs) are widened by this factor (max, and min when negative): their extremes are
        estimated from one sample per image and channel. 1.0 turns it off (docs/quantization.md).
    activations: a transformer encoder's linear inputs are quantized per token at run time ("dynamic", the
        default) or with one range per linear calibrated on calibration_data ("static": faster, less
        accurate). A CNN's activations are always static (None or "static")."""
    try:
        import torch  # noqa: F401 - only to say what is missing; running a model never needs it
    except ImportError:
        raise ImportError("qruntime.quantize converts PyTorch models and needs torch: "
                          "pip install 'qruntime[torch]'") from None
    from .convert.transformer import is_hf_encoder, quantize_encoder
    if is_hf_encoder(getattr(model, "bert", None)):
        raise UnsupportedOpError(f"{type(model).__name__}: qruntime converts the BertModel inside it (model.bert) "
                                 "and returns last_hidden_state; apply the task head to that yourself")
    if is_hf_encoder(model):
        # The encoder converter's own scheme: smoothing, then per-token (or one static) input ranges.
        unsupported = {"example_inputs": example_inputs is not None, "method": method != "minmax",
                       "keep_float": bool(keep_float), "min_sqnr": min_sqnr is not None,
                       "cross_layer_equalization": bool(cross_layer_equalization)}
        named = [k for k, given in unsupported.items() if given]
        if named:
            raise ValueError(f"{', '.join(named)}: not available for a transformer encoder (its linears' inputs "
                             "are smoothed and quantized per token at run time, or statically with activations="
                             "'static')")
        return quantize_encoder(model, calibration_data, per_channel=per_channel, weight_bits=weight_bits,
                                activations="dynamic" if activations is None else activations)
    if activations not in (None, "static"):
        raise ValueError(f"activations={activations!r}: a CNN's activations are quantized statically (None or "
                         "'static'); per-token dynamic quantization is for transformer encoders")
    from .convert.quantize import quantize_model
    return quantize_model(model, calibration_data, example_inputs=example_inputs, method=method,
                          per_channel=per_channel, keep_float=keep_float, progress=progress, weight_bits=weight_bits,
                          bias_correction=bias_correction, min_sqnr=min_sqnr,
                          cross_layer_equalization=cross_layer_equalization,
                          pooled_range_margin=pooled_range_margin)


__all__ = [
    "load",
    "quantize",
    "compare",
    "Report",
    "Model",
    "FormatError",
    "FormatWarning",
    "UnsupportedOpError",
    "ops",
    "cpu_info",
    "isa",
    "available_isas",
    "set_num_threads",
    "get_num_threads",
    "set_max_activation_bytes",
    "get_max_activation_bytes",
    "__version__",
]
