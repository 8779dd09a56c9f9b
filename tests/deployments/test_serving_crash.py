"""A serving process SIGKILLed under traffic on the local backend, driven through deployments.services as the worker
drives it (deployment_start, then deployment_poll; run in this process, nothing queued), with real serving processes
behind the service's router and real traffic through its stable address:

- the new revision's process, while its canary bakes: the rollout fails on its next poll, the system rolls the
  deployment back saying which process was killed by what, and the old revision goes on answering every request;
- the serving revision's process while nothing rolls out: the beat sweep (deployments_resume) starts it again behind
  the same address, traffic comes back to it, and nothing is rolled back; the restart is on the deployment's timeline.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psutil
import pytest
from django.conf import settings

from controlplane import services as controlplane_services
from controlplane.models import AuditEvent
from deployments import services
from deployments.models import Deployment, Environment, Service
from tests.deployments.test_deploys import approve
from tests.deployments.test_local_automatic_rollbacks import (
    deployed,
    nothing_queued,
    run_to_the_end,
    staging_canary,
    transitions,
)
from tests.deployments.test_local_flow import package, register
from tests.deployments.traffic import Traffic
from tests.fixtures.models import Trained
from tests.fixtures.processes import wait_for
from workers.local_state import read_json

pytestmark = pytest.mark.django_db(transaction=True)
__all__ = ["nothing_queued"]  # the fixture, used by name
THREADS = 4


def revision_record(deployment: Deployment) -> dict[str, Any]:
    service = Service.objects.get(pk=deployment.service_id)
    path = Path(settings.SERVICES_WORK_DIR) / service.name / "revisions" / f"r-d{deployment.pk}" / "revision.json"
    return read_json(path)


def kill_serving_process(deployment: Deployment) -> int:
    """SIGKILL the revision's `python -m serving` (the recorded pid is its wrapper's; the server is its one child)
    and wait until it is gone and its wrapper, having recorded how it ended, too; returns its pid."""
    wrapper = psutil.Process(revision_record(deployment)["processes"][0]["pid"])
    (server,) = wrapper.children()
    assert server.cmdline()[1:3] == ["-m", "serving"], server.cmdline()
    server.kill()
    server.wait(timeout=30)
    wrapper.wait(timeout=30)
    return server.pid


def connection_errors(failures: list[str]) -> bool:
    """Requests that got no answer at all (they were on the process when it died), not an HTTP error."""
    return all(not failure.startswith("HTTP ") for failure in failures)


def test_a_canary_whose_serving_process_is_killed_while_it_bakes_is_rolled_back_and_the_old_revision_serves_on(
    users: Any, logistic: Trained, stop_local_services: Any, nothing_queued: None
) -> None:
    project = controlplane_services.project_create(actor=users.admin, name="Cancer", slug="cancer")
    staging = staging_canary(users)
    good = register(project, users.data_scientist, logistic, package(logistic, None, note="v1"))
    new = register(project, users.data_scientist, logistic, package(logistic, None, note="v2"))
    for version in (good, new):
        approve(version, staging, users)
    first = run_to_the_end(deployed(users, good))
    assert first.status == "succeeded", first.status_reason
    # The canary bakes for a minute at most: the crash comes well inside it.
    Environment.objects.filter(pk=staging.pk).update(bake_minutes=1)
    service = Service.objects.get(pk=first.service_id)
    body = json.dumps({"instances": logistic.rows.head(3).to_numpy().tolist()}).encode()
    old, canary_label = f"d{first.pk}", ""

    with Traffic(service.address, body, threads=THREADS, mixed=True) as traffic:
        canary = deployed(users, new)
        canary_label = f"d{canary.pk}"
        services.deployment_start(deployment_id=canary.pk)
        canary = wait_for(
            lambda: (d := services.deployment_poll(deployment_id=canary.pk)).status == "baking" and d,
            timeout=60,
            what="the canary baking",
        )
        wait_for(lambda: traffic.by_revision()[canary_label] >= 20, timeout=60, what="answers from the canary")
        pid = kill_serving_process(canary)
        canary = wait_for(
            lambda: (d := services.deployment_poll(deployment_id=canary.pk)).done and d,
            timeout=60,
            what="the canary to end",
        )
        assert canary.status == "rolled_back", (canary.status_reason, canary.progress)
        assert canary.status_reason.startswith(f"rolled back: r-{canary_label}-0 was killed by SIGKILL"), (
            canary.status_reason
        )
        back = Deployment.objects.get(kind="rollback", rollback_of=canary)
        assert (back.initiated_by, back.model_version_id, back.reason) == (None, good.pk, canary.status_reason)
        back = run_to_the_end(back)
        assert back.status == "succeeded", back.status_reason
        failed_by_now = len(traffic.failures)
        before = traffic.by_revision()
        wait_for(lambda: traffic.total >= sum(before.values()) + 50, timeout=60, what="answers after the rollback")
        after = traffic.by_revision() - before

    # The crash cost only the requests that were on the killed process, each without an answer; the old revision
    # answered all along, and everything after the rollback.
    assert connection_errors(traffic.failures) and len(traffic.failures) == failed_by_now, traffic.failures
    assert set(after) == {old}, after
    statuses = traffic.counts()
    assert set(statuses) == {(old, 200), (canary_label, 200)} and statuses[(old, 200)] >= 50, statuses
    print(f"\n{len(traffic.failures)} request(s) failed with the canary's process {pid}: {traffic.failures}")
    # Why, on the canary's timeline and in the audit log: the backend's failure, then the system's rollback.
    assert transitions(canary) == [
        ("create", "", "pending"),
        ("start", "pending", "in_progress"),
        ("bake", "in_progress", "baking"),
        ("roll_back", "baking", "rolled_back"),
    ]
    reasons = list(canary.events.filter(action="backend").values_list("reason", flat=True))
    assert any(r.startswith(f"failed: r-{canary_label}-0 was killed by SIGKILL") for r in reasons), reasons
    rolled_back = canary.events.get(action="roll_back")
    assert rolled_back.actor is None and rolled_back.reason == canary.status_reason
    audited = AuditEvent.objects.get(object_type="deployment", object_id=str(canary.pk), action="deployment.roll_back")
    assert (audited.actor, audited.reason) == (None, canary.status_reason)
    service.refresh_from_db()
    assert service.current_deployment_id == back.pk
    kinds = list(Deployment.objects.filter(service=service).order_by("pk").values_list("kind", "status"))
    assert kinds == [("deploy", "succeeded"), ("deploy", "rolled_back"), ("rollback", "succeeded")]


def test_the_serving_revisions_process_killed_with_nothing_rolling_out_is_started_again_by_the_sweep(
    users: Any, logistic: Trained, stop_local_services: Any, nothing_queued: None
) -> None:
    project = controlplane_services.project_create(actor=users.admin, name="Cancer", slug="cancer")
    staging = staging_canary(users)
    good = register(project, users.data_scientist, logistic, package(logistic, None, note="v1"))
    approve(good, staging, users)
    first = run_to_the_end(deployed(users, good))
    assert first.status == "succeeded", first.status_reason
    service = Service.objects.get(pk=first.service_id)
    label = f"d{first.pk}"
    body = json.dumps({"instances": logistic.rows.head(3).to_numpy().tolist()}).encode()
    crashed = revision_record(first)["processes"][0]

    with Traffic(service.address, body, threads=THREADS, mixed=True) as traffic:
        wait_for(lambda: traffic.total >= 20, timeout=60, what="answers")
        pid = kill_serving_process(first)
        # The router holds new connections (up to its --hold-seconds) while nothing can take them; the sweep, as
        # beat runs it every 30 s, starts the process again. Nothing is active: it resumes no deployment.
        assert services.deployments_resume() == 0
        restarted = revision_record(first)["processes"][0]
        assert restarted["attempt"] == crashed["attempt"] + 1 and restarted["pid"] != crashed["pid"], restarted
        answered = traffic.total
        wait_for(lambda: traffic.total >= answered + 50, timeout=60, what="answers after the restart")
        failed_by_now = len(traffic.failures)
        answered = traffic.total
        wait_for(lambda: traffic.total >= answered + 50, timeout=60, what="more answers")

    # Every answer is the same revision's; the crash cost only the requests that were on the process (and any the
    # router held longer than its hold, answered 503 if the restart was slow), none once it was back.
    assert set(traffic.counts()) <= {(label, 200), ("?", 503)}, traffic.counts()
    assert len(traffic.failures) == failed_by_now, traffic.failures
    print(f"\n{len(traffic.failures)} request(s) failed with the serving process {pid}: {traffic.failures}")
    # No rollback: the deployment still serves, alone; the restart and its cause are on its timeline, once.
    assert services.deployments_resume() == 0
    service.refresh_from_db()
    assert service.current_deployment_id == first.pk
    kinds = list(Deployment.objects.filter(service=service).values_list("kind", "status"))
    assert kinds == [("deploy", "succeeded")], kinds
    restarts = [r for r in first.events.filter(action="backend").values_list("reason", flat=True) if "again" in r]
    assert len(restarts) == 1 and restarts[0].startswith(f"r-{label}-0 was killed by SIGKILL"), restarts
    assert f"started again on port {restarted['port']}" in restarts[0], restarts
    # The next sweep, with it serving, starts nothing again.
    assert revision_record(first)["processes"][0]["attempt"] == restarted["attempt"]
