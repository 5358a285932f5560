"""Comparison with PyTorch's quantized ops: at most 1 LSB apart anywhere, on at most 0.1 % of outputs."""
import numpy as np


class LsbTally:
    """Outputs compared and how many differ by one LSB; a difference of more than one fails at once.
    The 0.1 % bound is checked over everything added: one small case has too few outputs for it."""

    def __init__(self, min_total):
        self.min_total = min_total
        self.total = self.off = 0

    def add(self, ours, theirs, what):
        diff = np.abs(np.asarray(ours).astype(np.int32) - np.asarray(theirs).astype(np.int32))
        assert diff.max(initial=0) <= 1, f"{what}: differs from PyTorch by {diff.max()} LSB"
        self.total += diff.size
        self.off += int(np.count_nonzero(diff))

    def check(self):
        assert self.total >= self.min_total, f"only {self.total} outputs compared"
        assert self.off <= 0.001 * self.total, f"{self.off} of {self.total} outputs differ by 1 LSB"
