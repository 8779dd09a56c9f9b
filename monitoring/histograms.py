"""Percentiles from latency histograms: the one implementation the charts, the window summaries and the
deployment objectives share. Percentiles come from merged bucket counts, never from averaging percentiles."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from serving.metrics import BUCKETS_MS, OVERFLOW_MS

# One count per edge, then one for slower than the last edge (serving.metrics.Minute.counts).
COUNTS_LENGTH = len(BUCKETS_MS) + 1
# A quantile among the requests slower than the last edge is put at twice that edge: OVERFLOW_MS on BUCKETS_MS
# (where EMF reports them), 20 s on a revision's /metrics in seconds. Not the edge itself (as Prometheus does), so
# an objective at the last edge can be breached; never inf, which pages and JSON cannot show.
_OVERFLOW_FACTOR = OVERFLOW_MS / BUCKETS_MS[-1]


def histogram_quantile(buckets: Sequence[tuple[float, float]], q: float) -> float | None:
    """The q-quantile of a cumulative histogram [(upper bound, count ≤ bound)], interpolated linearly within the
    bucket it falls in (as Prometheus does). None without observations; twice the last finite bound when it falls
    in the +Inf bucket (serving.metrics.OVERFLOW_MS on BUCKETS_MS)."""
    ordered = sorted(buckets)
    if not ordered or ordered[-1][1] <= 0:
        return None
    total = ordered[-1][1]
    rank = q * total
    lower, below = 0.0, 0.0
    for bound, cumulative in ordered:
        if cumulative >= rank:
            if math.isinf(bound):
                return lower * _OVERFLOW_FACTOR
            inside = cumulative - below
            share = (rank - below) / inside if inside > 0 else 1.0
            return lower + (bound - lower) * share
        lower, below = bound, cumulative
    return lower


def empty_counts() -> list[int]:
    return [0] * COUNTS_LENGTH


def add_counts(total: list[int], counts: Iterable[int]) -> list[int]:
    """Adds `counts` into `total` element-wise, in place (a short or missing list adds nothing where it ends)."""
    for index, count in enumerate(counts):
        if index < len(total):
            total[index] += int(count)
    return total


def sum_counts(many: Iterable[Sequence[int]]) -> list[int]:
    """The element-wise sum of many histograms (each padded or cut to COUNTS_LENGTH)."""
    padded = [row if len(row) == COUNTS_LENGTH else (list(row) + empty_counts())[:COUNTS_LENGTH] for row in many]
    if not padded:
        return empty_counts()
    return [int(sum(column)) for column in zip(*padded, strict=True)]


def counts_quantile_ms(counts: Sequence[int], q: float) -> float | None:
    """The q-quantile in milliseconds of per-bucket counts on serving.metrics.BUCKETS_MS."""
    cumulative, running = [], 0
    for edge, count in zip((*BUCKETS_MS, math.inf), counts, strict=False):
        running += int(count)
        cumulative.append((edge, float(running)))
    return histogram_quantile(cumulative, q)


def bucket_bounds_ms(value_ms: float) -> tuple[float, float]:
    """The (lower, upper] edges of the bucket a latency falls in (upper is inf beyond the last edge)."""
    lower = 0.0
    for edge in BUCKETS_MS:
        if value_ms <= edge:
            return lower, edge
        lower = edge
    return lower, math.inf
