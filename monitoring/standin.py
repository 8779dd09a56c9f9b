"""Stand-ins for the metric and drift selectors other parts of the monitoring issue write (monitoring/selectors.py,
monitoring/drift_selectors.py), with their signatures, so the pages can be built and tested before those land.
Deleted once they are on main: the pages then import the real ones."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.db.models import QuerySet

from deployments.objectives import histogram_quantile
from monitoring.models import DriftReport, MetricPoint
from serving.metrics import BUCKETS_MS

MAX_POINTS = 240


def _percentile(counts: list[int], q: float) -> float | None:
    cumulative, buckets = 0, []
    for edge, count in zip((*BUCKETS_MS, float("inf")), counts, strict=False):
        cumulative += count
        buckets.append((edge, float(cumulative)))
    return histogram_quantile(buckets, q)


def _figures(requests: int, errors: int, counts: list[int], seconds: float) -> dict[str, Any]:
    return {
        "requests": requests,
        "requests_per_s": requests / seconds if seconds else 0.0,
        "errors": errors,
        "error_rate": errors / requests if requests else None,
        "p50_ms": _percentile(counts, 0.5),
        "p95_ms": _percentile(counts, 0.95),
        "p99_ms": _percentile(counts, 0.99),
    }


def _add(into: list[int], counts: list[int]) -> None:
    for i, count in enumerate(counts[: len(into)]):
        into[i] += count


def metric_series(
    *, service: Any, start: datetime, end: datetime, step_seconds: int | None = None, by_revision: bool = False
) -> dict[str, Any]:
    span = (end - start).total_seconds()
    step = step_seconds or max(60, int(-(-span // MAX_POINTS) // 60 * 60) or 60)
    slots = max(1, int(-(-span // step)))
    times = [(start + timedelta(seconds=i * step)).isoformat() for i in range(slots)]
    acc: dict[str, list[dict[str, Any]]] = {}
    for point in MetricPoint.objects.filter(service=service, start__gte=start, start__lt=end).order_by("start"):
        key = point.revision if by_revision else "all"
        rows = acc.setdefault(
            key, [{"requests": 0, "errors": 0, "counts": [0] * (len(BUCKETS_MS) + 1)} for _ in range(slots)]
        )
        slot = rows[int((point.start - start).total_seconds() // step)]
        slot["requests"] += point.requests
        slot["errors"] += point.errors
        _add(slot["counts"], list(point.latency_counts))
    if not by_revision:
        acc.setdefault("all", [{"requests": 0, "errors": 0, "counts": [0] * (len(BUCKETS_MS) + 1)}] * slots)
    series: dict[str, Any] = {}
    for key, rows in acc.items():
        figures = [_figures(r["requests"], r["errors"], r["counts"], step) for r in rows]
        series[key] = {name: [f[name] for f in figures] for name in figures[0]}
    return {"step": step, "times": times, "series": series}


def window_summary(*, service: Any, start: datetime, end: datetime, revision: str | None = None) -> dict[str, Any]:
    points = MetricPoint.objects.filter(service=service, start__gte=start, start__lt=end)
    if revision is not None:
        points = points.filter(revision=revision)
    requests = errors = 0
    counts = [0] * (len(BUCKETS_MS) + 1)
    for point in points:
        requests += point.requests
        errors += point.errors
        _add(counts, list(point.latency_counts))
    return _figures(requests, errors, counts, (end - start).total_seconds())


def deployment_markers(*, service: Any, start: datetime, end: datetime) -> list[dict[str, Any]]:
    deployments = service.deployments.filter(created_at__gte=start, created_at__lt=end).select_related("model_version")
    return [
        {
            "at": d.created_at.isoformat(),
            "kind": d.kind,
            "deployment_id": d.pk,
            "label": f"{d.kind} {d.pk}: v{d.model_version.number}",
            "status": d.status,
        }
        for d in deployments.order_by("created_at")
    ]


def drift_reports(service: Any, start: datetime, end: datetime) -> QuerySet[DriftReport]:
    return DriftReport.objects.filter(service=service, window_end__gt=start, window_end__lte=end)


def drift_heatmap(service: Any, start: datetime, end: datetime) -> dict[str, Any]:
    reports = list(
        drift_reports(service, start, end)
        .filter(status="succeeded")
        .prefetch_related("features")
        .order_by("window_end")
    )
    features = sorted({f.feature for r in reports for f in r.features.all()})
    scores: list[list[float | None]] = [[None] * len(reports) for _ in features]
    drifted: list[list[bool | None]] = [[None] * len(reports) for _ in features]
    thresholds: list[float | None] = [None] * len(features)
    for j, report in enumerate(reports):
        for f in report.features.all():
            i = features.index(f.feature)
            scores[i][j], drifted[i][j], thresholds[i] = f.score, f.drifted, f.threshold
    return {
        "times": [r.window_end.isoformat() for r in reports],
        "features": features,
        "scores": scores,
        "drifted": drifted,
        "thresholds": thresholds,
    }


def retrain_url(service: Any) -> str | None:
    deployment = service.current_deployment
    if deployment is None:
        return None
    return f"/runs/new/training/?recipe={deployment.model_version.run.recipe}"
