"""Bad input to every ops function raises TypeError/ValueError naming the op and the argument, before any
copy of a big array; nothing crashes."""
import tracemalloc

import numpy as np
import pytest

import qruntime
from qruntime import _limits, ops

U8 = np.zeros((4, 8), np.uint8)
W8 = np.ones((3, 8), np.int8)


def _linear(**over):
    args = dict(x_q=U8, x_scale=0.1, x_zp=3, w_q=W8, w_scale=0.05, bias=None, out_scale=0.2, out_zp=5)
    args.update(over)
    return ops.linear(**args)


LINEAR_CASES = [
    # (override, exception, the argument the message must name)
    (dict(x_q=U8.astype(np.int8)), TypeError, "x_q"),
    (dict(x_q=U8.astype(np.float32)), TypeError, "x_q"),
    (dict(x_q=[[1, 2]]), TypeError, "x_q"),
    (dict(x_q=np.zeros(8, np.uint8)), ValueError, "x_q"),
    (dict(x_q=np.zeros((2, 2, 8), np.uint8)), ValueError, "x_q"),
    (dict(x_q=np.zeros((4, 7), np.uint8)), ValueError, "x_q"),
    (dict(w_q=W8.astype(np.uint8)), TypeError, "w_q"),
    (dict(w_q=np.ones(8, np.int8)), ValueError, "w_q"),
    (dict(w_q=np.full((3, 8), -128, np.int8)), ValueError, "w_q"),
    (dict(w_q=np.ones((0, 8), np.int8)), ValueError, "w_q"),
    (dict(x_q=np.zeros((4, 0), np.uint8), w_q=np.ones((3, 0), np.int8)), ValueError, "w_q"),
    (dict(x_scale=0.0), ValueError, "x_scale"),
    (dict(x_scale=-1.0), ValueError, "x_scale"),
    (dict(x_scale=float("nan")), ValueError, "x_scale"),
    (dict(x_scale=float("inf")), ValueError, "x_scale"),
    (dict(x_scale=1e-60), ValueError, "x_scale"),
    (dict(x_scale="0.1"), TypeError, "x_scale"),
    (dict(out_scale=0), ValueError, "out_scale"),
    (dict(out_scale=float("nan")), ValueError, "out_scale"),
    (dict(x_zp=-1), ValueError, "x_zp"),
    (dict(x_zp=256), ValueError, "x_zp"),
    (dict(x_zp=1.5), TypeError, "x_zp"),
    (dict(out_zp=300), ValueError, "out_zp"),
    (dict(w_scale=np.ones(2, np.float32)), ValueError, "w_scale"),
    (dict(w_scale=np.ones((3, 1), np.float32)), ValueError, "w_scale"),
    (dict(w_scale=np.array([0.1, 0.0, 0.1], np.float32)), ValueError, "w_scale"),
    (dict(w_scale=np.array([0.1, np.nan, 0.1], np.float32)), ValueError, "w_scale"),
    (dict(w_scale=np.array([0.1, np.inf, 0.1], np.float32)), ValueError, "w_scale"),
    (dict(w_scale=np.ones(3, np.int32)), TypeError, "w_scale"),
    (dict(w_scale=-0.5), ValueError, "w_scale"),
    (dict(bias=np.ones(2, np.float32)), ValueError, "bias"),
    (dict(bias=np.array([0, np.nan, 0], np.float32)), ValueError, "bias"),
    (dict(bias=np.array([0, np.inf, 0], np.float32)), ValueError, "bias"),
    (dict(bias=np.ones(3, np.int64)), TypeError, "bias"),
    (dict(bias=[0.0, 0.0, 0.0]), TypeError, "bias"),
    (dict(relu=1), TypeError, "relu"),
]


@pytest.mark.parametrize("over,exc,name", LINEAR_CASES, ids=[f"{c[2]}-{i}" for i, c in enumerate(LINEAR_CASES)])
def test_linear_bad_input(over, exc, name):
    with pytest.raises(exc, match=f"^linear: .*{name}"):
        _linear(**over)


