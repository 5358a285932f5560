"""Calibration observers: known distributions, outliers, growing batches, one-sided data, errors."""
import math
import warnings

import numpy as np
import pytest

from qruntime.convert import observers
from qruntime.convert.observers import METHODS, make_observer


def qdq_mse(x, lo, hi):
    """Mean squared error of uint8 asymmetric quantize-dequantize of x with the clip range [lo, hi]."""
    x = np.asarray(x, dtype=np.float64)
    scale = (hi - lo) / 255
    zero_point = np.clip(np.rint(-lo / scale), 0, 255)
    q = np.clip(np.rint(x / scale) + zero_point, 0, 255)
    return float(np.mean(((q - zero_point) * scale - x) ** 2))


def observe(method, *batches, **options):
    observer = make_observer(method, **options)
    for batch in batches:
        observer.update(batch)
    return observer


def test_minmax_is_the_exact_running_min_and_max(rng):
    batches = [rng.normal(0, 1, (4, 3, 5, 5)).astype(np.float32) for _ in range(5)]
    lo, hi = observe("minmax", *batches).range()
    assert lo == min(b.min() for b in batches) and hi == max(b.max() for b in batches)


@pytest.mark.parametrize("distribution", ["uniform", "gaussian"])
@pytest.mark.parametrize("percentile", [99.99, 99.0])
def test_percentile_matches_numpy_within_a_bin(rng, distribution, percentile):
    x = rng.uniform(-2, 3, 400_000) if distribution == "uniform" else rng.normal(0.5, 1.5, 400_000)
    x = x.astype(np.float32)
    observer = observe("percentile", *np.array_split(x, 3), percentile=percentile)
    expected = np.percentile(x.astype(np.float64), [100 - percentile, percentile])
    np.testing.assert_allclose(observer.range(), expected, rtol=0, atol=observer.bin_width)


def test_percentile_default_is_99_99(rng):
    x = rng.normal(0, 1, 200_000).astype(np.float32)
    assert observe("percentile", x).range() == observe("percentile", x, percentile=99.99).range()


def outlier_data(rng):
    # The gaussian is wide enough to span some of the 2048 bins the outliers stretch the histogram to
    # (bin width ~5): a histogram cannot place a clip inside a bulk that fits in one bin. Two outliers
    # in 2e6 values: clipping them costs less squared error than the coarse scale keeping them needs.
    x = np.concatenate([rng.normal(0, 100, 2_000_000), [1e4, 1e4]]).astype(np.float32)
    rng.shuffle(x)
    return x


def test_outliers_are_clipped_by_all_but_minmax(rng):
    x = outlier_data(rng)
    batches = np.array_split(x, 4)
    ranges = {method: observe(method, *batches).range() for method in METHODS}
    assert ranges["minmax"][1] == 1e4
    assert ranges["percentile"][1] < 1000 and ranges["entropy"][1] < 1000
    assert ranges["mse"][1] < 5000
    errors = {method: qdq_mse(x, *r) for method, r in ranges.items()}
    assert errors["mse"] <= errors["minmax"]
    assert errors["mse"] == min(errors.values())


def test_mse_range_is_as_good_as_the_best_of_a_grid(rng):
    # skewed, two-sided: the best lo and hi differ, so both ends of the search matter
    x = np.concatenate([rng.normal(-0.1, 0.2, 20_000), rng.exponential(2, 20_000)]).astype(np.float32)
    lo, hi = observe("mse", x).range()
    grid_best = min(qdq_mse(x, g_lo, g_hi) for g_lo in np.linspace(x.min(), 0, 30)[:-1]
                    for g_hi in np.linspace(0, x.max(), 40)[1:])
    assert qdq_mse(x, lo, hi) <= grid_best * 1.001


def test_mse_range_is_its_own_grid(rng):
    # range() returns the ends of the scale / zero point grid it chose: the quantizer recovers them
    lo, hi = observe("mse", rng.normal(0.3, 1, 50_000).astype(np.float32)).range()
    scale = (hi - lo) / 255
    zero_point = -lo / scale
    assert abs(zero_point - round(zero_point)) < 1e-6


