"""The direct kernel for convs of few input channels (a network's first layer; docs/kernels.md,
"Convolution", the direct entry): on the paths that have it, the packer chooses it for a conv of one
group and dilation 1 with at most 4 input channels, kw * c <= 32 and kh <= 16, and its bytes equal the scalar
path's GEMM for every channel count, kernel size, stride, padding, output-channel tail and batch, on
adversarial data, and at every thread count."""
import numpy as np
import pytest

import qruntime
from conv_graphs import conv_chain
from qruntime import ops

# The paths with the kernel (dispatch.cc: KernelTable::direct_conv) and its limits
# (direct_conv_avx2.cc and direct_conv_words.h: kMaxChannels, kMaxRowBytes).
DIRECT_ISAS = ["avx2", "avx_vnni", "avx_vnni_evex", "avx_vnni_emulated", "avx512_vnni", "avx512_vnni_emulated"]
MAX_CHANNELS, MAX_ROW_BYTES = 4, 32


@pytest.fixture(params=DIRECT_ISAS)
def isa(request):
    """Every path with the direct kernel; one this machine (or build) lacks is reported skipped."""
    if request.param not in qruntime.available_isas(emulated=True):
        pytest.skip(f"ISA path {request.param} is not available on this host/build")
    return request.param


def _q(rng, oc, k, x_zp=None):
    return dict(x_scale=0.02, x_zp=int(rng.integers(0, 256)) if x_zp is None else x_zp,
                w_scale=(rng.uniform(0.5, 2.0, oc) * 0.01).astype(np.float32), bias=rng.normal(0, 1.0, oc).astype(np.float32),
                out_scale=float(0.02 * 0.01 * 127 * 128 * np.sqrt(k) / 64), out_zp=int(rng.integers(0, 256)))


def _both(x, w_q, q, isa, stride, padding, relu=False):
    packed = ops.pack_conv2d(w_q, isa=isa, stride=stride, dilation=1)
    assert packed.direct and packed.kernel_choice.startswith("direct:"), packed.kernel_choice
    got = ops.conv2d(x, w_q=packed, stride=stride, padding=padding, relu=relu, isa=isa, **q)
    want = ops.conv2d(x, w_q=w_q, stride=stride, padding=padding, relu=relu, isa="scalar", **q)
    return got, want


# (n, c, oc, kh, kw, h, w, stride, padding): the zoo's and torchvision's first layers (ResNet's 7x7
# stride 2 on 3 channels, MobileNet's 3x3 stride 2, the digits models' 1-channel 3x3s), every
# channel count, output-channel tails around each vector of 16 and block of 64, odd sizes, 1x1
# images, asymmetric padding, strides up to 4, rows of 1 to 32 bytes.
SHAPES = [
    (1, 3, 64, 7, 7, 45, 38, 2, 3), (1, 3, 32, 3, 3, 33, 31, 2, 1), (4, 1, 32, 3, 3, 28, 28, 1, 0),
    (3, 1, 16, 3, 3, 28, 28, 1, 1), (2, 2, 24, 3, 3, 9, 10, 1, 1), (2, 4, 8, 3, 3, 7, 7, 1, 1),
    (1, 3, 1, 3, 3, 6, 5, 1, 1), (1, 3, 15, 3, 3, 6, 5, 1, 0), (1, 3, 17, 5, 5, 11, 9, 2, 2),
    (1, 1, 31, 1, 1, 4, 4, 1, 0), (1, 1, 33, 2, 2, 5, 6, 1, 1), (1, 3, 48, 3, 3, 8, 8, 3, 1),
    (1, 3, 63, 3, 3, 8, 8, 1, 1), (1, 3, 65, 3, 3, 8, 8, 1, 1), (1, 3, 80, 3, 3, 5, 7, 1, 1),
    (1, 2, 130, 3, 3, 6, 6, 2, 1), (2, 3, 16, 3, 3, 1, 1, 1, 1), (1, 1, 16, 5, 5, 1, 1, 1, 2),
    (1, 4, 16, 1, 8, 9, 20, 1, (0, 3, 0, 4)), (1, 1, 16, 7, 1, 12, 3, 4, (3, 0, 2, 0)),
    (1, 1, 16, 3, 32, 5, 40, 2, (1, 7, 1, 9)), (1, 3, 20, 9, 9, 14, 14, 2, 4),
]


