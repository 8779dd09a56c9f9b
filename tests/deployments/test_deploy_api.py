"""The services and deployments API: the answers a client gets, refusals with field errors, and what changes."""

from __future__ import annotations

from django.urls import reverse

from controlplane.models import AuditEvent
from deployments import services
from deployments.models import Deployment, Service
from tests.deployments.conftest import make_model_version
from tests.deployments.test_deploys import approve


def test_deploy_list_read_and_refusals(api_client_for, users, project, staging, version) -> None:
    alex, dana = api_client_for(users.approver), api_client_for(users.data_scientist)
    url = reverse("api-deployment-list")
    refused = alex.post(url, {"model_version": version.pk, "environment": "staging"}, format="json")
    assert refused.status_code == 400
    assert refused.json()["error"]["fields"] == {
        "model_version": [f"{version} is not approved for staging (it has no request)"]
    }
    approve(version, staging, users)
    assert dana.post(url, {"model_version": version.pk, "environment": "staging"}, format="json").status_code == 403
    made = alex.post(url, {"model_version": version.pk, "environment": "staging", "reason": "first"}, format="json")
    assert made.status_code == 202, made.content
    body = made.json()
    assert body["status"] == "pending" and body["kind"] == "deploy" and body["service"] == "bc-classifier-staging"
    assert body["events"][0]["to_status"] == "pending" and body["initiated_by"] == users.approver.username
    again = alex.post(url, {"model_version": version.pk, "environment": "staging"}, format="json")
    assert again.status_code == 409 and "is active on bc-classifier-staging" in str(again.json()["error"]["fields"])
    listed = alex.get(url, {"service": body["service_id"]}).json()
    assert [d["id"] for d in listed["results"]] == [body["id"]]
    assert alex.get(url, {"status": "sideways"}).status_code == 400
    assert alex.get(url, {"service": 987654}).json()["error"]["fields"] == {"service": ["there is no service 987654"]}
    detail = alex.get(reverse("api-deployment-detail", args=[body["id"]])).json()
    assert detail["model_version"] == version.pk and detail["strategy"] == "all_at_once"
    assert alex.get(reverse("api-deployment-detail", args=[987654])).status_code == 404
    service = alex.get(reverse("api-service-detail", args=[body["service_id"]])).json()
    assert service["active_deployment"] == body["id"] and service["current_deployment"] is None
    services_listed = alex.get(reverse("api-service-list"), {"environment": "staging"}).json()
    assert [s["name"] for s in services_listed["results"]] == ["bc-classifier-staging"]
    assert alex.get(reverse("api-service-list"), {"environment": "moon"}).status_code == 400


def test_rollback_and_scale_refusals_name_the_field(api_client_for, users, project, staging, version) -> None:
    alex = api_client_for(users.approver)
    approve(version, staging, users)
    first = services.deployment_create(actor=users.approver, model_version_id=version.pk, environment="staging")
    rollback = reverse("api-service-rollback", args=[first.service_id])
    answer = alex.post(rollback, {"reason": ""}, format="json")
    assert answer.status_code == 400 and list(answer.json()["error"]["fields"]) == ["reason"]
    answer = alex.post(rollback, {"reason": "looks wrong"}, format="json")
    assert answer.status_code == 400
    assert "no earlier good revision" in answer.json()["error"]["fields"]["service"][0]
    assert api_client_for(users.finance).post(rollback, {"reason": "looks wrong"}, format="json").status_code == 403
    scale = reverse("api-service-scale", args=[first.service_id])
    answer = alex.post(scale, {"desired_count": 9}, format="json")
    assert answer.status_code == 400
    assert answer.json()["error"]["fields"] == {
        "desired_count": ["expected a whole number from 1 to 4 (staging's limits), got 9"]
    }
    answer = alex.post(scale, {"desired_count": 2}, format="json")
    assert answer.status_code == 202 and answer.json()["desired_count"] == 2
    assert AuditEvent.objects.filter(action="service.scale").count() == 1
    assert Deployment.objects.count() == 1 and Service.objects.get().desired_count == 2


def test_an_environment_that_deploys_on_approval_does(users, project, staging, monkeypatch) -> None:
    services.environment_update(actor=users.admin, environment_id=staging.pk, data={"deploy_on_approval": True})
    version = make_model_version(project, users.data_scientist)
    request = approve(version, staging, users)
    services.approval_announce(request_id=request.pk)
    deployment = Deployment.objects.get()
    assert deployment.approval_request_id == request.pk and deployment.initiated_by is None
    assert deployment.reason == f"deployed on approval (request {request.pk})"
    services.approval_announce(request_id=request.pk)  # sent again: nothing more
    services.deploy_on_approval(request=request)
    assert Deployment.objects.count() == 1
