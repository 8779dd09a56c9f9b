"""Monitoring pages and their read API on seeded rows: the numbers the charts and tables carry are the merged
histograms' percentiles (never averaged ones), markers sit at every deployment and rollback, the drift page shows
its heatmap, verdicts and histograms, alerts show where people look, a bad window is named and changes nothing,
and only people with a role see any of it."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from controlplane.models import AuditEvent
from monitoring.models import Alert, DriftReport, MetricPoint
from tests.fixtures.page_html import json_scripts, parse
from tests.monitoring.seeded import (
    FEATURES,
    Seeded,
    averaged_percentile,
    counts,
    merged_percentile,
    seed_alerts,
    seed_drift,
    seed_service,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def seeded(users: Any) -> Seeded:
    seeded = seed_service(users)
    seed_drift(seeded)
    seed_alerts(seeded)
    return seeded


def signed_in(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def api(user: Any) -> APIClient:
    return APIClient(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def by_step(seeded: Seeded, times: list[str], step: int, revision: str | None = None) -> list[list[MetricPoint]]:
    """The seeded points each chart point covers: those starting in [time, time + step)."""
    chosen = [p for p in seeded.points if revision is None or p.revision == revision]
    return [[p for p in chosen if _at(t) <= p.start < _at(t) + timedelta(seconds=step)] for t in times]


def trace(figure: dict[str, Any], name: str) -> list[Any]:
    return next(t["y"] for t in figure["traces"] if t["name"] == name)


def close(a: float | None, b: float | None) -> bool:
    return (a is None and b is None) or (a is not None and b is not None and abs(a - b) < 1e-9)


def test_the_service_page_charts_merged_percentiles_per_revision_with_markers(users, seeded: Seeded) -> None:
    # 4xx (refused requests, e.g. bad rows) on the first revision's minutes: beside the 5xx share, never hidden.
    first_label = seeded.revisions[0]
    MetricPoint.objects.filter(service=seeded.service, revision=first_label).update(client_errors=2)
    for point in seeded.points:
        point.client_errors = 2 if point.revision == first_label else 0
    response = signed_in(users.finance).get(f"/services/{seeded.service.pk}/monitoring/?window=1h")
    assert response.status_code == 200
    figures = json_scripts(response.content)
    latency, throughput, errors = figures["chart-latency"], figures["chart-throughput"], figures["chart-errors"]
    times = latency["x"]
    step = response.context["step"]
    steps = by_step(seeded, times, step)
    assert sum(len(points) for points in steps) == len(seeded.points)  # every seeded minute is in the window

    for q, label in ((0.5, "p50"), (0.95, "p95"), (0.99, "p99")):
        drawn = trace(latency, f"all revisions {label}")
        expected = [merged_percentile(points, q) if points else None for points in steps]
        assert all(close(a, b) for a, b in zip(drawn, expected, strict=True)), (label, drawn, expected)
    fast, slow = seeded.revisions
    assert fast != seeded.deployments[0].revision  # the label is not the backend's name (`r-d12`)
    first, second = seeded.deployments[:2]
    for revision, name in ((fast, f"v1 (deploy {first.pk})"), (slow, f"v2 (deploy {second.pk})")):
        drawn = next(t["y"] for t in latency["traces"] if t["name"].startswith(name) and t["percentile"] == "p99")
        expected = [merged_percentile(p, 0.99) if p else None for p in by_step(seeded, times, step, revision)]
        assert all(close(a, b) for a, b in zip(drawn, expected, strict=True)), (revision, drawn, expected)
    rates = trace(throughput, "all revisions")
    # The minute in progress (its rows still arriving) is a gap, not a fall to 0 requests/s.
    assert rates[-1] is None and _at(times[-1]) + timedelta(seconds=step) > seeded.now
    assert rates[:-1] == [pytest.approx(sum(p.requests for p in points) / step) for points in steps[:-1]]
    shares = trace(errors, "all revisions")
    assert shares == [
        pytest.approx(sum(p.errors for p in points) / sum(p.requests for p in points)) if points else None
        for points in steps
    ]
    client_shares = trace(errors, "all revisions 4xx")
    assert client_shares == [
        pytest.approx(sum(p.client_errors for p in points) / sum(p.requests for p in points)) if points else None
        for points in steps
    ]
    assert any(client_shares) and "4xx" in errors["title"]

    # A minute where both revisions served: the merged p99 is not the average of the two.
    both = next(points for points in steps if {p.revision for p in points} == {fast, slow})
    assert not close(merged_percentile(both, 0.99), averaged_percentile(both, 0.99))

    # Every deployment and rollback is marked, on every chart.
    kinds = [(m["kind"], _at(m["at"])) for m in latency["markers"]]
    assert [k for k, _ in kinds] == ["deploy", "deploy", "rollback"]
    assert all(figure["markers"] == latency["markers"] for figure in (throughput, errors))

    # The table: the window's percentiles from all its minutes merged.
    page = parse(response.content)
    rows = {row.attrs["data-revision"]: row for row in page.find(data_testid="revision-summary").find_all("tr")[1:]}
    whole = float(rows[""].find(data_testid="p99").attrs["data-value"])
    assert close(whole, merged_percentile(seeded.points, 0.99))
    assert not close(whole, averaged_percentile(seeded.points, 0.99))
    slow_points = [p for p in seeded.points if p.revision == slow]
    assert close(float(rows[slow].find(data_testid="p95").attrs["data-value"]), merged_percentile(slow_points, 0.95))
    fast_points = [p for p in seeded.points if p.revision == fast]
    client_share = float(rows[fast].find(data_testid="client-error-rate").attrs["data-value"])
    assert client_share == pytest.approx(2 * len(fast_points) / sum(p.requests for p in fast_points))
    assert rows[slow].find(data_testid="client-error-rate").text() == "0%"
    headers = [th.text() for th in page.find(data_testid="revision-summary").find_all("th")]
    assert "Avg requests/s" in headers and "Client errors (4xx)" in headers, headers
    # Requests/s for people, never "1.16e-05".
    assert "e-" not in rows[""].find(data_testid="requests-per-s").text()
    # Markers in the site's format, not ISO's "T".
    at = [span.text() for span in page.find(data_testid="marker-list").find_all("span", data_testid="marker-at")]
    assert len(at) == 3 and all(len(t) == 16 and t[10] == " " for t in at), at


def _figures(row: Any) -> dict[str, float | None]:
    """What an overview row shows: each figure's exact value (data-value), None where it shows a dash."""
    shown = {}
    for name in ("requests-per-s", "error-rate", "client-error-rate", "p50", "p95", "p99"):
        value = row.find(data_testid=name).attrs.get("data-value", "")
        shown[name] = float(value) if value else None
    return shown