def test_linear_scale_product_out_of_float32_range():
    with pytest.raises(ValueError, match="scale"):
        _linear(x_scale=1e30, w_scale=1e30, out_scale=1e-30)


GEMM_CASES = [
    (dict(a=U8.astype(np.int16)), TypeError, "a"),
    (dict(a=np.zeros(8, np.uint8)), ValueError, "a"),
    (dict(a=np.zeros((4, 9), np.uint8)), ValueError, "a"),
    (dict(b=W8.astype(np.int32)), TypeError, "b"),
    (dict(b=np.zeros((3, 8, 1), np.int8)), ValueError, "b"),
    (dict(b=np.full((3, 8), -128, np.int8)), ValueError, "b"),
    (dict(b=np.ones((0, 8), np.int8)), ValueError, "b"),
    (dict(isa="sse9"), ValueError, "isa"),
    (dict(isa=3), TypeError, "isa"),
]


@pytest.mark.parametrize("over,exc,name", GEMM_CASES, ids=[f"{c[2]}-{i}" for i, c in enumerate(GEMM_CASES)])
def test_gemm_bad_input(over, exc, name):
    args = dict(a=U8, b=W8)
    args.update(over)
    isa = args.pop("isa", None)
    with pytest.raises(exc, match=f"^gemm_u8s8s32: .*{name}"):
        ops.gemm_u8s8s32(args["a"], args["b"], isa=isa)


def test_packed_weights_for_another_isa_rejected():
    w = ops.pack_weights(W8, isa="scalar")
    other = [i for i in qruntime.available_isas(emulated=True) if i != "scalar"]
    if other:
        with pytest.raises(ValueError, match="packed for"):
            ops.gemm_u8s8s32(U8, w, isa=other[0])
    np.testing.assert_array_equal(ops.gemm_u8s8s32(U8, w), np.zeros((4, 3), np.int32))


@pytest.mark.parametrize(
    "call,exc,name",
    [
        (lambda: ops.quantize(np.zeros(3, np.float64), 0.1, 0), TypeError, "quantize: x"),
        (lambda: ops.quantize(np.array([np.nan], np.float32), 0.1, 0), ValueError, "quantize: x"),
        (lambda: ops.quantize(np.array([np.inf], np.float32), 0.1, 0), ValueError, "quantize: x"),
        (lambda: ops.quantize(np.zeros(3, np.float32), 0.0, 0), ValueError, "quantize: scale"),
        (lambda: ops.quantize(np.zeros(3, np.float32), 0.1, 256), ValueError, "quantize: zero_point"),
        (lambda: ops.dequantize(np.zeros(3, np.int8), 0.1, 0), TypeError, "dequantize: q"),
        (lambda: ops.dequantize(np.zeros(3, np.uint8), -0.1, 0), ValueError, "dequantize: scale"),
        (lambda: ops.dequantize(np.zeros(3, np.uint8), 0.1, -3), ValueError, "dequantize: zero_point"),
    ],
)
def test_quantize_bad_input(call, exc, name):
    with pytest.raises(exc, match=f"^{name}"):
        call()


def test_zero_size_quantize_is_empty():
    assert ops.quantize(np.zeros((0, 3), np.float32), 0.1, 0).shape == (0, 3)


@pytest.mark.parametrize("bad,exc", [(0, ValueError), (-2, ValueError), (1.5, TypeError), ("2", TypeError)])
def test_set_num_threads_bad_input(bad, exc, threads):
    with pytest.raises(exc, match="n"):
        qruntime.set_num_threads(bad)


X4 = np.zeros((1, 4, 8, 8), np.uint8)
W4 = np.ones((6, 4, 3, 3), np.int8)


