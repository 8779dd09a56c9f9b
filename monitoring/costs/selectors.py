"""Reads of cost: the dashboard's table (`cost_table`, the same numbers the chart draws and the CSV exports), what a
run, a model version, a deployment or a service cost, a project's month against its budget, and the forecast.

What counts. Cost Explorer's rows (the bill) come in breakdowns never added to one another (monitoring.models), and
estimates stand in where the bill has nothing yet:

- the bill's rows of the breakdown the grouping needs (project and AWS service: `project`; model and environment:
  `model`);
- estimates of local resources, always (they are on no bill);
- estimates of aws resources only for the days the bill does not hold yet (CostBillDay: whole days Cost Explorer
  answered), since the bill has those days and spends them, tagged or not, once.

Monthly figures come from the roll-up (CostMonth, rebuilt by every sync for the months it touched) and daily ones
from the records, each grouped in the database: a year of 1,000 models is a few queries, whatever the history.
"""

from __future__ import annotations

import calendar
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from django.db.models import Case, CharField, F, Q, QuerySet, Sum, Value, When
from django.db.models.functions import TruncMonth

from controlplane import access
from monitoring.models import CostBillDay, CostForecast, CostMonth, CostRecord

# Grouping -> (the bill's breakdown and roll-up family that has it, the column).
GROUPINGS: dict[str, tuple[str, str]] = {
    "project": ("project", "project"),
    "aws_service": ("project", "aws_service"),
    "model": ("model", "model"),
    "environment": ("model", "environment"),
}
GROUPING_LABELS = {"project": "Project", "aws_service": "AWS service", "model": "Model", "environment": "Environment"}
GRANULARITIES = ("day", "month")
# The longest period one view may ask for.
MAX_DAYS = 366
MAX_MONTHS = 36
# Groups drawn one by one; the rest are summed as OTHER.
TOP_GROUPS = 12
OTHER = "(other)"
# Spend without that tag (the bill) or dimension (a training run has no environment).
UNTAGGED = "(none)"
ZERO = Decimal(0)
CENT = Decimal("0.01")


def month_start(day: date) -> date:
    return day.replace(day=1)


def next_month(day: date) -> date:
    return (day.replace(day=28) + timedelta(days=4)).replace(day=1)


def month_end(day: date) -> date:
    """The first day after the month of `day`."""
    return next_month(day)


def days_in_month(day: date) -> int:
    return calendar.monthrange(day.year, day.month)[1]


def bill_covered_through() -> date | None:
    """The last whole day the bill holds (CostBillDay), or None where there is no bill."""
    return CostBillDay.objects.order_by("-day").values_list("day", flat=True).first()


def counted(breakdown: str) -> Q:
    """The records the dashboard counts for groupings answered by the bill's `breakdown`: the bill's rows of the days
    it holds, local estimates always, aws estimates of the days it does not hold (yet)."""
    billed = CostBillDay.objects.values("day")
    estimates = Q(source=CostRecord.Source.ESTIMATE, breakdown=CostRecord.Breakdown.FULL)
    return (
        Q(source=CostRecord.Source.COST_EXPLORER, breakdown=breakdown, day__in=billed)
        | (estimates & ~Q(backend="aws"))
        | (estimates & Q(backend="aws") & ~Q(day__in=billed))
    )


def counted_records(breakdown: str, *, start: date, end: date) -> QuerySet[CostRecord]:
    return CostRecord.objects.filter(counted(breakdown), day__gte=start, day__lt=end)


# --- the dashboard ---------------------------------------------------------------------------------------------


@dataclass
class CostTable:
    """Spend over [start, end) in buckets (days or months), one row per group: the chart draws it, the table shows
    it, the CSV exports it. `estimated` holds the part of each figure that is an estimate (the rest is the bill)."""

    start: date
    end: date
    granularity: str
    group_by: str
    buckets: list[date] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    amounts: dict[str, list[Decimal]] = field(default_factory=dict)
    estimated: dict[str, list[Decimal]] = field(default_factory=dict)
    covered_through: date | None = None

    @property
    def bucket_totals(self) -> list[Decimal]:
        return [sum((self.amounts[g][i] for g in self.groups), ZERO) for i in range(len(self.buckets))]

    @property
    def group_totals(self) -> dict[str, Decimal]:
        return {g: sum(self.amounts[g], ZERO) for g in self.groups}

    @property
    def total(self) -> Decimal:
        return sum(self.bucket_totals, ZERO)

    @property
    def estimated_total(self) -> Decimal:
        return sum((sum(values, ZERO) for values in self.estimated.values()), ZERO)

    @property
    def bill_total(self) -> Decimal:
        return self.total - self.estimated_total

    def rows(self) -> list[dict[str, Any]]:
        """One row per (bucket, group) with spend, in bucket then group order: the CSV and the API."""
        out = []
        for i, bucket in enumerate(self.buckets):
            for group in self.groups:
                amount = self.amounts[group][i]
                if not amount:
                    continue
                estimate = self.estimated[group][i]
                out.append(
                    {
                        "period": bucket.isoformat() if self.granularity == "day" else f"{bucket:%Y-%m}",
                        "group": group,
                        "amount": amount,
                        "estimated": estimate,
                        "billed": amount - estimate,
                    }
                )
        return out


