"""A dataset profile from record batches, in one pass and, for the columns that need it, a second.

Pass 1 reads every column (CSV as text, parsed by pyarrow) and finds each column's type, counts, min/max and
moments; meanwhile it keeps each numeric column's distinct values with their counts while there are few enough, and
counts the values of each column known to be categorical. A column whose distinct values all fit needs nothing more:
its histogram and quantiles come from those counts. Pass 2 reads only the other columns (CSV numbers as float64
now that pass 1 has seen they all parse): histograms on edges fixed by pass 1, fine bins for estimated quantiles,
and the values of a column that turned out categorical only after some rows.

The result is the same as counting row by row: histogram counts are numpy.histogram's on the same edges, and
quantiles numpy's.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import pyarrow as pa

from workers.stats.accumulators import (
    ExactCounts,
    Histogram,
    Moments,
    ValueCounts,
    histogram_edges,
    order_statistic_binned,
    order_statistic_exact,
    quantiles,
)
from workers.stats.columns import (
    Batch,
    Values,
    as_numbers,
    as_texts,
    read_batches,
    text_integers,
    text_numbers,
    texts_are_booleans,
    texts_are_datetimes,
    texts_are_integers,
)
from workers.stats.sketch import BINS as SKETCH_BINS
from workers.stats.sketch import DISTINCT_CAP as SKETCH_CAP
from workers.stats.sketch import SKETCH_VERSION, NumericSketch

INTEGER_QUANTILE_METHOD = "inverted_cdf"
FLOAT_QUANTILE_METHOD = "linear"
# Pass 1 writes the numbers of the columns with many distinct values to temporary files, up to this many bytes in
# all, so pass 2 reads float64 back instead of parsing the file again; past it, pass 2 reads the files.
SPILL_BYTES = 1 << 30
SPILL_READ_VALUES = 1 << 20


@dataclass(frozen=True)
class Settings:
    """What a profile keeps; datasets.py passes its documented constants."""

    bins: int
    levels: dict[str, float]
    distinct_cap: int  # categorical values counted exactly up to this many
    top_values: int
    exact_limit: int  # a numeric column keeps its distinct values up to this many, or its share of exact_budget
    exact_budget: int
    quantile_bins: int
    max_rows: int  # rows per batch at most
    spill_bytes: int = SPILL_BYTES


class Progress:
    """Turns bytes read across both passes over all files into increasing fractions, reported now and then."""

    def __init__(self, callback: Callable[[float], None] | None, sizes: list[int]) -> None:
        self.callback = callback
        self.sizes = [max(size, 1) for size in sizes]
        self.total = 2 * sum(self.sizes)
        self.last = 0.0

    def reporter(self, pass_index: int, file_index: int) -> Callable[[float], None]:
        offset = pass_index * sum(self.sizes) + sum(self.sizes[:file_index])
        size = self.sizes[file_index]

        def report(fraction: float) -> None:
            self.report(offset + size * min(fraction, 1.0))

        return report

    def report(self, done: float) -> None:
        fraction = done / self.total
        # 1.0 is only said once everything is done; steps below half a percent are not worth a callback.
        if self.callback is not None and self.last + 0.005 <= fraction < 1.0:
            self.last = fraction
            self.callback(fraction)

    def finish(self) -> None:
        if self.callback is not None:
            self.callback(1.0)


class _Spill:
    """Numbers pass 1 parsed, in temporary files (one per column, deleted when closed), within a byte budget."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.used = 0
        self.files: dict[str, IO[bytes]] = {}
        self.abandoned = False

    def write(self, name: str, numbers: np.ndarray) -> None:
        if self.abandoned or numbers.size == 0:
            return
        if self.used + numbers.nbytes > self.budget:
            self.abandoned = True
            self.close()
            return
        try:
            handle = self.files.get(name)
            if handle is None:
                handle = self.files[name] = tempfile.TemporaryFile(prefix="cp-profile-")
            handle.write(np.ascontiguousarray(numbers, dtype=np.float64).tobytes())
        except OSError:
            # no room for it (a small temporary disk): pass 2 reads the files again instead
            self.abandoned = True
            self.close()
            return
        self.used += numbers.nbytes

    def holds(self, name: str) -> bool:
        return name in self.files

    def read(self, name: str) -> Iterator[np.ndarray]:
        handle = self.files[name]
        handle.flush()
        handle.seek(0)
        while True:
            data = handle.read(SPILL_READ_VALUES * 8)
            if not data:
                return
            yield np.frombuffer(data, dtype=np.float64)

    def discard(self, name: str) -> None:
        handle = self.files.pop(name, None)
        if handle is not None:
            handle.close()

    def close(self) -> None:
        for handle in self.files.values():
            handle.close()
        self.files = {}


