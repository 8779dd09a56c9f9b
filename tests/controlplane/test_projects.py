"""Projects: created and changed through the page and the API, validated, audited, never silently overwritten."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from controlplane.models import AuditEvent, Project
from controlplane.services import project_create

pytestmark = pytest.mark.django_db


def test_create_through_the_api_is_audited(api_client_for, users) -> None:
    response = api_client_for(users.data_scientist).post(
        reverse("api-project-list"),
        {"name": "Fraud scoring", "slug": "fraud", "description": "card fraud", "cost_tags": {"team": "risk"}},
        format="json",
    )
    assert response.status_code == 201, response.content
    assert response.json()["slug"] == "fraud" and response.json()["created_by"] == "dana"
    event = AuditEvent.objects.get(action="project.create")
    assert event.actor == users.data_scientist and event.object_id == "fraud"
    assert event.after["cost_tags"] == {"team": "risk"} and event.before is None


@pytest.mark.parametrize(
    ("payload", "field", "words"),
    [
        ({"name": "", "slug": "ok"}, "name", "blank"),
        ({"name": "X", "slug": "Has Spaces"}, "slug", "lowercase letters, digits or hyphens"),
        ({"name": "X", "slug": "-leading"}, "slug", "starting and ending"),
        ({"name": "X", "slug": "x" * 64}, "slug", "63"),
        ({"name": "X", "slug": "ok", "cost_tags": {"project": "other"}}, "cost_tags", "set by ControlPlane"),
        ({"name": "X", "slug": "ok", "cost_tags": {"aws:foo": "1"}}, "cost_tags", "reserved by AWS"),
        ({"name": "X", "slug": "ok", "cost_tags": {"team": "a;b"}}, "cost_tags", "value expected"),
        # re.match with `$` let a final newline through, and SageMaker then refused the job's tags.
        ({"name": "X", "slug": "ok", "cost_tags": {"team\n": "risk"}}, "cost_tags", "tag key 'team\\n'"),
        ({"name": "X", "slug": "ok", "cost_tags": ["team"]}, "cost_tags", "dictionary"),
    ],
)
def test_bad_input_is_a_400_naming_the_field_and_changes_nothing(api_client_for, users, payload, field, words) -> None:
    response = api_client_for(users.data_scientist).post(reverse("api-project-list"), payload, format="json")
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "invalid" and field in error["fields"]
    assert any(words in message for message in error["fields"][field]), error
    assert not Project.objects.exists() and not AuditEvent.objects.exists()


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({"slug": "fraud\n"}, "slug", "lowercase letters, digits or hyphens"),
        ({"cost_tags": {"team": "risk\n"}}, "cost_tags", "value expected"),
        ({"cost_tags": {"team\n": "risk"}}, "cost_tags", "tag key"),
    ],
)
def test_a_final_newline_is_refused_by_the_service(users, fields, field, words) -> None:
    # The API trims values, but every caller of the service must get the same answer SageMaker would give.
    values = {"name": "Newline", "slug": "fraud", **fields}
    with pytest.raises(ValidationError) as caught:
        project_create(actor=users.data_scientist, **values)
    assert any(words in message for message in caught.value.message_dict[field])
    assert not Project.objects.exists()


def test_duplicate_slug_does_not_overwrite_the_existing_project(api_client_for, users) -> None:
    client = api_client_for(users.data_scientist)
    client.post(reverse("api-project-list"), {"name": "First", "slug": "dup"}, format="json")
    response = client.post(reverse("api-project-list"), {"name": "Second", "slug": "dup"}, format="json")
    assert response.status_code == 400
    assert "already exists" in response.json()["error"]["fields"]["slug"][0]
    assert Project.objects.get(slug="dup").name == "First"


def test_change_records_before_and_after_and_keeps_the_slug(api_client_for, users) -> None:
    client = api_client_for(users.data_scientist)
    client.post(reverse("api-project-list"), {"name": "Churn", "slug": "churn"}, format="json")
    change = {"description": "who leaves", "cost_tags": {"team": "growth"}, "reason": "owner asked"}
    # Asking to change the slug is refused, naming it, and changes nothing (it is the cost-allocation tag).
    refused = client.patch(reverse("api-project-detail", args=["churn"]), {**change, "slug": "other"}, format="json")
    assert refused.status_code == 400 and "never changes" in refused.json()["error"]["fields"]["slug"][0]
    assert Project.objects.get(slug="churn").description == ""
    response = client.patch(reverse("api-project-detail", args=["churn"]), change, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["slug"] == "churn"
    event = AuditEvent.objects.get(action="project.change")
    assert event.before["description"] == "" and event.after["description"] == "who leaves"
    assert event.reason == "owner asked"
    # Finance may read but not change.
    denied = api_client_for(users.finance).patch(
        reverse("api-project-detail", args=["churn"]), {"description": "x"}, format="json"
    )
    assert denied.status_code == 403
    assert Project.objects.get(slug="churn").description == "who leaves"


def test_create_page_shows_field_errors_and_creates_nothing(client, users) -> None:
    client.force_login(users.data_scientist)
    response = client.post(reverse("project-create"), {"name": "Bad", "slug": "BAD SLUG", "cost_tags": "team"})
    assert response.status_code == 400
    body = response.content.decode()
    assert 'data-field="cost_tags"' in body and "expected key=value" in body
    assert not Project.objects.exists()
    response = client.post(reverse("project-create"), {"name": "Bad", "slug": "BAD SLUG", "cost_tags": ""})
    assert 'data-field="slug"' in response.content.decode()
    response = client.post(reverse("project-create"), {"name": "Good", "slug": "good", "cost_tags": "team=ml\ncc=12"})
    assert response.status_code == 302 and response["Location"] == reverse("project-detail", args=["good"])
    assert Project.objects.get(slug="good").cost_tags == {"team": "ml", "cc": "12"}


def test_list_is_paginated_and_searchable(client, api_client_for, users) -> None:
    for number in range(30):
        Project.objects.create(name=f"Project {number:02d}", slug=f"p{number:02d}", created_by=users.admin)
    client.force_login(users.finance)
    first = client.get(reverse("project-list")).content.decode()
    assert "Page 1 of 2" in first and "Project 24" in first and "Project 25" not in first
    assert "Project 29" in client.get(reverse("project-list") + "?page=2").content.decode()
    found = client.get(reverse("project-list") + "?q=p07").content.decode()
    assert "Project 07" in found and "Project 08" not in found
    api = api_client_for(users.finance).get(reverse("api-project-list") + "?page_size=10").json()
    assert api["count"] == 30 and len(api["results"]) == 10 and api["next"]
