"""The approver's pages: the approval queue (waiting for me / all requests, filters) and the evidence page (gates,
metrics against the baseline, lineage, the training data's profile, cost, decisions), deciding and withdrawing."""

from __future__ import annotations

import hashlib
import itertools
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone
from pytest_django.asserts import assertContains, assertNotContains

from deployments import services
from deployments.models import ApprovalDecision, ApprovalRequest
from lineage.models import Dataset, DatasetProfile, DatasetVersion, LineageEdge, ModelVersion, RunInput
from tests.deployments.conftest import make_model_version
from tests.fixtures.page_html import json_scripts

pytestmark = pytest.mark.django_db

_datasets = itertools.count(1)


def make_trained_version(
    project: Any, author: Any, tmp_path: Path, *, metrics: dict[str, float] | None = None
) -> ModelVersion:
    """A model version (real stored artifact) whose training run read a profiled dataset version: raw data → run →
    model version in the lineage graph."""
    from workers.datasets import profile_files

    n = next(_datasets)
    path = tmp_path / f"cells-{n}.csv"
    rows = ["mean radius,mean texture,target"] + [f"{10 + i % 9}.5,{15 + i % 5}.25,{i % 2}" for i in range(60)]
    path.write_text("\n".join(rows) + "\n")
    dataset = Dataset.objects.create(project=project, name=f"cells {n}", slug=f"cells-{n}", created_by=author)
    dataset_version = DatasetVersion.objects.create(
        dataset=dataset,
        number=1,
        sha256=hashlib.sha256(path.read_bytes() + str(n).encode()).hexdigest(),
        uri=f"file:///data/cells-{n}.csv",
        storage_key=f"datasets/cells-{n}/v1",
        size=path.stat().st_size,
        format="csv",
        content_format="csv",
        columns=["mean radius", "mean texture", "target"],
        row_count=60,
        source="upload",
        created_by=author,
    )
    DatasetProfile.objects.create(
        version=dataset_version, status="ready", progress=1.0, profile=profile_files([path], format="csv")
    )
    version = make_model_version(project, author, metrics=metrics)
    run = version.run
    run.backend, run.instance_type, run.max_runtime_seconds = "local", "local", 1800
    run.cost, run.estimated_cost = "0.0123", "0.25"
    run.save(update_fields=["backend", "instance_type", "max_runtime_seconds", "cost", "estimated_cost"])
    RunInput.objects.create(run=run, dataset_version=dataset_version, channel="train")
    LineageEdge.objects.create(source=dataset_version.node_id, target=run.node_id)
    return version


def charts(response: Any) -> dict[str, Any]:
    return json_scripts(response.content)


def ask(actor: Any, version: Any, environment: str = "staging", **extra: Any) -> ApprovalRequest:
    return services.approval_request_create(
        actor=actor, model_version_id=version.pk, environment=environment, justification="better recall", **extra
    )


def approved(users: Any, version: Any, environment: str = "staging") -> ApprovalRequest:
    req = ask(users.data_scientist, version, environment)
    services.approval_decide(actor=users.approver, request_id=req.pk, verdict="approve", comment="fine")
    done = services.approval_finish(request_id=req.pk)
    assert done is not None and done.status == "approved"
    return done


def queue_rows(response: Any) -> set[int]:
    content = response.content.decode()
    return {req.pk for req in ApprovalRequest.objects.all() if f'data-request="{req.pk}"' in content}


@pytest.fixture
def gated(users: Any) -> Any:
    return services.environment_create(
        actor=users.admin,
        data={"name": "canary", "order": 15, "gates": ["accuracy >= 0.90", "accuracy >= serving - 0.01"]},
    )


# --- the queue ----------------------------------------------------------------------------------------------


