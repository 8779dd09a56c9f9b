"""Metric points: recording per-minute aggregates, rolling old minutes up into hours, and retention.

- `record_minutes(service, revision, minutes, source=…)`: the serving runtime's ingest ADDS each part to its minute
  (a part id is taken once, in the same transaction as the addition); `replace=True` (CloudWatch's pull) REPLACES
  each minute with what CloudWatch now says.
- `metrics_rollup(now)`: minutes older than settings.METRICS_ROLLUP_AFTER_DAYS become hourly rows (resolution 3600,
  source rollup), one transaction per (service, hour); hourly rows older than settings.METRICS_RETENTION_DAYS go.

Race safety: a minute's row is made if missing (INSERT … ON CONFLICT DO NOTHING), then locked (SELECT … FOR
UPDATE, in (revision, start) order so two writers cannot deadlock) and added to; the latency histogram is a JSON
list, so it is added element-wise under that lock. On SQLite every write transaction is IMMEDIATE, so writers queue.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models.functions import TruncHour
from django.utils import timezone

from deployments.models import Service
from monitoring.histograms import COUNTS_LENGTH, add_counts, empty_counts
from monitoring.models import IngestPart, MetricPoint

MINUTE = 60
HOUR = 3600
_ADDED = ("requests", "errors", "client_errors", "rows", "captured_rows", "capture_dropped_rows")


@dataclass(frozen=True)
class MinuteCounts:
    """What one minute (or one part of it) of one revision did. `part` is the ingest's part id (empty: none)."""

    start: datetime
    requests: int = 0
    errors: int = 0
    client_errors: int = 0
    rows: int = 0
    latency_counts: Sequence[int] = field(default_factory=empty_counts)
    latency_sum_ms: float = 0.0
    captured_rows: int = 0
    capture_dropped_rows: int = 0
    part: str = ""


@dataclass(frozen=True)
class Recorded:
    taken: int  # minutes (parts) added or replaced
    duplicated: int  # parts already taken before: nothing added


def _check(minute: MinuteCounts) -> None:
    if len(minute.latency_counts) != COUNTS_LENGTH:
        raise ValueError(f"latency_counts must have {COUNTS_LENGTH} counts, got {len(minute.latency_counts)}")
    if minute.start.tzinfo is None or minute.start.timestamp() % MINUTE:
        raise ValueError(f"minute start {minute.start!r} must be an aware datetime on a whole minute")


def record_minutes(
    service: Service,
    revision: str,
    minutes: Iterable[MinuteCounts],
    *,
    source: str,
    replace: bool = False,
) -> Recorded:
    """Record per-minute aggregates of `revision` of `service`, all or nothing. Adding (the ingest): each part is
    taken once — a part taken before is counted as duplicated and adds nothing. `replace=True` (CloudWatch):
    each minute's row becomes exactly what is given."""
    minutes = list(minutes)
    for minute in minutes:
        _check(minute)
    if replace:
        return _replace(service, revision, minutes, source=source)
    with transaction.atomic():
        fresh: list[MinuteCounts] = []
        duplicated = 0
        for minute in sorted(minutes, key=lambda m: (m.start, m.part)):
            if minute.part:
                try:
                    with transaction.atomic():  # a savepoint: a part taken before fails alone
                        IngestPart.objects.create(
                            service=service, revision=revision, part=minute.part, minute=minute.start
                        )
                except IntegrityError:
                    duplicated += 1
                    continue
            fresh.append(minute)
        _add(service, revision, fresh, source=source)
    return Recorded(taken=len(fresh), duplicated=duplicated)


def _add(service: Service, revision: str, minutes: list[MinuteCounts], *, source: str) -> None:
    merged: dict[datetime, list[MinuteCounts]] = {}
    for minute in minutes:
        merged.setdefault(minute.start.astimezone(UTC), []).append(minute)
    if not merged:
        return
    rows = _locked_points(service.pk, MINUTE, [revision], list(merged), source=source)
    for row in rows:
        _add_into(row, merged[row.start.astimezone(UTC)])
    MetricPoint.objects.bulk_update(rows, _SUMMED_FIELDS)


_SUMMED_FIELDS = [*_ADDED, "latency_sum_ms", "latency_counts", "updated_at"]


def _locked_points(
    service_id: int, resolution: int, revisions: list[str], starts: list[datetime], *, source: str
) -> list[MetricPoint]:
    """The rows of these revisions and starts, made empty where missing, locked (in one order: no deadlock between
    two writers). The ingest adds minutes into them; the roll-up adds minutes into hours."""
    MetricPoint.objects.bulk_create(
        [
            MetricPoint(
                service_id=service_id,
                revision=revision,
                resolution=resolution,
                start=start,
                source=source,
                latency_counts=empty_counts(),
            )
            for revision in sorted(revisions)
            for start in sorted(starts)
        ],
        ignore_conflicts=True,
    )
    return list(
        MetricPoint.objects.select_for_update()
        .filter(service_id=service_id, resolution=resolution, revision__in=revisions, start__in=starts)
        .order_by("revision", "start")
    )


