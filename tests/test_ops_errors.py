"""Bad input to every ops function raises TypeError/ValueError naming the argument; nothing crashes."""
import numpy as np
import pytest

import qruntime
from qruntime import ops

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
    with pytest.raises(exc, match=name):
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
    with pytest.raises(exc, match=name):
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
        (lambda: ops.quantize(np.zeros(3, np.float64), 0.1, 0), TypeError, "x"),
        (lambda: ops.quantize(np.array([np.nan], np.float32), 0.1, 0), ValueError, "x"),
        (lambda: ops.quantize(np.array([np.inf], np.float32), 0.1, 0), ValueError, "x"),
        (lambda: ops.quantize(np.zeros(3, np.float32), 0.0, 0), ValueError, "scale"),
        (lambda: ops.quantize(np.zeros(3, np.float32), 0.1, 256), ValueError, "zero_point"),
        (lambda: ops.dequantize(np.zeros(3, np.int8), 0.1, 0), TypeError, "q"),
        (lambda: ops.dequantize(np.zeros(3, np.uint8), -0.1, 0), ValueError, "scale"),
        (lambda: ops.dequantize(np.zeros(3, np.uint8), 0.1, -3), ValueError, "zero_point"),
    ],
)
def test_quantize_bad_input(call, exc, name):
    with pytest.raises(exc, match=name):
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
    with pytest.raises(exc, match=name):
        _conv(**over)


def test_conv2d_k_limit():
    with pytest.raises(ValueError, match="65536"):
        ops.pack_conv2d(np.ones((1, 8000, 3, 3), np.int8))