def period_problems(start: date | None, end: date | None, granularity: str, group_by: str) -> dict[str, list[str]]:
    """What is wrong with a view's period and grouping, field -> messages (the form, the API and the CSV use it).
    `end` is inclusive here, as people pick it."""
    problems: dict[str, list[str]] = {}
    if group_by not in GROUPINGS:
        problems["group_by"] = [f"must be one of {', '.join(GROUPINGS)}, not {group_by!r}"]
    if granularity not in GRANULARITIES:
        problems["granularity"] = [f"must be day or month, not {granularity!r}"]
    if start is None:
        problems["start"] = ["a date (YYYY-MM-DD) is required"]
    if end is None:
        problems["end"] = ["a date (YYYY-MM-DD) is required"]
    if start is not None and end is not None:
        if end < start:
            problems["end"] = [f"must be on or after the start ({start.isoformat()})"]
        elif granularity == "day" and (end - start).days + 1 > MAX_DAYS:
            problems["end"] = [f"a daily view covers at most {MAX_DAYS} days; pick month or a shorter period"]
        elif granularity == "month":
            months = (end.year - start.year) * 12 + end.month - start.month + 1
            if months > MAX_MONTHS:
                problems["end"] = [f"a monthly view covers at most {MAX_MONTHS} months"]
    return problems


def days_between(start: date, end: date) -> list[date]:
    """Each day of [start, end)."""
    return [start + timedelta(days=i) for i in range(max((end - start).days, 0))]


def _buckets(start: date, end: date, granularity: str) -> list[date]:
    if granularity == "day":
        return days_between(start, end)
    out = []
    month = month_start(start)
    while month < end:
        out.append(month)
        month = next_month(month)
    return out


def cost_table(
    *,
    start: date,
    end: date,
    granularity: str = "day",
    group_by: str = "project",
    top: int = TOP_GROUPS,
    user: Any = None,
) -> CostTable:
    """The dashboard's figures for [start, end) (end exclusive; a monthly view takes whole months), of what `user`
    may see (None: everything, a system read). Two grouped queries: the groups' totals (the `top` largest are
    drawn, the rest summed as OTHER), then each bucket's."""
    family, column = GROUPINGS[group_by]
    covered = bill_covered_through()
    if granularity == "month":
        start, end = month_start(start), next_month(end - timedelta(days=1))
        rows: QuerySet[Any] = CostMonth.objects.filter(family=family, month__gte=start, month__lt=end)
        bucket_column = "month"
    else:
        rows = counted_records(family, start=start, end=end)
        bucket_column = "day"
    if user is not None:
        rows = access.scope(rows, user)
    table = CostTable(start=start, end=end, granularity=granularity, group_by=group_by, covered_through=covered)
    table.buckets = _buckets(start, end, granularity)
    ranked = list(
        rows.values(column).annotate(total=Sum("amount")).order_by("-total", column).values_list(column, "total")
    )
    shown = [value for value, total in ranked[:top]]
    # Groups are keyed by their raw value; the rest by a key no tag value can be (tag values are printable).
    other_key = "\x1f"
    label: Any = F(column)
    if len(ranked) > top:
        label = Case(
            *[When(**{column: value}, then=Value(value)) for value in shown],
            default=Value(other_key),
            output_field=CharField(),
        )
    keys = shown + ([other_key] if len(ranked) > top else [])
    names = {key: _group_name(key, other_key) for key in keys}
    index = {bucket: i for i, bucket in enumerate(table.buckets)}
    amounts: dict[str, list[Decimal]] = defaultdict(lambda: [ZERO] * len(table.buckets))
    estimated: dict[str, list[Decimal]] = defaultdict(lambda: [ZERO] * len(table.buckets))
    grouped = (
        rows.annotate(label=label)
        .values(bucket_column, "label", "source")
        .annotate(total=Sum("amount"))
        .values_list(bucket_column, "label", "source", "total")
    )
    for bucket, key, source, total in grouped:
        if bucket not in index or key not in names:
            continue
        name = names[key]
        amounts[name][index[bucket]] += total
        if source == CostRecord.Source.ESTIMATE:
            estimated[name][index[bucket]] += total
    names_in_order = [names[key] for key in keys]
    table.groups = names_in_order
    table.amounts = {name: amounts[name] for name in names_in_order}
    table.estimated = {name: estimated[name] for name in names_in_order}
    return table


