"""A real Celery worker SIGKILLed in the middle of a drift report (its capture files read and the verdict computed,
nothing stored): once the dead worker's lease has run out, the sweep the beat runs sends the report again, a fresh
worker takes it over and stores its verdict once: one set of feature rows, one alert opened, one notification each.

The worker is a `celery worker` process (prefork, like production) killed with its pool processes by one SIGKILL to
its process group (tests/fixtures/hold.py and kill_points.py choose the moment). Leases are 3 s here (set in the
workers and in the test's own sweep).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from controlplane.models import AuditEvent, Notification, TransitionEvent
from controlplane.transitions import TAKEOVER_REASON
from monitoring import tasks_drift
from monitoring.models import Alert, DriftFeature, DriftReport
from monitoring.services import drift
from tests.fixtures.hold import KillWorkers, kill_workers
from tests.fixtures.processes import kill_worker
from tests.monitoring.drift_world import make_world, rows, write_capture

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

LEASE_SECONDS = 3
HOUR = datetime(2026, 11, 30, 10, tzinfo=UTC)


@pytest.fixture
def workers(tmp_path: Path, settings: Any) -> Iterator[KillWorkers]:
    settings.DRIFT_LEASE_SECONDS = LEASE_SECONDS
    with kill_workers(tmp_path, "sync", "tests.fixtures.kill_points", {"DRIFT_LEASE_SECONDS": LEASE_SECONDS}) as own:
        yield own


def test_a_worker_killed_mid_report_is_taken_over_and_the_verdict_is_stored_once(
    users: Any, tmp_path: Path, workers: KillWorkers
) -> None:
    world = make_world(users, tmp_path)
    # Ages 25 years older, incomes three times higher: two of three features drift.
    write_capture(world.service, HOUR.replace(minute=20), rows(300, seed=2, age_shift=25.0, income_scale=3.0))
    report = DriftReport.objects.create(
        service=world.service,
        revision=f"d{world.deployment.pk}",
        window_start=HOUR,
        window_end=HOUR.replace(hour=11),
    )
    workers.hold("drift-read", report=report.pk)
    doomed = workers.start("doomed")
    tasks_drift.drift_report_run_task.delay(report.pk)  # as the schedule sends it
    held = workers.held()
    assert (held["at"], held["report"]) == ("drift-read", report.pk)
    kill_worker(doomed)

    # What the dead worker left: the report claimed and running, nothing of its verdict stored.
    left = DriftReport.objects.get(pk=report.pk)
    assert (left.status, left.attempt, left.drifted) == ("running", 1, None)
    assert not DriftFeature.objects.filter(report=report).exists()
    assert not Alert.objects.filter(service=world.service).exists()

    workers.start("fresh")
    workers.until(
        drift.drift_reports_requeue_stale,
        lambda: DriftReport.objects.filter(pk=report.pk, status="succeeded").exists(),
        timeout=30,
        what="the report taken over and finished",
    )
    done = DriftReport.objects.get(pk=report.pk)
    assert (done.attempt, done.drifted, done.rows) == (2, True, 300)
    assert sorted(DriftFeature.objects.filter(report=done).values_list("feature", flat=True)) == [
        "age",
        "income",
        "plan",
    ]
    alert = Alert.objects.get(service=world.service, name="drift")
    assert alert.status == "open" and alert.drift_report_id == done.pk
    assert AuditEvent.objects.filter(action="alert.open", object_id=str(alert.pk)).count() == 1
    told = list(Notification.objects.filter(title__contains="drift alert").values_list("user", flat=True))
    assert sorted(told) == sorted({users.data_scientist.pk, users.approver.pk})
    events = TransitionEvent.objects.filter(object_type="monitoring.driftreport", object_id=str(report.pk))
    assert [(e.from_status, e.to_status, e.reason) for e in events.order_by("created_at", "id")] == [
        ("queued", "running", ""),
        ("running", "running", TAKEOVER_REASON),
        ("running", "succeeded", "drifted"),
    ]
    # The dead worker's own message, should it come back from the broker, finds the report done.
    assert drift.drift_report_run(report_id=report.pk) is None
    assert DriftReport.objects.get(pk=report.pk).attempt == 2
