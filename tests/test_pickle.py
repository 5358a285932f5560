"""A Model pickles as its .qnn file's bytes (issue 16, item 5): what Ray, multiprocessing and
copy.deepcopy use to hand a model to another process. Unpickling validates the bytes as
qruntime.load validates a file, never re-quantizes (no torch needed) and prepares the weights for
the CPU it lands on; max_activation_bytes travels, an explicit isa does not."""
import copy
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn

import qruntime
from qruntime import format as qnn_format
from qruntime.model import Model


@pytest.fixture(scope="module")
def seed_cnn(trained, digits):
    """(the quantized trained seed CNN, 64 real test digits)."""
    model, _ = trained("seed_cnn")
    q = qruntime.quantize(model, [digits[0][:256]], progress=False)
    return q, digits[2][:64]


class TwoHeads(nn.Module):
    """A forward that returns a dict, as segmentation models do."""

    def __init__(self):
        super().__init__()
        self.body, self.out, self.aux = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 2, 1), nn.Conv2d(4, 3, 1)

    def forward(self, x):
        y = torch.relu(self.body(x))
        return {"out": self.out(y), "aux": self.aux(y)}


def file_bytes(model):
    return qnn_format.to_bytes(model.graph, model._tensors)


def kernels(model, shape):
    return [kernel for kernel, _ in model._engine.op_info([list(shape)])]


def test_round_trip_runs_bit_identically_from_quantize_and_from_load(seed_cnn, tmp_path):
    q, x = seed_cnn
    q.save(tmp_path / "m.qnn")
    loaded = qruntime.load(tmp_path / "m.qnn")
    want = q.run(x)
    for model in (q, loaded):
        for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
            back = pickle.loads(pickle.dumps(model, protocol=protocol))
            assert type(back) is Model and back is not model
            np.testing.assert_array_equal(back.run(x), want)
            assert file_bytes(back) == (tmp_path / "m.qnn").read_bytes()  # the same file, not a re-conversion


def test_deepcopy_and_copy_give_independent_models(seed_cnn):
    q, x = seed_cnn
    for twin in (copy.deepcopy(q), copy.copy(q)):
        assert twin._engine is not q._engine and twin._tensors is not q._tensors
        np.testing.assert_array_equal(twin.run(x), q.run(x))


def test_dict_output_model_keeps_its_keys():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    calib = [rng.uniform(-1, 1, (4, 3, 8, 10)).astype(np.float32) for _ in range(2)]
    q = qruntime.quantize(TwoHeads().eval(), calib, progress=False)
    x = rng.uniform(-1, 1, (3, 3, 8, 10)).astype(np.float32)
    want = q.run(x)
    got = pickle.loads(pickle.dumps(q)).run(x)
    assert isinstance(got, dict) and list(got) == ["out", "aux"]
    for key in want:
        np.testing.assert_array_equal(got[key], want[key])


def test_pickled_size_is_the_file_size(seed_cnn, tmp_path):
    q, _ = seed_cnn
    q.save(tmp_path / "m.qnn")
    size = (tmp_path / "m.qnn").stat().st_size
    for protocol in range(3, pickle.HIGHEST_PROTOCOL + 1):  # 3+ store bytes as they are (0-2 as latin-1 text)
        n = len(pickle.dumps(q, protocol=protocol))
        assert size < n <= size + 256, (protocol, n, size)  # the file plus a reference to the loader


@pytest.mark.parametrize("where", ["header length", "header", "tensor data", "last byte"])
def test_a_corrupted_payload_is_a_format_error(seed_cnn, where):
    q, _ = seed_cnn
    data = file_bytes(q)
    pickled = pickle.dumps(q)
    start = pickled.find(data)
    assert start > 0 and pickled.find(data, start + 1) == -1  # the file's bytes sit once, verbatim, in the pickle
    header_end = 8 + int.from_bytes(data[:8], "little")
    offset = {"header length": 0, "header": header_end // 2, "tensor data": (header_end + len(data)) // 2,
              "last byte": len(data) - 1}[where]
    bad = bytearray(pickled)
    bad[start + offset] ^= 0x01
    with pytest.raises(qruntime.FormatError):
        pickle.loads(bytes(bad))


def test_bytes_that_are_no_qnn_file_are_a_format_error(seed_cnn):
    q, _ = seed_cnn
    data = file_bytes(q)
    pickled = pickle.dumps(q)
    with pytest.raises(qruntime.FormatError, match="^header"):
        pickle.loads(pickled.replace(data, b"\0" * len(data)))


def test_an_explicit_isa_stays_behind_and_the_copy_runs_on_the_active_one(seed_cnn):
    q, x = seed_cnn
    scalar = Model(q.graph, q._tensors, isa="scalar")
    back = pickle.loads(pickle.dumps(scalar))
    shape = (1, 1, 28, 28)
    # Its convs and linears run on the active path (the note after the path names the kernel choice).
    paths = {k.split(" (")[0] for k in kernels(back, shape) if not k.startswith("c++")}
    assert paths and paths <= {f"{kind} {qruntime.isa()}" for kind in ("gemm", "winograd", "direct")}, paths
    assert kernels(back, shape) == kernels(q, shape)  # the active path, as a fresh Model or load() takes
    np.testing.assert_array_equal(back.run(x), scalar.run(x))  # every path gives the same bits


def test_max_activation_bytes_travels(seed_cnn):
    q, x = seed_cnn
    capped = Model(q.graph, q._tensors, max_activation_bytes=200_000)
    capped.run(x[:2])
    back = pickle.loads(pickle.dumps(capped))
    assert back.max_activation_bytes == 200_000
    back.run(x[:2])
    with pytest.raises(ValueError, match=r"more than max_activation_bytes \(200000 bytes\)"):
        back.run(x)  # the sender's cap, not this process's default of 4 GiB


def test_unpickling_needs_no_torch(seed_cnn, tmp_path):
    q, x = seed_cnn
    (tmp_path / "m.pkl").write_bytes(pickle.dumps(q))
    np.save(tmp_path / "x.npy", x)
    code = ("import sys; sys.modules['torch'] = None\n"  # as if torch were not installed: no re-quantizing
            "import pickle, numpy as np\n"
            f"m = pickle.loads(open({str(tmp_path / 'm.pkl')!r}, 'rb').read())\n"
            f"np.save({str(tmp_path / 'y.npy')!r}, m.run(np.load({str(tmp_path / 'x.npy')!r})))\n")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), q.run(x))
