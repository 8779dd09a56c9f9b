"""Runs list filters and the side-by-side comparison of runs."""

from __future__ import annotations

import pytest
from django.urls import reverse
from pytest_django.asserts import assertContains, assertNotContains

from lineage.models import Run

pytestmark = pytest.mark.django_db


@pytest.fixture
def two_runs(users, project):
    common = {
        "project": project,
        "kind": "training",
        "recipe": "random_forest",
        "recipe_version": "1",
        "recipe_fingerprint": "f" * 64,
        "status": "succeeded",
        "created_by": users.data_scientist,
    }
    first = Run.objects.create(
        parameters={"n_estimators": 100, "seed": 1},
        metrics={"accuracy": [{"value": 0.91}], "f1": [{"value": 0.90}]},
        **common,
    )
    second = Run.objects.create(
        parameters={"n_estimators": 500, "seed": 1},
        metrics={"accuracy": [{"value": 0.95}], "f1": [{"value": 0.94}]},
        **common,
    )
    return first, second


def test_compare_shows_parameters_metrics_and_a_chart(client, users, two_runs) -> None:
    first, second = two_runs
    client.force_login(users.finance)
    response = client.get(reverse("run-compare"), {"run": [first.pk, second.pk]})
    assertContains(
        response, '<tr class="differs"><td><code>n_estimators</code></td><td>100</td><td>500</td></tr>', html=True
    )
    assertContains(response, "<tr><td><code>seed</code></td><td>1</td><td>1</td></tr>", html=True)
    assertContains(response, "<tr><td><code>accuracy</code></td><td>0.9100</td><td>0.9500</td></tr>", html=True)
    assertContains(response, '<div class="chart wide-chart" data-figure="compare-chart"></div>', html=True)
    # The chart's numbers, for the page's plotly.js to draw.
    assert response.context["chart"]["figure"] == {
        "kind": "compare",
        "metrics": ["accuracy", "f1"],
        "series": [
            {"name": f"run {first.pk}", "values": [0.91, 0.90]},
            {"name": f"run {second.pk}", "values": [0.95, 0.94]},
        ],
    }


def test_compare_shows_metrics_to_four_places_as_every_other_page(client, users, two_runs) -> None:
    first, second = two_runs
    Run.objects.filter(pk=first.pk).update(
        metrics={"accuracy": [{"value": 0.938596}], "train_rows": [{"value": 455.0}]}
    )
    client.force_login(users.finance)
    response = client.get(reverse("run-compare"), {"run": [first.pk, second.pk]})
    assertContains(response, "<tr><td><code>accuracy</code></td><td>0.9386</td><td>0.9500</td></tr>", html=True)
    assertContains(response, "<tr><td><code>train_rows</code></td><td>455</td><td>—</td></tr>", html=True)
    assertNotContains(response, "0.938596</td>")


def test_compare_needs_two_runs(client, users, two_runs) -> None:
    client.force_login(users.finance)
    response = client.get(reverse("run-compare"), {"run": [two_runs[0].pk]})
    assert response.status_code == 302 and response["Location"] == reverse("run-list")


def test_runs_list_filters(client, api_client_for, users, two_runs) -> None:
    first, second = two_runs
    Run.objects.filter(pk=second.pk).update(status="failed")
    client.force_login(users.approver)
    response = client.get(reverse("run-list"), {"status": "failed"})
    assert [run.pk for run in response.context["page"]] == [second.pk]
    body = (
        api_client_for(users.approver).get(reverse("api-run-list"), {"creator": "dana", "status": "succeeded"}).json()
    )
    assert [r["id"] for r in body["results"]] == [first.pk]


def test_runs_page_offers_a_new_training_run_to_those_who_may_launch(
    client, users, project, cancer_csv, api_client_for
) -> None:
    from tests.lineage.conftest import upload

    version = upload(
        api_client_for(users.data_scientist), project="cancer", dataset="bc", name="bc.csv", content=cancer_csv
    ).json()
    client.force_login(users.data_scientist)
    response = client.get(reverse("run-list"))
    assertContains(response, 'data-testid="new-training-run"', count=1)
    assertContains(response, f'<option value="{version["id"]}">cancer/bc v1 (569 rows)</option>', html=True)
    client.force_login(users.finance)
    assertNotContains(client.get(reverse("run-list")), 'data-testid="new-training-run"')