def _group_name(key: str, other_key: str) -> str:
    """What a group is called: its tag value, UNTAGGED for none, OTHER for the rest; a tag value that reads like one
    of those labels is told apart, so two groups never share a name."""
    if key == other_key:
        return OTHER
    if key == "":
        return UNTAGGED
    return f"{key} (tag value)" if key in (OTHER, UNTAGGED) else key


# --- a month, a project, a budget -----------------------------------------------------------------------------


def month_spend(month: date, *, project: str | None = None, user: Any = None) -> tuple[Decimal, Decimal]:
    """(spend, of which estimated) in the month of `month`, for everything (`user` may see) or one project (its
    slug)."""
    spends = month_spends(month, projects=None if project is None else [project], user=user)
    return spends.get(project, (ZERO, ZERO))


def month_spends(
    month: date, *, projects: list[str] | None = None, user: Any = None
) -> dict[str | None, tuple[Decimal, Decimal]]:
    """(spend, of which estimated) in the month of `month` for each project that spent (by slug) and, under None,
    for all of them together (or of `projects` alone, when given), of what `user` may see (None: everything): one
    query however many projects."""
    rows = CostMonth.objects.filter(family=CostMonth.Family.PROJECT, month=month_start(month))
    if user is not None:
        rows = access.scope(rows, user)
    if projects is not None:
        rows = rows.filter(project__in=projects)
    spends: dict[str | None, tuple[Decimal, Decimal]] = {None: (ZERO, ZERO)}
    totals = rows.values("project", "source").annotate(total=Sum("amount")).values_list("project", "source", "total")
    for project, source, total in totals:
        estimated = total if source == CostRecord.Source.ESTIMATE else ZERO
        for key in (project, None):
            spend, of_it_estimated = spends.get(key, (ZERO, ZERO))
            spends[key] = (spend + total, of_it_estimated + estimated)
    return spends


def forecast_for(month: date, *, project: str = "", user: Any = None) -> CostForecast | None:
    """The month's forecast as the last sync left it: the bill's when it has one, else the estimate's."""
    return forecasts_for(month, projects=[project], user=user).get(project)


def forecasts_for(month: date, *, projects: list[str] | None = None, user: Any = None) -> dict[str, CostForecast]:
    """forecast_for of every project that has one ("" for everything), or of `projects`: one query. With `user`,
    only what they may see: the forecast for everything counts every project, so it is left out for a user some
    project is hidden from."""
    found: dict[str, dict[str, CostForecast]] = defaultdict(dict)
    forecasts = CostForecast.objects.filter(month=month_start(month))
    if user is not None:
        forecasts = access.scope(forecasts, user)
        if not access.sees_across(user, "monitoring.CostForecast") and access.hides_some_project(user):
            forecasts = forecasts.exclude(project="")
    if projects is not None:
        forecasts = forecasts.filter(project__in=projects)
    for forecast in forecasts:
        found[forecast.project][forecast.source] = forecast
    chosen = {}
    for project, by_source in found.items():
        bill = by_source.get(CostRecord.Source.COST_EXPLORER)
        forecast = bill if bill is not None and bill.available else by_source.get(CostRecord.Source.ESTIMATE) or bill
        if forecast is not None:
            chosen[project] = forecast
    return chosen


# --- what one thing cost --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ObjectCost:
    """What a run or a deployment cost, per day: the bill's figure where it has one, else the estimate."""

    amount: Decimal
    billed: Decimal
    estimated: Decimal
    days: int
    # Which sources had rows (a measured $0 is still an estimate).
    sources: frozenset[str] = frozenset()

    @property
    def known(self) -> bool:
        return self.days > 0

    @property
    def basis(self) -> str:
        bill = CostRecord.Source.COST_EXPLORER in self.sources
        estimate = CostRecord.Source.ESTIMATE in self.sources
        if not self.days or not (bill or estimate):
            return "none"
        if bill and estimate:
            return "bill + estimate"
        return "bill" if bill else "estimate"


def _object_cost(field_name: str, values: list[str], start: date | None = None, end: date | None = None) -> ObjectCost:
    rows = CostRecord.objects.filter(**{f"{field_name}__in": values}).filter(
        Q(source=CostRecord.Source.COST_EXPLORER, breakdown=CostRecord.Breakdown.OBJECT)
        | Q(source=CostRecord.Source.ESTIMATE, superseded=False)
    )
    if start is not None:
        rows = rows.filter(day__gte=start)
    if end is not None:
        rows = rows.filter(day__lt=end)
    billed = estimated = ZERO
    days: set[date] = set()
    sources: set[str] = set()
    for day, source, total in (
        rows.values("day", "source").annotate(total=Sum("amount")).values_list("day", "source", "total")
    ):
        days.add(day)
        sources.add(source)
        if source == CostRecord.Source.ESTIMATE:
            estimated += total
        else:
            billed += total
    return ObjectCost(
        amount=billed + estimated, billed=billed, estimated=estimated, days=len(days), sources=frozenset(sources)
    )