def _expected(points: list[MetricPoint], seconds: float) -> dict[str, float | None]:
    """The figures of `points` over a window of `seconds`, from the seeded rows themselves."""
    requests = sum(p.requests for p in points)
    return {
        "requests-per-s": requests / seconds,
        "error-rate": sum(p.errors for p in points) / requests if requests else None,
        "client-error-rate": sum(p.client_errors for p in points) / requests if requests else None,
        **{label: merged_percentile(points, q) for label, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))},
    }


def _same(shown: dict[str, float | None], expected: dict[str, float | None]) -> bool:
    return shown.keys() == expected.keys() and all(
        (a is None and b is None) or (a is not None and b is not None and a == pytest.approx(b, rel=1e-9))
        for a, b in ((shown[k], expected[k]) for k in shown)
    )


def _overview_rows(page: Any, service: str) -> dict[str, Any]:
    """The overview's rows of a service: "" its own (all revisions), then one per revision shown."""
    return {row.attrs["data-revision"]: row for row in page.find_all("tr", data_service=service)}


def test_the_overview_shows_every_figure_per_service_and_per_revision_over_the_chosen_window(
    users, seeded: Seeded
) -> None:
    from monitoring.selectors import window_summary

    quiet = seed_service(users, name="quiet-prod", slug="quiet")
    MetricPoint.objects.filter(service=quiet.service).delete()
    client = signed_in(users.data_scientist)
    fast, slow = seeded.revisions
    first, second = seeded.deployments[:2]

    # By default the last hour, as before: the service's row, and a row per revision, since both took traffic in
    # that hour (the second while it baked, before its rollback).
    response = client.get("/monitoring/")
    assert response.status_code == 200
    window = response.context["window"]
    assert window.name == "1h" and (window.end - window.start) == timedelta(hours=1)
    page = parse(response.content)
    assert page.find(data_testid="window-select").find("option", value="1h").attrs.get("selected") is not None
    headers = [th.text() for th in page.find(data_testid="monitoring-table").find_all("th")]
    assert ["Avg requests/s", "Error rate (5xx)", "Client errors (4xx)", "p50", "p95", "p99"] == headers[2:8]
    rows = _overview_rows(page, "bc-staging")
    assert list(rows) == ["", fast, slow]
    assert _same(_figures(rows[""]), _expected(seeded.points, 3600))
    for revision in (fast, slow):
        points = [p for p in seeded.points if p.revision == revision]
        assert _same(_figures(rows[revision]), _expected(points, 3600)), revision
    # Merged, never averaged; and each figure is the one the service page and the objectives read (window_summary).
    assert not close(_figures(rows[""])["p99"], averaged_percentile(seeded.points, 0.99))
    summary = window_summary(service=seeded.service, start=window.start, end=window.end)
    assert _figures(rows[""])["p95"] == pytest.approx(summary["p95_ms"])
    assert rows[fast].find(data_testid="revision-label").text().startswith(f"↳ v1 (deploy {first.pk})")
    assert rows[slow].find(data_testid="revision-label").text().startswith(f"↳ v2 (deploy {second.pk})")
    assert rows[""].find(data_testid="open-alerts").text() == "2"
    assert rows[""].find(data_testid="drift-share").text().startswith("66.7%")
    assert "(1 requests)" not in response.content.decode()
    # The service's link keeps the window.
    assert f"/services/{seeded.service.pk}/monitoring/?window=1h" in rows[""].links().values()
    empty = _overview_rows(page, "quiet-prod")
    assert list(empty) == [""]  # no traffic: no revision rows
    assert _figures(empty[""]) == {
        "requests-per-s": 0.0,
        "error-rate": None,
        "client-error-rate": None,
        "p50": None,
        "p95": None,
        "p99": None,
    }
    assert empty[""].find(data_testid="p99").text() == "—"
    assert empty[""].find(data_testid="drift-share").text() == "no report yet"

    # The last day: the same rows, requests/s over a day.
    rows = _overview_rows(parse(client.get("/monitoring/", {"window": "24h"}).content), "bc-staging")
    assert list(rows) == ["", fast, slow]
    assert _same(_figures(rows[""]), _expected(seeded.points, 86400))

    # A custom window of the last ten minutes: only the first revision served, so no rows per revision.
    end = seeded.now.replace(second=0, microsecond=0)
    start = end - timedelta(minutes=10)
    query = {"window": "custom", "start": start.strftime("%Y-%m-%dT%H:%M"), "end": end.strftime("%Y-%m-%dT%H:%M")}
    response = client.get("/monitoring/", query)
    assert response.status_code == 200
    page = parse(response.content)
    rows = _overview_rows(page, "bc-staging")
    inside = [p for p in seeded.points if start <= p.start < end]
    assert inside and {p.revision for p in inside} == {fast}
    assert list(rows) == [""]
    assert _same(_figures(rows[""]), _expected(inside, 600))
    assert page.find(data_testid="window-start").attrs["value"] == query["start"]
    assert page.find(data_testid="window-shown").text().startswith(start.strftime("%Y-%m-%d %H:%M"))


