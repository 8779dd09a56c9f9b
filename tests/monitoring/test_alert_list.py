"""The alerts list, page and API: open ones by default, narrowed by status, service, environment, what was breached
and the day it opened; a bad filter is named (400) and nothing is listed."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.urls import reverse
from django.utils import timezone

from deployments import services
from deployments.models import Service
from monitoring.models import Alert
from tests.deployments.conftest import make_model_version
from tests.fixtures.page_html import parse

pytestmark = pytest.mark.django_db


@pytest.fixture
def alerts(users: Any, project: Any, staging: Any) -> dict[str, Alert]:
    production = services.environment_create(actor=users.admin, data={"name": "production", "order": 20})
    version = make_model_version(project, users.data_scientist)
    made: dict[str, Alert] = {}
    for environment in (staging, production):
        service = Service.objects.create(
            registered_model=version.registered_model,
            environment=environment,
            name=f"bc-{environment.name}",
            backend="local",
            created_by=users.admin,
        )
        for name, status, days_ago in (("p99_latency_ms", "open", 0), ("drift", "closed", 3)):
            alert = Alert.objects.create(service=service, name=name, status=status, message=f"{name} {status}")
            Alert.objects.filter(pk=alert.pk).update(opened_at=timezone.now() - timedelta(days=days_ago))
            made[f"{service.name} {name}"] = alert
    return made


def page_ids(client: Any, **params: str) -> set[int]:
    response = client.get(reverse("alert-list"), params)
    assert response.status_code == 200, response.content[:300]
    items = parse(response.content).find(data_testid="alert-list").find_all(data_testid="alert")
    return {int(item.attrs["data-alert"]) for item in items}


def api_ids(client: Any, **params: str) -> set[int]:
    response = client.get(reverse("api-alert-list"), params)
    assert response.status_code == 200, response.content[:300]
    return {row["id"] for row in response.json()["results"]}


def test_alerts_filter_alike_in_the_page_and_the_api(client, api_client_for, users, alerts) -> None:
    client.force_login(users.approver)
    api = api_client_for(users.approver)
    staging_service = alerts["bc-staging drift"].service_id
    three_days_ago = (timezone.now() - timedelta(days=3)).date().isoformat()
    for params, expected in (
        ({}, {"bc-staging p99_latency_ms", "bc-production p99_latency_ms"}),  # open ones by default
        ({"status": "closed"}, {"bc-staging drift", "bc-production drift"}),
        ({"status": "all", "environment": "production"}, {"bc-production p99_latency_ms", "bc-production drift"}),
        ({"status": "all", "service": str(staging_service)}, {"bc-staging p99_latency_ms", "bc-staging drift"}),
        ({"status": "all", "name": "drift"}, {"bc-staging drift", "bc-production drift"}),
        ({"status": "all", "until": three_days_ago}, {"bc-staging drift", "bc-production drift"}),
        (
            {"status": "all", "since": timezone.now().date().isoformat(), "environment": "staging"},
            {"bc-staging p99_latency_ms"},
        ),
    ):
        wanted = {alerts[key].pk for key in expected}
        assert page_ids(client, **params) == api_ids(api, **params) == wanted, params


@pytest.mark.parametrize(
    ("params", "field", "words"),
    [
        ({"status": "maybe"}, "status", "expected open, closed or all, got 'maybe'"),
        ({"service": "999999"}, "service", "there is no service '999999'"),
        ({"service": "nope"}, "service", "expected a service id, got 'nope'"),
        ({"environment": "moon"}, "environment", "there is no environment 'moon' (environments: staging, production)"),
        ({"name": "budget"}, "name", "expected p99_latency_ms, error_rate, drift_share or drift, got 'budget'"),
        ({"since": "2026-03-02", "until": "2026-03-01"}, "until", "expected a date on or after 'since'"),
    ],
)
def test_a_bad_alert_filter_is_named_and_lists_nothing(client, api_client_for, users, alerts, params, field, words):
    client.force_login(users.approver)
    response = client.get(reverse("alert-list"), params)
    assert response.status_code == 400
    page = parse(response.content)
    assert words in page.find("span", data_field=field).text()
    assert not page.find(data_testid="alert-list").has(data_testid="alert")
    refused = api_client_for(users.approver).get(reverse("api-alert-list"), params)
    assert refused.status_code == 400 and refused.json()["error"]["fields"] == {field: [words]}
