"""Loaded only by the worker a kill test means to SIGKILL (`--include tests.deployments.worker_hold`): it stops that
worker at a chosen moment of a chosen deployment, so the kill lands there and not somewhere by chance.

The test writes `$CP_TEST_HOLD_DIR/hold.json`, {"model_version": <id>, "at": "start" | "in_progress" | "baking"}:
- "start": inside deployment_start, right after the backend started the revision and before the database heard of
  it (the lease is still being renewed by deployment_start's own thread, as it is during any slow start);
- "in_progress" / "baking": inside a poll of the deployment in that state, its tick taken, before it acts.
There the worker writes `held.json` (its pid, the task's id and the deployment) and waits to be killed. Nothing else
changes: every other task runs as in any worker.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from celery import current_task
from celery.signals import worker_process_init


def _wanted(at: str, deployment_id: int) -> bool:
    folder = os.environ.get("CP_TEST_HOLD_DIR")
    if not folder or not (Path(folder) / "hold.json").is_file():
        return False
    hold = json.loads((Path(folder) / "hold.json").read_text())
    if hold.get("at") != at:
        return False
    from deployments.models import Deployment

    return Deployment.objects.filter(pk=deployment_id, model_version_id=hold["model_version"]).exists()


def _hold(at: str, deployment_id: int) -> None:
    folder = Path(os.environ["CP_TEST_HOLD_DIR"])
    request = current_task.request if current_task else None
    held = {"pid": os.getpid(), "task_id": getattr(request, "id", ""), "deployment": deployment_id, "at": at}
    (folder / "held.json.tmp").write_text(json.dumps(held))
    os.replace(folder / "held.json.tmp", folder / "held.json")
    while True:  # until the test SIGKILLs this worker
        time.sleep(1)


@worker_process_init.connect
def _install(**_: Any) -> None:
    from deployments.services import deploys
    from workers.deploy import local

    real_deploy = local.LocalServingBackend.deploy
    real_follow = deploys._follow

    def deploy(self: Any, service: Any, revision: Any) -> Any:
        handle = real_deploy(self, service, revision)
        deployment_id = int(revision.deployment_id.removeprefix("d"))
        if _wanted("start", deployment_id):
            _hold("start", deployment_id)
        return handle

    def follow(deployment: Any, status: Any, backend: Any, spec: Any, handle: Any) -> Any:
        if deployment.status in ("in_progress", "baking") and _wanted(deployment.status, deployment.pk):
            _hold(deployment.status, deployment.pk)
        return real_follow(deployment, status, backend, spec, handle)

    local.LocalServingBackend.deploy = deploy  # type: ignore[method-assign]
    deploys._follow = follow