def _canary_services(users: Any, project: Any, environment: Any, first: int, n: int) -> None:
    """n more services, each with all an overview row reads: a deploy, a second deploy rolled back, the rollback
    serving (its label is the first deploy's), both revisions' minutes in the last hour, a drift report of the
    serving revision and an open alert."""
    from deployments.models import Deployment, Service
    from tests.deployments.conftest import make_model_version

    now = timezone.now().replace(second=0, microsecond=0)
    for i in range(first, first + n):
        versions = [make_model_version(project, users.data_scientist, model=f"canary-{i}") for _ in range(2)]
        service = Service.objects.create(
            registered_model=versions[0].registered_model,
            environment=environment,
            name=f"canary-{i}",
            backend="local",
            created_by=users.admin,
        )
        made = [
            Deployment.objects.create(
                service=service, kind=kind, model_version=version, status=status, initiated_by=users.approver
            )
            for kind, version, status in (
                ("deploy", versions[0], "succeeded"),
                ("deploy", versions[1], "rolled_back"),
                ("rollback", versions[0], "succeeded"),
            )
        ]
        for deployment, revision in zip(made, (made[0].pk, made[1].pk, made[0].pk), strict=True):
            Deployment.objects.filter(pk=deployment.pk).update(revision=f"r-d{revision}")
        Service.objects.filter(pk=service.pk).update(current_deployment=made[2])
        MetricPoint.objects.bulk_create(
            MetricPoint(
                service=service,
                revision=f"d{deployment.pk}",
                start=now - timedelta(minutes=minutes),
                requests=10,
                errors=1,
                latency_counts=counts(ms_1=9, ms_250=1),
            )
            for deployment in made[:2]
            for minutes in (20, 10)
        )
        DriftReport.objects.create(
            service=service,
            revision=f"d{made[0].pk}",
            window_start=now - timedelta(hours=1),
            window_end=now,
            status="succeeded",
            feature_count=4,
            drifted_count=1,
            drifted_share=0.25,
        )
        Alert.objects.create(service=service, name="error_rate", value=0.1, threshold=0.01, message="errors")


