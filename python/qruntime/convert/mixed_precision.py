"""min_sqnr: the fewest layers to keep in float (float islands) for an output SQNR the user asks for.

Each candidate layer (an op with a float32 kernel) gets its sensitivity: the output SQNR on the
calibration data when it alone is int8 and every other candidate runs in float. Layers then go to
float most sensitive first until the all-but-those int8 model reaches min_sqnr; a last pass returns to
int8 every chosen layer the target does not need after all (a later choice may have made an earlier
one redundant). Every SQNR is measured on the real engine, not simulated.
"""
import math
import warnings

import numpy as np


def sqnr_db(reference, approximation):
    """10 log10(sum ref^2 / sum (ref - approx)^2) over flat float64 arrays; inf when they are equal."""
    ref = np.asarray(reference, np.float64)
    err = ref - np.asarray(approximation, np.float64)
    noise = float(np.sum(err * err))
    if noise == 0.0:
        return math.inf
    return 10.0 * math.log10(max(float(np.sum(ref * ref)), 1e-300) / noise)


def flat_outputs(y):
    """One flat float64 array of a model output: a tensor/array, a list/tuple of them or a dict (in order)."""
    if isinstance(y, dict):
        y = list(y.values())
    if not isinstance(y, (list, tuple)):
        y = [y]
    parts = [np.asarray(t.detach().numpy() if hasattr(t, "detach") else t, np.float64).ravel() for t in y]
    return np.concatenate(parts)


class OutputSQNR:
    """The output SQNR of a quantized Model against the float model over the same batches."""

    def __init__(self, graph_module, batches):
        import torch

        self.batches = [x.numpy() for x in batches]
        with torch.no_grad():
            self.reference = np.concatenate([flat_outputs(graph_module(torch.from_numpy(x))) for x in self.batches])

    def __call__(self, qmodel):
        return sqnr_db(self.reference, np.concatenate([flat_outputs(qmodel.run(x)) for x in self.batches]))


def choose_float_layers(build, measure, candidates, kept, min_sqnr, progress=True, quick_build=None):
    """(float layer names to add to `kept`, the output SQNR they give, its Model).

    build(set of float layer names) -> Model, exactly as quantize(keep_float=...) makes it; measure(Model)
    -> output SQNR in dB. candidates: the layers that may go to float, in graph order; kept: the layers the
    user keeps in float anyway. quick_build: a cheaper build for ranking the candidates (default build);
    every choice is made on build's models, so the result is quantize(keep_float=kept + chosen)."""
    quick_build = quick_build or build
    kept = set(kept)
    model = build(kept)
    sqnr = measure(model)
    if sqnr >= min_sqnr or not candidates:
        if sqnr < min_sqnr:
            _warn_unreached(min_sqnr, sqnr, 0)
        return [], sqnr, model
    everything = kept | set(candidates)
    best = build(everything)
    best_sqnr = measure(best)
    if best_sqnr < min_sqnr:  # no choice of layers can reach it: say so at once, not after trying them all
        _warn_unreached(min_sqnr, best_sqnr, len(candidates))
        return list(candidates), best_sqnr, best
    bar = _bar(progress, len(candidates))
    sensitivity = {}
    for name in candidates:
        sensitivity[name] = measure(quick_build(everything - {name}))
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    order = sorted(candidates, key=lambda name: sensitivity[name])  # lowest SQNR alone: the most sensitive
    chosen = []
    for name in order[:-1]:
        chosen.append(name)
        model = build(kept | set(chosen))
        sqnr = measure(model)
        if sqnr >= min_sqnr:
            break
    else:  # only every candidate reaches it
        return list(order), best_sqnr, best
    for name in list(chosen[:-1]):  # the last one was needed to reach the target; each earlier one may not be
        trial = build(kept | (set(chosen) - {name}))
        trial_sqnr = measure(trial)
        if trial_sqnr >= min_sqnr:
            chosen.remove(name)
            model, sqnr = trial, trial_sqnr
    return chosen, sqnr, model


def _warn_unreached(min_sqnr, sqnr, count):
    warnings.warn(f"min_sqnr={min_sqnr:g} dB not reached: {sqnr:.2f} dB on the calibration data with {count} more "
                  "layer(s) in float, every layer that has a float32 kernel; the ops left in int8 (pooling, concat, "
                  "resize, ...) bound it", UserWarning, stacklevel=4)


def _bar(progress, total):
    if not progress:
        return None
    from tqdm.auto import tqdm
    return tqdm(total=total, desc="min_sqnr: layer sensitivity", unit="layer")
