"""A loaded model keeps its .qnn file open instead of its bytes in memory: the engine holds its own
packed copy of every weight, so the file's bytes (all of the weights again) are read back only when
save() or pickling needs them, and checked to be the model that was loaded."""
import gc
import os
import pickle
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest
import torch
import torch.nn as nn

import qruntime
from qruntime import format as qnn_format
from qruntime.errors import FormatError
from qruntime.model import Model


class Wide(nn.Module):
    """Two large linears: about 1.6 MB of int8 weights, so the file's bytes dwarf the rest."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(768, 1536), nn.Linear(1536, 256)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


@pytest.fixture(scope="module")
def wide():
    """(the quantized model, a batch of inputs, its outputs)."""
    torch.manual_seed(0)
    model = Wide().eval()
    x = torch.randn(64, 768)
    q = qruntime.quantize(model, [x[:32], x[32:]], progress=False)
    xs = x[:8].numpy()
    return q, xs, q.run(xs)


@pytest.fixture
def saved(wide, tmp_path):
    q, xs, want = wide
    path = tmp_path / "wide.qnn"
    q.save(path)
    return path, xs, want


def open_fds():
    return len(os.listdir("/proc/self/fd"))


def test_load_does_not_keep_the_file_bytes_in_memory(saved):
    path, xs, want = saved
    size = path.stat().st_size
    assert size > 1_500_000
    tracemalloc.start()  # numpy's buffers are traced; the engine's packed weights (C++) are not
    try:
        before = tracemalloc.get_traced_memory()[0]
        model = qruntime.load(path)
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert kept < size / 4, f"load kept {kept:,} bytes of Python memory for a {size:,}-byte file"
    np.testing.assert_array_equal(model.run(xs), want)


def test_save_and_pickle_read_the_file_again_even_once_it_is_deleted(saved, tmp_path):
    path, xs, want = saved
    original = path.read_bytes()
    model = qruntime.load(path)
    path.unlink()  # the open file outlives its name
    model.save(tmp_path / "copy.qnn")
    assert (tmp_path / "copy.qnn").read_bytes() == original
    back = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(back.run(xs), want)
    assert qnn_format.to_bytes(back.graph, back._tensors) == original


def test_a_file_rewritten_in_place_is_refused_not_read_as_the_model(saved, tmp_path):
    path, xs, want = saved
    model = qruntime.load(path)
    other = nn.Sequential(nn.Linear(768, 16))
    qruntime.quantize(other, [torch.randn(8, 768)], progress=False).save(path)  # the same file, new bytes
    with pytest.raises(FormatError, match="rewritten since it was loaded"):
        model.save(tmp_path / "copy.qnn")
    with pytest.raises(FormatError, match="rewritten since it was loaded"):
        pickle.dumps(model)
    with open(path, "r+b") as f:  # cut short: unreadable now
        f.truncate(100)
    with pytest.raises(FormatError, match="changed since it was loaded"):
        model.save(tmp_path / "copy.qnn")
    np.testing.assert_array_equal(model.run(xs), want)  # the engine never read the file again


def test_saving_over_its_own_file_keeps_the_model_readable(saved, tmp_path):
    path, xs, want = saved
    original = path.read_bytes()
    model = qruntime.load(path)
    model.save(path)  # rewrites the open file itself
    model.save(path)
    assert path.read_bytes() == original
    model.save(tmp_path / "copy.qnn")
    assert (tmp_path / "copy.qnn").read_bytes() == original
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(model)).run(xs), want)


def test_the_file_is_closed_with_the_model(saved):
    path, _, _ = saved
    gc.collect()
    before, count = open_fds(), qnn_format.SourceFile.open_count
    models = [qruntime.load(path) for _ in range(3)]
    assert open_fds() == before + 3 and qnn_format.SourceFile.open_count == count + 3
    del models
    gc.collect()
    assert open_fds() == before and qnn_format.SourceFile.open_count == count


def test_past_the_open_file_limit_the_bytes_stay_in_memory(saved, monkeypatch, tmp_path):
    path, xs, want = saved
    monkeypatch.setattr(qnn_format.SourceFile, "limit", staticmethod(lambda: 0))
    before = open_fds()
    model = qruntime.load(path)
    assert open_fds() == before  # nothing kept open
    path.unlink()
    model.save(tmp_path / "copy.qnn")
    np.testing.assert_array_equal(qruntime.load(tmp_path / "copy.qnn").run(xs), want)


def test_the_limit_leaves_most_descriptors_to_the_program():
    import resource

    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    limit = qnn_format.SourceFile.limit()
    assert 0 <= limit <= 256
    if soft != resource.RLIM_INFINITY:
        assert limit <= soft // 4


# A fresh process loads the file, with (`load`) or without (`held`: the tensors kept, as a Model built
# from arrays keeps them) the tensors given back as they are packed, and prints how far its peak
# resident memory rose over the load.
_PEAK_RISE = """
import sys
import qruntime
from qruntime import format as qnn_format
from qruntime.model import Model

def status(key):
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(key)) * 1024

before = status("VmRSS:")
if sys.argv[2] == "load":
    model = qruntime.load(sys.argv[1])
else:
    graph, tensors, _ = qnn_format.read_kept_open(sys.argv[1])
    model = Model(graph, tensors, _validated=True)
print(status("VmHWM:") - before)
"""


def test_a_load_gives_the_file_tensors_back_as_it_packs_them(tmp_path):
    """Every tensor is read (and hashed, and checked) before the engine packs them; each one's memory
    then goes as soon as its ops are packed, so a load's peak is about the packed weights', not those
    and the file's tensors together."""
    torch.manual_seed(0)
    deep = nn.Sequential(*[nn.Linear(1024, 1024) for _ in range(12)]).eval()  # 12 MB of int8 weights
    q = qruntime.quantize(deep, [torch.randn(16, 1024)], progress=False)
    path = tmp_path / "deep.qnn"
    q.save(path)
    tensor_bytes = sum(array.nbytes for array in q._tensors.values())

    def peak_rise(how):
        done = subprocess.run([sys.executable, "-c", _PEAK_RISE, str(path), how], capture_output=True, text=True,
                              check=True)
        return int(done.stdout)

    released, held = peak_rise("load"), peak_rise("held")
    assert held - released > tensor_bytes / 2, (
        f"peak rise over the load: {released:,} bytes giving the tensors back, {held:,} keeping them "
        f"({tensor_bytes:,} bytes of tensors)")


def test_a_tensor_two_ops_share_is_given_back_only_once_both_are_packed(tmp_path):
    """Two linears naming the same weight tensors: the first one packed must not take them from the
    second (one thread builds them one after the other)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 512)).eval()
    q = qruntime.quantize(model, [torch.randn(32, 512)], progress=False)
    graph, tensors = q.graph, dict(q._tensors)
    linears = [op for op in graph["ops"] if op["op"] == "linear"]
    assert len(linears) == 2 and linears[0]["tensors"].keys() == linears[1]["tensors"].keys()
    for role, name in linears[1]["tensors"].items():
        del tensors[name]
        linears[1]["tensors"][role] = linears[0]["tensors"][role]
    x = np.random.default_rng(0).standard_normal((8, 512)).astype(np.float32)
    want = Model(graph, tensors).run(x)
    Model(graph, tensors).save(tmp_path / "shared.qnn")
    threads = qruntime.get_num_threads()
    qruntime.set_num_threads(1)
    try:
        loaded = qruntime.load(tmp_path / "shared.qnn")
    finally:
        qruntime.set_num_threads(threads)
    np.testing.assert_array_equal(loaded.run(x), want)
