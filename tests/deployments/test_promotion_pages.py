"""Requesting promotion from the model version page, where a version stands per environment, and the model page's
matrix of versions × environments."""

from __future__ import annotations

from typing import Any

import pytest
from django.urls import reverse

from deployments import services
from deployments.models import ApprovalRequest, GateResult
from tests.deployments.conftest import make_model_version
from tests.fixtures.page_html import Element, parse

pytestmark = pytest.mark.django_db


def version_url(version: Any) -> str:
    model = version.registered_model
    return reverse("model-version-detail", args=[model.project.slug, model.slug, version.number])


def request_url(version: Any) -> str:
    model = version.registered_model
    return reverse("approval-request-create", args=[model.project.slug, model.slug, version.number])


def standing(client: Any, version: Any) -> dict[str, Element]:
    page = parse(client.get(version_url(version)).content)
    table = page.find("table", data_testid="promotion-standing")
    return {row.attrs["data-environment"]: row for row in table.find_all("tr") if "data-environment" in row.attrs}


def test_requesting_promotion_from_the_version_page_shows_it_open(client, users, version, staging, production) -> None:
    client.force_login(users.data_scientist)
    page = parse(client.get(version_url(version)).content)
    assert page.links()["Request promotion"] == request_url(version)
    rows = standing(client, version)
    assert list(rows) == ["staging", "production"]
    assert rows["staging"].find(data_testid="standing-status").text() == "not requested"

    form = parse(client.get(request_url(version), {"environment": "staging"}).content)
    select = form.find("select", name="environment")
    assert [o.text() for o in select.find_all("option")] == ["staging", "production"]
    assert [o.text() for o in select.find_all("option", selected="")] == ["staging"]
    # Neither environment allows an override, so the form does not offer one.
    assert not form.has("textarea", name="override_reason")

    response = client.post(request_url(version), {"environment": "staging", "justification": "better recall"})
    approval = ApprovalRequest.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("approval-request-detail", args=[approval.pk])
    assert approval.requested_by == users.data_scientist and approval.justification == "better recall"

    rows = standing(client, version)
    staging_row = rows["staging"]
    assert staging_row.find(data_testid="standing-status").text() == "open"
    assert "by dana on" in staging_row.text() and "none yet (1 needed)" in staging_row.text()
    assert staging_row.links() == {f"request {approval.pk}": reverse("approval-request-detail", args=[approval.pk])}
    assert rows["production"].find(data_testid="standing-status").text() == "not requested"


def test_a_decision_shows_who_decided_and_when(client, users, version, staging) -> None:
    approval = services.approval_request_create(
        actor=users.data_scientist, model_version_id=version.pk, environment="staging", justification="go"
    )
    services.approval_decide(actor=users.approver, request_id=approval.pk, verdict="reject", comment="too slow")
    client.force_login(users.finance)
    row = standing(client, version)["staging"]
    assert row.find(data_testid="standing-status").text() == "rejected"
    assert "alex rejected on" in row.text()
    # Finance reads where it stands but may not ask for promotion.
    page = parse(client.get(version_url(version)).content)
    assert "Request promotion" not in page.links()
    assert client.get(request_url(version)).status_code == 403


def test_a_failed_gate_without_override_is_a_400_naming_the_gate(client, users, project, staging, production) -> None:
    weak = make_model_version(project, users.data_scientist, metrics={"accuracy": 0.85, "f1": 0.8})
    client.force_login(users.data_scientist)
    response = client.post(request_url(weak), {"environment": "production", "justification": "ship it"})
    assert response.status_code == 400
    errors = [p.text() for p in parse(response.content).find_all("p", data_field="environment")]
    assert len(errors) == 1 and errors[0].startswith("production's gates failed:")
    assert "accuracy >= 0.90 (accuracy = 0.85 misses >= 0.9)" in errors[0]
    assert "approved in staging" in errors[0]
    assert not ApprovalRequest.objects.exists() and not GateResult.objects.exists()


def test_an_override_needs_a_reason_where_the_environment_allows_one(client, users, project, staging) -> None:
    services.environment_create(
        actor=users.admin,
        data={"name": "canary", "order": 15, "gates": ["accuracy >= 0.90"], "allow_override": True},
    )
    weak = make_model_version(project, users.data_scientist, metrics={"accuracy": 0.85})
    client.force_login(users.data_scientist)
    form = parse(client.get(request_url(weak)).content)
    assert form.has("textarea", name="override_reason")
    notes = [small.text() for small in form.find_all("small", **{"class": "help"})]
    assert any(note.startswith("Only if a gate fails: canary allows a request whose gates fail") for note in notes)

    missing = client.post(request_url(weak), {"environment": "canary", "justification": "edge case"})
    assert missing.status_code == 400
    message = parse(missing.content).find("p", data_field="override_reason").text()
    assert "canary allows an override: give a reason" in message
    assert not ApprovalRequest.objects.exists()

    done = client.post(
        request_url(weak),
        {"environment": "canary", "justification": "edge case", "override_reason": "0.85 is enough for a canary"},
    )
    assert done.status_code == 302
    approval = ApprovalRequest.objects.get()
    assert approval.override_reason == "0.85 is enough for a canary" and not approval.gates_passed


