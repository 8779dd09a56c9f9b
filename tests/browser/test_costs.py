"""The cost dashboard in Chromium as finance: plotly draws the stacked bars with the table's numbers and the
forecast band, changing the grouping and the period redraws both, the CSV downloaded is the table, and the page
has a title and never scrolls sideways at a laptop's or a phone's size."""

from __future__ import annotations

import csv
import io
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from monitoring.costs import dashboard, selectors
from monitoring.models import CostForecast
from tests.monitoring.cost_world import seed_costs

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SHOTS = Path(__file__).resolve().parents[2] / "test-results" / "costs"
TRACES = "el => el.data.map(t => ({name: t.name, type: t.type, x: t.x, y: t.y, customdata: t.customdata}))"
CELLS = """() => [...document.querySelectorAll('[data-testid=cost-table] tbody td[data-nonzero]')].map(td => [
  td.closest('tr').dataset.period, td.dataset.group, td.dataset.amount, td.dataset.estimated, td.innerText.trim()])"""
CHARTS_FIT = """() => [...document.querySelectorAll('[data-figure] .main-svg')].every(
  svg => svg.getBoundingClientRect().width <= svg.closest('[data-figure]').offsetWidth + 1)"""


def expected_cells(start: Any, end: Any, granularity: str, group_by: str) -> dict[tuple[str, str], str]:
    table = selectors.cost_table(start=start, end=end, granularity=granularity, group_by=group_by)
    places = dashboard.places_for(table)
    return {
        (dashboard.period_label(bucket, granularity), group): dashboard.money(table.amounts[group][i], places)
        for i, bucket in enumerate(table.buckets)
        for group in table.groups
        if table.amounts[group][i]
    }


def drawn(page: Any) -> list[dict[str, Any]]:
    chart = page.locator('[data-testid="cost-chart"][data-drawn="1"]')
    chart.wait_for()
    chart.locator(".main-svg").first.wait_for()
    return chart.evaluate(TRACES)  # type: ignore[no-any-return]


def cells(page: Any) -> dict[tuple[str, str], str]:
    return {(period, group): amount for period, group, amount, _, _ in page.evaluate(CELLS)}


def show(page: Any, **fields: str) -> None:
    for name, value in fields.items():
        control = page.get_by_test_id(f"cost-{name.replace('_', '-')}")
        if name in ("granularity", "group_by"):
            control.select_option(value)
        else:
            control.fill(value)
    with page.expect_navigation():
        page.get_by_test_id("cost-period-form").get_by_role("button", name="Show").click()


def layout_checked(page: Any, name: str) -> dict[tuple[int, int], int]:
    SHOTS.mkdir(parents=True, exist_ok=True)
    found = {}
    for size in ((1280, 800), (390, 844)):
        page.set_viewport_size({"width": size[0], "height": size[1]})
        page.wait_for_function(CHARTS_FIT)
        found[size] = int(page.evaluate("document.documentElement.scrollWidth"))
        page.screenshot(path=str(SHOTS / f"{name}-{size[0]}x{size[1]}.png"), full_page=True)
    page.set_viewport_size({"width": 1280, "height": 800})
    return found


