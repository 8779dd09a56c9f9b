"""The promotion journey with five users in their roles, through the API, with a real worker and real training:
an admin sets up staging and production, a data scientist trains and requests promotion, finance looks on, two
approvers decide (production needs both), the worker checks the artifact and approves, the requester is told."""

from __future__ import annotations

from typing import Any

import pytest
from django.urls import reverse

from deployments.models import ApprovalRequest
from lineage.models import DatasetProfile, ModelVersion, Run
from tests.fixtures.processes import wait_for
from tests.lineage.conftest import cancer_csv, upload  # noqa: F401 - cancer_csv is a fixture

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def approved_or_rejected(request_id: int) -> ApprovalRequest:
    return wait_for(
        lambda: ApprovalRequest.objects.filter(pk=request_id).exclude(status="open").first(),
        timeout=120,
        what=f"the worker to finish approval request {request_id}",
    )


def test_train_request_and_approve_for_staging_then_production(
    celery_worker: Any,
    api_client_for: Any,
    users: Any,
    cancer_csv: bytes,  # noqa: F811
) -> None:
    from controlplane import services as controlplane_services

    controlplane_services.project_create(actor=users.admin, name="Cancer", slug="cancer")
    admin, dana = api_client_for(users.admin), api_client_for(users.data_scientist)
    alex, blair, fran = (api_client_for(u) for u in (users.approver, users.approver2, users.finance))

    environments = reverse("api-environment-list")
    assert dana.post(environments, {"name": "staging"}, format="json").status_code == 403
    for body in (
        {"name": "staging", "order": 10, "approvals_required": 1, "gates": ["accuracy >= 0.9"]},
        {
            "name": "production",
            "order": 20,
            "approvals_required": 2,
            "gates": ["accuracy >= 0.9", "accuracy >= serving - 0.01", "schema matches serving", "approved in staging"],
        },
    ):
        made = admin.post(environments, body, format="json")
        assert made.status_code == 201, made.content

    data = upload(dana, project="cancer", dataset="bc", name="bc.csv", content=cancer_csv).json()
    wait_for(lambda: DatasetProfile.objects.filter(version_id=data["id"], status="ready").exists(), timeout=120)
    launched = dana.post(
        reverse("api-run-training-create"),
        {"recipe": "logistic_regression", "target": "target", "seed": 3, "train": data["id"], "model_name": "bc"},
        format="json",
    )
    assert launched.status_code == 201, launched.content
    run = wait_for(
        lambda: Run.objects.filter(pk=launched.json()["id"], status__in=["succeeded", "failed"]).first(), timeout=240
    )
    assert run.status == "succeeded", run.status_reason
    version = ModelVersion.objects.get(run=run)

    requests = reverse("api-approval-request-list")
    early = dana.post(
        requests,
        {"model_version": version.pk, "environment": "production", "justification": "straight to prod"},
        format="json",
    )
    assert early.status_code == 400 and "approved for staging first" in str(early.json()["error"]["fields"])

    made = dana.post(
        requests, {"model_version": version.pk, "environment": "staging", "justification": "first model"}, format="json"
    )
    assert made.status_code == 201, made.content
    staging_request = made.json()
    assert [g["passed"] for g in staging_request["gate_results"]] == [True]
    decide = reverse("api-approval-request-decide", args=[staging_request["id"]])
    # Data scientists and finance do not decide (four-eyes for those who may is in test_approvals); finance can read
    # the evidence.
    assert dana.post(decide, {"verdict": "approve", "comment": "mine"}, format="json").status_code == 403
    assert fran.post(decide, {"verdict": "approve", "comment": "ok"}, format="json").status_code == 403
    assert fran.get(reverse("api-approval-request-detail", args=[staging_request["id"]])).status_code == 200
    assert alex.post(decide, {"verdict": "approve", "comment": "metrics hold"}, format="json").status_code == 200
    assert approved_or_rejected(staging_request["id"]).status == "approved"

    made = dana.post(
        requests,
        {"model_version": version.pk, "environment": "production", "justification": "staging went well"},
        format="json",
    )
    assert made.status_code == 201, made.content
    production_request = made.json()
    assert all(g["passed"] for g in production_request["gate_results"])
    decide = reverse("api-approval-request-decide", args=[production_request["id"]])
    assert alex.post(decide, {"verdict": "approve", "comment": "ok by me"}, format="json").status_code == 200
    detail = reverse("api-approval-request-detail", args=[production_request["id"]])
    # One of two approvals: still open, and nothing for the worker to do yet.
    assert alex.get(detail).json()["status"] == "open"
    assert blair.post(decide, {"verdict": "approve", "comment": "agreed"}, format="json").status_code == 200
    final = approved_or_rejected(production_request["id"])
    assert final.status == "approved" and final.decisions.count() == 2

    standing = dana.get(reverse("api-model-version-approvals", args=[version.pk])).json()
    rows = standing["results"] if isinstance(standing, dict) else standing
    assert sorted((row["environment"], row["status"]) for row in rows) == [
        ("production", "approved"),
        ("staging", "approved"),
    ]
    notes = dana.get(reverse("api-notification-list")).json()
    assert notes["unread"] == 2
    assert any("approved for production" in n["title"] for n in notes["results"])
    # The worker sent the emails (the console backend prints them to its log).
    wait_for(lambda: "approved for production" in celery_worker.log(), timeout=60, what="the email in the log")
