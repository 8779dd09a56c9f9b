"""Approval requests through the services: four-eyes, N-of-M, rejection, withdrawal, expiry, gates, overrides,
the artifact check, and what the requester is told."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.core import mail
from django.core.exceptions import PermissionDenied, ValidationError
from django.utils import timezone

from controlplane import permissions
from controlplane import services as controlplane_services
from controlplane.models import AuditEvent, Notification, TransitionEvent
from deployments import services, signals
from deployments.models import ApprovalDecision, ApprovalRequest, GateResult
from tests.deployments.conftest import make_model_version
from tests.fixtures.roles import make_user

pytestmark = pytest.mark.django_db


def request(users: Any, version: Any, environment: str = "staging", **extra: Any) -> ApprovalRequest:
    return services.approval_request_create(
        actor=users.data_scientist,
        model_version_id=version.pk,
        environment=environment,
        justification="better recall on the holdout",
        **extra,
    )


def approve(user: Any, req: ApprovalRequest, comment: str = "looks right") -> ApprovalRequest:
    return services.approval_decide(actor=user, request_id=req.pk, verdict="approve", comment=comment)


def test_one_approval_by_someone_else_approves_after_the_artifact_check(users, version, staging) -> None:
    req = request(users, version)
    assert req.status == "open" and req.artifact_sha256 == version.sha256
    after = approve(users.approver, req)
    # The approval is recorded; the worker's artifact check finishes the request.
    assert after.status == "open" and after.quorum_at is not None
    done = services.approval_finish(request_id=req.pk)
    assert done is not None and done.status == "approved" and done.finished_at is not None
    assert "alex" in done.status_reason
    events = list(TransitionEvent.objects.filter(object_type="deployments.approvalrequest", object_id=str(req.pk)))
    assert [(e.action, e.to_status) for e in events] == [("request", "open"), ("approve", "approved")]
    actions = set(AuditEvent.objects.filter(object_type="approval_request").values_list("action", flat=True))
    assert {"approval_request.create", "approval_request.decision.approve", "approval_request.approve"} <= actions
    # A second finish (a redelivered message) changes nothing.
    assert services.approval_finish(request_id=req.pk) is None


def test_the_requester_and_the_run_author_cannot_decide(users, project, staging) -> None:
    authored_by_approver = make_model_version(project, users.approver)
    req = services.approval_request_create(
        actor=users.admin, model_version_id=authored_by_approver.pk, environment="staging", justification="go"
    )
    with pytest.raises(ValidationError) as refused:
        services.approval_decide(actor=users.admin, request_id=req.pk, verdict="approve", comment="mine")
    assert "requester" in refused.value.message_dict["approver"][0]
    with pytest.raises(ValidationError) as refused:
        approve(users.approver, req)
    assert "authored the training run" in refused.value.message_dict["approver"][0]
    with pytest.raises(PermissionDenied):
        services.approval_decide(actor=users.finance, request_id=req.pk, verdict="approve", comment="finance")
    assert not ApprovalDecision.objects.exists()
    assert ApprovalRequest.objects.get(pk=req.pk).quorum_at is None


def test_two_of_two_distinct_approvals_and_no_deciding_twice(users, version, staging, production) -> None:
    approve(users.approver, request(users, version))
    services.approval_finish(request_id=ApprovalRequest.objects.get().pk)
    req = request(users, version, "production")
    assert req.approvals_required == 2
    approve(users.approver, req)
    with pytest.raises(services.Conflict) as twice:
        approve(users.approver, req, "again")
    assert "already decided" in twice.value.message_dict["verdict"][0]
    assert ApprovalRequest.objects.get(pk=req.pk).quorum_at is None
    approve(users.approver2, req)
    assert services.approval_finish(request_id=req.pk).status == "approved"
    assert ApprovalDecision.objects.filter(request=req).count() == 2


def test_one_rejection_rejects_and_tells_the_requester(users, version, staging, production) -> None:
    req = request(users, version)
    with pytest.raises(ValidationError) as bad:
        services.approval_decide(actor=users.approver, request_id=req.pk, verdict="maybe", comment="")
    assert set(bad.value.message_dict) == {"verdict", "comment"}
    rejected = services.approval_decide(
        actor=users.approver, request_id=req.pk, verdict="reject", comment="recall too low on minorities"
    )
    assert rejected.status == "rejected" and "recall too low" in rejected.status_reason
    with pytest.raises(services.Conflict) as closed:
        approve(users.approver2, req)
    assert "is rejected" in closed.value.message_dict["status"][0]
    note = Notification.objects.get(user=users.data_scientist)
    assert "rejected" in note.title and note.url.endswith(f"/{req.pk}/")
    assert controlplane_services.notification_email_send(notification_id=note.pk) is True
    assert mail.outbox[-1].to == [users.data_scientist.email] and "rejected" in mail.outbox[-1].subject
    # Sent once: a redelivered message sends nothing more.
    assert controlplane_services.notification_email_send(notification_id=note.pk) is False
    # A rejected request may be asked again.
    assert request(users, version).status == "open"


def test_withdrawal_by_the_requester_only(users, version, staging) -> None:
    req = request(users, version)
    with pytest.raises(PermissionDenied):
        services.approval_withdraw(actor=make_user("dee", permissions.DATA_SCIENTIST), request_id=req.pk)
    with pytest.raises(ValidationError) as unknown:
        services.approval_withdraw(actor=users.data_scientist, request_id="x1")
    assert "no approval request 'x1'" in unknown.value.message_dict["request"][0]
    withdrawn = services.approval_withdraw(actor=users.data_scientist, request_id=req.pk, reason="retraining")
    assert withdrawn.status == "withdrawn"
    with pytest.raises(services.Conflict):
        approve(users.approver, req)


def test_expiry_by_the_sweep_and_on_decision(users, project, staging) -> None:
    first = request(users, make_model_version(project, users.data_scientist))
    second = request(users, make_model_version(project, users.data_scientist))
    assert round((first.expires_at - first.created_at).total_seconds() / 86400) == 14
    ApprovalRequest.objects.filter(pk__in=[first.pk, second.pk]).update(expires_at=timezone.now() - timedelta(1))
    with pytest.raises(services.Conflict) as late:
        approve(users.approver, first)
    assert "expired" in late.value.message_dict["status"][0]
    assert services.approval_requests_expire() == 1
    for req in (first, second):
        req.refresh_from_db()
        assert req.status == "expired" and "nobody decided it within 14 days" in req.status_reason
    assert services.approval_requests_expire() == 0


def test_gates_pass_fail_and_override_with_a_reason(users, project, staging) -> None:
    strict = services.environment_create(
        actor=users.admin, data={"name": "prod-strict", "order": 30, "gates": ["accuracy >= 0.97"]}
    )
    lenient = services.environment_create(
        actor=users.admin,
        data={"name": "prod-lenient", "order": 31, "gates": ["accuracy >= 0.97"], "allow_override": True},
    )
    weak = make_model_version(project, users.data_scientist, metrics={"accuracy": 0.93})
    with pytest.raises(ValidationError) as failed:
        request(users, weak, strict.name)
    assert "accuracy = 0.93 misses >= 0.97" in failed.value.message_dict["environment"][0]
    with pytest.raises(ValidationError) as needs_reason:
        request(users, weak, lenient.name)
    assert "give a reason" in needs_reason.value.message_dict["override_reason"][0]
    with pytest.raises(ValidationError):
        request(users, weak, strict.name, override_reason="trust me")
    assert not ApprovalRequest.objects.exists()
    with pytest.raises(ValidationError) as too_short:
        request(users, weak, lenient.name, override_reason="urgent")
    assert "at least 20 characters" in too_short.value.message_dict["override_reason"][0]
    req = request(users, weak, lenient.name, override_reason="the only model that handles the new feed")
    assert req.gates_passed is False and req.overridden_by == users.data_scientist
    [gate] = GateResult.objects.filter(request=req)
    assert gate.passed is False and gate.evidence == {
        "metric": "accuracy",
        "value": 0.93,
        "op": ">=",
        "threshold": 0.97,
    }
    assert AuditEvent.objects.filter(action="approval_request.override", reason__contains="new feed").exists()


def test_no_regression_and_schema_gates_compare_with_the_approved_version(users, project, staging, production):
    good = make_model_version(project, users.data_scientist, metrics={"accuracy": 0.96})
    for env in ("staging", "production"):
        req = request(users, good, env)
        approve(users.approver, req)
        if env == "production":
            approve(users.approver2, req)
        services.approval_finish(request_id=req.pk)
    worse = make_model_version(project, users.data_scientist, metrics={"accuracy": 0.94})
    approve(users.approver, request(users, worse))
    services.approval_finish(request_id=ApprovalRequest.objects.get(model_version=worse).pk)
    with pytest.raises(ValidationError) as regressed:
        request(users, worse, "production")
    message = regressed.value.message_dict["environment"][0]
    assert "beyond the tolerance" in message and "v1" in message
    renamed = make_model_version(
        project, users.data_scientist, metrics={"accuracy": 0.97}, input_schema=[{"name": "radius", "type": "float"}]
    )
    with pytest.raises(ValidationError) as schema:
        request(users, renamed, "production")
    text = schema.value.message_dict["environment"][0]
    assert "input schema differs" in text and "missing: mean radius" in text
    assert "was not approved for staging first" in text


def test_bad_requests_change_nothing(users, version, staging, production) -> None:
    with pytest.raises(ValidationError) as bad:
        services.approval_request_create(
            actor=users.data_scientist, model_version_id=version.pk, environment="moon", justification=""
        )
    assert set(bad.value.message_dict) == {"environment", "justification"}
    assert "staging" in bad.value.message_dict["environment"][0]
    auc = services.environment_create(actor=users.admin, data={"name": "auc-env", "gates": ["roc_auc >= 0.9"]})
    with pytest.raises(ValidationError) as missing:
        request(users, version, auc.name)
    assert "roc_auc" in missing.value.message_dict["model_version"][0]
    request(users, version)
    with pytest.raises(services.Conflict) as twice:
        request(users, version)
    assert "already has an open request" in twice.value.message_dict["model_version"][0]
    with pytest.raises(PermissionDenied):
        services.approval_request_create(
            actor=users.approver, model_version_id=version.pk, environment="production", justification="x"
        )
    assert ApprovalRequest.objects.count() == 1


def test_a_changed_artifact_is_refused(users, version, staging, settings) -> None:
    from pathlib import Path

    req = request(users, version)
    approve(users.approver, req)
    stored = Path(settings.OBJECT_STORE_URL.removeprefix("file://")) / version.artifact_key
    stored.chmod(0o644)
    stored.write_bytes(b"tampered")
    done = services.approval_finish(request_id=req.pk)
    assert done.status == "rejected" and "no longer matches" in done.status_reason


def test_environment_settings_are_validated_and_audited(users, staging) -> None:
    with pytest.raises(ValidationError) as bad:
        services.environment_create(
            actor=users.admin,
            data={
                "name": "Prod!",
                "approvals_required": 0,
                "gates": ["accuracy >= high", "approved in nowhere"],
                "objective_error_rate": 2,
                "min_desired_count": 5,
                "max_desired_count": 2,
            },
        )
    errors = bad.value.message_dict
    assert set(errors) == {"name", "approvals_required", "gates", "objective_error_rate", "max_desired_count"}
    assert "'high' is not a number" in errors["gates"][0] and "no environment 'nowhere'" in errors["gates"][1]
    with pytest.raises(PermissionDenied):
        services.environment_create(actor=users.data_scientist, data={"name": "dev"})
    changed = services.environment_update(
        actor=users.admin, environment_id=staging.pk, data={"approvals_required": 2, "gates": "f1 >= 0.8\n"}
    )
    assert changed.approvals_required == 2 and changed.gates == ["f1 >= 0.8"]
    event = AuditEvent.objects.get(action="environment.change")
    assert event.before == {"approvals_required": 1, "gates": []}
    assert event.after == {"approvals_required": 2, "gates": ["f1 >= 0.8"]}


def test_the_approval_is_announced_once_and_a_lost_announcement_is_resent(users, version, staging) -> None:
    received = []

    def receiver(sender: Any, request: ApprovalRequest, **kwargs: Any) -> None:
        received.append(request.pk)

    def broken(sender: Any, request: ApprovalRequest, **kwargs: Any) -> None:
        raise RuntimeError("a receiver that fails must not stop the others")

    req = request(users, version)
    approve(users.approver, req)
    services.approval_finish(request_id=req.pk)
    signals.model_version_approved.connect(broken, weak=False)
    signals.model_version_approved.connect(receiver, weak=False)
    try:
        # The worker died before announcing: the sweep finds it once a lease has passed.
        ApprovalRequest.objects.filter(pk=req.pk).update(finished_at=timezone.now() - timedelta(hours=3))
        from unittest import mock

        with mock.patch("deployments.tasks.approval_announce_task.delay") as send:
            services.approval_requests_resume()
        assert [call.args for call in send.call_args_list] == [(req.pk,)]
        assert services.approval_announce(request_id=req.pk) is True
        assert services.approval_announce(request_id=req.pk) is False
    finally:
        signals.model_version_approved.disconnect(broken)
        signals.model_version_approved.disconnect(receiver)
    assert received == [req.pk]
    assert ApprovalRequest.objects.get(pk=req.pk).announced_at is not None


def test_a_request_with_its_approvals_does_not_expire(users, version, staging) -> None:
    req = request(users, version)
    approve(users.approver, req)
    ApprovalRequest.objects.filter(pk=req.pk).update(expires_at=timezone.now() - timedelta(1))
    assert services.approval_requests_expire() == 0
    assert services.approval_request_expire(request_id=req.pk) is None
    assert services.approval_finish(request_id=req.pk).status == "approved"


def test_an_approver_whose_role_was_revoked_before_the_check_still_counts(users, version, staging) -> None:
    req = request(users, version)
    approve(users.approver, req)
    users.approver.groups.clear()
    assert services.approval_finish(request_id=req.pk).status == "approved"


def test_the_author_of_a_reproduction_with_the_same_bytes_cannot_decide(users, version, staging) -> None:
    from lineage.models import Run

    Run.objects.create(
        project=version.registered_model.project,
        kind="training",
        recipe="logistic_regression",
        recipe_version="2",
        recipe_fingerprint="e" * 64,
        created_by=users.approver,
        status="succeeded",
        same_model_as=version,
    )
    req = request(users, version)
    with pytest.raises(ValidationError) as refused:
        approve(users.approver, req)
    assert "authored the training run" in refused.value.message_dict["approver"][0]
    # Nor is it in their queue, while it is in the other approver's.
    from deployments import selectors

    assert not selectors.approval_queue(user=users.approver).filter(pk=req.pk).exists()
    assert selectors.approval_queue(user=users.approver2).filter(pk=req.pk).exists()


@pytest.mark.parametrize("value", ["n/a", None, {"mean": 0.9}, True])
def test_a_metric_that_is_not_a_number_is_refused_naming_it(users, project, staging, value) -> None:
    odd = make_model_version(project, users.data_scientist, metrics={"accuracy": value})
    gated = services.environment_create(actor=users.admin, data={"name": "gated", "gates": ["accuracy >= 0.9"]})
    with pytest.raises(ValidationError) as refused:
        request(users, odd, gated.name)
    assert "accuracy" in refused.value.message_dict["model_version"][0]
    assert not ApprovalRequest.objects.exists()


def test_an_environment_named_in_another_gate_keeps_its_name(users, staging, production) -> None:
    with pytest.raises(ValidationError) as refused:
        services.environment_update(actor=users.admin, environment_id=staging.pk, data={"name": "stage"})
    assert "production gate on 'approved in staging'" in refused.value.message_dict["name"][0]


def test_a_missing_artifact_refuses_the_approval_saying_why(users, version, staging, settings) -> None:
    from pathlib import Path

    from workers.errors import ObjectNotFound

    req = request(users, version)
    approve(users.approver, req)
    stored = Path(settings.OBJECT_STORE_URL.removeprefix("file://")) / version.artifact_key
    stored.unlink()
    with pytest.raises(ObjectNotFound) as gone:
        services.approval_finish(request_id=req.pk)
    done = services.approval_finish_fail(request_id=req.pk, error=str(gone.value))
    assert done.status == "rejected" and "could not be read" in done.status_reason


def test_an_email_is_sent_once_and_resent_after_a_worker_died_sending_it(users, version, staging) -> None:
    req = request(users, version)
    services.approval_decide(actor=users.approver, request_id=req.pk, verdict="reject", comment="no")
    note = Notification.objects.get(user=users.data_scientist)
    # A worker claimed it and died before the mail server took it.
    Notification.objects.filter(pk=note.pk).update(
        email_claimed_at=timezone.now(), created_at=timezone.now() - timedelta(minutes=30)
    )
    assert controlplane_services.notification_email_send(notification_id=note.pk) is False
    assert controlplane_services.notification_emails_resume() == 0
    Notification.objects.filter(pk=note.pk).update(email_claimed_at=timezone.now() - timedelta(minutes=11))
    from unittest import mock

    with mock.patch("controlplane.tasks.notification_email_task.delay") as send:
        assert controlplane_services.notification_emails_resume() == 1
    assert send.call_args.args == (note.pk,)
    assert controlplane_services.notification_email_send(notification_id=note.pk) is True
    assert len(mail.outbox) == 1 and Notification.objects.get(pk=note.pk).emailed_at is not None
    assert controlplane_services.notification_email_send(notification_id=note.pk) is False


def test_the_promotion_order_is_never_overridden(users, version, staging) -> None:
    services.environment_create(
        actor=users.admin,
        data={"name": "production", "order": 20, "gates": ["approved in staging"], "allow_override": True},
    )
    with pytest.raises(ValidationError) as refused:
        request(users, version, "production", override_reason="the customer needs it in production today")
    message = refused.value.message_dict["environment"][0]
    assert "approved in staging cannot be overridden" in message
    assert not ApprovalRequest.objects.exists()


def test_the_approvers_who_may_decide_are_told_in_the_app_only(users, project, staging) -> None:
    version = make_model_version(project, users.approver2)  # blair trained it: she may not decide
    req = services.approval_request_create(
        actor=users.data_scientist, model_version_id=version.pk, environment="staging", justification="go"
    )
    told = Notification.objects.filter(url__endswith=f"/approvals/{req.pk}/")
    assert list(told.values_list("user__username", "by_email")) == [("alex", False)]
    assert controlplane_services.notification_email_send(notification_id=told.get().pk) is False