def test_squared_error_model_is_exact_for_values_spread_across_bins(rng):
    # The cost the mse search minimises, against the error measured on the data and on the model it
    # stands for: each bin's count spread evenly across the bin (the midpoint rule, nearly exact).
    x = rng.uniform(-1, 3, 500_000).astype(np.float32)
    histogram = observe("mse", x)._histogram
    edges, counts = histogram.edges(), histogram.counts.astype(np.int64)
    spread = np.concatenate([edges[i] + (np.arange(c) + 0.5) / c * histogram.width
                             for i, c in enumerate(counts) if c])
    cost = observers._SquaredError(histogram)
    for lo, hi in [(-1, 3), (-0.5, 2), (0, 3), (-0.2, 0.2), (-3, 5), (-1e-3, 1e-2)]:
        scale = (hi - lo) / 255
        zero_point = np.clip(np.rint(-lo / scale), 0, 255)
        grid_lo, grid_hi = -zero_point * scale, (255 - zero_point) * scale
        modelled = cost(np.array([scale]), np.array([zero_point]))[0] / x.size
        assert modelled == pytest.approx(qdq_mse(spread, grid_lo, grid_hi), rel=1e-4)
        assert modelled == pytest.approx(qdq_mse(x, grid_lo, grid_hi), rel=0.01)


@pytest.mark.parametrize("search", [observers._full_scan, observers._narrowing_search])
def test_coordinate_descent_reaches_the_minimum_of_a_coupled_cost(search):
    def cost(a, b):    # the best b depends on a and the other way round: one pass is not enough
        da, db = a - 700.0, b - 1500.0
        return da * da + db * db + 0.6 * da * db

    assert observers._coordinate_descent(cost, search, first=0, end=2048, zero=1000, min_bins=2) == (700, 1500)
    # data on one side: lo stays at the zero edge, hi is the best for it (1500 - 0.3 * 300)
    assert observers._coordinate_descent(cost, search, first=1000, end=2048, zero=1000, min_bins=2) == (1000, 1410)


def test_narrowing_search_finds_the_minimum_far_from_and_next_to_the_zero_edge():
    for best in (1234, 3, 2048):
        assert observers._narrowing_search(lambda c: (c - best) ** 2.0, 0, 2048, 0) == best
    assert observers._narrowing_search(lambda c: (c - 997) ** 2.0, 0, 1000, 1000) == 997


def direct_kl(counts, a, b):
    """KL(P || Q) of the bin range [a, b) written out bin by bin (the EntropyObserver definition)."""
    n = b - a
    p = counts[a:b].copy()
    p[0] += counts[:a].sum()
    p[-1] += counts[b:].sum()
    bounds = (np.arange(257) * n) // 256
    level = np.searchsorted(bounds, np.arange(n), side="right") - 1
    q = np.zeros(n)
    for lv in range(256):
        members = level == lv
        spread = members & (p > 0)
        if spread.any():
            q[spread] = counts[a:b][members].sum() / spread.sum()
    used = p > 0
    if not q[used].all():
        return math.inf
    p, q = p / p.sum(), q / q.sum()
    return float(np.sum(p[used] * np.log(p[used] / q[used])))


def test_kl_divergence_matches_a_direct_computation(rng):
    counts = rng.poisson(50, 2048).astype(np.float64)
    counts[rng.random(2048) < 0.3] = 0
    counts[[401, 402, 403, 1502]] = [0, 0, 7, 0]     # empty end bins, with and without mass in their level
    divergence = observers._KLDivergence(counts, 0)
    for a, b in [(0, 2048), (10, 900), (0, 256), (300, 1800), (5, 2000), (100, 102), (3, 200), (7, 300),
                 (402, 1600), (0, 403), (1, 1503)]:
        expected = direct_kl(counts, a, b)
        assert divergence(np.array([a]), np.array([b]))[0] == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_kl_divergence_is_infinite_when_q_has_no_mass_for_folded_outliers():
    counts = np.zeros(2048)
    counts[:100] = 10
    counts[2000] = 1
    assert observers._KLDivergence(counts, 0)(np.array([0]), np.array([1500]))[0] == math.inf


def test_entropy_keeps_the_range_of_data_without_outliers(rng):
    # clipping uniform data folds a spike into the end bins that Q cannot follow
    x = rng.uniform(-1, 4, 300_000).astype(np.float32)
    lo, hi = observe("entropy", x).range()
    assert lo < -0.95 and hi > 3.8