def _conv(**over):
    args = dict(x_q=X4, x_scale=0.1, x_zp=3, w_q=W4, w_scale=0.05, bias=None, out_scale=0.2, out_zp=5)
    args.update(over)
    return ops.conv2d(**args)


CONV_CASES = [
    (dict(x_q=X4.astype(np.int8)), TypeError, "x_q"),
    (dict(x_q=X4[0]), ValueError, "x_q"),
    (dict(x_q=np.zeros((1, 5, 8, 8), np.uint8)), ValueError, "channels"),
    (dict(x_q=np.zeros((1, 4, 0, 8), np.uint8)), ValueError, "x_q"),
    (dict(w_q=W4.astype(np.float32)), TypeError, "w_q"),
    (dict(w_q=W4[0]), ValueError, "w_q"),
    (dict(w_q=np.full((6, 4, 3, 3), -128, np.int8)), ValueError, "w_q"),
    (dict(w_q=np.ones((6, 4, 0, 3), np.int8)), ValueError, "w_q"),
    (dict(w_q=np.ones((6, 2, 3, 3), np.int8), groups=4), ValueError, "groups"),
    (dict(groups=0), ValueError, "groups"),
    (dict(groups=1.0), TypeError, "groups"),
    (dict(w_q=np.ones((6, 4, 9, 9), np.int8)), ValueError, "larger than the padded input"),
    (dict(stride=0), ValueError, "stride"),
    (dict(stride=(1, -1)), ValueError, "stride"),
    (dict(stride=(1, 2, 3)), TypeError, "stride"),
    (dict(dilation=0), ValueError, "dilation"),
    (dict(dilation=1.5), TypeError, "dilation"),
    (dict(padding=-1), ValueError, "padding"),
    (dict(padding=(1, 2, 3)), TypeError, "padding"),
    (dict(padding="same"), TypeError, "padding"),
    (dict(padding=2**31), ValueError, "padding"),
    (dict(stride=(1, 2**31)), ValueError, "stride.*2147483647"),
    (dict(dilation=2**31), ValueError, "dilation.*2147483647"),
    (dict(groups=2**31), ValueError, "groups.*2147483647"),
    (dict(padding=(0, 0, 0, 3)), ValueError, r"padding \(right\) is 3; at most dilation\*\(kernel-1\) = 2"),
    (dict(padding=(0, 3)), ValueError, r"padding \(left\) is 3"),
    (dict(padding=5, dilation=2), ValueError, r"padding \(top\) is 5; at most dilation\*\(kernel-1\) = 4"),
    (dict(w_scale=np.ones(5, np.float32)), ValueError, "w_scale"),
    (dict(w_scale=np.array([1, 1, 1, 0, 1, 1], np.float32)), ValueError, "w_scale"),
    (dict(bias=np.ones(5, np.float32)), ValueError, "bias"),
    (dict(bias=np.full(6, np.nan, np.float32)), ValueError, "bias"),
    (dict(x_scale=-1.0), ValueError, "x_scale"),
    (dict(out_zp=256), ValueError, "out_zp"),
    (dict(relu6="yes"), TypeError, "relu6"),
]


@pytest.mark.parametrize("over,exc,name", CONV_CASES, ids=[f"{c[2]}-{i}" for i, c in enumerate(CONV_CASES)])
def test_conv2d_bad_input(over, exc, name):
    with pytest.raises(exc, match=f"^conv2d: .*{name}"):
        _conv(**over)


def test_conv2d_k_limit():
    with pytest.raises(ValueError, match="^pack_conv2d: w_q .*65536"):
        ops.pack_conv2d(np.ones((1, 8000, 3, 3), np.int8))