def test_the_queue_shows_a_request_to_an_approver_not_to_its_requester(client, users, project, staging) -> None:
    mine = ask(users.admin, make_model_version(project, users.data_scientist))
    other = ask(users.data_scientist, make_model_version(project, users.data_scientist))
    client.force_login(users.approver)
    response = client.get("/approvals/")
    assert response.status_code == 200
    assert queue_rows(response) == {mine.pk, other.pk}
    assertContains(response, 'data-testid="waiting-count" data-count="2"')
    # The admin may decide, but not the request they made themselves.
    client.force_login(users.admin)
    response = client.get("/approvals/")
    assert queue_rows(response) == {other.pk}
    # Deciding takes a request out of that approver's queue; it stays in "All requests".
    services.approval_decide(actor=users.admin, request_id=other.pk, verdict="approve", comment="ok")
    assert queue_rows(client.get("/approvals/")) == set()
    assert queue_rows(client.get("/approvals/?tab=all")) == {mine.pk, other.pk}
    # A data scientist has nothing to decide: their default list is all requests, without a waiting tab.
    client.force_login(users.data_scientist)
    response = client.get("/approvals/")
    assert queue_rows(response) == {mine.pk, other.pk}
    assertNotContains(response, "Waiting for me")
    assert client.get("/approvals/?tab=mine").status_code == 400


def test_the_queue_row_says_gates_approvals_and_expiry(client, users, project, staging, production) -> None:
    version = make_model_version(project, users.data_scientist)
    approved(users, version)
    req = ask(users.data_scientist, version, "production")
    services.approval_decide(actor=users.approver, request_id=req.pk, verdict="approve", comment="ok")
    client.force_login(users.approver2)
    response = client.get("/approvals/?environment=production")
    assert queue_rows(response) == {req.pk}
    row = response.content.decode().split(f'data-request="{req.pk}"')[1].split("</tr>")[0]
    assert "4 of 4 passed" in row and "1 of 2" in row and "in 1" in row  # expires in 13 days, 23 hours
    assert f'href="/models/bc/bc-classifier/v{version.number}/"' in row


def test_queue_filters(client, users, project, staging, production) -> None:
    from controlplane import services as controlplane_services

    other_project = controlplane_services.project_create(actor=users.admin, name="Iris", slug="iris")
    old = ask(users.data_scientist, make_model_version(project, users.data_scientist))
    ApprovalRequest.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=5))
    iris = ask(users.data_scientist, make_model_version(other_project, users.data_scientist, model="iris"))
    rejected = ask(users.data_scientist, make_model_version(project, users.data_scientist, model="other"))
    services.approval_decide(actor=users.approver2, request_id=rejected.pk, verdict="reject", comment="no")
    client.force_login(users.approver)
    assert queue_rows(client.get("/approvals/")) == {old.pk, iris.pk}
    assert queue_rows(client.get("/approvals/?project=iris")) == {iris.pk}
    assert queue_rows(client.get("/approvals/?older_than=3")) == {old.pk}
    assert queue_rows(client.get("/approvals/?environment=production")) == set()
    assert queue_rows(client.get("/approvals/?tab=all")) == {old.pk, iris.pk, rejected.pk}
    assert queue_rows(client.get("/approvals/?tab=all&status=rejected")) == {rejected.pk}
    assert queue_rows(client.get("/approvals/?tab=all&status=open&project=bc")) == {old.pk}
    # The tabs keep the filters, but not a status on the way to "Waiting for me" (everything there is open).
    response = client.get("/approvals/?tab=all&status=rejected&project=bc")
    assertContains(response, 'href="?tab=mine&amp;project=bc"')
    assertContains(response, 'href="?tab=all&amp;project=bc&amp;status=rejected"')


@pytest.mark.parametrize(
    "query, field, words",
    [
        ("project=nope", "project", "there is no project 'nope'"),
        ("environment=nowhere", "environment", "there is no environment 'nowhere' (environments: staging)"),
        ("tab=all&status=maybe", "status", "expected one of open, approved"),
        ("status=rejected", "status", "choose All requests"),
        ("older_than=two", "older_than", "expected a whole number of days"),
        ("older_than=-1", "older_than", "expected a whole number of days"),
        ("tab=everything", "tab", "expected mine or all"),
    ],
)
def test_bad_queue_filters_are_named(client, users, staging, query, field, words) -> None:
    client.force_login(users.approver)
    response = client.get(f"/approvals/?{query}")
    assert response.status_code == 400
    content = response.content.decode()
    assert f'data-field="{field}"' in content
    assert words in content.replace("&#x27;", "'")


