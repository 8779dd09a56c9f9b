"""The home page's live parts in Chromium: a data scientist's run changes status on the page without a reload, and
an approver's deployment in progress leaves the list when it ends; then the polling stops."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from controlplane import services as controlplane_services
from deployments.models import Deployment, Service
from deployments.services import environment_create
from lineage.models import Run
from tests.deployments.conftest import make_model_version

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def project(users: Any) -> Any:
    return controlplane_services.project_create(actor=users.admin, name="Breast cancer", slug="bc")


def test_a_running_runs_status_changes_on_the_home_page_by_itself(page, sign_in, users, project) -> None:
    run = Run.objects.create(
        project=project,
        kind="training",
        recipe="logistic_regression",
        recipe_version="2",
        recipe_fingerprint=hashlib.sha256(b"recipe").hexdigest(),
        created_by=users.data_scientist,
        status="running",
    )
    sign_in(users.data_scientist)
    row = page.locator(f'[data-testid=my-run][data-run="{run.pk}"]')
    assert row.get_attribute("data-status") == "running"
    Run.objects.filter(pk=run.pk).update(status="succeeded")
    page.locator(f'[data-testid=my-run][data-run="{run.pk}"][data-status="succeeded"]').wait_for()
    section = page.get_by_test_id("my-runs")
    assert section.get_attribute("data-active") == "false" and section.get_attribute("hx-trigger") is None
    assert page.title().startswith("Home")


def test_a_finished_deployment_leaves_the_approvers_home_page_by_itself(page, sign_in, users, project) -> None:
    staging = environment_create(actor=users.admin, data={"name": "staging", "order": 10})
    version = make_model_version(project, users.data_scientist)
    service = Service.objects.create(
        registered_model=version.registered_model,
        environment=staging,
        name="bc-staging",
        backend="local",
        created_by=users.admin,
    )
    active = Deployment.objects.create(
        service=service, model_version=version, status="in_progress", reason="first", initiated_by=users.approver
    )
    sign_in(users.approver)
    assert page.locator(f'[data-testid=deployment-in-progress][data-deployment="{active.pk}"]').count() == 1
    Deployment.objects.filter(pk=active.pk).update(status="succeeded")
    page.locator('[data-testid=deployments-in-progress][data-active="false"]').wait_for()
    assert page.get_by_test_id("deployment-in-progress").count() == 0
    assert "No deployment is under way." in page.get_by_test_id("deployments-in-progress").inner_text()