def test_a_second_request_is_a_409_and_a_missing_metric_a_400(client, users, project, version, staging) -> None:
    client.force_login(users.data_scientist)
    first = client.post(request_url(version), {"environment": "staging", "justification": "one"})
    assert first.status_code == 302
    again = client.post(request_url(version), {"environment": "staging", "justification": "two"})
    assert again.status_code == 409
    alert = parse(again.content).find("div", role="alert").text()
    assert "already has an open request for staging" in alert and not alert.startswith("model_version")
    existing = ApprovalRequest.objects.get()
    assert parse(again.content).find("p", data_testid="live-request").links() == {
        f"request {existing.pk}": f"/approvals/{existing.pk}/"
    }

    services.environment_update(actor=users.admin, environment_id=staging.pk, data={"gates": ["auc >= 0.8"]})
    other = make_model_version(project, users.data_scientist)
    missing = client.post(request_url(other), {"environment": "staging", "justification": "three"})
    assert missing.status_code == 400
    assert "names auc, which" in parse(missing.content).find("div", role="alert").text()
    unknown = client.post(request_url(other), {"environment": "nowhere", "justification": "four"})
    assert unknown.status_code == 400 and parse(unknown.content).has("p", data_field="environment")
    empty = client.post(request_url(other), {"environment": "staging", "justification": "  "})
    assert empty.status_code == 400 and parse(empty.content).has("p", data_field="justification")
    assert ApprovalRequest.objects.count() == 1


def test_the_model_page_matrix_shows_each_versions_standing(client, users, project, staging, production) -> None:
    first = make_model_version(project, users.data_scientist)
    second = make_model_version(project, users.data_scientist)
    approval = services.approval_request_create(
        actor=users.data_scientist, model_version_id=first.pk, environment="staging", justification="go"
    )
    services.approval_decide(actor=users.approver, request_id=approval.pk, verdict="approve", comment="fine")
    services.approval_finish(request_id=approval.pk)
    pending = services.approval_request_create(
        actor=users.data_scientist, model_version_id=second.pk, environment="staging", justification="next"
    )

    client.force_login(users.approver)
    model = first.registered_model
    page = parse(client.get(reverse("model-detail", args=[model.project.slug, model.slug])).content)
    matrix = page.find("table", data_testid="promotion-matrix")
    assert [th.text() for th in matrix.find_all("th")] == ["Version", "staging", "production"]
    cells = {row.attrs["data-version"]: row for row in matrix.find_all("tr") if "data-version" in row.attrs}
    assert cells[str(first.number)].text() == f"v{first.number} approved —"
    assert cells[str(first.number)].links()["approved"] == reverse("approval-request-detail", args=[approval.pk])
    assert cells[str(second.number)].text() == f"v{second.number} open —"
    assert cells[str(second.number)].links()["open"] == reverse("approval-request-detail", args=[pending.pk])


@pytest.mark.parametrize("closing", ["withdraw", "reject", "expire"])
def test_a_closed_request_asks_for_no_more_approvals(client, users, version, staging, closing: str) -> None:
    approval = services.approval_request_create(
        actor=users.data_scientist, model_version_id=version.pk, environment="staging", justification="go"
    )
    if closing == "withdraw":
        services.approval_withdraw(actor=users.data_scientist, request_id=approval.pk, reason="wrong data")
    elif closing == "reject":
        services.approval_decide(actor=users.approver, request_id=approval.pk, verdict="reject", comment="too slow")
    else:
        ApprovalRequest.objects.filter(pk=approval.pk).update(status=ApprovalRequest.Status.EXPIRED)
    client.force_login(users.finance)
    row = standing(client, version)["staging"]
    decisions = row.find_all("td")[3].text()
    assert "needed" not in decisions
    if closing == "reject":
        assert decisions.startswith("alex rejected on")
    else:
        assert decisions == "—"


def test_the_input_schema_lists_each_feature_apart_with_its_type(client, users, version) -> None:
    client.force_login(users.finance)
    page = parse(client.get(version_url(version)).content)
    schema = page.find(data_testid="input-schema")
    assert [f.text() for f in schema.find_all(data_testid="feature")] == ["mean radius float", "mean texture float"]
    # The names are set apart by commas, not only by the space inside a name.
    assert [c.strip() for c in schema.children if isinstance(c, str)] == ["2 features:", ","]
