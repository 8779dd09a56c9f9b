"""The Content-Security-Policy in Chromium: the main pages load with no violation reported (no inline script,
handler or style refused, nothing fetched from elsewhere), their charts are still drawn with plotly's own rules
applied from the static stylesheet, and the handler moved out of the lineage page still works."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.history import make_history
from tests.monitoring.seeded import seed_drift, seed_service

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# Runs before any page script (Playwright injects it, so the policy does not apply to it).
RECORD_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", e => window.__cspViolations.push(
  `${e.effectiveDirective} blocked ${e.blockedURI || "inline"} at ${e.sourceFile}:${e.lineNumber} ${e.sample}`));
"""
CHARTS_DRAWN = """() => [...document.querySelectorAll('[data-figure]')].every(
  el => el.dataset.drawn === '1' && el.querySelector('.main-svg'))"""


def test_main_pages_load_with_no_csp_violation_and_charts_drawn(page: Any, sign_in: Any, users: Any, tmp_path: Path):
    history = make_history(users, tmp_path)
    seeded = seed_service(users)
    seed_drift(seeded)
    service = seeded.service.pk
    pages = {
        "home": "/",
        "dataset version": "/datasets/penguins/penguins/v1/",
        "run": f"/runs/{history['run'].pk}/",
        "model version": "/models/penguins/penguins-random-forest/v1/",
        "lineage": f"/lineage/{history['version'].node_id}/",
        "service metrics": f"/services/{service}/monitoring/?window=1h",
        "service drift": f"/services/{service}/drift/",
        "costs": "/costs/",
        "approvals": "/approvals/",
        "register a dataset": "/datasets/register/",
        "API docs": "/docs/api/",
    }
    console: list[str] = []
    page.on("console", lambda message: console.append(message.text))
    page.add_init_script(RECORD_VIOLATIONS)
    sign_in(users.admin)
    charts = {}
    for name, address in pages.items():
        response = page.goto(address)
        assert response is not None and response.ok, (name, response and response.status)
        assert "script-src 'self'" in response.headers["content-security-policy"], name
        page.wait_for_load_state("load")
        page.wait_for_function(CHARTS_DRAWN)
        charts[name] = page.locator("[data-figure] .main-svg").count()
        if name == "API docs":
            page.locator(".swagger-ui .info").wait_for()
        violations = page.evaluate("window.__cspViolations")
        assert violations == [], (name, violations)
    refused = [text for text in console if "Content Security Policy" in text or "Refused to" in text]
    assert refused == []
    # The pages with charts drew them all (each chart is one or more plotly SVG layers).
    for name in ("dataset version", "run", "service metrics", "service drift"):
        assert charts[name] > 0, (name, charts)
    # plotly.js's rules came from static/css/plotly.css: its mode bar is laid over the chart, as its rule says.
    page.goto(f"/services/{service}/monitoring/?window=1h")
    page.wait_for_function(CHARTS_DRAWN)
    assert page.locator(".js-plotly-plot .modebar").first.evaluate("el => getComputedStyle(el).position") == "absolute"
    assert page.locator("style#plotly\\.js-style-global").count() == 0


def test_the_lineage_depth_select_applies_itself_without_an_inline_handler(
    page: Any, sign_in: Any, users: Any, tmp_path
):
    history = make_history(users, tmp_path)
    page.add_init_script(RECORD_VIOLATIONS)
    sign_in(users.data_scientist)
    page.goto(f"/lineage/{history['version'].node_id}/")
    select = page.locator('select[name="depth"]')
    other = [
        v for v in select.locator("option").evaluate_all("os => os.map(o => o.value)") if v != select.input_value()
    ]
    select.select_option(other[0])
    page.wait_for_url(re.compile(rf".*depth={other[0]}.*"))
    assert page.locator('select[name="depth"]').input_value() == other[0]
    assert page.evaluate("window.__cspViolations") == []
