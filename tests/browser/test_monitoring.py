"""Monitoring in Chromium: the overview's figures per service and per revision over a chosen window, a service's
charts drawn by plotly with the merged histograms' percentiles and a marker at every deployment and rollback, its
drift heatmap and histograms, a bad window refused on the page, and no page scrolls sideways at a laptop's or a
phone's size."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.monitoring.seeded import merged_percentile, seed_alerts, seed_drift, seed_service

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SHOTS = Path(__file__).resolve().parents[2] / "test-results" / "monitoring"
# What plotly holds for a chart: its traces (name, y), its shapes (the markers) and whether it drew an SVG.
PLOTTED = """el => ({
  traces: el.data.map(t => ({
    name: t.name, type: t.type, x: t.x, y: t.y, z: t.z, customdata: t.customdata, visible: t.visible,
  })),
  shapes: (el.layout.shapes || []).map(s => ({x: s.x0, dash: s.line.dash})),
  drawn: !!el.querySelector('.main-svg'),
})"""


CHARTS_FIT = """() => [...document.querySelectorAll('[data-figure] .main-svg')].every(
  svg => svg.getBoundingClientRect().width <= svg.closest('[data-figure]').offsetWidth + 1)"""


def plotted(page: Any, testid: str) -> dict[str, Any]:
    element = page.locator(f'[data-testid="{testid}"][data-drawn="1"]')
    element.wait_for()
    return element.evaluate(PLOTTED)  # type: ignore[no-any-return]


def widths(page: Any, name: str) -> dict[tuple[int, int], int]:
    """The page's width at a laptop's and a phone's size (it must not scroll sideways); a screenshot of a size that
    does (full-page screenshots cost a second each on a busy machine)."""
    found = {}
    for size in ((1280, 800), (390, 844)):
        page.set_viewport_size({"width": size[0], "height": size[1]})
        page.wait_for_timeout(150)  # plotly's responsive resize runs on the window's resize event
        found[size] = int(page.evaluate("document.documentElement.scrollWidth"))
        # And plotly redraws each chart to its box's new width (until then the box clips it).
        page.wait_for_function(CHARTS_FIT)
        if found[size] != size[0]:
            SHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SHOTS / f"{name}-{size[0]}x{size[1]}.png"), full_page=True)
    page.set_viewport_size({"width": 1280, "height": 800})
    return found


def test_charts_markers_and_heatmap_are_drawn_with_the_seeded_numbers(page, sign_in, users) -> None:
    seeded = seed_service(users)
    reports = seed_drift(seeded)
    seed_alerts(seeded)
    sign_in(users.data_scientist)
    assert page.get_by_test_id("alert-banner").get_by_test_id("alert").count() == 2
    # The overview, from the menu: the last hour, the service's row and one per revision (both served in it).
    page.get_by_test_id("main-nav").get_by_role("link", name="Monitoring").click()
    table = page.get_by_test_id("monitoring-table")
    row = table.locator('tr[data-service="bc-staging"][data-revision=""]')
    assert row.get_by_test_id("open-alerts").inner_text() == "2"
    fast, slow = seeded.revisions
    revisions = table.locator('tr.revision[data-service="bc-staging"]')
    assert [revisions.nth(i).get_attribute("data-revision") for i in range(revisions.count())] == [fast, slow]
    assert float(row.get_by_test_id("p95").get_attribute("data-value") or "nan") == pytest.approx(
        merged_percentile(seeded.points, 0.95)
    )
    slow_points = [p for p in seeded.points if p.revision == slow]
    slow_p50 = revisions.nth(1).get_by_test_id("p50").get_attribute("data-value") or "nan"
    assert float(slow_p50) == pytest.approx(merged_percentile(slow_points, 0.5))
    assert widths(page, "overview") == {(1280, 800): 1280, (390, 844): 390}
    requests = sum(p.requests for p in seeded.points)

    def shown_rate() -> float:
        return float(row.get_by_test_id("requests-per-s").get_attribute("data-value") or "nan")

    assert shown_rate() == pytest.approx(requests / 3600)
    # The window is chosen as on the service page: the last day averages the same requests over a day…
    page.get_by_test_id("window-select").select_option("24h")
    with page.expect_navigation():
        page.get_by_role("button", name="Show").click()
    assert "window=24h" in page.url and shown_rate() == pytest.approx(requests / 86400)
    assert revisions.count() == 2
    # …the service's link keeps it…
    assert row.get_by_role("link", name="bc-staging").get_attribute("href") == (
        f"/services/{seeded.service.pk}/monitoring/?window=24h"
    )
    # …a custom window of the last ten minutes, when only the first revision served, has no rows per revision…
    end = seeded.now.replace(second=0, microsecond=0)
    start = end - timedelta(minutes=10)
    page.get_by_test_id("window-select").select_option("custom")
    page.get_by_test_id("window-start").fill(start.strftime("%Y-%m-%dT%H:%M"))
    page.get_by_test_id("window-end").fill(end.strftime("%Y-%m-%dT%H:%M"))
    with page.expect_navigation():
        page.get_by_role("button", name="Show").click()
    inside = [p for p in seeded.points if start <= p.start < end]
    assert shown_rate() == pytest.approx(sum(p.requests for p in inside) / 600)
    assert revisions.count() == 0
    assert page.get_by_test_id("window-start").input_value() == start.strftime("%Y-%m-%dT%H:%M")
    # …and at a phone's size the form and the table fit; the table scrolls inside its box, with a hint, and every
    # column header can be scrolled to.
    assert widths(page, "overview-custom") == {(1280, 800): 1280, (390, 844): 390}
    page.set_viewport_size({"width": 390, "height": 844})
    assert page.get_by_test_id("scroll-hint").is_visible()
    form = page.get_by_test_id("window-form").bounding_box()
    assert form is not None and form["x"] >= 0 and form["x"] + form["width"] <= 391, form
    headers = page.locator('[data-testid="monitoring-table"] th')
    assert headers.count() == 10
    for i in range(headers.count()):
        header = headers.nth(i)
        header.scroll_into_view_if_needed()
        box = header.bounding_box()
        assert box is not None and box["x"] >= -1 and box["x"] + min(box["width"], 100) <= 391, (i, box)
    assert int(page.evaluate("document.documentElement.scrollWidth")) == 390
    # A window that ends before it starts is refused, naming the field, and no figures are shown.
    page.get_by_test_id("window-start").fill("2026-12-01T10:00")
    page.get_by_test_id("window-end").fill("2026-12-01T09:00")
    with page.expect_navigation():
        page.get_by_role("button", name="Show").click()
    refusal = page.get_by_test_id("window-errors").inner_text()
    assert "end: must be after start (2026-12-01T10:00:00Z), got 2026-12-01T09:00:00Z" in refusal, refusal
    assert table.count() == 0
    assert int(page.evaluate("document.documentElement.scrollWidth")) == 390
    page.set_viewport_size({"width": 1280, "height": 800})

    # Latency, errors and throughput over the last hour.
    page.goto(f"/services/{seeded.service.pk}/monitoring/?window=1h")
    latency = plotted(page, "chart-latency")
    assert latency["drawn"]
    step = 60 * round(
        (datetime.fromisoformat(latency["traces"][0]["x"][1]) - datetime.fromisoformat(latency["traces"][0]["x"][0]))
        / timedelta(minutes=1)
    )
    starts = [datetime.fromisoformat(x) for x in latency["traces"][0]["x"]]
    steps = [[p for p in seeded.points if s <= p.start < s + timedelta(seconds=step)] for s in starts]
    p99 = next(t for t in latency["traces"] if t["name"] == "all revisions p99")
    expected = [merged_percentile(points, 0.99) if points else None for points in steps]
    assert [None if v is None else pytest.approx(v) for v in p99["y"]] == expected
    # The slow revision's p99 line is drawn, its p50 waits in the legend.
    revision_two = {t["name"].rsplit(" ", 1)[1]: t["visible"] for t in latency["traces"] if t["name"].startswith("v2")}
    assert revision_two == {"p50": "legendonly", "p95": "legendonly", "p99": True}
    # A marker per deployment (dashed) and the rollback (dotted), on every chart.
    assert [s["dash"] for s in latency["shapes"]] == ["dash", "dash", "dot"]
    marked = [datetime.fromisoformat(s["x"]) for s in latency["shapes"]]
    made = seeded.service.deployments.order_by("created_at").values_list("created_at", flat=True)
    assert marked == [moment.replace(microsecond=0) for moment in made]  # markers are to the second
    throughput = plotted(page, "chart-throughput")
    assert len(throughput["shapes"]) == 3 and throughput["drawn"]
    rates = next(t["y"] for t in throughput["traces"] if t["name"] == "all revisions")
    # The step in progress is a gap (its minutes are still arriving), the others are every seeded request.
    assert rates[-1] is None
    done = [p.requests for p in seeded.points if p.start < starts[-1]]
    assert sum(r * step for r in rates[:-1]) == pytest.approx(sum(done))
    assert len(plotted(page, "chart-errors")["shapes"]) == 3
    assert widths(page, "service-metrics") == {(1280, 800): 1280, (390, 844): 390}

    # A custom window that ends before it starts: named on the page, nothing drawn.
    page.get_by_test_id("window-select").select_option("custom")
    page.get_by_test_id("window-start").fill("2026-12-01T10:00")
    page.get_by_test_id("window-end").fill("2026-12-01T09:00")
    with page.expect_navigation():
        page.get_by_role("button", name="Show").click()
    refusal = page.get_by_test_id("window-errors").inner_text()
    assert "end: must be after start (2026-12-01T10:00:00Z), got 2026-12-01T09:00:00Z" in refusal, refusal
    assert page.locator("[data-figure]").count() == 0

    # Drift: the heatmap of every report's scores, and each feature's baseline against current.
    page.goto(f"/services/{seeded.service.pk}/drift/")
    heatmap = plotted(page, "drift-heatmap")
    assert heatmap["drawn"] and heatmap["traces"][0]["type"] == "heatmap"
    features = heatmap["traces"][0]["y"]
    drifted = [[r.features.get(feature=f).drifted for r in reports] for f in features]
    assert [[z > 1 for z in row] for row in heatmap["traces"][0]["z"]] == drifted
    assert heatmap["traces"][0]["customdata"] == [
        [
            [r.features.get(feature=f).score, r.features.get(feature=f).threshold, r.features.get(feature=f).method]
            for r in reports
        ]
        for f in features
    ]
    assert page.locator('[data-testid="drift-histograms"] [data-figure][data-drawn="1"]').count() == 3
    first = page.locator('[data-testid="drift-histograms"] [data-figure]').first.evaluate(PLOTTED)
    assert [t["name"] for t in first["traces"]] == ["baseline", "current"] and first["traces"][0]["y"] == [
        0.25,
        0.5,
        0.25,
    ]
    assert page.get_by_test_id("retrain").is_visible()
    assert widths(page, "service-drift") == {(1280, 800): 1280, (390, 844): 390}


def test_a_single_drift_report_is_drawn_over_its_window_not_a_millisecond(page, sign_in, users) -> None:
    from monitoring.models import DriftReport

    seeded = seed_service(users)
    reports = seed_drift(seeded)
    kept = reports[-1]
    DriftReport.objects.filter(service=seeded.service).exclude(pk=kept.pk).delete()
    sign_in(users.data_scientist)
    page.goto(f"/services/{seeded.service.pk}/drift/")
    plotted(page, "drift-heatmap")
    chart = page.locator('[data-testid="drift-heatmap"]')
    shown = chart.evaluate("el => el._fullLayout.xaxis.range.map(v => new Date(v.replace(' ', 'T') + 'Z').getTime())")
    window = (kept.window_end - kept.window_start).total_seconds() * 1000
    assert shown[1] - shown[0] >= window * 0.99, shown
    ticks = chart.locator(".xtick text").all_text_contents()
    assert ticks and not any("." in tick for tick in ticks), ticks
