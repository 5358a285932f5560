"""Files and inputs that once crashed, hung or misled the engine (the hardening issue), and the limits
that now stop them: checked sizes, the activation cap, MemoryError messages that name the op."""
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import qruntime
from qruntime import format as qnn_format
from qruntime.model import Model

BIG = 2**31 - 1
HERE = str(Path(__file__).parent)  # for the subprocesses, which import this file's graph builders


def _u8(scale=0.05, zp=0):
    return {"dtype": "uint8", "scale": scale, "zero_point": zp}


def _op(kind, inputs, output, attrs=None, tensors=None):
    return {"op": kind, "name": output, "inputs": inputs, "outputs": [output], "attrs": attrs or {},
            "tensors": tensors or {}}


def _pool(kernel, stride, padding):
    return {"kernel": kernel, "stride": stride, "padding": padding, "dilation": [1, 1], "ceil_mode": False}


def uint8_chain(input_shape, *middle):
    """x -> quantize -> the `middle` ops (each (kind, attrs), uint8 -> uint8) -> dequantize."""
    values = {"x": {"dtype": "float32"}, "q": _u8(), "y": {"dtype": "float32"}}
    ops, last = [_op("quantize", ["x"], "q")], "q"
    for i, (kind, attrs) in enumerate(middle):
        values[f"v{i}"] = _u8()
        ops.append(_op(kind, [last], f"v{i}", attrs))
        last = f"v{i}"
    ops.append(_op("dequantize", [last], "y"))
    return {"inputs": [{"name": "x", "shape": input_shape}], "outputs": ["y"], "values": values, "ops": ops}


def run_isolated(code, timeout=120, memory_bytes=None):
    """Runs `code` in a fresh interpreter (under an address-space limit if given): a crash or a hang
    there fails this test instead of ending the test session. Returns the CompletedProcess."""
    prelude = ""
    if memory_bytes:
        prelude = f"import resource\nresource.setrlimit(resource.RLIMIT_AS, ({memory_bytes}, {memory_bytes}))\n"
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout)


# Item 1: output_size [2147437309, 1073764994] then a max pool of that kernel: the int64 element count
# wrapped, the buffer was sized at ~1.6 MB, and run() died with SIGSEGV.
WRAPPING = [("adaptive_avg_pool2d", {"output_size": [2147437309, 1073764994]}),
            ("max_pool2d", _pool([2147437309, 1073764994], [1, 1], [0, 0]))]


def test_wrapping_sizes_fail_at_load_when_the_input_size_is_fixed():
    graph = uint8_chain([-1, 3, 32, 32], *WRAPPING)
    data = qnn_format.to_bytes(graph, {})  # a valid file: every attribute is in range on its own
    with pytest.raises(qruntime.FormatError, match=r"op 'v0' \(adaptive_avg_pool2d\): its output "
                                                   r"\(1, 3, 2147437309, 1073764994\) would take \d+ bytes, "
                                                   r"more than max_activation_bytes \(4294967296 bytes\)"):
        Model(*qnn_format.from_bytes(data))


def test_wrapping_sizes_fail_at_run_when_the_input_size_is_free():
    result = run_isolated(f"""
        import sys; sys.path.insert(0, {HERE!r})
        import numpy as np
        from qruntime.model import Model
        from test_limits import uint8_chain, WRAPPING
        model = Model(uint8_chain([-1, 3, -1, -1], *WRAPPING), {{}})
        try:
            model.run(np.zeros((1, 3, 32, 32), np.float32))
        except ValueError as e:
            print("ValueError:", e)
    """)
    assert result.returncode == 0, result.stderr  # (it was -11, SIGSEGV)
    assert "ValueError: op 'v0' (adaptive_avg_pool2d): its output (1, 3, 2147437309, 1073764994) would take" in result.stdout


# Item 2: conv padding computed in int64 and cast to int: (2^31 - 1) on top and bottom gave a
# (1, 10) output; padding 2^20 made a 35 KB file take seconds and more than 1 GB.
@pytest.mark.parametrize("padding", [[BIG, 0, BIG, 0], [2**20] * 4, [0, 0, 0, 3]])
def test_conv_padding_of_a_kernel_extent_or_more_is_a_format_error(padding):
    graph = uint8_chain([-1, 8, 10, 10])
    graph["values"]["c"] = _u8()
    graph["ops"].insert(1, _op("conv2d", ["q"], "c", {"stride": [1, 1], "padding": padding, "dilation": [1, 1],
                                                       "groups": 1, "act": "none"},
                               {"weight": "w", "w_scale": "s"}))
    graph["ops"][2]["inputs"] = ["c"]
    tensors = {"w": np.ones((4, 8, 3, 3), np.int8), "s": np.full(4, 0.01, np.float32)}
    with pytest.raises(qruntime.FormatError, match=r"ops\[1\]\.attrs\.padding: \d+ on the \w+ is not smaller than "
                                                   r"the kernel's dilated extent 3"):
        qnn_format.validate(graph, tensors)


