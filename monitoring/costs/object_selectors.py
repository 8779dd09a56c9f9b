"""Reads of cost for the pages that show what one thing cost: a run by day, a service's last days and month, the
launch form's budget warning, and the home pages' month (budgets near their limit, open crossings).

Every figure here comes from monitoring.costs.selectors (run_cost, service_daily_cost, month_spend), so a page shows
exactly what the dashboard counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from django.db.models import Q, QuerySet
from django.utils import timezone

from controlplane import access
from monitoring.costs import selectors
from monitoring.costs.money import usd
from monitoring.costs.selectors import ZERO, ObjectCost
from monitoring.models import Budget, BudgetCrossing, CostRecord

# A budget this used (percent) or more is "near its limit" on finance's home page.
NEAR_LIMIT_PERCENT = 80
# The service page's daily table.
SERVICE_DAYS = 14


def today() -> date:
    return timezone.now().date()


def basis_label(cost: ObjectCost) -> str:
    """The words every page uses for where a figure comes from."""
    return {
        "none": "not in the cost records yet",
        "bill": "from the bill",
        "estimate": "estimate",
        "bill + estimate": "part bill, part estimate",
    }[cost.basis]


def cost_output(cost: ObjectCost) -> dict[str, Any]:
    """An ObjectCost as the API gives it."""
    return {
        "amount": str(cost.amount),
        "billed": str(cost.billed),
        "estimated": str(cost.estimated),
        "basis": cost.basis,
    }


@dataclass(frozen=True)
class DayCost:
    day: date
    cost: ObjectCost


def run_cost_by_day(run: Any, *, limit: int = 31) -> list[DayCost]:
    """The run's cost on each day it has records for (the last `limit` days of them), each day's figure being
    selectors.run_cost over that day, so the days add up to the run's total."""
    days = sorted(set(CostRecord.objects.filter(run=str(run.pk)).values_list("day", flat=True)))[-limit:]
    out = []
    for day in days:
        cost = selectors.run_cost(run, start=day, end=day + timedelta(days=1))
        if cost.known:
            out.append(DayCost(day=day, cost=cost))
    return out


def service_cost_summary(service: Any, *, on: date | None = None, days: int = SERVICE_DAYS) -> dict[str, Any]:
    """The service page's figures: its cost per day over the last `days` days (today included) with the requests and
    the cost per 1,000 of them, the same over the whole period, and this month so far."""
    on = on or today()
    end = on + timedelta(days=1)
    rows = selectors.service_daily_cost(service, start=end - timedelta(days=days), end=end)
    month = selectors.service_daily_cost(service, start=selectors.month_start(on), end=end)
    amount = sum((r["amount"] for r in rows), ZERO)
    requests = sum(r["requests"] for r in rows)
    predictions = sum(r["predictions"] for r in rows)
    per = predictions or requests
    return {
        "days": rows,
        "amount": amount,
        "estimated": sum((r["estimated"] for r in rows), ZERO),
        "requests": requests,
        "predictions": predictions,
        # Per 1,000 predictions (rows scored; a request may carry many); per 1,000 requests where rows are not known.
        "per_1000": amount * 1000 / per if per else None,
        "per_1000_of": "predictions" if predictions else "requests",
        "month": selectors.month_start(on),
        "month_amount": sum((r["amount"] for r in month), ZERO),
        "month_estimated": sum((r["estimated"] for r in month), ZERO),
    }


# --- budgets ----------------------------------------------------------------------------------------------------


def _percent(spend: Decimal, amount: Decimal) -> str:
    return f"{spend / amount * 100:.0f}%"


def launch_budget_warnings(*, project: Any, estimate: Decimal, on: date | None = None, user: Any = None) -> list[str]:
    """What the launch form (and the launch API) warns of: a run whose most it can cost would take its project's
    month, or everything's, over the monthly budget — or a project already over it. Nothing when within. The
    overall budget's warning names everything's spend, so it is left out for a `user` some project is hidden from."""
    month = selectors.month_start(on or today())
    run = f"This run (at most {usd(estimate)})"
    budgets = {b.project_id: b for b in Budget.objects.filter(Q(project=project) | Q(project__isnull=True))}
    warnings = []
    budget = budgets.get(project.pk)
    if budget is not None:
        spend, _ = selectors.month_spend(month, project=project.slug)
        warning = _over(
            budget.amount,
            spend,
            estimate,
            already=f"Project {project.name} is already over its {usd(budget.amount)} monthly budget: "
            f"{usd(spend)} spent this month",
            would=f"{run} would take project {project.name} to {usd(spend + estimate)} of its "
            f"{usd(budget.amount)} monthly budget",
            run=run,
        )
        if warning:
            warnings.append(warning)
    overall = budgets.get(None)
    if overall is not None and (user is None or not access.hides_some_project(user)):
        spend, _ = selectors.month_spend(month)
        warning = _over(
            overall.amount,
            spend,
            estimate,
            already=f"Spending is already over the overall {usd(overall.amount)} monthly budget: "
            f"{usd(spend)} this month",
            would=f"{run} would take spending to {usd(spend + estimate)} of the overall "
            f"{usd(overall.amount)} monthly budget",
            run=run,
        )
        if warning:
            warnings.append(warning)
    return warnings


