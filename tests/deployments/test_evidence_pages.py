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
from tests.fixtures.page_html import json_scripts, parse

pytestmark = pytest.mark.django_db

_datasets = itertools.count(1)


def make_trained_version(
    project: Any,
    author: Any,
    tmp_path: Path,
    *,
    metrics: dict[str, float] | None = None,
    features: list[str] | None = None,
    input_schema: list[dict[str, str]] | None = None,
) -> ModelVersion:
    """A model version (real stored artifact) whose training run read a profiled dataset version: raw data → run →
    model version in the lineage graph. `features` names the data's numeric columns (besides `target`)."""
    from workers.datasets import profile_files

    n = next(_datasets)
    features = features or ["mean radius", "mean texture"]
    path = tmp_path / f"cells-{n}.csv"
    rows = [",".join([*features, "target"])] + [
        ",".join([*(f"{10 + (i + j) % 9}.5" for j in range(len(features))), str(i % 2)]) for i in range(60)
    ]
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
        columns=[*features, "target"],
        row_count=60,
        source="upload",
        created_by=author,
    )
    DatasetProfile.objects.create(
        version=dataset_version, status="ready", progress=1.0, profile=profile_files([path], format="csv")
    )
    version = make_model_version(project, author, metrics=metrics, input_schema=input_schema)
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
    assert "4 of 4 passed" in row and "1 of 2" in row and "in 14 days" in row
    assert f'href="/models/bc/bc-classifier/v{version.number}/"' in row


def test_my_requests_lists_the_requests_one_made_in_every_state(client, users, project, staging) -> None:
    mine = ask(users.data_scientist, make_model_version(project, users.data_scientist))
    withdrawn = ask(users.data_scientist, make_model_version(project, users.data_scientist, model="other"))
    services.approval_withdraw(actor=users.data_scientist, request_id=withdrawn.pk, reason="not yet")
    admins = ask(users.admin, make_model_version(project, users.admin, model="admins"))
    client.force_login(users.data_scientist)
    response = client.get("/approvals/?tab=requested")
    assert response.status_code == 200
    assert queue_rows(response) == {mine.pk, withdrawn.pk}
    page = parse(response.content)
    assert page.find(data_testid="queue-tabs").find("a", aria_current="page").text() == "My requests"
    rows = page.find(data_testid="approval-table").rows()
    assert rows[0][0] == f"request {withdrawn.pk}"  # newest first
    # Its filters are the list's: status, project, environment, age.
    assert queue_rows(client.get("/approvals/?tab=requested&status=open")) == {mine.pk}
    assert queue_rows(client.get("/approvals/?tab=requested&status=approved")) == set()
    assertContains(client.get("/approvals/?tab=requested&status=approved"), "You have requested no promotion that")
    # The admin's own are theirs alone; an approver who requests nothing has no such list.
    client.force_login(users.admin)
    assert queue_rows(client.get("/approvals/?tab=requested")) == {admins.pk}
    client.force_login(users.approver)
    response = client.get("/approvals/?tab=requested")
    assert response.status_code == 400 and queue_rows(response) == set()
    assertContains(response, "choose All requests", status_code=400)
    assertNotContains(client.get("/approvals/"), "My requests")


def test_the_home_pages_requests_link_opens_my_requests(client, users, project, staging) -> None:
    ask(users.data_scientist, make_model_version(project, users.data_scientist))
    client.force_login(users.data_scientist)
    links = parse(client.get("/").content).find(data_testid="my-requests-count").links()
    assert links["Your open requests"] == "/approvals/?tab=requested&status=open"


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
        ("tab=mine&status=rejected", "status", "choose All requests"),
        ("older_than=two", "older_than", "expected a whole number of days"),
        ("older_than=-1", "older_than", "expected a whole number of days"),
        ("tab=everything", "tab", "expected mine, requested or all"),
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
    assert "expires in 14 days (" in content  # not "1 week, 6 days" nor "13 days, 23 hours"
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


def _status_section(content: str) -> Any:
    return parse(content).find("section", id="approval-status")


def _follow(client: Any, req: ApprovalRequest) -> str:
    polled = client.get(f"/approvals/{req.pk}/?part=status&following=deployment", headers={"HX-Request": "true"})
    assert polled.status_code == 200 and "HX-Refresh" not in polled
    return polled.content.decode()


