"""PyTorch -> quantized graph conversion. Needs torch; imported lazily by qruntime.quantize."""
