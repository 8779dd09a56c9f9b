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