def test_entropy_on_post_relu_data_keeps_the_tail(rng):
    # half the values are exactly 0; they must not pull the range towards 0
    x = np.maximum(rng.normal(0, 1, 400_000), 0).astype(np.float32)
    lo, hi = observe("entropy", x).range()
    assert lo == 0.0 and hi > 3.0
    assert qdq_mse(x, lo, hi) < 2 * qdq_mse(x, 0.0, float(x.max()))


def test_growing_batches_give_the_range_of_one_batch(rng):
    # each batch 10x wider than the one before, so the histogram grows several times
    batches = [rng.normal(0.2 * scale, scale, 50_000).astype(np.float32) for scale in (0.01, 0.1, 1.0, 10.0)]
    whole = np.concatenate(batches)
    assert observe("minmax", *batches).range() == observe("minmax", whole).range()
    grown, single = observe("percentile", *batches), observe("percentile", whole)
    assert grown.bin_width > single.bin_width    # the histogram did grow
    np.testing.assert_allclose(grown.range(), single.range(), rtol=0, atol=grown.bin_width)


def test_grown_histogram_merges_counts_exactly(rng):
    batches = [rng.uniform(-scale, 2 * scale, 30_000).astype(np.float32) for scale in (1.0, 3.0, 50.0, 51.0)]
    histogram = observe("percentile", *batches)._histogram
    counts = histogram.counts
    assert counts.sum() == sum(b.size for b in batches)
    direct, _ = np.histogram(np.concatenate(batches).astype(np.float64), bins=histogram.edges())
    # binning in float32 may move a value that sits within ~1e-4 of a bin width of an edge
    assert np.abs(counts - direct).sum() <= 1e-3 * counts.sum()
    assert histogram.edges()[-histogram.start] == 0.0     # 0 stays a bin edge


@pytest.mark.parametrize("method", METHODS)
def test_range_includes_zero_for_one_sided_data(rng, method):
    post_relu = np.maximum(rng.normal(0, 1, 100_000), 0).astype(np.float32)
    positive = rng.uniform(2, 5, 100_000).astype(np.float32)
    negative = -rng.exponential(1, 100_000).astype(np.float32)
    for data in (post_relu, positive):
        lo, hi = observe(method, data).range()
        assert lo == 0.0 and 0.0 < hi <= data.max()
    lo, hi = observe(method, negative).range()
    assert negative.min() <= lo < 0.0 and hi == 0.0
    assert all(isinstance(v, float) for v in (lo, hi))


@pytest.mark.parametrize("method", METHODS)
def test_two_sided_range_straddles_zero(rng, method):
    x = rng.normal(1.0, 2.0, 100_000).astype(np.float32)
    lo, hi = observe(method, x).range()
    assert x.min() <= lo < 0.0 < hi <= x.max()


@pytest.mark.parametrize("method", METHODS)
def test_all_zero_data_gives_the_documented_range(method):
    observer = observe(method, np.zeros((2, 3), np.float32), np.zeros(5, np.float32))
    assert observer.range() == observers.ALL_ZERO_RANGE


@pytest.mark.parametrize("method", METHODS)
def test_zeros_first_then_data(rng, method):
    x = rng.uniform(0, 1, 10_000).astype(np.float32)
    lo, hi = observe(method, np.zeros(10_000, np.float32), x).range()
    assert lo == 0.0 and 0.5 < hi <= 1.0


@pytest.mark.parametrize("method", METHODS)
def test_torch_tensors_are_accepted(method):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    batches = [torch.randn(4, 8, 6, 6, requires_grad=True) * 2 for _ in range(3)]
    from_torch = observe(method, *batches).range()
    from_numpy = observe(method, *[b.detach().numpy() for b in batches]).range()
    assert from_torch == from_numpy


@pytest.mark.parametrize("method", ["minimax", "", None, "MSE"])
def test_unknown_method_is_rejected(method):
    with pytest.raises(ValueError, match="method") as error:
        make_observer(method)
    assert all(name in str(error.value) for name in METHODS)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("method", METHODS)
def test_non_finite_batch_is_rejected(rng, method, bad):
    observer = observe(method, rng.normal(0, 1, 100).astype(np.float32))
    batch = rng.normal(0, 1, 100).astype(np.float32)
    batch[17] = bad
    with pytest.raises(ValueError, match="non-finite"):
        observer.update(batch)


