"""The float-IR passes, each a pure ir.Graph -> ir.Graph function, and run_all applying them in order."""
from .dead_code import dead_code
from .equalize import equalize
from .fold_bn import fold_bn
from .fuse import fuse_activations
from .remove_noops import remove_noops

__all__ = ["dead_code", "equalize", "fold_bn", "fuse_activations", "remove_noops", "run_all"]


def run_all(graph):
    """remove_noops, fold_bn, fuse_activations, dead_code: noops first so a Dropout between a conv and
    its BatchNorm or ReLU does not block folding or fusion."""
    return dead_code(fuse_activations(fold_bn(remove_noops(graph))))