@dataclass
class _Column:
    """Pass 1 for one column: the type its values fit, its numeric moments, and what else it can count already."""

    name: str
    exact_cap: int
    distinct_cap: int
    spill: _Spill
    count: int = 0  # non-missing values
    numeric: bool = True
    integral: bool = True
    boolean: bool = True
    datetime: bool = True
    moments: Moments = field(default_factory=Moments)
    exact: ExactCounts | None = None
    # every text batch was parsed by pyarrow, so pass 2 may read this CSV column as float64
    arrow_numbers: bool = True
    counter: ValueCounts | None = None
    counter_complete: bool = False

    def __post_init__(self) -> None:
        self.exact = ExactCounts(self.exact_cap)

    def observe(self, values: Values) -> None:
        size = len(values)
        if size == 0:
            return
        first = self.count == 0
        self.count += size
        kind = values.kind
        if kind == "text":
            if self.numeric:
                numbers = text_integers(values.data) if self.integral else None
                if numbers is not None:
                    self.boolean = self.datetime = False
                    self._add_numbers(numbers, whole=True)
                    return
                numbers, by_arrow = text_numbers(values.data)
                if numbers is not None:
                    self.boolean = self.datetime = False
                    self.arrow_numbers = self.arrow_numbers and by_arrow
                    if self.integral:
                        self.integral = texts_are_integers(values.data, numbers)
                    self._add_numbers(numbers, whole=None)
                    return
                self.numeric = False
            if self.boolean:
                self.boolean = texts_are_booleans(values.data)
            if self.datetime:
                self.datetime = texts_are_datetimes(values.data)
        elif kind in ("integer", "float"):
            self.boolean = self.datetime = False
            self.integral = self.integral and kind == "integer"
            if self.numeric:
                self._add_numbers(values.data, whole=True if kind == "integer" else None)
                return
        elif kind == "boolean":
            self.numeric = self.datetime = False
        else:
            self.numeric = self.boolean = False
        self._count(values, first)

    def _add_numbers(self, numbers: np.ndarray, *, whole: bool | None) -> None:
        finite = self.moments.add(numbers, whole=whole)
        if self.exact is None:
            return
        if self.exact.over:
            self.spill.write(self.name, finite)
            return
        self.exact.add(finite)
        self.released()

    def limit(self, cap: int) -> None:
        if self.exact is not None and self.exact.cap != cap:
            self.exact.limit(cap)
            self.released()

    def released(self) -> None:
        """Past its cap the column's distinct values are gone from memory: their rows go to the spill instead."""
        assert self.exact is not None
        released = self.exact.take_released()
        for values, counts in released or []:
            for numbers in _repeated(values, counts):
                self.spill.write(self.name, numbers)

    def _count(self, values: Values, first: bool) -> None:
        if self.counter is None:
            self.exact = None  # not numeric after all
            self.spill.discard(self.name)
            self.counter = ValueCounts(self.distinct_cap)
            # Counted from its first values on, or it is counted again in pass 2.
            self.counter_complete = first
        self.counter.add(as_texts(values))

    def type(self) -> str:
        if self.count == 0:
            return "string"
        if self.boolean:
            return "boolean"
        if self.numeric:
            return "integer" if self.integral else "float"
        if self.datetime:
            return "datetime"
        return "string"