def _over(amount: Decimal, spend: Decimal, estimate: Decimal, *, already: str, would: str, run: str) -> str:
    """One budget's launch warning: already over it, or this run would take it over; "" within it."""
    if spend > amount:
        return (
            f"{already} ({_percent(spend, amount)}). "
            f"{run} would take it to {usd(spend + estimate)} ({_percent(spend + estimate, amount)})."
        )
    if spend + estimate > amount:
        return f"{would} ({_percent(spend + estimate, amount)})."
    return ""


def open_budget_crossings(*, user: Any) -> QuerySet[BudgetCrossing]:
    """The open crossings of the budgets the user may see (the overall budget's only to those who see every
    project's costs: its spend counts them all)."""
    crossings = access.scope(BudgetCrossing.objects.filter(status=BudgetCrossing.Status.OPEN), user)
    if not sees_everything(user):
        crossings = crossings.exclude(budget__project__isnull=True)
    return crossings.select_related("budget__project")


def sees_everything(user: Any) -> bool:
    """Whether every project's costs are the user's to see (finance, admins, or no project is hidden from them)."""
    return access.sees_across(user, "monitoring.BudgetCrossing") or not access.hides_some_project(user)


@dataclass(frozen=True)
class BudgetStanding:
    budget: Budget
    spend: Decimal
    estimated: Decimal
    open_crossings: int

    @property
    def name(self) -> str:
        return f"project {self.budget.project.name}" if self.budget.project else "overall"

    @property
    def percent(self) -> Decimal:
        return self.spend / self.budget.amount * 100

    @property
    def over(self) -> bool:
        return self.spend > self.budget.amount


def budget_standings(*, on: date | None = None, user: Any = None) -> list[BudgetStanding]:
    """Every budget's month so far (of those `user` may see; None: all): spend (of it estimated) against the
    amount, and its open crossings."""
    month = selectors.month_start(on or today())
    crossings: dict[int, int] = {}
    for budget_id in BudgetCrossing.objects.filter(status=BudgetCrossing.Status.OPEN, month=month).values_list(
        "budget_id", flat=True
    ):
        crossings[budget_id] = crossings.get(budget_id, 0) + 1
    spends = selectors.month_spends(month, user=user)  # every budget's month in one query
    budgets = Budget.objects.all() if user is None else access.scope(Budget.objects.all(), user)
    out = []
    for budget in budgets.select_related("project"):
        spend, estimated = spends.get(budget.project.slug if budget.project else None, (ZERO, ZERO))
        out.append(
            BudgetStanding(budget=budget, spend=spend, estimated=estimated, open_crossings=crossings.get(budget.pk, 0))
        )
    return out


def budgets_near_limit(
    *, on: date | None = None, percent: int = NEAR_LIMIT_PERCENT, user: Any = None
) -> list[BudgetStanding]:
    """The budgets at `percent` of their month or more, or with an open crossing, the most used first."""
    near = [s for s in budget_standings(on=on, user=user) if s.percent >= percent or s.open_crossings]
    return sorted(near, key=lambda s: s.percent, reverse=True)


def overall_standing(*, on: date | None = None, user: Any = None) -> dict[str, Any]:
    """This month's spend for everything (`user` may see; None: all) and the overall budget (None when there is
    none)."""
    month = selectors.month_start(on or today())
    spend, estimated = selectors.month_spend(month, user=user)
    budget = Budget.objects.filter(project=None).first()
    return {
        "month": month,
        "spend": spend,
        "estimated": estimated,
        "budget": budget,
        "percent": spend / budget.amount * 100 if budget is not None else None,
    }