def test_once_approved_the_page_follows_the_deployment_made_on_approval_until_it_ends(
    client, users, version, staging
) -> None:
    from deployments.models import Deployment

    services.environment_update(actor=users.admin, environment_id=staging.pk, data={"deploy_on_approval": True})
    req = approved(users, version)
    client.force_login(users.approver)
    # Approved, not yet announced: the deployment comes from the worker's next task, so the page keeps polling.
    section = _status_section(client.get(f"/approvals/{req.pk}/").content.decode())
    assert section.attrs["hx-get"] == f"/approvals/{req.pk}/?part=status&following=deployment"
    assert section.attrs["hx-trigger"] == "every 2s"
    assert "waiting for a worker to start the deployment" in section.text()
    assert "waiting for a worker" in _follow(client, req)

    services.approval_announce(request_id=req.pk)  # the worker's task: deploy_on_approval makes the deployment
    deployment = Deployment.objects.get(approval_request=req)
    polled = _follow(client, req)
    shown = parse(polled).find(data_testid="approval-deployment")
    assert f"Deploy {deployment.pk} of {version}" in shown.text() and shown.attrs["data-status"] == "pending"
    assert shown.links()[deployment.service.name] == f"/services/{deployment.service_id}/"
    assert "hx-trigger" in polled.split(">")[0] and "waiting for a worker" not in polled  # under way: still polling

    Deployment.objects.filter(pk=deployment.pk).update(status="baking", progress={"traffic_percent": 20})
    assert "20% of traffic" in parse(_follow(client, req)).find(data_testid="approval-deployment").text()
    Deployment.objects.filter(pk=deployment.pk).update(status="succeeded")
    polled = _follow(client, req)
    assert "hx-trigger" not in polled.split(">")[0]  # it ended: the section stops polling
    assert parse(polled).find(data_testid="approval-deployment").attrs["data-status"] == "succeeded"
    assert "hx-trigger" not in _status_section(client.get(f"/approvals/{req.pk}/").content.decode()).attrs


def test_the_page_says_when_no_deployment_will_come_of_the_approval(client, users, version, staging) -> None:
    from deployments.models import Deployment

    services.environment_update(actor=users.admin, environment_id=staging.pk, data={"deploy_on_approval": True})
    other = make_model_version(version.registered_model.project, users.data_scientist)
    first = approved(users, other)
    services.approval_announce(request_id=first.pk)  # deploys `other`: it is still under way
    req = approved(users, version)
    services.approval_announce(request_id=req.pk)  # refused (another is active): the requester is told
    assert not Deployment.objects.filter(approval_request=req).exists()
    client.force_login(users.approver)
    polled = _follow(client, req)
    assert "hx-trigger" not in polled.split(">")[0]
    assert f"{version} was not deployed" in parse(polled).find(data_testid="not-deployed").text()
    section = _status_section(client.get(f"/approvals/{req.pk}/").content.decode())
    assert "hx-trigger" not in section.attrs and section.has(data_testid="not-deployed")


def test_an_environment_that_does_not_deploy_on_approval_is_not_followed(client, users, version, staging) -> None:
    req = approved(users, version)
    client.force_login(users.approver)
    section = _status_section(client.get(f"/approvals/{req.pk}/").content.decode())
    assert "hx-trigger" not in section.attrs and "deploys on approval" not in section.text()


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
    assertContains(response, "This request is rejected: nothing is left to decide.")
    # Deciding a closed request: 409, with the reason.
    client.force_login(users.approver2)
    response = client.post(f"/approvals/{req.pk}/decide/", {"verdict": "approve", "comment": "late"})
    assert response.status_code == 409
    assertContains(response, "only an open request can be decided", status_code=409)


def test_withdrawing(client, users, version, staging) -> None:
    req = ask(users.data_scientist, version)
    client.force_login(users.approver)
    assertNotContains(client.get(f"/approvals/{req.pk}/"), 'data-testid="withdraw-form"')
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


# --- what the walk-through found ------------------------------------------------------------------------------


def test_a_shared_status_link_opens_all_requests_for_an_approver(client, users, version, staging) -> None:
    req = ask(users.data_scientist, version)
    services.approval_withdraw(actor=users.data_scientist, request_id=req.pk, reason="not yet")
    client.force_login(users.approver)
    response = client.get("/approvals/?status=withdrawn")
    assert response.status_code == 200
    assert queue_rows(response) == {req.pk}
    tabs = parse(response.content).find(data_testid="queue-tabs")
    assert tabs.find("a", aria_current="page").text() == "All requests"
    # "open" is what the waiting tab shows anyway: that link stays on it.
    assertContains(client.get("/approvals/?status=open"), 'aria-current="page"><strong>Waiting for me')
    # A bogus status lands on All requests too, where the error stands beside the status field it names.
    response = client.get("/approvals/?status=bogus")
    assert response.status_code == 400
    status_label = next(
        label for label in parse(response.content).find_all("label") if label.has("select", name="status")
    )
    assert "expected one of open, approved" in status_label.find("span", data_field="status").text()


