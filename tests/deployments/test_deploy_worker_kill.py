"""A worker SIGKILLed mid-deployment leaves a state the next sweep resumes from: the start is taken over once the
dead worker's lease has expired, the backend's deploy is idempotent (no second set of processes), and the poll chain
runs to the end. Killed for real: a worker process running the deployment's start dies at the worst moment, right
after the backend started the revision and before the database heard of it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone

from controlplane import services as controlplane_services
from controlplane.transitions import TAKEOVER_REASON
from deployments import services, tasks
from deployments.models import Deployment, DeploymentEvent
from tests.deployments.test_deploys import approve
from tests.deployments.test_local_flow import finished, package, register
from tests.fixtures.models import Trained
from tests.fixtures.processes import ROOT, database_url

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

# A worker process that runs the deployment's start and is SIGKILLed the moment the backend returns.
DIES_AFTER_DEPLOY = """
import os, signal, sys
import django
django.setup()
from workers.deploy import local
real = local.LocalServingBackend.deploy
def deploy_then_die(self, service, revision):
    real(self, service, revision)
    os.kill(os.getpid(), signal.SIGKILL)
local.LocalServingBackend.deploy = deploy_then_die
from deployments import services
services.deployment_start(deployment_id=int(sys.argv[1]))
"""


def test_a_worker_killed_mid_start_is_taken_over_and_the_deployment_finishes(
    celery_worker: Any, users: Any, logistic: Trained, stop_local_services: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = controlplane_services.project_create(actor=users.admin, name="Cancer", slug="cancer")
    staging = services.environment_create(
        actor=users.admin, data={"name": "staging", "approvals_required": 1, "bake_minutes": 0.05}
    )
    version = register(project, users.data_scientist, logistic, package(logistic, None, note="v1"))
    approve(version, staging, users)
    # Only the doomed worker below gets this deployment's start message.
    with monkeypatch.context() as patched:
        patched.setattr(tasks.deployment_start_task, "delay", lambda *args, **kwargs: None)
        deployment = services.deployment_create(
            actor=users.approver, model_version_id=version.pk, environment="staging"
        )
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="controlplane.settings.test",
        DATABASE_URL=database_url(connection.settings_dict),
        CELERY_BROKER_URL=settings.CELERY_BROKER_URL,
        PYTHONPATH=str(ROOT),
    )
    doomed = subprocess.run(
        [sys.executable, "-c", DIES_AFTER_DEPLOY, str(deployment.pk)], cwd=ROOT, env=env, timeout=180, check=False
    )
    assert doomed.returncode == -signal.SIGKILL, doomed
    left = Deployment.objects.get(pk=deployment.pk)
    # What the dead worker left: the deployment claimed, its revision started, but no handle recorded.
    assert left.status == "in_progress" and left.backend_handle == {} and left.attempt == 1
    revision_file = (
        Path(settings.SERVICES_WORK_DIR) / left.service.name / "revisions" / f"r-d{left.pk}" / "revision.json"
    )
    started = json.loads(revision_file.read_text())["processes"]
    assert len(started) == 1

    # Its lease runs out (as time would have it), then the beat sweep sends the start again; the real worker takes it.
    Deployment.objects.filter(pk=left.pk).update(claimed_at=timezone.now() - timedelta(seconds=120))
    assert services.deployments_resume() >= 1
    done = finished(left.pk)
    assert done.status == "succeeded", done.status_reason
    assert done.attempt == 2 and done.revision == f"r-d{left.pk}"
    assert DeploymentEvent.objects.filter(deployment=done, reason=TAKEOVER_REASON).exists()
    # The takeover found the revision the dead worker started instead of starting a second one.
    processes = json.loads(revision_file.read_text())["processes"]
    assert [p["pid"] for p in processes] == [p["pid"] for p in started]


def test_a_poll_chain_lost_with_its_worker_is_restarted_by_the_sweep(
    celery_worker: Any, users: Any, logistic: Trained, stop_local_services: Any
) -> None:
    project = controlplane_services.project_create(actor=users.admin, name="Cancer", slug="cancer")
    # A bake of 6 s: the chain is broken well before it ends, and the restarted chain sees it out.
    staging = services.environment_create(
        actor=users.admin, data={"name": "staging", "approvals_required": 1, "bake_minutes": 0.1}
    )
    version = register(project, users.data_scientist, logistic, package(logistic, None, note="v1"))
    approve(version, staging, users)
    deployment = services.deployment_create(actor=users.approver, model_version_id=version.pk, environment="staging")
    from tests.fixtures.processes import wait_for

    wait_for(lambda: Deployment.objects.filter(pk=deployment.pk, status="baking").exists(), timeout=120, what="baking")
    # The worker holding the chain's next message dies with it: the chain's ticket no longer matches anything,
    # so every message of the old chain is refused, and nothing has polled for a while.
    Deployment.objects.filter(pk=deployment.pk).update(
        poll_generation=999, last_polled_at=timezone.now() - timedelta(minutes=5)
    )
    assert services.deployments_resume() >= 1
    done = finished(deployment.pk)
    assert done.status == "succeeded", done.status_reason
    assert done.poll_generation == 1000
