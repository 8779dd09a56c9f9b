"""Deploying and rolling back: what is refused, with a message naming the field, and changes nothing."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.exceptions import PermissionDenied, ValidationError

from controlplane.models import AuditEvent
from deployments import services
from deployments.models import ApprovalRequest, Deployment, Service
from tests.deployments.conftest import make_model_version
from tests.fixtures.processes import wait_for


def approve(version: Any, environment: Any, users: Any) -> Any:
    request = services.approval_request_create(
        actor=users.data_scientist,
        model_version_id=version.pk,
        environment=environment.name,
        justification="better on the held-out set",
    )
    for approver in (users.approver, users.approver2)[: environment.approvals_required]:
        services.approval_decide(actor=approver, request_id=request.pk, verdict="approve", comment="looks right")
    # With a worker running (transactional tests), it may take the artifact check first: either way it gets done.
    services.approval_finish(request_id=request.pk)
    return wait_for(
        lambda: ApprovalRequest.objects.exclude(status="open").filter(pk=request.pk).first(),
        timeout=60,
        what=f"approval request {request.pk} to be decided",
    )


def errors_of(excinfo: pytest.ExceptionInfo[ValidationError]) -> dict[str, list[str]]:
    return {field: list(messages) for field, messages in excinfo.value.message_dict.items()}


@pytest.fixture
def approved(version: Any, staging: Any, users: Any) -> Any:
    approve(version, staging, users)
    return version


def test_deploying_a_version_not_approved_there_is_refused_and_changes_nothing(version, staging, users) -> None:
    with pytest.raises(ValidationError) as excinfo:
        services.deployment_create(actor=users.approver, model_version_id=version.pk, environment="staging")
    assert errors_of(excinfo) == {"model_version": [f"{version} is not approved for staging (it has no request)"]}
    assert not Service.objects.exists() and not Deployment.objects.exists()


def test_only_approvers_and_admins_deploy(approved, users) -> None:
    for user in (users.data_scientist, users.finance, users.outsider):
        with pytest.raises(PermissionDenied):
            services.deployment_create(actor=user, model_version_id=approved.pk, environment="staging")
    assert not Deployment.objects.exists()


def test_unknown_version_and_environment_are_named(users, staging) -> None:
    with pytest.raises(ValidationError) as excinfo:
        services.deployment_create(actor=users.approver, model_version_id=999999, environment="prod")
    errors = errors_of(excinfo)
    assert errors["model_version"] == ["there is no model version 999999"]
    assert errors["environment"] == ["there is no environment 'prod' (environments: staging)"]


def test_a_deploy_creates_the_service_once_and_a_second_is_refused_naming_the_active_one(
    approved, staging, users, project
) -> None:
    first = services.deployment_create(actor=users.approver, model_version_id=approved.pk, environment="staging")
    assert first.status == "pending" and first.kind == "deploy" and first.replaces is None
    service = first.service
    assert service.name == "bc-classifier-staging" and service.desired_count == staging.min_desired_count
    other = make_model_version(project, users.data_scientist)
    approve(other, staging, users)
    with pytest.raises(ValidationError) as excinfo:
        services.deployment_create(actor=users.approver2, model_version_id=other.pk, environment="staging")
    assert getattr(excinfo.value, "http_status", None) == 409
    assert errors_of(excinfo)["model_version"] == [
        # A first deployment has nothing to roll back to, so the message does not offer it.
        f"deployment {first.pk} (deploy of {approved}, pending) is active on bc-classifier-staging: wait for it to "
        "finish"
    ]
    assert Service.objects.count() == 1 and Deployment.objects.count() == 1
    audited = set(AuditEvent.objects.values_list("action", flat=True))
    assert {"service.create", "deployment.deploy", "deployment.create"} <= audited


def test_rolling_back_with_no_earlier_good_revision_is_refused(approved, users) -> None:
    first = services.deployment_create(actor=users.approver, model_version_id=approved.pk, environment="staging")
    with pytest.raises(ValidationError) as excinfo:
        services.deployment_rollback(actor=users.approver, service_id=first.service_id, reason="it looks slow")
    assert errors_of(excinfo) == {
        "service": [
            f"bc-classifier-staging has no earlier good revision to roll back to: deployment {first.pk} is its first"
        ]
    }
    with pytest.raises(ValidationError) as excinfo:
        services.deployment_rollback(actor=users.approver, service_id=first.service_id, reason="")
    assert list(errors_of(excinfo)) == ["reason"]
    with pytest.raises(PermissionDenied):
        services.deployment_rollback(actor=users.data_scientist, service_id=first.service_id, reason="it is slow")
    assert Deployment.objects.get().status == "pending"


def test_a_desired_count_outside_the_environments_limits_is_refused(approved, users) -> None:
    service = services.deployment_create(
        actor=users.approver, model_version_id=approved.pk, environment="staging"
    ).service
    for bad in (0, 5, "two", True):
        with pytest.raises(ValidationError) as excinfo:
            services.service_scale(actor=users.approver, service_id=service.pk, desired_count=bad)
        assert errors_of(excinfo)["desired_count"] == [
            f"expected a whole number from 1 to 4 (staging's limits), got {bad!r}"
        ]
    assert Service.objects.get().desired_count == 1
    scaled = services.service_scale(actor=users.approver, service_id=service.pk, desired_count=3)
    assert scaled.desired_count == 3 and scaled.scale_pending


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("canary_percent", 0, "expected a percentage of traffic from 1 to 99, got 0"),
        ("canary_percent", 100, "expected a percentage of traffic from 1 to 99, got 100"),
        ("linear_step_percent", "ten", "expected a percentage of traffic from 1 to 99, got 'ten'"),
        ("strategy", "big-bang", "expected one of rolling, all_at_once, canary, linear, got 'big-bang'"),
        ("bake_minutes", -1, "expected minutes from 0 to 1440, got -1"),
        ("autoscaling_metric", "memory", "expected requests or cpu, or empty for none; got 'memory'"),
    ],
)
def test_rollout_settings_out_of_range_are_refused(staging, users, field, value, message) -> None:
    before = services.ENVIRONMENT_FIELDS and {name: getattr(staging, name) for name in services.ENVIRONMENT_FIELDS}
    with pytest.raises(ValidationError) as excinfo:
        services.environment_update(actor=users.admin, environment_id=staging.pk, data={field: value})
    assert errors_of(excinfo) == {field: [message]}
    staging.refresh_from_db()
    assert {name: getattr(staging, name) for name in services.ENVIRONMENT_FIELDS} == before


def test_on_the_aws_backend_an_environment_without_its_settings_is_refused_naming_each(
    approved, staging, users, settings
) -> None:
    settings.CONTROLPLANE_BACKEND = "aws"
    settings.ECS_CLUSTER = ""
    settings.ECS_SUBNETS = []
    settings.ECS_SECURITY_GROUPS = []
    with pytest.raises(ValidationError) as excinfo:
        services.deployment_create(actor=users.approver, model_version_id=approved.pk, environment="staging")
    messages = " ".join(errors_of(excinfo)["environment"])
    for key in ("cluster", "subnets", "security_groups", "target_group_arn", "execution_role_arn", "task_role_arn"):
        assert f"backend_settings.{key}" in messages
    assert not Service.objects.exists()


def test_a_rollback_of_what_the_caller_no_longer_sees_is_refused(approved, staging, users, project) -> None:
    first = services.deployment_create(actor=users.approver, model_version_id=approved.pk, environment="staging")
    services.DEPLOYMENT_MACHINE.apply(first.pk, "start")
    services.DEPLOYMENT_MACHINE.apply(first.pk, "bake")
    Deployment.objects.filter(pk=first.pk).update(revision=f"r-d{first.pk}")
    services.deploys._succeed(first.pk, attempt=None, reason="baked")
    other = make_model_version(project, users.data_scientist)
    approve(other, staging, users)
    second = services.deployment_create(actor=users.approver, model_version_id=other.pk, environment="staging")
    # The page was drawn while the first one was current; the second has started since.
    with pytest.raises(ValidationError) as excinfo:
        services.deployment_rollback(
            actor=users.approver, service_id=second.service_id, reason="it looks slow", expected=first.pk
        )
    assert errors_of(excinfo) == {
        "expected": [
            f"you rolled back deployment {first.pk}, but deployment {second.pk} is now bc-classifier-staging's: "
            "look again"
        ]
    }
    assert Deployment.objects.get(pk=second.pk).status == "pending" and Deployment.objects.count() == 2
    rollback = services.deployment_rollback(
        actor=users.approver, service_id=second.service_id, reason="it looks slow", expected=second.pk
    )
    assert rollback.kind == "rollback" and rollback.model_version_id == approved.pk


def _serve(deployment: Deployment, revision: str) -> None:
    """Record a deployment as its poll would once the backend said it is done."""
    services.DEPLOYMENT_MACHINE.apply(deployment.pk, "start")
    services.DEPLOYMENT_MACHINE.apply(deployment.pk, "bake")
    Deployment.objects.filter(pk=deployment.pk).update(revision=revision)
    services.deploys._succeed(deployment.pk, attempt=None, reason="baked")


def test_after_a_rollback_to_v1_there_is_no_rolling_back_to_v1_again(approved, staging, users, project) -> None:
    from deployments import selectors

    first = services.deployment_create(actor=users.approver, model_version_id=approved.pk, environment="staging")
    _serve(first, "r-d1")
    other = make_model_version(project, users.data_scientist)
    approve(other, staging, users)
    second = services.deployment_create(actor=users.approver, model_version_id=other.pk, environment="staging")
    _serve(second, "r-d2")
    back = services.deployment_rollback(actor=users.approver, service_id=first.service_id, reason="v2 misbehaves")
    assert back.model_version_id == approved.pk and back.rollback_of_id == second.pk
    _serve(back, "r-d3")  # a rollback redeploys v1 under a revision of its own
    listed = {d.pk: d for d in selectors.deployment_list(service=back.service)}
    assert listed[second.pk].status == "succeeded" and listed[second.pk].undone_by == back.pk
    assert listed[first.pk].undone_by is None
    with pytest.raises(ValidationError) as excinfo:
        services.deployment_rollback(actor=users.approver, service_id=first.service_id, reason="once more")
    assert "has no earlier good revision to roll back to" in errors_of(excinfo)["service"][0]
    assert Deployment.objects.count() == 3


def test_an_environments_limits_cannot_leave_a_running_service_outside(approved, staging, users) -> None:
    service = services.deployment_create(
        actor=users.approver, model_version_id=approved.pk, environment="staging"
    ).service
    services.service_scale(actor=users.approver, service_id=service.pk, desired_count=3)
    with pytest.raises(ValidationError) as excinfo:
        services.environment_update(actor=users.admin, environment_id=staging.pk, data={"max_desired_count": 2})
    assert errors_of(excinfo) == {
        "max_desired_count": ["bc-classifier-staging (3) run more than 2: scale them down first"]
    }
    staging.refresh_from_db()
    assert staging.max_desired_count == 4


def test_a_local_revision_stands_for_the_fargate_size_of_its_environment(approved, staging, users) -> None:
    # On the local backend too: the size is what its cost estimate prices.
    first = services.deployment_create(actor=users.approver, model_version_id=approved.pk, environment="staging")
    spec = services.deploys.revision_spec(first)
    assert (spec.deployment_id, spec.cpu, spec.memory) == (f"d{first.pk}", 256, 512)
    staging.backend_settings = {"cpu": 1024, "memory": "2048"}
    staging.save(update_fields=["backend_settings"])
    spec = services.deploys.revision_spec(Deployment.objects.get(pk=first.pk))
    assert (spec.cpu, spec.memory) == (1024, 2048)


def test_a_size_that_is_not_a_whole_number_is_refused_naming_the_setting(approved, staging, users) -> None:
    staging.backend_settings = {"cpu": "a lot", "memory": 0}
    staging.save(update_fields=["backend_settings"])
    with pytest.raises(ValidationError) as excinfo:
        services.deployment_create(actor=users.approver, model_version_id=approved.pk, environment="staging")
    assert errors_of(excinfo) == {
        "environment": [
            "staging's backend_settings.cpu: must be a whole number of CPU units (1024 = 1 vCPU) above 0, not 'a lot'",
            "staging's backend_settings.memory: must be a whole number of MiB above 0, not 0",
        ]
    }
    assert not Service.objects.exists() and not Deployment.objects.exists()
