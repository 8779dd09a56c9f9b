"""Retention: old minutes become hours (same percentiles, nothing counted twice, safe to race), old hours go."""

from __future__ import annotations

import random
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from monitoring import selectors
from monitoring.histograms import COUNTS_LENGTH
from monitoring.models import MetricPoint
from monitoring.services.metrics import MinuteCounts, metrics_rollup, record_minutes

pytestmark = pytest.mark.django_db
NOW = datetime(2026, 12, 1, 14, 30, tzinfo=UTC)
OLD = datetime(2026, 11, 10, 9, 0, tzinfo=UTC)  # 21 days before NOW: past METRICS_ROLLUP_AFTER_DAYS (14)


def old_minutes(served: Any, *, hours: int = 2) -> None:
    rng = random.Random(7)
    for revision in ("d1", "d2"):
        minutes = []
        for i in range(0, hours * 60, 3):  # every third minute of each hour
            counts = [rng.randrange(0, 20) for _ in range(COUNTS_LENGTH)]
            minutes.append(
                MinuteCounts(
                    OLD + timedelta(minutes=i),
                    requests=sum(counts),
                    errors=counts[0] // 4,
                    latency_counts=counts,
                    latency_sum_ms=float(i),
                )
            )
        record_minutes(served, revision, minutes, source="portal")


def figures(served: Any, **window: Any) -> list[Any]:
    summary = selectors.window_summary(service=served, **window)
    return [summary[k] for k in ("requests", "errors", "p50_ms", "p95_ms", "p99_ms")]


def test_rolled_up_hours_give_the_same_figures_and_a_second_run_changes_nothing(served: Any, settings: Any) -> None:
    settings.METRICS_ROLLUP_AFTER_DAYS = 14
    old_minutes(served)
    recent = MinuteCounts(NOW.replace(minute=0), requests=5, latency_counts=[5] + [0] * (COUNTS_LENGTH - 1))
    record_minutes(served, "d1", [recent], source="portal")
    windows: list[dict[str, Any]] = [
        {"start": OLD, "end": OLD + timedelta(hours=2)},
        {"start": OLD, "end": OLD + timedelta(hours=1), "revision": "d2"},
        {"start": OLD - timedelta(days=1), "end": NOW},
    ]
    before = [figures(served, **w) for w in windows]
    series_before = selectors.metric_series(service=served, start=OLD, end=OLD + timedelta(hours=2), step_seconds=3600)

    done = metrics_rollup(NOW)
    assert (done.hours, done.minutes) == (2, 80)
    assert not MetricPoint.objects.filter(resolution=60, start__lt=NOW - timedelta(days=14)).exists()
    hourly = MetricPoint.objects.filter(resolution=3600)
    assert hourly.count() == 4 and set(hourly.values_list("source", flat=True)) == {"rollup"}
    assert MetricPoint.objects.filter(resolution=60).count() == 1  # the recent minute stays
    assert [figures(served, **w) for w in windows] == before
    series = selectors.metric_series(service=served, start=OLD, end=OLD + timedelta(hours=2))
    assert series["step"] == 3600  # rolled-up hours are never split into minutes
    assert series["series"] == series_before["series"]

    again = metrics_rollup(NOW)
    assert (again.hours, again.minutes) == (0, 0)
    assert [figures(served, **w) for w in windows] == before


def test_hours_past_retention_are_deleted(served: Any, settings: Any) -> None:
    settings.METRICS_RETENTION_DAYS = 400
    for start, resolution in ((NOW - timedelta(days=401), 3600), (NOW - timedelta(days=399), 3600)):
        MetricPoint.objects.create(
            service=served, revision="d1", resolution=resolution, start=start.replace(minute=0), requests=1
        )
    assert metrics_rollup(NOW).deleted_hours == 1
    assert list(MetricPoint.objects.values_list("start", flat=True)) == [(NOW - timedelta(days=399)).replace(minute=0)]


@pytest.mark.django_db(transaction=True)
def test_two_rollups_at_once_count_every_minute_once(served: Any, settings: Any) -> None:
    """Each run on its own database connection, started together (on PostgreSQL: row locks; SQLite: one writer)."""
    from django.db import connection

    settings.METRICS_ROLLUP_AFTER_DAYS = 14
    old_minutes(served, hours=4)
    before = figures(served, start=OLD, end=OLD + timedelta(hours=4))
    barrier = threading.Barrier(2)
    results: list[Any] = []

    def run() -> None:
        try:
            barrier.wait()
            results.append(metrics_rollup(NOW))
        except BaseException as exc:  # noqa: BLE001  (reported below)
            results.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert all(not isinstance(result, BaseException) for result in results), results
    assert sum(result.minutes for result in results) == 160 and sum(result.hours for result in results) == 4
    assert MetricPoint.objects.filter(resolution=3600).count() == 8
    assert not MetricPoint.objects.filter(resolution=60).exists()
    assert figures(served, start=OLD, end=OLD + timedelta(hours=4)) == before
