"""The deployment flow on the Fargate backend, through deployments.services, with no Celery worker: the worker-side
functions (deployment_start, deployment_poll) run in-process. ECS and the load balancer are moto's server over HTTP;
the service-deployment operations moto lacks go to a botocore Stubber (tests.workers.test_deploy_fargate), which is
the only AWS boundary replaced here."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any, cast

import pytest
import sklearn
from botocore.client import BaseClient
from botocore.stub import Stubber

from deployments import services, tasks
from deployments.models import Deployment, Environment
from deployments.services import deploys
from lineage.models import ModelVersion
from tests.deployments.conftest import make_model_version
from tests.deployments.test_deploys import approve
from tests.workers import test_deploy_fargate as fargate_tests
from tests.workers.test_deploy_fargate import (
    ACCOUNT,
    CANARY,
    CLUSTER,
    NAME,
    NOW,
    REGION,
    VERDICT_MINUTES,
    Network,
    PartlyStubbed,
    expect_describe,
    expect_lookup,
    hook,
    moto_ecs,
    sd,
    service_deployment,
    td,
)
from workers import aws
from workers.deploy.base import Rollout
from workers.deploy.fargate import FargateServingBackend

pytestmark = pytest.mark.django_db

# The moto network and the Stubber of the backend's own tests, as fixtures here too.
network = fargate_tests.network
stub = fargate_tests.stub
stub_client = fargate_tests.stub_client

P99_OBJECTIVE_MS = 250.0


@pytest.fixture
def fargate(settings: Any, network: Network, stub: Stubber, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Settings for the aws backend, recorded signals in a file, and the backend built with the split ECS client."""
    settings.CONTROLPLANE_BACKEND = "aws"
    settings.AWS_REGION = REGION
    settings.SERVING_IMAGE = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/controlplane-serving"
    settings.DEPLOYMENT_SIGNALS = "recorded"
    signals = tmp_path / "signals.json"
    settings.DEPLOYMENT_RECORDED_SIGNALS = str(signals)
    settings.OBJECTIVE_MIN_REQUESTS = 10
    ecs = PartlyStubbed(aws.aws_client("ecs", region=REGION), stub.client)
    backend = FargateServingBackend(REGION, ecs_client=cast(BaseClient, ecs), clock=NOW.timestamp)
    monkeypatch.setattr(deploys, "serving_backend", lambda name: backend)
    # No broker: what would be enqueued is run by the test itself.
    monkeypatch.setattr(tasks.deployment_start_task, "delay", lambda *a, **k: None)
    monkeypatch.setattr(tasks.deployment_poll_task, "apply_async", lambda *a, **k: None)
    return signals


@pytest.fixture
def production(users: Any, network: Network) -> Environment:
    environment = services.environment_create(
        actor=users.admin,
        data={"name": "production", "order": 20, "approvals_required": 1, "gates": []},
    )
    Environment.objects.filter(pk=environment.pk).update(
        backend_settings=network.settings,
        strategy="canary",
        canary_percent=10.0,
        bake_minutes=5,
        objective_p99_latency_ms=P99_OBJECTIVE_MS,
        min_desired_count=2,
    )
    return Environment.objects.get(pk=environment.pk)


def churn_version(project: Any, users: Any, environment: Environment, monkeypatch: pytest.MonkeyPatch) -> ModelVersion:
    """A model version of `churn` (so its service is churn-production, as the stubbed answers name it), recording
    the installed scikit-learn release (its serving image is chosen by it), approved."""
    version = make_model_version(project, users.data_scientist, model="churn", framework_version=sklearn.__version__)
    approve(version, environment, users)
    return version


def paused_at_hook(n: int, *, baking: bool = False) -> dict[str, Any]:
    """Service deployment n at our PAUSE hook after the traffic shift: past its bake, or still baking."""
    expires = NOW + timedelta(minutes=VERDICT_MINUTES + (2 if baking else 0))
    return service_deployment(
        n,
        "IN_PROGRESS",
        rollout=CANARY,
        stage="POST_PRODUCTION_TRAFFIC_SHIFT",
        hooks=[hook(expires=expires)],
        weight=100.0,
        source=None if n == 1 else n - 1,
    )


