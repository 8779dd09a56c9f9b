"""A real Celery worker SIGKILLed inside a cost sync's writing transaction (its rows written, not committed): none of
them is kept; once the dead worker's lease has run out, the sweep the beat runs sends the sync again and a fresh
worker writes them once. Rows an earlier sync wrote are replaced, not added to: one row per run-day, amounts as
measured, the month's roll-up their sum.

The worker is a `celery worker` process (prefork, like production) killed with its pool processes by one SIGKILL to
its process group (tests/fixtures/hold.py and kill_points.py choose the moment). Leases are 3 s here (set in the
workers and in the test's own sweep). Local estimates only: no AWS.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from controlplane.models import TransitionEvent
from controlplane.transitions import TAKEOVER_REASON
from monitoring.costs import selectors, services, tasks
from monitoring.models import CostRecord, CostSync
from tests.fixtures.costs import make_run
from tests.fixtures.hold import KillWorkers, kill_workers
from tests.fixtures.processes import kill_worker

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

LEASE_SECONDS = 3


@pytest.fixture
def workers(tmp_path: Path, settings: Any) -> Iterator[KillWorkers]:
    settings.COST_SYNC_LEASE_SECONDS = LEASE_SECONDS
    with kill_workers(
        tmp_path, "sync", "tests.fixtures.kill_points", {"COST_SYNC_LEASE_SECONDS": LEASE_SECONDS}
    ) as own:
        yield own


def _today_at(hour: int, minute: int) -> datetime:
    return datetime.combine(timezone.now().astimezone(UTC).date(), time(hour, minute), tzinfo=UTC)


def estimates() -> dict[str, Decimal]:
    return {row.run: row.amount for row in CostRecord.objects.filter(source="estimate").exclude(run="").order_by("run")}


def test_a_worker_killed_while_writing_a_sync_leaves_nothing_and_the_takeover_writes_each_row_once(
    project: Any, users: Any, workers: KillWorkers, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = make_run(project, users.data_scientist, started=_today_at(0, 1), finished=_today_at(0, 2), cost="0.25")
    second = make_run(project, users.data_scientist, started=_today_at(0, 3), finished=_today_at(0, 4), cost="1.5")
    with monkeypatch.context() as inline:  # an earlier sync, run here
        inline.setattr(tasks.cost_sync_task, "delay", lambda *a, **k: None)
        earlier = services.cost_sync_run(sync_id=services.cost_sync_request(source="estimate").pk)
    assert earlier is not None and earlier.status == "succeeded"
    assert estimates() == {str(first.pk): Decimal("0.25"), str(second.pk): Decimal("1.5")}
    third = make_run(project, users.data_scientist, started=_today_at(0, 5), finished=_today_at(0, 6), cost="2")

    workers.hold("cost-write")  # the one sync the doomed worker is sent
    doomed = workers.start("doomed")
    sync = services.cost_sync_request(source="estimate")  # sent to the doomed worker on commit
    held = workers.held()
    assert (held["at"], held["sync"]) == ("cost-write", sync.pk)
    kill_worker(doomed)

    # What the dead worker left: the sync claimed and running, the earlier rows as they were, its own rolled back.
    left = CostSync.objects.get(pk=sync.pk)
    assert (left.status, left.attempt, left.rows) == ("running", 1, 0)
    assert estimates() == {str(first.pk): Decimal("0.25"), str(second.pk): Decimal("1.5")}

    workers.start("fresh")
    workers.until(
        services.cost_syncs_requeue_stale,
        lambda: CostSync.objects.filter(pk=sync.pk, status="succeeded").exists(),
        timeout=30,
        what="the sync taken over and finished",
    )
    done = CostSync.objects.get(pk=sync.pk)
    assert (done.attempt, done.rows) == (2, 3), done.status_reason
    assert estimates() == {str(first.pk): Decimal("0.25"), str(second.pk): Decimal("1.5"), str(third.pk): Decimal("2")}
    assert CostRecord.objects.filter(source="estimate").count() == 3
    assert selectors.month_spend(timezone.now().date(), project="bc") == (Decimal("3.75"), Decimal("3.75"))
    events = TransitionEvent.objects.filter(object_type="monitoring.costsync", object_id=str(sync.pk))
    assert [(e.from_status, e.to_status, e.reason) for e in events.order_by("created_at", "id")] == [
        ("queued", "running", "sync started"),
        ("running", "running", TAKEOVER_REASON),
        ("running", "succeeded", "3 estimate rows (0 serving-days)"),
    ]
