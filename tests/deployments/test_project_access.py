"""Access by project for approval requests, services and deployments: a restricted project's requests and services
are seen and acted on by its members and admins only. An approver outside it finds nothing (404, as if missing) in
the pages and the API, is refused (403) by the services, and is not told of its new requests; lists leave them out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from controlplane import permissions
from controlplane import services as controlplane_services
from controlplane.models import AuditEvent, Notification
from deployments import services, tasks
from deployments.models import ApprovalRequest, Deployment, Service
from tests.deployments.conftest import make_model_version
from tests.fixtures.roles import make_user

pytestmark = pytest.mark.django_db

SLUG = "hush-ops"


@dataclass
class Hidden:
    project: Any
    request: ApprovalRequest  # open, waiting for a decision
    service: Service
    deployment: Deployment
    open_request: ApprovalRequest  # of the open project "bc", which everyone sees
    outsider_scientist: Any


def _served(version: Any, environment: Any, requester: Any, approver: Any) -> Deployment:
    """`version` approved (by `approver`) and deployed, as far as the database knows."""
    request = services.approval_request_create(
        actor=requester, model_version_id=version.pk, environment=environment.name, justification="ready"
    )
    services.approval_decide(actor=approver, request_id=request.pk, verdict="approve", comment="fine")
    services.approval_finish(request_id=request.pk)
    deployment = services.deployment_create(actor=approver, model_version_id=version.pk, environment=environment.name)
    now = timezone.now()
    Deployment.objects.filter(pk=deployment.pk).update(
        status="succeeded", revision=f"r-d{deployment.pk}", started_at=now, baking_at=now, finished_at=now
    )
    Service.objects.filter(pk=deployment.service_id).update(current_deployment=deployment.pk)
    return Deployment.objects.get(pk=deployment.pk)


@pytest.fixture
def hidden(users: Any, project: Any, staging: Any, monkeypatch: pytest.MonkeyPatch) -> Hidden:
    """Project hush-ops, restricted to dana (data scientist) and blair (approver); alex (approver) and olga (data
    scientist) are outside it. It has a service serving v1 and an open request for v2."""
    monkeypatch.setattr(tasks.deployment_start_task, "delay", lambda *a, **k: None)
    restricted = controlplane_services.project_create(actor=users.admin, name="Hush ops", slug=SLUG)
    for user in (users.data_scientist, users.approver2):
        controlplane_services.project_member_set(
            actor=users.admin, project=restricted, username=user.username, role="member"
        )
    restricted = controlplane_services.project_restrict(actor=users.admin, project=restricted, restricted=True)
    served = make_model_version(restricted, users.data_scientist, model="quiet-model")
    deployment = _served(served, staging, users.data_scientist, users.approver2)
    candidate = make_model_version(restricted, users.data_scientist, model="quiet-model")
    request = services.approval_request_create(
        actor=users.data_scientist, model_version_id=candidate.pk, environment="staging", justification="better"
    )
    open_version = make_model_version(project, users.data_scientist)
    open_request = services.approval_request_create(
        actor=users.data_scientist, model_version_id=open_version.pk, environment="staging", justification="ok"
    )
    return Hidden(
        project=restricted,
        request=request,
        service=deployment.service,
        deployment=deployment,
        open_request=open_request,
        outsider_scientist=make_user("olga", permissions.DATA_SCIENTIST),
    )


def page(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def api(user: Any) -> APIClient:
    client = APIClient()
    client.force_login(user)
    return client


def ids(response: Any) -> set[int]:
    assert response.status_code == 200, response.content[:300]
    return {row["id"] for row in response.json()["results"]}


def test_an_approver_outside_the_project_finds_none_of_its_requests_or_services(users, hidden) -> None:
    alex = users.approver
    request, service, deployment = hidden.request.pk, hidden.service.pk, hidden.deployment.pk
    for path in (f"/approvals/{request}/", f"/services/{service}/"):
        assert page(alex).get(path).status_code == 404, path
    for path in (
        f"/api/v1/approval-requests/{request}/",
        f"/api/v1/services/{service}/",
        f"/api/v1/deployments/{deployment}/",
        f"/api/v1/model-versions/{hidden.request.model_version_id}/approvals/",
    ):
        assert api(alex).get(path).status_code == 404, path
    # Acting on them: the same 404, and nothing changed.
    posts = {
        f"/approvals/{request}/decide/": {"verdict": "approve", "comment": "fine by me"},
        f"/services/{service}/rollback/": {"reason": "it looks wrong"},
        f"/services/{service}/scale/": {"desired_count": "2"},
        f"/services/{service}/rotate-ingest-token/": {},
    }
    for path, data in posts.items():
        assert page(alex).post(path, data).status_code == 404, path
    api_posts = {
        f"/api/v1/approval-requests/{request}/decisions/": {"verdict": "approve", "comment": "fine by me"},
        f"/api/v1/services/{service}/rollback/": {"reason": "it looks wrong"},
        f"/api/v1/services/{service}/scale/": {"desired_count": 2},
        f"/api/v1/services/{service}/rotate-ingest-token/": {},
    }
    for path, data in api_posts.items():
        assert api(alex).post(path, data, format="json").status_code == 404, path
    assert not hidden.request.decisions.exists()
    assert Service.objects.get(pk=service).desired_count == hidden.service.desired_count
    assert Deployment.objects.filter(service_id=service).count() == 1


def test_the_services_refuse_an_approver_outside_the_project(users, hidden) -> None:
    alex = users.approver
    calls = [
        lambda: services.approval_decide(actor=alex, request_id=hidden.request.pk, verdict="approve", comment="ok"),
        lambda: services.deployment_rollback(actor=alex, service_id=hidden.service.pk, reason="looks wrong"),
        lambda: services.service_scale(actor=alex, service_id=hidden.service.pk, desired_count=2),
    ]
    for call in calls:
        with pytest.raises(PermissionDenied, match="restricted"):
            call()
    # Naming a model version of a project one may not see is answered as for one that does not exist.
    missing = f"there is no model version {hidden.deployment.model_version_id}"
    with pytest.raises(ValidationError, match=missing):
        services.deployment_create(
            actor=alex, model_version_id=hidden.deployment.model_version_id, environment="staging"
        )
    with pytest.raises(ValidationError, match=f"there is no model version {hidden.request.model_version_id}"):
        services.approval_request_create(
            actor=hidden.outsider_scientist,
            model_version_id=hidden.request.model_version_id,
            environment="staging",
            justification="mine now",
        )
    assert not hidden.request.decisions.exists()
    assert Deployment.objects.filter(service=hidden.service).count() == 1


def test_the_lists_leave_out_what_the_approver_may_not_see(users, hidden) -> None:
    alex, theirs, ours = users.approver, hidden.request.pk, hidden.open_request.pk
    for query in ("", "?mine=true"):
        listed = ids(api(alex).get(f"/api/v1/approval-requests/{query}"))
        assert ours in listed and theirs not in listed, query
    assert ids(api(alex).get("/api/v1/services/")) == set()
    assert ids(api(alex).get("/api/v1/deployments/")) == set()
    # Naming the project is naming nothing.
    refused = api(alex).get(f"/api/v1/approval-requests/?project={SLUG}")
    assert refused.status_code == 400 and f"there is no project {SLUG!r}" in refused.content.decode()
    for path in ("/approvals/?tab=mine", "/approvals/?tab=all", "/services/"):
        html = page(alex).get(path).content.decode()
        assert f"/approvals/{theirs}/" not in html and f"/services/{hidden.service.pk}/" not in html, path
        assert SLUG not in html, path  # nor in the project filter's choices
    assert f"/approvals/{ours}/" in page(alex).get("/approvals/?tab=all").content.decode()


@pytest.mark.parametrize("who", ["approver2", "admin"])
def test_members_and_admins_see_and_decide(users, hidden, who: str) -> None:
    user = getattr(users, who)
    assert page(user).get(f"/approvals/{hidden.request.pk}/").status_code == 200
    assert page(user).get(f"/services/{hidden.service.pk}/").status_code == 200
    assert api(user).get(f"/api/v1/deployments/{hidden.deployment.pk}/").status_code == 200
    assert hidden.request.pk in ids(api(user).get("/api/v1/approval-requests/?mine=true"))
    assert ids(api(user).get("/api/v1/services/")) == {hidden.service.pk}
    assert SLUG in page(user).get("/services/").content.decode()
    answer = api(user).post(
        f"/api/v1/approval-requests/{hidden.request.pk}/decisions/",
        {"verdict": "approve", "comment": "looks right"},
        format="json",
    )
    assert answer.status_code == 200, answer.content
    assert hidden.request.decisions.filter(approver=user).exists()


def test_only_approvers_who_may_see_the_project_hear_of_its_requests(users, hidden) -> None:
    told = set(
        Notification.objects.filter(url=f"/approvals/{hidden.request.pk}/").values_list("user__username", flat=True)
    )
    assert told == {users.approver2.username}
    told_open = set(
        Notification.objects.filter(url=f"/approvals/{hidden.open_request.pk}/").values_list(
            "user__username", flat=True
        )
    )
    assert told_open == {users.approver.username, users.approver2.username}


def test_the_audit_names_the_project_of_requests_services_and_deployments(hidden) -> None:
    events = AuditEvent.objects.filter(object_type__in=["approval_request", "service", "deployment"])
    assert set(events.filter(project=SLUG).values_list("object_type", flat=True)) == {
        "approval_request",
        "service",
        "deployment",
    }
    assert set(
        events.filter(object_type="approval_request", object_id=str(hidden.open_request.pk)).values_list(
            "project", flat=True
        )
    ) == {"bc"}
