"""A real Celery worker SIGKILLed while it holds a deployment leaves a state the next beat sweep resumes or rolls
back from, with a fresh worker, and an event trail with nothing twice and nothing missing.

The worker is a `celery worker` process (prefork, like production) killed with its pool processes by one SIGKILL to
its process group: nothing of it acknowledges a message, hands work back or runs a finally block. Where it dies is
chosen, not left to chance: tests/deployments/worker_hold.py stops it inside the task at the chosen moment and the
kill comes then. The serving processes it started live in their own sessions and keep serving.

- Mid-start: the backend has started the revision, the database does not know it yet. Once the dead worker's lease
  has run out the start is taken over (by the sweep's resend or by the dead worker's own message, back from the
  broker), the backend's deploy finds the revision it started and starts no second one, and the rollout finishes.
- Mid-bake of a canary whose p99 breaches: the dead worker's poll chain is gone; the sweep finds the rollout quiet,
  restarts the chain, the fresh worker judges the bake and the system rolls back, with traffic flowing throughout
  and not one request failed.
In both, the dead worker's own message comes back (acks_late) and is refused: its ticket was spent.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from controlplane import services as controlplane_services
from controlplane.celery import app
from controlplane.transitions import TAKEOVER_REASON
from deployments import services, tasks
from deployments.models import Deployment, DeploymentEvent, Environment
from tests.deployments.test_deploys import approve
from tests.deployments.test_local_flow import finished, package, register
from tests.deployments.traffic import Traffic
from tests.fixtures.models import Trained
from tests.fixtures.processes import RUNNING_WORKERS, Worker, kill_worker, start_worker, stop_worker, wait_for
from workers.local_state import process_alive, read_json

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

# The canary sleeps this long in its preprocess hook: every answer succeeds, slowly (p99 far above the objective).
SLOW_HOOKS = "import time\n\ndef preprocess(frame):\n    time.sleep(0.5)\n    return frame\n"
P99_OBJECTIVE_MS = 300


class Workers:
    """The test's own workers, alone on the deploy queue: the session's worker (when one runs) stops consuming it
    for the test, so every deployment message goes to the worker the test means."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.started: list[Worker] = []

    def start(self, name: str, *, hold: bool = False) -> Worker:
        extra: dict[str, str | None] = {"OBJECTIVE_MIN_REQUESTS": "10"}
        if hold:
            extra["CP_TEST_HOLD_DIR"] = str(self.folder)
        worker = start_worker(
            f"{name}-{len(self.started)}@{os.uname().nodename}",
            self.folder / f"{name}.log",
            extra_env=extra,
            queues="deploy",
            concurrency=1,
            include=("tests.deployments.worker_hold",) if hold else (),
            own_group=True,
        )
        self.started.append(worker)
        return worker

    def hold(self, version: Any, at: str) -> None:
        (self.folder / "hold.json").write_text(json.dumps({"model_version": version.pk, "at": at}))

    def held(self) -> dict[str, Any]:
        """Where the doomed worker stopped (worker_hold.py), once it has."""
        marker = self.folder / "held.json"
        wait_for(marker.is_file, timeout=120, what="the worker to reach the chosen moment")
        return dict(json.loads(marker.read_text()))


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    others = [worker.name for worker in RUNNING_WORKERS]
    if others:
        app.control.cancel_consumer("deploy", destination=others, reply=True)
    own = Workers(tmp_path)
    try:
        yield own
    finally:
        for worker in own.started:
            stop_worker(worker)
        if others:
            app.control.add_consumer("deploy", destination=others, reply=True)


