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


@pytest.mark.parametrize(
    ("name", "params", "field", "words"),
    [
        ("run-list", {"project": "nope"}, "project", "there is no project 'nope'"),
        ("api-run-list", {"project": "nope"}, "project", "there is no project 'nope'"),
        ("api-dataset-list", {"project": "nope"}, "project", "there is no project 'nope'"),
        ("model-list", {"project": "nope"}, "project", "there is no project 'nope'"),
        ("api-run-list", {"status": "finished"}, "status", "expected queued, starting, running, "),
        ("run-list", {"kind": "inference"}, "kind", "expected transform or training, got 'inference'"),
        ("run-list", {"since": "yesterday"}, "since", "Enter a valid date."),
        ("api-run-list", {"since": "2026-03-02", "until": "2026-03-01"}, "until", "on or after 'since'"),
    ],
)
def test_a_bad_filter_says_what_was_expected(client, api_client_for, history, users, name, params, field, words):
    client.force_login(users.data_scientist)
    caller = api_client_for(users.data_scientist) if name.startswith("api-") else client
    response = caller.get(reverse(name), params)
    assert response.status_code == 400
    if name.startswith("api-"):
        assert list(response.json()["error"]["fields"]) == [field]
        assert words in response.json()["error"]["fields"][field][0]
    else:
        content = response.content.decode().replace("&#x27;", "'")
        assert f'data-field="{field}">{words}' in content
        assert "listed until the filters marked above are fixed" in content or name == "dataset-list"


def test_runs_filter_by_the_days_they_were_made(client, api_client_for, history, users) -> None:
    from datetime import timedelta

    from django.utils import timezone

    from lineage.models import Run

    runs = history.add_runs(3, with_models=False)
    today = timezone.now()
    for run, days_ago in zip(runs, (10, 5, 0), strict=True):
        Run.objects.filter(pk=run.pk).update(created_at=today - timedelta(days=days_ago))
    Run.objects.exclude(pk__in=[r.pk for r in runs]).update(created_at=today - timedelta(days=30))

    def day(days_ago: int) -> str:
        return (today - timedelta(days=days_ago)).date().isoformat()

    client.force_login(users.data_scientist)
    for params, expected in (
        ({"since": day(6)}, [runs[2].pk, runs[1].pk]),
        ({"since": day(7), "until": day(5)}, [runs[1].pk]),  # the whole of the day named
        ({"since": day(10), "until": day(10)}, [runs[0].pk]),
    ):
        page = [run.pk for run in client.get(reverse("run-list"), params).context["page"]]
        api = [r["id"] for r in api_client_for(users.approver).get(reverse("api-run-list"), params).json()["results"]]
        assert page == api == expected, params
    assert len([r for r in client.get(reverse("run-list"), {"until": day(29)}).context["page"]]) == 4


def test_models_are_searched_by_name_and_slug_in_the_page_and_the_api(client, api_client_for, history, users):
    first = history.models[0]
    client.force_login(users.finance)
    page = client.get(reverse("model-list"), {"q": first.slug})
    assert [m.pk for m in page.context["page"]] == [first.pk]
    assert f'value="{first.slug}"' in page.content.decode()  # the search is kept in its field
    api = api_client_for(users.finance).get(reverse("api-model-list"), {"q": first.name.upper()}).json()
    assert [m["slug"] for m in api["results"]] == [first.slug]
    nothing = client.get(reverse("model-list"), {"q": "no-such-model"})
    assert nothing.status_code == 200 and "No models match." in nothing.content.decode()


def test_recipes_list_by_kind_and_refuse_an_unknown_kind(api_client_for, users) -> None:
    api = api_client_for(users.data_scientist)
    training = api.get(reverse("api-recipe-list"), {"kind": "training"}).json()
    assert training and {r["kind"] for r in training} == {"training"}
    refused = api.get(reverse("api-recipe-list"), {"kind": "inference"})
    assert refused.status_code == 400
    assert refused.json()["error"]["fields"] == {"kind": ["expected transform or training, got 'inference'"]}
