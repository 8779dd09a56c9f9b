"""What the cost pages and the cost API share: the period as people ask for it (parsed and checked once, so the
page, the CSV and the API refuse the same input in the same words), the rounding the table and the CSV both use,
the chart's numbers, the forecast drawn after the bars and each budget against its month."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from django.utils import timezone

from controlplane import access
from monitoring.costs import object_selectors, selectors
from monitoring.costs.selectors import ZERO, CostTable, month_start, next_month
from monitoring.models import Budget, BudgetCrossing, CostForecast

# The dates a period may name: the monthly view rounds its end up to the next month, which must still be a date.
EARLIEST = date(1900, 1, 1)
LATEST = date(9998, 12, 31)
CENT = Decimal("0.01")
# Below a dollar a table shows hundredths of a cent: a local estimate of a few CPU seconds is not "0.00".
SMALL = Decimal("0.0001")


def today() -> date:
    return timezone.now().astimezone(UTC).date()


@dataclass(frozen=True)
class Period:
    start: date
    end: date  # inclusive, as people pick it
    granularity: str
    group_by: str

    @property
    def end_exclusive(self) -> date:
        return self.end + timedelta(days=1)

    def as_query(self) -> dict[str, str]:
        return {
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "granularity": self.granularity,
            "group_by": self.group_by,
        }


def _date(name: str, text: str, problems: dict[str, list[str]]) -> date | None:
    try:
        value = date.fromisoformat(text) if len(text) <= 10 else None
    except ValueError:
        value = None
    if value is None:
        problems[name] = [f"must be a date (YYYY-MM-DD), not {text[:40]!r}"]
        return None
    if not EARLIEST <= value <= LATEST:
        problems[name] = [f"must be from {EARLIEST.isoformat()} to {LATEST.isoformat()}"]
        return None
    return value


def parse_period(params: Any) -> tuple[Period | None, dict[str, list[str]], dict[str, str]]:
    """The period in `params` (a QueryDict or dict): start and end dates (end inclusive; default this month to
    date), granularity day or month (default day), group_by (default project). Returns the period or None, the
    problems by field (selectors.period_problems' words), and the values as typed, for the form to show again."""
    now = today()
    typed = {
        "start": str(params.get("start") or "").strip(),
        "end": str(params.get("end") or "").strip(),
        "granularity": str(params.get("granularity") or "").strip() or "day",
        "group_by": str(params.get("group_by") or "").strip() or "project",
    }
    problems: dict[str, list[str]] = {}
    start = _date("start", typed["start"], problems) if typed["start"] else month_start(now)
    end = _date("end", typed["end"], problems) if typed["end"] else now
    checked = selectors.period_problems(start, end, typed["granularity"], typed["group_by"])
    for name, messages in checked.items():
        # A date that did not parse is named once, for what it is.
        problems.setdefault(name, messages)
    # The form shows the defaults it used.
    typed["start"] = typed["start"] or (start.isoformat() if start else "")
    typed["end"] = typed["end"] or (end.isoformat() if end else "")
    if problems or start is None or end is None:
        return None, problems, typed
    return Period(start, end, typed["granularity"], typed["group_by"]), {}, typed


def table_for(period: Period, user: Any) -> CostTable:
    """The period's table of what the user may see: a restricted project's spend only to its members, finance and
    admins (controlplane.access)."""
    return selectors.cost_table(
        start=period.start,
        end=period.end_exclusive,
        granularity=period.granularity,
        group_by=period.group_by,
        user=user,
    )


def places_for(table: CostTable) -> Decimal:
    """The table's precision: cents, or hundredths of a cent when every figure is under a dollar."""
    largest = max((abs(v) for values in table.amounts.values() for v in values), default=ZERO)
    return CENT if largest >= 1 or largest == 0 else SMALL


def money(amount: Decimal, places: Decimal = CENT) -> str:
    """A figure as the table and the CSV show it (the same rounding in both)."""
    return str(Decimal(amount).quantize(places, rounding=ROUND_HALF_UP))


def period_label(bucket: date, granularity: str) -> str:
    return bucket.isoformat() if granularity == "day" else f"{bucket:%Y-%m}"


TOTAL = "Total"


def rounded_view(table: CostTable, places: Decimal | None = None) -> dict[str, Any]:
    """The table as people read it: each figure (and its estimated part) rounded once, and every total the sum of
    the rounded figures it totals, so the columns and rows add up to what the table, the CSV and the chart show
    (finance foots a report this way; the unrounded sum is in the API). The billed part is the rest of each figure."""
    places = places or places_for(table)
    n = len(table.buckets)
    amount = {g: [Decimal(money(v, places)) for v in table.amounts[g]] for g in table.groups}
    estimated = {g: [Decimal(money(v, places)) for v in table.estimated[g]] for g in table.groups}
    bucket_totals = [sum((amount[g][i] for g in table.groups), ZERO) for i in range(n)]
    bucket_estimated = [sum((estimated[g][i] for g in table.groups), ZERO) for i in range(n)]
    group_totals = {g: sum(amount[g], ZERO) for g in table.groups}
    group_estimated = {g: sum(estimated[g], ZERO) for g in table.groups}
    total = sum(bucket_totals, ZERO)
    estimated_total = sum(bucket_estimated, ZERO)
    return {
        "places": places,
        "amount": amount,
        "estimated": estimated,
        "bucket_totals": bucket_totals,
        "bucket_estimated": bucket_estimated,
        "group_totals": group_totals,
        "group_estimated": group_estimated,
        "total": total,
        "estimated_total": estimated_total,
    }


def csv_rows(table: CostTable, places: Decimal | None = None) -> list[list[str]]:
    """The CSV's rows (without its header), cell for cell the table: for each period a row per group (a day without
    spend too) and its "Total" row, then the "Total" rows of the table's foot, each group's and the whole period's,
    rounded as the table rounds and added up as it adds up."""
    view = rounded_view(table, places)
    places = view["places"]

    def row(period: str, group: str, amount: Decimal, estimated: Decimal) -> list[str]:
        return [period, group, money(amount, places), money(estimated, places), money(amount - estimated, places)]

    out = []
    for i, bucket in enumerate(table.buckets):
        label = period_label(bucket, table.granularity)
        for group in table.groups:
            out.append(row(label, group, view["amount"][group][i], view["estimated"][group][i]))
        out.append(row(label, TOTAL, view["bucket_totals"][i], view["bucket_estimated"][i]))
    for group in table.groups:
        out.append(row(TOTAL, group, view["group_totals"][group], view["group_estimated"][group]))
    out.append(row(TOTAL, TOTAL, view["total"], view["estimated_total"]))
    return out


CSV_HEADER = ["period", "group", "amount_usd", "estimated_usd", "billed_usd"]


def table_view(table: CostTable) -> dict[str, Any]:
    """The table as the page shows it: one row per bucket, a cell per group, totals (sums of the rounded figures);
    each cell's estimated part."""
    view = rounded_view(table)
    places = view["places"]
    rows = []
    for i, bucket in enumerate(table.buckets):
        cells = []
        for group in table.groups:
            amount, estimated = view["amount"][group][i], view["estimated"][group][i]
            raw = table.amounts[group][i]
            cells.append(
                {
                    "group": group,
                    "amount": money(amount, places),
                    "estimated": money(estimated, places),
                    "nonzero": bool(raw),
                    # "est." when all of it is an estimate; "incl. est." with the part when some of it is.
                    "all_estimated": bool(raw) and table.estimated[group][i] == raw,
                    "part_estimated": bool(table.estimated[group][i]) and table.estimated[group][i] != raw,
                }
            )
        rows.append(
            {
                "period": period_label(bucket, table.granularity),
                "cells": cells,
                "total": money(view["bucket_totals"][i], places),
            }
        )
    return {
        "groups": table.groups,
        "rows": rows,
        "totals": [money(view["group_totals"][g], places) for g in table.groups],
        "total": money(view["total"], places),
        "estimated_total": money(view["estimated_total"], places),
        "bill_total": money(view["total"] - view["estimated_total"], places),
        "places": places,
        "precision": "the cent" if places == CENT else "hundredths of a cent (every figure is under a dollar)",
    }


# --- the chart ----------------------------------------------------------------------------------------------------


def forecast_shown(period: Period) -> bool:
    """The forecast continues the chart when the period reaches into this month."""
    now = today()
    return period.start <= now and month_start(period.end) >= month_start(now)


def chart_spec(table: CostTable, period: Period, forecast: CostForecast | None) -> dict[str, Any]:
    """The stacked bars (one trace per group, the numbers of the table: the same rounding), each bar's estimated
    part (hatched when there is one), and the forecast of the rest of the month as a line with its band."""
    places = places_for(table)
    x = [period_label(bucket, table.granularity) for bucket in table.buckets]
    traces = [
        {
            "name": group,
            "y": [float(money(v, places)) for v in table.amounts[group]],
            "estimated": [float(money(v, places)) for v in table.estimated[group]],
        }
        for group in table.groups
    ]
    spec: dict[str, Any] = {
        "kind": "cost_bars",
        "title": f"Spend by {selectors.GROUPING_LABELS[table.group_by].lower()} (USD)",
        "granularity": table.granularity,
        "x": x,
        "traces": traces,
        "forecast": None,
    }
    if forecast is not None and forecast.available and forecast_shown(period):
        level = forecast.level
        if table.granularity == "day" and forecast.points:
            points = [p for p in forecast.points if p.get("day")]
            spec["forecast"] = {
                "label": f"forecast ({level}% band)",
                "x": [p["day"] for p in points],
                "mean": [float(Decimal(p["mean"])) for p in points],
                "low": [float(Decimal(p["low"])) for p in points],
                "high": [float(Decimal(p["high"])) for p in points],
            }
        elif table.granularity == "month" and forecast.mean is not None:
            actual = Decimal(forecast.actual)
            spec["forecast"] = {
                "label": f"forecast to month end ({level}% band)",
                "x": [f"{month_start(today()):%Y-%m}"],
                "mean": [float(money(actual + forecast.mean))],
                "low": [float(money(actual + (forecast.low if forecast.low is not None else forecast.mean)))],
                "high": [float(money(actual + (forecast.high if forecast.high is not None else forecast.mean)))],
            }
    return spec


def forecast_summary(forecast: CostForecast | None) -> dict[str, Any]:
    """This month's forecast in words: spent so far, the rest, the band, the month's total; or why there is none."""
    month = month_start(today())
    if forecast is None:
        return {
            "available": False,
            "month": month,
            "reason": "none made yet: each cost sync makes one (Sync now, or wait for the next one)",
        }
    if not forecast.available or forecast.mean is None:
        return {"available": False, "month": month, "reason": forecast.reason or "no forecast for this month"}
    actual = Decimal(forecast.actual)
    return {
        "available": True,
        "month": month,
        "source": "the bill (Cost Explorer)" if forecast.source == "cost_explorer" else "estimates",
        "level": forecast.level,
        "actual": money(actual),
        "rest": money(forecast.mean),
        "low": money(actual + (forecast.low if forecast.low is not None else forecast.mean)),
        "high": money(actual + (forecast.high if forecast.high is not None else forecast.mean)),
        "total": money(actual + forecast.mean),
        "computed_at": forecast.computed_at,
    }


# --- budgets --------------------------------------------------------------------------------------------------


def prorated_budget(amount: Decimal, start: date, end_exclusive: date) -> Decimal:
    """A monthly budget over [start, end): each month's share by the days of it the period covers."""
    total = ZERO
    month = month_start(start)
    while month < end_exclusive:
        first, after = max(month, start), min(next_month(month), end_exclusive)
        total += amount * Decimal((after - first).days) / Decimal(selectors.days_in_month(month))
        month = next_month(month)
    return total


def percent(spend: Decimal, amount: Decimal) -> int:
    return int((spend / amount * 100).to_integral_value(rounding=ROUND_HALF_UP)) if amount else 0


def budget_statuses(budgets: list[Budget], month: date | None = None, *, user: Any) -> list[dict[str, Any]]:
    """budget_status of each budget, reading every budget's month spend and forecast at once: a list of budgets
    costs the same queries however long it is (their crossings are prefetched by the caller). The overall budget's
    spend is of what `user` may see."""
    month = month_start(month or today())
    spends, forecasts = selectors.month_spends(month, user=user), selectors.forecasts_for(month, user=user)
    return [budget_status(b, month, spends=spends, forecasts=forecasts, user=user) for b in budgets]


def budget_status(
    budget: Budget,
    month: date | None = None,
    *,
    spends: dict[str | None, tuple[Decimal, Decimal]] | None = None,
    forecasts: dict[str, Any] | None = None,
    user: Any,
) -> dict[str, Any]:
    """A budget against its month: spend (and its estimated part), percent used, the forecast total and the
    crossings still open. `spends` and `forecasts` (month_spends, forecasts_for) spare the two reads."""
    month = month_start(month or today())
    slug = budget.project.slug if budget.project else None
    if spends is None:
        spends = selectors.month_spends(month, projects=None if slug is None else [slug], user=user)
    spend, estimated = spends.get(slug, (ZERO, ZERO))
    forecast = (
        forecasts.get(slug or "")
        if forecasts is not None
        else selectors.forecast_for(month, project=slug or "", user=user)
    )
    forecast_total = (
        Decimal(forecast.actual) + forecast.mean
        if forecast is not None and forecast.available and forecast.mean is not None
        else None
    )
    used = percent(spend, budget.amount)
    return {
        "budget": budget,
        "scope": budget.project.name if budget.project else "Overall (everything)",
        "project": slug,
        "month": month,
        "spend": spend,
        "estimated": estimated,
        "percent": used,
        # A <meter> tops out at 100; the percent says how far past it.
        "meter": min(used, 100),
        "over": spend >= budget.amount,
        "forecast_total": forecast_total,
        "forecast_over": forecast_total is not None and forecast_total > budget.amount,
        "forecast_reason": "" if forecast_total is not None else (forecast.reason if forecast else "none made yet"),
        # The overall budget's crossings were judged on every project's spend: only for whom that is no secret.
        "open_crossings": [c for c in budget.crossings.all() if c.status == BudgetCrossing.Status.OPEN]
        if budget.project is not None or object_selectors.sees_everything(user)
        else [],
    }


def visible_budgets(user: Any) -> Any:
    """The budgets the user may see: the overall one, and those of the projects whose costs they may see."""
    return access.scope(Budget.objects.all(), user)


def budgets_for_dashboard(table: CostTable, period: Period, user: Any) -> dict[str, Any]:
    """The period's total against the overall budget (prorated to the period's days), and this month's spend of
    each project budget when the table is grouped by project: of what the user may see."""
    budgets = list(visible_budgets(user).select_related("project").prefetch_related("crossings"))
    overall = next((b for b in budgets if b.project is None), None)
    out: dict[str, Any] = {"overall": None, "projects": []}
    if overall is not None:
        share = prorated_budget(overall.amount, table.start, table.end)
        out["overall"] = {
            "budget": overall,
            "period_budget": money(share),
            "total": money(table.total),
            "percent": percent(table.total, share),
            "meter": min(percent(table.total, share), 100),
            "month": budget_status(overall, user=user),
        }
    if period.group_by == "project":
        out["projects"] = budget_statuses([b for b in budgets if b.project is not None], user=user)
    return out
