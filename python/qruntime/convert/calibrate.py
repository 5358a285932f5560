"""Calibration: run the traced model over the calibration batches and observe every IR value's range."""
import itertools

import numpy as np


def batches(calibration_data, argument="calibration_data"):
    """The x of each calibration item: a tensor, a numpy array, or the first element of an (x, y) pair.

    argument: the name the error messages give the data (the caller's parameter)."""
    import torch

    try:
        items = iter(calibration_data)
    except TypeError:
        raise TypeError(f"{argument} must be an iterable of batches (tensors, arrays or (x, y) tuples), "
                        f"got {type(calibration_data).__name__}") from None
    for i, item in enumerate(items):
        if isinstance(item, (tuple, list)):
            if not item:
                raise ValueError(f"{argument} item {i} is an empty {type(item).__name__}")
            item = item[0]
        if isinstance(item, np.ndarray):
            item = torch.from_numpy(np.ascontiguousarray(item, dtype=np.float32))
        if not isinstance(item, torch.Tensor):
            raise TypeError(f"{argument} item {i} must be a tensor, an array or an (x, y) tuple, "
                            f"got {type(item).__name__}")
        if not item.is_floating_point():
            item = item.float()
        yield item.detach().to(torch.float32)


def calibrate(graph_module, observed, data, make_observer, progress=True, example_shape=None, taps=None,
              to_ir=None):
    """{value name: its observer} for every fx node named in `observed` that the batches of `data` computed.

    data: an iterator of input tensors (consumed once). make_observer: () -> a fresh observer.
    example_shape: the shape the model was traced with, for the message when a batch does not fit.
    taps: {fx node name: [fn(tensor)]}, called with that node's output on every batch (bias correction).
    to_ir: (name, tensor) -> the IR's value of that name (ir.Graph.to_ir); what observers and taps see."""
    import torch
    import torch.fx

    observers = {name: make_observer() for name in observed}
    seen = set()

    class Recorder(torch.fx.Interpreter):
        def run_node(self, n):
            out = super().run_node(n)
            # Observed right away: an in-place op later in the graph may overwrite this tensor.
            if isinstance(out, torch.Tensor) and (n.name in observers or n.name in (taps or {})):
                value = out.detach() if to_ir is None else to_ir(n.name, out.detach())
                if n.name in observers:
                    observers[n.name].update(value)
                    seen.add(n.name)
                for tap in (taps or {}).get(n.name, ()):
                    tap(value)
            return out

    count = 0
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(desc="calibrating", unit="batch")
    try:
        with torch.no_grad():
            for x in data:
                try:
                    Recorder(graph_module).run(x)
                except (RuntimeError, ValueError, IndexError) as e:
                    # torch's own message comes from deep inside the traced graph; say what was expected.
                    want = "" if example_shape is None else f"; the model was traced with {tuple(example_shape)}"
                    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                    raise ValueError(f"calibration batch {count} of shape {tuple(x.shape)} does not fit the model"
                                     f"{want} (the batch size may differ; torch said: {first})") from None
                count += 1
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    if count == 0:
        raise ValueError("calibration_data holds no batches")
    return {name: observers[name] for name in seen}


def first_and_rest(iterator):
    """(first item, an iterator over all items) without consuming the first one for good."""
    first = next(iterator, None)
    return first, (itertools.chain([first], iterator) if first is not None else iter(()))