def test_pages_need_a_role(client, users, version, staging) -> None:
    req = ask(users.data_scientist, version)
    client.force_login(users.outsider)
    assert client.get("/approvals/").status_code == 403
    assert client.get(f"/approvals/{req.pk}/").status_code == 403
    client.force_login(users.finance)
    assert client.get(f"/approvals/{req.pk}/").status_code == 200
    assert client.get("/approvals/999999/").status_code == 404


# --- the evidence page ------------------------------------------------------------------------------------------


def test_the_evidence_page_shows_everything_an_approver_weighs(client, users, project, gated, tmp_path) -> None:
    baseline = make_trained_version(project, users.data_scientist, tmp_path, metrics={"accuracy": 0.93, "f1": 0.91})
    approved(users, baseline, "canary")
    candidate = make_trained_version(project, users.data_scientist, tmp_path, metrics={"accuracy": 0.95, "f1": 0.9})
    req = ask(users.data_scientist, candidate, "canary")
    client.force_login(users.approver)
    response = client.get(f"/approvals/{req.pk}/")
    assert response.status_code == 200
    content = response.content.decode()
    # Who asked, why, for which bytes, until when.
    assertContains(response, "better recall")
    assertContains(response, f'data-testid="artifact-sha256">{candidate.sha256}</code>')
    assert "expires in 1" in content  # "expires in 13 days, 23 hours"
    # Each gate with its outcome and the evidence summary.
    assert 'data-gate="accuracy &gt;= 0.90" data-passed="true"' in content
    assert 'data-gate="accuracy &gt;= serving - 0.01" data-passed="true"' in content
    assert "Not mirrored (local backend)." in content
    # The chart's numbers: the candidate and the baseline side by side, one group per metric.
    assert charts(response)["metrics-chart"] == {
        "kind": "compare",
        "metrics": ["accuracy", "f1"],
        "series": [
            {"name": f"v{candidate.number} (candidate)", "values": [0.95, 0.9]},
            {"name": f"v{baseline.number} (baseline)", "values": [0.93, 0.91]},
        ],
    }
    assertContains(response, f'Compared with <a href="/models/bc/bc-classifier/v{baseline.number}/">')
    assert "+0.02" in content and "-0.01" in content  # the table's change column
    # Lineage from the raw data through the run to this version.
    dataset_version = candidate.run.inputs.get().dataset_version
    for node in (dataset_version.node_id, candidate.run.node_id, candidate.node_id):
        assert f'data-node="{node}"' in content
    # The training data's profile (the drift baseline), the run and its cost.
    assertContains(response, 'data-testid="profile-table"')
    assertContains(response, "60 rows, 3 columns.")
    assert any(spec["kind"] == "histogram" for key, spec in charts(response).items() if key.startswith("chart-"))
    assertContains(response, f'data-testid="run-link" href="/runs/{candidate.run_id}/"')
    assert "measured $0.0123" in content and "estimated at most $0.2500" in content
    # The approver may decide: the form is there, no refusal.
    assertContains(response, 'data-testid="decide-form"')
    assertNotContains(response, 'data-testid="decide-refusal"')
    assertNotContains(response, 'data-testid="withdraw-form"')


def test_without_a_baseline_only_the_candidate_is_shown(client, users, version, staging) -> None:
    req = ask(users.data_scientist, version)
    client.force_login(users.approver)
    response = client.get(f"/approvals/{req.pk}/")
    assertContains(response, "there is no baseline, only the candidate is shown")
    assert [s["name"] for s in charts(response)["metrics-chart"]["series"]] == [f"v{version.number} (candidate)"]
    assertContains(response, "The training run records no input dataset version.")


