"""qruntime.quantize end to end on models trained on real digits: accuracy for every observer, parity
with PyTorch's own int8, the engine against the graph interpreter, and the converter's errors."""
import copy
import inspect
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import qruntime
from qruntime import reference

MODELS = ("seed_cnn", "small_resnet", "small_mobilenetv2", "small_senet")  # global pooling, SE, residuals
METHODS = ("minmax", "percentile", "mse", "entropy")


def calibration(digits, batches=8, size=64):
    x_train = digits[0]
    return [x_train[i * size:(i + 1) * size] for i in range(batches)]


def sqnr_db(ref, approx):
    ref = np.asarray(ref, np.float64)
    err = ref - np.asarray(approx, np.float64)
    return 10 * np.log10(np.sum(ref ** 2) / max(np.sum(err ** 2), 1e-30))


def fp32_logits(model, x):
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def torch_int8(model, batches):
    """PyTorch's FX post-training quantization on the x86 engine (its default qconfig)."""
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    torch.backends.quantized.engine = "x86"
    prepared = prepare_fx(copy.deepcopy(model).eval(), get_default_qconfig_mapping("x86"),
                          example_inputs=(torch.from_numpy(batches[0][:1]),))
    with torch.no_grad():
        for b in batches:
            prepared(torch.from_numpy(b))
    return convert_fx(prepared)


@pytest.fixture(scope="module")
def quantized(trained, digits):
    """(name, method) -> the quantized Model, made once per module."""
    cache = {}

    def get(name, method="minmax"):
        if (name, method) not in cache:
            model, _ = trained(name)
            cache[name, method] = qruntime.quantize(model, calibration(digits), method=method, progress=False)
        return cache[name, method]

    return get


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", MODELS)
def test_accuracy_on_digits(name, method, trained, quantized, digits):
    model, fp32_acc = trained(name)
    x_test, y_test = digits[2], digits[3]
    ref = fp32_logits(model, x_test)
    got = quantized(name, method).run(x_test)
    int8_acc = 100 * np.mean(got.argmax(1) == y_test)
    agreement = 100 * np.mean(got.argmax(1) == ref.argmax(1))
    assert int8_acc >= fp32_acc - 1.0, f"{name}/{method}: int8 {int8_acc:.2f}% vs fp32 {fp32_acc:.2f}%"
    assert agreement >= 98.0, f"{name}/{method}: argmax agreement {agreement:.2f}%"


@pytest.mark.parametrize("name", MODELS)
def test_sqnr_not_below_torch_int8(name, trained, quantized, digits):
    model, _ = trained(name)
    x_test = digits[2]
    ref = fp32_logits(model, x_test)
    ours = sqnr_db(ref, quantized(name).run(x_test))
    with torch.no_grad():
        theirs = sqnr_db(ref, torch_int8(model, calibration(digits))(torch.from_numpy(x_test)).numpy())
    assert ours >= theirs - 1.0, f"{name}: qruntime {ours:.2f} dB, torch x86 int8 {theirs:.2f} dB"


@pytest.mark.parametrize("name", MODELS)
def test_engine_equals_the_graph_interpreter(name, quantized, digits, any_path):
    q = quantized(name)
    m = qruntime.Model(q.graph, q._tensors, isa=any_path)
    x = digits[2][:5]
    np.testing.assert_array_equal(m.run(x), reference.run_graph(q.graph, q._tensors, [x])[0])


def test_save_load_roundtrip_bytes_and_results(quantized, digits, tmp_path):
    q = quantized("small_resnet")
    first, second = tmp_path / "a.qnn", tmp_path / "b.qnn"
    q.save(first)
    loaded = qruntime.load(first)
    loaded.save(second)
    assert first.read_bytes() == second.read_bytes()
    np.testing.assert_array_equal(loaded.run(digits[2]), q.run(digits[2]))


