"""The avx2 path's depthwise kernels: tap quads on vpmaddubsw when every tap pair the kernel multiplies
has |w1| + |w2| <= 128, vpmaddwd on tap pairs otherwise; bits equal to scalar and to the reference either
way."""
import numpy as np
import pytest

import qruntime
from qruntime import ops, reference

pytestmark = pytest.mark.skipif("avx2" not in qruntime.available_isas(), reason="this host has no AVX2")

QUADS = "vpmaddubsw tap quads: every tap pair has |w1|+|w2| <= 128"
# Pairs the kernel multiplies are taps (2p, 2p + 1) of a channel; these sit exactly at the bound.
AT_BOUND = [(64, 64), (-64, -64), (127, 1), (-1, -127), (127, -1), (1, 127), (0, 127), (-127, 0)]


def _conv(x, w, isa, **kw):
    c = w.shape[0] // (w.shape[0] // x.shape[1])
    oc = w.shape[0]
    w_scale = np.full(oc, 0.004, np.float32)
    bias = np.linspace(-1, 1, oc).astype(np.float32)
    args = (x, 0.05, 7, w, w_scale, bias, 0.1, 120)
    return ops.conv2d(*args, groups=c, isa=isa, **kw), reference.conv2d(*args, groups=c, **kw)


def _check(x, w, **kw):
    """avx2 equals scalar and the reference; returns the depthwise kernel note."""
    got, want = _conv(x, w, "avx2", **kw)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got, _conv(x, w, "scalar", **kw)[0])
    return ops.pack_conv2d(w, groups=x.shape[1], isa="avx2").dw_kernel_choice