def _overview_queries(client: Client, query: dict[str, str]) -> tuple[int, Any]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as captured:
        response = client.get("/monitoring/", query)
    assert response.status_code == 200
    return len(captured), parse(response.content)


@pytest.mark.parametrize("query", [{}, {"window": "7d"}])
def test_the_overview_costs_the_same_queries_with_2_or_20_services(users, project, staging, query) -> None:
    client = signed_in(users.approver)
    _canary_services(users, project, staging, 0, 2)
    before, page = _overview_queries(client, query)
    assert len(page.find_all("tr", data_revision="")) == 2
    _canary_services(users, project, staging, 2, 18)
    after, page = _overview_queries(client, query)
    # Not a page of empty rows: each of the 20 has its rows per revision, its drift report and its alert.
    assert len(page.find_all("tr", data_revision="")) == 20
    assert len(page.find_all("tr", **{"class": "revision"})) == 40
    assert all(row.text().startswith("25%") for row in page.find_all(data_testid="drift-share"))
    assert all(row.text() == "1" for row in page.find_all(data_testid="open-alerts"))
    assert after == before


def test_the_drift_page_shows_heatmap_verdicts_histograms_and_retrain(users, seeded: Seeded) -> None:
    response = signed_in(users.data_scientist).get(f"/services/{seeded.service.pk}/drift/")
    assert response.status_code == 200
    figures = json_scripts(response.content)
    heatmap = figures["drift-heatmap"]
    assert sorted(heatmap["y"]) == sorted(FEATURES)
    assert [_at(t) for t in heatmap["x"]] == [r.window_end for r in seeded.reports]
    for i, feature in enumerate(heatmap["y"]):
        verdicts = [r.features.get(feature=feature) for r in seeded.reports]
        assert heatmap["scores"][i] == [f.score for f in verdicts]
        assert heatmap["drifted"][i] == [f.drifted for f in verdicts]
        # The colour: past 1 exactly where the threshold was crossed, whichever way the method's score points.
        assert [z > 1 for z in heatmap["z"][i]] == [f.drifted for f in verdicts], (feature, heatmap["z"][i])
    radius = heatmap["y"].index("mean radius")  # ks: a p-value of 0.001 against 0.05 is 50× past, shown as 4
    assert heatmap["z"][radius] == [pytest.approx(0.125), pytest.approx(0.125), 4.0]
    texture = heatmap["y"].index("mean texture")  # psi: a distance of 0.35 against 0.2
    assert heatmap["z"][texture][-1] == pytest.approx(1.75)
    page = parse(response.content)
    table = page.find(data_testid="feature-table")
    assert {row.attrs["data-feature"]: row.attrs["data-drifted"] for row in table.find_all("tr")[1:]} == {
        "mean radius": "true",
        "mean texture": "true",
        "mean area": "false",
    }
    radius = [cell.text() for cell in table.find("tr", data_feature="mean radius").find_all("td")]
    assert radius[1:7] == ["ks", "0.3", "0.001", "0.001", "0.05", "drifted"], radius
    assert page.find(data_testid="crossed").text() == "mean radius , mean texture"
    assert page.find(data_testid="drift-share").text().startswith("2 of 3 (66.7%)")
    assert "capture/bad.parquet : not a Parquet file" == page.find(data_testid="unreadable").text()
    # Baseline against current, as shares of their rows, the drifted features first.
    histograms = [figures[f"drift-histogram-{i}"] for i in range(3)]
    assert [h["title"] for h in histograms] == ["mean radius · drifted", "mean texture · drifted", "mean area"]
    assert histograms[0]["baseline"] == [0.25, 0.5, 0.25] and histograms[0]["edges"] == [0, 1, 2, 3]
    assert histograms[0]["current"] == pytest.approx([7 / 42, 10 / 42, 25 / 42])
    # Retrain on newer data: the launch form on version 2 of the data v1 was trained on, with its recipe.
    retrain = page.find(data_testid="retrain").attrs["href"]
    assert retrain.startswith("/runs/new/training/?") and "recipe=logistic_regression" in retrain
    assert "(it was trained on" in page.find(data_testid="retrain-message").text()
    form = signed_in(users.data_scientist).get(retrain)
    assert form.status_code == 200 and form.context["train"].number == 2
    # An approver cannot launch runs: no retrain button for them.
    approver_page = parse(signed_in(users.approver).get(f"/services/{seeded.service.pk}/drift/").content)
    assert not approver_page.has(data_testid="retrain")
    # An older report, chosen from the list: its own verdicts; the service (its latest report) still drifted.
    older = signed_in(users.data_scientist).get(f"/services/{seeded.service.pk}/drift/?report={seeded.reports[0].pk}")
    older_page = parse(older.content)
    assert older.status_code == 200 and older_page.has(data_testid="retrain")
    assert older_page.find(data_testid="crossed").text() == "none"
    # Once the latest report is within bounds, nothing to retrain for.
    DriftReport.objects.filter(pk=seeded.reports[-1].pk).update(drifted=False)
    assert not parse(signed_in(users.data_scientist).get(f"/services/{seeded.service.pk}/drift/").content).has(
        data_testid="retrain"
    )


