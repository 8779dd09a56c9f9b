"""The approvals API end to end as each role: environments, requests with their gate results, four-eyes, N-of-M,
rejection, withdrawal, the queue filters, a version's standing, notifications; and the errors each refusal gives
(400 naming the field, 403, 404, 409 with the same body)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from controlplane import services as controlplane_services
from controlplane.models import AuditEvent, Notification
from deployments import services
from deployments.models import ApprovalDecision, ApprovalRequest, Environment
from tests.deployments.conftest import make_model_version

pytestmark = pytest.mark.django_db

API = "/api/v1"


def create_request(client: Any, version: Any, environment: str = "staging", **extra: Any) -> Any:
    body = {"model_version": version.pk, "environment": environment, "justification": "better recall", **extra}
    return client.post(f"{API}/approval-requests/", body, format="json")


def decide(client: Any, pk: int, verdict: str = "approve", comment: str = "checked the evidence") -> Any:
    return client.post(
        f"{API}/approval-requests/{pk}/decisions/", {"verdict": verdict, "comment": comment}, format="json"
    )


def error_fields(response: Any) -> dict[str, list[str]]:
    fields: dict[str, list[str]] = response.json()["error"]["fields"]
    return fields


# --- environments ---------------------------------------------------------------------------------------------


def test_an_admin_creates_and_changes_an_environment_audited_with_before_and_after(users, api_client_for) -> None:
    client = api_client_for(users.admin)
    created = client.post(
        f"{API}/environments/",
        {"name": "production", "order": 20, "approvals_required": 2, "gates": ["accuracy >= 0.9"]},
        format="json",
    )
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["name"] == "production" and body["approvals_required"] == 2
    assert body["gates"] == ["accuracy >= 0.9"] and body["created_by"] == "ada"
    assert AuditEvent.objects.get(action="environment.create").after["gates"] == ["accuracy >= 0.9"]

    changed = client.patch(
        f"{API}/environments/production/",
        {"approvals_required": 3, "objective_error_rate": 0.02, "allow_override": True},
        format="json",
    )
    assert changed.status_code == 200, changed.content
    body = changed.json()
    # Partial: what was not sent stays as it was.
    assert (body["approvals_required"], body["objective_error_rate"], body["allow_override"]) == (3, 0.02, True)
    assert body["gates"] == ["accuracy >= 0.9"] and body["order"] == 20
    audit = AuditEvent.objects.get(action="environment.change")
    assert audit.actor_name == "ada"
    assert audit.before == {"approvals_required": 2, "objective_error_rate": None, "allow_override": False}
    assert audit.after == {"approvals_required": 3, "objective_error_rate": 0.02, "allow_override": True}

    listed = api_client_for(users.finance).get(f"{API}/environments/").json()
    assert [e["name"] for e in listed["results"]] == ["production"]
    assert api_client_for(users.finance).get(f"{API}/environments/production/").json()["approvals_required"] == 3


def test_only_admins_manage_environments(users, api_client_for, staging) -> None:
    body = {"name": "production", "approvals_required": 2}
    refused = api_client_for(users.data_scientist).post(f"{API}/environments/", body, format="json")
    assert refused.status_code == 403
    assert refused.json()["error"]["status"] == 403 and "environment.manage" in refused.json()["error"]["message"]
    patched = api_client_for(users.approver).patch(
        f"{API}/environments/staging/", {"approvals_required": 5}, format="json"
    )
    assert patched.status_code == 403
    assert list(Environment.objects.values_list("name", "approvals_required")) == [("staging", 1)]
    assert api_client_for(users.outsider).get(f"{API}/environments/").status_code == 403


def test_bad_environment_input_names_the_field_and_changes_nothing(users, api_client_for, staging) -> None:
    client = api_client_for(users.admin)
    bad_threshold = client.post(
        f"{API}/environments/", {"name": "production", "gates": ["accuracy >= high"]}, format="json"
    )
    assert bad_threshold.status_code == 400
    assert "not a number" in error_fields(bad_threshold)["gates"][0]
    assert bad_threshold.json()["error"]["code"] == "invalid"

    unknown = client.post(f"{API}/environments/", {"name": "production", "approval_required": 2}, format="json")
    assert unknown.status_code == 400
    assert "unknown field" in error_fields(unknown)["approval_required"][0]

    out_of_range = client.patch(f"{API}/environments/staging/", {"approvals_required": 0}, format="json")
    assert out_of_range.status_code == 400 and "approvals_required" in error_fields(out_of_range)
    not_a_gate = client.patch(f"{API}/environments/staging/", {"gates": ["accuracy is good"]}, format="json")
    assert not_a_gate.status_code == 400 and "is not a gate" in error_fields(not_a_gate)["gates"][0]
    taken = client.post(f"{API}/environments/", {"name": "staging"}, format="json")
    assert taken.status_code == 400 and "exists already" in error_fields(taken)["name"][0]

    assert list(Environment.objects.values_list("name", "approvals_required", "gates")) == [("staging", 1, [])]
    assert not AuditEvent.objects.filter(action="environment.change").exists()
    assert client.get(f"{API}/environments/nowhere/").status_code == 404
    assert client.patch(f"{API}/environments/nowhere/", {"order": 1}, format="json").json()["error"]["status"] == 404


# --- requests and decisions -----------------------------------------------------------------------------------


def test_a_request_runs_the_gates_and_a_duplicate_is_a_conflict(users, api_client_for, version, production) -> None:
    client = api_client_for(users.data_scientist)
    staged = create_request(client, version, "staging")
    assert staged.status_code == 201, staged.content
    decide(api_client_for(users.approver), staged.json()["id"])
    services.approval_finish(request_id=staged.json()["id"])

    created = create_request(client, version, "production")
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["status"] == "open" and body["requested_by"] == "dana" and body["environment"] == "production"
    assert body["artifact_sha256"] == version.sha256 and body["approvals_required"] == 2
    assert body["gates_passed"] is True and body["quorum_reached"] is False and body["decisions"] == []
    assert body["baseline_version"] is None and body["expires_at"] > timezone.now().isoformat()
    gates = {g["expression"]: g for g in body["gate_results"]}
    assert list(gates) == [
        "accuracy >= 0.90",
        "accuracy >= serving - 0.01",
        "schema matches serving",
        "approved in staging",
    ]
    assert gates["accuracy >= 0.90"]["kind"] == "threshold" and gates["accuracy >= 0.90"]["passed"] is True
    assert gates["accuracy >= 0.90"]["evidence"] == {"metric": "accuracy", "value": 0.95, "op": ">=", "threshold": 0.9}
    assert gates["approved in staging"]["evidence"]["approved_in"] == ["staging"]
    assert api_client_for(users.finance).get(f"{API}/approval-requests/{body['id']}/").json() == body

    again = create_request(client, version, "production")
    assert again.status_code == 409
    error = again.json()["error"]
    assert error["status"] == 409 and error["code"] == "conflict"
    assert "already has an open request" in error["fields"]["model_version"][0]
    assert "already has an open request" in error["message"]
    approved_again = create_request(client, version, "staging")
    assert approved_again.status_code == 409 and "already approved" in error_fields(approved_again)["model_version"][0]
    assert ApprovalRequest.objects.count() == 2


def test_bad_requests_name_the_field(users, api_client_for, project, staging) -> None:
    services.environment_update(actor=users.admin, environment_id=staging.pk, data={"gates": ["auc >= 0.8"]})
    version = make_model_version(project, users.data_scientist)
    client = api_client_for(users.data_scientist)
    lacking = create_request(client, version)
    assert lacking.status_code == 400
    assert "names auc, which" in error_fields(lacking)["model_version"][0]

    nowhere = create_request(client, version, "moon")
    assert nowhere.status_code == 400 and "there is no environment 'moon'" in error_fields(nowhere)["environment"][0]
    missing = client.post(
        f"{API}/approval-requests/",
        {"model_version": 10**9, "environment": "staging", "justification": "x"},
        format="json",
    )
    assert missing.status_code == 400 and "no model version" in error_fields(missing)["model_version"][0]
    no_reason = create_request(client, version, justification=" ")
    assert no_reason.status_code == 400 and "justification" in error_fields(no_reason)
    typo = create_request(client, version, justfication="x")
    assert typo.status_code == 400 and "unknown field" in error_fields(typo)["justfication"][0]
    approver = create_request(api_client_for(users.approver), version)
    assert approver.status_code == 403
    assert not ApprovalRequest.objects.exists()


def test_four_eyes_and_no_deciding_twice(users, api_client_for, version, staging) -> None:
    pk = create_request(api_client_for(users.data_scientist), version).json()["id"]
    # An admin may decide someone else's request…
    by_admin = decide(api_client_for(users.admin), pk)
    assert by_admin.status_code == 200, by_admin.content
    services.approval_finish(request_id=pk)

    # …but not her own, nor may an approver decide the promotion of a run they trained.
    second = make_model_version(version.registered_model.project, users.approver)
    mine = create_request(api_client_for(users.admin), second).json()["id"]
    by_requester = decide(api_client_for(users.admin), mine)
    assert by_requester.status_code == 400 and "requester" in error_fields(by_requester)["approver"][0]
    by_author = decide(api_client_for(users.approver), mine)
    assert by_author.status_code == 400 and "authored the training run" in error_fields(by_author)["approver"][0]
    assert decide(api_client_for(users.finance), mine).status_code == 403
    bad_verdict = decide(api_client_for(users.approver2), mine, verdict="maybe")
    assert bad_verdict.status_code == 400 and "verdict" in error_fields(bad_verdict)
    no_comment = decide(api_client_for(users.approver2), mine, comment="")
    assert no_comment.status_code == 400 and "comment" in error_fields(no_comment)
    assert not ApprovalDecision.objects.filter(request_id=mine).exists()
    assert decide(api_client_for(users.approver2), 10**9).status_code == 404


def test_two_of_two_approvals_then_the_worker_approves(users, api_client_for, project, staging, production) -> None:
    services.environment_update(actor=users.admin, environment_id=production.pk, data={"gates": []})
    version = make_model_version(project, users.data_scientist)
    pk = create_request(api_client_for(users.data_scientist), version, "production").json()["id"]

    first = decide(api_client_for(users.approver), pk, comment="metrics hold up")
    assert first.status_code == 200
    body = first.json()
    assert (body["status"], body["approvals"], body["quorum_reached"]) == ("open", 1, False)
    assert body["decisions"][0]["approver"] == "alex" and body["decisions"][0]["verdict"] == "approve"
    assert body["decisions"][0]["comment"] == "metrics hold up" and body["decisions"][0]["created_at"]

    twice = decide(api_client_for(users.approver), pk)
    assert twice.status_code == 409 and "already decided" in error_fields(twice)["verdict"][0]

    second = decide(api_client_for(users.approver2), pk)
    assert second.status_code == 200
    body = second.json()
    assert (body["status"], body["approvals"], body["quorum_reached"]) == ("open", 2, True)
    late = decide(api_client_for(users.admin), pk)
    assert late.status_code == 409 and "artifact check" in error_fields(late)["status"][0]

    services.approval_finish(request_id=pk)
    done = api_client_for(users.approver).get(f"{API}/approval-requests/{pk}/").json()
    assert done["status"] == "approved" and "alex" in done["status_reason"] and "blair" in done["status_reason"]
    assert done["finished_at"] is not None
    assert [d["approver"] for d in done["decisions"]] == ["alex", "blair"]


def test_rejection_then_notifications(users, api_client_for, version, staging) -> None:
    requester = api_client_for(users.data_scientist)
    pk = create_request(requester, version).json()["id"]
    assert requester.get(f"{API}/notifications/").json() == {
        "count": 0,
        "next": None,
        "previous": None,
        "results": [],
        "unread": 0,
    }
    rejected = decide(api_client_for(users.approver), pk, verdict="reject", comment="recall too low on minors")
    assert rejected.status_code == 200
    assert rejected.json()["status"] == "rejected" and "recall too low" in rejected.json()["status_reason"]
    assert decide(api_client_for(users.approver2), pk).status_code == 409

    listed = requester.get(f"{API}/notifications/").json()
    assert listed["unread"] == 1 and listed["count"] == 1
    told = listed["results"][0]
    assert "rejected for staging" in told["title"] and "recall too low" in told["body"]
    assert told["url"].endswith(f"/approvals/{pk}/") and told["read"] is False
    # Each caller sees only their own.
    # The approver was told in the app (not by email) that the request waited for them.
    [waiting] = api_client_for(users.approver).get(f"{API}/notifications/").json()["results"]
    assert "waits for your decision for staging" in waiting["title"]
    other = Notification.objects.create(user=users.approver, title="not dana's")
    assert requester.post(f"{API}/notifications/read/", {"ids": [other.pk]}, format="json").json() == {"marked": 0}

    marked = requester.post(f"{API}/notifications/read/", {"ids": [told["id"]]}, format="json")
    assert marked.status_code == 200 and marked.json() == {"marked": 1}
    after = requester.get(f"{API}/notifications/").json()
    assert after["unread"] == 0 and after["results"][0]["read"] is True
    assert requester.post(f"{API}/notifications/read/", {}, format="json").json() == {"marked": 0}
    assert Notification.objects.get(pk=other.pk).read_at is None
    bad = requester.post(f"{API}/notifications/read/", {"ids": ["all"]}, format="json")
    assert bad.status_code == 400 and "ids" in error_fields(bad)
    assert api_client_for(users.outsider).get(f"{API}/notifications/").status_code == 403


def test_notifications_newest_first_and_mark_all(users, api_client_for) -> None:
    for n in range(3):
        Notification.objects.create(user=users.finance, title=f"budget {n}")
    client = api_client_for(users.finance)
    page = client.get(f"{API}/notifications/?page_size=2").json()
    assert [n["title"] for n in page["results"]] == ["budget 2", "budget 1"]
    assert page["count"] == 3 and page["unread"] == 3 and page["next"]
    assert client.post(f"{API}/notifications/read/", {}, format="json").json() == {"marked": 3}
    assert client.get(f"{API}/notifications/").json()["unread"] == 0


def test_withdrawal_and_deciding_a_withdrawn_request(users, api_client_for, version, staging) -> None:
    requester = api_client_for(users.data_scientist)
    pk = create_request(requester, version).json()["id"]
    by_other = api_client_for(users.approver).post(f"{API}/approval-requests/{pk}/withdraw/", {}, format="json")
    assert by_other.status_code == 403  # approvers do not request, so they cannot withdraw either
    withdrawn = requester.post(f"{API}/approval-requests/{pk}/withdraw/", {"reason": "retraining"}, format="json")
    assert withdrawn.status_code == 200, withdrawn.content
    assert withdrawn.json()["status"] == "withdrawn" and withdrawn.json()["status_reason"] == "retraining"

    late = decide(api_client_for(users.approver), pk)
    assert late.status_code == 409
    assert late.json()["error"]["fields"] == {
        "status": [f"request {pk} is withdrawn: only an open request can be decided"]
    }
    assert not ApprovalDecision.objects.exists()
    again = requester.post(f"{API}/approval-requests/{pk}/withdraw/", {}, format="json")
    assert again.status_code == 409
    unknown = requester.post(f"{API}/approval-requests/{pk}/withdraw/", {"why": "x"}, format="json")
    assert unknown.status_code == 400 and "why" in error_fields(unknown)
    assert requester.post(f"{API}/approval-requests/{10**9}/withdraw/", {}, format="json").status_code == 404
    assert requester.get(f"{API}/approval-requests/{10**9}/").json()["error"]["code"] == "not_found"
    # Withdrawn is not live: the version may be requested again.
    assert create_request(requester, version).status_code == 201


def test_list_filters_and_the_queue(users, api_client_for, project, staging, production) -> None:
    services.environment_update(actor=users.admin, environment_id=production.pk, data={"gates": []})
    fraud = controlplane_services.project_create(actor=users.admin, name="Fraud", slug="fraud")
    scientist = api_client_for(users.data_scientist)
    staged = create_request(scientist, make_model_version(project, users.data_scientist)).json()["id"]
    produced = create_request(scientist, make_model_version(project, users.data_scientist), "production").json()["id"]
    fraud_request = create_request(scientist, make_model_version(fraud, users.data_scientist, model="f")).json()["id"]
    # The admin trained and requested this one: it is never in her own queue.
    admins_version = make_model_version(project, users.admin, model="other")
    admin_request = create_request(api_client_for(users.admin), admins_version).json()["id"]
    ApprovalRequest.objects.filter(pk=staged).update(created_at=timezone.now() - timedelta(days=5))
    decide(api_client_for(users.approver2), produced)

    def ids(client: Any, query: str = "") -> list[int]:
        response = client.get(f"{API}/approval-requests/{query}")
        assert response.status_code == 200, response.content
        return [r["id"] for r in response.json()["results"]]

    finance = api_client_for(users.finance)
    assert ids(finance) == [admin_request, fraud_request, produced, staged]
    assert ids(finance, "?project=fraud") == [fraud_request]
    assert ids(finance, "?environment=production") == [produced]
    assert ids(finance, "?environment=staging&project=bc") == [admin_request, staged]
    assert ids(finance, "?older_than_days=3") == [staged]
    assert ids(finance, "?status=approved") == []
    listed = finance.get(f"{API}/approval-requests/?environment=production").json()["results"][0]
    assert listed["approvals"] == 1 and listed["project"] == "bc" and listed["model"] == "bc-classifier"

    # The queue, oldest first: blair decided `produced` already; ada cannot decide her own request.
    assert ids(api_client_for(users.approver), "?mine=true") == [staged, produced, fraud_request, admin_request]
    assert ids(api_client_for(users.approver2), "?mine=true") == [staged, fraud_request, admin_request]
    assert ids(api_client_for(users.admin), "?mine=true") == [staged, produced, fraud_request]
    assert ids(api_client_for(users.approver), "?mine=true&project=fraud") == [fraud_request]
    assert ids(api_client_for(users.approver), "?mine=true&older_than_days=1") == [staged]
    assert ids(api_client_for(users.data_scientist), "?mine=true") == []  # may not decide anything

    # The requests one made, in every state, newest first.
    ApprovalRequest.objects.filter(pk=fraud_request).update(status="withdrawn")
    assert ids(scientist, "?requested_by_me=true") == [fraud_request, produced, staged]
    assert ids(scientist, "?requested_by_me=true&status=open") == [produced, staged]
    assert ids(scientist, "?requested_by_me=true&environment=production") == [produced]
    assert ids(api_client_for(users.admin), "?requested_by_me=true") == [admin_request]
    assert ids(api_client_for(users.approver), "?requested_by_me=true") == []
    both = scientist.get(f"{API}/approval-requests/?mine=true&requested_by_me=true")
    assert both.status_code == 400 and error_fields(both) == {
        "requested_by_me": ["not with mine=true: the requests waiting for you are never your own"]
    }
    bad = scientist.get(f"{API}/approval-requests/?requested_by_me=maybe")
    assert bad.status_code == 400 and error_fields(bad) == {"requested_by_me": ["expected true or false, got 'maybe'"]}

    bad = finance.get(f"{API}/approval-requests/?status=pending&older_than_days=soon")
    assert bad.status_code == 400 and set(error_fields(bad)) == {"status", "older_than_days"}
    assert api_client_for(users.outsider).get(f"{API}/approval-requests/").status_code == 403


def test_a_versions_standing_per_environment(users, api_client_for, version, staging, production) -> None:
    scientist = api_client_for(users.data_scientist)
    first = create_request(scientist, version).json()["id"]
    scientist.post(f"{API}/approval-requests/{first}/withdraw/", {}, format="json")
    second = create_request(scientist, version).json()["id"]
    decide(api_client_for(users.approver), second)
    services.approval_finish(request_id=second)

    standing = api_client_for(users.finance).get(f"{API}/model-versions/{version.pk}/approvals/")
    assert standing.status_code == 200
    rows = [(r["id"], r["environment"], r["status"], r["current"]) for r in standing.json()["results"]]
    assert rows == [(second, "staging", "approved", True), (first, "staging", "withdrawn", False)]
    assert standing.json()["results"][0]["decisions"][0]["approver"] == "alex"
    assert api_client_for(users.finance).get(f"{API}/model-versions/{10**9}/approvals/").status_code == 404


def test_the_schema_lists_the_approvals_api(api_client_for, users) -> None:
    schema = api_client_for(users.finance).get("/api/v1/schema/?format=json").json()
    paths = schema["paths"]
    assert {
        "/api/v1/environments/",
        "/api/v1/environments/{name}/",
        "/api/v1/approval-requests/",
        "/api/v1/approval-requests/{id}/",
        "/api/v1/approval-requests/{id}/decisions/",
        "/api/v1/approval-requests/{id}/withdraw/",
        "/api/v1/model-versions/{id}/approvals/",
        "/api/v1/notifications/",
        "/api/v1/notifications/read/",
    } <= set(paths)
    listing = {p["name"] for p in paths["/api/v1/approval-requests/"]["get"]["parameters"]}
    assert {"status", "project", "environment", "mine", "older_than_days", "page"} <= listing
    assert "unread" in schema["components"]["schemas"]["PaginatedNotificationOutputList"]["properties"]


HOSTILE_VALUES: list[Any] = [
    None,
    True,
    -1,
    0,
    2**64,
    1e308,
    "",
    " ",
    "../../etc/passwd",
    "%s%n{0}",
    "\u202e\U0001f600",
    "x" * 6000,
    [],
    ["accuracy >= 0.9"] * 50,
    [None, 3, {"a": 1}],
    {},
    {"nested": {"deeper": [1, 2, {"x": "y"}]}},
]


def test_no_value_in_any_field_gets_a_server_error(users, api_client_for, version, staging) -> None:
    """Every field of every write, and every filter, given values of the wrong type, size or shape: each is a 4xx
    with the error body (or a success), never a 500. (The schema fuzzer does not know these objects' ids.)"""
    admin = api_client_for(users.admin)
    pk = create_request(api_client_for(users.data_scientist), version).json()["id"]
    writes: list[tuple[str, str, dict[str, Any]]] = [
        ("post", f"{API}/environments/", {"name": "fuzzed", "order": 1}),
        ("patch", f"{API}/environments/staging/", {"order": 1}),
        (
            "post",
            f"{API}/approval-requests/",
            {"model_version": version.pk, "environment": "staging", "justification": "x"},
        ),
        ("post", f"{API}/approval-requests/{pk}/decisions/", {"verdict": "reject", "comment": "x"}),
        ("post", f"{API}/approval-requests/{pk}/withdraw/", {"reason": "x"}),
        ("post", f"{API}/notifications/read/", {"ids": [1]}),
    ]
    fields = {
        f"{API}/environments/": [*services.ENVIRONMENT_FIELDS],
        f"{API}/environments/staging/": [*services.ENVIRONMENT_FIELDS],
    }
    seen: list[tuple[str, str, int]] = []
    for method, url, valid in writes:
        for field in fields.get(url, list(valid)):
            for value in HOSTILE_VALUES:
                body = {**valid, field: value}
                response = getattr(admin, method)(url, body, format="json")
                seen.append((url, field, response.status_code))
                assert response.status_code < 500, (method, url, field, value, response.content[:300])
                if response.status_code >= 400:
                    assert response.json()["error"]["status"] == response.status_code
    for name in ("status", "project", "environment", "mine", "older_than_days", "page", "page_size"):
        for value in ("", "yes", "-1", "99999999999999999999", "\u202e", "x" * 300):
            response = admin.get(f"{API}/approval-requests/", {name: value})
            assert response.status_code < 500, (name, value, response.content[:300])
    # The hostile values reached the services too, not only the serializers.
    assert any(status == 400 for _, field, status in seen if field == "gates")


# --- errors in the app's words, and the schema that describes them -------------------------------------------


def test_a_404_says_what_is_missing(users, api_client_for, version, staging) -> None:
    admin = api_client_for(users.admin)
    missing = [
        ("get", f"{API}/approval-requests/9999/", None, "there is no approval request 9999"),
        (
            "post",
            f"{API}/approval-requests/9999/decisions/",
            {"verdict": "approve", "comment": "x"},
            "there is no approval request 9999",
        ),
        ("post", f"{API}/approval-requests/9999/withdraw/", {}, "there is no approval request 9999"),
        ("get", f"{API}/model-versions/9999/approvals/", None, "there is no model version 9999"),
        ("get", f"{API}/environments/prod/", None, "there is no environment 'prod'"),
        ("patch", f"{API}/environments/prod/", {"order": 1}, "there is no environment 'prod'"),
        ("get", f"{API}/projects/nope/", None, "there is no project 'nope'"),
        ("get", f"{API}/system-checks/9999/", None, "there is no system check 9999"),
    ]
    for method, url, body, message in missing:
        response = getattr(admin, method)(url, body, format="json") if body is not None else admin.get(url)
        assert response.status_code == 404, (url, response.content)
        error = response.json()["error"]
        assert error["status"] == 404 and error["code"] == "not_found", url
        assert error["message"] == message, url
        assert "matches the given query" not in response.content.decode()
    # An approver deciding an unknown request gets the same words (the decide endpoint's 404).
    unknown = decide(api_client_for(users.approver), 9999)
    assert unknown.json()["error"]["message"] == "there is no approval request 9999"


def test_a_bad_choice_names_the_choices_in_the_services_words(users, api_client_for, version, staging) -> None:
    pk = create_request(api_client_for(users.data_scientist), version).json()["id"]
    approver = api_client_for(users.approver)
    for verdict, shown in [("maybe", "'maybe'"), ("APPROVE", "'APPROVE'"), (5, "5"), ("", "''")]:
        refused = decide(approver, pk, verdict=verdict)  # type: ignore[arg-type]
        assert refused.status_code == 400, refused.content
        assert error_fields(refused) == {"verdict": [f"expected approve or reject, got {shown}"]}
    # The same words the service (and so the web form) uses.
    with pytest.raises(ValidationError) as raised:
        services.approval_decide(actor=users.approver, request_id=pk, verdict="maybe", comment="x")
    assert raised.value.message_dict["verdict"] == [error_fields(decide(approver, pk, verdict="maybe"))["verdict"][0]]
    assert not ApprovalDecision.objects.exists()

    finance = api_client_for(users.finance)
    bad_status = finance.get(f"{API}/approval-requests/?status=pending")
    assert error_fields(bad_status) == {
        "status": ["expected open, approved, rejected, withdrawn or expired, got 'pending'"]
    }
    bad_mine = finance.get(f"{API}/approval-requests/?mine=perhaps")
    assert error_fields(bad_mine) == {"mine": ["expected true or false, got 'perhaps'"]}
    bad_flag = api_client_for(users.admin).patch(
        f"{API}/environments/staging/", {"allow_override": "sometimes"}, format="json"
    )
    assert error_fields(bad_flag) == {"allow_override": ["expected true or false, got 'sometimes'"]}


def test_the_schema_bounds_are_the_ranges_the_service_checks(users, api_client_for, staging) -> None:
    """Each bounded integer shows its real range in the schema (input and output), and the service accepts the
    bounds and refuses just outside them, in its own words (the API adds none of DRF's)."""
    schema = api_client_for(users.finance).get(f"{API}/schema/?format=json").json()
    components = schema["components"]["schemas"]
    change = components["PatchedEnvironmentChangeInputRequest"]["properties"]
    shown = components["EnvironmentOutput"]["properties"]
    expected = {
        "order": (0, 1000),
        "approvals_required": (1, 10),
        "request_ttl_days": (1, 365),
        "min_desired_count": (1, 100),
        "max_desired_count": (1, 100),
    }
    for name, (low, high) in expected.items():
        assert (change[name]["minimum"], change[name]["maximum"]) == (low, high), name
        assert (shown[name]["minimum"], shown[name]["maximum"]) == (low, high), name
    assert components["ApprovalRequestOutput"]["properties"]["approvals_required"]["maximum"] == 10
    assert "9223372036854775807" not in str(components["EnvironmentOutput"])

    admin = api_client_for(users.admin)
    for name, (low, high) in expected.items():
        for value in (low, high):
            # The other count at its widest, so only this field's range is in play.
            other = {"min_desired_count": {"max_desired_count": 100}, "max_desired_count": {"min_desired_count": 1}}
            body = {name: value, **other.get(name, {})}
            accepted = admin.patch(f"{API}/environments/staging/", body, format="json")
            assert accepted.status_code == 200, (name, value, accepted.content)
            assert accepted.json()[name] == value
        for value in (low - 1, high + 1):
            refused = admin.patch(f"{API}/environments/staging/", {name: value}, format="json")
            assert refused.status_code == 400, (name, value)
            assert error_fields(refused) == {name: [f"expected a whole number from {low} to {high}, got {value}"]}
    # Minutes and percentages take fractions (a short bake on the local backend); their ranges show too.
    for name, (low, high, what) in services.NUMBER_RANGES.items():
        assert (change[name]["minimum"], change[name]["maximum"]) == (low, high), name
        assert (shown[name]["minimum"], shown[name]["maximum"]) == (low, high), name
        accepted = admin.patch(f"{API}/environments/staging/", {name: (low + high) / 2 + 0.5}, format="json")
        assert accepted.status_code == 200 and accepted.json()[name] == (low + high) / 2 + 0.5, accepted.content
        refused = admin.patch(f"{API}/environments/staging/", {name: high + 1}, format="json")
        assert error_fields(refused) == {name: [f"expected {what}, got {high + 1!r}"]}
    not_whole: list[tuple[Any, str]] = [("many", "'many'"), (None, "None"), (2.5, "2.5")]
    for bad, shown_bad in not_whole:
        refused = admin.patch(f"{API}/environments/staging/", {"approvals_required": bad}, format="json")
        assert error_fields(refused) == {
            "approvals_required": [f"expected a whole number from 1 to 10, got {shown_bad}"]
        }


def test_the_schema_documents_each_error_with_the_one_error_body(users, api_client_for) -> None:
    schema = api_client_for(users.finance).get(f"{API}/schema/?format=json").json()
    error = schema["components"]["schemas"]["ApiError"]
    assert error["properties"]["error"]["$ref"] == "#/components/schemas/ApiErrorDetail"
    detail = schema["components"]["schemas"]["ApiErrorDetail"]["properties"]
    assert {"status", "code", "message", "fields"} <= set(detail)
    paths = schema["paths"]
    expected = {
        ("/api/v1/approval-requests/", "get"): {"200", "400", "401", "403"},
        ("/api/v1/approval-requests/", "post"): {"201", "400", "401", "403", "409"},
        ("/api/v1/approval-requests/{id}/", "get"): {"200", "401", "403", "404"},
        ("/api/v1/approval-requests/{id}/decisions/", "post"): {"200", "400", "401", "403", "404", "409"},
        ("/api/v1/approval-requests/{id}/withdraw/", "post"): {"200", "400", "401", "403", "404", "409"},
        ("/api/v1/model-versions/{id}/approvals/", "get"): {"200", "401", "403", "404"},
        ("/api/v1/environments/", "post"): {"201", "400", "401", "403"},
        ("/api/v1/environments/{name}/", "patch"): {"200", "400", "401", "403", "404"},
        ("/api/v1/notifications/read/", "post"): {"200", "400", "401", "403"},
    }
    for (path, method), statuses in expected.items():
        responses = paths[path][method]["responses"]
        assert set(responses) == statuses, (path, method)
        for status_code in statuses - {"200", "201"}:
            body = responses[status_code]["content"]["application/json"]["schema"]
            assert body == {"$ref": "#/components/schemas/ApiError"}, (path, method, status_code)
            assert responses[status_code]["description"], (path, method, status_code)
    decide_op = paths["/api/v1/approval-requests/{id}/decisions/"]["post"]
    assert "400 `approver` for" not in decide_op["description"]
    assert "Neither the requester nor the author of the training run may decide" in decide_op["description"]
    assert "approve or reject" in decide_op["responses"]["400"]["description"]


def test_the_list_names_an_unknown_project_or_environment_as_the_page_does(api_client_for, users, staging) -> None:
    client = api_client_for(users.approver)
    refused = client.get(f"{API}/approval-requests/", {"environment": "prod", "project": "nope"})
    assert refused.status_code == 400
    fields = refused.json()["error"]["fields"]
    assert fields["environment"] == ["there is no environment 'prod' (environments: staging)"]
    assert fields["project"] == ["there is no project 'nope'"]
    days = client.get(f"{API}/approval-requests/", {"older_than_days": "abc"})
    assert days.json()["error"]["fields"] == {
        "older_than_days": ["expected a whole number of days from 0 to 3650, got 'abc'"]
    }