class _Distribution:
    """One numeric column's histogram, fine bins (for estimated quantiles) and distinct values if few enough."""

    def __init__(self, column: _Column, settings: Settings, *, integer: bool, exact_cap: int) -> None:
        moments = column.moments
        self.moments = moments
        self.integer = integer
        self.exact_cap = exact_cap
        bins = settings.bins
        if integer and moments.max - moments.min + 1 <= bins:
            # Few whole numbers (a year, a count of children): one bin per value, centred on it, so no bin is empty
            # between two values and none is split across one.
            edges = np.arange(moments.min - 0.5, moments.max + 1.0, 1.0)
        else:
            edges = histogram_edges(moments.min, moments.max, bins)
        self.histogram = Histogram(edges)
        self.fine = Histogram(histogram_edges(moments.min, moments.max, settings.quantile_bins))
        self.table: tuple[np.ndarray, np.ndarray] | None = None
        self.distinct_at_least = 0
        self.pending: ExactCounts | None = None  # filled in pass 2 when pass 1 could not tell
        table = column.exact.table() if column.exact is not None else None  # every distinct value, or None
        self.every_value = table
        self.sketch: NumericSketch | None = None  # filled in pass 2; from `every_value` when that is known
        if table is not None:
            values, counts = table
            self.histogram.add(values, counts)
            if values.size <= exact_cap:
                self.table = table
            else:
                self.fine.add(values, counts)
                self.distinct_at_least = values.size
            self.needs_pass_2 = False
            return
        self.needs_pass_2 = True
        self.sketch = NumericSketch()
        at_least = column.exact.at_least if column.exact is not None else 0
        if at_least > exact_cap:
            self.distinct_at_least = at_least
        else:
            self.pending = ExactCounts(exact_cap)

    def add(self, numbers: np.ndarray) -> None:
        finite = numbers[np.isfinite(numbers)]
        if finite.size == 0:
            return
        self.histogram.add(finite)
        self.fine.add(finite)
        if self.pending is not None:
            self.pending.add(finite)
        if self.sketch is not None:
            _sketch_add(self.sketch, finite)

    def finish(self) -> None:
        if self.pending is not None:
            self.table = self.pending.table()
            self.pending = None

    @property
    def exact(self) -> bool:
        return self.table is not None

    def sketch_json(self, non_finite: int) -> dict[str, Any]:
        """The column's NumericSketch (workers.stats.sketch), shared with drift, as JSON."""
        if self.sketch is not None:
            sketch = self.sketch
        else:
            assert self.every_value is not None
            sketch = _sketch_from_counts(*self.every_value)
        sketch.non_finite = non_finite
        return sketch.to_json()

    def distinct(self) -> tuple[int, bool]:
        """The number of distinct finite values and whether it is capped (then there are more than that many)."""
        if self.table is None:
            return self.exact_cap, True
        return int(self.table[0].size), False

    def quantiles(self, levels: dict[str, float]) -> dict[str, float | None]:
        n = self.moments.n
        if self.table is not None:
            statistic = order_statistic_exact(*self.table)
        else:
            statistic = order_statistic_binned(self.fine, n=n, low=self.moments.min, high=self.moments.max)
        return quantiles(levels, statistic, n=n, integer=self.integer)


def profile_batches(
    paths: Sequence[Path],
    *,
    format: str,
    missing: frozenset[str],
    settings: Settings,
    progress: Progress,
) -> dict[str, Any]:
    """Profile the rows of all `paths` together; see workers.datasets.profile_files for the result's keys."""
    spill = _Spill(settings.spill_bytes)
    try:
        return _profile(paths, format, missing, settings, progress, spill)
    finally:
        spill.close()


