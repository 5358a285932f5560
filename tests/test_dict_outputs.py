"""Models whose forward returns a dict (torchvision's segmentation models: {"out": ...}): the converter
keeps the keys in the file (graph.output_keys), Model.run returns {key: array}; tuples stay lists."""
import collections

import numpy as np
import pytest
import torch
import torch.nn as nn

import qruntime
from qruntime import format as qnn
from qruntime import reference
from qruntime.model import Model


class Backbone(nn.Module):
    """Returns an OrderedDict of feature maps, as torchvision's IntermediateLayerGetter does."""

    def __init__(self):
        super().__init__()
        self.low, self.high = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, stride=2, padding=1)

    def forward(self, x):
        out = collections.OrderedDict()
        out["low"] = torch.relu(self.low(x))
        out["high"] = torch.relu(self.high(out["low"]))
        return out


class TwoHeads(nn.Module):
    def __init__(self, as_dict=True):
        super().__init__()
        self.backbone, self.out, self.aux = Backbone(), nn.Conv2d(4, 2, 1), nn.Conv2d(4, 3, 1)
        self.as_dict = as_dict

    def forward(self, x):
        features = self.backbone(x)
        out, aux = self.out(features["high"]), self.aux(features["low"])
        if self.as_dict:
            return {"out": out, "aux": aux}
        return out, aux


def convert(model):
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    calib = [rng.uniform(-1, 1, (4, 3, 8, 10)).astype(np.float32) for _ in range(2)]
    return qruntime.quantize(model.eval(), calib, progress=False)


def test_dict_output_keeps_its_keys_through_a_file(tmp_path, any_path):
    torch.manual_seed(0)
    model = TwoHeads()
    q = convert(model)
    assert q.graph["output_keys"] == ["out", "aux"]
    q.save(tmp_path / "m.qnn")
    loaded = qruntime.load(tmp_path / "m.qnn")
    assert [o["key"] for o in loaded.outputs] == ["out", "aux"]
    x = np.random.default_rng(1).uniform(-1, 1, (2, 3, 8, 10)).astype(np.float32)
    got = Model(loaded.graph, loaded._tensors, isa=any_path).run(x)
    assert isinstance(got, dict) and list(got) == ["out", "aux"]
    want = reference.run_graph(q.graph, q._tensors, [x])
    np.testing.assert_array_equal(got["out"], want[0])
    np.testing.assert_array_equal(got["aux"], want[1])
    with torch.no_grad():
        ref = model(torch.from_numpy(x))
    for key in ("out", "aux"):
        assert got[key].shape == tuple(ref[key].shape)


def test_tuple_output_stays_a_list_and_one_output_an_array():
    torch.manual_seed(0)
    q = convert(TwoHeads(as_dict=False))
    assert "output_keys" not in q.graph and "key" not in q.outputs[0]
    x = np.zeros((1, 3, 8, 10), np.float32)
    assert isinstance(q.run(x), list)
    single = convert(nn.Sequential(nn.Conv2d(3, 2, 1)))
    assert isinstance(single.run(x), np.ndarray)


def test_bad_dict_outputs_are_named():
    class Nested(nn.Module):
        def forward(self, x):
            return {"out": {"inner": x * 2}}

    with pytest.raises(ValueError, match=r"forward must return .* or a dict of tensors; output 'out' is"):
        convert(Nested())

    class IntKeys(nn.Module):
        def forward(self, x):
            return {1: x * 2}

    with pytest.raises(ValueError, match=r"dict whose keys must be non-empty strings, got 1"):
        convert(IntKeys())


@pytest.mark.parametrize("keys, message", [
    (["out"], r"output_keys: must be a list of 2 keys, one per output"),
    ("out", r"output_keys: must be a list of 2 keys"),
    (["out", ""], r"output_keys\[1\]: must be a non-empty string"),
    (["out", 3], r"output_keys\[1\]: must be a non-empty string"),
    (["out", "out"], r"output_keys\[1\]: 'out' is listed twice"),
])
def test_bad_output_keys_are_format_errors(keys, message):
    torch.manual_seed(0)
    q = convert(TwoHeads())
    graph = dict(q.graph, output_keys=keys)
    with pytest.raises(qruntime.FormatError, match=message):
        qnn.to_bytes(graph, q._tensors)