def test_open_alerts_show_on_the_home_and_service_pages_with_value_threshold_and_window(users, seeded: Seeded) -> None:
    client = signed_in(users.approver)
    for url in ("/", f"/services/{seeded.service.pk}/", f"/services/{seeded.service.pk}/monitoring/"):
        banner = parse(client.get(url).content).find(data_testid="alert-banner")
        alerts = {a.attrs["data-name"]: a for a in banner.find_all(data_testid="alert")}
        assert set(alerts) == {"p99_latency_ms", "drift"}, url  # the closed one is not shown
        latency = alerts["p99_latency_ms"]
        assert latency.find(data_testid="alert-value").text() == "248.5 ms"
        assert latency.find(data_testid="alert-threshold").text() == "200 ms"
        assert latency.find(data_testid="alert-window").text().endswith("UTC")
        assert alerts["drift"].find(data_testid="alert-value").text() == "66.7%"
        assert (
            f"/services/{seeded.service.pk}/drift/?report={seeded.reports[-1].pk}" in alerts["drift"].links().values()
        )
    listed = parse(client.get("/monitoring/alerts/?status=all").content).find(data_testid="alert-list")
    assert len(listed.find_all(data_testid="alert")) == 3
    assert client.get("/monitoring/alerts/?status=maybe").status_code == 400