def test_load_and_run_never_import_torch(quantized, digits, tmp_path):
    path = tmp_path / "m.qnn"
    quantized("seed_cnn").save(path)
    np.save(tmp_path / "x.npy", digits[2][:4])
    code = textwrap.dedent(f"""
        import sys, numpy as np, qruntime
        m = qruntime.load({str(path)!r})
        y = m.run(np.load({str(tmp_path / "x.npy")!r}))
        assert y.shape == (4, 10), y.shape
        print("torch" in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_torch_tensor_input_and_summary(quantized, digits):
    q = quantized("seed_cnn")
    x = digits[2][:3]
    np.testing.assert_array_equal(q.run(torch.from_numpy(x)), q.run(x))
    assert q.inputs == [{"name": "x", "shape": (None, 1, 28, 28), "dtype": "float32"}]
    text = q.summary()
    for layer in ("conv1", "conv2", "fc1", "fc2"):
        assert layer in text
    assert "10,616,832" in text  # conv2's MACs: 24*24*64 outputs of 32*3*3 products


def test_fully_convolutional_model_takes_any_size(trained, quantized, digits):
    q = quantized("small_resnet")  # global average pooling: no fixed spatial size
    assert q.inputs[0]["shape"] == (None, 1, None, None)
    model, _ = trained("small_resnet")
    x = np.ascontiguousarray(np.pad(digits[2][:4], ((0, 0), (0, 0), (2, 6), (4, 0))))
    ref = fp32_logits(model, x)
    got = q.run(x)
    assert got.shape == ref.shape
    assert sqnr_db(ref, got) > 15


def test_keep_float_runs_layers_in_float32(trained, digits):
    model, _ = trained("seed_cnn")
    q = qruntime.quantize(model, calibration(digits), keep_float=["conv1", "fc2"], progress=False)
    kinds = {op["name"]: op["op"] for op in q.graph["ops"] if op["name"] in ("conv1", "conv2", "fc1", "fc2")}
    assert kinds == {"conv1": "conv2d_float", "conv2": "conv2d", "fc1": "linear", "fc2": "linear_float"}
    x = digits[2]
    ref = fp32_logits(model, x)
    np.testing.assert_array_equal(q.run(x).argmax(1)[:50], ref.argmax(1)[:50])
    got_ref = reference.run_graph(q.graph, q._tensors, [x[:8]])[0]
    np.testing.assert_allclose(q.run(x[:8]), got_ref, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="'nope' is neither a module path nor a node name"):
        qruntime.quantize(model, calibration(digits), keep_float=["nope"], progress=False)


class _Unsupported(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, padding_mode="reflect"), nn.ReLU())
        self.rnn = nn.Sequential(nn.LSTM(4, 4))
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        x = torch.erf(self.features(x))
        x = self.rnn(x.mean((2, 3)).unsqueeze(0))[0][0]
        return self.head(x)


def test_unsupported_model_lists_every_node():
    with pytest.raises(qruntime.UnsupportedOpError) as info:
        qruntime.quantize(_Unsupported(), [np.zeros((2, 1, 8, 8), np.float32)], progress=False)
    msg = str(info.value)
    for what in ("reflect", "features.0", "erf", "LSTM", "rnn.0", "keep_float"):
        assert what in msg, f"{what!r} missing from: {msg}"
    # a function call is placed by its line in forward()
    line = inspect.getsourcelines(_Unsupported.forward)[1] + 1
    assert f"torch.erf at node 'erf' ({__file__}:{line})" in msg, msg


class _DataDependent(nn.Module):
    def forward(self, x):
        return x if x.sum() > 0 else -x


def test_untraceable_model_gets_a_clear_error():
    with pytest.raises(ValueError, match="torch.fx"):
        qruntime.quantize(_DataDependent(), [np.zeros((1, 1, 4, 4), np.float32)], progress=False)


class _Activations(nn.Module):
    """Every unary function the converter turns into a table, standalone BatchNorm, cat and mean."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.acts = nn.ModuleList([nn.Hardswish(), nn.Hardsigmoid(), nn.Sigmoid(), nn.Tanh(), nn.SiLU(), nn.GELU()])
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(88, 5)

    def forward(self, x):
        x = self.conv(x)
        y = self.bn(torch.relu(x))  # not foldable: a BatchNorm after a ReLU becomes a per-channel affine
        parts = [act(y) for act in self.acts] + [F.gelu(y, approximate="tanh")]
        z = self.pool(torch.cat(parts[:2], 1) + torch.cat(parts[2:4], 1))  # 16 channels, 4x4
        s = torch.cat([z.mean((2, 3)), parts[4].mean((2, 3)), parts[5].mean((2, 3)), parts[6].mean((2, 3)),
                       F.adaptive_avg_pool2d(z, 1).flatten(1), F.avg_pool2d(z, 2).mean((2, 3)),
                       F.hardtanh(z, -0.5, 0.5).mean((2, 3))], 1)
        return F.log_softmax(self.fc(s), 1)


def test_every_unary_function_and_layout_op(rng):
    torch.manual_seed(0)
    model = _Activations().eval()
    with torch.no_grad():
        model.bn.running_mean.uniform_(-0.5, 0.5)
        model.bn.running_var.uniform_(0.5, 2.0)
    data = [rng.normal(0, 1, (16, 3, 8, 8)).astype(np.float32) for _ in range(4)]
    q = qruntime.quantize(model, data, progress=False)
    ops = {op["op"] for op in q.graph["ops"]}
    assert {"lut", "concat", "add", "max_pool2d", "adaptive_avg_pool2d", "flatten", "log_softmax"} <= ops
    x = rng.normal(0, 1, (8, 3, 8, 8)).astype(np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    got = q.run(x)
    assert sqnr_db(ref, got) > 20
    np.testing.assert_allclose(got, reference.run_graph(q.graph, q._tensors, [x])[0], rtol=1e-5, atol=1e-5)


def test_calibration_data_forms(trained, digits):
    model, _ = trained("seed_cnn")
    x = digits[0][:128]
    y = digits[1][:128]
    forms = [
        [x[:64], x[64:]],                                        # numpy batches
        [torch.from_numpy(x[:64]), torch.from_numpy(x[64:])],   # tensors
        [(x[:64], y[:64]), (x[64:], y[64:])],                    # (x, y) pairs
        (b for b in [x[:64], x[64:]]),                           # a single-pass generator
    ]
    graphs = [qruntime.quantize(model, f, progress=False).graph for f in forms]
    assert all(g == graphs[0] for g in graphs[1:])
    with pytest.raises(ValueError, match="no batches"):
        qruntime.quantize(model, [], progress=False)
    with pytest.raises(ValueError, match="method"):
        qruntime.quantize(model, [x], method="median", progress=False)
    with pytest.raises(TypeError, match="calibration_data"):
        qruntime.quantize(model, 3, progress=False)
    with pytest.raises(ValueError, match="non-finite"):
        qruntime.quantize(model, [np.full_like(x[:4], np.nan)], progress=False)
    with pytest.raises(TypeError, match="torch.nn.Module"):
        qruntime.quantize(lambda t: t, [x], progress=False)


def test_user_model_is_untouched(trained, digits):
    model, _ = trained("small_resnet")
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    qruntime.quantize(model, calibration(digits, batches=2), progress=False)
    assert model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_seven_bit_weights(trained, digits):
    model, fp32_acc = trained("small_resnet")
    q = qruntime.quantize(model, calibration(digits), weight_bits=7, progress=False)
    assert q.graph["quantization"] == {"weight_bits": 7, "method": "minmax", "per_channel": True,
                                       "bias_correction": True}
    weights = [q._tensors[op["tensors"]["weight"]] for op in q.graph["ops"] if op["op"] in ("conv2d", "linear")]
    assert weights and all(np.abs(w.astype(int)).max() <= 64 for w in weights)
    assert max(np.abs(w.astype(int)).max() for w in weights) == 64
    x_test, y_test = digits[2], digits[3]
    assert 100 * np.mean(q.run(x_test).argmax(1) == y_test) >= fp32_acc - 1.0
    with pytest.raises(ValueError, match="weight_bits"):
        qruntime.quantize(model, calibration(digits), weight_bits=4, progress=False)