def _profile(
    paths: Sequence[Path],
    format: str,
    missing: frozenset[str],
    settings: Settings,
    progress: Progress,
    spill: _Spill,
) -> dict[str, Any]:
    columns: dict[str, _Column] = {}
    file_rows = [0] * len(paths)

    def batches(pass_index: int, wanted: Sequence[str] | None = None, csv_types: Any = None) -> Iterator[Batch]:
        for file_index, path in enumerate(paths):
            for batch in read_batches(
                path,
                format,
                missing,
                report=progress.reporter(pass_index, file_index),
                max_rows=settings.max_rows,
                columns=wanted,
                csv_types=csv_types,
                rows=file_rows[file_index] if pass_index else None,
            ):
                if not pass_index:
                    file_rows[file_index] += batch.rows
                yield batch

    for batch in batches(0):
        for name in batch.columns:
            if name not in columns:
                columns[name] = _Column(
                    name=name, exact_cap=settings.exact_budget, distinct_cap=settings.distinct_cap, spill=spill
                )
        # While unsure which columns are numeric, each keeps up to its share of the budget among those still so.
        candidates = sum(1 for column in columns.values() if column.numeric)
        cap = max(settings.exact_limit, settings.exact_budget // max(candidates, 1))
        for name, values in batch.columns.items():
            column = columns[name]
            column.limit(cap)
            column.observe(values)

    row_count = sum(file_rows)
    types = {name: column.type() for name, column in columns.items()}
    numeric_names = [
        name for name, column in columns.items() if types[name] in ("integer", "float") and column.moments.n > 0
    ]
    exact_cap = max(settings.exact_limit, settings.exact_budget // max(len(numeric_names), 1))
    distributions = {
        name: _Distribution(columns[name], settings, integer=types[name] == "integer", exact_cap=exact_cap)
        for name in numeric_names
    }
    recount = [
        name
        for name, column in columns.items()
        if types[name] not in ("integer", "float") and column.counter is not None and not column.counter_complete
    ]
    again = [name for name, distribution in distributions.items() if distribution.needs_pass_2]
    for name in [name for name in again if spill.holds(name)]:
        again.remove(name)
        for numbers in spill.read(name):
            distributions[name].add(numbers)
        spill.discard(name)
    if again or recount:
        for name in recount:
            columns[name].counter = ValueCounts(settings.distinct_cap)
        csv_types = {name: pa.float64() for name in again if columns[name].arrow_numbers}
        for batch in batches(1, [*again, *recount], csv_types):
            for name, values in batch.columns.items():
                if name in distributions:
                    distributions[name].add(as_numbers(values))
                else:
                    counter = columns[name].counter
                    assert counter is not None
                    counter.add(as_texts(values))
    for distribution in distributions.values():
        distribution.finish()
    progress.finish()

    result: dict[str, dict[str, Any]] = {}
    for name, column in columns.items():
        kind = types[name]
        numeric = kind in ("integer", "float")
        moments = column.moments
        absent = row_count - column.count
        entry: dict[str, Any] = {
            "type": kind,
            "kind": "numeric" if numeric else "categorical",
            # numeric: the finite numbers the statistics cover; count + missing + non_finite == row_count
            "count": moments.n if numeric else column.count,
            "missing": absent,
            "missing_fraction": absent / row_count if row_count else 0.0,
            "non_finite": moments.non_finite if numeric else 0,
            # What a training target's check reads: numeric with only whole numbers (3 and 3.0 alike), or not numeric.
            "integer_valued": (moments.whole if moments.n else None) if numeric else None,
        }
        if numeric:
            entry.update(_numeric_summary(column, distributions.get(name), settings))
        else:
            counter = column.counter or ValueCounts(settings.distinct_cap)
            entry.update(counter.summary(settings.top_values, key=str.lower if kind == "boolean" else None))
        result[name] = entry
    return {
        "row_count": row_count,
        "schema": [{"name": name, "type": types[name]} for name in columns],
        "columns": result,
    }


def _numeric_summary(column: _Column, distribution: _Distribution | None, settings: Settings) -> dict[str, Any]:
    moments = column.moments
    if distribution is None:
        # Every value was missing or infinite: there is nothing to place on a number line.
        return {
            "min": None,
            "max": None,
            "mean": None,
            "std": None,
            "quantiles": dict.fromkeys(settings.levels),
            "quantiles_exact": True,
            "quantile_method": INTEGER_QUANTILE_METHOD if column.integral else FLOAT_QUANTILE_METHOD,
            "histogram": {"edges": [], "counts": []},
            "distinct": 0,
            "distinct_capped": False,
            "sketch": None,
        }
    distinct, capped = distribution.distinct()
    return {
        "min": _finite(moments.min),
        "max": _finite(moments.max),
        "mean": _finite(moments.mean),
        "std": _finite(moments.std),
        "quantiles": {key: _finite(value) for key, value in distribution.quantiles(settings.levels).items()},
        # False: estimated from the fine bins, within (max - min) / quantile_bins
        "quantiles_exact": distribution.exact,
        "quantile_method": INTEGER_QUANTILE_METHOD if distribution.integer else FLOAT_QUANTILE_METHOD,
        # distinct finite numbers; when capped, there are more than `distinct`
        "distinct": distinct,
        "distinct_capped": capped,
        "histogram": {
            "edges": [float(edge) for edge in distribution.histogram.edges],
            "counts": [int(count) for count in distribution.histogram.counts],
        },
        # the column's distribution for drift (workers.stats.sketch): exact up to 1,000 values, fine bins beyond
        "sketch": distribution.sketch_json(moments.non_finite),
    }


def _sketch_from_counts(values: np.ndarray, counts: np.ndarray) -> NumericSketch:
    """The sketch of a column given as its distinct values and their counts, without repeating them all at once."""
    n = int(counts.sum())
    if values.size <= SKETCH_CAP:
        # An exact sketch is exactly this table; its moments computed from it, so they do not depend on batching.
        mean = float(np.dot(values, counts) / n)
        m2 = float(np.dot(np.square(values - mean), counts))
        data = {
            "version": SKETCH_VERSION,
            "cap": SKETCH_CAP,
            "bins": SKETCH_BINS,
            "n": n,
            "non_finite": 0,
            "min": float(values[0]),
            "max": float(values[-1]),
            "mean": mean,
            "m2": m2,
            "values": values.tolist(),
            "counts": counts.tolist(),
        }
        return NumericSketch.from_json(data)
    sketch = NumericSketch()
    # Each value once (past the cap, so the sketch is binned after one small sort), then the rest of each count.
    sketch.add(values)
    for numbers in _repeated(values, counts - 1):
        sketch.add(numbers)
    return sketch


def _repeated(values: np.ndarray, counts: np.ndarray) -> Iterator[np.ndarray]:
    """Each value repeated its count of times, in arrays of at most about SPILL_READ_VALUES numbers."""
    limit = SPILL_READ_VALUES
    cumulative = np.cumsum(counts)
    start = 0
    while start < values.size:
        before = int(cumulative[start - 1]) if start else 0
        stop = int(np.searchsorted(cumulative, before + limit, side="right"))
        if stop > start:
            yield np.repeat(values[start:stop], counts[start:stop])
            start = stop
            continue
        # one value repeated more often than the limit: in parts
        remaining = int(counts[start])
        while remaining > 0:
            yield np.full(min(remaining, limit), values[start])
            remaining -= limit
        start += 1


def _sketch_add(sketch: NumericSketch, numbers: np.ndarray) -> None:
    # While exact, the sketch sorts what it is given; small pieces first, so it is binned before a big sort.
    start, step = 0, 4096
    while sketch.exact and start < numbers.size:
        sketch.add(numbers[start : start + step])
        start, step = start + step, step * 2
    if start < numbers.size:
        sketch.add(numbers[start:])


def _finite(value: float | None) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None