BAD_WINDOWS = [
    ({"window": "5y"}, "window", "expected 1h, 24h, 7d or custom, got '5y'"),
    ({"window": "custom", "start": "2026-12-01T10:00", "end": "2026-12-01T09:00"}, "end", "must be after start"),
    ({"window": "custom", "start": "yesterday", "end": "2026-12-01T09:00"}, "start", "expected a date and time"),
    ({"window": "custom", "end": "2026-12-01T09:00"}, "start", "required with a custom window"),
    (
        {"window": "custom", "start": "2020-01-01T00:00", "end": "2020-03-01T00:00"},
        "start",
        "metrics are kept 400 days: start on or after",
    ),
    ({"window": "custom", "start": "2020-01-01T00:00", "end": "2026-12-31T00:00"}, "start", "longer than"),
    # Out of datetime's range once in UTC (a 500 before), or years no window can reach.
    ({"window": "custom", "start": "2026-12-01T09:00", "end": "0001-01-01T00:00+01:00"}, "end", "years 2000 to 2100"),
    ({"window": "custom", "start": "9999-12-31T23:00-05:00", "end": "2026-12-01T09:00"}, "start", "years 2000 to 2100"),
    ({"window": "custom", "start": "2026-12-01T09:00", "end": "9999-12-31T23:59"}, "end", "years 2000 to 2100"),
    ({"window": "custom", "start": "2099-01-01T00:00", "end": "2099-01-02T00:00"}, "end", "must not be in the future"),
]


@pytest.mark.parametrize(("query", "field", "words"), BAD_WINDOWS)
def test_a_bad_window_is_named_and_changes_nothing(users, seeded: Seeded, query: dict, field: str, words: str) -> None:
    before = (
        MetricPoint.objects.count(),
        Alert.objects.count(),
        DriftReport.objects.count(),
        AuditEvent.objects.count(),
    )
    client, token = signed_in(users.approver), api(users.approver)
    pages = ("/monitoring/", f"/services/{seeded.service.pk}/monitoring/", f"/services/{seeded.service.pk}/drift/")
    for url in pages:
        response = client.get(url, query)
        assert response.status_code == 400
        error = parse(response.content).find(data_testid="window-errors").find("p", data_field=field)
        assert words in error.text(), error.text()
        assert json_scripts(response.content) == {}  # nothing drawn
        assert not parse(response.content).has(data_testid="monitoring-table")  # nor the overview's figures
        # The form keeps what was typed, to correct it.
        assert parse(response.content).find(data_testid="window-start").attrs.get("value", "") == query.get("start", "")
    for url in (f"/api/v1/services/{seeded.service.pk}/metrics/", f"/api/v1/services/{seeded.service.pk}/drift/"):
        answer = token.get(url, query)
        assert answer.status_code == 400, answer.content
        assert any(words in message for message in answer.json()["error"]["fields"][field]), answer.json()
    after = (
        MetricPoint.objects.count(),
        Alert.objects.count(),
        DriftReport.objects.count(),
        AuditEvent.objects.count(),
    )
    assert after == before


