"""The same races as tests/deployments/test_*_races.py, but as people make them: real HTTP clients in parallel
against the portal's server (the live server: one thread and one database connection per request), released
together. Each race ends in one consistent state, the losers get a clear 409, and the audit trail has one entry per
change that happened."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import requests
from rest_framework.authtoken.models import Token

from controlplane.models import AuditEvent, TransitionEvent
from deployments import services
from deployments.models import ApprovalRequest, Deployment
from lineage.models import Run
from tests.deployments.conftest import make_model_version
from tests.deployments.test_deploy_races import serving_one_rolling_out_another
from tests.deployments.test_deploys import approve

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def no_worker_takes_them(monkeypatch: pytest.MonkeyPatch) -> None:
    """The portal's side alone: no worker (a session one from an earlier test) starts what these commits enqueue."""
    from deployments import tasks

    monkeypatch.setattr(tasks.deployment_start_task, "delay", lambda *args, **kwargs: None)
    monkeypatch.setattr(tasks.deployment_poll_task, "apply_async", lambda *args, **kwargs: None)
    monkeypatch.setattr(tasks.approval_finish_task, "delay", lambda *args, **kwargs: None)


def session(user: Any) -> requests.Session:
    http = requests.Session()
    http.headers["Authorization"] = f"Token {Token.objects.get_or_create(user=user)[0].key}"
    return http


def at_once(*calls: tuple[requests.Session, str, str, dict[str, Any]]) -> list[requests.Response]:
    """Send every request at the same moment, one client thread each; the answers in order."""
    barrier = threading.Barrier(len(calls))
    answers: list[Any] = [None] * len(calls)

    def send(index: int, http: requests.Session, method: str, url: str, body: dict[str, Any]) -> None:
        barrier.wait(timeout=30)
        answers[index] = http.request(method, url, json=body, timeout=60)

    threads = [threading.Thread(target=send, args=(i, *call)) for i, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(90)
    assert all(answer is not None for answer in answers), "a client got no answer"
    return answers


def statuses(answers: list[requests.Response]) -> list[int]:
    return sorted(answer.status_code for answer in answers)


def test_an_approval_and_a_rejection_sent_at_once_end_in_one_verdict(live_server, users, version, staging) -> None:
    request = services.approval_request_create(
        actor=users.data_scientist, model_version_id=version.pk, environment="staging", justification="ship it"
    )
    url = f"{live_server.url}/api/v1/approval-requests/{request.pk}/decisions/"
    answers = at_once(
        (session(users.approver), "POST", url, {"verdict": "approve", "comment": "fine"}),
        (session(users.approver2), "POST", url, {"verdict": "reject", "comment": "not yet"}),
    )
    assert all(answer.status_code in (200, 409) for answer in answers), [a.text for a in answers]
    won = [answer for answer in answers if answer.status_code == 200]
    request.refresh_from_db()
    decisions = list(request.decisions.values_list("verdict", flat=True))
    # Either the rejection came first (rejected; the approval refused), or the approval met the quorum first (the
    # rejection refused), or both were recorded before either finished it: one rejection rejects.
    if "reject" in decisions:
        assert request.status == "rejected"
    else:
        assert decisions == ["approve"] and request.quorum_at is not None
    assert len(won) == len(decisions)
    for answer in answers:
        if answer.status_code == 409:
            assert answer.json()["error"]["code"] == "conflict"
    assert AuditEvent.objects.filter(action__startswith="approval_request.decision.").count() == len(decisions)
    ends = TransitionEvent.objects.filter(object_id=str(request.pk), to_status__in=["approved", "rejected"])
    assert ends.count() == (1 if request.status in ("approved", "rejected") else 0)


def test_two_approvers_deploying_one_version_at_once_make_one_deployment(live_server, users, project, staging) -> None:
    version = make_model_version(project, users.data_scientist)
    approve(version, staging, users)
    url = f"{live_server.url}/api/v1/deployments/"
    body = {"model_version": version.pk, "environment": "staging", "reason": "go"}
    answers = at_once((session(users.approver), "POST", url, body), (session(users.approver2), "POST", url, body))
    assert statuses(answers) == [202, 409], [a.text for a in answers]
    assert Deployment.objects.count() == 1
    assert AuditEvent.objects.filter(action="deployment.deploy").count() == 1
    assert AuditEvent.objects.filter(action="service.create").count() == 1


def test_two_rollbacks_sent_at_once_make_one_rollback(live_server, users, project, staging) -> None:
    _, _, _, second = serving_one_rolling_out_another(users, project, staging)
    url = f"{live_server.url}/api/v1/services/{second.service_id}/rollback/"
    answers = at_once(
        (session(users.approver), "POST", url, {"reason": "too slow"}),
        (session(users.approver2), "POST", url, {"reason": "errors"}),
        (session(users.admin), "POST", url, {"reason": "pager"}),
    )
    assert statuses(answers) == [202, 409, 409], [a.text for a in answers]
    assert Deployment.objects.filter(kind="rollback").count() == 1
    assert AuditEvent.objects.filter(action="deployment.roll_back").count() == 1
    second.refresh_from_db()
    assert second.status == "rolled_back"


def test_a_promotion_requested_twice_at_once_opens_one_request(live_server, users, version, staging) -> None:
    url = f"{live_server.url}/api/v1/approval-requests/"
    body = {"model_version": version.pk, "environment": "staging", "justification": "better"}
    answers = at_once(*[(session(users.data_scientist), "POST", url, body)] * 3)
    assert statuses(answers)[0] == 201 and statuses(answers).count(201) == 1, [a.text for a in answers]
    assert all(code in (400, 409) for code in statuses(answers)[1:]), [a.text for a in answers]
    assert ApprovalRequest.objects.count() == 1
    assert AuditEvent.objects.filter(action="approval_request.create").count() == 1


def test_two_stops_of_one_run_sent_at_once_stop_it_once(live_server, users, project) -> None:
    run = Run.objects.create(
        project=project,
        kind="training",
        recipe="logistic_regression",
        recipe_version="2",
        recipe_fingerprint="f" * 64,
        created_by=users.data_scientist,
        status="queued",
    )
    url = f"{live_server.url}/api/v1/runs/{run.pk}/stop/"
    answers = at_once(
        (session(users.data_scientist), "POST", url, {"reason": "wrong data"}),
        (session(users.admin), "POST", url, {"reason": "cost"}),
    )
    # The loser is told the run is stopped already (409, a state conflict, naming `status`).
    assert statuses(answers) == [200, 409], [a.text for a in answers]
    assert "status" in min(answers, key=lambda a: -a.status_code).json()["error"]["fields"]
    run.refresh_from_db()
    assert run.status in ("stopped", "stopping")
    assert AuditEvent.objects.filter(action="run.stop", object_id=str(run.pk)).count() == 1
    assert run.events.filter(to_status=run.status).count() == 1
