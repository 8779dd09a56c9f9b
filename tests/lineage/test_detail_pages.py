"""Detail pages send numbers for the browser to draw, say how long a run took in seconds, and show progress."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.template.loader import render_to_string
from django.test import RequestFactory
from pytest_django.asserts import assertContains, assertInHTML, assertNotContains

from lineage.templatetags.run_display import duration_text
from tests.fixtures.history import make_history
from tests.fixtures.page_html import json_scripts

pytestmark = pytest.mark.django_db


@pytest.fixture
def history(users: Any, tmp_path: Path) -> dict[str, Any]:
    return make_history(users, tmp_path)


def _charts(content: bytes) -> dict[str, Any]:
    return json_scripts(content)


def test_dataset_version_page_sends_the_profile_numbers_not_figures(client, users, history) -> None:
    client.force_login(users.finance)
    charts = _charts(client.get("/datasets/penguins/penguins/v1/").content)
    assert set(charts) == {"chart-0", "chart-1", "chart-2"}
    year, species, bill = charts["chart-0"], charts["chart-1"], charts["chart-2"]
    # Only what is drawn: no plotly layout, template or trace objects built on the server.
    assert set(year) == {"kind", "title", "missing", "rows", "edges", "counts", "integer"}
    assert year["kind"] == "histogram" and year["integer"] is True and sum(year["counts"]) == 120
    assert species == {
        "kind": "top",
        "title": "species",
        "missing": 30,
        "rows": 120,
        "values": ["Adelie", "Chinstrap", "Gentoo"],
        "counts": [30, 30, 30],
    }
    assert bill["integer"] is False and bill["missing"] == 12 and sum(bill["counts"]) == 108


def test_run_page_sends_metric_points(client, users, history) -> None:
    client.force_login(users.finance)
    charts = _charts(client.get(f"/runs/{history['run'].pk}/").content)
    assert charts["metric-0"] == {
        "kind": "series",
        "title": "cv_accuracy",
        "axis": "fold",
        "x": [0, 1, 2, 3, 4],
        "y": [0.96, 0.96, 0.98, 1.0, 1.0],
    }


def test_a_42_second_run_says_42_seconds(client, users, history) -> None:
    client.force_login(users.finance)
    response = client.get(f"/runs/{history['run'].pk}/")
    assertContains(response, '<span data-testid="duration">42 s</span>', html=True)
    assertNotContains(response, "0 minutes")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0 s"),
        (0.4, "0 s"),
        (42, "42 s"),
        (59.6, "1 min"),
        (75, "1 min 15 s"),
        (3600, "1 h"),
        (3725, "1 h 2 min"),
        (90061, "1 d 1 h"),
    ],
)
def test_duration_text(seconds: float, text: str) -> None:
    assert duration_text(seconds) == text


def test_run_log_shows_clock_times_not_epoch_seconds(client, users, history) -> None:
    client.force_login(users.finance)
    response = client.get(f"/runs/{history['run'].pk}/")
    assertContains(
        response,
        '<time datetime="2026-12-01T00:00:00.123Z" title="2026-12-01 00:00:00.123 UTC">00:00:00</time>',
        html=True,
    )
    assertNotContains(response, "1796083200")


def _status_fragment(run: Any, users: Any) -> str:
    request = RequestFactory().get(f"/runs/{run.pk}/")
    request.user = users.finance
    context = {
        "run": run,
        "events": [],
        "inputs": [],
        "outputs": [],
        "log_lines": [],
        "metric_charts": [],
        "final_metrics": {},
    }
    return render_to_string("lineage/_run_status.html", context, request=request)


def test_progress_bar_shows_done_of_total(users, history) -> None:
    run = history["run"]
    # The poller fills Run.progress; set on the instance here so the fragment is tested with or without the field.
    run.progress = {"done": 3, "total": 5, "unit": "folds"}
    run.status = "running"
    html = _status_fragment(run, users)
    assertInHTML('<progress value="3" max="5" aria-label="Progress"></progress>', html)
    assertInHTML('<span data-testid="run-progress-text">3 of 5 folds</span>', html)
    # Once the run has ended, its last progress line is no news (a failed run must not show "100 of 100 trees").
    run.status = "failed"
    assert 'data-testid="run-progress"' not in _status_fragment(run, users)


@pytest.mark.parametrize("progress", [None, {}, {"done": 0, "total": 0, "unit": "trees"}])
def test_no_progress_bar_without_progress(users, history, progress) -> None:
    run = history["run"]
    if progress is not None:
        run.progress = progress
    assert 'data-testid="run-progress"' not in _status_fragment(run, users)