def test_conv2d_padding_beyond_the_kernel_extent_is_rejected():
    """The C++ once cast this output size to int and returned shape (1, 4, 6, 8)."""
    x, w = np.zeros((1, 8, 10, 10), np.uint8), np.ones((4, 8, 3, 3), np.int8)
    msg = (r"^conv2d: padding \(top\) is 2147483647; at most dilation\*\(kernel-1\) = 2 "
           r"\(it must be smaller than the kernel's extent 3\)$")
    with pytest.raises(ValueError, match=msg):
        ops.conv2d(x, 0.1, 0, w, 0.1, None, 0.1, 0, padding=(2**31 - 1, 0, 2**31 - 1, 0))
    # At the bound every window still reads the input: accepted.
    assert ops.conv2d(x, 0.1, 0, w, 0.1, None, 0.1, 0, padding=(2, 0, 2, 0)).shape == (1, 4, 12, 8)


def _huge(dtype, shape):
    """A broadcast view of one element: free to make, far too big to copy. Each view below is at
    least 2**46 bytes (64 TiB), so a copy by mistake raises MemoryError at once instead of filling memory."""
    view = np.broadcast_to(np.zeros((), dtype), shape)
    assert view.nbytes >= 2**46
    return view


HUGE_X = _huge(np.uint8, (2**16, 4, 2**20, 2**20))  # NCHW, 4 channels as X4 and W4 expect
HUGE_POOL = _huge(np.uint8, (2**16, 2, 2**20, 2**20))
HUGE_X1 = _huge(np.uint8, (2**31 - 1, 1, 2**8, 2**8))  # one channel, for HUGE_W
HUGE_W = _huge(np.int8, (2**31 - 1, 1, 2**8, 2**8))  # conv weights of K = 65536, 1 input channel
HUGE_B = _huge(np.int8, (2**31 - 1, 2**16))  # linear weights of K = 65536
HUGE_A = _huge(np.uint8, (2**31 - 1, 2**16))  # activations of K = 65536


