"""quantize(min_sqnr=DB): the fewest, most sensitive layers go to float until the output SQNR on the
calibration data reaches DB; the model saves, loads and runs."""
import math

import numpy as np
import pytest

import qruntime
from qruntime import format as qnn_format
from test_convert import calibration, fp32_logits, sqnr_db

MODEL = "small_resnet"


@pytest.fixture(scope="module")
def setup(trained, digits):
    """(model, calibration batches, their stacked images, the all-int8 model's output SQNR on them)."""
    model, _ = trained(MODEL)
    batches = calibration(digits, batches=4)
    x = np.concatenate(batches)
    baseline = qruntime.quantize(model, batches, progress=False)
    return model, batches, x, sqnr_db(fp32_logits(model, x), baseline.run(x)), baseline


def calibration_sqnr(model, q, x):
    return sqnr_db(fp32_logits(model, x), q.run(x))


def test_reaches_the_target_with_no_layer_to_spare(setup):
    model, batches, x, baseline, _ = setup
    target = baseline + 3.0
    q = qruntime.quantize(model, batches, progress=False, min_sqnr=target)
    chosen = list(dict.fromkeys(q.float_ops()))  # a float add and its fused ReLU share the layer's name
    reached = calibration_sqnr(model, q, x)
    print(f"{MODEL}: all-int8 {baseline:.2f} dB; min_sqnr={target:.2f} -> {reached:.2f} dB with {chosen}")
    assert reached >= target
    assert 1 <= len(chosen) < len([op for op in q.graph["ops"] if op["op"] in ("conv2d", "conv2d_float")])
    assert "float islands" in q.summary(input_shape=(1, 1, 28, 28))
    for name in chosen:  # every float layer is needed: back in int8, the target is missed
        fewer = qruntime.quantize(model, batches, progress=False, keep_float=[n for n in chosen if n != name])
        assert calibration_sqnr(model, fewer, x) < target, f"{name} was not needed"


def test_a_target_already_met_changes_nothing(setup):
    model, batches, _, baseline, plain = setup
    q = qruntime.quantize(model, batches, progress=False, min_sqnr=baseline - 1.0)
    assert q.float_ops() == []
    assert qnn_format.to_bytes(q.graph, q._tensors) == qnn_format.to_bytes(plain.graph, plain._tensors)


def test_an_unreachable_target_warns_and_keeps_every_layer_it_can_in_float(setup):
    model, batches, x, _, _ = setup
    with pytest.warns(UserWarning, match=r"min_sqnr=300 dB not reached"):
        q = qruntime.quantize(model, batches, progress=False, min_sqnr=300)
    kinds = {op["op"] for op in q.graph["ops"]}
    assert "conv2d" not in kinds and "linear" not in kinds and "conv2d_float" in kinds
    # all but the input's quantization and the pooling in float: far above the all-int8 model
    assert calibration_sqnr(model, q, x) > setup[3] + 10.0


def test_the_mixed_model_saves_loads_and_runs(setup, tmp_path, digits):
    model, batches, _, baseline, _ = setup
    # without bias correction: the same search, and no correction run per try
    q = qruntime.quantize(model, batches, progress=False, min_sqnr=baseline, bias_correction=False)
    q.save(tmp_path / "mixed.qnn")
    loaded = qruntime.load(tmp_path / "mixed.qnn")
    assert loaded.float_ops() == q.float_ops() != []
    np.testing.assert_array_equal(loaded.run(digits[2]), q.run(digits[2]))


@pytest.mark.parametrize("bad", ["40", math.nan, math.inf, True, [30]])
def test_min_sqnr_must_be_a_finite_number(setup, bad):
    model, batches, _, _, _ = setup
    with pytest.raises(ValueError, match="min_sqnr"):
        qruntime.quantize(model, batches[:1], progress=False, min_sqnr=bad)
