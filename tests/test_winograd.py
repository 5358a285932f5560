"""Exact int8 Winograd (docs/quantization.md, "Winograd"): on the paths that have it, the packer
chooses it for 3x3 convs of one group at stride 1 (F(4x4, 3x3) up to 128 input channels, F(3x3, 3x3)
up to 256, F(2x2, 3x3) above, as far as each path takes them) and stride 2 (F(2x2, 3x3) over the
input's phases, avx2 only), and its bytes equal the scalar path's direct conv on every
ResNet-18/VGG layer shape, odd sizes, every padding, channel tails and chunks, the bounds' edges and
adversarial data (all-255 inputs against weights of +-127). Where a path does not take a layer, the
packer keeps the GEMM, and the test checks that and the bytes."""
from typing import NamedTuple, Optional, Tuple

import numpy as np
import pytest

import qruntime
from conv_graphs import conv_chain
from qruntime import ops


class Limits(NamedTuple):
    """The input channels each variant takes on a path (its unit's kMinChannels .. kS2MaxChannels)."""
    min: int
    max: int  # avx2: 255 * 127 * 9 * c < 2**29, the bound of F(2x2) and F(3x3)
    f4_max: int
    f3_max: int
    s2: Optional[Tuple[int, int]]


# The paths with a Winograd kernel (dispatch.cc: KernelTable::winograd): winograd_avx2.cc,
# winograd_avx512.cc (real and SIMDe builds) and winograd_avxvnni.cc (VEX, EVEX and SIMDe builds).
LIMITS = {"avx2": Limits(16, 1841, 128, 256, (32, 128)),
          **{isa: Limits(24, 256, 128, 256, None) for isa in ("avx512_vnni", "avx512_vnni_emulated", "avx_vnni",
                                                               "avx_vnni_evex", "avx_vnni_emulated")}}
F4_CHUNK = 114  # channels per F(4x4) chunk: 255 * 127 * 9 * 114 < 2**25 <= 255 * 127 * 9 * 116
S2_NAME = "F(2x2,3x3) on the stride-2 phases"


def _need(isa):
    if isa not in qruntime.available_isas(emulated=True):
        pytest.skip(f"ISA path {isa} is not available on this host/build")


@pytest.fixture(params=list(LIMITS))
def isa(request):
    """Every path with a Winograd kernel; one this machine (or build) lacks is reported skipped."""
    _need(request.param)
    return request.param


def _variant(isa, c, stride=1):
    """The variant `isa` runs c input channels with at this stride, or None (the GEMM)."""
    lim = LIMITS[isa]
    if stride == 2:
        return S2_NAME if lim.s2 and lim.s2[0] <= c <= lim.s2[1] else None
    if not lim.min <= c <= lim.max:
        return None
    return "F(4x4,3x3)" if c <= lim.f4_max else "F(3x3,3x3)" if c <= lim.f3_max else "F(2x2,3x3)"


def _cases(cases, stride_of=lambda case: case[1], c_of=lambda case: case[0]):
    """(isa, *case) for each path and each case it runs Winograd for (c_of, stride_of: the case's
    input channels and stride)."""
    return [pytest.param(isa, *case, id=f"{isa}-{'-'.join(map(str, case))}")
            for isa in LIMITS for case in cases if _variant(isa, c_of(case), stride_of(case))]


# (c, oc, h, w): ResNet-18's stride-1 3x3 layers at 224^2, VGG's channel steps on smaller inputs, odd sizes,
# channel tails (c or oc not a multiple of 16, odd c), one pixel wide or high.
SHAPES = [
    (64, 64, 56, 56), (128, 128, 28, 28), (256, 256, 14, 14), (512, 512, 7, 7),
    (64, 128, 16, 16), (128, 256, 12, 12), (256, 512, 6, 6), (3 * 8, 64, 32, 32), (128, 64, 9, 9),
    (16, 8, 1, 1), (16, 16, 1, 9), (17, 7, 7, 1), (17, 33, 5, 6), (31, 15, 11, 13), (48, 40, 3, 3), (65, 17, 2, 5),
    # F(4x4)'s channel chunks (one up to 114, two above), F(3x3) just past it and at its end, F(2x2)
    # just past that.
    (113, 20, 9, 11), (114, 16, 10, 10), (115, 24, 6, 7), (127, 33, 13, 5), (129, 17, 5, 9), (160, 40, 7, 7),
    (200, 24, 10, 11), (256, 17, 13, 8), (257, 20, 9, 10), (384, 48, 14, 14),
]