def test_a_bad_status_on_the_waiting_tab_is_an_error_at_the_top_not_an_empty_queue(
    client, users, version, staging
) -> None:
    ask(users.data_scientist, version)
    client.force_login(users.approver)
    response = client.get("/approvals/?tab=mine&status=rejected")
    assert response.status_code == 400
    page = parse(response.content)
    assert not page.has("select", name="status")  # the waiting tab has no status field...
    summary = page.find(data_testid="filter-errors")  # ...so the error is said above the filters, whole
    assert summary.attrs["role"] == "alert"
    assert "choose All requests to see other states" in summary.find(data_field="status").text()
    assert len(page.find_all(data_field="status")) == 1
    # No table claiming that nothing waits while the tab says one does: the page says why nothing is listed.
    assertNotContains(response, "Nothing is waiting for you.", status_code=400)
    assert not page.has("table", data_testid="approval-table")
    assert "until the filters above are fixed" in page.find(data_testid="filter-error-state").text()
    assertContains(response, 'data-count="1"', status_code=400)


def test_the_queue_colours_each_status_like_the_request_page(client, users, project, staging) -> None:
    open_one = ask(users.data_scientist, make_model_version(project, users.data_scientist, model="a"))
    rejected = ask(users.data_scientist, make_model_version(project, users.data_scientist, model="b"))
    services.approval_decide(actor=users.approver, request_id=rejected.pk, verdict="reject", comment="no")
    accepted = approved(users, make_model_version(project, users.data_scientist, model="c"))
    client.force_login(users.approver2)
    page = parse(client.get("/approvals/?tab=all").content)
    for req in (open_one, rejected, accepted):
        in_queue = page.find("tr", data_request=str(req.pk)).find(data_testid="status").find("span").attrs["class"]
        detail = parse(client.get(f"/approvals/{req.pk}/").content).find(data_testid="status-badge").attrs["class"]
        assert in_queue == detail
    badge = page.find("tr", data_request=str(rejected.pk)).find(data_testid="status").find("span")
    assert badge.attrs["class"].split() == ["badge", "rejected", "failed"]
    assert "ok" in page.find("tr", data_request=str(accepted.pk)).find(data_testid="status").find("span").attrs["class"]


@pytest.mark.parametrize(
    "name, higher",
    [
        ("accuracy", True),
        ("f1", True),
        ("roc_auc", True),
        ("r2", True),
        ("log_loss", False),
        ("cv_accuracy_std", False),
        ("rmse", False),
        ("MAE", False),
        ("mean_squared_error", False),
        ("val_mse", False),
    ],
)
def test_which_way_a_metric_improves(name, higher) -> None:
    from deployments.selectors import metric_higher_is_better

    assert metric_higher_is_better(name) is higher


def test_the_change_column_and_chart_say_better_or_worse(client, users, project, gated, tmp_path) -> None:
    before = {"accuracy": 0.93, "log_loss": 0.25, "cv_accuracy_std": 0.03, "f1": 0.9}
    baseline = make_trained_version(project, users.data_scientist, tmp_path, metrics=before)
    approved(users, baseline, "canary")
    after = {"accuracy": 0.95, "log_loss": 0.3, "cv_accuracy_std": 0.02, "f1": 0.9}
    req = ask(
        users.data_scientist, make_trained_version(project, users.data_scientist, tmp_path, metrics=after), "canary"
    )
    client.force_login(users.approver)
    response = client.get(f"/approvals/{req.pk}/")
    rows = {row[0]: row[3] for row in parse(response.content).find("table", data_testid="metrics-table").rows()}
    assert rows == {
        "accuracy": "+0.0200 better",
        "cv_accuracy_std": "-0.0100 better",  # a smaller spread across folds is better
        "f1": "0",
        "log_loss": "+0.0500 worse",  # a higher loss is worse, though the number went up
    }
    change = charts(response)["change-chart"]
    assert change["kind"] == "change"
    assert change["metrics"] == ["accuracy", "cv_accuracy_std", "f1", "log_loss"]
    assert change["changes"] == pytest.approx([0.02, -0.01, 0.0, 0.05])
    assert change["better"] == [True, True, None, False]


def test_without_a_baseline_there_is_no_change_chart(client, users, version, staging) -> None:
    req = ask(users.data_scientist, version)
    client.force_login(users.approver)
    response = client.get(f"/approvals/{req.pk}/")
    assert "change-chart" not in charts(response)
    assert "metrics-chart" in charts(response)


WIDE = [f"feature {i:02d}" for i in range(30)]  # and the target: 31 columns, like the breast cancer export


