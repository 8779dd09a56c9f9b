"""A web request enqueues, a real worker process executes; acks_late brings back work a dead worker lost."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.urls import reverse

from controlplane.models import Heartbeat, SystemCheck
from tests.fixtures.processes import wait_for

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def test_system_check_requested_over_the_api_is_run_by_the_worker(celery_worker, users, api_client_for):
    response = api_client_for(users.admin).post(reverse("api-system-check-create"))
    assert response.status_code == 202, response.content
    check_id = response.json()["id"]
    assert response.json()["status"] == "queued"

    check = wait_for(
        lambda: SystemCheck.objects.filter(pk=check_id, status__in=["passed", "failed"]).first(),
        what="the worker to finish the system check",
    )
    assert check.status == "passed", check.results
    assert check.worker and check.worker in celery_worker.name
    assert {r["name"] for r in check.results} == {"database", "object store"}
    assert Heartbeat.objects.filter(name=f"worker:{check.worker}").exists()


def test_system_check_from_the_status_page(celery_worker, users, client):
    client.force_login(users.admin)
    response = client.post(reverse("system-check-create"))
    assert response.status_code == 302
    check = SystemCheck.objects.get()
    wait_for(lambda: SystemCheck.objects.get(pk=check.pk).done, what="the system check")
    page = client.get(response["Location"])
    assert b'data-status="passed"' in page.content
    # A finished check stops polling.
    assert b"hx-trigger" not in page.content


def test_only_admins_may_run_a_system_check(users, api_client_for):
    for user in (users.data_scientist, users.approver, users.finance, users.outsider):
        assert api_client_for(user).post(reverse("api-system-check-create")).status_code == 403
    assert not SystemCheck.objects.exists()


def test_acks_late_task_is_redelivered_when_its_worker_process_dies(celery_worker, tmp_path: Path):
    from tests.worker_tasks import crash_once

    crash_once.delay(str(tmp_path))
    wait_for(lambda: (tmp_path / "done").exists(), timeout=90, what="the task to run again after its process died")
    pids = (tmp_path / "attempts").read_text().split()
    assert len(pids) == 2 and pids[0] != pids[1]
