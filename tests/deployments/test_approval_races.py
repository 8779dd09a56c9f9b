"""Decisions raced for real: each contender in its own thread with its own database connection (on PostgreSQL in
CI's first pass; SQLite serializes writers in the second). Exactly one consistent outcome every time."""

from __future__ import annotations

from typing import Any

import pytest

from controlplane.models import TransitionEvent
from deployments import services
from deployments.models import ApprovalDecision, ApprovalRequest
from tests.deployments.conftest import make_model_version
from tests.fixtures.races import race

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def no_worker_takes_them(monkeypatch: pytest.MonkeyPatch) -> None:
    """The races are the portal's and the tests' own: a session worker (started by an earlier test) must not take
    the artifact checks these commits enqueue, or it finishes the request before the contenders race for it."""
    from deployments import tasks

    monkeypatch.setattr(tasks.approval_finish_task, "delay", lambda *args, **kwargs: None)


def _request(users: Any, version: Any, environment: str) -> ApprovalRequest:
    return services.approval_request_create(
        actor=users.data_scientist, model_version_id=version.pk, environment=environment, justification="ship it"
    )


def _decide(user: Any, request_id: int, verdict: str) -> Any:
    return lambda: services.approval_decide(actor=user, request_id=request_id, verdict=verdict, comment=verdict)


def _approve_and_finish(user: Any, request_id: int) -> Any:
    def go() -> Any:
        decided = services.approval_decide(actor=user, request_id=request_id, verdict="approve", comment="ok")
        return services.approval_finish(request_id=request_id) if decided.quorum_at else None

    return go


def _withdraw(user: Any, request_id: int) -> Any:
    return lambda: services.approval_withdraw(actor=user, request_id=request_id, reason="oops")


def _events(request_id: int) -> list[str]:
    rows = TransitionEvent.objects.filter(object_type="deployments.approvalrequest", object_id=str(request_id))
    return list(rows.values_list("to_status", flat=True))


def test_two_approvers_at_once_with_one_approval_needed(users, version, staging) -> None:
    req = _request(users, version, "staging")
    outcomes = race(_decide(users.approver, req.pk, "approve"), _decide(users.approver2, req.pk, "approve"))
    errors = [o.error for o in outcomes if o.error is not None]
    # One approval completes the quorum; the other approver is told the request already has its approvals.
    assert len(errors) == 1 and isinstance(errors[0], services.Conflict), errors
    assert ApprovalDecision.objects.filter(request=req).count() == 1
    outcomes = race(*[lambda: services.approval_finish(request_id=req.pk)] * 2)
    assert [o.error for o in outcomes] == [None, None]
    assert sum(o.value is not None for o in outcomes) == 1
    assert ApprovalRequest.objects.get(pk=req.pk).status == "approved"
    assert _events(req.pk) == ["open", "approved"]


def test_two_approvers_at_once_make_two_of_two(users, version, staging) -> None:
    services.environment_update(actor=users.admin, environment_id=staging.pk, data={"approvals_required": 2})
    req = _request(users, version, "staging")
    outcomes = race(_decide(users.approver, req.pk, "approve"), _decide(users.approver2, req.pk, "approve"))
    assert [o.error for o in outcomes] == [None, None]
    # Counted under the lock: the second of the two, whichever it was, saw both approvals and reached the quorum.
    assert ApprovalRequest.objects.get(pk=req.pk).quorum_at is not None
    assert services.approval_finish(request_id=req.pk).status == "approved"


def test_an_approval_racing_a_rejection(users, version, staging) -> None:
    req = _request(users, version, "staging")
    outcomes = race(_decide(users.approver, req.pk, "approve"), _decide(users.approver2, req.pk, "reject"))
    errors = [o.error for o in outcomes if o.error is not None]
    assert len(errors) == 1 and isinstance(errors[0], services.Conflict)
    services.approval_finish(request_id=req.pk)
    final = ApprovalRequest.objects.get(pk=req.pk)
    winner = ApprovalDecision.objects.get(request=req)
    assert final.status == ("approved" if winner.verdict == "approve" else "rejected")
    assert _events(req.pk) == ["open", final.status]


def test_an_approval_racing_a_withdrawal(users, version, staging) -> None:
    for _ in range(3):
        req = _request(users, make_model_version(version.registered_model.project, users.data_scientist), "staging")
        outcomes = race(_approve_and_finish(users.approver, req.pk), _withdraw(users.data_scientist, req.pk))
        final = ApprovalRequest.objects.get(pk=req.pk)
        assert final.status in ("approved", "withdrawn")
        # Whichever won, the loser was refused or stood down, and the history has exactly one ending.
        assert _events(req.pk) == ["open", final.status]
        if final.status == "approved":
            assert isinstance(outcomes[1].error, services.Conflict)
        else:
            assert outcomes[0].error is None or isinstance(outcomes[0].error, services.Conflict)


def test_two_requests_for_the_same_version_and_environment(users, version, staging) -> None:
    outcomes = race(*[lambda: _request(users, version, "staging")] * 3)
    made = [o.value for o in outcomes if o.error is None]
    errors = [o.error for o in outcomes if o.error is not None]
    assert len(made) == 1 and len(errors) == 2
    assert all(isinstance(error, services.Conflict) for error in errors), errors
    assert ApprovalRequest.objects.filter(model_version=version).count() == 1


def test_expiry_racing_a_decision(users, version, staging) -> None:
    from datetime import timedelta

    from django.utils import timezone

    req = _request(users, version, "staging")
    ApprovalRequest.objects.filter(pk=req.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    outcomes = race(lambda: services.approval_requests_expire(), _decide(users.approver, req.pk, "approve"))
    assert isinstance(outcomes[1].error, services.Conflict)
    assert ApprovalRequest.objects.get(pk=req.pk).status == "expired"
    assert not ApprovalDecision.objects.filter(request=req).exists()
    assert _events(req.pk) == ["open", "expired"]
