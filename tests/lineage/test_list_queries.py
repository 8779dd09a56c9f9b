"""The dataset, run and model lists, pages and API, make as many queries for a long history as for a short one;
their filters are one FilterSet each, and a bad filter is named (400 in the API, a form error in the page)."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from controlplane import services as controlplane_services
from tests.lineage.history import History

pytestmark = pytest.mark.django_db

LISTS = [
    ("dataset-list", {}),
    ("run-list", {}),
    ("model-list", {}),
    ("api-dataset-list", {}),
    ("api-run-list", {}),
    ("api-run-list", {"page_size": 500}),
    ("api-model-list", {}),
    ("run-list", {"status": "succeeded", "kind": "training"}),
    ("api-run-list", {"creator": "dana", "project": "cancer"}),
]


@pytest.fixture
def history(users: Any) -> History:
    project = controlplane_services.project_create(actor=users.admin, name="Cancer", slug="cancer")
    history = History(project=project, user=users.data_scientist)
    history.add_datasets(2)
    history.add_models(2, versions=2)
    return history


def queries(client: Any, name: str, params: dict[str, Any]) -> int:
    with CaptureQueriesContext(connection) as captured:
        response = client.get(reverse(name), params)
    assert response.status_code == 200, (name, response.content[:500])
    return len(captured)


def test_list_query_counts_stay_flat_as_the_history_grows(client, api_client_for, history, users) -> None:
    client.force_login(users.data_scientist)
    api = api_client_for(users.data_scientist)
    clients = {name: api if name.startswith("api-") else client for name, _ in LISTS}
    before = [queries(clients[name], name, params) for name, params in LISTS]
    history.add_datasets(40, versions=2)
    history.add_models(30, versions=3)
    history.add_runs(60)
    after = [queries(clients[name], name, params) for name, params in LISTS]
    assert after == before, list(zip(LISTS, before, after, strict=True))
    assert max(after) <= 15


def test_runs_api_names_each_runs_model_version(api_client_for, history, users) -> None:
    runs = history.add_runs(3)
    body = api_client_for(users.approver).get(reverse("api-run-list"), {"page_size": 500}).json()
    by_id = {row["id"]: row for row in body["results"]}
    assert body["count"] == 7
    for run in runs:
        assert by_id[run.pk]["model_version"] == run.model_version.pk
        assert by_id[run.pk]["inputs"] == [{"channel": "train", "dataset_version": history.popular.pk}]


def test_models_api_and_page_count_versions(api_client_for, client, history, users) -> None:
    body = api_client_for(users.finance).get(reverse("api-model-list")).json()
    assert [(m["slug"], m["latest_version"]) for m in body["results"]] == [(m.slug, 2) for m in history.models]
    other = controlplane_services.project_create(actor=users.admin, name="Other", slug="other")
    assert api_client_for(users.finance).get(reverse("api-model-list"), {"project": other.slug}).json()["count"] == 0
    client.force_login(users.finance)
    response = client.get(reverse("model-list"))
    cells = [row for row in response.context["page"]]
    assert [m.versions.count() for m in cells] == [2, 2]


@pytest.mark.parametrize(
    ("name", "params", "field"),
    [
        ("api-run-list", {"status": "finished"}, "status"),
        ("api-run-list", {"kind": "inference"}, "kind"),
        ("api-run-list", {"creator": "x" * 151}, "creator"),
        ("api-dataset-list", {"project": "p" * 64}, "project"),
        ("api-model-list", {"project": "p" * 64}, "project"),
    ],
)
def test_a_bad_filter_is_a_400_naming_the_field(api_client_for, users, name, params, field) -> None:
    response = api_client_for(users.data_scientist).get(reverse(name), params)
    assert response.status_code == 400
    assert list(response.json()["error"]["fields"]) == [field]


@pytest.mark.parametrize(
    ("name", "params", "field"),
    [
        ("run-list", {"status": "finished"}, "status"),
        ("dataset-list", {"q": "q" * 201}, "q"),
        ("model-list", {"project": "p" * 64}, "project"),
    ],
)
def test_a_bad_filter_is_a_form_error_in_the_page(client, users, name, params, field) -> None:
    client.force_login(users.data_scientist)
    response = client.get(reverse(name), params)
    assert response.status_code == 400
    assert f'data-field="{field}"' in response.content.decode()


def test_filters_select_the_same_runs_in_the_page_and_the_api(client, api_client_for, history, users) -> None:
    other = controlplane_services.project_create(actor=users.admin, name="Other", slug="other")
    elsewhere = History(project=other, user=users.approver)
    elsewhere.add_datasets(1)
    elsewhere.add_runs(2, with_models=False)
    client.force_login(users.data_scientist)
    for params in (
        {"project": "other"},
        {"creator": "dana"},
        {"status": "failed"},
        {"kind": "training", "project": "cancer"},
    ):
        page = [run.pk for run in client.get(reverse("run-list"), params).context["page"]]
        api = [
            row["id"]
            for row in api_client_for(users.data_scientist).get(reverse("api-run-list"), params).json()["results"]
        ]
        assert page == api, params
    assert len([r for r in client.get(reverse("run-list"), {"project": "other"}).context["page"]]) == 2
