"""Environment pages: admins create and change environments in the browser, audited with before and after; everyone
else reads them; bad input is named on its field, answered 400, and saves nothing."""

from __future__ import annotations

from typing import Any

import pytest
from django.urls import reverse

from controlplane.models import AuditEvent
from deployments.models import Environment
from tests.fixtures.page_html import Element, parse

pytestmark = pytest.mark.django_db


def form_data(**changes: Any) -> dict[str, Any]:
    """What the browser posts for a complete environment form (an unchecked box is simply absent)."""
    data: dict[str, Any] = {
        "name": "staging",
        "order": "10",
        "description": "where candidates bake first",
        "approvals_required": "1",
        "gates": "accuracy >= 0.90\n\nschema matches serving\n",
        "request_ttl_days": "14",
        "bake_minutes": "10",
        "strategy": "all_at_once",
        "canary_percent": "10",
        "linear_step_percent": "25",
        "linear_interval_minutes": "1",
        "objective_p99_latency_ms": "250",
        "objective_error_rate": "0.01",
        "objective_drift_share": "",
        "min_desired_count": "1",
        "max_desired_count": "3",
        "backend_settings": "",
    }
    data.update(changes)
    return {key: value for key, value in data.items() if value is not None}


def lines(element: Element) -> list[str]:
    """An element's text, one entry per line the page breaks with <br>."""
    found, current = [], ""
    for child in element.children:
        if isinstance(child, Element) and child.tag == "br":
            found.append(current.strip())
            current = ""
        else:
            current += child if isinstance(child, str) else child.text()
    return [*found, current.strip()]


def test_an_admin_creates_and_edits_an_environment_and_its_history_shows_before_and_after(client, users) -> None:
    client.force_login(users.admin)
    listing = parse(client.get(reverse("environment-list")).content)
    assert listing.find("a", href=reverse("environment-create")).text() == "New environment"

    created = client.post(reverse("environment-create"), form_data(allow_override="on"))
    assert created.status_code == 302 and created["Location"] == reverse("environment-detail", args=["staging"])
    staging = Environment.objects.get(name="staging")
    assert staging.gates == ["accuracy >= 0.90", "schema matches serving"] and staging.allow_override
    assert staging.objective_error_rate == 0.01 and staging.backend_settings == {}

    page = parse(client.get(created["Location"]).content)
    assert page.find(data_testid="approvals-required").text() == "1"
    assert page.find(data_testid="environment-gates").text() == "accuracy >= 0.90 schema matches serving"
    # The edit form comes filled in with the current settings, gates one a line.
    assert page.find("textarea", name="gates").text() == "accuracy >= 0.90 schema matches serving"
    assert page.find("input", name="approvals_required").attrs["value"] == "1"

    changed = client.post(
        created["Location"],
        form_data(approvals_required="2", gates="accuracy >= 0.92\nschema matches serving", allow_override=None),
    )
    assert changed.status_code == 302
    staging.refresh_from_db()
    assert staging.approvals_required == 2 and not staging.allow_override
    assert staging.gates == ["accuracy >= 0.92", "schema matches serving"]

    page = parse(client.get(created["Location"]).content)
    assert page.find(data_testid="approvals-required").text() == "2"
    history = page.find("table", data_testid="environment-history")
    rows = {tr.attrs["data-action"]: tr for tr in history.find_all("tr") if "data-action" in tr.attrs}
    assert set(rows) == {"environment.create", "environment.change"}
    # Each change reads as field label: before → after, a list one item a line; no Python dict text.
    changes = {li.attrs["data-field"]: li for li in rows["environment.change"].find_all("li")}
    assert list(changes) == ["approvals_required", "gates", "allow_override"]
    assert changes["approvals_required"].text() == "Approvals required: 1 → 2"
    assert changes["allow_override"].text() == "Allow override: yes → no"
    gates = changes["gates"]
    assert lines(gates.find(data_testid="before")) == ["accuracy >= 0.90", "schema matches serving"]
    assert lines(gates.find(data_testid="after")) == ["accuracy >= 0.92", "schema matches serving"]
    assert "{" not in history.text() and "'" not in history.text()
    # A creation lists the settings it set, each with its value and no before.
    created_fields = {li.attrs["data-field"]: li for li in rows["environment.create"].find_all("li")}
    assert created_fields["name"].text() == "Name: staging" and "backend_settings" not in created_fields
    assert created_fields["objective_p99_latency_ms"].text() == "Objective: p99 latency (ms): 250"
    assert not rows["environment.create"].has(data_testid="before")
    event = AuditEvent.objects.get(action="environment.change")
    assert event.actor == users.admin and event.object_id == str(staging.pk)


def test_the_list_shows_each_environments_settings_to_everyone(client, users, staging, production) -> None:
    client.force_login(users.finance)
    page = parse(client.get(reverse("environment-list")).content)
    rows = page.find("table", data_testid="environment-table").rows()
    assert [row[0] for row in rows] == ["staging", "production"]
    name, order, approvals, gates, override, ttl, bake, objectives, counts = rows[1]
    assert (order, approvals, override, bake, counts) == ("20", "2", "no", "10 min · all at once", "1–4")
    assert gates == "accuracy >= 0.90 accuracy >= serving - 0.01 schema matches serving approved in staging"
    assert objectives == "none" and ttl == "14 days"
    # Finance reads, but may not create.
    assert not page.has("a", href=reverse("environment-create"))