@pytest.mark.parametrize("n,c,oc,kh,kw,h,w,stride,padding", SHAPES)
def test_shapes_equal_scalar(rng, isa, n, c, oc, kh, kw, h, w, stride, padding):
    x = rng.integers(0, 256, (n, c, h, w), dtype=np.uint8)
    w_q = rng.integers(-127, 128, (oc, c, kh, kw), dtype=np.int8)
    got, want = _both(x, w_q, _q(rng, oc, c * kh * kw), isa, stride, padding, relu=bool(rng.integers(2)))
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("c,k", [(1, 3), (3, 3), (3, 7), (4, 8)])
@pytest.mark.parametrize("x_zp", [0, 255])
@pytest.mark.parametrize("sign", [1, -1, 0])
def test_adversarial_extremes(rng, isa, c, k, x_zp, sign):
    """All inputs 255 against weights of +-127 (sign 0: alternating), the padding at either extreme:
    the largest sums the kernel forms, and the padding's zero point against them."""
    oc = 40
    x = np.full((1, c, 12, 12), 255, np.uint8)
    if sign:
        w_q = np.full((oc, c, k, k), 127 * sign, np.int8)
    else:
        w_q = np.where(np.indices((oc, c, k, k)).sum(0) % 2 == 0, 127, -127).astype(np.int8)
    q = _q(rng, oc, c * k * k, x_zp=x_zp)
    q["out_scale"] = float(q["x_scale"] * 0.02 * 255 * 127 * c * k * k / 100)
    q["out_zp"] = 128
    got, want = _both(x, w_q, q, isa, 1, k // 2)
    np.testing.assert_array_equal(got, want)
    assert x_zp == 255 or sign == 0 or len(np.unique(want)) > 1


@pytest.mark.parametrize("n_threads", [1, 2, 3])
@pytest.mark.parametrize("n,h", [(1, 17), (3, 9), (5, 1)])
def test_threads_same_bytes(rng, threads, isa, n_threads, n, h):
    x = rng.integers(0, 256, (n, 3, h, h + 2), dtype=np.uint8)
    w_q = rng.integers(-127, 128, (40, 3, 3, 3), dtype=np.int8)
    qruntime.set_num_threads(n_threads)
    got, want = _both(x, w_q, _q(rng, 40, 27), isa, 1, 1)
    np.testing.assert_array_equal(got, want)


def test_what_the_packer_chooses(isa):
    def packed(c, kh, kw, groups=1, **geometry):
        return ops.pack_conv2d(np.ones((8 * groups, c, kh, kw), np.int8), groups=groups, isa=isa, **geometry)

    one = dict(stride=1, dilation=1)
    for c, kw in ((1, 1), (1, 3), (3, 7), (2, 16), (MAX_CHANNELS, MAX_ROW_BYTES // MAX_CHANNELS), (1, MAX_ROW_BYTES)):
        assert packed(c, 3, kw, **one).direct, (c, kw)
    assert packed(3, 7, 7, stride=2, dilation=1).direct
    # Not for: more channels, longer rows, groups, dilation, no geometry given, the scalar path.
    assert not packed(MAX_CHANNELS + 1, 3, 3, **one).direct
    assert not packed(1, 3, MAX_ROW_BYTES + 1, **one).direct
    assert not packed(3, 3, 11, **one).direct
    assert packed(1, 16, 3, **one).direct and not packed(1, 17, 3, **one).direct  # kernel rows: at most 16
    assert not packed(2, 3, 3, groups=2, **one).direct
    assert not packed(3, 3, 3, stride=1, dilation=2).direct
    assert not packed(3, 3, 3).direct
    assert not ops.pack_conv2d(np.ones((8, 3, 3, 3), np.int8), isa="scalar", stride=1, dilation=1).direct


def test_packed_weights_refuse_dilation(rng, isa):
    x = rng.integers(0, 256, (1, 3, 9, 9), dtype=np.uint8)
    w_q = rng.integers(-127, 128, (8, 3, 3, 3), dtype=np.int8)
    packed = ops.pack_conv2d(w_q, isa=isa, stride=1, dilation=1)
    with pytest.raises(ValueError, match="dilation 1 only"):
        ops.conv2d(x, w_q=packed, padding=2, dilation=2, isa=isa, **_q(rng, 8, 27))


def test_model_node_chooses_direct_and_equals_the_reference(rng, isa):
    """A model's first conv node (3 channels, 7x7, stride 2) packs for the direct kernel; the next one
    (16 channels) does not; the outputs equal the reference and the scalar path exactly."""
    from qruntime import reference
    from qruntime.model import Model

    graph, t = conv_chain(rng, 3, [("a", 16, 7, 2, 3, 1), ("b", 8, 3, 1, 1, 1)])
    model = Model(graph, t, isa=isa)
    for shape in [(1, 3, 1, 1), (2, 3, 15, 17), (1, 3, 32, 24)]:
        x = rng.normal(0, 1.0, shape).astype(np.float32)
        got = model.run(x)
        np.testing.assert_array_equal(got, reference.run_graph(graph, t, [x])[0])
        np.testing.assert_array_equal(got, Model(graph, t, isa="scalar").run(x))
    kernels = {r["name"]: r["kernel"] for r in model.profile(rng.normal(0, 1, (1, 3, 16, 16)).astype(np.float32), 1)}
    assert kernels["a"].startswith(f"direct {isa} (direct: 3-channel 7x7"), kernels["a"]
    assert not kernels["b"].startswith("direct"), kernels["b"]
