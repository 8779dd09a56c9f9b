"""The objectives a baking revision is held to: histogram percentiles, the verdict, the recorded signal source."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import pytest

from deployments import objectives

NOW = (datetime(2026, 12, 1, tzinfo=UTC), datetime(2026, 12, 1, 0, 5, tzinfo=UTC))


def test_the_p99_of_a_histogram_is_interpolated_within_its_bucket() -> None:
    # 100 observations: 90 at or under 10 ms, 9 more under 20 ms, the last under 50 ms.
    buckets = [(0.010, 90.0), (0.020, 99.0), (0.050, 100.0), (float("inf"), 100.0)]
    assert objectives.histogram_quantile(buckets, 0.99) == pytest.approx(0.020)
    assert objectives.histogram_quantile(buckets, 0.5) == pytest.approx(0.010 * 50 / 90)
    assert objectives.histogram_quantile(buckets, 0.995) == pytest.approx(0.035)
    assert objectives.histogram_quantile([(0.01, 0.0), (float("inf"), 0.0)], 0.99) is None
    # Past the last finite bound: twice it (where EMF reports the slower requests), so an objective there breaches.
    assert objectives.histogram_quantile([(0.01, 1.0), (float("inf"), 100.0)], 0.99) == pytest.approx(0.02)


def test_nothing_is_breached_before_enough_requests(settings) -> None:
    settings.OBJECTIVE_MIN_REQUESTS = 20
    few = objectives.Signals(requests=5, errors=5, p99_latency_ms=900.0)
    verdict = objectives.judge({"error_rate": 0.01, "p99_latency_ms": 100.0}, few, source="test")
    assert not verdict.judged and verdict.breached is None
    many = objectives.Signals(requests=200, errors=1, p99_latency_ms=150.0)
    verdict = objectives.judge({"error_rate": 0.01, "p99_latency_ms": 100.0}, many, source="test")
    assert verdict.judged
    assert verdict.breached is not None and verdict.breached.name == "p99_latency_ms"
    assert verdict.breached.describe() == "p99 latency 150.0 ms above its objective 100.0 ms"
    error = next(result for result in verdict.results if result.name == "error_rate")
    assert not error.breached and error.value == pytest.approx(0.005)


def test_objective_status_reads_recorded_signals_live(settings, tmp_path: Path, db, monkeypatch) -> None:
    """The interface the deployment poll asks, fed by a recorded file: a breach appears as soon as it is recorded."""
    recorded = tmp_path / "signals.json"
    settings.DEPLOYMENT_SIGNALS = "recorded"
    settings.DEPLOYMENT_RECORDED_SIGNALS = str(recorded)
    settings.OBJECTIVE_MIN_REQUESTS = 10
    deployment = SimpleNamespace(objectives={"p99_latency_ms": 100.0, "error_rate": 0.02}, progress={})

    class Found:
        def filter(self, **kwargs):
            return self

        def order_by(self, *args):
            return self

        def first(self):
            return deployment

    from deployments.models import Deployment

    monkeypatch.setattr(Deployment, "objects", Found())
    service = SimpleNamespace(name="churn-production")
    assert objectives.objective_status(service, "d7", NOW).breached is None  # nothing recorded yet
    recorded.write_text(json.dumps({"churn-production/d7": {"requests": 50, "errors": 0, "p99_latency_ms": 40}}))
    held = objectives.objective_status(service, "d7", NOW)
    assert held.judged and held.breached is None
    recorded.write_text(json.dumps({"churn-production/d7": {"requests": 80, "errors": 4, "p99_latency_ms": 40}}))
    breached = objectives.objective_status(service, "d7", NOW).breached
    assert breached is not None and breached.name == "error_rate" and breached.value == pytest.approx(0.05)


def test_a_revisions_own_metrics_give_requests_errors_and_p99() -> None:
    text = "\n".join(
        [
            "# TYPE serving_requests_total counter",
            'serving_requests_total{service="s",revision="d1",status="200"} 95',
            'serving_requests_total{service="s",revision="d1",status="400"} 3',
            'serving_requests_total{service="s",revision="d1",status="500"} 2',
            'serving_request_duration_seconds_bucket{service="s",revision="d1",le="0.001"} 50',
            'serving_request_duration_seconds_bucket{service="s",revision="d1",le="0.01"} 99',
            'serving_request_duration_seconds_bucket{service="s",revision="d1",le="0.1"} 100',
            'serving_request_duration_seconds_bucket{service="s",revision="d1",le="+Inf"} 100',
        ]
    )
    samples = objectives.parse_prometheus(text)
    assert ("serving_requests_total", {"service": "s", "revision": "d1", "status": "500"}, 2.0) in samples