# (op, call, exception, what the message must name after "op: "): each call's big argument is a view
# that cannot be copied, so the error must come from the shapes alone.
HUGE_CASES = [
    ("conv2d", lambda: _conv(x_q=_huge(np.uint8, (2**16, 5, 2**20, 2**20))), ValueError, "channels"),
    ("conv2d", lambda: _conv(x_q=HUGE_X, padding=(0, 0, 3, 0)), ValueError, r"padding \(bottom\)"),
    ("conv2d", lambda: _conv(x_q=HUGE_X, stride=0), ValueError, "stride"),
    ("conv2d", lambda: _conv(x_q=HUGE_X, out_zp=256), ValueError, "out_zp"),
    ("conv2d", lambda: _conv(x_q=HUGE_X), ValueError, "output of shape"),
    ("conv2d", lambda: _conv(w_q=_huge(np.int8, (2**31 - 1, 2**20, 3, 3))), ValueError, "w_q .*65536"),
    ("conv2d", lambda: _conv(x_q=np.zeros((1, 5, 8, 8), np.uint8), w_q=HUGE_W), ValueError, "channels"),
    ("conv2d", lambda: _conv(x_q=np.zeros((1, 1, 8, 8), np.uint8), w_q=HUGE_W), ValueError, "larger than the padded"),
    ("conv2d", lambda: _conv(x_q=HUGE_X1, w_q=HUGE_W, w_scale=np.ones(5, np.float32)), ValueError, "w_scale"),
    ("conv2d", lambda: _conv(x_q=HUGE_X1, w_q=HUGE_W), ValueError, "output of shape"),
    ("pack_conv2d", lambda: ops.pack_conv2d(HUGE_W, groups=3), ValueError, "groups"),
    ("linear", lambda: _linear(x_q=_huge(np.uint8, (2**31 - 1, 2**31 - 1))), ValueError, "x_q has K"),
    ("linear", lambda: _linear(w_q=HUGE_B), ValueError, "x_q has K"),
    ("linear", lambda: _linear(x_q=HUGE_A, w_q=HUGE_B), ValueError, "output of shape"),
    ("linear", lambda: _linear(x_q=HUGE_A, w_q=HUGE_B, bias=np.ones(2, np.float32)), ValueError, "bias"),
    ("gemm_u8s8s32", lambda: ops.gemm_u8s8s32(HUGE_A, W8), ValueError, "a has K"),
    ("gemm_u8s8s32", lambda: ops.gemm_u8s8s32(U8, _huge(np.int8, (2**31 - 1, 2**31 - 1))), ValueError, "b has K"),
    ("gemm_u8s8s32", lambda: ops.gemm_u8s8s32(U8, HUGE_B), ValueError, "a has K"),
    ("gemm_u8s8s32", lambda: ops.gemm_u8s8s32(HUGE_A, HUGE_B, isa="sse9"), ValueError, "isa"),
    ("gemm_u8s8s32", lambda: ops.gemm_u8s8s32(HUGE_A, HUGE_B), ValueError, "output of shape"),
    ("pack_weights", lambda: ops.pack_weights(_huge(np.int8, (2**31 - 1, 2**17))), ValueError, "b has K"),
    ("max_pool2d", lambda: ops.max_pool2d(HUGE_POOL, 3, padding=2), ValueError, r"padding \(height\)"),
    ("max_pool2d", lambda: ops.max_pool2d(HUGE_POOL, 2**21), ValueError, r"kernel_size \(height\)"),
    ("max_pool2d", lambda: ops.max_pool2d(HUGE_POOL, 2, dilation=0), ValueError, "dilation"),
    ("max_pool2d", lambda: ops.max_pool2d(HUGE_POOL, 2), ValueError, "output of shape"),
    ("avg_pool2d", lambda: ops.avg_pool2d(HUGE_POOL, 0.1, 0, 4096), ValueError, "kernel_size .*8421504"),
    ("avg_pool2d", lambda: ops.avg_pool2d(HUGE_POOL, 0.1, 0, 2, divisor_override=0), ValueError, "divisor_override"),
    ("avg_pool2d", lambda: ops.avg_pool2d(HUGE_POOL, 0.1, 0, 2), ValueError, "output of shape"),
    ("adaptive_avg_pool2d", lambda: ops.adaptive_avg_pool2d(HUGE_POOL, 0.1, 0, 0), ValueError, "output_size"),
    ("adaptive_avg_pool2d", lambda: ops.adaptive_avg_pool2d(HUGE_POOL, 0.1, 0, 1), ValueError, "output_size .*8421504"),
    ("adaptive_avg_pool2d", lambda: ops.adaptive_avg_pool2d(HUGE_POOL, 0.1, 0, 2**10), ValueError, "output of shape"),
    ("add", lambda: ops.add(HUGE_X, 0.1, 0, np.zeros(7, np.uint8), 0.1, 0, 0.1, 0), ValueError, "b must"),
    ("add", lambda: ops.add(X4, 0.1, 0, HUGE_X, 0.1, 0, 0.1, 0), ValueError, "b must"),
    ("add", lambda: ops.add(HUGE_X, 0.1, 0, HUGE_X, 0.1, 0, 0.1, 300), ValueError, "out_zp"),
    ("add", lambda: ops.add(HUGE_X, 0.1, 0, np.zeros(4, np.uint8), 0.1, 0, 0.1, 0), ValueError, "output of shape"),
    ("concat", lambda: ops.concat([HUGE_X, X4], [0.1, 0.1], [0, 0], 0.1, 0), ValueError, r"arrays\[1\]"),
    ("concat", lambda: ops.concat([HUGE_X, HUGE_X], [0.1, 0.1], [0, 0], 0.1, 0, axis=4), ValueError, "axis"),
    ("concat", lambda: ops.concat([HUGE_X, HUGE_X], [0.1, 0.1], [0, 0], 0.1, 0), ValueError, "output of shape"),
    ("lut", lambda: ops.lut(HUGE_X, np.zeros(255, np.uint8)), ValueError, "table"),
    ("lut", lambda: ops.lut(HUGE_X, np.zeros(256, np.uint8)), ValueError, "output of shape"),
    ("quantize", lambda: ops.quantize(_huge(np.float32, (2**30, 2**30)), 0.0, 0), ValueError, "scale"),
    ("quantize", lambda: ops.quantize(_huge(np.float32, (2**30, 2**30)), 0.1, 0), ValueError, "output of shape"),
    ("dequantize", lambda: ops.dequantize(HUGE_X, 0.1, 300), ValueError, "zero_point"),
    ("dequantize", lambda: ops.dequantize(HUGE_X, 0.1, 0), ValueError, "output of shape"),
    # A dimension beyond int32 is refused by name, whatever the op.
    ("lut", lambda: ops.lut(_huge(np.uint8, (2**31, 2**16)), np.zeros(256, np.uint8)), ValueError,
     "x_q has dimension 0 of size 2147483648 .*at most 2147483647"),
    ("concat", lambda: ops.concat([_huge(np.uint8, (2**30 + 1, 2**17))] * 2, [0.1] * 2, [0] * 2, 0.1, 0, axis=0),
     ValueError, "output has dimension 0 of size 2147483650"),
]