@pytest.mark.parametrize("with_baseline", (False, True))
def test_a_wide_training_set_draws_a_few_histograms_and_lists_every_column(
    client, users, project, staging, tmp_path, with_baseline
) -> None:
    # The model reads four columns, listed from the far end of the data: their histograms come first.
    schema = [{"name": name, "type": "float"} for name in ("feature 29", "feature 17", "feature 03", "feature 11")]
    if with_baseline:
        approved(users, make_trained_version(project, users.data_scientist, tmp_path, features=WIDE))
    version = make_trained_version(project, users.data_scientist, tmp_path, features=WIDE, input_schema=schema)
    req = ask(users.data_scientist, version)
    client.force_login(users.approver)
    response = client.get(f"/approvals/{req.pk}/")
    figures = charts(response)
    assert len(figures) <= 7
    assert ("change-chart" in figures) is with_baseline
    histograms = [figures[key]["title"] for key in sorted(figures) if key.startswith("chart-")]
    assert histograms[:4] == ["feature 29", "feature 17", "feature 03", "feature 11"]
    assert len(histograms) == (5 if with_baseline else 6)
    # Every column is still in the compact table, with a link to the dataset version page for the rest.
    profile = parse(response.content).find(data_testid="training-profile")
    assert len(profile.find("table", data_testid="profile-table").rows()) == 31
    dataset_version = version.run.inputs.get().dataset_version
    link = profile.find("a", data_testid="all-columns")
    assert link.text() == "all 31 columns on the dataset version page"
    assert link.attrs["href"].startswith(f"/datasets/bc/{dataset_version.dataset.slug}/v{dataset_version.number}/")
    # The profile's own poll (while it is computed) answers with the same few charts.
    part = client.get(f"/approvals/{req.pk}/?part=profile", headers={"HX-Request": "true"})
    assert len(charts(part)) == len(histograms)


def test_a_get_on_decide_or_withdraw_shows_the_request(client, users, version, staging) -> None:
    req = ask(users.data_scientist, version)
    client.force_login(users.approver)
    for action in ("decide", "withdraw"):
        response = client.get(f"/approvals/{req.pk}/{action}/")
        assert response.status_code == 302 and response["Location"] == f"/approvals/{req.pk}/"
    assert client.get("/approvals/999999/decide/").status_code == 404
    assert ApprovalRequest.objects.get(pk=req.pk).status == "open"
    assert not ApprovalDecision.objects.exists()


def test_withdrawing_takes_two_steps_and_records_the_reason(client, users, version, staging) -> None:
    req = ask(users.data_scientist, version)
    client.force_login(users.data_scientist)
    details = parse(client.get(f"/approvals/{req.pk}/").content).find("details", data_testid="withdraw")
    assert "open" not in details.attrs  # the first step only reveals the form
    assert details.find("summary").text() == "Withdraw this request…"
    form = details.find("form", data_testid="withdraw-form")
    assert form.has("textarea", name="reason")
    assert form.find("button").text() == f"Confirm: withdraw request {req.pk}"
    client.post(f"/approvals/{req.pk}/withdraw/", {"reason": "a better run is coming"})
    withdrawn = ApprovalRequest.objects.get(pk=req.pk)
    assert withdrawn.status == "withdrawn" and withdrawn.status_reason == "a better run is coming"


def test_the_timeline_lists_decisions_and_the_override_in_time_order(client, users, project) -> None:
    services.environment_create(
        actor=users.admin,
        data={"name": "lenient", "gates": ["accuracy >= 0.97"], "allow_override": True, "approvals_required": 2},
    )
    req = ask(
        users.data_scientist,
        make_model_version(project, users.data_scientist),
        "lenient",
        override_reason="the only model trained on the new feed",
    )
    services.approval_decide(actor=users.approver, request_id=req.pk, verdict="approve", comment="looks right")
    services.approval_decide(actor=users.approver2, request_id=req.pk, verdict="reject", comment="f1 too low")
    client.force_login(users.admin)
    timeline = parse(client.get(f"/approvals/{req.pk}/").content).find("table", data_testid="timeline")
    rows = [
        (row.attrs["data-kind"], *[cell.text() for cell in row.find_all("td")][1:])
        for row in timeline.find_all("tr")[1:]
    ]
    assert rows == [
        ("status", "request", "— → open", "dana", rows[0][4]),
        ("override", "gate override", "", "dana", "the only model trained on the new feed"),
        ("decision", "decision: approve", "", "alex", "looks right"),
        ("decision", "decision: reject", "", "blair", "f1 too low"),
        ("status", "reject", "open → rejected", "blair", rows[4][4]),
    ]
    times = [row.find("td").text() for row in timeline.find_all("tr")[1:]]
    assert times == sorted(times)


def test_the_logs_link_lands_on_the_run_log(client, users, version, staging) -> None:
    req = ask(users.data_scientist, version)
    client.force_login(users.approver)
    link = parse(client.get(f"/approvals/{req.pk}/").content).find("a", data_testid="logs-link")
    assert link.attrs["href"] == f"/runs/{version.run_id}/#logs"
    run_page = parse(client.get(f"/runs/{version.run_id}/").content)
    logs = run_page.find(id="logs")
    assert logs.text() == "Log"
