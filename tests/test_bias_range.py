"""A layer whose input all but vanished and whose bias carries the output (GoogLeNet with random
weights returned all zeros): the converter widens the input's range so the bias fits int32 exactly."""
import numpy as np
import torch
import torch.nn as nn

import qruntime
from qruntime import reference


def test_bias_of_a_layer_with_vanishing_input_survives(any_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Linear(8 * 3 * 3, 10)).eval()
    with torch.no_grad():
        model[0].weight.mul_(1e-10)  # activations of ~1e-11 into the linear layer, as in GoogLeNet's inception5b
        model[0].bias.mul_(1e-10)
        model[4].bias.copy_(torch.linspace(-0.03, 0.03, 10))
    rng = np.random.default_rng(0)
    calib = [rng.uniform(-1, 1, (8, 3, 8, 8)).astype(np.float32) for _ in range(2)]
    q = qruntime.quantize(model, calib, progress=False)
    x = rng.uniform(-1, 1, (4, 3, 8, 8)).astype(np.float32)
    got = qruntime.Model(q.graph, q._tensors, isa=any_path).run(x)
    np.testing.assert_array_equal(got, reference.run_graph(q.graph, q._tensors, [x])[0])
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    assert np.abs(got).max() > 0.02  # was all zeros: the bias clamped to int32 and lost
    np.testing.assert_allclose(got, want, atol=0.03 / 127)  # within one output step of the float logits
    # The linear layer's input (behind the max pool and flatten that keep its quantization) was widened.
    fc = next(op for op in q.graph["ops"] if op["op"] == "linear")
    s_x = q.graph["values"][fc["inputs"][0]]["scale"]
    w_scale = q._tensors[fc["tensors"]["w_scale"]].astype(np.float64)
    b_q = np.abs(q._tensors[fc["tensors"]["bias"]]) / (s_x * w_scale)
    assert b_q.max() <= 2**31 - 1 - 255 * 127 * 72