def test_finance_reads_changes_and_exports_the_cost_dashboard(page, sign_in, users) -> None:
    world = seed_costs()
    today = dashboard.today()
    month = today.replace(day=1)
    rest = [
        month + timedelta(days=i) for i in range(selectors.days_in_month(month)) if month + timedelta(days=i) >= today
    ]
    CostForecast.objects.create(
        month=month,
        source="estimate",
        available=True,
        actual=Decimal("0"),
        mean=Decimal("3"),
        low=Decimal("1"),
        high=Decimal("5"),
        points=[{"day": d.isoformat(), "mean": "0.1", "low": "0.05", "high": "0.2"} for d in rest],
        computed_at=timezone.now(),
    )
    sign_in(users.finance)
    page.get_by_test_id("main-nav").get_by_role("link", name="Costs").click()
    page.wait_for_url("**/costs/")
    assert page.title() == "Costs · ControlPlane"
    # This month to date: the forecast continues the chart, labelled with its band.
    names = [t["name"] for t in drawn(page)]
    assert "forecast (80% band)" in names and "forecast (mean)" in names
    assert "spent so far 0.00 + the rest of the month 3.00" in page.get_by_test_id("forecast-summary").inner_text()
    assert layout_checked(page, "this-month") == {(1280, 800): 1280, (390, 844): 390}

    # Last month, daily, by project.
    last = selectors.next_month(world.month) - timedelta(days=1)
    show(page, start=world.month.isoformat(), end=last.isoformat())
    end = selectors.next_month(world.month)
    expected = expected_cells(world.month, end, "day", "project")
    assert cells(page) == expected
    traces = drawn(page)
    # Each group's bar: the bill's part, then the estimated part (hatched); both say the group's whole figure.
    assert [t["name"] for t in traces] == ["alpha", "alpha (estimated)", "beta", "beta (estimated)"]
    parts = {t["name"]: t for t in traces}
    for group in ("alpha", "beta"):
        billed, estimated = parts[group], parts[f"{group} (estimated)"]
        for i, x in enumerate(billed["x"]):
            whole = billed["customdata"][i][0]
            assert (whole == 0) == ((x, group) not in expected)
            assert billed["y"][i] + estimated["y"][i] == pytest.approx(whole)
            if whole:
                assert f"{Decimal(str(whole)):.2f}" == expected[(x, group)]
    assert parts["alpha"]["y"][0] == 10.0 and parts["alpha (estimated)"]["y"][0] == 1.25
    first_cell = page.locator(f'tr[data-period="{world.first.isoformat()}"] td[data-group="alpha"]')
    assert first_cell.inner_text() == "11.25 incl. est. 1.25"
    assert page.get_by_test_id("table-total").inner_text() == "14.08"
    assert f"covers up to {world.first.isoformat()}" in page.get_by_test_id("cost-basis").inner_text()

    # By model: other columns, the same total.
    show(page, group_by="model")
    assert cells(page) == expected_cells(world.month, end, "day", "model")
    assert page.locator("[data-testid=cost-table] thead th[data-group]").all_inner_texts() == ["churn", "fraud"]
    assert [t["name"] for t in drawn(page) if "(estimated)" not in t["name"]] == ["churn", "fraud"]
    # The legend names each group once (its estimated part shares the entry).
    legend = page.locator('[data-testid="cost-chart"] .legend .traces .legendtext').all_text_contents()
    assert legend == ["churn", "fraud"]

    # Monthly: one row, the month.
    show(page, granularity="month")
    monthly = expected_cells(world.month, end, "month", "model")
    assert (
        cells(page)
        == monthly
        == {(f"{world.month:%Y-%m}", "churn"): "11.58", (f"{world.month:%Y-%m}", "fraud"): "2.50"}
    )
    assert page.locator("[data-testid=cost-table] tbody tr").count() == 1
    assert page.get_by_test_id("table-total").inner_text() == "14.08"

    # The CSV downloaded is the table.
    with page.expect_download() as info:
        page.get_by_test_id("cost-export").click()
    download = info.value
    assert download.suggested_filename.endswith("-month-model.csv")
    rows = list(csv.reader(io.StringIO(Path(download.path()).read_text())))
    assert rows[0] == ["period", "group", "amount_usd", "estimated_usd", "billed_usd"]
    shown = {(period, group): (amount, estimated) for period, group, amount, estimated, _ in page.evaluate(CELLS)}
    assert {(r[0], r[1]): (r[2], r[3]) for r in rows[1:] if (r[0], r[1]) in shown} == shown
    assert rows[-1][:3] == ["Total", "Total", "14.08"]
    assert layout_checked(page, "last-month-by-model") == {(1280, 800): 1280, (390, 844): 390}


def test_a_bad_period_is_refused_on_the_page(page, sign_in, users) -> None:
    sign_in(users.finance)
    page.goto("/costs/?start=2026-03-10&end=2026-03-01")
    errors = page.get_by_test_id("cost-errors")
    assert "end: must be on or after the start (2026-03-10)" in errors.inner_text()
    assert page.get_by_test_id("cost-chart").count() == 0
    assert page.title() == "Costs · ControlPlane"
    assert layout_checked(page, "bad-period") == {(1280, 800): 1280, (390, 844): 390}