def _case(rng, c, oc, h, w, n=1, x_zp=None, x=None, weights=None):
    x = rng.integers(0, 256, (n, c, h, w), dtype=np.uint8) if x is None else x
    w_q = rng.integers(-127, 128, (oc, c, 3, 3), dtype=np.int8) if weights is None else weights
    w_scale = (rng.uniform(0.5, 2.0, oc) * 0.01).astype(np.float32)
    bias = rng.normal(0, 1.0, oc).astype(np.float32)
    out_scale = float(0.02 * 0.01 * 127 * 128 * np.sqrt(9 * c) / 64)
    zp = int(rng.integers(0, 256)) if x_zp is None else x_zp
    return x, w_q, dict(x_scale=0.02, x_zp=zp, w_scale=w_scale, bias=bias, out_scale=out_scale,
                        out_zp=int(rng.integers(0, 256)))


def _both(x, w_q, q, isa, padding=1, relu=False, stride=1):
    """(isa's bytes, scalar direct conv's bytes), with the packer's choice checked: the variant the
    path's limits give, or the GEMM."""
    packed = ops.pack_conv2d(w_q, isa=isa, stride=stride, dilation=1)
    variant = _variant(isa, w_q.shape[1], stride)
    if variant:
        assert packed.winograd and f"winograd {variant}:" in packed.kernel_choice, packed.kernel_choice
    else:
        assert not packed.winograd, packed.kernel_choice
    got = ops.conv2d(x, w_q=packed, padding=padding, stride=stride, relu=relu, isa=isa, **q)
    want = ops.conv2d(x, w_q=w_q, padding=padding, stride=stride, relu=relu, isa="scalar", **q)
    return got, want


# Stride 2: ResNet-18's stride-2 3x3 layers at 224^2 that take it, odd sizes, channel tails, both
# ends of the channel range.
SHAPES_STRIDE_2 = [
    (64, 128, 56, 56), (128, 256, 28, 28), (32, 64, 56, 56),
    (32, 16, 1, 1), (32, 8, 2, 3), (33, 33, 9, 8), (47, 15, 11, 13), (48, 40, 5, 5), (127, 20, 7, 9), (128, 24, 10, 6),
]


@pytest.mark.parametrize("c,oc,h,w", SHAPES)
def test_layer_shapes_equal_scalar(rng, isa, c, oc, h, w):
    x, w_q, q = _case(rng, c, oc, h, w, n=2 if h * w <= 256 else 1)
    got, want = _both(x, w_q, q, isa)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("isa,c,oc,h,w", _cases(SHAPES_STRIDE_2, stride_of=lambda case: 2))
def test_stride_2_layer_shapes_equal_scalar(rng, isa, c, oc, h, w):
    _need(isa)
    x, w_q, q = _case(rng, c, oc, h, w, n=2 if h * w <= 256 else 1)
    got, want = _both(x, w_q, q, isa, stride=2)
    np.testing.assert_array_equal(got, want)


# F(4x4), F(3x3), F(2x2), stride 2
@pytest.mark.parametrize("isa,c,stride", _cases([(24, 1), (136, 1), (264, 1), (40, 2)]))
@pytest.mark.parametrize("padding", [0, 1, 2, (0, 1, 2, 0), (2, 0, 1, 2), (1, 2, 0, 0)])
@pytest.mark.parametrize("hw", [(3, 3), (4, 4), (5, 5), (6, 6), (7, 10), (10, 7), (13, 13)])
def test_every_padding_and_odd_size(rng, isa, c, stride, padding, hw):
    _need(isa)
    x, w_q, q = _case(rng, c, 20, *hw, n=2)
    got, want = _both(x, w_q, q, isa, padding=padding, relu=bool(rng.integers(2)), stride=stride)
    np.testing.assert_array_equal(got, want)


# F(4x4) in 1 and 2 chunks, F(3x3), F(2x2), stride 2
@pytest.mark.parametrize("isa,c,stride", _cases([(114, 1), (128, 1), (256, 1), (300, 1), (128, 2)]))
@pytest.mark.parametrize("x_zp", [0, 255])
@pytest.mark.parametrize("sign", [1, -1, 0])
def test_adversarial_extremes(rng, isa, c, stride, x_zp, sign):
    """All inputs 255 against weights of +-127 (sign 0: alternating), with the padding at either
    extreme: the largest transformed values (F(2x2): |V| = 1020, |U'| = 1143; F(3x3), F(4x4): |U'| = 6223)
    and, at 114 channels, a chunk's sums within 1 % of F(4x4)'s bound (|acc| < 2**25)."""
    oc = 32
    x = np.full((1, c, 9, 9), 255, np.uint8)
    if sign:
        w_q = np.full((oc, c, 3, 3), 127 * sign, np.int8)
    else:
        w_q = np.where(np.indices((oc, c, 3, 3)).sum(0) % 2 == 0, 127, -127).astype(np.int8)
    x_, w_, q = _case(rng, c, oc, 9, 9, x_zp=x_zp, x=x, weights=w_q)
    # An output scale and zero point that keep the extremes off the clamp, so a wrong sum would show.
    q["out_scale"] = float(q["x_scale"] * 0.02 * 255 * 127 * 9 * c / 100)
    q["out_zp"] = 128
    _need(isa)
    got, want = _both(x_, w_, q, isa, stride=stride)
    np.testing.assert_array_equal(got, want)
    # With the padding at 0 the border's sums differ from the interior's (at 255 every input is the
    # zero point, but the raw sums the kernel adds are still the extremes).
    assert x_zp == 255 or sign == 0 or len(np.unique(want)) > 1


