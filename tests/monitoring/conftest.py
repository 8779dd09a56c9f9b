"""A service with a current deployment (no serving process), for monitoring's tests and whoever builds on them."""

from __future__ import annotations

from typing import Any

import pytest
from django.utils import timezone

from deployments import services, tasks
from deployments.models import Deployment, Service
from tests.deployments import conftest as deployment_fixtures
from tests.deployments.conftest import make_model_version
from tests.deployments.test_deploys import approve

# The deployments tests' fixtures, here too: a project, a staging environment, a model version in the project.
project = deployment_fixtures.project
staging = deployment_fixtures.staging
version = deployment_fixtures.version
stop_local_services = deployment_fixtures.stop_local_services
__all__ = ["make_model_version", "make_served"]


def make_served(version: Any, environment: Any, users: Any, monkeypatch: pytest.MonkeyPatch) -> Service:
    """`version` deployed to `environment` as far as the database knows: its service, and a succeeded deployment
    (backend revision `r-d<id>`, as the local backend names it) as the service's current one. Nothing is enqueued
    and nothing runs."""
    monkeypatch.setattr(tasks.deployment_start_task, "delay", lambda *a, **k: None)
    approve(version, environment, users)
    deployment = services.deployment_create(
        actor=users.approver, model_version_id=version.pk, environment=environment.name
    )
    now = timezone.now()
    Deployment.objects.filter(pk=deployment.pk).update(
        status=Deployment.Status.SUCCEEDED,
        revision=f"r-d{deployment.pk}",
        started_at=now,
        baking_at=now,
        finished_at=now,
    )
    Service.objects.filter(pk=deployment.service_id).update(current_deployment=deployment.pk)
    return Service.objects.get(pk=deployment.service_id)


@pytest.fixture
def served(version: Any, staging: Any, users: Any, monkeypatch: pytest.MonkeyPatch) -> Service:
    """A service on the local backend whose current deployment succeeded (backend revision `r-d<id>`, metric rows
    labelled `d<id>`)."""
    return make_served(version, staging, users, monkeypatch)