def test_finance_sets_a_budget_and_sees_it_against_the_month(page, sign_in, users) -> None:
    from controlplane import services as controlplane_services

    controlplane_services.project_create(actor=users.admin, name="Alpha", slug="alpha")
    sign_in(users.finance)
    page.goto("/costs/budgets/")
    form = page.get_by_test_id("budget-form")
    form.get_by_label("Amount (USD per month)").fill("0")
    form.get_by_role("button", name="Save budget").click()
    assert "must be more than 0" in page.get_by_test_id("budget-form").locator('[data-field="amount"]').inner_text()
    form = page.get_by_test_id("budget-form")
    form.get_by_label("Project").select_option("alpha")
    form.get_by_label("Amount (USD per month)").fill("250")
    form.get_by_label("Alert thresholds (%)").fill("50, 100")
    form.get_by_role("button", name="Save budget").click()
    row = page.locator('[data-testid=budget-table] tr[data-project="alpha"]')
    assert row.get_by_test_id("budget-amount").inner_text() == "250.00"
    assert row.get_by_test_id("budget-thresholds").inner_text() == "50%, 100%, forecast"
    assert layout_checked(page, "budgets") == {(1280, 800): 1280, (390, 844): 390}
    row.get_by_test_id("budget-delete").click()
    page.get_by_text("Deleted the budget of Alpha (250.00 USD a month).").wait_for()
    assert page.locator('[data-testid=budget-table] tr[data-project="alpha"]').count() == 0


def test_sync_now_runs_on_a_real_worker_and_the_panel_follows_it(page, sign_in, users, celery_worker) -> None:
    from datetime import timedelta

    from django.utils import timezone

    from controlplane import services as controlplane_services
    from monitoring.models import CostSync
    from tests.fixtures.costs import make_run

    # A run that finished a minute ago: the sync estimates it, and the dashboard shows it once the sync is done.
    project = controlplane_services.project_create(actor=users.admin, name="Synced", slug="synced")
    now = timezone.now()
    make_run(
        project,
        users.data_scientist,
        started=now - timedelta(minutes=2),
        finished=now - timedelta(minutes=1),
        cost="0.5",
        output_name="synced-model",
    )
    sign_in(users.finance)
    page.goto("/costs/?group_by=model")
    assert page.locator("[data-testid=cost-table] thead th[data-group='synced-model']").count() == 0
    with page.expect_navigation():
        page.get_by_test_id("sync-now-estimate").click()
    # Back on the dashboard with the period it showed.
    assert page.url.endswith("&granularity=day&group_by=model")
    sync = CostSync.objects.get(source="estimate")
    # The flash says the sync is queued while the panel follows it (a sync over before the page loaded has none).
    polling, flash = page.evaluate(
        """() => [!!document.querySelector('[data-testid=cost-syncs][hx-trigger]'),
                  [...document.querySelectorAll('.messages li.progress')].map(li => li.innerText).join(' ')]"""
    )
    assert (f"sync {sync.pk} is queued" in flash) if polling else flash == "", (polling, flash)
    # The panel refreshes itself while the sync works, until it ends: no reload.
    row = page.locator(f'[data-testid=cost-syncs] tr[data-sync="{sync.pk}"]')
    row.get_by_test_id("sync-status").filter(has_text="succeeded").wait_for(timeout=90_000)
    assert "estimating runs over" in row.get_by_test_id("sync-steps").inner_text()
    assert page.locator("[data-testid=cost-syncs][hx-trigger]").count() == 0
    assert CostSync.objects.get(pk=sync.pk).status == "succeeded"
    # Nothing follows the sync any more: the "queued" flash is gone rather than sitting above "succeeded".
    page.locator(".messages li.progress").wait_for(state="detached")
    assert "is queued" not in page.locator("main").inner_text()
    # Once the sync ended the page shows its figures without a reload by the user (the panel's last poll asks
    # htmx to refresh the page; a sync quicker than the redirect is already in the page it lands on).
    page.locator("[data-testid=cost-table] thead th[data-group='synced-model']").wait_for(timeout=15_000)
    assert page.url.endswith("&granularity=day&group_by=model")


def test_a_group_named_like_html_is_shown_as_its_text(page, sign_in, users) -> None:
    from monitoring.costs import services
    from tests.monitoring.cost_world import estimate, last_month

    month = last_month()
    name = '<b>bold</b><img src=x onerror="document.title=1">'
    services.estimates_store(
        [estimate(month, name, "m", "e", "AmazonECS", "2")], start=month, end=selectors.next_month(month)
    )
    services.rollup_months([month])
    sign_in(users.finance)
    page.goto(f"/costs/?start={month.isoformat()}&end={month.isoformat()}")
    drawn(page)
    legend = page.locator('[data-testid="cost-chart"] .legend .traces .legendtext')
    assert legend.all_text_contents() == [name]
    assert page.locator('[data-testid="cost-chart"] .legend b, [data-testid="cost-chart"] img').count() == 0
    assert page.locator("[data-testid=cost-table] thead th[data-group]").all_inner_texts() == [name]
    assert page.title() == "Costs · ControlPlane"