def _pairs_over(w):
    """Tap pairs (2p, 2p + 1) per channel with |w1| + |w2| > 128; an odd tap count's last tap pairs with 0."""
    t = np.abs(w.reshape(w.shape[0], -1).astype(np.int64))
    if t.shape[1] % 2:
        t = np.concatenate([t, np.zeros((t.shape[0], 1), np.int64)], axis=1)
    return int((t[:, 0::2] + t[:, 1::2] > 128).sum()), t.shape[0] * (t.shape[1] // 2)


@pytest.mark.parametrize("c", [32, 64, 96, 144, 48, 70])
@pytest.mark.parametrize("k,stride,pad,dilation", [(3, 1, 1, 1), (3, 2, 1, 1), (5, 1, 2, 1), (3, 1, 2, 2), (1, 1, 0, 1),
                                                   (2, 1, 0, 1)])
def test_seven_bit_weights_take_tap_quads(rng, c, k, stride, pad, dilation):
    x = rng.integers(0, 256, (2, c, 11, 13), dtype=np.uint8)
    w = rng.integers(-64, 65, (c, 1, k, k), dtype=np.int8)
    note = _check(x, w, stride=stride, padding=pad, dilation=dilation)
    tail = c % 32
    assert note == QUADS + (f"; {tail} tail channels on vpmaddwd" if tail else "")


# The last quad of taps holds 1, 2, 3 or 4 taps; 9 taps (3x3) has its own compiled loop.
@pytest.mark.parametrize("kh,kw", [(1, 2), (1, 3), (3, 1), (2, 3), (1, 5), (7, 1), (3, 5), (2, 4), (3, 3)])
def test_every_size_of_the_last_quad(rng, kh, kw):
    c = 64
    x = rng.integers(0, 256, (2, c, 9, 11), dtype=np.uint8)
    w = rng.integers(-64, 65, (c, 1, kh, kw), dtype=np.int8)
    w[:, 0, -1, -1] = np.where(np.arange(c) % 2, 64, -64)  # the last tap at its extremes
    assert _check(x, w, padding=(kh // 2, kw // 2)) == QUADS


@pytest.mark.parametrize("pair", AT_BOUND)
def test_every_pair_at_the_bound_is_exact(rng, pair):
    """Every pair at the bound and every activation 255 (and 0 around it): the int16 sums peak at +-32640."""
    c, k = 64, 3
    taps = np.resize(np.array(pair, np.int8), k * k)  # 9 taps: 4 pairs at the bound, the last with padding
    w = np.tile(taps, (c, 1)).reshape(c, 1, k, k)
    w[1::2] = -w[1::2]
    x = np.full((1, c, 9, 10), 255, np.uint8)
    x[:, :, 0, :] = 0
    assert _check(x, w, padding=1) == QUADS


def test_one_pair_over_the_bound_routes_the_layer_to_vpmaddwd(rng):
    c = 64
    w = rng.integers(-64, 65, (c, 1, 3, 3), dtype=np.int8)
    w[37, 0, 1, 0], w[37, 0, 1, 1] = 64, 65  # taps 3 and 4: a different pair each, both inside the bound
    assert _check(rng.integers(0, 256, (1, c, 8, 8), dtype=np.uint8), w, padding=1) == QUADS
    w[37, 0, 0, 2], w[37, 0, 1, 0] = 64, 65  # taps 2 and 3: one pair, one over the bound
    want = "vpmaddwd: 1 of %d tap pairs have |w1|+|w2| > 128" % (c * 5)
    assert _check(rng.integers(0, 256, (1, c, 8, 8), dtype=np.uint8), w, padding=1) == want


def test_full_range_weights_take_vpmaddwd(rng):
    c = 96
    w = rng.integers(-127, 128, (c, 1, 3, 3), dtype=np.int8)
    over, total = _pairs_over(w)
    assert _check(rng.integers(0, 256, (1, c, 12, 12), dtype=np.uint8), w, padding=1) == \
        f"vpmaddwd: {over} of {total} tap pairs have |w1|+|w2| > 128"


# Full-range weights: the vpmaddwd kernel on tap pairs (2u, 2u + 1), the last of an odd count with
# itself at weight 0; runs of 4 pixels and single pixels (borders, short rows) of whole 16-channel
# blocks, a channel tail on the plain layout. Every activation 255 and weights +-127 give each lane's
# largest pair sums.
@pytest.mark.parametrize("c", [16, 40, 96])
@pytest.mark.parametrize("kh,kw,stride,pad", [(3, 3, 1, 1), (3, 3, 2, 1), (1, 2, 1, 0), (2, 3, 1, 1), (5, 5, 1, 2),
                                              (7, 1, 2, (3, 0))])
def test_full_range_weights_on_tap_pairs(rng, c, kh, kw, stride, pad):
    x = rng.integers(0, 256, (2, c, 10, 13), dtype=np.uint8)
    x[1] = 255
    w = rng.integers(-127, 128, (c, 1, kh, kw), dtype=np.int8)
    w[:, 0, 0, 0] = np.where(np.arange(c) % 2, 127, -127)
    w[: c // 2, 0, -1, -1] = 127  # the last tap: of an odd count, paired with itself
    w[c // 2:, 0, -1, -1] = -127
    note = _check(x, w, stride=stride, padding=pad)
    assert note.startswith("vpmaddwd: "), note


def test_fewer_than_32_channels_stay_on_vpmaddwd(rng):
    w = rng.integers(-64, 65, (16, 1, 3, 3), dtype=np.int8)
    assert _check(rng.integers(0, 256, (1, 16, 8, 8), dtype=np.uint8), w, padding=1) == \
        "vpmaddwd: fewer than 32 channels"


def test_channel_multiplier_and_threads(rng, threads):
    """A channel multiplier of 2 (input expanded first) and 1-3 threads: the same bits."""
    x = rng.integers(0, 256, (3, 32, 15, 15), dtype=np.uint8)
    w = rng.integers(-64, 65, (64, 1, 3, 3), dtype=np.int8)
    w_scale = np.full(64, 0.004, np.float32)
    args = (x, 0.05, 7, w, w_scale, None, 0.1, 120)
    want = reference.conv2d(*args, groups=32, stride=2, padding=1)
    for n in (1, 2, 3):
        qruntime.set_num_threads(n)
        np.testing.assert_array_equal(ops.conv2d(*args, groups=32, stride=2, padding=1, isa="avx2"), want)
