"""Restricting a project and choosing its members: who may, what it changes, what it refuses, and what it records."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.urls import reverse

from controlplane import permissions, services
from controlplane.models import AuditEvent, Notification, Project, ProjectMember
from tests.fixtures.races import race
from tests.fixtures.roles import make_user


@pytest.fixture
def secret(users: Any) -> Project:
    project = services.project_create(actor=users.data_scientist, name="Secret", slug="secret")
    return services.project_restrict(actor=users.data_scientist, project=project, restricted=True)


def test_the_creator_owns_the_project_and_a_restricted_one_is_not_found_outside(
    users: Any, secret: Project, client: Any, api_client_for: Any
) -> None:
    assert secret.members.get().user == users.data_scientist
    assert secret.members.get().role == "owner"
    outsider = make_user("nina", permissions.DATA_SCIENTIST)
    for user, expected in ((outsider, 404), (users.approver, 404), (users.data_scientist, 200), (users.admin, 200)):
        client.force_login(user)
        assert client.get(reverse("project-detail", args=["secret"])).status_code == expected, user
        api = api_client_for(user)
        assert api.get(reverse("api-project-detail", args=["secret"])).status_code == expected, user
        listed = [p["slug"] for p in api.get(reverse("api-project-list")).json()["results"]]
        assert ("secret" in listed) is (expected == 200), user
    # Finance sees the project (to read its costs by name), though not its work.
    assert api_client_for(users.finance).get(reverse("api-project-detail", args=["secret"])).status_code == 200


def test_an_owner_adds_a_member_who_then_sees_it_and_the_audit_log_says_who_did_what(
    users: Any, secret: Project, api_client_for: Any
) -> None:
    nina = make_user("nina", permissions.DATA_SCIENTIST)
    api = api_client_for(users.data_scientist)
    url = reverse("api-project-members", args=["secret"])
    answer = api.post(url, {"username": "nina", "role": "member", "reason": "joins the team"}, format="json")
    assert answer.status_code == 201, answer.content
    assert answer.json()["role"] == "member"
    assert api_client_for(nina).get(reverse("api-project-detail", args=["secret"])).status_code == 200
    assert [m["username"] for m in api.get(url).json()["results"]] == ["dana", "nina"]
    event = AuditEvent.objects.get(action="project.member_set")
    assert event.project == "secret" and event.actor_name == "dana" and event.reason == "joins the team"
    assert event.before["members"] == {"dana": "owner"}
    assert event.after["members"] == {"dana": "owner", "nina": "member"}
    # The person added is told, with the way there.
    told = Notification.objects.get(user=nina)
    assert told.title == "dana made you member of project Secret" and told.url == "/projects/secret/"
    # A member who is not an owner may not change who is in it.
    refused = api_client_for(nina).delete(reverse("api-project-member-detail", args=["secret", "dana"]))
    assert refused.status_code == 403
    assert "owners" in refused.json()["error"]["message"]
    # The audit log of a restricted project is read only by those who may see it.
    outsider = make_user("otis", permissions.DATA_SCIENTIST)
    seen = {e["action"] for e in api_client_for(outsider).get(reverse("api-audit-list")).json()["results"]}
    assert not seen & {"project.member_set", "project.restrict", "project.create"}
    seen = {e["action"] for e in api_client_for(nina).get(reverse("api-audit-list")).json()["results"]}
    assert {"project.member_set", "project.restrict", "project.create"} <= seen


@pytest.mark.parametrize(
    ("payload", "field", "words"),
    [
        ({"username": "nobody"}, "username", "no active user"),
        ({"username": "alex", "role": "boss"}, "role", "expected"),
        ({"role": "member"}, "username", "required"),
    ],
)
def test_bad_member_input_is_a_400_naming_the_field_and_changes_nothing(
    users: Any, secret: Project, api_client_for: Any, payload: dict[str, str], field: str, words: str
) -> None:
    before = (ProjectMember.objects.count(), AuditEvent.objects.count())
    answer = api_client_for(users.data_scientist).post(
        reverse("api-project-members", args=["secret"]), payload, format="json"
    )
    assert answer.status_code == 400
    body = answer.json()["error"]
    assert field in body["fields"], body
    assert words in " ".join(body["fields"][field]), body
    assert (ProjectMember.objects.count(), AuditEvent.objects.count()) == before


def test_the_page_restricts_adds_and_removes_and_names_a_bad_field(users: Any, client: Any) -> None:
    services.project_create(actor=users.data_scientist, name="Open", slug="open")
    client.force_login(users.data_scientist)
    page = client.get(reverse("project-detail", args=["open"]))
    assert b"Add a member" in page.content and b"Restrict or open" in page.content
    answer = client.post(reverse("project-restrict", args=["open"]), {"restricted": "on", "reason": "pii"})
    assert answer.status_code == 302
    assert Project.objects.get(slug="open").restricted
    bad = client.post(reverse("project-member-set", args=["open"]), {"username": "ghost", "role": "member"})
    assert bad.status_code == 400 and b"no active user" in bad.content
    assert client.post(reverse("project-member-set", args=["open"]), {"username": "alex", "role": "owner"}).status_code
    assert ProjectMember.objects.get(project__slug="open", user=users.approver).role == "owner"
    removed = client.post(reverse("project-member-remove", args=["open", "alex"]))
    assert removed.status_code == 302
    assert not ProjectMember.objects.filter(project__slug="open", user=users.approver).exists()
    # The last owner stays: removing them would leave no one to manage the project.
    last = client.post(reverse("project-member-remove", args=["open", "dana"]))
    assert last.status_code == 400 and b"last owner" in last.content
    # A role that may not manage members is refused (403) before any project is looked up; a data scientist outside
    # a restricted project finds nothing there (404); in an open one, someone who is not an owner sees no forms and
    # their POST is refused.
    client.force_login(make_user("nina", permissions.DATA_SCIENTIST))
    assert client.post(reverse("project-restrict", args=["open"]), {"restricted": ""}).status_code == 404
    client.force_login(users.approver)
    assert client.post(reverse("project-restrict", args=["open"]), {"restricted": ""}).status_code == 403
    services.project_create(actor=users.data_scientist, name="Public", slug="public")
    assert b"Add a member" not in client.get(reverse("project-detail", args=["public"])).content
    assert client.post(reverse("project-restrict", args=["public"]), {"restricted": "on"}).status_code == 403
    assert Project.objects.get(slug="open").restricted and not Project.objects.get(slug="public").restricted


@pytest.mark.django_db(transaction=True)
def test_two_owners_removing_each_other_at_once_leave_one_owner(users: Any) -> None:
    project = services.project_create(actor=users.data_scientist, name="Pair", slug="pair")
    nina = make_user("nina", permissions.DATA_SCIENTIST)
    services.project_member_set(actor=users.data_scientist, project=project, username="nina", role="owner")
    dana = users.data_scientist
    outcomes = race(
        lambda: services.project_member_remove(actor=dana, project=project, username="nina"),
        lambda: services.project_member_remove(actor=nina, project=project, username="dana"),
    )
    errors = [o.error for o in outcomes if o.error is not None]
    assert len(errors) == 1, outcomes
    # The one that came second is refused: either its target is now the last owner, or it is no longer an owner.
    assert "last owner" in str(errors[0]) or "only the owners" in str(errors[0])
    assert ProjectMember.objects.filter(project=project, role="owner").count() == 1
    assert AuditEvent.objects.filter(action="project.member_remove").count() == 1
    connection.close()