def test_a_data_scientist_may_not_create_or_change_an_environment(client, users, staging) -> None:
    client.force_login(users.data_scientist)
    assert client.get(reverse("environment-create")).status_code == 403
    refused = client.post(reverse("environment-create"), form_data(name="canary"))
    assert refused.status_code == 403 and "environment.manage" in refused.content.decode()
    detail = reverse("environment-detail", args=["staging"])
    page = parse(client.get(detail).content)
    assert page.find(data_testid="approvals-required").text() == "1" and not page.has("textarea", name="gates")
    assert client.post(detail, form_data(approvals_required="5")).status_code == 403
    assert not Environment.objects.filter(name="canary").exists()
    assert Environment.objects.get(name="staging").approvals_required == 1
    assert not AuditEvent.objects.filter(action="environment.change").exists()


def test_a_bad_gate_line_is_named_on_the_gates_field_and_nothing_is_saved(client, users) -> None:
    client.force_login(users.admin)
    response = client.post(reverse("environment-create"), form_data(gates="accuracy >= 0.9\naccuracy >= high"))
    assert response.status_code == 400
    page = parse(response.content)
    errors = [p.text() for p in page.find_all("p", data_field="gates")]
    assert errors == ["gate 2: 'accuracy >= high': the threshold 'high' is not a number (e.g. 0.90)"]
    # The syntax help sits beside the field, and what was typed is kept.
    syntax = page.find("table", data_testid="gate-syntax").rows()
    assert [row[0] for row in syntax] == [
        "accuracy >= 0.90",
        "accuracy >= serving - 0.01 rmse <= serving + 0.5",
        "schema matches serving",
        "approved in staging",
    ]
    assert syntax[1][1].startswith("no regression beyond a tolerance") and syntax[1][1].endswith("none yet")
    assert page.find("textarea", name="gates").text() == "accuracy >= 0.9 accuracy >= high"
    assert not Environment.objects.exists()
    assert not AuditEvent.objects.filter(object_type="environment").exists()


@pytest.mark.parametrize(
    ("changes", "field", "words"),
    [
        ({"gates": "accuracy at least 0.9"}, "gates", "is not a gate: expected one of"),
        ({"gates": "approved in canary"}, "gates", "there is no environment 'canary'"),
        ({"approvals_required": "0"}, "approvals_required", "expected a whole number from 1 to 10, got 0"),
        ({"approvals_required": "two"}, "approvals_required", "Enter a whole number."),
        ({"objective_error_rate": "5"}, "objective_error_rate", "expected a fraction above 0 and at most 1"),
        ({"min_desired_count": "5", "max_desired_count": "2"}, "max_desired_count", "at least the minimum"),
        ({"name": "Prod Env"}, "name", "lowercase letters, digits and hyphens"),
        ({"backend_settings": "[1, 2]"}, "backend_settings", "expected an object"),
    ],
)
def test_a_bad_change_is_named_on_its_field_and_changes_nothing(client, users, staging, changes, field, words) -> None:
    client.force_login(users.admin)
    detail = reverse("environment-detail", args=["staging"])
    response = client.post(detail, form_data(**{"approvals_required": "1", "gates": "", **changes}))
    assert response.status_code == 400
    page = parse(response.content)
    messages = [p.text() for p in page.find_all("p", data_field=field)]
    assert any(words in message for message in messages), messages
    # The form opens again on the page so the admin sees what to fix.
    assert "open" in page.find("details", **{"class": "card narrow"}).attrs
    fresh = Environment.objects.get(pk=staging.pk)
    assert (fresh.name, fresh.approvals_required, fresh.gates, fresh.max_desired_count) == ("staging", 1, [], 4)
    assert not AuditEvent.objects.filter(action="environment.change").exists()


def test_renaming_moves_the_page_and_a_taken_name_is_refused(client, users, staging, production) -> None:
    client.force_login(users.admin)
    taken = client.post(
        reverse("environment-detail", args=["production"]), form_data(name="staging", approvals_required="1", gates="")
    )
    assert taken.status_code == 400
    assert "exists already" in parse(taken.content).find("p", data_field="name").text()
    # Production's gate "approved in staging" holds staging's name.
    held = client.post(
        reverse("environment-detail", args=["staging"]), form_data(name="qa", approvals_required="1", gates="")
    )
    assert held.status_code == 400
    assert "approved in staging" in parse(held.content).find("p", data_field="name").text()
    renamed = client.post(
        reverse("environment-detail", args=["production"]), form_data(name="prod", approvals_required="1", gates="")
    )
    assert renamed.status_code == 302 and renamed["Location"] == reverse("environment-detail", args=["prod"])
    assert client.get(reverse("environment-detail", args=["production"])).status_code == 404
