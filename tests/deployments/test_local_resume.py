"""Local services across a stop of the app: `local_services_stop` ends them (their addresses refuse connections),
`local_services_resume` brings back each one's current deployment on the same address, and a deployment that was
baking when they stopped ends clearly (rolled back, "the service was stopped") instead of staying stuck."""

from __future__ import annotations

import http.client
import io
import json
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.conf import settings
from django.core.management import call_command

from controlplane import services as controlplane_services
from deployments import services
from deployments.models import Deployment, Environment, Service
from tests.deployments.test_deploys import approve
from tests.deployments.test_local_flow import finished, package, register
from tests.fixtures.models import Trained
from tests.fixtures.processes import wait_for
from workers.local_state import process_alive, read_json

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def invoke(address: str, body: bytes) -> tuple[int, str]:
    where = urlsplit(address)
    connection = http.client.HTTPConnection(where.hostname, where.port, timeout=30)
    try:
        connection.request("POST", "/invocations", body, {"content-type": "application/json", "connection": "close"})
        answer = connection.getresponse()
        answer.read()
        return answer.status, answer.getheader("x-revision", "")
    finally:
        connection.close()


def live_pids(name: str) -> list[int]:
    """The service's router and serving processes that run now, as its files record them."""
    directory = Path(settings.SERVICES_WORK_DIR) / name
    recorded = [read_json(directory / "service.json").get("router") or {}]
    for path in directory.glob("revisions/*/revision.json"):
        recorded += read_json(path)["processes"]
    return sorted(p["pid"] for p in recorded if p.get("pid") and process_alive(p))


def test_stopped_services_come_back_on_their_addresses_and_a_baking_deployment_ends_rolled_back(
    celery_worker: Any, users: Any, logistic: Trained, stop_local_services: Any
) -> None:
    project = controlplane_services.project_create(actor=users.admin, name="Cancer", slug="cancer")
    staging = services.environment_create(
        actor=users.admin,
        data={"name": "staging", "approvals_required": 1, "strategy": "all_at_once", "bake_minutes": 0},
    )
    first_version = register(project, users.data_scientist, logistic, package(logistic, None, note="v1"))
    second_version = register(project, users.data_scientist, logistic, package(logistic, None, note="v2"))
    for version in (first_version, second_version):
        assert approve(version, staging, users).status == "approved"
    first = services.deployment_create(actor=users.approver, model_version_id=first_version.pk, environment="staging")
    first = finished(first.pk)
    assert first.status == "succeeded", first.status_reason
    service = Service.objects.get(pk=first.service_id)
    address = service.address
    body = json.dumps({"instances": logistic.rows.head(3).to_numpy().tolist()}).encode()
    assert invoke(address, body) == (200, f"d{first.pk}")

    assert services.local_services_stop() == [f"stopped {service.name} (port {urlsplit(address).port})"]
    with pytest.raises(ConnectionRefusedError):
        invoke(address, body)
    assert live_pids(service.name) == []

    assert services.local_services_resume() == [
        f"resumed {service.name} at {address} (r-d{first.pk}, deployment {first.pk})"
    ]
    assert invoke(address, body) == (200, f"d{first.pk}")
    pids = live_pids(service.name)
    assert len(pids) == 2  # the router and one serving process
    assert services.local_services_resume() == [
        f"resumed {service.name} at {address} (r-d{first.pk}, deployment {first.pk})"
    ]
    assert live_pids(service.name) == pids

    # A deployment baking when the services stop: its next poll ends it, rolled back, and the system's rollback
    # puts back what served; the resume after it serves that, on the same address.
    Environment.objects.filter(pk=staging.pk).update(bake_minutes=30)
    second = services.deployment_create(actor=users.approver, model_version_id=second_version.pk, environment="staging")
    wait_for(
        lambda: Deployment.objects.filter(pk=second.pk, status="baking").exists(),
        timeout=120,
        what="the second deployment to bake",
    )
    assert services.local_services_stop() == [f"stopped {service.name} (port {urlsplit(address).port})"]
    second = finished(second.pk)
    assert second.status == "rolled_back" and second.status_reason == "rolled back: the service was stopped", (
        second.status,
        second.status_reason,
    )
    rollback = finished(Deployment.objects.get(kind="rollback", rollback_of=second).pk)
    assert rollback.status == "succeeded", rollback.status_reason
    service.refresh_from_db()
    assert service.current_deployment_id == rollback.pk
    assert services.local_services_resume() == [
        f"resumed {service.name} at {address} (r-d{first.pk}, deployment {rollback.pk})"
    ]
    assert invoke(address, body) == (200, f"d{first.pk}")
    # The same from the command line, one line per service.
    out = io.StringIO()
    call_command("services", "stop", stdout=out)
    assert out.getvalue() == f"services: stopped {service.name} (port {urlsplit(address).port})\n"
    call_command("services", "resume", stdout=out)
    assert out.getvalue().splitlines()[-1] == (
        f"services: resumed {service.name} at {address} (r-d{first.pk}, deployment {rollback.pk})"
    )
    assert invoke(address, body) == (200, f"d{first.pk}")