def run_cost(run: Any, *, start: date | None = None, end: date | None = None) -> ObjectCost:
    return _object_cost("run", [str(run.pk)], start, end)


def deployment_cost(deployment: Any, *, start: date | None = None, end: date | None = None) -> ObjectCost:
    """A deployment's serving cost: its revision's processes or tasks (a rollback reuses the revision of the deploy
    it went back to, whose figures those are)."""
    return _object_cost("deployment", [str(deployment.pk)], start, end)


def model_version_cost(version: Any) -> dict[str, Any]:
    """What a model version cost: the run that trained it, and serving it (every deployment of it); and what to say
    of serving when it has no figure yet (never deployed, or not costed yet)."""
    from deployments.models import Deployment

    training = run_cost(version.run) if getattr(version, "run_id", None) else ObjectCost(ZERO, ZERO, ZERO, 0)
    deployments = [str(pk) for pk in Deployment.objects.filter(model_version=version).values_list("pk", flat=True)]
    serving = _object_cost("deployment", deployments) if deployments else ObjectCost(ZERO, ZERO, ZERO, 0)
    serving_empty = "not in the cost records yet" if deployments else "never deployed"
    return {"training": training, "serving": serving, "serving_empty": serving_empty}


def service_daily_cost(service: Any, *, start: date, end: date) -> list[dict[str, Any]]:
    """The service's spend per day over [start, end) — its model in its environment, as tagged — with its
    requests and predictions (rows scored) that day, and the cost per 1,000 predictions (None without any; where
    the metrics carry no row counts, as CloudWatch's EMF series do not, per 1,000 requests instead)."""
    from monitoring.models import MetricPoint

    # Model slugs are unique within a project only: an estimate knows its project, so another project's model of
    # the same name is not counted (the bill's model breakdown has no project: "").
    rows = counted_records(CostRecord.Breakdown.MODEL, start=start, end=end).filter(
        model=service.registered_model.slug,
        environment=service.environment.name,
        project__in=["", service.registered_model.project.slug],
    )
    amounts: dict[date, Decimal] = defaultdict(lambda: ZERO)
    estimated: dict[date, Decimal] = defaultdict(lambda: ZERO)
    for day, source, total in (
        rows.values("day", "source").annotate(total=Sum("amount")).values_list("day", "source", "total")
    ):
        amounts[day] += total
        if source == CostRecord.Source.ESTIMATE:
            estimated[day] += total
    from django.db.models.functions import TruncDate

    counts: dict[date, tuple[int, int]] = {
        day: (int(total or 0), int(rows or 0))
        for day, total, rows in MetricPoint.objects.filter(service=service, start__date__gte=start, start__date__lt=end)
        .annotate(day=TruncDate("start"))
        .values("day")
        .annotate(total=Sum("requests"), rows=Sum("rows"))
        .values_list("day", "total", "rows")
    }
    out = []
    day = start
    while day < end:
        amount = amounts.get(day, ZERO)
        count, predictions = counts.get(day, (0, 0))
        per = predictions or count
        out.append(
            {
                "day": day,
                "amount": amount,
                "estimated": estimated.get(day, ZERO),
                "requests": count,
                "predictions": predictions,
                "per_1000": (amount * 1000 / per) if per else None,
                "per_1000_of": "predictions" if predictions else "requests",
            }
        )
        day += timedelta(days=1)
    return out


def user_month_cost(user: Any, month: date) -> dict[str, Decimal]:
    """What a data scientist's work cost in the month: the runs they launched, and serving the model versions they
    made."""
    from deployments.models import Deployment
    from lineage.models import Run

    start, end = month_start(month), next_month(month)
    # Their work in the projects they may still see (a person taken off a restricted project no longer has its costs).
    mine = access.scope(Run.objects.filter(created_by=user), user)
    runs = [str(pk) for pk in mine.values_list("pk", flat=True)]
    served = access.scope(Deployment.objects.filter(model_version__created_by=user), user)
    deployments = [str(pk) for pk in served.values_list("pk", flat=True)]
    training = _object_cost("run", runs, start, end).amount if runs else ZERO
    serving = _object_cost("deployment", deployments, start, end).amount if deployments else ZERO
    return {"training": training, "serving": serving, "total": training + serving}


def months_of(rows: QuerySet[CostRecord]) -> list[date]:
    """The months the rows fall in."""
    return sorted({m for m in rows.annotate(m=TruncMonth("day")).values_list("m", flat=True).distinct()})
