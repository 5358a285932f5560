"""Calibration observers: watch one activation batch by batch and choose its uint8 clip range [lo, hi].

`make_observer(method)` returns one of four observers. Each sees the calibration data once, a batch
at a time (`update(x)`), and `range()` returns floats lo <= 0 <= hi with lo < hi: the range always
holds 0 because uint8 asymmetric quantization represents 0 exactly (its zero point), and ReLU,
padding and max-pool rely on that.

- minmax      the running min and max.
- percentile  the (100 - p, p) percentiles (p = 99.99 by default) of everything seen.
- mse         the range whose uint8 quantization (256 levels, zero point rounded) has the least
              expected squared error over the values seen, clipping and rounding error both.
- entropy     TensorRT's calibration: the range whose 256-level quantization of the clipped
              histogram is closest in KL divergence to the clipped reference distribution.

The last three keep a 2048-bin histogram (`_GrowingHistogram`), never the values themselves.
Numpy only; torch tensors are accepted by `update` and converted.

No choice may clip much: mse and entropy search only ranges that clip at most CLIP_LIMIT (1 %) of the
values seen (read off the histogram, values spread evenly across each bin). Without that bound, entropy
on the few, smooth values after a global pool chose a range holding almost none of them (every pooled
feature saturated, every input gave the same logits). `share_outside(lo, hi)` gives the share a range clips;
qruntime.quantize warns about any layer above the limit (only a percentile below 99.5 can get there).
"""
import math
import numbers

import numpy as np

METHODS = ("minmax", "percentile", "mse", "entropy")

BINS = 2048      # histogram resolution, as in TensorRT's entropy calibration
LEVELS = 256     # uint8
CLIP_LIMIT = 0.01  # the largest share of a layer's calibration values a search-based range may clip
# The range reported when every value seen was exactly 0. It must not be tiny: the next layer
# quantizes its bias at scale s_x * s_w, and with s_x = 1e-8 / 255 any ordinary bias overflows int32
# and would be clamped to a wrong value. Scale 1/255 keeps that layer exact (its input is all zero point).
ALL_ZERO_RANGE = (0.0, 1.0)
_CHUNK = 1 << 20   # values binned per numpy call: bounds the temporaries to a few MB


def make_observer(method, **options):
    """A fresh observer for `method` (one of METHODS); `options` go to its constructor (percentile=...)."""
    observer_class = _OBSERVERS.get(method) if isinstance(method, str) else None
    if observer_class is None:
        raise ValueError(f"method must be one of {', '.join(repr(m) for m in METHODS)}; got {method!r}")
    return observer_class(**options)


def _as_float32(x):
    return np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x, dtype=np.float32)


class Observer:
    """Tracks the exact min and max of all values seen; subclasses choose the clip range from their own state."""

    def __init__(self):
        self._min = None
        self._max = None

    def update(self, x):
        """Observe one calibration batch `x` (numpy array or torch tensor, any shape)."""
        values = _as_float32(x).reshape(-1)
        if values.size == 0:    # an empty batch carries no information about the range
            return
        lo, hi = float(values.min()), float(values.max())   # min/max propagate NaN
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise ValueError("x: the calibration data holds non-finite values (NaN or inf)")
        self._min = lo if self._min is None else min(self._min, lo)
        self._max = hi if self._max is None else max(self._max, hi)
        self._observe(values, lo, hi)

    def range(self):
        """(lo, hi) floats with lo <= 0 <= hi and lo < hi; ALL_ZERO_RANGE if every value seen was 0."""
        if self._min is None:
            raise ValueError("range(): no calibration data observed yet; call update() with a non-empty batch first")
        full_lo, full_hi = min(self._min, 0.0), max(self._max, 0.0)
        if full_lo == full_hi:
            return ALL_ZERO_RANGE
        lo, hi = self._choose_range()
        lo, hi = min(lo, 0.0), max(hi, 0.0)
        if not lo < hi:   # a clip range collapsed onto 0 (all but a sliver of the data is 0): keep everything
            lo, hi = full_lo, full_hi
        return float(lo), float(hi)

    def _observe(self, values, lo, hi):
        """Subclasses record the batch; `values` is flat float32 and finite, lo/hi its min/max."""

    def _choose_range(self):
        return self._min, self._max

    def share_outside(self, lo, hi):
        """The share of the values seen that lie outside [lo, hi] (within a bin for the histogram observers).
        Only the histogram observers keep more than the min and max: minmax's own range clips nothing."""
        if lo <= self._min and hi >= self._max:
            return 0.0
        raise NotImplementedError("minmax keeps no histogram: it knows only that a range holding every value clips none")


