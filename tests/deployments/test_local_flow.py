"""The whole life of a service on the local backend, with a real worker and real serving processes, under constant
traffic through the service's stable address: deploy → deploy a slow version as a canary → the system rolls it back
on its breached p99 objective → deploy again → an approver rolls back by hand. Every answer is counted: none fails.
"""

from __future__ import annotations

import io
import itertools
import json
import tarfile
import time
from typing import Any

import pytest

from controlplane import services as controlplane_services
from deployments import services
from deployments.models import Deployment, Service
from lineage.models import LineageEdge, ModelVersion
from tests.deployments.conftest import make_model_version
from tests.deployments.test_deploys import approve
from tests.deployments.traffic import Traffic
from tests.fixtures.models import Trained
from tests.fixtures.processes import wait_for

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

# The canary sleeps this long in its preprocess hook: every answer still succeeds, only slowly.
SLOW_HOOKS = "import time\n\ndef preprocess(frame):\n    time.sleep(0.5)\n    return frame\n"
_numbers = itertools.count(1)
# Minutes. The fast versions bake briefly under the traffic; the slow canary bakes long enough for a fair share of
# its half-second answers to reach the objective's minimum and breach it.
SHORT_BAKE = 0.05
CANARY_BAKE = 0.25


def package(model: Trained, hooks: str | None, *, note: str) -> bytes:
    """A model package (model.tar.gz): the model, its card, optional hooks; `note` makes its bytes its own."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        archive.add(model.joblib, arcname="model.joblib")
        archive.add(model.folder / "model.json", arcname="model.json")
        for name, text in (("hooks.py", hooks), ("NOTE", note)):
            if text is not None:
                data = text.encode()
                info = tarfile.TarInfo(name)
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def register(project: Any, author: Any, model: Trained, content: bytes) -> ModelVersion:
    """A model version of real servable bytes, stored as registration stores them."""
    return make_model_version(
        project,
        author,
        model="bc",
        content=content,
        suffix=".tar.gz",
        input_schema=[{"name": name, "type": "float"} for name in model.features],
        metrics={"accuracy": 0.95},
        framework_version=str(model.card.get("sklearn_version", "")),
        metadata=model.card,
    )


def finished(deployment_id: int, timeout: float = 120) -> Deployment:
    return wait_for(
        lambda: Deployment.objects.filter(pk=deployment_id, status__in=["succeeded", "failed", "rolled_back"]).first(),
        timeout=timeout,
        what=f"deployment {deployment_id} to finish",
    )


def test_deploy_canary_automatic_rollback_deploy_manual_rollback_with_zero_failed_requests(
    celery_worker: Any, users: Any, logistic: Trained, stop_local_services: Any
) -> None:
    project = controlplane_services.project_create(actor=users.admin, name="Cancer", slug="cancer")
    staging = services.environment_create(
        actor=users.admin,
        data={
            "name": "staging",
            "approvals_required": 1,
            "strategy": "canary",
            "canary_percent": 30,
            "bake_minutes": SHORT_BAKE,
            # Far from both versions (the fast one answers in milliseconds, the slow one in 500 ms), so a busy
            # machine's slower answers do not decide the verdict.
            "objective_p99_latency_ms": 300,
        },
    )
    fast = register(project, users.data_scientist, logistic, package(logistic, None, note="v1"))
    slow = register(project, users.data_scientist, logistic, package(logistic, SLOW_HOOKS, note="v2"))
    again = register(project, users.data_scientist, logistic, package(logistic, None, note="v3"))
    for version in (fast, slow, again):
        assert approve(version, staging, users).status == "approved"

    first = services.deployment_create(actor=users.approver, model_version_id=fast.pk, environment="staging")
    address = wait_for(lambda: Service.objects.get(pk=first.service_id).address, timeout=60, what="an address")
    body = json.dumps({"instances": logistic.rows.head(3).to_numpy().tolist()}).encode()
    with Traffic(address, body, mixed=True) as traffic:
        first = finished(first.pk)
        assert first.status == "succeeded", (first.status_reason, first.objective_status)
        service = Service.objects.get(pk=first.service_id)
        assert service.current_deployment_id == first.pk

        # The slow version as a canary: it answers, but its p99 breaches the objective, so the system rolls back.
        # It bakes long enough for its slow answers to be judged (a deployment keeps the bake it was created with).
        services.environment_update(actor=users.admin, environment_id=staging.pk, data={"bake_minutes": CANARY_BAKE})
        canary = services.deployment_create(actor=users.approver, model_version_id=slow.pk, environment="staging")
        canary = finished(canary.pk)
        assert canary.status == "rolled_back", (
            canary.status_reason,
            canary.objective_status,
            list(canary.events.values_list("reason", flat=True)),
        )
        assert canary.breach.get("objective") == "p99_latency_ms", (
            canary.status_reason,
            list(canary.events.values_list("reason", flat=True)),
        )
        assert canary.breach["value"] > 300
        assert canary.breach["threshold"] == 300
        automatic = Deployment.objects.get(kind="rollback", rollback_of=canary)
        assert automatic.initiated_by is None and "p99 latency" in automatic.reason
        automatic = finished(automatic.pk)
        assert automatic.status == "succeeded", automatic.status_reason
        assert automatic.model_version_id == fast.pk
        # Traffic was back on the old revision within 60 s of the breach being observed.
        breached_at = canary.events.filter(to_status="rolled_back").get().created_at
        assert (automatic.finished_at - breached_at).total_seconds() < 60
        canary_revision = f"d{canary.pk}"  # what its processes answer with (x-revision: REVISION)

        # Deploy again, then an approver rolls it back by hand: the revision before it comes back.
        services.environment_update(actor=users.admin, environment_id=staging.pk, data={"bake_minutes": SHORT_BAKE})
        third = services.deployment_create(actor=users.approver, model_version_id=again.pk, environment="staging")
        third = finished(third.pk)
        assert third.status == "succeeded", third.status_reason
        manual = services.deployment_rollback(actor=users.approver2, service_id=service.pk, reason="customer report")
        manual = finished(manual.pk)
        assert manual.status == "succeeded", manual.status_reason
        assert manual.model_version_id == fast.pk and manual.initiated_by == users.approver2
        time.sleep(2)  # answers from the restored revision after the switch
        sent = traffic.total

    assert traffic.failures == [], traffic.failures[:10]
    assert sent > 200, traffic.answers
    # The canary did take traffic (it answered, slowly) and the stable address never changed.
    assert traffic.by_revision()[canary_revision] > 0, traffic.answers
    assert Service.objects.get(pk=service.pk).address == address
    service.refresh_from_db()
    assert service.current_deployment_id == manual.pk
    kinds = list(Deployment.objects.filter(service=service).order_by("pk").values_list("kind", "status"))
    assert kinds == [
        ("deploy", "succeeded"),
        ("deploy", "rolled_back"),
        ("rollback", "succeeded"),
        ("deploy", "succeeded"),
        ("rollback", "succeeded"),
    ]
    assert LineageEdge.objects.filter(source=slow.node_id, target=canary.node_id).exists()
