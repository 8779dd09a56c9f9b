"""Series and window figures: steps, merged-histogram percentiles, markers, window checks, a week's cost."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from deployments.models import Deployment
from deployments.objectives import Signals, judge
from monitoring import selectors
from monitoring.histograms import COUNTS_LENGTH, counts_quantile_ms
from monitoring.services.metrics import MinuteCounts, record_minutes
from serving.metrics import BUCKETS_MS, OVERFLOW_MS

pytestmark = pytest.mark.django_db
T0 = datetime(2026, 12, 1, 14, 0, tzinfo=UTC)


def counts(**at: int) -> list[int]:
    values = [0] * COUNTS_LENGTH
    for index, count in at.items():
        values[int(index[1:])] = count
    return values


def test_percentiles_come_from_the_merged_histogram_not_from_averaged_percentiles(served: Any) -> None:
    # Minute one: 99 fast answers (bucket 3, ≤ 2.5 ms); minute two: one slow answer (bucket 12, ≤ 2500 ms).
    record_minutes(served, "d1", [MinuteCounts(T0, requests=99, latency_counts=counts(b3=99))], source="portal")
    slow = MinuteCounts(T0 + timedelta(minutes=1), requests=1, errors=1, latency_counts=counts(b12=1))
    record_minutes(served, "d1", [slow], source="portal")
    summary = selectors.window_summary(service=served, start=T0, end=T0 + timedelta(minutes=2))
    merged = counts(b3=99, b12=1)
    assert summary["requests"] == 100 and summary["errors"] == 1 and summary["error_rate"] == pytest.approx(0.01)
    assert summary["p99_ms"] == pytest.approx(counts_quantile_ms(merged, 0.99)) and summary["p99_ms"] <= 2.5
    # Averaging the two minutes' p99s would say ~1250 ms.
    assert summary["requests_per_s"] == pytest.approx(100 / 120)
    series = selectors.metric_series(service=served, start=T0, end=T0 + timedelta(minutes=2))
    assert series["step"] == 60 and series["times"] == ["2026-12-01T14:00:00Z", "2026-12-01T14:01:00Z"]
    assert series["series"]["all"]["requests"] == [99, 1]
    assert series["series"]["all"]["error_rate"] == [0.0, 1.0]
    assert series["series"]["all"]["p99_ms"][1] > 1000
    wide = selectors.metric_series(service=served, start=T0, end=T0 + timedelta(minutes=2), step_seconds=120)
    assert wide["series"]["all"]["requests"] == [100]
    assert wide["series"]["all"]["p99_ms"] == [pytest.approx(summary["p99_ms"])]


def test_a_p99_among_requests_slower_than_the_last_edge_is_overflow_ms_and_breaches_an_objective_at_that_edge(
    served: Any,
) -> None:
    slow = MinuteCounts(T0, requests=100, latency_counts=counts(b3=90, b15=10))  # b15: slower than 10 s
    record_minutes(served, "d1", [slow], source="portal")
    summary = selectors.window_summary(service=served, start=T0, end=T0 + timedelta(minutes=1))
    assert summary["p99_ms"] == OVERFLOW_MS == 2 * BUCKETS_MS[-1]
    assert summary["p50_ms"] <= 2.5 and counts_quantile_ms(counts(b3=90, b15=10), 0.9) == pytest.approx(2.5)
    series = selectors.metric_series(service=served, start=T0, end=T0 + timedelta(minutes=1))
    assert series["series"]["all"]["p99_ms"] == [OVERFLOW_MS]
    signals = Signals(requests=100, errors=0, p99_latency_ms=summary["p99_ms"])
    verdict = judge({"p99_latency_ms": BUCKETS_MS[-1]}, signals, source="metrics")
    assert verdict.breached is not None and verdict.breached.name == "p99_latency_ms"


def test_by_revision_and_an_empty_window(served: Any) -> None:
    record_minutes(served, "d1", [MinuteCounts(T0, requests=3, latency_counts=counts(b5=3))], source="portal")
    record_minutes(served, "d2", [MinuteCounts(T0, requests=1, latency_counts=counts(b6=1))], source="portal")
    series = selectors.metric_series(service=served, start=T0, end=T0 + timedelta(minutes=1), by_revision=True)
    assert {k: v["requests"] for k, v in series["series"].items()} == {"d1": [3], "d2": [1]}
    assert (
        selectors.window_summary(service=served, start=T0, end=T0 + timedelta(minutes=1), revision="d2")["requests"]
        == 1
    )
    later = T0 + timedelta(hours=1)
    empty = selectors.metric_series(service=served, start=later, end=later + timedelta(minutes=3))
    assert empty["series"]["all"]["requests"] == [0, 0, 0] and empty["series"]["all"]["p99_ms"] == [None] * 3
    nothing = selectors.window_summary(service=served, start=later, end=later + timedelta(minutes=3))
    assert nothing["requests"] == 0 and nothing["p99_ms"] is None and nothing["error_rate"] is None


def test_many_services_figures_in_one_query_are_each_window_summary(
    served: Any, users: Any, project: Any, staging: Any
) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from deployments.models import Service
    from monitoring.models import MetricPoint
    from tests.monitoring.conftest import make_model_version

    other = Service.objects.create(
        registered_model=make_model_version(project, users.data_scientist, model="other").registered_model,
        environment=staging,
        name="other",
        backend="local",
        created_by=users.admin,
    )
    quiet = Service.objects.create(
        registered_model=make_model_version(project, users.data_scientist, model="quiet").registered_model,
        environment=staging,
        name="quiet",
        backend="local",
        created_by=users.admin,
    )
    record_minutes(
        served, "d1", [MinuteCounts(T0, requests=90, errors=2, latency_counts=counts(b3=90))], source="portal"
    )
    record_minutes(
        served, "d2", [MinuteCounts(T0, requests=10, client_errors=3, latency_counts=counts(b9=10))], source="portal"
    )
    record_minutes(other, "d7", [MinuteCounts(T0, requests=5, latency_counts=counts(b12=5))], source="portal")
    # An hour rolled up (the window overlaps it) counts too, as in window_summary.
    MetricPoint.objects.create(
        service=other,
        revision="d7",
        resolution=3600,
        start=T0 - timedelta(minutes=30),
        requests=20,
        latency_sum_ms=40.0,
        latency_counts=counts(b4=20),
        source="rollup",
    )
    start, end = T0 - timedelta(minutes=10), T0 + timedelta(minutes=1)
    with CaptureQueriesContext(connection) as captured:
        many = selectors.window_summaries(services=[served, other.pk, quiet], start=start, end=end)
    assert len(captured) == 1
    assert set(many) == {served.pk, other.pk, quiet.pk}
    for service in (served, other, quiet):
        assert many[service.pk]["summary"] == selectors.window_summary(service=service, start=start, end=end)
        for revision, figures in many[service.pk]["revisions"].items():
            assert figures == selectors.window_summary(service=service, start=start, end=end, revision=revision)
    assert list(many[served.pk]["revisions"]) == ["d1", "d2"] and list(many[other.pk]["revisions"]) == ["d7"]
    assert many[other.pk]["summary"]["requests"] == 25
    assert many[served.pk]["summary"]["client_errors"] == 3 and many[served.pk]["summary"]["errors"] == 2
    assert many[quiet.pk] == {"summary": selectors.window_summary(service=quiet, start=start, end=end), "revisions": {}}
    assert many[quiet.pk]["summary"]["requests"] == 0 and many[quiet.pk]["summary"]["p99_ms"] is None


def test_revisions_are_named_as_revision_label_names_them(served: Any, users: Any) -> None:
    first = served.current_deployment
    second = Deployment.objects.create(
        service=served,
        kind="deploy",
        model_version=first.model_version,
        status="rolled_back",
        initiated_by=users.approver,
        revision="r-second",
    )
    back = Deployment.objects.create(
        service=served,
        kind="rollback",
        model_version=first.model_version,
        status="succeeded",
        initiated_by=users.approver,
        revision=first.revision,
    )
    lost = Deployment.objects.create(  # a rollback to a revision no deploy of this service made
        service=served,
        kind="rollback",
        model_version=first.model_version,
        status="failed",
        initiated_by=users.approver,
        revision="r-unknown",
    )
    named = selectors.service_revisions([served.pk])[served.pk]
    assert named["labels"] == {d.pk: selectors.revision_label(d) for d in (first, second, back, lost)}
    assert named["labels"][back.pk] == f"d{first.pk}" and named["labels"][lost.pk] == f"d{lost.pk}"
    number = first.model_version.number
    assert named["names"] == {
        f"d{first.pk}": f"v{number} (deploy {first.pk})",
        f"d{second.pk}": f"v{number} (deploy {second.pk})",
        f"d{lost.pk}": f"v{number} (rollback {lost.pk})",
    }


def test_the_step_keeps_a_window_within_300_points() -> None:
    assert selectors.series_step(T0, T0 + timedelta(hours=1)) == 60
    assert selectors.series_step(T0, T0 + timedelta(hours=6)) == 120
    assert selectors.series_step(T0, T0 + timedelta(days=1)) == 300
    assert selectors.series_step(T0, T0 + timedelta(days=7)) == 3600
    assert selectors.series_step(T0, T0 + timedelta(hours=1), rolled_up=True) == 3600
    assert selectors.series_step(T0, T0 + timedelta(days=365)) <= 172800


def test_deploy_and_rollback_markers(served: Any) -> None:
    deployment = Deployment.objects.get(pk=served.current_deployment_id)
    now = deployment.baking_at
    markers = selectors.deployment_markers(service=served, start=now - timedelta(hours=1), end=now + timedelta(hours=1))
    assert markers == [
        {
            "at": selectors.iso(now),
            "kind": "deploy",
            "deployment_id": deployment.pk,
            "revision": f"d{deployment.pk}",
            "label": f"deploy v{deployment.model_version.number}",
            "status": "succeeded",
        }
    ]
    assert (
        selectors.deployment_markers(service=served, start=now + timedelta(seconds=1), end=now + timedelta(hours=1))
        == []
    )


def test_a_window_is_checked_by_field(settings: Any) -> None:
    settings.METRICS_RETENTION_DAYS = 400
    now = T0
    assert selectors.metric_window_problems(start=now - timedelta(hours=1), end=now, now=now) == {}
    assert list(selectors.metric_window_problems(start=now, end=now - timedelta(hours=1), now=now)) == ["end"]
    assert list(selectors.metric_window_problems(start=now - timedelta(days=401), end=now, now=now)) == ["start"]
    assert (
        "longer than the 400 days"
        in selectors.metric_window_problems(start=now - timedelta(days=10), end=now + timedelta(days=400), now=now)[
            "start"
        ][0]
    )
    assert set(selectors.metric_window_problems(start=None, end=None, now=now)) == {"start", "end"}
