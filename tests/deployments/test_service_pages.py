"""The services list and a service's page: the list's filters (a bad one is named and lists nothing), and the
rollout poll, which redraws what serves along with the rollout's progress."""

from __future__ import annotations

from typing import Any

import pytest
from django.urls import reverse

from deployments.models import Deployment, Service
from tests.deployments.conftest import make_model_version
from tests.fixtures.page_html import Element, parse

pytestmark = pytest.mark.django_db


def make_service(version: Any, environment: Any, users: Any, name: str = "bc-staging") -> Service:
    return Service.objects.create(
        registered_model=version.registered_model,
        environment=environment,
        name=name,
        backend="local",
        created_by=users.admin,
    )


def deploy(service: Service, version: Any, status: str, users: Any, **fields: Any) -> Deployment:
    return Deployment.objects.create(
        service=service, model_version=version, status=status, reason="test", initiated_by=users.approver, **fields
    )


@pytest.fixture
def canary(project: Any, staging: Any, users: Any) -> dict[str, Any]:
    """A service serving v1 while v2 bakes as a canary on 20% of the traffic."""
    first = make_model_version(project, users.data_scientist)
    second = make_model_version(project, users.data_scientist)
    service = make_service(first, staging, users)
    current = deploy(service, first, "succeeded", users, revision="r-d1")
    Service.objects.filter(pk=service.pk).update(current_deployment=current)
    active = deploy(
        service, second, "baking", users, revision="r-d2", progress={"traffic_percent": 20, "phase": "bake"}
    )
    return {"service": service, "current": current, "active": active, "second": second}


def poll(client: Any, service: Service, showing: Deployment | None) -> Element:
    response = client.get(
        reverse("service-detail", args=[service.pk]),
        {"part": "rollout", "showing": showing.pk if showing else ""},
        HTTP_HX_REQUEST="true",
    )
    assert response.status_code == 200
    return parse(response.content)


def test_the_rollout_poll_redraws_the_serving_line_with_the_traffic_share(client, users, canary) -> None:
    client.force_login(users.approver)
    page = parse(client.get(reverse("service-detail", args=[canary["service"].pk])).content)
    serving = page.find("dd", data_testid="service-serving")
    assert "hx-swap-oob" not in serving.attrs
    assert "takes 20% of traffic" in serving.text()

    Deployment.objects.filter(pk=canary["active"].pk).update(progress={"traffic_percent": 50, "phase": "bake"})
    polled = poll(client, canary["service"], canary["active"])
    assert "50%" in polled.find(data_testid="traffic-share").text()
    # The serving line comes with the poll, to replace the page's own (same id, out of band).
    serving = polled.find("dd", id="service-serving")
    assert serving.attrs.get("hx-swap-oob") == "true"
    assert f"{canary['second']} takes 50% of traffic" in serving.text()
    assert f"deploy {canary['current'].pk}" in serving.text()


def test_with_nothing_rolling_out_the_poll_still_says_what_serves(client, users, canary) -> None:
    Deployment.objects.filter(pk=canary["active"].pk).update(status="failed")
    client.force_login(users.approver)
    polled = poll(client, canary["service"], None)
    serving = polled.find("dd", id="service-serving")
    assert f"deploy {canary['current'].pk}" in serving.text() and "of traffic" not in serving.text()