# The F(2x2, 3x3) transforms of docs/quantization.md, "Winograd", for the test's own check of its sums.
_BT = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]])
_G2 = np.array([[2, 0, 0], [1, 1, 1], [1, -1, 1], [0, 0, 2]])
_AT = np.array([[1, 1, 1, 0], [0, 1, -1, -1]])


@pytest.mark.parametrize("isa", [i for i in LIMITS if _variant(i, LIMITS[i].max) == "F(2x2,3x3)"])
def test_the_bound_edge(rng, isa):
    """F(2x2, 3x3): at the most channels Winograd takes, a tile whose sums M, and the output transform's partial
    sums, come within 0.1 % of 2**31 (the largest a search over 0/255 tiles and +-127 filters found)
    still comes out exact; one more channel and the packer keeps the direct GEMM."""
    _need(isa)
    c, oc = LIMITS[isa].max, 16
    tile = np.array([[0, 255, 255, 0], [255, 255, 255, 255], [255, 255, 255, 255], [0, 255, 255, 255]])
    x = np.broadcast_to(tile, (1, c, 4, 4)).astype(np.uint8)  # one tile: 4x4 in, 2x2 out, no padding
    w_q = np.full((oc, c, 3, 3), 127, np.int8)
    w_q[1::2] = -127
    m = c * (_BT @ tile @ _BT.T) * (_G2 @ np.full((3, 3), 127) @ _G2.T)
    peak = max(np.abs(m).max(), np.abs(_AT @ m).max(), np.abs(_AT @ m @ _AT.T).max())
    assert 0.999 * 2**31 < peak < 2**31
    x_, w_, q = _case(rng, c, oc, 4, 4, x_zp=0, x=x, weights=w_q)
    q["out_scale"] = float(q["x_scale"] * 0.02 * 255 * 127 * 9 * c / 100)
    got, want = _both(x_, w_, q, isa, padding=0)
    np.testing.assert_array_equal(got, want)
    assert len(np.unique(want)) > 1
    over = np.ones((oc, c + 1, 3, 3), np.int8)
    assert not ops.pack_conv2d(over, isa=isa, stride=1, dilation=1).winograd


def test_what_the_packer_chooses(isa):
    lim = LIMITS[isa]

    def chosen(c, stride=1, **kw):
        return ops.pack_conv2d(np.ones((16, c, 3, 3), np.int8), isa=isa, stride=stride, dilation=1, **kw)

    # Each variant's channel range, both ends, and the GEMM on either side.
    edges = [lim.min, lim.f4_max, lim.f4_max + 1, lim.f3_max, lim.f3_max + 1, lim.max]
    for c in sorted({c for c in edges if lim.min <= c <= lim.max}):
        packed = chosen(c)
        assert packed.winograd and f"winograd {_variant(isa, c)}: stride-1" in packed.kernel_choice, (c, packed.kernel_choice)
    assert "F(4x4,3x3)" in chosen(lim.min).kernel_choice
    assert not chosen(lim.min - 1).winograd
    assert not chosen(lim.max + 1).winograd
    if lim.s2:
        for c in lim.s2:
            assert f"winograd {S2_NAME}: stride-2" in chosen(c, 2).kernel_choice
        stride_2_gemm = (lim.s2[0] - 1, lim.s2[1] + 1, 512)
    else:
        stride_2_gemm = (lim.min, lim.max, 64)
    for c in stride_2_gemm:  # stride 2 outside its channel range (or on a path without it): the GEMM
        assert not chosen(c, 2).winograd
    # Not for: other strides or dilations, no geometry given, other kernel sizes, groups, the
    # scalar path.
    w = np.ones((16, 32, 3, 3), np.int8)
    assert not ops.pack_conv2d(w, isa=isa, stride=3, dilation=1).winograd
    assert not ops.pack_conv2d(w, isa=isa, stride=(1, 2), dilation=1).winograd
    assert not ops.pack_conv2d(w, isa=isa, stride=2, dilation=2).winograd
    assert not ops.pack_conv2d(w, isa=isa, stride=1, dilation=2).winograd
    assert not ops.pack_conv2d(w, isa=isa).winograd
    assert not ops.pack_conv2d(np.ones((16, 32, 5, 5), np.int8), isa=isa, stride=1, dilation=1).winograd
    assert not ops.pack_conv2d(np.ones((32, 16, 3, 3), np.int8), groups=2, isa=isa, stride=1, dilation=1).winograd
    assert not ops.pack_conv2d(w, isa="scalar", stride=1, dilation=1).winograd


