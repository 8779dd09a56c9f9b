"""REST API of cost: the dashboard's figures for a period (what the page draws and its CSV exports), budgets, and
cost syncs. Thin: the period is parsed as the page parses it (monitoring.costs.dashboard: a bad one is HTTP 400
naming the field), figures come from the cost selectors, writes go through the cost services."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core.exceptions import ValidationError
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.generics import GenericAPIView
from rest_framework.request import Request
from rest_framework.response import Response

from controlplane import access, permissions
from controlplane.api_support import (
    BodyInput,
    Choice,
    Flag,
    ServiceCheckedInteger,
    ServiceCheckedNumber,
    error_responses,
    get_or_404,
)
from controlplane.models import Project
from monitoring.costs import dashboard, selectors, services
from monitoring.costs.selectors import GRANULARITIES, GROUPINGS
from monitoring.models import Budget, BudgetCrossing, CostForecast, CostSync


def _money(**kwargs: Any) -> serializers.DecimalField:
    return serializers.DecimalField(max_digits=20, decimal_places=6, **kwargs)


# --- the figures --------------------------------------------------------------------------------------------------


class CostQueryInput(serializers.Serializer):
    """For the schema: the page's period form. Checked by dashboard.parse_period, in the page's words."""

    start = serializers.DateField(required=False, help_text="First day (UTC); default: the first of this month")
    end = serializers.DateField(required=False, help_text="Last day, inclusive (UTC); default: today")
    granularity = serializers.ChoiceField(choices=list(GRANULARITIES), required=False, help_text="Default day")
    group_by = serializers.ChoiceField(choices=list(GROUPINGS), required=False, help_text="Default project")


class ForecastPointOutput(serializers.Serializer):
    day = serializers.DateField()
    mean = _money()
    low = _money()
    high = _money()


class ForecastOutput(serializers.Serializer):
    month = serializers.DateField(help_text="First day of the month forecast")
    source = serializers.CharField(help_text="cost_explorer (the bill's forecast) or estimate")
    available = serializers.BooleanField()
    reason = serializers.CharField(help_text="Why there is no forecast (when not available)")
    level = serializers.IntegerField(help_text="The band's prediction interval, percent")
    actual = _money(help_text="Spent so far this month")
    mean = _money(allow_null=True, help_text="The rest of the month, mean")
    low = _money(allow_null=True, help_text="The rest of the month, low end of the band")
    high = _money(allow_null=True, help_text="The rest of the month, high end of the band")
    points = ForecastPointOutput(many=True, help_text="Each remaining day")
    computed_at = serializers.DateTimeField()


class SeriesOutput(serializers.Serializer):
    group = serializers.CharField()
    amounts = serializers.ListField(child=_money(), help_text="One per bucket")
    estimated = serializers.ListField(child=_money(), help_text="The estimated part of each amount")
    total = _money()


class CostsOutput(serializers.Serializer):
    start = serializers.DateField(help_text="First day covered (a monthly view starts on the first of a month)")
    end = serializers.DateField(help_text="Last day covered, inclusive")
    granularity = serializers.CharField()
    group_by = serializers.CharField()
    covered_through = serializers.DateField(
        allow_null=True, help_text="Last day the bill (Cost Explorer) covers; null: every figure is an estimate"
    )
    buckets = serializers.ListField(child=serializers.CharField(), help_text="YYYY-MM-DD days or YYYY-MM months")
    groups = serializers.ListField(child=serializers.CharField(), help_text="The largest groups, then (other)")
    series = SeriesOutput(many=True)
    totals = serializers.ListField(child=_money(), help_text="Each bucket's total")
    total = _money()
    estimated_total = _money()
    bill_total = _money()
    forecast = ForecastOutput(allow_null=True, help_text="This month's forecast; null when none was made yet")


def _forecast(forecast: CostForecast | None) -> dict[str, Any] | None:
    if forecast is None:
        return None
    return {
        "month": forecast.month,
        "source": forecast.source,
        "available": forecast.available,
        "reason": forecast.reason,
        "level": forecast.level,
        "actual": forecast.actual,
        "mean": forecast.mean,
        "low": forecast.low,
        "high": forecast.high,
        "points": [p for p in forecast.points if isinstance(p, dict) and p.get("day")],
        "computed_at": forecast.computed_at,
    }


def _period(request: Request) -> dashboard.Period:
    period, problems, _ = dashboard.parse_period(request.query_params)
    if period is None:
        raise ValidationError(problems)
    return period


PERIOD_400 = "A bad period: start or end not a date, end before start, longer than 366 days (daily) or 36 months "
PERIOD_400 += "(monthly); granularity not day or month; group_by not project, aws_service, model or environment."


class CostsApi(GenericAPIView):
    serializer_class = CostsOutput

    @extend_schema(
        operation_id="costs_retrieve",
        parameters=[CostQueryInput],
        responses={200: CostsOutput, **error_responses(400, 403, e400=PERIOD_400)},
        description="Spend over a period by day or month, one series per group (the largest 12, the rest as "
        "(other)), with the estimated part of every figure: the numbers the cost dashboard draws and exports.",
    )
    def get(self, request: Request) -> Response:
        permissions.require(request.user, "cost.view")
        period = _period(request)
        table = dashboard.table_for(period, request.user)
        group_totals = table.group_totals
        body = {
            "start": table.start,
            "end": table.end - timedelta(days=1),
            "granularity": table.granularity,
            "group_by": table.group_by,
            "covered_through": table.covered_through,
            "buckets": [dashboard.period_label(b, table.granularity) for b in table.buckets],
            "groups": table.groups,
            "series": [
                {
                    "group": g,
                    "amounts": table.amounts[g],
                    "estimated": table.estimated[g],
                    "total": group_totals[g],
                }
                for g in table.groups
            ],
            "totals": table.bucket_totals,
            "total": table.total,
            "estimated_total": table.estimated_total,
            "bill_total": table.bill_total,
            "forecast": _forecast(selectors.forecast_for(dashboard.today(), user=request.user)),
        }
        return Response(CostsOutput(body).data)


# --- budgets ------------------------------------------------------------------------------------------------------


class CrossingOutput(serializers.ModelSerializer):
    class Meta:
        model = BudgetCrossing
        fields = ["id", "month", "kind", "status", "spend", "forecast", "budget_amount", "message", "opened_at"]


class BudgetOutput(serializers.Serializer):
    id = serializers.IntegerField(source="budget.pk")
    project = serializers.CharField(allow_null=True, help_text="The project's slug; null for the overall budget")
    amount = serializers.DecimalField(source="budget.amount", max_digits=14, decimal_places=2, help_text="USD a month")
    thresholds = serializers.ListField(source="budget.thresholds", child=serializers.IntegerField())
    alert_on_forecast = serializers.BooleanField(source="budget.alert_on_forecast")
    created_by = serializers.CharField(source="budget.created_by.username")
    created_at = serializers.DateTimeField(source="budget.created_at")
    updated_at = serializers.DateTimeField(source="budget.updated_at")
    month = serializers.DateField(help_text="The month the figures below are of (this one)")
    spend = _money()
    estimated = _money(help_text="The estimated part of the spend")
    percent_used = serializers.IntegerField(source="percent")
    forecast_total = _money(allow_null=True, help_text="Spent so far + the forecast of the rest of the month")
    open_crossings = CrossingOutput(many=True)


class Thresholds(serializers.ListField):
    child = ServiceCheckedInteger(min_value=1, max_value=1000)


class BudgetCreateInput(BodyInput):
    # Required, so a body that forgets it never sets the overall budget by accident.
    project = serializers.CharField(
        required=True, allow_null=True, max_length=63, help_text="Project slug; null for the overall budget"
    )
    amount = ServiceCheckedNumber(min_value=0.01, max_value=999999999999.99, help_text="USD per month, above 0")
    thresholds = Thresholds(required=False, default=[80, 100], help_text="Percents (1-1000) whose crossing alerts")
    alert_on_forecast = Flag(required=False, default=True)


class BudgetChangeInput(BodyInput):
    amount = ServiceCheckedNumber(min_value=0.01, max_value=999999999999.99, required=False)
    thresholds = Thresholds(required=False)
    alert_on_forecast = Flag(required=False)


def _budgets(user: Any) -> Any:
    return dashboard.visible_budgets(user).select_related("project", "created_by").prefetch_related("crossings")


def _budget_body(budget: Budget, user: Any) -> dict[str, Any]:
    return BudgetOutput(dashboard.budget_status(budget, user=user)).data  # type: ignore[return-value]


def _project(slug: Any, user: Any) -> Project | None:
    """The project named, among those whose costs the user may see; else 400, as if there were none."""
    if slug is None or slug == "":
        return None
    project = access.scope(Project.objects.all(), user).filter(slug=str(slug)).first()
    if project is None:
        raise ValidationError({"project": [f"there is no project {slug!r}"]})
    return project


BUDGET_400 = "amount not above 0; a threshold outside 1-1000; project not a project's slug; a field the API lacks."


class BudgetListApi(GenericAPIView):
    serializer_class = BudgetOutput

    @extend_schema(
        operation_id="budgets_list",
        responses={200: BudgetOutput(many=True), **error_responses(403)},
        description="Every budget with this month's spend, percent used, forecast and open crossings.",
    )
    def get(self, request: Request) -> Response:
        permissions.require(request.user, "cost.view")
        page = self.paginate_queryset(_budgets(request.user))
        statuses = dashboard.budget_statuses(list(page or []), user=request.user)
        return self.get_paginated_response([BudgetOutput(status).data for status in statuses])

    @extend_schema(
        operation_id="budgets_set",
        request=BudgetCreateInput,
        responses={201: BudgetOutput, 200: BudgetOutput, **error_responses(400, 403, e400=BUDGET_400)},
        description="Set the monthly budget of a project (or the overall one): 201 when new, 200 when it changed "
        "the one there was. Audited.",
    )
    def post(self, request: Request) -> Response:
        permissions.require(request.user, "budget.manage")
        inputs = BudgetCreateInput(data=request.data)
        inputs.is_valid(raise_exception=True)
        data = inputs.validated_data
        project = _project(data.get("project"), request.user)
        existed = Budget.objects.filter(project=project).exists()
        budget = services.budget_save(
            actor=request.user,
            project=project,
            amount=data["amount"],
            thresholds=data["thresholds"],
            alert_on_forecast=data["alert_on_forecast"],
        )
        code = status.HTTP_200_OK if existed else status.HTTP_201_CREATED
        return Response(_budget_body(_budgets(request.user).get(pk=budget.pk), request.user), status=code)


class BudgetDetailApi(GenericAPIView):
    serializer_class = BudgetOutput

    def _get(self, user: Any, pk: int) -> Budget:
        return get_or_404(_budgets(user), f"there is no budget {pk}", pk=pk)

    @extend_schema(operation_id="budgets_retrieve", responses={200: BudgetOutput, **error_responses(403, 404)})
    def get(self, request: Request, pk: int) -> Response:
        permissions.require(request.user, "cost.view")
        return Response(_budget_body(self._get(request.user, pk), request.user))

    @extend_schema(
        operation_id="budgets_change",
        request=BudgetChangeInput,
        responses={200: BudgetOutput, **error_responses(400, 403, 404, e400=BUDGET_400)},
        description="Change a budget's amount, thresholds or forecast alert (its project never changes). Audited.",
    )
    def patch(self, request: Request, pk: int) -> Response:
        permissions.require(request.user, "budget.manage")
        budget = self._get(request.user, pk)
        inputs = BudgetChangeInput(data=request.data)
        inputs.is_valid(raise_exception=True)
        data = inputs.validated_data
        services.budget_save(
            actor=request.user,
            project=budget.project,
            amount=data.get("amount", budget.amount),
            thresholds=data.get("thresholds", budget.thresholds),
            alert_on_forecast=data.get("alert_on_forecast", budget.alert_on_forecast),
        )
        return Response(_budget_body(self._get(request.user, pk), request.user))

    @extend_schema(
        operation_id="budgets_delete",
        responses={204: None, **error_responses(403, 404)},
        description="Delete a budget (its crossings go with it). Audited.",
    )
    def delete(self, request: Request, pk: int) -> Response:
        permissions.require(request.user, "budget.manage")
        budget = self._get(request.user, pk)
        try:
            services.budget_delete(actor=request.user, budget_id=budget.pk)
        except ValidationError:
            # Deleted by someone else in between: it is gone, as asked.
            pass
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- syncs --------------------------------------------------------------------------------------------------------


class CostSyncOutput(serializers.ModelSerializer):
    requested_by = serializers.CharField(source="requested_by.username", allow_null=True, default=None)
    steps = serializers.SerializerMethodField(help_text="[{at, message}] what it did, oldest first (the last 20)")

    class Meta:
        model = CostSync
        fields = [
            "id",
            "source",
            "status",
            "status_reason",
            "start",
            "end",
            "requested_by",
            "calls",
            "rows",
            "steps",
            "created_at",
            "started_at",
            "finished_at",
        ]

    def get_steps(self, sync: CostSync) -> list[dict[str, Any]]:
        steps = (sync.progress or {}).get("steps") or []
        return [s for s in steps if isinstance(s, dict)]


class CostSyncInput(BodyInput):
    source = Choice(choices=list(CostSync.Source.values), required=False, default="estimate")


class CostSyncListApi(GenericAPIView):
    serializer_class = CostSyncOutput

    @extend_schema(
        operation_id="cost_syncs_list",
        parameters=[OpenApiParameter("source", str, enum=list(CostSync.Source.values), required=False)],
        responses={200: CostSyncOutput(many=True), **error_responses(400, 403)},
        description="Cost syncs, newest first, with their steps, Cost Explorer calls and rows written.",
    )
    def get(self, request: Request) -> Response:
        permissions.require(request.user, "cost.view")
        syncs = CostSync.objects.select_related("requested_by")
        source = request.query_params.get("source")
        if source is not None:
            if source not in CostSync.Source.values:
                raise ValidationError({"source": [f"expected estimate or cost_explorer, got {source[:40]!r}"]})
            syncs = syncs.filter(source=source)
        page = self.paginate_queryset(syncs)
        return self.get_paginated_response(CostSyncOutput(page, many=True).data)

    @extend_schema(
        operation_id="cost_syncs_create",
        request=CostSyncInput,
        responses={202: CostSyncOutput, **error_responses(400, 403)},
        description="Ask for a sync now (default: the estimates). One sync of a source at a time: while one is "
        "queued or running, that one is answered. cost_explorer is refused (400) where it is not configured.",
    )
    def post(self, request: Request) -> Response:
        permissions.require(request.user, "cost.sync")
        inputs = CostSyncInput(data=request.data)
        inputs.is_valid(raise_exception=True)
        sync = services.cost_sync_request(source=inputs.validated_data["source"], actor=request.user)
        return Response(CostSyncOutput(sync).data, status=status.HTTP_202_ACCEPTED)


class CostSyncDetailApi(GenericAPIView):
    serializer_class = CostSyncOutput

    @extend_schema(operation_id="cost_syncs_retrieve", responses={200: CostSyncOutput, **error_responses(403, 404)})
    def get(self, request: Request, pk: int) -> Response:
        permissions.require(request.user, "cost.view")
        sync = get_or_404(CostSync.objects.select_related("requested_by"), f"there is no cost sync {pk}", pk=pk)
        return Response(CostSyncOutput(sync).data)
