"""Pages that follow long work refresh what the work changes, in Chromium: the service page's serving line along
with its rollout's progress, and an approval request's page until the deployment made on approval shows."""

from __future__ import annotations

from typing import Any

import pytest

from deployments.models import Deployment, Service
from tests.deployments.conftest import make_model_version

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def project(users: Any) -> Any:
    from controlplane import services as controlplane_services

    return controlplane_services.project_create(actor=users.admin, name="Breast cancer", slug="bc")


@pytest.fixture
def staging(users: Any) -> Any:
    from deployments import services

    return services.environment_create(
        actor=users.admin, data={"name": "staging", "order": 10, "approvals_required": 1, "gates": []}
    )


def test_the_serving_line_follows_the_canarys_traffic_share(page, sign_in, users, project, staging) -> None:
    first = make_model_version(project, users.data_scientist)
    second = make_model_version(project, users.data_scientist)
    service = Service.objects.create(
        registered_model=first.registered_model,
        environment=staging,
        name="bc-staging",
        backend="local",
        created_by=users.admin,
    )
    current = Deployment.objects.create(
        service=service, model_version=first, status="succeeded", revision="r-d1", initiated_by=users.approver
    )
    Service.objects.filter(pk=service.pk).update(current_deployment=current)
    canary = Deployment.objects.create(
        service=service,
        model_version=second,
        status="baking",
        revision="r-d2",
        initiated_by=users.approver,
        progress={"traffic_percent": 20, "phase": "bake"},
    )
    sign_in(users.approver)
    page.goto(f"/services/{service.pk}/")
    serving = page.get_by_test_id("service-serving")
    assert "takes 20% of traffic" in serving.inner_text()
    # The worker moves the canary on: the next poll redraws the progress panel and the serving line alike.
    Deployment.objects.filter(pk=canary.pk).update(progress={"traffic_percent": 60, "phase": "bake"})
    page.locator('[data-testid="traffic-share"]', has_text="60%").wait_for()
    page.locator('[data-testid="serving-rollout"]', has_text="takes 60% of traffic").wait_for()
    assert f"deploy {current.pk}" in serving.inner_text()


def test_an_approval_page_follows_the_deployment_made_on_approval(
    page, sign_in, users, project, staging, monkeypatch
) -> None:
    from django.utils import timezone

    from deployments import services, tasks
    from deployments.models import ApprovalRequest

    # The test plays the worker's part below (the deployment, then the announcement mark): a session worker left
    # running by an earlier test must not take the announcement first.
    announced: list[int] = []
    monkeypatch.setattr(tasks.approval_announce_task, "delay", lambda request_id: announced.append(request_id))

    services.environment_update(actor=users.admin, environment_id=staging.pk, data={"deploy_on_approval": True})
    version = make_model_version(project, users.data_scientist)
    request = services.approval_request_create(
        actor=users.data_scientist, model_version_id=version.pk, environment="staging", justification="go"
    )
    services.approval_decide(actor=users.approver, request_id=request.pk, verdict="approve", comment="fine")
    services.approval_finish(request_id=request.pk)
    assert announced == [request.pk]
    sign_in(users.approver)
    page.goto(f"/approvals/{request.pk}/")
    page.locator('#approval-status[data-status="approved"]').wait_for()
    assert "waiting for a worker to start the deployment" in page.get_by_test_id("deployment-waiting").inner_text()
    # What the worker's announcement does (deploy_on_approval), without a worker: the deployment, then the mark.
    service = Service.objects.create(
        registered_model=version.registered_model,
        environment=staging,
        name="bc-staging",
        backend="local",
        created_by=users.admin,
    )
    deployment = Deployment.objects.create(
        service=service,
        model_version=version,
        status="baking",
        approval_request=request,
        reason=f"deployed on approval (request {request.pk})",
        progress={"traffic_percent": 100},
    )
    ApprovalRequest.objects.filter(pk=request.pk).update(announced_at=timezone.now())
    shown = page.locator('[data-testid="approval-deployment"][data-status="baking"]')
    shown.wait_for()
    assert f"Deploy {deployment.pk} of {version}" in shown.inner_text()
    assert page.get_by_test_id("deployment-waiting").count() == 0
    Deployment.objects.filter(pk=deployment.pk).update(status="succeeded")
    ended = page.locator('[data-testid="approval-deployment"][data-status="succeeded"]')
    ended.wait_for()
    page.locator("#approval-status:not([hx-trigger])").wait_for()  # it ended: the page stops polling
    with page.expect_navigation():
        ended.get_by_role("link", name="bc-staging").click()
    assert page.url.endswith(f"/services/{service.pk}/")


def test_the_drift_page_follows_a_report_under_way_and_redraws_when_it_ends(
    page, sign_in, users, project, staging
) -> None:
    from datetime import timedelta

    from django.utils import timezone

    from monitoring.models import DriftReport

    version = make_model_version(project, users.data_scientist)
    service = Service.objects.create(
        registered_model=version.registered_model,
        environment=staging,
        name="bc-staging",
        backend="local",
        created_by=users.admin,
    )
    end = timezone.now() - timedelta(minutes=1)
    report = DriftReport.objects.create(
        service=service, window_start=end - timedelta(minutes=15), window_end=end, status="running", progress=0.2
    )
    sign_in(users.approver)
    page.goto(f"/services/{service.pk}/drift/")
    assert page.get_by_test_id("drift-progress").inner_text() == "20%"
    DriftReport.objects.filter(pk=report.pk).update(progress=0.7)
    page.locator('[data-testid="drift-progress"]', has_text="70%").wait_for()
    DriftReport.objects.filter(pk=report.pk).update(status="failed", status_reason="no capture files", progress=1.0)
    # It ended: the page is drawn again, the report in its list with how it ended.
    page.locator(f'tr[data-report="{report.pk}"]', has_text="no capture files").wait_for()
    assert page.get_by_test_id("drift-running").count() == 0