@pytest.mark.parametrize("op,call,exc,name", HUGE_CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(HUGE_CASES)])
def test_shapes_are_checked_before_any_copy(op, call, exc, name):
    """A bad call with a huge view fails by name, with no copy: at most a few KiB traced, numpy's
    buffers included (the copy of any of these views would raise MemoryError instead)."""
    tracemalloc.start()
    try:
        with pytest.raises(exc, match=f"^{op}: .*{name}"):
            call()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 2**10, f"{peak} bytes allocated before the error"


def test_strided_view_is_checked_before_its_copy():
    """The same for an ordinary strided view (every second row of a real array): 16 MiB if copied."""
    base = np.zeros((2 * 4096, 4096), np.uint8)
    view = base[::2]
    assert not view.flags.c_contiguous
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="^linear: x_q has K = 4096"):
            _linear(x_q=view)
        with pytest.raises(ValueError, match="^gemm_u8s8s32: a has K = 4096"):
            ops.gemm_u8s8s32(view, W8)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 2**10, f"{peak} bytes allocated before the error"


LIMIT = 1000


@pytest.fixture
def small_activation_limit():
    """max_activation_bytes = LIMIT for one test; the default again after it."""
    _limits.set_max_activation_bytes(LIMIT)
    yield LIMIT
    _limits.set_max_activation_bytes(_limits.DEFAULT_MAX_ACTIVATION_BYTES)


# (op, call whose output takes more than LIMIT bytes, that output's shape, its bytes)
TOO_BIG_OUTPUTS = [
    ("quantize", lambda: ops.quantize(np.zeros(1001, np.float32), 0.1, 0), (1001,), 1001),
    ("dequantize", lambda: ops.dequantize(np.zeros(251, np.uint8), 0.1, 0), (251,), 1004),
    ("gemm_u8s8s32", lambda: ops.gemm_u8s8s32(np.zeros((84, 8), np.uint8), W8), (84, 3), 1008),
    ("linear", lambda: _linear(x_q=np.zeros((334, 8), np.uint8)), (334, 3), 1002),
    ("conv2d", lambda: _conv(x_q=np.zeros((1, 4, 16, 16), np.uint8)), (1, 6, 14, 14), 1176),
    ("max_pool2d", lambda: ops.max_pool2d(np.zeros((1, 1, 64, 64), np.uint8), 2), (1, 1, 32, 32), 1024),
    ("avg_pool2d", lambda: ops.avg_pool2d(np.zeros((1, 1, 64, 64), np.uint8), 0.1, 0, 2), (1, 1, 32, 32), 1024),
    ("adaptive_avg_pool2d", lambda: ops.adaptive_avg_pool2d(np.zeros((1, 1, 8, 8), np.uint8), 0.1, 0, 32),
     (1, 1, 32, 32), 1024),
    ("add", lambda: ops.add(np.zeros(1001, np.uint8), 0.1, 0, np.zeros(1, np.uint8), 0.1, 0, 0.1, 0), (1001,), 1001),
    ("concat", lambda: ops.concat([np.zeros(500, np.uint8), np.zeros(501, np.uint8)], [0.1] * 2, [0] * 2, 0.1, 0,
                                  axis=0), (1001,), 1001),
    ("lut", lambda: ops.lut(np.zeros((7, 143), np.uint8), np.zeros(256, np.uint8)), (7, 143), 1001),
]