def test_the_read_api_answers_what_the_pages_show(users, seeded: Seeded) -> None:
    client = api(users.finance)
    answer = client.get(f"/api/v1/services/{seeded.service.pk}/metrics/", {"window": "1h", "page_size": 500})
    assert answer.status_code == 200, answer.content
    body = answer.json()
    assert body["window"]["name"] == "1h" and body["step_seconds"] > 0
    assert close(body["summary"]["p99_ms"], merged_percentile(seeded.points, 0.99))
    assert [m["kind"] for m in body["markers"]] == ["deploy", "deploy", "rollback"]
    assert body["count"] == len(body["results"]) and {r["revision"] for r in body["results"]} == {"all"}
    filled = [r for r in body["results"] if r["requests"]]
    assert sum(r["requests"] for r in filled) == sum(p.requests for p in seeded.points)
    per_revision = client.get(
        f"/api/v1/services/{seeded.service.pk}/metrics/", {"window": "1h", "by_revision": "true", "page_size": 5}
    ).json()
    assert per_revision["next"] and len(per_revision["results"]) == 5
    assert {r["revision"] for r in per_revision["results"]} <= set(seeded.revisions)

    drift = client.get(f"/api/v1/services/{seeded.service.pk}/drift/", {"page_size": 2}).json()
    assert drift["count"] == 3 and drift["next"]
    latest = drift["results"][0]
    assert latest["id"] == seeded.reports[-1].pk and latest["drifted"] is True
    assert latest["unreadable"] == [{"key": "capture/bad.parquet", "reason": "not a Parquet file"}]
    assert {f["feature"]: f["drifted"] for f in latest["features"]} == {
        "mean radius": True,
        "mean texture": True,
        "mean area": False,
    }

    alerts = client.get("/api/v1/alerts/").json()
    assert {a["name"] for a in alerts["results"]} == {"p99_latency_ms", "drift"}
    assert client.get("/api/v1/alerts/", {"status": "all", "service": seeded.service.pk}).json()["count"] == 3
    refused = client.get("/api/v1/alerts/", {"status": "maybe"})
    assert refused.status_code == 400 and "status" in refused.json()["error"]["fields"]
    assert client.get("/api/v1/services/999999/metrics/").status_code == 404
    for unknown in ("999999", "nope"):
        refused = client.get("/api/v1/alerts/", {"service": unknown})
        assert refused.status_code == 400 and "service" in refused.json()["error"]["fields"], refused.content
    # A page holds the whole 1h window (61 minutes): the latest minutes are not on page 2.
    whole = client.get(f"/api/v1/services/{seeded.service.pk}/metrics/", {"window": "1h"}).json()
    assert whole["next"] is None and len(whole["results"]) == whole["count"] >= 60
    assert whole["results"][-1]["requests_per_s"] is None  # the minute in progress
    assert "client_error_rate" in whole["results"][0] and "client_error_rate" in whole["summary"]

    schema = client.get("/api/v1/schema/", HTTP_ACCEPT="application/json").json()
    for path in ("/api/v1/services/{id}/metrics/", "/api/v1/services/{id}/drift/", "/api/v1/alerts/"):
        assert path in schema["paths"], sorted(schema["paths"])


def test_only_people_with_a_role_see_monitoring(users, seeded: Seeded) -> None:
    pk = seeded.service.pk
    pages = ["/monitoring/", "/monitoring/alerts/", f"/services/{pk}/monitoring/", f"/services/{pk}/drift/"]
    outsider = signed_in(users.outsider)
    for url in pages:
        assert outsider.get(url).status_code == 403, url
        assert Client().get(url).status_code == 302, url
    assert not parse(outsider.get("/").content).has(data_testid="alert-banner")
    token = api(users.outsider)
    for url in (f"/api/v1/services/{pk}/metrics/", f"/api/v1/services/{pk}/drift/", "/api/v1/alerts/"):
        assert token.get(url).status_code == 403, url
        assert APIClient().get(url).status_code == 401, url
    assert signed_in(users.finance).get(f"/services/{pk}/drift/").status_code == 200
    assert signed_in(users.admin).get("/services/999999/drift/").status_code == 404


def test_rates_read_as_numbers_and_a_window_ending_now_leaves_the_step_in_progress_out(seeded: Seeded) -> None:
    from monitoring.selectors import metric_series
    from monitoring.templatetags.monitoring import per_second

    assert [per_second(v) for v in (None, 0, 1.16e-05, 0.1234, 2.666, 12.34, 1234.6)] == [
        "—",
        "0",
        "<0.01",
        "0.12",
        "2.67",
        "12.3",
        "1,235",
    ]
    # Ten minutes ending now, and the same ten minutes seen an hour later: only then is the last minute complete.
    end = seeded.now
    start = end - timedelta(minutes=10)
    live = metric_series(service=seeded.service, start=start, end=end, now=end)["series"]["all"]
    later = metric_series(service=seeded.service, start=start, end=end, now=end + timedelta(hours=1))["series"]["all"]
    assert live["requests_per_s"][-1] is None and later["requests_per_s"][-1] is not None
    # Only steps at the end are still reporting: the one in progress, and in the first SERVING_METRICS_FLUSH_SECONDS
    # of a step the one before it too (its last reports may still be on their way).
    rates = live["requests_per_s"]
    reporting = len(rates) - rates.index(None)
    assert all(v is None for v in rates[-reporting:]) and reporting <= 2, rates
    assert rates[:-reporting] == later["requests_per_s"][:-reporting] and live["requests"] == later["requests"]


