"""A drift report being computed shows its progress on the service's drift page, which follows it until it ends and
then draws itself again with the result."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.urls import reverse
from django.utils import timezone

from deployments.models import Service
from monitoring.models import DriftReport
from tests.deployments.conftest import make_model_version
from tests.fixtures.page_html import parse

pytestmark = pytest.mark.django_db


@pytest.fixture
def service(users: Any, project: Any, staging: Any) -> Service:
    version = make_model_version(project, users.data_scientist)
    return Service.objects.create(
        registered_model=version.registered_model,
        environment=staging,
        name="bc-staging",
        backend="local",
        created_by=users.admin,
    )


def report(service: Service, status: str, progress: float = 0.0) -> DriftReport:
    end = timezone.now() - timedelta(minutes=1)
    return DriftReport.objects.create(
        service=service, window_start=end - timedelta(minutes=15), window_end=end, status=status, progress=progress
    )


def poll(client: Any, service: Service) -> Any:
    return client.get(reverse("service-drift", args=[service.pk]), {"part": "running"}, HTTP_HX_REQUEST="true")


def test_a_report_under_way_shows_its_progress_and_is_followed_until_it_ends(client, users, service) -> None:
    running = report(service, "running", progress=0.4)
    waiting = report(service, "queued")
    client.force_login(users.approver)
    page = parse(client.get(reverse("service-drift", args=[service.pk])).content)
    section = page.find("section", data_testid="drift-running")
    assert section.attrs["hx-get"] == f"/services/{service.pk}/drift/?part=running"
    rows = {int(p.attrs["data-report"]): p for p in section.find_all("p")}
    assert rows[running.pk].find(data_testid="drift-progress").text() == "40%"
    assert "waiting for a worker" in rows[waiting.pk].text()

    DriftReport.objects.filter(pk=running.pk).update(progress=0.75)
    polled = poll(client, service)
    assert polled.status_code == 200 and "HX-Refresh" not in polled
    assert parse(polled.content).find(data_testid="drift-progress").text() == "75%"

    DriftReport.objects.filter(pk__in=[running.pk, waiting.pk]).update(status="succeeded", progress=1.0)
    assert poll(client, service)["HX-Refresh"] == "true"  # the page is drawn again, with the results
    page = parse(client.get(reverse("service-drift", args=[service.pk])).content)
    assert not page.has(data_testid="drift-running")


def test_with_nothing_under_way_the_page_does_not_poll(client, users, service) -> None:
    report(service, "succeeded", progress=1.0)
    client.force_login(users.approver)
    page = parse(client.get(reverse("service-drift", args=[service.pk])).content)
    assert not page.has(data_testid="drift-running")
