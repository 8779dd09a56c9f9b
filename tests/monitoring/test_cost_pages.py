"""The finance pages on rows as the syncs write them: the dashboard's chart and table carry exactly cost_table's
numbers (rounded once, the same way as the CSV), the CSV is the table, a bad period is named and changes nothing,
budgets are set, changed and deleted by finance only (audited), and Sync now makes one sync however often it is
pressed at once."""

from __future__ import annotations

import csv
import io
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.test import Client

from controlplane import services as controlplane_services
from controlplane.models import AuditEvent
from monitoring.costs import dashboard, selectors
from monitoring.models import Budget, BudgetCrossing, CostForecast, CostSync
from tests.fixtures.page_html import json_scripts, parse
from tests.fixtures.races import race
from tests.monitoring.cost_world import CostWorld, seed_costs

pytestmark = pytest.mark.django_db


def signed_in(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def world(users: Any) -> CostWorld:
    return seed_costs()


def month_query(world: CostWorld, **extra: str) -> dict[str, str]:
    end = selectors.next_month(world.month) - timedelta(days=1)
    return {"start": world.month.isoformat(), "end": end.isoformat(), **extra}


def table_cells(content: bytes) -> dict[tuple[str, str], tuple[str, str]]:
    """(period, group) -> (amount, estimated) of every non-zero cell of the page's table."""
    table = parse(content).find("table", data_testid="cost-table")
    return {
        (row.attrs["data-period"], cell.attrs["data-group"]): (cell.attrs["data-amount"], cell.attrs["data-estimated"])
        for row in table.find("tbody").find_all("tr")
        for cell in row.find_all("td", data_nonzero="1")
    }


def csv_of(response: Any) -> list[list[str]]:
    return list(csv.reader(io.StringIO(response.content.decode())))


@pytest.mark.parametrize("group_by", ["project", "model", "environment", "aws_service"])
@pytest.mark.parametrize("granularity", ["day", "month"])
def test_the_dashboard_the_chart_and_the_csv_carry_cost_tables_numbers(
    users: Any, world: CostWorld, group_by: str, granularity: str
) -> None:
    client = signed_in(users.finance)
    query = month_query(world, group_by=group_by, granularity=granularity)
    response = client.get("/costs/", query)
    assert response.status_code == 200
    table = selectors.cost_table(
        start=world.month, end=selectors.next_month(world.month), granularity=granularity, group_by=group_by
    )
    assert table.total == Decimal("14.083333") and table.estimated_total == Decimal("4.083333")
    expected = {
        (dashboard.period_label(bucket, granularity), group): (
            str(table.amounts[group][i].quantize(Decimal("0.01"))),
            str(table.estimated[group][i].quantize(Decimal("0.01"))),
        )
        for i, bucket in enumerate(table.buckets)
        for group in table.groups
        if table.amounts[group][i]
    }
    cells = table_cells(response.content)
    assert cells == expected
    page = parse(response.content)
    assert page.find(data_testid="table-total").text() == "14.08"
    assert page.find(data_testid="cost-estimated-total").text() == "4.08"
    assert page.find(data_testid="cost-bill-total").text() == "10.00"
    # The bill covers the first day: the page says so.
    assert f"covers up to {world.first.isoformat()}" in page.find(data_testid="cost-basis").text()
    # The chart: one trace per group, the table's numbers per bucket.
    chart = json_scripts(response.content)["cost-chart"]
    assert [t["name"] for t in chart["traces"]] == table.groups
    for trace in chart["traces"]:
        for x, y, est in zip(chart["x"], trace["y"], trace["estimated"], strict=True):
            if y:
                assert (str(Decimal(str(y)).quantize(Decimal("0.01"))), f"{Decimal(str(est)):.2f}") == cells[
                    (x, trace["name"])
                ]
    # The CSV: the table cell for cell (zero cells too), the same rounding, linked from the page with the same query.
    link = page.find("a", data_testid="cost-export").attrs["href"]
    exported = client.get(link)
    assert exported.status_code == 200 and exported["Content-Disposition"].startswith("attachment;")
    rows = csv_of(exported)
    assert rows[0] == ["period", "group", "amount_usd", "estimated_usd", "billed_usd"]
    periods = [dashboard.period_label(bucket, granularity) for bucket in table.buckets]
    assert [(r[0], r[1]) for r in rows[1:]] == [
        *((p, g) for p in periods for g in [*table.groups, "Total"]),
        *(("Total", g) for g in [*table.groups, "Total"]),
    ]
    by_cell = {(r[0], r[1]): (r[2], r[3]) for r in rows[1:]}
    assert {key: value for key, value in by_cell.items() if key in cells} == cells
    zero = "0.00"
    assert all(by_cell[(p, g)] == (zero, zero) for p in periods for g in table.groups if (p, g) not in cells)
    # Each row's billed part is the rest of its figure, and the total rows are the page's totals.
    assert all(Decimal(r[4]) == Decimal(r[2]) - Decimal(r[3]) for r in rows[1:])
    assert by_cell[("Total", "Total")] == ("14.08", "4.08")
    footer = page.find("table", data_testid="cost-table").find("tfoot")
    assert [by_cell[("Total", g)][0] for g in table.groups] == [
        td.text() for td in footer.find_all("td", data_testid="group-total")
    ]
    body = page.find("table", data_testid="cost-table").find("tbody")
    assert [by_cell[(p, "Total")][0] for p in periods] == [
        td.text() for td in body.find_all("td", data_testid="row-total")
    ]


def test_small_figures_and_their_totals_add_up_on_the_page_and_in_the_csv(users: Any) -> None:
    """Three environments at fractions of a cent whose unrounded sum rounds up (0.00258 → 0.0026) while the
    rounded parts make 0.0025: the table shows the total of the rounded parts, and so does the CSV."""
    from monitoring.costs import services
    from tests.monitoring.cost_world import estimate, last_month

    month = last_month()
    services.estimates_store(
        [
            estimate(month, "demo", "m", "staging", "AmazonSageMaker", "0.00134"),
            estimate(month, "demo", "m", "production", "AmazonSageMaker", "0.00114"),
            estimate(month, "demo", "m", "dev", "AmazonSageMaker", "0.0001"),
        ],
        start=month,
        end=selectors.next_month(month),
    )
    services.rollup_months([month])
    query = {**month_query(CostWorld(month, month, month)), "granularity": "month", "group_by": "environment"}
    client = signed_in(users.finance)
    page = parse(client.get("/costs/", query).content)
    row = page.find("table", data_testid="cost-table").find("tbody").find("tr")
    parts = [Decimal(td.attrs["data-amount"]) for td in row.find_all("td", data_nonzero="1")]
    assert sorted(parts) == [Decimal("0.0001"), Decimal("0.0011"), Decimal("0.0013")]
    assert row.find(data_testid="row-total").text() == "0.0025" == str(sum(parts))
    assert page.find(data_testid="table-total").text() == "0.0025"
    assert page.find(data_testid="cost-total").text() == "0.0025"
    assert "hundredths of a cent" in page.find(data_testid="cost-rounding").text()
    rows = csv_of(client.get("/costs/export.csv", query))
    assert rows[-1] == ["Total", "Total", "0.0025", "0.0025", "0.0000"]
    month_rows = [r for r in rows[1:] if r[0] == f"{month:%Y-%m}" and r[1] != "Total"]
    assert sum(Decimal(r[2]) for r in month_rows) == Decimal("0.0025")


def test_by_project_daily_shows_the_estimated_part_of_each_figure(users: Any, world: CostWorld) -> None:
    response = signed_in(users.finance).get("/costs/", month_query(world))
    cells = table_cells(response.content)
    assert cells[(world.first.isoformat(), "alpha")] == ("11.25", "1.25")
    assert cells[(world.second.isoformat(), "beta")] == ("2.50", "2.50")
    assert cells[(world.second.isoformat(), "alpha")] == ("0.33", "0.33")
    row = parse(response.content).find("tr", data_period=world.first.isoformat())
    assert "incl. est. 1.25" in row.text()
    assert "est." in parse(response.content).find("tr", data_period=world.second.isoformat()).text()


def test_the_default_is_this_month_to_date_daily_by_project(users: Any, world: CostWorld) -> None:
    response = signed_in(users.data_scientist).get("/costs/")
    assert response.status_code == 200
    today = dashboard.today()
    page = parse(response.content)
    periods = [
        row.attrs["data-period"] for row in page.find("table", data_testid="cost-table").find("tbody").find_all("tr")
    ]
    assert periods == [(today.replace(day=1) + timedelta(days=i)).isoformat() for i in range(today.day)]
    assert page.find("input", data_testid="cost-start").attrs["value"] == today.replace(day=1).isoformat()
    # A data scientist sees figures but no Sync now.
    assert not page.has(data_testid="sync-now-estimate")


def test_an_empty_period_exports_its_zero_days_and_total_as_the_table_shows_them(users: Any, world: CostWorld) -> None:
    query = {"start": "2001-01-01", "end": "2001-01-03"}
    exported = signed_in(users.finance).get("/costs/export.csv", query)
    assert exported.status_code == 200
    assert exported.content.decode() == (
        "period,group,amount_usd,estimated_usd,billed_usd\n"
        "2001-01-01,Total,0.00,0.00,0.00\n"
        "2001-01-02,Total,0.00,0.00,0.00\n"
        "2001-01-03,Total,0.00,0.00,0.00\n"
        "Total,Total,0.00,0.00,0.00\n"
    )
    page = signed_in(users.finance).get("/costs/", query)
    assert page.status_code == 200 and parse(page.content).has(data_testid="cost-empty")
    periods = parse(page.content).find("table", data_testid="cost-table").find("tbody").find_all("tr")
    assert [row.attrs["data-period"] for row in periods] == ["2001-01-01", "2001-01-02", "2001-01-03"]


BAD = [
    ({"start": "2026-03-10", "end": "2026-03-01"}, "end", "must be on or after the start (2026-03-10)"),
    ({"start": "2024-01-01", "end": "2025-06-30"}, "end", "a daily view covers at most 366 days"),
    ({"start": "2020-01-01", "end": "2023-06-30", "granularity": "month"}, "end", "at most 36 months"),
    ({"group_by": "colour"}, "group_by", "must be one of project, aws_service, model, environment"),
    ({"granularity": "week"}, "granularity", "must be day or month, not 'week'"),
    ({"start": "yesterday"}, "start", "must be a date (YYYY-MM-DD), not 'yesterday'"),
    ({"end": "9999-12-31"}, "end", "must be from 1900-01-01 to 9998-12-31"),
]


@pytest.mark.parametrize(("query", "field", "message"), BAD)
def test_a_bad_period_is_named_on_the_page_in_the_csv_and_the_api_and_changes_nothing(
    users: Any, world: CostWorld, query: dict[str, str], field: str, message: str
) -> None:
    before = (AuditEvent.objects.count(), CostSync.objects.count(), Budget.objects.count())
    client = signed_in(users.finance)
    response = client.get("/costs/", query)
    assert response.status_code == 400
    page = parse(response.content)
    error = page.find(data_testid="cost-errors").find("p", data_field=field)
    assert message in error.text()
    assert not page.has(data_testid="cost-chart") and not page.has(data_testid="cost-table")
    exported = client.get("/costs/export.csv", query)
    assert exported.status_code == 400 and exported["Content-Type"].startswith("text/plain")
    assert exported.content.decode().startswith(f"{field}: ") and message in exported.content.decode()
    api = client.get("/api/v1/costs/", query)
    assert api.status_code == 400
    body = api.json()["error"]
    assert body["code"] == "invalid" and message in " ".join(body["fields"][field])
    assert (AuditEvent.objects.count(), CostSync.objects.count(), Budget.objects.count()) == before


def test_the_forecast_continues_the_chart_or_the_page_says_why_not(users: Any, world: CostWorld) -> None:
    client = signed_in(users.finance)
    response = client.get("/costs/")
    assert "No forecast: none made yet" in parse(response.content).find(data_testid="forecast-summary").text()
    assert json_scripts(response.content)["cost-chart"]["forecast"] is None
    month = dashboard.today().replace(day=1)
    forecast = CostForecast.objects.create(
        month=month,
        project="",
        source="estimate",
        available=False,
        reason="not enough history to forecast: 1 day(s)",
        computed_at=dashboard.timezone.now(),
    )
    response = client.get("/costs/")
    assert (
        "not enough history to forecast: 1 day(s)" in parse(response.content).find(data_testid="forecast-reason").text()
    )
    forecast.available, forecast.reason = True, ""
    forecast.actual, forecast.mean, forecast.low, forecast.high = Decimal("4"), Decimal("6"), Decimal("5"), Decimal("8")
    days = [
        month + timedelta(days=i)
        for i in range(selectors.days_in_month(month))
        if month + timedelta(days=i) >= dashboard.today()
    ]
    forecast.points = [{"day": d.isoformat(), "mean": "0.5", "low": "0.25", "high": "0.75"} for d in days]
    forecast.save()
    response = client.get("/costs/")
    summary = parse(response.content).find(data_testid="forecast-summary").text()
    assert "10.00" in summary and "80% band 9.00 – 12.00" in summary
    drawn = json_scripts(response.content)["cost-chart"]["forecast"]
    assert drawn["label"] == "forecast (80% band)" and drawn["x"] == [d.isoformat() for d in days]
    assert drawn["mean"] == [0.5] * len(days) and drawn["low"] == [0.25] * len(days)
    monthly = json_scripts(client.get("/costs/", {"granularity": "month"}).content)["cost-chart"]["forecast"]
    assert monthly["x"] == [f"{month:%Y-%m}"] and monthly["mean"] == [10.0] and monthly["high"] == [12.0]
    # A period before this month draws no forecast.
    assert json_scripts(client.get("/costs/", month_query(world)).content)["cost-chart"]["forecast"] is None


def test_the_period_and_each_project_against_their_budgets(users: Any, world: CostWorld) -> None:
    from monitoring.costs import services

    alpha = controlplane_services.project_create(actor=users.admin, name="Alpha", slug="alpha")
    services.budget_save(actor=users.finance, project=None, amount="30", thresholds=[80, 100])
    services.budget_save(actor=users.finance, project=alpha, amount="100", thresholds=[50])
    response = signed_in(users.finance).get("/costs/", month_query(world))
    page = parse(response.content)
    days = selectors.days_in_month(world.month)
    # The whole month: the whole overall budget, 14.08 of 30.
    assert "(30.00 USD, prorated from 30.00 a month)" in page.find(data_testid="period-budget").text()
    assert "47%" in page.find(data_testid="period-budget").text()
    assert days >= 28
    row = page.find("table", data_testid="project-budgets").find("tr", data_project="alpha")
    assert row.find(data_testid="budget-percent").text() == "0%"  # this month's spend: none yet
    by_model = parse(signed_in(users.finance).get("/costs/", month_query(world, group_by="model")).content)
    assert not by_model.has(data_testid="project-budgets")


# --- budgets ------------------------------------------------------------------------------------------------------


def test_finance_sets_changes_and_deletes_budgets_audited(users: Any, world: CostWorld) -> None:
    alpha = controlplane_services.project_create(actor=users.admin, name="Alpha", slug="alpha")
    client = signed_in(users.finance)
    response = client.post(
        "/costs/budgets/", {"project": "alpha", "amount": "250", "thresholds": "80, 100", "alert_on_forecast": "on"}
    )
    assert response.status_code == 303
    budget = Budget.objects.get(project=alpha)
    assert (budget.amount, budget.thresholds, budget.alert_on_forecast) == (Decimal("250.00"), [80, 100], True)
    assert AuditEvent.objects.filter(action="budget.create", object_id=str(budget.pk), actor=users.finance).exists()
    client.post("/costs/budgets/", {"project": "", "amount": "1000", "thresholds": "90"})
    overall = Budget.objects.get(project=None)
    assert (overall.amount, overall.thresholds, overall.alert_on_forecast) == (Decimal("1000.00"), [90], False)
    # Setting alpha's again changes it.
    client.post("/costs/budgets/", {"project": "alpha", "amount": "300", "thresholds": "50, 100, 120"})
    budget.refresh_from_db()
    assert (budget.amount, budget.thresholds) == (Decimal("300.00"), [50, 100, 120])
    change = AuditEvent.objects.get(action="budget.change", object_id=str(budget.pk))
    assert change.before["amount"] == "250.00" and change.after["amount"] == "300.00"
    page = parse(client.get("/costs/budgets/").content)
    row = page.find("tr", data_budget=str(budget.pk))
    assert row.find(data_testid="budget-thresholds").text() == "50%, 100%, 120%"
    assert row.find(data_testid="budget-amount").text() == "300.00"
    # An open crossing shows beside its budget.
    BudgetCrossing.objects.create(
        budget=budget,
        month=dashboard.today().replace(day=1),
        kind="50",
        spend=Decimal("160"),
        budget_amount=budget.amount,
        message="Project Alpha: 160.00 USD spent this month, over 50%",
    )
    page = parse(client.get("/costs/budgets/").content)
    assert "over 50%" in page.find("tr", data_budget=str(budget.pk)).find(data_testid="budget-crossings").text()
    response = client.post(f"/costs/budgets/{budget.pk}/delete/")
    assert response.status_code == 303 and not Budget.objects.filter(pk=budget.pk).exists()
    assert AuditEvent.objects.filter(action="budget.delete", object_id=str(budget.pk)).exists()


BAD_BUDGETS = [
    ({"amount": "0"}, "amount", "must be more than 0"),
    ({"amount": "-5"}, "amount", "must be more than 0"),
    ({"amount": "0.001"}, "amount", "must be at least 0.01 USD"),
    ({"amount": "100.999"}, "amount", "whole cents"),
    ({"amount": "lots"}, "amount", "must be a number of USD per month"),
    ({"thresholds": "0"}, "thresholds", "0% is outside 1-1000%"),
    ({"thresholds": "80, 1001"}, "thresholds", "1001% is outside 1-1000%"),
    ({"thresholds": "eighty"}, "thresholds", "is not a whole percent"),
]


@pytest.mark.parametrize(("change", "field", "message"), BAD_BUDGETS)
def test_a_bad_budget_is_refused_naming_the_field_and_changes_nothing(
    users: Any, world: CostWorld, change: dict[str, str], field: str, message: str
) -> None:
    from monitoring.costs import services

    existing = services.budget_save(actor=users.finance, project=None, amount="100", thresholds=[80])
    before = AuditEvent.objects.count()
    data = {"project": "", "amount": "200", "thresholds": "80, 100", **change}
    response = signed_in(users.finance).post("/costs/budgets/", data)
    assert response.status_code == 400
    error = parse(response.content).find("form", data_testid="budget-form").find("p", data_field=field)
    assert message in error.text()
    existing.refresh_from_db()
    assert (existing.amount, existing.thresholds) == (Decimal("100.00"), [80])
    assert AuditEvent.objects.count() == before and Budget.objects.count() == 1


def test_only_finance_and_admins_manage_budgets_or_sync(users: Any, world: CostWorld) -> None:
    from monitoring.costs import services

    budget = services.budget_save(actor=users.finance, project=None, amount="100")
    scientist = signed_in(users.data_scientist)
    page = parse(scientist.get("/costs/budgets/").content)
    assert page.has(data_testid="budget-table") and not page.has(data_testid="budget-form")
    assert not page.has(data_testid="budget-delete")
    assert scientist.post("/costs/budgets/", {"project": "", "amount": "5", "thresholds": "80"}).status_code == 403
    assert scientist.post(f"/costs/budgets/{budget.pk}/delete/").status_code == 403
    assert scientist.post("/costs/sync/", {"source": "estimate"}).status_code == 403
    budget.refresh_from_db()
    assert budget.amount == Decimal("100.00") and CostSync.objects.filter(source="estimate").count() == 0
    assert signed_in(users.outsider).get("/costs/").status_code == 403
    assert Client().get("/costs/").status_code == 302


# --- syncs --------------------------------------------------------------------------------------------------------


def test_sync_now_makes_one_sync_and_the_panel_shows_its_steps(users: Any, world: CostWorld, monkeypatch: Any) -> None:
    from monitoring.costs import tasks

    monkeypatch.setattr(tasks.cost_sync_task, "delay", lambda *a, **k: None)
    client = signed_in(users.finance)
    page = parse(client.get("/costs/").content)
    assert page.has(data_testid="sync-now-estimate") and not page.has(data_testid="sync-now-cost_explorer")
    response = client.post("/costs/sync/", {"source": "estimate", "next_query": "group_by=model&evil=http://x"})
    assert response.status_code == 303 and response["Location"] == "/costs/?group_by=model"
    again = client.post("/costs/sync/", {"source": "estimate"})
    assert again.status_code == 303
    sync = CostSync.objects.get(source="estimate")
    assert sync.status == "queued" and sync.requested_by == users.finance
    assert AuditEvent.objects.filter(action="cost.sync.request").count() == 1
    CostSync.objects.filter(pk=sync.pk).update(
        status="running",
        calls=0,
        rows=0,
        progress={"steps": [{"at": "2026-12-01T10:00:01+00:00", "message": "estimating runs over a..b"}]},
    )
    panel = parse(client.get("/costs/").content).find(data_testid="cost-syncs")
    row = panel.find("tr", data_sync=str(sync.pk))
    assert row.find(data_testid="sync-status").text() == "running"
    assert "estimating runs over a..b" in row.find(data_testid="sync-steps").text()
    # While one runs the panel refreshes itself.
    assert panel.attrs.get("hx-trigger") == "every 2s"
    fragment = client.get("/costs/syncs/", HTTP_HX_REQUEST="true")
    assert fragment.status_code == 200 and b"estimating runs over a..b" in fragment.content
    assert "HX-Refresh" not in fragment
    # The poll after it ended tells the page to refresh itself: its chart and table are out of date.
    CostSync.objects.filter(pk=sync.pk).update(status="succeeded")
    ended = client.get("/costs/syncs/", HTTP_HX_REQUEST="true")
    assert ended.status_code == 200 and ended["HX-Refresh"] == "true"
    assert "HX-Refresh" not in client.get("/costs/syncs/")  # a plain request is not an htmx poll
    CostSync.objects.filter(pk=sync.pk).update(status="running")
    # Cost Explorer is not configured here: the bill's sync is refused, saying why.
    refused = client.post("/costs/sync/", {"source": "cost_explorer"}, follow=True)
    assert "Cost Explorer is not configured here" in refused.content.decode()
    assert CostSync.objects.filter(source="cost_explorer", status="queued").count() == 0


def test_the_cost_explorer_button_shows_when_it_is_configured(users: Any, settings: Any) -> None:
    settings.COST_EXPLORER_ENABLED = True
    page = parse(signed_in(users.admin).get("/costs/").content)
    assert page.has(data_testid="sync-now-cost_explorer") and page.has(data_testid="sync-now-estimate")


@pytest.mark.django_db(transaction=True)
def test_two_sync_now_presses_at_once_make_one_sync(users: Any, monkeypatch: Any) -> None:
    from monitoring.costs import tasks

    monkeypatch.setattr(tasks.cost_sync_task, "delay", lambda *a, **k: None)

    def press() -> int:
        return signed_in(users.finance).post("/costs/sync/", {"source": "estimate"}).status_code

    outcomes = race(press, press, press)
    assert [o.error for o in outcomes] == [None, None, None]
    assert [o.value for o in outcomes] == [303, 303, 303]
    assert CostSync.objects.filter(source="estimate").count() == 1
    assert AuditEvent.objects.filter(action="cost.sync.request").count() == 1


def test_the_navigation_has_costs(users: Any) -> None:
    page = parse(signed_in(users.data_scientist).get("/").content)
    assert page.find(data_testid="main-nav").links()["Costs"] == "/costs/"


def test_budgets_page_paginates(users: Any) -> None:
    from monitoring.costs import services

    for i in range(3):
        project = controlplane_services.project_create(actor=users.admin, name=f"P{i}", slug=f"p{i}")
        services.budget_save(actor=users.finance, project=project, amount=str(10 + i))
    page = parse(signed_in(users.finance).get("/costs/budgets/").content)
    assert len(page.find("table", data_testid="budget-table").find("tbody").find_all("tr")) == 3


def _budgeted_projects(users: Any, first: int, n: int) -> None:
    """n more projects, each with a budget, this month's spend and a forecast."""
    from django.utils import timezone

    from monitoring.costs import services as cost_services
    from monitoring.models import CostMonth

    month = selectors.month_start(timezone.now().date())
    for number in range(first, first + n):
        project = controlplane_services.project_create(actor=users.admin, name=f"B {number}", slug=f"b-{number}")
        cost_services.budget_save(actor=users.finance, project=project, amount="10")
        CostMonth.objects.create(
            month=month,
            family="project",
            source="estimate",
            aws_service="AmazonEC2",
            project=project.slug,
            amount=Decimal("4"),
        )
        CostForecast.objects.create(
            month=month,
            project=project.slug,
            source="estimate",
            available=True,
            actual=Decimal("4"),
            mean=Decimal("2"),
            computed_at=timezone.now(),
        )


def test_the_budget_list_costs_the_same_queries_with_2_or_20_budgets(users) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    finance = signed_in(users.finance)
    api = Client()
    api.force_login(users.finance)

    def counted() -> tuple[int, int]:
        with CaptureQueriesContext(connection) as page:
            assert finance.get("/costs/budgets/").status_code == 200
        with CaptureQueriesContext(connection) as listed:
            body = api.get("/api/v1/budgets/").json()
        assert [Decimal(b["spend"]) for b in body["results"]] == [Decimal(4)] * len(body["results"])
        return len(page), len(listed)

    _budgeted_projects(users, 0, 2)
    before = counted()
    _budgeted_projects(users, 2, 18)
    page = parse(signed_in(users.finance).get("/costs/budgets/").content)
    assert len(page.find_all(data_testid="budget-spend")) == 20
    assert all(cell.text() == "$4.00 incl. est. $4.00" for cell in page.find_all(data_testid="budget-spend"))
    assert counted() == before


def test_the_budgets_page_shows_a_small_spend_as_the_dashboard_does_not_rounded_to_cents(users: Any) -> None:
    """Half a cent spent against a one-cent budget: "$0.005" beside "50%", never "0.00"."""
    from monitoring.costs import services
    from tests.monitoring.cost_world import estimate

    today = dashboard.today()
    month = today.replace(day=1)
    services.estimates_store(
        [estimate(today, "demo", "m", "staging", "AmazonSageMaker", "0.005")],
        start=month,
        end=selectors.next_month(month),
    )
    services.rollup_months([month])
    services.budget_save(actor=users.finance, project=None, amount="0.01", thresholds=[80])
    row = parse(signed_in(users.finance).get("/costs/budgets/").content).find("table", data_testid="budget-table")
    assert row.find(data_testid="budget-percent").text() == "50%"
    spend = row.find(data_testid="budget-spend").text()
    assert spend.startswith("$0.005") and "incl. est. $0.005" in spend
    assert "0.00 " not in spend