def test_the_environment_page_says_when_its_settings_apply_and_retrain_says_when_the_data_is_the_same(
    users, seeded: Seeded
) -> None:
    from deployments.forms import EnvironmentForm
    from lineage.models import DatasetVersion, RunInput

    environment = seeded.service.environment
    type(environment).objects.filter(pk=environment.pk).update(bake_minutes=1)
    page = signed_in(users.admin).get(f"/environments/{environment.name}/")
    assert page.status_code == 200
    text = page.content.decode()
    assert "1 minute<" in text and "1 minutes" not in text
    assert "next deployment" in parse(page.content).find(data_testid="next-deployment-note").text()
    assert "next deployment" in str(EnvironmentForm.base_fields["capture_fraction"].help_text)
    # Trained on the newest version of its data: the page says a retrain would use the same data.
    newest = DatasetVersion.objects.order_by("-number").first()
    assert newest is not None
    RunInput.objects.filter(channel="train").update(dataset_version=newest)
    drift = parse(signed_in(users.data_scientist).get(f"/services/{seeded.service.pk}/drift/").content)
    assert "a retrain would use the same data" in drift.find(data_testid="retrain-message").text()


def test_a_service_serving_for_minutes_opens_on_the_last_hour_at_its_real_rate(users: Any) -> None:
    """Five whole minutes at 2 requests/s: the Latency tab opens on the last hour, and the rate reads 2.00/s over
    the 5 min with data, not "<0.01" over a day. Once it has served for more than a day, it opens on the day."""
    seeded = seed_service(users, name="young", slug="young")
    MetricPoint.objects.filter(service=seeded.service).delete()
    last = timezone.now().replace(second=0, microsecond=0) - timedelta(minutes=2)
    revision = seeded.revisions[0]
    for minutes in range(5):
        MetricPoint.objects.create(
            service=seeded.service,
            revision=revision,
            start=last - timedelta(minutes=minutes),
            requests=120,
            latency_counts=counts(ms_1=120),
        )
    url = f"/services/{seeded.service.pk}/monitoring/"
    page = parse(signed_in(users.finance).get(url).content)
    chosen = page.find("select", data_testid="window-select").find("option", selected="")
    assert chosen.attrs["value"] == "1h"
    row = page.find("table", data_testid="revision-summary").find("tr", data_revision="")
    rate = row.find(data_testid="requests-per-s")
    assert float(rate.attrs["data-value"]) == pytest.approx(2.0)
    assert rate.text() == "2.00 over the 5 min with data"
    # The whole window's average is still what the API gives as requests_per_s.
    body = api(users.finance).get(f"/api/v1/services/{seeded.service.pk}/metrics/", {"window": "1h"}).json()
    assert body["summary"]["requests_per_s"] == pytest.approx(600 / 3600)
    # Served for more than a day: the day.
    MetricPoint.objects.create(
        service=seeded.service,
        revision=revision,
        start=last - timedelta(days=2),
        requests=1,
        latency_counts=counts(ms_1=1),
    )
    page = parse(signed_in(users.finance).get(url).content)
    assert page.find("select", data_testid="window-select").find("option", selected="").attrs["value"] == "24h"


def test_a_single_drift_report_spans_its_window_on_the_heatmap(users, seeded: Seeded) -> None:
    """With several reports the columns are placed at their window ends; one report alone gets its window as the
    column (its start to its end), not a zero-width axis."""
    url = f"/services/{seeded.service.pk}/drift/"
    assert json_scripts(signed_in(users.data_scientist).get(url).content)["drift-heatmap"]["x_edges"] is None
    kept = seeded.reports[-1]
    DriftReport.objects.filter(service=seeded.service).exclude(pk=kept.pk).delete()
    heatmap = json_scripts(signed_in(users.data_scientist).get(url).content)["drift-heatmap"]
    assert [_at(t) for t in heatmap["x"]] == [kept.window_end]
    assert [_at(t) for t in heatmap["x_edges"]] == [kept.window_start, kept.window_end]
