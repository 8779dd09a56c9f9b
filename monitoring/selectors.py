"""Reads of the metric series: charts (`metric_series`), one window's figures (`window_summary`, also what the
deployment objectives judge; `window_summaries` for many services and their revisions in one query), deploy and
rollback markers, revisions as people know them, and the check of a window a page or the API asks for.

Percentiles always come from the merged histogram of every row in a step or window (bucket counts added, then
the quantile: monitoring.histograms), never from averaging percentiles. A whole window's counters and histogram
buckets are summed in SQL; a chart's steps add their rows' histograms in Python (bounded: a week of minutes is
10,080 rows per revision).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import BigIntegerField, Max, Min, Q, QuerySet, Sum
from django.db.models.fields.json import KT
from django.db.models.functions import Cast, Coalesce
from django.utils import timezone

from deployments.models import Deployment, Service
from monitoring.histograms import COUNTS_LENGTH, counts_quantile_ms, sum_counts
from monitoring.models import MetricPoint

# The steps a series is drawn with (seconds); the smallest that keeps a window within MAX_POINTS is chosen.
STEPS = (60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 172800, 604800)
MAX_POINTS = 300
# An explicit step_seconds is raised if a window would have more points than this.
MAX_EXPLICIT_POINTS = 5000
QUANTILES = (("p50_ms", 0.50), ("p95_ms", 0.95), ("p99_ms", 0.99))
_INTEGERS = ("requests", "errors", "client_errors", "rows", "captured_rows", "capture_dropped_rows")


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _overlapping(start: datetime, end: datetime) -> Q:
    """Rows (minutes and rolled-up hours) whose interval overlaps [start, end)."""
    return (
        Q(resolution=60, start__gt=start - timedelta(seconds=60))
        | Q(resolution=3600, start__gt=start - timedelta(seconds=3600))
    ) & Q(start__lt=end)


def metric_points(
    *, service: Service | int, start: datetime, end: datetime, revision: str | None = None
) -> QuerySet[MetricPoint]:
    """The rows (minutes and rolled-up hours) whose interval overlaps [start, end)."""
    service_id = service if isinstance(service, int) else service.pk
    rows = MetricPoint.objects.filter(_overlapping(start, end), service_id=service_id)
    if revision is not None:
        rows = rows.filter(revision=revision)
    return rows


# A custom window may end this far after now (clocks differ a little); further is refused: nothing is known there.
FUTURE_SLACK = timedelta(minutes=5)


def _figures(requests: int, errors: int, counts: list[int], client_errors: int = 0) -> dict[str, Any]:
    figures: dict[str, Any] = {
        "error_rate": errors / requests if requests else None,
        "client_error_rate": client_errors / requests if requests else None,
    }
    for name, q in QUANTILES:
        figures[name] = counts_quantile_ms(counts, q) if requests else None
    return figures


_SUMMED = (*_INTEGERS, "latency_sum_ms", *(f"bucket_{i}" for i in range(COUNTS_LENGTH)))


def _window_sums() -> dict[str, Any]:
    """What a window's figures are made of, summed by the database: the counters, the latency sum, and the
    histogram (each bucket's count is a JSON array element)."""
    return {
        **{name: Coalesce(Sum(name), 0) for name in _INTEGERS},
        "latency_sum_ms": Coalesce(Sum("latency_sum_ms"), 0.0),
        **{
            f"bucket_{i}": Coalesce(Sum(Cast(KT(f"latency_counts__{i}"), BigIntegerField())), 0)
            for i in range(COUNTS_LENGTH)
        },
        # When the window's data begins and ends: its rate is also given over that time (a service that started
        # five minutes ago at 2/s is at 2/s, not at 0.01/s over a day).
        "first_start": Min("start"),
        "last_minute": Max("start", filter=Q(resolution=60)),
        "last_hour": Max("start", filter=Q(resolution=3600)),
    }


def _data_span(sums: dict[str, Any], start: datetime, end: datetime) -> float | None:
    """Seconds of [start, end) from the first row's start to the last row's end (at least a minute); None
    without rows."""
    first = sums.get("first_start")
    ends = [
        moment + timedelta(seconds=seconds)
        for moment, seconds in ((sums.get("last_minute"), 60), (sums.get("last_hour"), 3600))
        if moment is not None
    ]
    if first is None or not ends:
        return None
    return max((min(max(ends), end) - max(first, start)).total_seconds(), 60.0)


def _summary(sums: dict[str, Any], start: datetime, end: datetime) -> dict[str, Any]:
    """A window's figures from its sums (_window_sums)."""
    counts = [int(sums[f"bucket_{i}"]) for i in range(COUNTS_LENGTH)]
    requests = int(sums["requests"])
    seconds = max((end - start).total_seconds(), 1.0)
    data_seconds = _data_span(sums, start, end) if requests else None
    return {
        "start": iso(start),
        "end": iso(end),
        **{name: int(sums[name]) for name in _INTEGERS},
        "requests_per_s": requests / seconds,
        # The same requests over the time the window has data for (None without requests).
        "data_seconds": data_seconds,
        "requests_per_s_with_data": requests / data_seconds if data_seconds else None,
        "mean_ms": float(sums["latency_sum_ms"]) / requests if requests else None,
        **_figures(requests, int(sums["errors"]), counts, int(sums["client_errors"])),
    }


def window_summary(
    *, service: Service | int, start: datetime, end: datetime, revision: str | None = None
) -> dict[str, Any]:
    """One window's figures: {"start", "end", "requests", "errors", "client_errors", "rows", "requests_per_s" (over
    the whole window), "data_seconds" and "requests_per_s_with_data" (over the time from its first row to its last),
    "error_rate" (5xx share, None without requests), "client_error_rate" (4xx share, likewise), "p50_ms", "p95_ms",
    "p99_ms" (None without requests), "mean_ms"} — of one revision, or of all of them. One query."""
    rows = metric_points(service=service, start=start, end=end, revision=revision)
    return _summary(rows.aggregate(**_window_sums()), start, end)


def window_summaries(*, services: Iterable[Service | int], start: datetime, end: datetime) -> dict[int, dict[str, Any]]:
    """window_summary of many services at once, and of each of their revisions, in one query whatever their number:
    {service id: {"summary": the figures of all its revisions, "revisions": {revision: its figures}}}. A service
    without rows in the window has the figures of no requests and no revisions. The service's figures add its
    revisions' sums (counters and histograms add exactly), so they are window_summary's."""
    ids = [service if isinstance(service, int) else service.pk for service in services]
    sums: dict[int, dict[str, dict[str, Any]]] = {service_id: {} for service_id in ids}
    grouped = (
        MetricPoint.objects.filter(_overlapping(start, end), service_id__in=ids)
        .order_by()
        .values("service_id", "revision")
        .annotate(**_window_sums())
    )
    for row in grouped:
        sums[row["service_id"]][row["revision"]] = row
    answer = {}
    for service_id, by_revision in sums.items():
        whole: dict[str, Any] = {name: sum(row[name] for row in by_revision.values()) for name in _SUMMED}
        for name, pick in (("first_start", min), ("last_minute", max), ("last_hour", max)):
            moments = [row[name] for row in by_revision.values() if row[name] is not None]
            whole[name] = pick(moments) if moments else None
        answer[service_id] = {
            "summary": _summary(whole, start, end),
            "revisions": {revision: _summary(row, start, end) for revision, row in sorted(by_revision.items())},
        }
    return answer


def series_step(start: datetime, end: datetime, *, rolled_up: bool = False) -> int:
    """The smallest step that draws [start, end) in at most MAX_POINTS points; at least an hour where the window
    holds rolled-up hours (they cannot be split into minutes)."""
    seconds = max((end - start).total_seconds(), 60.0)
    floor = 3600 if rolled_up else 60
    for step in STEPS:
        if step >= floor and seconds / step <= MAX_POINTS:
            return step
    return STEPS[-1]


def metric_series(
    *,
    service: Service | int,
    start: datetime,
    end: datetime,
    step_seconds: int | None = None,
    by_revision: bool = False,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The series of [start, end) for a chart:

        {"step": seconds, "times": [iso start of each step, …],
         "series": {"all" (or each revision): {"requests": […], "requests_per_s": […], "errors": […],
                    "client_errors": […], "error_rate": [… None without requests], "client_error_rate": […],
                    "p50_ms": […], "p95_ms": […], "p99_ms": […]}}}

    Steps are aligned to whole multiples of the step since the epoch (UTC). Each step's percentiles come from its
    rows' merged histogram. A step not yet complete (it ends after now less SERVING_METRICS_FLUSH_SECONDS, so its
    minutes are still arriving) has requests_per_s None: drawn as a gap, not as a fall to 0."""
    rows = list(
        metric_points(service=service, start=start, end=end).values_list(
            "revision", "resolution", "start", "requests", "errors", "client_errors", "latency_counts"
        )
    )
    rolled_up = any(row[1] == 3600 for row in rows)
    if step_seconds is None:
        step = series_step(start, end, rolled_up=rolled_up)
    else:
        step = max(60, int(step_seconds) // 60 * 60)
        if rolled_up:
            step = max(3600, math.ceil(step / 3600) * 3600)
        while (end - start).total_seconds() / step > MAX_EXPLICIT_POINTS:
            step *= 2
    first = math.floor(start.timestamp() / step) * step
    count = max(1, math.ceil((end.timestamp() - first) / step))
    times = [datetime.fromtimestamp(first + i * step, UTC) for i in range(count)]
    # Rows of a minute arrive once it is over (plus the flush): steps ending after this are partial.
    complete_until = (now or timezone.now()).timestamp() - float(settings.SERVING_METRICS_FLUSH_SECONDS)
    complete = [first + (i + 1) * step <= complete_until for i in range(count)]
    # Per series and step: [requests, errors, client_errors, [histograms to add]].
    buckets: dict[str, list[list[Any]]] = {}
    for revision, _resolution, row_start, requests, errors, client_errors, latency_counts in rows:
        key = revision if by_revision else "all"
        if key not in buckets:
            buckets[key] = [[0, 0, 0, []] for _ in range(count)]
        index = min(max(int((row_start.timestamp() - first) // step), 0), count - 1)
        bucket = buckets[key][index]
        bucket[0] += requests
        bucket[1] += errors
        bucket[2] += client_errors
        bucket[3].append(latency_counts or [])
    if not by_revision and not buckets:
        buckets["all"] = [[0, 0, 0, []] for _ in range(count)]
    series = {}
    for key in sorted(buckets):
        values: dict[str, list[Any]] = {
            "requests": [],
            "requests_per_s": [],
            "errors": [],
            "client_errors": [],
            "error_rate": [],
            "client_error_rate": [],
            **{name: [] for name, _ in QUANTILES},
        }
        for i, (requests, errors, client_errors, counts) in enumerate(buckets[key]):
            values["requests"].append(requests)
            values["requests_per_s"].append(requests / step if complete[i] else None)
            values["errors"].append(errors)
            values["client_errors"].append(client_errors)
            merged = sum_counts(counts) if requests else []
            for name, value in _figures(requests, errors, merged, client_errors).items():
                values[name].append(value)
        series[key] = values
    return {"step": step, "times": [iso(t) for t in times], "series": series}


def revision_label(deployment: Deployment) -> str:
    """The revision name metric rows (and capture files) of a deployment carry: the serving processes' REVISION,
    `d<id>` of the deploy that first started the backend revision. A rollback reuses that revision, so its traffic
    is labelled with the deploy it went back to. (Deployment.revision is the backend's name for it: `r-d<id>`
    locally, a task definition ARN on aws.)"""
    first = None
    if deployment.kind == Deployment.Kind.ROLLBACK and deployment.revision:
        first = (
            Deployment.objects.filter(
                service_id=deployment.service_id, revision=deployment.revision, kind=Deployment.Kind.DEPLOY
            )
            .order_by("created_at", "id")
            .values_list("pk", flat=True)
            .first()
        )
    return _label(deployment, first)


def _label(deployment: Deployment, first_deploy: int | None) -> str:
    """revision_label, given the id of the first deploy of the deployment's backend revision (None: there is none)."""
    if deployment.kind == Deployment.Kind.ROLLBACK and deployment.revision and first_deploy is not None:
        return f"d{first_deploy}"
    return f"d{deployment.pk}"


def service_revisions(service_ids: Iterable[int]) -> dict[int, dict[str, Any]]:
    """Each service's revisions as people know them, in one query however many services: {service id: {"names":
    {revision label (revision_label) → "v3 (deploy 12)": the model version and the deployment that first served
    it}, "labels": {deployment id → its revision label}}}."""
    ids = list(service_ids)
    answer: dict[int, dict[str, Any]] = {service_id: {"names": {}, "labels": {}} for service_id in ids}
    deployments = (
        Deployment.objects.filter(service_id__in=ids)
        .select_related("model_version")
        .order_by("created_at", "id")
        .only("id", "service_id", "kind", "revision", "created_at", "model_version__number")
    )
    first_deploys: dict[tuple[int, str], int] = {}
    ordered = list(deployments)
    for deployment in ordered:
        if deployment.kind == Deployment.Kind.DEPLOY and deployment.revision:
            first_deploys.setdefault((deployment.service_id, deployment.revision), deployment.pk)
    for deployment in ordered:
        label = _label(deployment, first_deploys.get((deployment.service_id, deployment.revision)))
        service = answer[deployment.service_id]
        service["labels"][deployment.pk] = label
        service["names"].setdefault(label, f"v{deployment.model_version.number} ({deployment.kind} {deployment.pk})")
    return answer


def deployment_markers(*, service: Service | int, start: datetime, end: datetime) -> list[dict[str, Any]]:
    """Deploys and rollbacks of the service that took (or tried to take) traffic in [start, end), oldest first:
    [{"at": iso (when it took traffic; else when it started or was made), "kind": "deploy" | "rollback",
    "deployment_id", "revision" (the label its metric rows carry: revision_label), "label" ("deploy v3",
    "rollback to v2"), "status"}]."""
    service_id = service if isinstance(service, int) else service.pk
    deployments = (
        Deployment.objects.filter(service_id=service_id)
        .annotate(at=Coalesce("baking_at", "started_at", "created_at"))
        .filter(at__gte=start, at__lt=end)
        .select_related("model_version")
        .order_by("at", "id")
    )
    markers = []
    for deployment in deployments:
        number = deployment.model_version.number
        label = f"rollback to v{number}" if deployment.kind == Deployment.Kind.ROLLBACK else f"deploy v{number}"
        markers.append(
            {
                "at": iso(deployment.at),
                "kind": deployment.kind,
                "deployment_id": deployment.pk,
                "revision": revision_label(deployment),
                "label": label,
                "status": deployment.status,
            }
        )
    return markers


def metric_window_problems(
    *, start: datetime | None, end: datetime | None, now: datetime | None = None
) -> dict[str, list[str]]:
    """What is wrong with a window a page or the API asks for, by field ({} when nothing): both given, end after
    start, not starting before the oldest kept hour (settings.METRICS_RETENTION_DAYS), not ending more than
    FUTURE_SLACK after now (nothing is known there, and requests/s would be averaged over it)."""
    problems: dict[str, list[str]] = {}
    moment = now or timezone.now()
    if start is None:
        problems["start"] = ["required: a date and time (ISO 8601, e.g. 2026-12-01T14:00:00Z)"]
    if end is None:
        problems["end"] = ["required: a date and time (ISO 8601, e.g. 2026-12-01T15:00:00Z)"]
    if start is None or end is None:
        return problems
    if end <= start:
        problems["end"] = [f"must be after start ({iso(start)}), got {iso(end)}"]
    elif end > moment + FUTURE_SLACK:
        latest = iso(moment + FUTURE_SLACK)
        problems["end"] = [f"must not be in the future: on or before {latest}, got {iso(end)}"]
    days = settings.METRICS_RETENTION_DAYS
    if (end - start) > timedelta(days=days):
        problems["start"] = [f"the window is longer than the {days} days metrics are kept"]
    elif start < moment - timedelta(days=days):
        oldest = iso(moment - timedelta(days=days))
        problems["start"] = [f"metrics are kept {days} days: start on or after {oldest}"]
    return problems


def first_metric_at(service: Service | int) -> datetime | None:
    """When the service's first metric row begins (None before any): how long it has served."""
    service_id = service if isinstance(service, int) else service.pk
    return MetricPoint.objects.filter(service_id=service_id).aggregate(first=Min("start"))["first"]
