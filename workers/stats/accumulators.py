"""Vectorized per-column accumulators, filled batch by batch and mergeable, so no column is ever held whole.

- `Moments`: count, min, max, mean and the sum of squared deviations (Chan's parallel update), whole-number check;
  NaN and infinities are counted in `non_finite` and left out of everything else.
- `ExactCounts`: each distinct finite number with its count, while there are at most a cap of them.
- `Histogram`: counts on fixed edges, exactly as `numpy.histogram(values, bins=edges)` counts them (half-open bins
  except the last, which is closed).
- `ValueCounts`: a categorical column's values with their counts, exact up to a cap, the heaviest beyond.
- `order_statistic_exact` / `order_statistic_binned` and `quantiles`: numpy's "inverted_cdf" and "linear" quantiles
  from exact counts, or estimated from fine bins.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from workers.stats.columns import arrow_bools, arrow_int64s, arrow_strings, numpy_of


class Moments:
    """Count, min, max, mean and m2 of the finite numbers seen; `whole` while every one is a whole number."""

    def __init__(self) -> None:
        self.n = 0
        self.mean = 0.0
        self.m2 = 0.0
        self.min = math.inf
        self.max = -math.inf
        self.non_finite = 0
        self.whole = True

    def add(self, numbers: np.ndarray, *, whole: bool | None = None) -> np.ndarray:
        """Add a batch; returns its finite numbers. `whole=True` says they are known whole (integers) already."""
        finite = np.isfinite(numbers)
        if not finite.all():
            self.non_finite += int(numbers.size - np.count_nonzero(finite))
            numbers = numbers[finite]
        size = numbers.size
        if size == 0:
            return numbers
        if self.whole and whole is not True:
            self.whole = bool(np.all(numbers == np.floor(numbers)))
        mean = float(numbers.mean())
        m2 = float(np.square(numbers - mean).sum())
        self._combine(size, mean, m2)
        self.min = min(self.min, float(numbers.min()))
        self.max = max(self.max, float(numbers.max()))
        return numbers

    def merge(self, other: Moments) -> None:
        self.non_finite += other.non_finite
        if other.n == 0:
            return
        self.whole = self.whole and other.whole
        self._combine(other.n, other.mean, other.m2)
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)

    def _combine(self, size: int, mean: float, m2: float) -> None:
        total = self.n + size
        delta = mean - self.mean
        self.mean += delta * size / total
        self.m2 += m2 + delta * delta * self.n * size / total
        self.n = total

    @property
    def std(self) -> float | None:
        """The sample standard deviation (ddof=1), as pandas' describe gives it."""
        return math.sqrt(self.m2 / (self.n - 1)) if self.n > 1 else None


