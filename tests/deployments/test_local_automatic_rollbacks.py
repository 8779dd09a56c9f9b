"""The system rolls a canary back by itself on the local backend, driven through deployments.services as the
worker drives it (deployment_start, then deployment_poll until it is done; run in this process, nothing queued),
with real serving processes behind the service's router and real traffic through its stable address:

- a health check that fails during the rollout: the new revision's processes never pass /ping (its hooks cannot
  load), so the rollout fails and the system rolls back while the old revision goes on answering every request;
- an objective breached on the production default signal source, `metrics`: the serving processes report their
  minutes to the portal's ingest (a live server here), the bake is judged from the monitoring tables, and a canary
  that answers errors is rolled back with the objective, its value and its threshold recorded.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from celery.app.task import Task
from django.utils import timezone

from controlplane import services as controlplane_services
from deployments import services
from deployments.models import Deployment, DeploymentEvent, Environment, Service
from lineage.models import ModelVersion
from monitoring import selectors as monitoring_selectors
from monitoring.models import MetricPoint
from tests.deployments.test_deploys import approve
from tests.deployments.test_local_flow import package, register
from tests.deployments.traffic import Traffic
from tests.fixtures.models import Trained
from tests.fixtures.processes import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

# Hooks that fail as the package loads: the serving process exits (3: the model cannot be served), never passing /ping.
BROKEN_HOOKS = "raise RuntimeError('this package cannot be loaded')\n"
# Hooks that fail on every request: each answer is a 500.
FAILING_HOOKS = "def preprocess(frame):\n    raise RuntimeError('the canary is broken')\n"


@pytest.fixture
def nothing_queued(monkeypatch: pytest.MonkeyPatch, no_session_worker: None) -> None:
    """No broker: what would be enqueued (starts, polls, notifications) the test runs itself, and no session worker
    takes its deployments (it would judge them by the test settings' signal source, not the test's)."""
    monkeypatch.setattr(Task, "apply_async", lambda self, *a, **k: None)


def run_to_the_end(deployment: Deployment, *, timeout: float = 120) -> Deployment:
    """deployment_start, then deployment_poll every 0.2 s until the deployment is done (as its poll chain would)."""
    services.deployment_start(deployment_id=deployment.pk)
    deadline = time.monotonic() + timeout
    while not (deployment := services.deployment_poll(deployment_id=deployment.pk)).done:
        assert time.monotonic() < deadline, (deployment.status, deployment.progress)
        time.sleep(0.2)
    return deployment


def transitions(deployment: Deployment) -> list[tuple[str, str, str]]:
    events = DeploymentEvent.objects.filter(deployment=deployment).exclude(to_status="")
    return [(e.action, e.from_status, e.to_status) for e in events.order_by("created_at", "id")]


def deployed(users: Any, version: ModelVersion) -> Deployment:
    return services.deployment_create(actor=users.approver, model_version_id=version.pk, environment="staging")


def staging_canary(users: Any, **objectives: Any) -> Environment:
    """Staging with one approval and a quick 50% canary (a second's bake), and any objectives given."""
    return services.environment_create(
        actor=users.admin,
        data={
            "name": "staging",
            "approvals_required": 1,
            "strategy": "canary",
            "canary_percent": 50,
            "bake_minutes": 0.02,
            **objectives,
        },
    )


def test_a_canary_whose_health_check_never_passes_is_rolled_back_and_the_old_revision_keeps_serving(
    users: Any, logistic: Trained, stop_local_services: Any, nothing_queued: None
) -> None:
    project = controlplane_services.project_create(actor=users.admin, name="Cancer", slug="cancer")
    staging = staging_canary(users)
    good = register(project, users.data_scientist, logistic, package(logistic, None, note="v1"))
    broken = register(project, users.data_scientist, logistic, package(logistic, BROKEN_HOOKS, note="v2"))
    for version in (good, broken):
        approve(version, staging, users)
    first = run_to_the_end(deployed(users, good))
    assert first.status == "succeeded", first.status_reason
    service = Service.objects.get(pk=first.service_id)
    body = json.dumps({"instances": logistic.rows.head(3).to_numpy().tolist()}).encode()

    with Traffic(service.address, body) as traffic:
        canary = run_to_the_end(deployed(users, broken))
        assert canary.status == "rolled_back", (canary.status_reason, canary.progress)
        # Its processes never passed /ping: no traffic reached it, nothing was baked or judged.
        assert canary.baking_at is None and canary.breach == {} and canary.objective_status == {}
        assert canary.status_reason.startswith("rolled back: "), canary.status_reason
        assert f"r-d{canary.pk}-0 exited with code 3 (the model cannot be served)" in canary.status_reason
        assert "hooks.py failed to load" in canary.status_reason
        back = Deployment.objects.get(kind="rollback", rollback_of=canary)
        assert (back.initiated_by, back.status, back.model_version_id) == (None, "pending", good.pk)
        assert back.reason == canary.status_reason
        back = run_to_the_end(back)
        assert back.status == "succeeded", back.status_reason
        wait_for(lambda: traffic.total >= 50, timeout=60, what="answers")

    assert traffic.failures == [], traffic.failures[:10]
    assert set(traffic.by_revision()) == {f"d{first.pk}"}, traffic.answers
    service.refresh_from_db()
    assert service.current_deployment_id == back.pk
    assert transitions(canary) == [
        ("create", "", "pending"),
        ("start", "pending", "in_progress"),
        ("roll_back", "in_progress", "rolled_back"),
    ]
    reasons = list(canary.events.filter(action="backend").values_list("reason", flat=True))
    assert any(reason.startswith(f"failed: r-d{canary.pk}-0 exited with code 3") for reason in reasons), reasons
    assert transitions(back) == [
        ("create", "", "pending"),
        ("start", "pending", "in_progress"),
        ("bake", "in_progress", "baking"),
        ("succeed", "baking", "succeeded"),
    ]
    kinds = list(Deployment.objects.filter(service=service).order_by("pk").values_list("kind", "status"))
    assert kinds == [("deploy", "succeeded"), ("deploy", "rolled_back"), ("rollback", "succeeded")]


def test_a_canary_answering_errors_is_rolled_back_on_the_error_rate_judged_from_the_ingested_metrics(
    users: Any, logistic: Trained, stop_local_services: Any, nothing_queued: None, live_server: Any, settings: Any
) -> None:
    # The production default: the serving processes report to the portal's ingest (every second in tests,
    # SERVING_METRICS_FLUSH_SECONDS), and the bake is judged from what that wrote to the monitoring tables.
    settings.PORTAL_URL = live_server.url
    settings.DEPLOYMENT_SIGNALS = "metrics"
    settings.OBJECTIVE_MIN_REQUESTS = 10
    project = controlplane_services.project_create(actor=users.admin, name="Cancer", slug="cancer")
    staging = staging_canary(users, objective_error_rate=0.1, objective_p99_latency_ms=5000)
    good = register(project, users.data_scientist, logistic, package(logistic, None, note="v1"))
    failing = register(project, users.data_scientist, logistic, package(logistic, FAILING_HOOKS, note="v2"))
    for version in (good, failing):
        approve(version, staging, users)
    first = run_to_the_end(deployed(users, good))  # no traffic yet: baked, not judged
    assert first.status == "succeeded", first.status_reason
    # The canary's bake: a minute at most, ended as soon as the ingested minutes show the breach.
    Environment.objects.filter(pk=staging.pk).update(bake_minutes=1)
    service = Service.objects.get(pk=first.service_id)
    body = json.dumps({"instances": logistic.rows.head(3).to_numpy().tolist()}).encode()

    with Traffic(service.address, body) as traffic:
        canary = run_to_the_end(deployed(users, failing))
        assert canary.status == "rolled_back", (canary.status_reason, canary.objective_status)
        verdict = canary.objective_status
        assert verdict["source"] == "metrics" and verdict["judged"] and verdict["requests"] >= 10, verdict
        # Every answer of the canary was an error: the error rate is 100 %, far above its 10 % objective.
        assert canary.breach == {
            "objective": "error_rate",
            "label": "error rate",
            "value": 1.0,
            "threshold": 0.1,
            "requests": verdict["requests"],
            "source": "metrics",
        }
        assert canary.status_reason == "rolled back: error rate 100.00% above its objective 10.00%"
        back = Deployment.objects.get(kind="rollback", rollback_of=canary)
        assert back.initiated_by is None and back.breach == canary.breach
        back = run_to_the_end(back)
        assert back.status == "succeeded", back.status_reason
        time.sleep(1)  # the canary's last answers, sent before the switch, are in
        before = traffic.by_revision()
        wait_for(lambda: traffic.total >= sum(before.values()) + 30, timeout=60, what="answers after the rollback")
        after = traffic.by_revision() - before

    # The canary answered real requests, each a 500; the old revision answered every other one, each a 200.
    canary_label, old_label = f"d{canary.pk}", f"d{first.pk}"
    statuses = traffic.counts()
    assert statuses[(canary_label, 500)] >= 10 and statuses[(canary_label, 200)] == 0, statuses
    assert set(statuses) == {(canary_label, 500), (old_label, 200)}, statuses
    assert set(after) == {old_label}, after
    # What the verdict read is what the canary's serving processes reported through the ingest.
    assert MetricPoint.objects.filter(service=service, revision=canary_label, source="portal", errors__gt=0).exists()
    baked = monitoring_selectors.window_summary(
        service=service, start=canary.baking_at, end=timezone.now(), revision=canary_label
    )
    assert baked["requests"] >= verdict["requests"] and baked["errors"] == baked["requests"], baked
    assert transitions(canary) == [
        ("create", "", "pending"),
        ("start", "pending", "in_progress"),
        ("bake", "in_progress", "baking"),
        ("roll_back", "baking", "rolled_back"),
    ]
    service.refresh_from_db()
    assert service.current_deployment_id == back.pk and back.model_version_id == good.pk