def test_an_overridden_gate_says_who_and_why(client, users, project) -> None:
    services.environment_create(
        actor=users.admin, data={"name": "lenient", "gates": ["accuracy >= 0.97"], "allow_override": True}
    )
    req = ask(
        users.data_scientist,
        make_model_version(project, users.data_scientist),
        "lenient",
        override_reason="the only model trained on the new feed",
    )
    client.force_login(users.approver)
    response = client.get(f"/approvals/{req.pk}/")
    content = response.content.decode()
    assert 'data-gate="accuracy &gt;= 0.97" data-passed="false"' in content
    assert "overridden by dana: the only model trained on the new feed" in content
    assert "0 of 1 passed" in client.get("/approvals/").content.decode()


def test_the_requester_sees_why_they_cannot_decide_and_may_withdraw(client, users, version, staging) -> None:
    req = ask(users.admin, version)
    client.force_login(users.admin)
    response = client.get(f"/approvals/{req.pk}/")
    assertNotContains(response, 'data-testid="decide-form"')
    assertContains(response, "You requested this promotion; someone else must decide it.")
    assertContains(response, 'data-testid="withdraw-form"')
    # The run's author may not decide either.
    author_approver = make_model_version(version.registered_model.project, users.approver, model="by-alex")
    other = ask(users.data_scientist, author_approver)
    client.force_login(users.approver)
    response = client.get(f"/approvals/{other.pk}/")
    assertNotContains(response, 'data-testid="decide-form"')
    assertContains(response, "You authored the training run of")
    # Posting anyway is refused with the service's reason, and nothing is recorded.
    response = client.post(f"/approvals/{other.pk}/decide/", {"verdict": "approve", "comment": "mine"})
    assert response.status_code == 400
    assertContains(response, "someone else must decide its promotion", status_code=400)
    assert not ApprovalDecision.objects.exists()


def test_approving_then_the_page_polls_until_the_artifact_is_checked(client, users, version, staging) -> None:
    req = ask(users.data_scientist, version)
    client.force_login(users.approver)
    response = client.post(f"/approvals/{req.pk}/decide/", {"verdict": "approve", "comment": "metrics hold"})
    assert response.status_code == 302 and response["Location"] == f"/approvals/{req.pk}/"
    response = client.get(f"/approvals/{req.pk}/")
    assertContains(response, "Your approval completes request")
    assertContains(response, "All approvals are in; checking the artifact…")
    assertContains(response, f'hx-get="/approvals/{req.pk}/?part=status" hx-trigger="every 2s"')
    assertContains(response, 'data-testid="approval-count">1 of 1 approval</small>')
    assertContains(response, "metrics hold")
    assertNotContains(response, 'data-testid="decide-form"')
    polled = client.get(f"/approvals/{req.pk}/?part=status", headers={"HX-Request": "true"})
    assert polled.status_code == 200 and "checking the artifact" in polled.content.decode()
    assert "HX-Refresh" not in polled
    services.approval_finish(request_id=req.pk)
    polled = client.get(f"/approvals/{req.pk}/?part=status", headers={"HX-Request": "true"})
    assert polled["HX-Refresh"] == "true"
    response = client.get(f"/approvals/{req.pk}/")
    content = response.content.decode()
    assert 'data-status="approved"' in content and "approved by alex" in content
    assert "hx-trigger" not in content.split('id="approval-status"')[1].split("</section>")[0]
    timeline = content.split('data-testid="timeline"')[1]
    assert "request" in timeline and "approve" in timeline and "approved" in timeline


def test_deciding_twice_is_a_conflict(client, users, version, staging, production) -> None:
    approved(users, version)
    req = ask(users.data_scientist, version, "production")
    client.force_login(users.approver)
    assert client.post(f"/approvals/{req.pk}/decide/", {"verdict": "approve", "comment": "ok"}).status_code == 302
    response = client.get(f"/approvals/{req.pk}/")
    assertContains(response, "You have already decided this request: you chose approve")
    response = client.post(f"/approvals/{req.pk}/decide/", {"verdict": "reject", "comment": "changed my mind"})
    assert response.status_code == 409
    assertContains(response, f"you have already decided request {req.pk}", status_code=409)
    assert ApprovalDecision.objects.filter(request=req).count() == 1
    assert ApprovalRequest.objects.get(pk=req.pk).status == "open"