def _add_into(target: MetricPoint, parts: Iterable[MinuteCounts | MetricPoint]) -> None:
    """Add each part's counts, sums and latency histogram into `target` (not saved)."""
    counts = (list(target.latency_counts or []) + empty_counts())[:COUNTS_LENGTH]
    for part in parts:
        for name in _ADDED:
            setattr(target, name, getattr(target, name) + getattr(part, name))
        target.latency_sum_ms += part.latency_sum_ms
        add_counts(counts, part.latency_counts or [])
    target.latency_counts = counts
    target.updated_at = timezone.now()


def _replace(service: Service, revision: str, minutes: list[MinuteCounts], *, source: str) -> Recorded:
    latest = {minute.start.astimezone(UTC): minute for minute in minutes}  # the last one given for a minute wins
    now = timezone.now()
    MetricPoint.objects.bulk_create(
        [
            MetricPoint(
                service=service,
                revision=revision,
                resolution=MINUTE,
                start=start,
                source=source,
                requests=m.requests,
                errors=m.errors,
                client_errors=m.client_errors,
                rows=m.rows,
                latency_counts=[int(c) for c in m.latency_counts],
                latency_sum_ms=m.latency_sum_ms,
                captured_rows=m.captured_rows,
                capture_dropped_rows=m.capture_dropped_rows,
                updated_at=now,
            )
            for start, m in sorted(latest.items())
        ],
        update_conflicts=True,
        unique_fields=["service", "revision", "resolution", "start"],
        update_fields=[*_ADDED, "latency_sum_ms", "latency_counts", "source", "updated_at"],
    )
    return Recorded(taken=len(latest), duplicated=0)


# --- roll-up and retention -------------------------------------------------------------------------------------


def _floor_hour(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def minute_rows_kept_since(now: datetime) -> datetime:
    """Minute rows starting before this are rolled up (the start of an hour)."""
    return _floor_hour(now - timedelta(days=settings.METRICS_ROLLUP_AFTER_DAYS))


def hour_rows_kept_since(now: datetime) -> datetime:
    """Hourly rows starting before this are deleted."""
    return _floor_hour(now - timedelta(days=settings.METRICS_RETENTION_DAYS))


@dataclass(frozen=True)
class Rollup:
    hours: int  # (service, hour) groups rolled up by this call
    minutes: int  # minute rows summed and deleted
    deleted_hours: int  # hourly rows past retention deleted
    deleted_parts: int  # ingest part ids old enough that their minutes are refused anyway


def metrics_rollup(now: datetime | None = None) -> Rollup:
    """Roll minutes older than settings.METRICS_ROLLUP_AFTER_DAYS up into hourly rows, one transaction per
    (service, hour); delete hourly rows past settings.METRICS_RETENTION_DAYS. Idempotent, and safe to run twice at
    once: each group's minute rows are locked, summed into the hour and deleted together, so a second run finds
    them gone."""
    now = now or timezone.now()
    cutoff = minute_rows_kept_since(now)
    groups = (
        MetricPoint.objects.filter(resolution=MINUTE, start__lt=cutoff)
        .annotate(hour=TruncHour("start", tzinfo=UTC))
        .order_by("service_id", "hour")
        .values_list("service_id", "hour")
        .distinct()
    )
    hours = minutes = 0
    for service_id, hour in list(groups):
        summed = _roll_up_hour(service_id, _floor_hour(hour))
        if summed:
            hours += 1
            minutes += summed
    deleted_hours, _ = MetricPoint.objects.filter(resolution=HOUR, start__lt=hour_rows_kept_since(now)).delete()
    # A part received this long ago was of a minute the ingest refuses now: its id cannot come back to be added.
    forgotten = oldest_ingest_minute(now) - timedelta(hours=1)
    deleted_parts, _ = IngestPart.objects.filter(received_at__lt=forgotten).delete()
    return Rollup(hours=hours, minutes=minutes, deleted_hours=deleted_hours, deleted_parts=deleted_parts)


def _roll_up_hour(service_id: int, hour: datetime) -> int:
    with transaction.atomic():
        rows = list(
            MetricPoint.objects.select_for_update()
            .filter(service_id=service_id, resolution=MINUTE, start__gte=hour, start__lt=hour + timedelta(hours=1))
            .order_by("revision", "start")
        )
        if not rows:
            return 0  # another run took this hour first
        by_revision: dict[str, list[MetricPoint]] = {}
        for row in rows:
            by_revision.setdefault(row.revision, []).append(row)
        hourly = _locked_points(service_id, HOUR, list(by_revision), [hour], source=MetricPoint.Source.ROLLUP)
        for target in hourly:
            _add_into(target, by_revision[target.revision])
        MetricPoint.objects.bulk_update(hourly, _SUMMED_FIELDS)
        MetricPoint.objects.filter(pk__in=[row.pk for row in rows]).delete()
    return len(rows)


def oldest_ingest_minute(now: datetime) -> datetime:
    """The ingest refuses minutes before this: they would land among rows already rolled up (or about to be)."""
    return minute_rows_kept_since(now) + timedelta(hours=1)
