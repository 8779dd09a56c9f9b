"""Monitoring in Chromium: a service's charts are drawn by plotly with the merged histograms' percentiles and a
marker at every deployment and rollback, its drift heatmap and histograms are drawn, a bad window is refused on the
page, and neither page scrolls sideways at a laptop's or a phone's size."""

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
    # The overview, from the menu: the service's last hour.
    page.get_by_test_id("main-nav").get_by_role("link", name="Monitoring").click()
    row = page.locator('[data-testid="monitoring-table"] tr[data-service="bc-staging"]')
    assert row.get_by_test_id("open-alerts").inner_text() == "2"
    assert widths(page, "overview") == {(1280, 800): 1280, (390, 844): 390}
    # On a phone the table scrolls inside its box, with a hint, and every column header can be scrolled to.
    page.set_viewport_size({"width": 390, "height": 844})
    assert page.get_by_test_id("scroll-hint").is_visible()
    headers = page.locator('[data-testid="monitoring-table"] th')
    assert headers.count() == 8
    for i in range(headers.count()):
        header = headers.nth(i)
        header.scroll_into_view_if_needed()
        box = header.bounding_box()
        assert box is not None and box["x"] >= -1 and box["x"] + min(box["width"], 100) <= 391, (i, box)
    assert int(page.evaluate("document.documentElement.scrollWidth")) == 390
    page.set_viewport_size({"width": 1280, "height": 800})
    assert not page.get_by_test_id("scroll-hint").is_visible()

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