def test_rejecting_needs_a_comment(client, users, version, staging) -> None:
    req = ask(users.data_scientist, version)
    client.force_login(users.approver)
    response = client.post(f"/approvals/{req.pk}/decide/", {"verdict": "reject", "comment": "  "})
    assert response.status_code == 400
    assertContains(
        response, '<p class="error" data-field="comment">required: say why you approve or reject</p>', status_code=400
    )
    assert ApprovalRequest.objects.get(pk=req.pk).status == "open"
    response = client.post(f"/approvals/{req.pk}/decide/", {"verdict": "reject", "comment": "f1 dropped"})
    assert response.status_code == 302
    response = client.get(f"/approvals/{req.pk}/")
    assertContains(response, "You rejected request")
    assertContains(response, "rejected by alex: f1 dropped")
    assertContains(response, "This request is rejected: only an open request can be decided.")
    # Deciding a closed request: 409, with the reason.
    client.force_login(users.approver2)
    response = client.post(f"/approvals/{req.pk}/decide/", {"verdict": "approve", "comment": "late"})
    assert response.status_code == 409
    assertContains(response, "only an open request can be decided", status_code=409)


def test_withdrawing(client, users, version, staging) -> None:
    req = ask(users.data_scientist, version)
    client.force_login(users.approver)
    assertNotContains(client.get(f"/approvals/{req.pk}/"), 'data-testid="withdraw-form"')
    assert client.get(f"/approvals/{req.pk}/withdraw/").status_code == 405
    assert client.post(f"/approvals/{req.pk}/withdraw/").status_code == 403  # approvers cannot request, nor withdraw
    client.force_login(users.data_scientist)
    response = client.post(f"/approvals/{req.pk}/withdraw/", {"reason": "retraining on new data"})
    assert response.status_code == 302
    response = client.get(f"/approvals/{req.pk}/")
    assertContains(response, f"Request {req.pk} withdrawn.")
    assertContains(response, "retraining on new data")
    assertNotContains(response, 'data-testid="withdraw-form"')
    response = client.post(f"/approvals/{req.pk}/withdraw/")
    assert response.status_code == 409
    assertContains(response, "only an open request can be withdrawn", status_code=409)


def test_an_expired_request_says_so(client, users, version, staging) -> None:
    req = ask(users.data_scientist, version)
    ApprovalRequest.objects.filter(pk=req.pk).update(expires_at=timezone.now() - timedelta(hours=1))
    client.force_login(users.approver)
    response = client.get(f"/approvals/{req.pk}/")
    assertContains(response, "expired on")
    assertNotContains(response, 'data-testid="decide-form"')
    response = client.post(f"/approvals/{req.pk}/decide/", {"verdict": "approve", "comment": "late"})
    assert response.status_code == 409
    assertContains(response, "expired on", status_code=409)
    assert ApprovalRequest.objects.get(pk=req.pk).status == "expired"


def test_the_queue_reads_a_fixed_number_of_queries_however_many_rows(
    client, users, project, staging, django_assert_max_num_queries
) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    ask(users.data_scientist, make_model_version(project, users.data_scientist))
    client.force_login(users.approver)
    for tab in ("mine", "all"):
        with CaptureQueriesContext(connection) as one:
            client.get(f"/approvals/?tab={tab}")
        ask(users.data_scientist, make_model_version(project, users.data_scientist, model=f"more-{tab}-1"))
        ask(users.data_scientist, make_model_version(project, users.data_scientist, model=f"more-{tab}-2"))
        with django_assert_max_num_queries(len(one)):
            response = client.get(f"/approvals/?tab={tab}")
        assert len(queue_rows(response)) >= 3
