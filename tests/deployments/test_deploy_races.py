"""Deployments and rollbacks raced for real: each contender in its own thread with its own database connection
(PostgreSQL in CI's first pass). One consistent outcome, one audit trail."""

from __future__ import annotations

from typing import Any

import pytest

from controlplane.models import AuditEvent
from deployments import services
from deployments.models import Deployment, Service
from tests.deployments.conftest import make_model_version
from tests.deployments.test_deploys import approve
from tests.fixtures.races import race

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def no_worker_takes_them(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests race the portal's side alone: a session worker (from an earlier test) must not start the
    deployments their commits enqueue, or move them on while the test moves them by hand."""
    from deployments import tasks

    monkeypatch.setattr(tasks.deployment_start_task, "delay", lambda *args, **kwargs: None)
    monkeypatch.setattr(tasks.deployment_poll_task, "apply_async", lambda *args, **kwargs: None)


def test_two_first_deploys_of_one_service_at_once_make_one_service_and_one_deployment(users, project, staging) -> None:
    one, two = make_model_version(project, users.data_scientist), make_model_version(project, users.data_scientist)
    approve(one, staging, users)
    approve(two, staging, users)
    outcomes = race(
        lambda: services.deployment_create(actor=users.approver, model_version_id=one.pk, environment="staging"),
        lambda: services.deployment_create(actor=users.approver2, model_version_id=two.pk, environment="staging"),
    )
    errors = [o.error for o in outcomes if o.error is not None]
    assert len(errors) == 1 and isinstance(errors[0], services.Conflict), errors
    assert "is active on bc-classifier-staging" in errors[0].messages[0]
    assert Service.objects.count() == 1 and Deployment.objects.count() == 1
    assert AuditEvent.objects.filter(action="service.create").count() == 1
    assert AuditEvent.objects.filter(action="deployment.deploy").count() == 1


def serving_one_rolling_out_another(users: Any, project: Any, staging: Any) -> tuple[Any, Any, Any, Any]:
    """A service whose first deployment succeeded (as its poll would record it) and a second one replacing it:
    (first version, second version, first deployment, second deployment)."""
    one, two = make_model_version(project, users.data_scientist), make_model_version(project, users.data_scientist)
    approve(one, staging, users)
    approve(two, staging, users)
    first = services.deployment_create(actor=users.approver, model_version_id=one.pk, environment="staging")
    services.DEPLOYMENT_MACHINE.apply(first.pk, "start")
    services.DEPLOYMENT_MACHINE.apply(first.pk, "bake")
    Deployment.objects.filter(pk=first.pk).update(revision=f"d{first.pk}")
    services.deploys._succeed(first.pk, attempt=None, reason="baked")
    second = services.deployment_create(actor=users.approver, model_version_id=two.pk, environment="staging")
    assert second.replaces_id == first.pk
    return one, two, first, second


def test_two_rollbacks_of_one_rollout_at_once_make_one_rollback(users, project, staging) -> None:
    one, _, first, second = serving_one_rolling_out_another(users, project, staging)
    outcomes = race(
        lambda: services.deployment_rollback(actor=users.approver, service_id=second.service_id, reason="too slow"),
        lambda: services.deployment_rollback(actor=users.approver2, service_id=second.service_id, reason="errors"),
    )
    errors = [o.error for o in outcomes if o.error is not None]
    assert len(errors) == 1 and isinstance(errors[0], services.Conflict), errors
    second.refresh_from_db()
    assert second.status == "rolled_back"
    rollbacks = list(Deployment.objects.filter(kind="rollback"))
    assert len(rollbacks) == 1 and rollbacks[0].rollback_of_id == second.pk and rollbacks[0].model_version_id == one.pk
    assert rollbacks[0].revision == f"d{first.pk}"
    assert AuditEvent.objects.filter(action="deployment.roll_back", object_id=str(second.pk)).count() == 1


def test_two_sweeps_at_once_restart_a_quiet_rollout_once(users, project, staging, settings) -> None:
    """A baking deployment whose poll chain went quiet (its worker died): two beat sweeps at the same moment write
    one resume event and start one new chain."""
    from datetime import timedelta

    from django.utils import timezone

    from deployments.models import DeploymentEvent

    version = make_model_version(project, users.data_scientist)
    approve(version, staging, users)
    deployment = services.deployment_create(actor=users.approver, model_version_id=version.pk, environment="staging")
    services.DEPLOYMENT_MACHINE.apply(deployment.pk, "start")
    services.DEPLOYMENT_MACHINE.apply(deployment.pk, "bake")
    quiet = timezone.now() - timedelta(minutes=10)
    Deployment.objects.filter(pk=deployment.pk).update(backend_handle={"revision": "r"}, last_polled_at=quiet)
    generation = Deployment.objects.get(pk=deployment.pk).poll_generation
    outcomes = race(services.deployments_resume, services.deployments_resume)
    assert [o.error for o in outcomes] == [None, None], outcomes
    assert sorted(o.value for o in outcomes) == [0, 1]
    assert DeploymentEvent.objects.filter(deployment_id=deployment.pk, action="resume").count() == 1
    assert Deployment.objects.get(pk=deployment.pk).poll_generation == generation + 1