def expect_promote(stub: Stubber, n: int) -> None:
    """A poll past the bake: progress, then promote (CONTINUE at the hook), then ECS reports it successful."""
    expect_describe(stub, paused_at_hook(n), paused_at_hook(n))
    stub.add_response(
        "continue_service_deployment",
        {"serviceDeploymentArn": sd(n)},
        {"serviceDeploymentArn": sd(n), "hookId": hook()["hookId"], "action": "CONTINUE"},
    )
    expect_describe(
        stub,
        service_deployment(n, "SUCCESSFUL", rollout=CANARY, hooks=[hook("SUCCEEDED")], source=None if n == 1 else 1),
    )


def test_deploy_canary_breach_rollback_redeploy_and_manual_rollback_on_fargate(
    fargate: Any, stub: Stubber, production: Environment, project: Any, users: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    v1, v2, v3 = (churn_version(project, users, production, monkeypatch) for _ in range(3))

    # v1: the first deploy creates the ECS service; one poll past the bake promotes it.
    first = services.deployment_create(actor=users.approver, model_version_id=v1.pk, environment="production")
    expect_lookup(stub, [(1, 1)])
    services.deployment_start(deployment_id=first.pk)
    first.refresh_from_db()
    assert (first.status, first.revision) == ("in_progress", td(1))
    service = first.service
    assert service.name == NAME
    assert moto_ecs().describe_services(cluster=CLUSTER, services=[NAME])["services"][0]["taskDefinition"] == td(1)
    expect_promote(stub, 1)
    first = services.deployment_poll(deployment_id=first.pk)
    assert first.status == "succeeded"
    service.refresh_from_db()
    assert service.current_deployment_id == first.pk

    # v2 as a canary: it bakes, then a p99 above the objective rolls it back.
    second = services.deployment_create(actor=users.approver, model_version_id=v2.pk, environment="production")
    expect_lookup(stub, [(1, 1), (2, 2)])
    services.deployment_start(deployment_id=second.pk)
    second.refresh_from_db()
    assert (second.revision, second.backend_handle["previous_revision"]) == (td(2), td(1))
    expect_describe(
        stub, service_deployment(2, "IN_PROGRESS", rollout=CANARY, stage="PRODUCTION_TRAFFIC_SHIFT", weight=10.0)
    )
    second = services.deployment_poll(deployment_id=second.pk)
    assert second.status == "baking"
    fargate.write_text(json.dumps({f"{NAME}/{second.revision}": {"requests": 400, "errors": 0, "p99_latency_ms": 900}}))
    expect_describe(stub, paused_at_hook(2, baking=True))
    second = services.deployment_poll(deployment_id=second.pk)
    assert second.status == "rolled_back"
    assert second.breach["objective"] == "p99_latency_ms" and second.breach["value"] == 900
    back = Deployment.objects.get(rollback_of=second)
    assert (back.kind, back.status, back.revision) == ("rollback", "pending", td(1))

    # Its start sends all traffic back at our hook: ContinueServiceDeployment ROLLBACK.
    expect_describe(stub, paused_at_hook(2, baking=True), paused_at_hook(2, baking=True))
    stub.add_response(
        "continue_service_deployment",
        {"serviceDeploymentArn": sd(2)},
        {"serviceDeploymentArn": sd(2), "hookId": hook()["hookId"], "action": "ROLLBACK"},
    )
    expect_describe(stub, service_deployment(2, "ROLLBACK_IN_PROGRESS", rollout=CANARY))
    back = services.deployment_start(deployment_id=back.pk)
    # ECS is still taking the traffic back: the rollback follows it until ECS says it is done.
    assert back.status == "in_progress" and back.backend_handle["revision"] == td(2)
    stub.assert_no_pending_responses()
    expect_describe(stub, service_deployment(2, "ROLLBACK_SUCCESSFUL", rollout=CANARY))
    back = services.deployment_poll(deployment_id=back.pk)
    assert back.status == "succeeded", back.status_reason
    assert back.backend_handle == {"revision": td(1), "rollout_id": "", "previous_revision": ""}
    stub.assert_no_pending_responses()
    service.refresh_from_db()
    assert service.current_deployment_id == back.pk

    # v3 deploys and succeeds.
    third = services.deployment_create(actor=users.approver, model_version_id=v3.pk, environment="production")
    expect_lookup(stub, [(1, 1), (2, 2), (3, 3)])
    services.deployment_start(deployment_id=third.pk)
    third.refresh_from_db()
    assert third.revision == td(3)
    expect_promote(stub, 3)
    third = services.deployment_poll(deployment_id=third.pk)
    assert third.status == "succeeded"
    service.refresh_from_db()
    assert service.current_deployment_id == third.pk

    # A manual rollback after it finished: UpdateService back to the earlier task definition.
    manual = services.deployment_rollback(actor=users.approver, service_id=service.pk, reason="p99 regressed in v3")
    assert (manual.kind, manual.rollback_of_id, manual.revision) == ("rollback", third.pk, td(1))
    expect_lookup(stub, [(1, 1), (2, 2), (3, 3), (4, 1)])
    manual = services.deployment_start(deployment_id=manual.pk)
    assert moto_ecs().describe_services(cluster=CLUSTER, services=[NAME])["services"][0]["taskDefinition"] == td(1)
    assert manual.backend_handle["rollout_id"] == sd(4)
    assert manual.status == "in_progress"
    stub.assert_no_pending_responses()

    # ECS deploys it blue/green (a rollback goes all at once, with no bake): one poll finds it at our hook with all
    # production traffic on the old revision, continues it (ContinueServiceDeployment CONTINUE), and ECS reports
    # the service deployment successful.
    at_hook = service_deployment(
        4,
        "IN_PROGRESS",
        rollout=Rollout("all_at_once", 0),
        stage="POST_PRODUCTION_TRAFFIC_SHIFT",
        hooks=[hook()],
        weight=100.0,
        source=3,
    )
    expect_describe(stub, at_hook, at_hook)
    stub.add_response(
        "continue_service_deployment",
        {"serviceDeploymentArn": sd(4)},
        {"serviceDeploymentArn": sd(4), "hookId": hook()["hookId"], "action": "CONTINUE"},
    )
    expect_describe(
        stub,
        service_deployment(4, "SUCCESSFUL", rollout=Rollout("all_at_once", 0), hooks=[hook("SUCCEEDED")], source=3),
    )
    manual = services.deployment_poll(deployment_id=manual.pk)
    assert manual.status == "succeeded", manual.status_reason
    assert manual.backend_handle == {"revision": td(1), "rollout_id": sd(4), "previous_revision": td(3)}
    stub.assert_no_pending_responses()
    service.refresh_from_db()
    assert service.current_deployment_id == manual.pk
    assert moto_ecs().describe_services(cluster=CLUSTER, services=[NAME])["services"][0]["taskDefinition"] == td(1)
    events = manual.events.exclude(to_status="").order_by("created_at", "id")
    assert [(e.action, e.from_status, e.to_status) for e in events] == [
        ("create", "", "pending"),
        ("start", "pending", "in_progress"),
        ("bake", "in_progress", "baking"),
        ("succeed", "baking", "succeeded"),
    ]
    assert events.last().reason == "the rolled-back-to revision serves all traffic"

    kinds = list(Deployment.objects.order_by("pk").values_list("kind", "status"))
    assert kinds == [
        ("deploy", "succeeded"),
        ("deploy", "rolled_back"),
        ("rollback", "succeeded"),
        ("deploy", "succeeded"),
        ("rollback", "succeeded"),
    ]