@pytest.mark.parametrize("op,call,shape,nbytes", TOO_BIG_OUTPUTS, ids=[c[0] for c in TOO_BIG_OUTPUTS])
def test_output_larger_than_max_activation_bytes_is_refused(small_activation_limit, op, call, shape, nbytes):
    with pytest.raises(ValueError) as e:
        call()
    msg = str(e.value)
    assert msg.startswith(f"{op}: the output of shape {shape}"), msg
    assert f"{nbytes} bytes" in msg and f"max_activation_bytes = {LIMIT}" in msg, msg


def test_output_of_exactly_max_activation_bytes_is_allowed(small_activation_limit):
    assert ops.lut(np.zeros(LIMIT, np.uint8), np.arange(256, dtype=np.uint8)).shape == (LIMIT,)
    assert ops.dequantize(np.zeros(LIMIT // 4, np.uint8), 0.1, 0).shape == (LIMIT // 4,)


def test_max_activation_bytes_default_and_setting():
    assert _limits.get_max_activation_bytes() == _limits.DEFAULT_MAX_ACTIVATION_BYTES == 4 * 2**30
    for bad, exc in [(0, ValueError), (-1, ValueError), (1.5, TypeError), (True, TypeError), ("1", TypeError)]:
        with pytest.raises(exc, match="^set_max_activation_bytes: n "):
            _limits.set_max_activation_bytes(bad)
    assert _limits.get_max_activation_bytes() == _limits.DEFAULT_MAX_ACTIVATION_BYTES


# One bad argument per pooling / elementwise op (their full tables are in test_pool.py and
# test_eltwise.py): the message starts with the op's name, then names the argument.
OP_NAMED_CASES = [
    ("max_pool2d", lambda: ops.max_pool2d(X4, 2, ceil_mode=1), TypeError, "ceil_mode"),
    ("avg_pool2d", lambda: ops.avg_pool2d(X4, 0.1, 0, 2, divisor_override=2**31), ValueError, "divisor_override"),
    ("adaptive_avg_pool2d", lambda: ops.adaptive_avg_pool2d(X4, 0.1, 0, (2, "2")), TypeError, "output_size"),
    ("add", lambda: ops.add(X4, 0.1, 0, X4, 0.0, 0, 0.1, 0), ValueError, "b_scale"),
    ("add", lambda: ops.add(X4, 1e-30, 0, X4, 0.1, 0, 1e30, 0), ValueError, "scale"),  # raised in C++
    ("concat", lambda: ops.concat([X4, X4], [0.1], [0, 0], 0.1, 0), ValueError, "scales"),
    ("lut", lambda: ops.lut(X4, [0] * 256), TypeError, "table"),
    ("make_lut", lambda: ops.make_lut(np.tanh, 0.1, 0, 0.1, 256), ValueError, "out_zp"),
    ("pack_weights", lambda: ops.pack_weights(np.full((2, 2), -128, np.int8)), ValueError, "b"),
]


@pytest.mark.parametrize("op,call,exc,name", OP_NAMED_CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(OP_NAMED_CASES)])
def test_errors_name_the_op_and_the_argument(op, call, exc, name):
    with pytest.raises(exc, match=f"^{op}: .*{name}"):
        call()