@pytest.mark.parametrize("method", METHODS)
def test_range_before_update_is_an_error(method):
    observer = make_observer(method)
    with pytest.raises(ValueError, match="update"):
        observer.range()
    observer.update(np.zeros(0, np.float32))    # an empty batch observes nothing
    with pytest.raises(ValueError, match="update"):
        observer.range()


def test_bad_percentile_is_rejected():
    for bad in (50, 100.5, -1):
        with pytest.raises(ValueError, match="percentile"):
            make_observer("percentile", percentile=bad)
    with pytest.raises(TypeError, match="percentile"):
        make_observer("percentile", percentile="99")


def pooled_features(rng):
    """What a global average pool gives a calibration run: few values (64 images x 64 channels), smooth, all
    positive, in 8 batches. Entropy once chose hi = 0.006 here, below 99.95 % of them."""
    return np.array_split(rng.gamma(2.0, 0.3, 64 * 64).astype(np.float32), 8)


def clustered(rng):
    return np.array_split(np.concatenate([rng.normal(0.1, 0.01, 5000), rng.normal(2.0, 0.05, 5000)])
                          .astype(np.float32), 4)


def spike_and_bulk(rng):
    spike = np.abs(rng.normal(0.01, 0.003, 9000))
    return np.array_split(np.concatenate([spike, rng.uniform(0.5, 2.4, 1000)]).astype(np.float32), 4)


@pytest.mark.parametrize("data", [pooled_features, clustered, spike_and_bulk, outlier_data])
@pytest.mark.parametrize("method", ["mse", "entropy"])
def test_search_based_ranges_clip_at_most_the_limit(rng, method, data):
    batches = data(rng)
    batches = batches if isinstance(batches, list) else np.array_split(batches, 4)
    observer = observe(method, *batches)
    lo, hi = observer.range()
    x = np.concatenate(batches)
    assert observer.share_outside(lo, hi) <= observers.CLIP_LIMIT
    # counted on the values themselves: the histogram's estimate may be off by the values of one bin per end
    one_bin = np.mean(np.abs(x - hi) < observer.bin_width) + np.mean(np.abs(x - lo) < observer.bin_width)
    assert np.mean((x < lo) | (x > hi)) <= observers.CLIP_LIMIT + one_bin


def test_entropy_after_global_pooling_keeps_the_bulk(rng):
    batches = pooled_features(rng)
    x = np.concatenate(batches)
    lo, hi = observe("entropy", *batches).range()
    assert lo == 0.0 and hi >= np.percentile(x, 99.0)


@pytest.mark.parametrize("method", ["percentile", "mse", "entropy"])
def test_share_outside_counts_the_values_outside(rng, method):
    x = rng.uniform(-1, 3, 200_000).astype(np.float32)
    observer = observe(method, x)
    width = observer.bin_width
    for lo, hi in [(-0.5, 2.0), (-1.0, 3.0), (0.0, 1.0), (-0.9 + width / 3, 2.5 + width / 7)]:
        # values spread evenly across each bin: exact up to sampling noise within the two end bins
        assert observer.share_outside(lo, hi) == pytest.approx(np.mean((x < lo) | (x > hi)), abs=2e-3)


def test_minmax_knows_only_that_its_own_range_clips_nothing(rng):
    observer = observe("minmax", rng.normal(0, 1, 1000).astype(np.float32))
    assert observer.share_outside(*observer.range()) == 0.0
    with pytest.raises(NotImplementedError, match="histogram"):
        observer.share_outside(-0.1, 0.1)


def test_a_range_that_clips_more_than_the_limit_is_reported(rng):
    from qruntime.convert.quantize import warn_clipping

    uniform = rng.uniform(0, 1, 100_000).astype(np.float32)
    chosen = {"narrow": observe("percentile", uniform, percentile=90), "default": observe("percentile", uniform),
              "entropy": observe("entropy", uniform)}
    ranges = {name: o.range() for name, o in chosen.items()}
    with pytest.warns(UserWarning, match=r"1 value\(s\) clip more than 1% .*narrow \(10\.\d%\)") as caught:
        warn_clipping(chosen, ranges, "percentile")
    assert "default" not in str(caught[0].message) and "entropy" not in str(caught[0].message)
    del chosen["narrow"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_clipping(chosen, ranges, "percentile")