def test_packed_for_one_stride_refuses_others(rng, isa):
    x, w_q, q = _case(rng, 32, 16, 8, 8)
    packed = ops.pack_conv2d(w_q, isa=isa, stride=1, dilation=1)
    with pytest.raises(ValueError, match="Winograd at stride 1"):
        ops.conv2d(x, w_q=packed, stride=2, padding=1, isa=isa, **q)
    with pytest.raises(ValueError, match="Winograd"):
        ops.conv2d(x, w_q=packed, dilation=2, padding=1, isa=isa, **q)
    packed = ops.pack_conv2d(w_q, isa=isa, stride=2, dilation=1)
    assert packed.winograd == bool(LIMITS[isa].s2)
    for kw in (dict(stride=1), dict(stride=(2, 1)), dict(stride=2, dilation=2)) if packed.winograd else ():
        with pytest.raises(ValueError, match="Winograd at stride 2"):
            ops.conv2d(x, w_q=packed, padding=1, isa=isa, **kw, **q)
    with pytest.raises(ValueError, match="together"):
        ops.pack_conv2d(w_q, isa=isa, stride=1)


@pytest.mark.parametrize("n_threads", [1, 2, 3])
@pytest.mark.parametrize("isa,c,oc,hw,n,stride", _cases([(64, 48, 15, 3, 1), (120, 40, 13, 2, 1), (200, 40, 11, 2, 1),
                                                         (300, 40, 9, 2, 1), (512, 500, 7, 1, 1), (257, 17, 5, 4, 1),
                                                         (64, 40, 15, 3, 2), (120, 33, 14, 2, 2), (40, 70, 12, 3, 1)],
                                                        stride_of=lambda case: case[4]))
def test_threads_same_bytes(rng, threads, n_threads, isa, c, oc, hw, n, stride):
    """Blocks and panel chunks split over the threads (F(4x4) in one and two channel chunks, F(3x3),
    stride 2); C > 256 runs position by position (a C tail, strips of 5 and of 4, a last
    panel of 4 or 1 channels); a partial last chunk of input channels, panels of 32 over 70."""
    _need(isa)
    x, w_q, q = _case(rng, c, oc, hw, hw, n=n)
    qruntime.set_num_threads(n_threads)
    got, want = _both(x, w_q, q, isa, stride=stride)
    np.testing.assert_array_equal(got, want)


def _model_graph(rng, c=32):
    """quantize -> 3x3 stride 1 -> 3x3 stride 2 -> 3x3 stride 1, dilation 2 (Winograd where the path has
    it, but the last: the GEMM) -> dequantize."""
    return conv_chain(rng, c, [("a", c, 3, 1, 1, 1), ("b", 24, 3, 2, 1, 1), ("d", 16, 3, 1, 2, 2)])


@pytest.mark.parametrize("isa,c", _cases([(32,), (144,), (272,)], stride_of=lambda case: 1))  # F(4x4), F(3x3), F(2x2)
def test_model_node_chooses_winograd_and_equals_the_reference(rng, isa, c):
    """A model's conv node packs for its own geometry: its stride-1 and (at up to 128 channels)
    stride-2 3x3 convs run Winograd, its dilated one the GEMM, and the outputs equal the reference
    and the scalar path exactly."""
    from qruntime import reference
    from qruntime.model import Model

    _need(isa)
    graph, tensors = _model_graph(rng, c)
    model = Model(graph, tensors, isa=isa)
    for shape in [(1, c, 1, 1), (2, c, 7, 9), (1, c, 20, 17)]:
        x = rng.normal(0, 1.0, shape).astype(np.float32)
        got = model.run(x)
        np.testing.assert_array_equal(got, reference.run_graph(graph, tensors, [x])[0])
        np.testing.assert_array_equal(got, Model(graph, tensors, isa="scalar").run(x))
    kernels = {r["name"]: r["kernel"] for r in model.profile(rng.normal(0, 1, (1, c, 8, 8)).astype(np.float32), 1)}
    assert kernels["a"].startswith(f"winograd {isa} (winograd {_variant(isa, c)}"), kernels["a"]
    if _variant(isa, c, 2):
        assert kernels["b"].startswith(f"winograd {isa} (winograd {_variant(isa, c, 2)}"), kernels["b"]
    else:
        assert kernels["b"].startswith(f"gemm {isa}"), kernels["b"]
    assert kernels["d"].startswith(f"gemm {isa}"), kernels["d"]
