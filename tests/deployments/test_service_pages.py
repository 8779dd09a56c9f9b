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


# --- the list and its filters --------------------------------------------------------------------------------


@pytest.fixture
def listed(project: Any, staging: Any, production: Any, users: Any) -> dict[str, Service]:
    from controlplane import services as controlplane_services

    iris = controlplane_services.project_create(actor=users.admin, name="Iris", slug="iris")
    bc = make_model_version(project, users.data_scientist, model="bc-classifier")
    flowers = make_model_version(iris, users.data_scientist, model="iris-tree")
    return {
        "bc-staging": make_service(bc, staging, users, "bc-classifier-staging"),
        "bc-production": make_service(bc, production, users, "bc-classifier-production"),
        "iris-staging": make_service(flowers, staging, users, "iris-tree-staging"),
    }


def listed_names(response: Any) -> list[str]:
    return [row.attrs["data-service"] for row in parse(response.content).find_all("tr") if "data-service" in row.attrs]


@pytest.mark.parametrize("path", ["/services/", "/monitoring/"])
def test_services_filter_by_project_environment_model_and_name(client, users, listed, path: str) -> None:
    client.force_login(users.approver)
    assert len(listed_names(client.get(path))) == 3
    for params, expected in (
        ({"project": "iris"}, {"iris-tree-staging"}),
        ({"environment": "staging"}, {"bc-classifier-staging", "iris-tree-staging"}),
        ({"model": "bc-classifier", "environment": "production"}, {"bc-classifier-production"}),
        ({"q": "TREE"}, {"iris-tree-staging"}),
    ):
        response = client.get(path, params)
        assert response.status_code == 200 and set(listed_names(response)) == expected, params
    # The page links keep the filters.
    assert parse(client.get(path, {"environment": "staging"}).content).find(data_testid="page-range")


@pytest.mark.parametrize("path", ["/services/", "/monitoring/"])
@pytest.mark.parametrize(
    ("params", "field", "words"),
    [
        ({"project": "nope"}, "project", "there is no project 'nope'"),
        ({"environment": "moon"}, "environment", "there is no environment 'moon' (environments: staging, production)"),
        ({"q": "x" * 101}, "q", "Ensure this value has at most 100 characters"),
    ],
)
def test_a_bad_service_filter_is_named_and_lists_nothing(client, users, listed, path, params, field, words) -> None:
    client.force_login(users.approver)
    response = client.get(path, {**params, "environment": params.get("environment", "staging")})
    assert response.status_code == 400
    page = parse(response.content)
    assert words in page.find("span", data_field=field).text().replace("&#x27;", "'")
    assert listed_names(response) == []
    assert "listed until the filters marked above are fixed" in page.text()


def test_the_services_api_filters_as_the_page_does(api_client_for, users, listed) -> None:
    api = api_client_for(users.approver)
    body = api.get(reverse("api-service-list"), {"environment": "staging", "model": "iris-tree"}).json()
    assert [s["name"] for s in body["results"]] == ["iris-tree-staging"]
    assert api.get(reverse("api-service-list"), {"q": "classifier"}).json()["count"] == 2
    refused = api.get(reverse("api-service-list"), {"environment": "moon", "project": "nope"})
    assert refused.status_code == 400
    assert refused.json()["error"]["fields"] == {
        "environment": ["there is no environment 'moon' (environments: staging, production)"],
        "project": ["there is no project 'nope'"],
    }


def test_the_overview_keeps_its_window_and_its_filters_together(client, users, listed) -> None:
    client.force_login(users.approver)
    response = client.get("/monitoring/", {"window": "24h", "environment": "staging"})
    assert response.status_code == 200
    assert set(listed_names(response)) == {"bc-classifier-staging", "iris-tree-staging"}
    page = parse(response.content)
    window_form = page.find("form", data_testid="window-form")
    filters_form = page.find("form", data_testid="service-filters")
    hidden = {
        form: {i.attrs["name"]: i.attrs["value"] for i in f.find_all("input", type="hidden")}
        for form, f in (("window", window_form), ("filters", filters_form))
    }
    assert hidden == {"window": {"environment": "staging"}, "filters": {"window": "24h"}}
    # A bad filter with a good window: named, nothing listed.
    refused = client.get("/monitoring/", {"window": "24h", "environment": "moon"})
    assert refused.status_code == 400 and listed_names(refused) == []
    assert "there is no environment 'moon'" in parse(refused.content).find("span", data_field="environment").text()