def beat_until(done: Callable[[], Any], *, timeout: float, what: str) -> Any:
    """Send the beat's deployments_resume as its schedule would, only every 2 s instead of every 30, until `done`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        tasks.deployments_resume_task.delay()
        for _ in range(10):
            value = done()
            if value:
                return value
            time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def redelivered_and_done(worker: Worker, task_id: str) -> None:
    """The dead worker's unacknowledged message comes back from the broker and the fresh worker runs it. Redis gives
    it back once it is older than the visibility timeout (30 s in tests), at the next restore a consumer makes;
    workers make one every 100 s or so, so the test makes it (kombu's own restore_visible) with a 1 s timeout
    rather than wait. (Any other unacknowledged message a second old comes back too: each is refused or done once,
    as after a real timeout.)"""

    def ran() -> bool:
        options = {**app.conf.broker_transport_options, "visibility_timeout": 1}
        with app.connection_for_write(transport_options=options) as connection:
            connection.default_channel.qos.restore_visible(num=100, interval=1)
        return f"[{task_id}] succeeded" in worker.log()

    wait_for(ran, timeout=90, interval=2, what=f"task {task_id} to be delivered again and run")


def transitions(deployment: Deployment) -> list[tuple[str, str, str]]:
    events = DeploymentEvent.objects.filter(deployment=deployment).exclude(to_status="")
    return [(e.action, e.from_status, e.to_status) for e in events.order_by("created_at", "id")]


def revision_processes(deployment: Deployment) -> list[dict[str, Any]]:
    path = Path(settings.SERVICES_WORK_DIR) / deployment.service.name / "revisions" / f"r-d{deployment.pk}"
    return list(read_json(path / "revision.json")["processes"])


def test_a_worker_killed_mid_start_is_taken_over_and_the_deployment_finishes(
    users: Any, logistic: Trained, stop_local_services: Any, workers: Workers
) -> None:
    project = controlplane_services.project_create(actor=users.admin, name="Cancer", slug="cancer")
    staging = services.environment_create(
        actor=users.admin, data={"name": "staging", "approvals_required": 1, "bake_minutes": 0.05}
    )
    version = register(project, users.data_scientist, logistic, package(logistic, None, note="v1"))
    approve(version, staging, users)
    workers.hold(version, "start")
    doomed = workers.start("doomed", hold=True)

    deployment = services.deployment_create(actor=users.approver, model_version_id=version.pk, environment="staging")
    held = workers.held()
    assert (held["deployment"], held["at"]) == (deployment.pk, "start")
    kill_worker(doomed)

    # What the dead worker left: the deployment claimed, its revision started and serving /ping, no handle recorded.
    left = Deployment.objects.get(pk=deployment.pk)
    assert (left.status, left.backend_handle, left.attempt) == ("in_progress", {}, 1)
    started = revision_processes(left)
    assert len(started) == 1 and all(process_alive(p) for p in started)

    fresh = workers.start("fresh")
    # Taken over once the dead worker's lease ran out: by the sweep's resend or by its own message, back from Redis.
    beat_until(
        lambda: Deployment.objects.filter(pk=left.pk, attempt=2).exists(), timeout=150, what="the start taken over"
    )
    done = finished(left.pk)
    assert done.status == "succeeded", done.status_reason
    assert done.attempt == 2 and done.revision == f"r-d{left.pk}"
    # The takeover found the revision the dead worker started instead of starting a second one.
    assert [p["pid"] for p in revision_processes(done)] == [p["pid"] for p in started]
    redelivered_and_done(fresh, held["task_id"])
    assert transitions(done) == [
        ("create", "", "pending"),
        ("start", "pending", "in_progress"),
        ("start", "in_progress", "in_progress"),
        ("bake", "in_progress", "baking"),
        ("succeed", "baking", "succeeded"),
    ]
    starts = DeploymentEvent.objects.filter(deployment=done, action="start").order_by("id")
    assert [(e.attempt, e.reason) for e in starts] == [(1, "a worker took the deployment"), (2, TAKEOVER_REASON)]
    assert Deployment.objects.get(pk=done.pk).service.current_deployment_id == done.pk


def test_a_worker_killed_mid_bake_leaves_a_rollout_the_sweep_resumes_and_the_system_rolls_back(
    users: Any, logistic: Trained, stop_local_services: Any, workers: Workers
) -> None:
    project = controlplane_services.project_create(actor=users.admin, name="Cancer", slug="cancer")
    # A bake of 6 s: the chain is broken well before it ends, and the restarted chain sees it out.
    staging = services.environment_create(
        actor=users.admin,
        data={
            "name": "staging",
            "approvals_required": 1,
            "strategy": "canary",
            "canary_percent": 50,
            "bake_minutes": 0.05,
            "objective_p99_latency_ms": P99_OBJECTIVE_MS,
        },
    )
    fast = register(project, users.data_scientist, logistic, package(logistic, None, note="v1"))
    slow = register(project, users.data_scientist, logistic, package(logistic, SLOW_HOOKS, note="v2"))
    for version in (fast, slow):
        approve(version, staging, users)
    workers.hold(slow, "baking")
    doomed = workers.start("doomed", hold=True)

    first = services.deployment_create(actor=users.approver, model_version_id=fast.pk, environment="staging")
    first = finished(first.pk)
    assert first.status == "succeeded", first.status_reason
    # The canary bakes for a minute at most: long enough that the outage and the resume happen inside it.
    Environment.objects.filter(pk=staging.pk).update(bake_minutes=1)
    address = first.service.address
    body = json.dumps({"instances": logistic.rows.head(3).to_numpy().tolist()}).encode()
    with Traffic(address, body) as traffic:
        canary = services.deployment_create(actor=users.approver, model_version_id=slow.pk, environment="staging")
        held = workers.held()
        assert (held["deployment"], held["at"]) == (canary.pk, "baking")
        kill_worker(doomed)

        left = Deployment.objects.get(pk=canary.pk)
        assert left.status == "baking" and left.backend_handle["revision"] == f"r-d{canary.pk}"
        generation = left.poll_generation
        assert all(process_alive(p) for p in revision_processes(left))
        # Nobody polls it now, yet both revisions keep answering through the router.
        wait_for(
            lambda: traffic.by_revision()[f"d{canary.pk}"] >= 10 and traffic.by_revision()[f"d{first.pk}"] >= 10,
            timeout=60,
            what="both revisions answering with no worker alive",
        )

        fresh = workers.start("fresh")
        beat_until(
            lambda: Deployment.objects.filter(pk=canary.pk, poll_generation__gt=generation).exists(),
            timeout=60,
            what="the sweep to restart the poll chain",
        )
        canary = finished(canary.pk)
        assert canary.status == "rolled_back", (canary.status_reason, canary.objective_status)
        assert canary.breach["objective"] == "p99_latency_ms", canary.breach
        assert canary.breach["value"] > P99_OBJECTIVE_MS and canary.breach["threshold"] == P99_OBJECTIVE_MS
        automatic = Deployment.objects.get(kind="rollback", rollback_of=canary)
        assert automatic.initiated_by is None and "p99 latency" in automatic.reason
        automatic = finished(automatic.pk)
        assert automatic.status == "succeeded", automatic.status_reason
        assert automatic.model_version_id == fast.pk
        # Every answer from here on is the old revision's, once the canary's last slow answers (sent before the
        # rollback, each half a second or more on a busy machine) are in: its count stands still for 3 s.
        settled: list[int] = []

        def canary_quiet() -> bool:
            settled.append(traffic.by_revision()[f"d{canary.pk}"])
            return len(settled) >= 7 and len(set(settled[-7:])) == 1

        wait_for(canary_quiet, timeout=60, interval=0.5, what="the canary's last answers")
        before = traffic.by_revision()
        wait_for(lambda: traffic.total >= sum(before.values()) + 20, timeout=60, what="more answers")
        after = traffic.by_revision() - before
        assert set(after) == {f"d{first.pk}"}, after

    assert traffic.failures == [], traffic.failures[:10]
    redelivered_and_done(fresh, held["task_id"])
    assert transitions(canary) == [
        ("create", "", "pending"),
        ("start", "pending", "in_progress"),
        ("bake", "in_progress", "baking"),
        ("roll_back", "baking", "rolled_back"),
    ]
    resumed = DeploymentEvent.objects.filter(deployment=canary, action="resume").get()
    rolled_back = DeploymentEvent.objects.filter(deployment=canary, action="roll_back").get()
    assert resumed.pk < rolled_back.pk and "the sweep restarted its poll chain" in resumed.reason
    assert rolled_back.actor is None and rolled_back.reason.startswith("rolled back: p99 latency")
    assert transitions(automatic) == [
        ("create", "", "pending"),
        ("start", "pending", "in_progress"),
        ("bake", "in_progress", "baking"),
        ("succeed", "baking", "succeeded"),
    ]
    assert Deployment.objects.get(pk=automatic.pk).service.current_deployment_id == automatic.pk