# Item 3: max pooling with kernel 2^31 - 1 and padding 2^30 - 1 passed validation and ran for minutes
# (every tap of every window was visited, in the image or not).
def test_a_huge_max_pool_window_costs_only_its_taps_inside_the_image():
    result = run_isolated(f"""
        import sys; sys.path.insert(0, {HERE!r})
        import numpy as np
        from qruntime.model import Model
        from test_limits import uint8_chain, _pool
        x = np.random.default_rng(0).uniform(-5, 5, (2, 3, 32, 32)).astype(np.float32)
        model = Model(uint8_chain([-1, 3, 32, 32], ("max_pool2d", _pool([{BIG}] * 2, [1, 1], [2**30 - 1] * 2))), {{}})
        y = model.run(x)
        # Every window covers the whole image: each output is its channel's maximum.
        q = np.clip(np.rint(x / np.float32(0.05)), 0, 255)
        want = np.broadcast_to(q.max(axis=(2, 3), keepdims=True) * np.float32(0.05), y.shape)
        print(y.shape, np.array_equal(y, want.astype(np.float32)))
    """, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["(2,", "3,", "32,", "32)", "True"]


# Item 5: a batch of 2,000,000 was copied to float32 and then died in std::bad_alloc, naming nothing.
def test_an_input_past_the_cap_is_refused_before_it_is_copied():
    model = Model(uint8_chain([-1, 1, 28, 28]), {})
    huge = np.broadcast_to(np.float64(0.0), (2_000_000, 1, 28, 28))  # a view: copying it would take 12.5 GB
    with pytest.raises(ValueError, match=r"input 'x' of shape \(2000000, 1, 28, 28\) takes 6272000000 bytes as "
                                         r"float32, more than max_activation_bytes \(4294967296 bytes\)"):
        model.run(huge)


def test_the_cap_is_per_model_and_names_the_op():
    graph = uint8_chain([-1, 3, -1, -1], ("adaptive_avg_pool2d", {"output_size": [64, 64]}))
    x = np.zeros((2, 3, 8, 8), np.float32)
    Model(graph, {}, max_activation_bytes=10**6).run(x)  # 2*3*64*64 bytes fit
    small = Model(graph, {}, max_activation_bytes=20000)
    with pytest.raises(ValueError, match=r"op 'v0' \(adaptive_avg_pool2d\): its output \(2, 3, 64, 64\) would take "
                                         r"24576 bytes, more than max_activation_bytes \(20000 bytes\)"):
        small.run(x)
    # The float output (98304 bytes) is the largest value; it and v0 (24576) are live together.
    with pytest.raises(ValueError, match=r"the activations of one run at input shape \(2, 3, 8, 8\) need 122880 "
                                         r"bytes, more than max_activation_bytes \(98304 bytes\)"):
        Model(graph, {}, max_activation_bytes=98304).run(x)  # each value fits, the arena does not


def test_the_default_cap_is_settable(tmp_path):
    graph = uint8_chain([-1, 3, 8, 8], ("adaptive_avg_pool2d", {"output_size": [64, 64]}))
    path = tmp_path / "m.qnn"
    qnn_format.write(path, graph, {})
    assert qruntime.get_max_activation_bytes() == 4 * 2**30
    try:
        qruntime.set_max_activation_bytes(1000)
        with pytest.raises(qruntime.FormatError, match="more than max_activation_bytes \\(1000 bytes\\)"):
            qruntime.load(path)  # fixed input size: planned (and refused) at load
        assert qruntime.load(path, max_activation_bytes=10**6).max_activation_bytes == 10**6
    finally:
        qruntime.set_max_activation_bytes(4 * 2**30)
    for bad, error in [(0, ValueError), (2**63, ValueError), (1.5, TypeError), (True, TypeError)]:
        with pytest.raises(error, match="max_activation_bytes|n must"):
            qruntime.load(path, max_activation_bytes=bad)
        with pytest.raises(error):
            qruntime.set_max_activation_bytes(bad)


def test_memory_error_names_what_could_not_be_allocated():
    # A 17 GB activation (1x1 pooled up to 2^17 x 2^17, then down again) under a 4 GiB address space.
    result = run_isolated(f"""
        import sys; sys.path.insert(0, {HERE!r})
        import numpy as np
        from qruntime.model import Model
        from test_limits import uint8_chain, _pool
        side = 2**17
        graph = uint8_chain([-1, 1, 1, 1], ("adaptive_avg_pool2d", {{"output_size": [side, side]}}),
                            ("max_pool2d", _pool([side, side], [side, side], [0, 0])))
        model = Model(graph, {{}}, max_activation_bytes=2**40)
        try:
            model.run(np.zeros((1, 1, 1, 1), np.float32))
        except MemoryError as e:
            print("MemoryError:", e)
    """, memory_bytes=4 * 2**30)
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"MemoryError: the activation arena of one run \((\d+) bytes\) could not be allocated\n",
                        result.stdout), result.stdout
    assert int(result.stdout.split("(")[1].split()[0]) >= 2**34  # the 2^17 x 2^17 value