class MinMaxObserver(Observer):
    """The running min and max: nothing is clipped."""


class _GrowingHistogram:
    """BINS equal bins whose edges are integer multiples of `width`, covering 0 and every value seen.

    Bin i spans [(start + i) * width, (start + i + 1) * width), so 0 is always an edge (at bin index
    -start). Growing: when a batch falls outside the covered range, the width is multiplied by the
    smallest integer f that lets BINS bins, still aligned to multiples of the new width, cover the old
    range and the batch. Old bin k (absolute index start + i) then lies wholly inside new bin
    floor(k / f), so re-binning merges counts exactly, with no interpolation or guessing. The price:
    after a growth the data may fill only about half of the bins.
    """

    def __init__(self):
        self.width = None         # None until a batch that is not all zeros fixes the scale
        self.start = 0
        self.counts = np.zeros(BINS)
        self._zeros_before_width = 0

    def add(self, values, lo, hi):
        lo, hi = min(lo, 0.0), max(hi, 0.0)
        if self.width is None:
            if lo == hi:          # all zeros: no scale to build bins on yet; counted once there is
                self._zeros_before_width += values.size
                return
            self.width = (hi - lo) / BINS
            self.start, end = _cover(lo, hi, self.width)
            while end - self.start > BINS:   # float rounding put one edge a hair outside: widen slightly
                self.width *= 1 + 1 / BINS
                self.start, end = _cover(lo, hi, self.width)
            self.counts[min(-self.start, BINS - 1)] += self._zeros_before_width
        elif lo < self.start * self.width or hi > (self.start + BINS) * self.width:
            self._grow(lo, hi)
        self._count(values)

    def edges(self):
        return (self.start + np.arange(BINS + 1)) * self.width

    def _grow(self, lo, hi):
        lo = min(lo, self.start * self.width)
        hi = max(hi, (self.start + BINS) * self.width)
        factor = max(2, math.ceil((hi - lo) / (BINS * self.width)))
        while True:
            start, end = _cover(lo, hi, self.width * factor)
            start = min(start, self.start // factor)                 # and hold every merged old bin
            end = max(end, -(-(self.start + BINS) // factor))
            if end - start <= BINS:
                break
            factor += 1
        old_bins = self.start + np.arange(BINS)
        self.counts = np.bincount(old_bins // factor - start, weights=self.counts, minlength=BINS)
        self.width *= factor
        self.start = start

    def _count(self, values):
        inverse_width = np.float32(1.0 / self.width)
        start = np.float32(self.start)
        for i in range(0, values.size, _CHUNK):
            position = values[i:i + _CHUNK] * inverse_width
            position -= start
            # float32 rounding can put an edge value a hair outside [0, BINS): it belongs to the end bin
            np.clip(position, 0, BINS - 1, out=position)
            self.counts += np.bincount(position.astype(np.intp), minlength=BINS)


def _cover(lo, hi, width):
    """Integer (start, end) with start * width <= lo and end * width >= hi, as few bins as float allows."""
    start, end = math.floor(lo / width), math.ceil(hi / width)
    if start * width > lo:
        start -= 1
    if end * width < hi:
        end += 1
    return start, end


class _HistogramObserver(Observer):
    def __init__(self):
        super().__init__()
        self._histogram = _GrowingHistogram()

    @property
    def bin_width(self):
        """The histogram's current bin width (None before data that is not all zeros): the resolution of range()."""
        return self._histogram.width

    def _observe(self, values, lo, hi):
        self._histogram.add(values, lo, hi)

    def _data_bins(self):
        """Bin indices (first, end, zero): the occupied bins widened to hold the zero edge, and that edge."""
        nonzero = np.flatnonzero(self._histogram.counts)
        zero = -self._histogram.start
        return min(int(nonzero[0]), zero), max(int(nonzero[-1]) + 1, zero), zero

    def share_outside(self, lo, hi):
        # each bin's values taken as spread evenly across it, as everywhere else in these observers
        histogram = self._histogram
        edges = histogram.edges()
        below = np.clip((lo - edges[:-1]) / histogram.width, 0.0, 1.0)
        above = np.clip((edges[1:] - hi) / histogram.width, 0.0, 1.0)
        return float(np.sum(histogram.counts * (below + above)) / max(np.sum(histogram.counts), 1.0))

    def _within_clip_limit(self, cost):
        """cost(a_array, b_array) with every candidate bin range [a, b) that clips more than CLIP_LIMIT of
        the values seen made infinite. The whole data range clips nothing, so a search always has a choice."""
        counts = self._histogram.counts
        cumulative = np.concatenate(([0.0], np.cumsum(counts)))
        allowed = CLIP_LIMIT * cumulative[-1]

        def limited(a, b):
            clipped = cumulative[a] + (cumulative[-1] - cumulative[b])
            return np.where(clipped <= allowed, cost(a, b), np.inf)
        return limited


class PercentileObserver(_HistogramObserver):
    """Clips at the (100 - p, p) percentiles of everything seen, read off the histogram to within a bin."""

    def __init__(self, percentile=99.99):
        super().__init__()
        if isinstance(percentile, bool) or not isinstance(percentile, numbers.Real):
            raise TypeError(f"percentile must be a real number; got {type(percentile).__name__}")
        if not 50 < percentile <= 100:
            raise ValueError(f"percentile must be in (50, 100]; got {percentile!r}")
        self.percentile = float(percentile)

    def _choose_range(self):
        counts = self._histogram.counts
        cumulative = np.cumsum(counts)
        last_rank = cumulative[-1] - 1
        lo = self._quantile(cumulative, (100 - self.percentile) / 100 * last_rank)
        hi = self._quantile(cumulative, self.percentile / 100 * last_rank)
        return max(lo, self._min), min(hi, self._max)

    def _quantile(self, cumulative, rank):
        """The value of sorted rank `rank` (np.percentile's linear rank), taking each bin's values as
        spread evenly across it: value k of a bin holding c sits (k + 0.5) / c of the way through."""
        target = rank + 0.5
        i = min(int(np.searchsorted(cumulative, target, side="right")), BINS - 1)
        count = self._histogram.counts[i]
        before = cumulative[i] - count
        return (self._histogram.start + i + (target - before) / count) * self._histogram.width


class MSEObserver(_HistogramObserver):
    """The range whose uint8 quantize-dequantize has the least expected squared error over the histogram.

    A candidate clip range [lo, hi] becomes scale s = (hi - lo) / 255 and zero point zp =
    round(-lo / s) in [0, 255], i.e. the grid {(q - zp) * s : q = 0..255}, exactly as the quantizer
    will build it. Its cost is the squared error summed over the histogram, each bin's values taken
    as spread evenly across the bin: every value goes to its nearest grid point, so the cost counts
    rounding error inside the grid and clipping error beyond its ends alike (`_SquaredError`).
    Candidates have bin edges as ends. The search is coordinate descent: the best hi for the current
    lo, then the best lo for that hi, until neither moves (one pass for one-sided data); each 1-D
    search narrows in from a coarse scan (`_narrowing_search`). range() returns the chosen grid's own
    ends (-zp * s, (255 - zp) * s), so the quantizer recovers the same scale and zero point.
    """

    def _choose_range(self):
        edges = self._histogram.edges()
        full_lo, full_hi = min(self._min, 0.0), max(self._max, 0.0)
        squared_error = _SquaredError(self._histogram)

        def grid(a, b):
            lo = np.maximum(edges[a], full_lo)
            hi = np.minimum(edges[b], full_hi)
            scale = (hi - lo) / (LEVELS - 1)
            return scale, np.clip(np.rint(-lo / scale), 0, LEVELS - 1)

        a, b = _coordinate_descent(self._within_clip_limit(lambda a, b: squared_error(*grid(a, b))),
                                   _narrowing_search, *self._data_bins(), min_bins=1)
        scale, zero_point = grid(np.array([a]), np.array([b]))
        # + 0.0 turns the -0.0 of zero_point 0 into 0.0
        return float(-zero_point[0] * scale[0] + 0.0), float((LEVELS - 1 - zero_point[0]) * scale[0])


class _SquaredError:
    """Total squared error of uint8 grids (scale[k], zero_point[k]) over a histogram, vectorised over k.

    Grid point q = (q - zp) * s takes the values in its cell [q - s/2, q + s/2) (the first cell
    reaches down to -inf and the last up to +inf: that is clipping). With the zeroth, first and second
    moments m0, m1, m2 of the values in a cell, their squared error about the point g is
    m2 - 2 g m1 + g^2 m0. The m2 of all cells add up to the histogram's, whatever the grid, so the cost
    is that total plus sum over cells of g^2 m0 - 2 g m1: O(256) per grid from prefix sums of m0 and
    m1, exact for the model of values spread evenly across each bin.
    """

    def __init__(self, histogram):
        counts = histogram.counts
        self.width = histogram.width
        self.edges = histogram.edges()
        middle = (self.edges[:-1] + self.edges[1:]) / 2
        self.counts = counts
        self.cumulative = [np.concatenate(([0.0], np.cumsum(moment))) for moment in (counts, counts * middle)]
        self.total_m2 = float(np.sum(counts * (middle ** 2 + self.width ** 2 / 12)))

    def _moments_below(self, t):
        """The zeroth and first moments of the values below each t (any shape)."""
        position = np.clip((t - self.edges[0]) / self.width, 0, BINS)
        j = np.minimum(position.astype(np.intp), BINS - 1)
        inside = np.clip(t, self.edges[0], self.edges[-1])
        edge = self.edges[j]
        # the part of bin j below t: count * fraction, spread evenly over [edge, t]
        partial = self.counts[j] * (inside - edge) / self.width
        return self.cumulative[0][j] + partial, self.cumulative[1][j] + partial * (edge + inside) / 2

    def __call__(self, scale, zero_point):
        s = scale[:, None]
        points = (np.arange(LEVELS)[None, :] - zero_point[:, None]) * s
        below = self._moments_below(points[:, 1:] - s / 2)
        m0, m1 = (np.diff(m, prepend=0.0, append=c[-1]) for m, c in zip(below, self.cumulative))
        return self.total_m2 + (points * (points * m0 - 2 * m1)).sum(axis=1)


def _coordinate_descent(cost, search, first, end, zero, min_bins, rounds=4):
    """End bins (a, b) of the clip range with the least cost(a_array, b_array), where first <= a <=
    zero <= b <= end and b - a >= min_bins: the best b for the current a, then the best a for that b,
    until neither moves. Data on one side of 0 has one end fixed at the zero edge: one search settles
    it. `search(cost_of, lo, hi, anchor)` picks the best integer in [lo, hi]; anchor is the zero edge."""
    a, b = first, end
    if end - first <= min_bins:
        return a, b
    for _ in range(rounds):
        previous = a, b
        if end > zero:
            b = search(lambda bs: cost(np.full_like(bs, a), bs), max(zero, a + min_bins), end, zero)
        if first < zero:
            a = search(lambda as_: cost(as_, np.full_like(as_, b)), first, min(zero, b - min_bins), zero)
        if (a, b) == previous or first == zero or end == zero:
            break
    return a, b


def _full_scan(cost, lo, hi, anchor):
    """The integer in [lo, hi] with the least cost(candidates), every one evaluated."""
    candidates = np.arange(lo, hi + 1)
    return int(candidates[np.argmin(cost(candidates))])


def _narrowing_search(cost, lo, hi, anchor, coarse=24, step=8):
    """An integer in [lo, hi] with the least cost(candidates): a coarse scan (even steps plus steps
    doubling away from `anchor`, the zero edge, where the best clip of heavy-tailed data sits), then
    scans of ever narrower brackets around the best so far, the last one over every integer."""
    candidates = np.arange(lo, hi + 1)
    if hi - lo > coarse:
        offsets = 2 ** np.arange(int(math.log2(hi - lo)) + 1)
        near_anchor = anchor + offsets if anchor <= lo else anchor - offsets
        candidates = np.unique(np.concatenate((np.linspace(lo, hi, coarse).round().astype(np.int64), near_anchor)))
        candidates = candidates[(candidates >= lo) & (candidates <= hi)]
    while True:
        best = int(np.argmin(cost(candidates)))
        if len(candidates) == candidates[-1] - candidates[0] + 1:   # every integer in the bracket was scanned
            return int(candidates[best])
        left = candidates[max(best - 1, 0)]
        right = candidates[min(best + 1, len(candidates) - 1)]
        candidates = np.unique(np.linspace(left, right, step + 1).round().astype(np.int64))


class EntropyObserver(_HistogramObserver):
    """TensorRT-style calibration: the clip range minimising KL(P || Q) over the 2048-bin histogram.

    For a candidate range of histogram bins [a, b): P is the histogram inside it with the mass
    outside folded into its end bins; Q merges the unfolded bins into 256 levels (level l holds bins
    a + floor(l n / 256) .. a + floor((l + 1) n / 256), n = b - a) and spreads each level's mass
    evenly over its bins where P is non-zero. A candidate whose folded end bin gets no Q mass (a level
    that is empty but for the folded outliers) has infinite divergence; TensorRT's smoothing of zero
    bins is left out, so no divergence depends on an arbitrary epsilon. Ranges narrower than 256 bins
    are candidates too (TensorRT starts at its number of levels): each bin is then its own level and
    only the clipping counts, which lets a bulk of data that spans few bins be separated from far
    outliers.

    Departures for uint8 asymmetric quantization (TensorRT calibrates |x| with 128 levels):
    - the 256 levels span the whole range [lo, hi], so both ends are searched. Data on one side of 0
      has the other end fixed at 0 and one threshold is searched, as in TensorRT; data on both sides
      is searched by coordinate descent: every hi for the current lo, then every lo for that hi, until
      neither moves. Each divergence costs O(256) from prefix sums, so every end is a candidate.
    - values that are exactly 0 (half of a post-ReLU tensor) are counted apart from the histogram and
      enter P and Q as one atom of equal mass: the zero point represents them exactly whatever the
      range. Left in the bin [0, width), their spike would be smeared over its level by Q and the
      divergence would favour ranges so narrow that the spike sits alone in a level.
    """

    def __init__(self):
        super().__init__()
        self._exact_zeros = 0

    def _observe(self, values, lo, hi):
        super()._observe(values, lo, hi)
        self._exact_zeros += int(np.count_nonzero(values == 0))

    def _choose_range(self):
        counts = self._histogram.counts.copy()
        first, end, zero = self._data_bins()
        counts[min(zero, BINS - 1)] -= self._exact_zeros    # the bin holding the value 0
        divergence = self._within_clip_limit(_KLDivergence(counts, self._exact_zeros))
        a, b = _coordinate_descent(divergence, _full_scan, first, end, zero, min_bins=2)
        edges = self._histogram.edges()
        return max(edges[a], self._min), min(edges[b], self._max)


class _KLDivergence:
    """KL(P || Q) of candidate bin ranges [a, b), b - a >= 2 (EntropyObserver), vectorised over candidates.

    With P and Q as counts, p = P / total and q = Q / inside (the count within [a, b)):
    KL = (sum P log P - sum P log Q) / total - log total + log inside. Both sums come from prefix sums:
    Q is constant (level mass M / its c bins where P is non-zero) over a level, so sum P log Q =
    sum over levels of (P's mass in the level) * log(M / c), and P's mass is M but in the levels
    holding the two end bins, where the clipped mass is folded in. The exact-zero atom has equal mass
    in P and Q: it adds nothing to the sums, only to total and inside.
    """

    _BLOCK = 256   # candidates per numpy pass: keeps the (candidates x levels) temporaries in cache

    def __init__(self, counts, exact_zeros):
        self.counts = counts
        self.exact_zeros = exact_zeros
        self.total = counts.sum() + exact_zeros
        self.cumulative = np.concatenate(([0.0], np.cumsum(counts)))
        self.cumulative_xlogx = np.concatenate(([0.0], np.cumsum(_xlogx(counts))))
        self.cumulative_nonzero = np.concatenate(([0], np.cumsum(counts > 0)))

    def __call__(self, a, b):
        return np.concatenate([self._block(a[i:i + self._BLOCK], b[i:i + self._BLOCK])
                               for i in range(0, len(a), self._BLOCK)])

    def _block(self, a, b):
        n = b - a
        bounds = a[:, None] + (np.arange(LEVELS + 1)[None, :] * n[:, None]) // LEVELS
        mass = np.diff(self.cumulative[bounds], axis=1)
        nonzero = np.diff(self.cumulative_nonzero[bounds], axis=1)
        p_log_q = (_xlogx(mass) - mass * np.log(np.maximum(nonzero, 1))).sum(axis=1)   # as if nothing were folded
        below = self.cumulative[a]
        above = self.cumulative[-1] - self.cumulative[b]
        rows = np.arange(len(a))
        # bin a is in level (255 // n) (0 unless n < 256); bin b - 1 always in the last one
        for level, folded, end_bin in (((LEVELS - 1) // n, below, a), (LEVELS - 1, above, b - 1)):
            level_mass, level_nonzero = mass[rows, level], nonzero[rows, level]
            p_log_q += (_folded_level_term(level_mass, level_nonzero, folded, self.counts[end_bin] == 0)
                        - _folded_level_term(level_mass, level_nonzero, 0.0, False))
        p_log_p = (self.cumulative_xlogx[b - 1] - self.cumulative_xlogx[a + 1]
                   + _xlogx(self.counts[a] + below) + _xlogx(self.counts[b - 1] + above))
        inside = self.cumulative[b] - self.cumulative[a] + self.exact_zeros
        with np.errstate(divide="ignore", invalid="ignore"):
            kl = (p_log_p - p_log_q) / self.total - np.log(self.total) + np.log(inside)
        return np.where(np.isnan(kl), np.inf, kl)   # nan: Q has no mass where P has (inf - inf)


def _folded_level_term(mass, nonzero, folded, end_bin_empty):
    """(M + folded) * log(M / c) of one level with `folded` clipped counts added to P's end bin there;
    an empty end bin becomes one of P's non-zero bins. -inf when Q has no mass for P's."""
    p_mass = mass + folded
    nonzero = nonzero + (end_bin_empty & (folded > 0))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(p_mass > 0, p_mass * np.log(mass / np.maximum(nonzero, 1)), 0.0)


def _xlogx(x):
    x = np.asarray(x, dtype=float)
    return x * np.log(np.where(x > 0, x, 1.0))


_OBSERVERS = {
    "minmax": MinMaxObserver,
    "percentile": PercentileObserver,
    "mse": MSEObserver,
    "entropy": EntropyObserver,
}