class ExactCounts:
    """Distinct finite numbers with their counts while there are at most `cap` of them; `over` once past it.

    Batches are counted as they come and merged lazily (when the pending counts outgrow the cap), so a column with
    few distinct values costs one count per batch, not one sort of everything kept per batch. When the cap is passed,
    what was kept is handed over once (`take_released`), so a caller can keep the values some other way.
    """

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._values = np.zeros(0, dtype=np.float64)
        self._counts = np.zeros(0, dtype=np.int64)
        self._pending: list[tuple[np.ndarray, np.ndarray]] = []
        self._pending_size = 0
        self.over = False
        # Once over: how many distinct values there were when the cap was passed, so at least that many in all.
        self.at_least = 0
        self._released: list[tuple[np.ndarray, np.ndarray]] | None = None

    def add(self, numbers: np.ndarray) -> None:
        """Add finite numbers."""
        if self.over or numbers.size == 0:
            return
        found, counts = _distinct_counts(numbers)
        self._pending.append((found, counts))
        self._pending_size += found.size
        if self._pending_size > self.cap + min(self.cap, 1_000_000) + 1024:
            self._merge(check=True)

    def limit(self, cap: int) -> None:
        """Change the cap; past a lower one, the values are released."""
        self.cap = cap
        if not self.over and self._values.size + self._pending_size > cap:
            self._merge(check=True)

    def _merge(self, *, check: bool) -> None:
        if not self._pending:
            return
        pieces = [(self._values, self._counts), *self._pending]
        self._pending, self._pending_size = [], 0
        values = np.concatenate([found for found, _ in pieces])
        merged = np.unique(values)
        if check and merged.size > self.cap:
            self.over = True
            self.at_least = merged.size
            self._released = pieces  # as they are: whoever takes them needs the values, not their totals
            self._values = np.zeros(0, dtype=np.float64)
            self._counts = np.zeros(0, dtype=np.int64)
            return
        # a search for each value's place, cheaper than numpy.unique's inverse (an argsort)
        where = np.searchsorted(merged, values)
        counts = np.concatenate([count for _, count in pieces])
        self._values = merged
        self._counts = np.bincount(where, weights=counts, minlength=merged.size).astype(np.int64)

    def take_released(self) -> list[tuple[np.ndarray, np.ndarray]] | None:
        """The values and counts kept until the cap was passed (in pieces), once; None before that or after."""
        released, self._released = self._released, None
        return released

    def table(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Every distinct value (sorted) and its count, however many, or None if the cap was passed on the way."""
        self._merge(check=False)
        if self.over:
            return None
        return self._values, self._counts


def _distinct_counts(numbers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # -0.0 and 0.0 are one value, as numpy.unique has them
    numbers = numbers + 0.0
    low, high = float(numbers.min()), float(numbers.max())
    if high - low < 65_536 and low == math.floor(low) and bool(np.all(numbers == np.floor(numbers))):
        # Whole numbers in a short range (counts, codes, years): one bincount, no sort.
        counts = np.bincount((numbers - low).astype(np.int64))
        present = np.flatnonzero(counts)
        return present.astype(np.float64) + low, counts[present].astype(np.int64)
    found, counts = np.unique(numbers, return_counts=True)
    return found, counts.astype(np.int64)


class Histogram:
    """Counts on fixed `edges`: the same counts as `numpy.histogram(values, bins=edges)`."""

    def __init__(self, edges: np.ndarray) -> None:
        self.edges = np.asarray(edges, dtype=np.float64)
        self.counts = np.zeros(self.edges.size - 1, dtype=np.int64)
        bins = self.edges.size - 1
        # Evenly spaced edges (numpy.linspace's) take numpy's fast path for uniform bins: the same counts, no search.
        self._uniform = bool(np.array_equal(self.edges, np.linspace(self.edges[0], self.edges[-1], bins + 1)))

    def add(self, numbers: np.ndarray, weights: np.ndarray | None = None) -> None:
        """Add finite numbers (each `weights` times, if given)."""
        if numbers.size == 0:
            return
        bins: Any = self.counts.size if self._uniform else self.edges
        value_range = (float(self.edges[0]), float(self.edges[-1])) if self._uniform else None
        counts, _ = np.histogram(numbers, bins=bins, range=value_range, weights=weights)
        self.counts += np.rint(counts).astype(np.int64) if weights is not None else counts


def histogram_edges(low: float, high: float, bins: int) -> np.ndarray:
    """`bins` equal bins from low to high; a constant column gets a window around its value, so no bin is empty."""
    edges = np.linspace(low, high, bins + 1)
    if high > low and bool(np.all(np.diff(edges) > 0)):
        return edges
    centre = (low + high) / 2
    half = 0.5 * max(1.0, abs(centre))
    return np.linspace(centre - half, centre + half, bins + 1)


PENDING_VALUES = 256 * 1024


class ValueCounts:
    """A categorical column's values and counts: exact up to `cap` distinct values, the heaviest ones beyond.

    Past the cap only the heaviest `cap` values are kept whenever more than twice that many are held; a dropped
    value that returns restarts at zero, so the top counts become lower bounds (exact while `capped` is false).
    Each batch is counted by pyarrow's hash kernels and matched against the values kept, so no Python loop runs
    per value.
    """

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.capped = False
        self._values: pa.Array = arrow_strings([])
        self._counts = np.zeros(0, dtype=np.int64)
        # Batches wait here until there are this many values, so the values kept are matched less often.
        self._pending: list[pa.Array | pa.ChunkedArray] = []
        self._pending_size = 0

    def add(self, texts: pa.Array | pa.ChunkedArray) -> None:
        """Add a batch of text values (a pyarrow string array without nulls)."""
        if len(texts) == 0:
            return
        self._pending.append(texts)
        self._pending_size += len(texts)
        if self._pending_size >= PENDING_VALUES:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        chunks = [chunk for texts in self._pending for chunk in getattr(texts, "chunks", [texts])]
        self._pending, self._pending_size = [], 0
        found = pc.value_counts(pa.chunked_array(chunks, type=chunks[0].type))
        values = found.field("values")
        counts = numpy_of(found.field("counts")).astype(np.int64)
        where = numpy_of(pc.index_in(values, value_set=self._values), fill=-1)
        known = where >= 0
        # each value occurs once in the counts just made, so the indices do not repeat
        self._counts[where[known]] += counts[known]
        if not known.all():
            new = ~known
            self._values = pa.concat_arrays([self._values, values.filter(arrow_bools(new)).cast(pa.string())])
            self._counts = np.concatenate([self._counts, counts[new]])
        if len(self._counts) > self.cap:
            self.capped = True
        if len(self._counts) > 2 * self.cap:
            # the heaviest, the earliest seen first among equals
            kth = np.partition(self._counts, self._counts.size - self.cap)[self._counts.size - self.cap]
            above = np.flatnonzero(self._counts > kth)
            equal = np.flatnonzero(self._counts == kth)[: self.cap - above.size]
            keep = np.sort(np.concatenate([above, equal]))
            self._values = self._values.take(arrow_int64s(keep))
            self._counts = self._counts[keep]

    def counts(self, key: Callable[[str], str] | None = None) -> dict[str, int]:
        """Every value kept with its count; `key` folds values together (booleans' spellings into true/false)."""
        self._flush()
        result: dict[str, int] = {}
        for value, count in zip(self._values.to_pylist(), self._counts.tolist(), strict=True):
            name = key(value) if key is not None else value
            result[name] = result.get(name, 0) + count
        return result

    def summary(self, top: int, key: Callable[[str], str] | None = None) -> dict[str, Any]:
        if key is None:
            self._flush()
            distinct = len(self._counts)
            # Only values at least as frequent as the top-th are candidates; Python orders those alone.
            candidates = np.arange(distinct)
            if top and distinct > top:
                least = np.partition(self._counts, distinct - top)[distinct - top]
                candidates = np.flatnonzero(self._counts >= least)
            values = self._values.take(arrow_int64s(candidates)).to_pylist()
            counts = dict(zip(values, self._counts[candidates].tolist(), strict=True))
        else:
            counts = self.counts(key)
            distinct = len(counts)
        heaviest = heapq.nsmallest(top, counts.items(), key=lambda item: (-item[1], item[0]))
        return {
            "distinct": self.cap if self.capped else distinct,
            "distinct_capped": self.capped,
            "top": [{"value": value, "count": count} for value, count in heaviest],
        }


# ---------------------------------------------------------------------------------------------------------------------
# Quantiles


def order_statistic_exact(values: np.ndarray, counts: np.ndarray) -> Callable[[int], float]:
    """The k-th smallest number (from 0) of a column given as sorted distinct values and their counts."""
    cumulative = np.cumsum(counts)

    def statistic(k: int) -> float:
        return float(values[int(np.searchsorted(cumulative, k, side="right"))])

    return statistic


def order_statistic_binned(fine: Histogram, *, n: int, low: float, high: float) -> Callable[[int], float]:
    """The k-th smallest number, placed evenly within its fine bin, so off by less than one bin width."""
    cumulative = np.cumsum(fine.counts)
    first, last = float(fine.edges[0]), float(fine.edges[-1])
    width = (last - first) / fine.counts.size

    def statistic(k: int) -> float:
        if k <= 0:
            return low
        if k >= n - 1:
            return high
        index = int(np.searchsorted(cumulative, k, side="right"))
        before = int(cumulative[index - 1]) if index else 0
        estimate = first + (index + (k - before + 0.5) / int(fine.counts[index])) * width
        return min(max(estimate, low), high)

    return statistic


def quantiles(
    levels: dict[str, float], statistic: Callable[[int], float], *, n: int, integer: bool
) -> dict[str, float | None]:
    """numpy's "inverted_cdf" (integer columns: always a value that occurs) or "linear" quantiles of n numbers."""
    if n == 0:
        return dict.fromkeys(levels)
    result: dict[str, float | None] = {}
    for key, q in levels.items():
        if integer:
            # the smallest value whose cumulative share reaches q
            result[key] = float(round(statistic(max(math.ceil(n * q) - 1, 0))))
            continue
        # interpolate between the order statistics around rank (n - 1) q
        rank = (n - 1) * q
        below = math.floor(rank)
        fraction = rank - below
        low = statistic(below)
        if fraction == 0:
            result[key] = low
            continue
        high = statistic(below + 1)
        # numpy's lerp, so an exact quantile equals np.quantile's to the last bit
        diff = high - low
        result[key] = high - diff * (1 - fraction) if fraction >= 0.5 else low + diff * fraction
    return result
