"""The audit log page and API cost the same for 30 events as for 3,000, and the action choices are the actions."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from controlplane import selectors
from controlplane import services as controlplane_services
from tests.lineage.history import History

pytestmark = pytest.mark.django_db


@pytest.fixture
def history(users: Any) -> History:
    project = controlplane_services.project_create(actor=users.admin, name="Cancer", slug="cancer")
    history = History(project=project, user=users.data_scientist)
    history.add_audit_events(30)
    return history


def counted(client: Any, name: str, params: dict[str, str]) -> tuple[int, Any]:
    with CaptureQueriesContext(connection) as captured:
        response = client.get(reverse(name), params)
    assert response.status_code == 200, response.content[:300]
    return len(captured), captured


def test_audit_query_counts_and_choices_stay_flat(client, api_client_for, history, users) -> None:
    client.force_login(users.admin)
    api = api_client_for(users.admin)
    cases = [
        (client, "audit-list", {}),
        (client, "audit-list", {"action": "run."}),
        (api, "api-audit-list", {}),
        (api, "api-audit-list", {"actor": "dana", "since": "2020-01-01"}),
    ]
    before = [counted(c, name, params)[0] for c, name, params in cases]
    history.add_audit_events(3000)
    after = [counted(c, name, params)[0] for c, name, params in cases]
    assert after == before and max(after) <= 15
    _, captured = counted(client, "audit-list", {})
    choice_queries = [q["sql"] for q in captured if "DISTINCT" in q["sql"]]
    # The DISTINCT lists the values alone: the model's ordering must not drag created_at and id into it.
    assert choice_queries and all("created_at" not in sql for sql in choice_queries)


def test_action_choices_are_each_action_once(history, users) -> None:
    choices = selectors.audit_filter_choices(user=users.admin)
    assert "run.launch" in choices["actions"]
    assert len(choices["actions"]) == len(set(choices["actions"]))
    assert choices["actions"] == sorted(choices["actions"])


def test_bad_filters_are_named_in_the_api_and_on_the_page(client, api_client_for, users) -> None:
    response = api_client_for(users.admin).get(reverse("api-audit-list"), {"since": "yesterday"})
    assert response.status_code == 400 and list(response.json()["error"]["fields"]) == ["since"]
    client.force_login(users.admin)
    page = client.get(reverse("audit-list"), {"since": "2026-12-01", "until": "2026-11-01"})
    assert page.status_code == 400 and 'data-field="until"' in page.content.decode()
    export = client.get(reverse("audit-export"), {"until": "not a date"})
    assert export.status_code == 400
