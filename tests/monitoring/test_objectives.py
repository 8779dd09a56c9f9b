"""The deployment objectives' "metrics" source: the bake window's minutes of that revision and its drift report."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from deployments import objectives
from deployments.models import Deployment
from monitoring.histograms import COUNTS_LENGTH
from monitoring.models import DriftReport
from monitoring.services.metrics import MinuteCounts, record_minutes

pytestmark = pytest.mark.django_db


def test_the_metrics_source_judges_the_revisions_minutes_and_its_drift_report(served: Any, settings: Any) -> None:
    settings.DEPLOYMENT_SIGNALS = "metrics"
    settings.OBJECTIVE_MIN_REQUESTS = 20
    deployment = Deployment.objects.get(pk=served.current_deployment_id)
    Deployment.objects.filter(pk=deployment.pk).update(
        objectives={"p99_latency_ms": 100.0, "error_rate": 0.1, "drift_share": 0.3}
    )
    now = timezone.now().replace(second=0, microsecond=0)
    window = (now - timedelta(minutes=5), now + timedelta(minutes=1))
    label = f"d{deployment.pk}"  # what its serving processes report as REVISION
    slow = [0] * COUNTS_LENGTH
    slow[3], slow[10] = 18, 2  # 2 of 20 answers at ≤ 500 ms: p99 lands in that bucket
    record_minutes(served, label, [MinuteCounts(now, requests=20, errors=1, latency_counts=slow)], source="portal")
    # Another revision's minutes and an old drift report are not this revision's bake.
    record_minutes(
        served, "d999", [MinuteCounts(now, requests=500, errors=500, latency_counts=[500] + [0] * 15)], source="portal"
    )
    common = {"service": served, "status": "succeeded", "feature_count": 10}
    DriftReport.objects.create(
        **common,
        revision=label,
        window_start=now - timedelta(hours=2),
        window_end=now - timedelta(hours=1),
        drifted_share=0.9,
    )
    status = objectives.objective_status(served, deployment.revision, window)
    assert status.source == "metrics" and status.requests == 20 and status.judged
    values = {result.name: result for result in status.results}
    assert values["error_rate"].value == pytest.approx(0.05) and not values["error_rate"].breached
    p99 = values["p99_latency_ms"].value
    assert p99 is not None and 250 < p99 <= 500 and values["p99_latency_ms"].breached
    assert values["drift_share"].value is None
    DriftReport.objects.create(
        **common,
        revision=label,
        window_start=now - timedelta(minutes=60),
        window_end=now - timedelta(minutes=1),
        drifted_share=0.4,
    )
    drift = {r.name: r for r in objectives.objective_status(served, deployment.revision, window).results}["drift_share"]
    assert drift.value == pytest.approx(0.4) and drift.breached
    # What serves is judged over minutes, its drift every drift window: with a lookback the report that ended
    # before the window counts (the old one two hours back still does not).
    short = (now - timedelta(seconds=30), now + timedelta(minutes=1))
    assert {r.name: r for r in objectives.objective_status(served, deployment.revision, short).results}[
        "drift_share"
    ].value is None
    looked_back = objectives.objective_status(
        served, deployment.revision, short, drift_lookback=timedelta(minutes=60)
    ).results
    assert {r.name: r for r in looked_back}["drift_share"].value == pytest.approx(0.4)
