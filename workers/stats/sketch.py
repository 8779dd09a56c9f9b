"""A numeric column's distribution in bounded memory: exact value counts while few, fine binned counts beyond.

`NumericSketch` is filled from record batches (NumPy arrays), merges with another sketch, and round-trips through
JSON, so a dataset profile can keep one per numeric column and the drift job can compare capture rows with it.

- Exact mode: each distinct finite value with its count, while there are at most `cap` of them. CDFs, quantiles and
  every statistic computed from it equal those computed from the rows themselves.
- Binned mode: past `cap` distinct values, counts in at most `bins` bins of width 2**exponent, bin i covering
  [(offset + i) * width, (offset + i + 1) * width). Widths are powers of two and bins sit on multiples of their
  width, so two sketches' bins always line up once the finer is coarsened (pairs of bins merged), whatever rows each
  saw. The exponent is the smallest whose bins cover [min, max] in at most `bins` bins, so the result depends only
  on the values, not on how they were batched or merged. Within a bin, values are taken as spread evenly over the
  part of it between min and max (a piecewise-linear CDF), so a CDF or quantile is off by less than one bin width.

NaN and infinities are counted in `non_finite` and left out of everything else.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

SKETCH_VERSION = 1
# The exact mode's limit on distinct values: at most this many, a sketch is exact (and small samples always are).
DISTINCT_CAP = 1000
# The binned mode's most bins: each is at most about (max - min) / 512 wide, 2 ** ceil(log2((max - min) / 1024)).
BINS = 1024


class NumericSketch:
    """One numeric column's finite values: exact counts up to `cap` distinct values, `bins` fine bins beyond."""

    def __init__(self, *, cap: int = DISTINCT_CAP, bins: int = BINS) -> None:
        if cap < 1 or bins < 2:
            raise ValueError("a sketch needs cap >= 1 and bins >= 2")
        self.cap = cap
        self.bins = bins
        self.n = 0  # finite values seen
        self.non_finite = 0
        self.min = math.inf
        self.max = -math.inf
        self._mean = 0.0  # Chan's parallel update, for the binned mode's mean and std
        self._m2 = 0.0
        # Exact mode: sorted distinct values and their counts. Binned mode: values is None, counts are per bin.
        self.values: np.ndarray | None = np.zeros(0, dtype=np.float64)
        self.counts = np.zeros(0, dtype=np.int64)
        self.exponent = 0
        self.offset = 0.0  # the first bin's index on the grid of width 2**exponent (an integer, kept as a float)

    # -----------------------------------------------------------------------------------------------------------------
    # Filling

    @property
    def exact(self) -> bool:
        return self.values is not None

    @property
    def width(self) -> float:
        return math.ldexp(1.0, self.exponent)

    def add(self, values: np.ndarray) -> None:
        """Add a batch of numbers (any numeric dtype); NaN and infinities are counted in `non_finite` only."""
        numbers = np.asarray(values, dtype=np.float64).ravel()
        finite = np.isfinite(numbers)
        if not finite.all():
            self.non_finite += int(numbers.size - np.count_nonzero(finite))
            numbers = numbers[finite]
        if numbers.size == 0:
            return
        self._add_moments(numbers.size, float(numbers.mean()), numbers)
        low, high = float(numbers.min()), float(numbers.max())
        if self.values is not None and numbers.size > 2 * self.cap:
            # A cheap look first: when a slice alone has more than `cap` distinct values, skip sorting the batch.
            if np.unique(numbers[: 2 * self.cap]).size > self.cap:
                self.min, self.max = min(self.min, low), max(self.max, high)
                self._to_binned(low, high)
        if self.values is not None:
            found, counts = np.unique(numbers, return_counts=True)
            self._add_exact(found, counts.astype(np.int64), low, high)
        else:
            self._extend(low, high)
            self._bin(numbers, None)

    def merge(self, other: NumericSketch) -> NumericSketch:
        """A new sketch of both sketches' values together (the same as one sketch fed both, up to float rounding)."""
        result = self.copy()
        result.cap = min(self.cap, other.cap)
        result.bins = min(self.bins, other.bins)
        result.non_finite += other.non_finite
        if other.n == 0:
            return result
        result._combine(other.n, other._mean, other._m2)
        if other.values is not None:
            result._add_exact(other.values, other.counts, other.min, other.max)
            return result
        if result.values is not None:
            result._to_binned(other.min, other.max, minimum_exponent=other.exponent)
        result._extend(other.min, other.max, minimum_exponent=other.exponent)
        result._bin_grid(other)
        return result

    def copy(self) -> NumericSketch:
        clone = NumericSketch(cap=self.cap, bins=self.bins)
        clone.n, clone.non_finite, clone.min, clone.max = self.n, self.non_finite, self.min, self.max
        clone._mean, clone._m2 = self._mean, self._m2
        clone.values = None if self.values is None else self.values.copy()
        clone.counts = self.counts.copy()
        clone.exponent, clone.offset = self.exponent, self.offset
        return clone

    def _add_moments(self, size: int, mean: float, numbers: np.ndarray | None) -> None:
        m2 = float(np.square(numbers - mean).sum()) if numbers is not None else 0.0
        self._combine(size, mean, m2)

    def _combine(self, size: int, mean: float, m2: float) -> None:
        total = self.n + size
        delta = mean - self._mean
        self._mean += delta * size / total
        self._m2 += m2 + delta * delta * self.n * size / total
        self.n = total

    def _add_exact(self, found: np.ndarray, counts: np.ndarray, low: float, high: float) -> None:
        self.min = min(self.min, low)
        self.max = max(self.max, high)
        if self.values is None:
            self._extend(low, high)
            self._bin(found, counts)
            return
        merged, where = np.unique(np.concatenate([self.values, found]), return_inverse=True)
        totals = np.zeros(merged.size, dtype=np.int64)
        np.add.at(totals, where, np.concatenate([self.counts, counts]))
        self.values, self.counts = merged, totals
        if merged.size > self.cap:
            self._to_binned(self.min, self.max)

    def _to_binned(self, low: float, high: float, *, minimum_exponent: int | None = None) -> None:
        """Leave the exact mode: bin the distinct values kept so far."""
        assert self.values is not None
        values, counts = self.values, self.counts
        self.values = None
        low, high = min(self.min, low), max(self.max, high)
        exponent = self._fitting_exponent(low, high)
        if minimum_exponent is not None:
            exponent = max(exponent, minimum_exponent)
            while self._span(low, high, exponent) > self.bins:
                exponent += 1
        self.exponent = exponent
        self.offset = math.floor(low / self.width)
        self.counts = np.zeros(self._span(low, high, exponent), dtype=np.int64)
        self._bin(values, counts)

    def _span(self, low: float, high: float, exponent: int) -> int:
        width = math.ldexp(1.0, exponent)
        return int(math.floor(high / width) - math.floor(low / width)) + 1

    def _fitting_exponent(self, low: float, high: float) -> int:
        """The smallest exponent whose bins cover [low, high] in at most `bins` bins."""
        spread = high - low
        exponent = math.frexp(spread / self.bins)[1] - 1 if spread > 0 else -1074
        exponent = max(exponent, -1074)
        while self._span(low, high, exponent) > self.bins:
            exponent += 1
        return exponent

    def _extend(self, low: float, high: float, *, minimum_exponent: int | None = None) -> None:
        """Make the bins cover [low, high] too, coarsening them as little as that needs."""
        low, high = min(low, self.min), max(high, self.max)
        self.min, self.max = low, high
        exponent = max(self.exponent, self._fitting_exponent(low, high))
        if minimum_exponent is not None and minimum_exponent > exponent:
            exponent = minimum_exponent
        self._rebin_to(exponent, low, high)

    def _rebin_to(self, exponent: int, low: float | None = None, high: float | None = None) -> None:
        low = self.min if low is None else low
        high = self.max if high is None else high
        first = math.floor(low / math.ldexp(1.0, exponent))
        size = self._span(low, high, exponent)
        if exponent == self.exponent and first == self.offset and size == self.counts.size:
            return
        old = np.nonzero(self.counts)[0]
        counts = np.zeros(size, dtype=np.int64)
        if old.size:
            # A bin's index on the coarser grid: its global index divided by 2**(exponent - old exponent), floored.
            scale = math.ldexp(1.0, exponent - self.exponent)
            where = np.floor((self.offset + old) / scale) - first
            np.add.at(counts, where.astype(np.int64), self.counts[old])
        self.exponent, self.offset, self.counts = exponent, float(first), counts

    def _bin(self, numbers: np.ndarray, weights: np.ndarray | None) -> None:
        index = (np.floor(numbers / self.width) - self.offset).astype(np.int64)
        self.counts += np.bincount(index, weights=weights, minlength=self.counts.size).astype(np.int64)

    def _bin_grid(self, other: NumericSketch) -> None:
        """Add another binned sketch's counts (its grid is at most as fine as this one's)."""
        used = np.nonzero(other.counts)[0]
        scale = math.ldexp(1.0, self.exponent - other.exponent)
        where = (np.floor((other.offset + used) / scale) - self.offset).astype(np.int64)
        np.add.at(self.counts, where, other.counts[used])

    # -----------------------------------------------------------------------------------------------------------------
    # Reading

    def mean(self) -> float | None:
        if self.n == 0:
            return None
        if self.values is not None:
            return float(np.dot(self.values, self.counts) / self.n)
        return self._mean

    def std(self, ddof: int = 0) -> float | None:
        """The standard deviation (population by default, as numpy.std); None without enough values."""
        if self.n <= ddof:
            return None
        if self.values is not None:
            centre = float(np.dot(self.values, self.counts) / self.n)
            return math.sqrt(float(np.dot(np.square(self.values - centre), self.counts)) / (self.n - ddof))
        return math.sqrt(max(self._m2, 0.0) / (self.n - ddof))

    def edges(self) -> np.ndarray:
        """Binned mode: the bins' edges clipped to [min, max] (len(counts) + 1 of them)."""
        if self.values is not None:
            raise ValueError("an exact sketch has values, not bins")
        edges = (self.offset + np.arange(self.counts.size + 1, dtype=np.float64)) * self.width
        return np.clip(edges, self.min, self.max)

    def cdf(self, points: np.ndarray | float) -> np.ndarray:
        """The share of values <= each point (exact mode); in binned mode, with values spread evenly in each bin."""
        x = np.asarray(points, dtype=np.float64)
        if self.n == 0:
            return np.full(x.shape, np.nan)
        if self.values is not None:
            cumulative = np.cumsum(self.counts)
            below = np.searchsorted(self.values, x, side="right")
            return np.where(below > 0, cumulative[np.maximum(below - 1, 0)], 0) / self.n
        edges = self.edges()
        cumulative = np.concatenate([[0], np.cumsum(self.counts)])
        index = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, self.counts.size - 1)
        low, high = edges[index], edges[index + 1]
        width = high - low
        fraction = np.where(width > 0, np.clip((x - low) / np.where(width > 0, width, 1.0), 0.0, 1.0), 1.0)
        result = (cumulative[index] + fraction * self.counts[index]) / self.n
        return np.where(x < self.min, 0.0, np.where(x >= self.max, 1.0, result))

    def quantiles(self, qs: np.ndarray | list[float]) -> np.ndarray:
        """Quantiles at shares `qs`: numpy's "linear" method in exact mode, the inverse of the binned CDF beyond."""
        q = np.asarray(qs, dtype=np.float64)
        if self.n == 0:
            return np.full(q.shape, np.nan)
        if self.values is not None:
            cumulative = np.cumsum(self.counts)
            rank = (self.n - 1) * q
            below = np.floor(rank)
            low = self.values[np.searchsorted(cumulative, below, side="right")]
            high = self.values[np.minimum(np.searchsorted(cumulative, below + 1, side="right"), self.values.size - 1)]
            fraction = rank - below
            diff = high - low
            # numpy's lerp, so an exact sketch's quantile equals np.quantile's on the rows to the last bit
            return np.where(fraction >= 0.5, high - diff * (1 - fraction), low + diff * fraction)
        shares = np.concatenate([[0], np.cumsum(self.counts)]) / self.n
        return np.interp(q, shares, self.edges())

    # -----------------------------------------------------------------------------------------------------------------
    # JSON

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable dict (no NaN or infinity); `from_json` restores an equal sketch."""
        data: dict[str, Any] = {
            "version": SKETCH_VERSION,
            "cap": self.cap,
            "bins": self.bins,
            "n": self.n,
            "non_finite": self.non_finite,
            "min": self.min if self.n else None,
            "max": self.max if self.n else None,
            "mean": self._mean,
            "m2": self._m2,
        }
        if self.values is not None:
            data["values"] = self.values.tolist()
            data["counts"] = self.counts.tolist()
        else:
            data["exponent"] = self.exponent
            data["offset"] = int(self.offset)
            data["counts"] = self.counts.tolist()
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> NumericSketch:
        if data.get("version") != SKETCH_VERSION:
            raise ValueError(f"unsupported sketch version {data.get('version')!r}; expected {SKETCH_VERSION}")
        sketch = cls(cap=int(data["cap"]), bins=int(data["bins"]))
        sketch.n = int(data["n"])
        sketch.non_finite = int(data["non_finite"])
        if sketch.n:
            sketch.min, sketch.max = float(data["min"]), float(data["max"])
        sketch._mean, sketch._m2 = float(data["mean"]), float(data["m2"])
        sketch.counts = np.asarray(data["counts"], dtype=np.int64)
        if "values" in data:
            sketch.values = np.asarray(data["values"], dtype=np.float64)
        else:
            sketch.values = None
            sketch.exponent = int(data["exponent"])
            sketch.offset = float(data["offset"])
        if int(sketch.counts.sum()) != sketch.n:
            raise ValueError("a sketch's counts do not add up to its n")
        return sketch
