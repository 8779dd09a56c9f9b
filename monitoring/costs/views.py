"""The finance pages: the cost dashboard (chart, the same numbers as a table, the forecast, budgets against the
period, the syncs), its CSV, and the budgets. Thin: the period is parsed in monitoring.costs.dashboard, figures come
from the cost selectors, writes go through the cost services."""

from __future__ import annotations

import csv
from io import StringIO
from typing import Any
from urllib.parse import urlencode

from django import forms
from django.conf import settings
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.db.models import Prefetch
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, QueryDict
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from controlplane import access, permissions
from controlplane.models import Project
from controlplane.views import PROGRESS, paginate
from monitoring.costs import dashboard, selectors, services
from monitoring.models import BudgetCrossing, CostSync

SYNCS_SHOWN = 5
PERIOD_FIELDS = ("start", "end", "granularity", "group_by")
SOURCE_LABELS = {"estimate": "Estimates (measured usage × prices)", "cost_explorer": "The bill (Cost Explorer)"}


def _sync_sources() -> list[tuple[str, str]]:
    sources = [("estimate", SOURCE_LABELS["estimate"])]
    if settings.COST_EXPLORER_ENABLED:
        sources.append(("cost_explorer", SOURCE_LABELS["cost_explorer"]))
    return sources


def _sync_panel_context(request: HttpRequest) -> dict[str, Any]:
    syncs = list(CostSync.objects.select_related("requested_by")[:SYNCS_SHOWN])
    return {
        "syncs": [{"sync": s, "steps": list((s.progress or {}).get("steps") or [])[-6:]} for s in syncs],
        "syncs_active": any(s.status in ("queued", "running") for s in syncs),
        "can_sync": permissions.has_permission(request.user, "cost.sync"),
        "sync_sources": _sync_sources(),
    }


@require_GET
def cost_dashboard(request: HttpRequest) -> HttpResponse:
    permissions.require(request.user, "cost.view")
    period, problems, typed = dashboard.parse_period(request.GET)
    context: dict[str, Any] = {
        "typed": typed,
        "problems": problems,
        "groupings": selectors.GROUPING_LABELS,
        "granularities": {"day": "Daily", "month": "Monthly"},
        "period": period,
        "query": "",
        **_sync_panel_context(request),
    }
    if period is None:
        return render(request, "monitoring/costs/dashboard.html", context, status=400)
    table = dashboard.table_for(period, request.user)
    forecast = selectors.forecast_for(dashboard.today(), user=request.user)
    context.update(
        table=table,
        shown=dashboard.table_view(table),
        chart=dashboard.chart_spec(table, period, forecast),
        forecast_in_period=dashboard.forecast_shown(period),
        forecast=dashboard.forecast_summary(forecast),
        budgets=dashboard.budgets_for_dashboard(table, period, request.user),
        query=urlencode(period.as_query()),
        grouping_label=selectors.GROUPING_LABELS[period.group_by],
        cost_explorer_enabled=settings.COST_EXPLORER_ENABLED,
    )
    return render(request, "monitoring/costs/dashboard.html", context)


@require_GET
def cost_export(request: HttpRequest) -> HttpResponse:
    """The dashboard's table as CSV, cell for cell: a row per period and group (zero too), each period's total and the
    table's total rows, rounded and added up as the table does."""
    permissions.require(request.user, "cost.view")
    period, problems, _ = dashboard.parse_period(request.GET)
    if period is None:
        text = "".join(f"{name}: {'; '.join(messages_)}\n" for name, messages_ in problems.items())
        return HttpResponse(text, status=400, content_type="text/plain; charset=utf-8")
    table = dashboard.table_for(period, request.user)
    out = StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(dashboard.CSV_HEADER)
    writer.writerows(dashboard.csv_rows(table))
    name = f"costs-{period.start.isoformat()}-{period.end.isoformat()}-{period.granularity}-{period.group_by}.csv"
    response = HttpResponse(out.getvalue(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


@require_GET
def cost_sync_panel(request: HttpRequest) -> HttpResponse:
    """The last syncs, for the dashboard to refresh while one runs."""
    permissions.require(request.user, "cost.view")
    # The dashboard's period rides along, so Sync now from a refreshed panel comes back to it.
    query = urlencode({k: request.GET[k] for k in PERIOD_FIELDS if request.GET.get(k)})
    context = _sync_panel_context(request)
    response = render(request, "monitoring/costs/_sync_panel.html", {**context, "query": query})
    if request.headers.get("HX-Request") and not context.get("syncs_active"):
        # The sync the page was following ended: the chart, the table and the totals are new, so the page is too.
        response["HX-Refresh"] = "true"
    return response


def _back_to_dashboard(request: HttpRequest) -> HttpResponseRedirect:
    # Only the period form's own fields go back into the address.
    asked = QueryDict(request.POST.get("next_query", ""))
    query = urlencode({k: asked[k] for k in PERIOD_FIELDS if asked.get(k)})
    return HttpResponseRedirect(reverse("cost-dashboard") + (f"?{query}" if query else ""), status=303)


@require_POST
def cost_sync(request: HttpRequest) -> HttpResponse:
    permissions.require(request.user, "cost.sync")
    source = request.POST.get("source", "estimate")
    try:
        sync = services.cost_sync_request(source=source, actor=request.user)
    except ValidationError as exc:
        for name, errors in exc.message_dict.items():
            messages.error(request, f"{name}: {'; '.join(errors)}")
        return _back_to_dashboard(request)
    messages.success(
        request, f"{SOURCE_LABELS.get(sync.source, sync.source)}: sync {sync.pk} is {sync.status}.", extra_tags=PROGRESS
    )
    return _back_to_dashboard(request)


# --- budgets ------------------------------------------------------------------------------------------------------


class BudgetForm(forms.Form):
    """The shape of the form; the amount and thresholds are checked by the service (budget_problems), so the page
    and the API refuse them in the same words."""

    project = forms.ModelChoiceField(
        queryset=Project.objects.order_by("name"),
        required=False,
        empty_label="Overall (everything)",
        to_field_name="slug",
        help_text="One budget per project, and one overall; setting it again changes it",
    )
    amount = forms.CharField(max_length=40, label="Amount (USD per month)")
    thresholds = forms.CharField(
        max_length=200,
        required=False,
        initial="80, 100",
        label="Alert thresholds (%)",
        help_text="Percents of the amount, 1-1000, separated by commas; none: only the forecast alerts",
    )
    alert_on_forecast = forms.BooleanField(required=False, initial=True, label="Also alert when the forecast is over")

    def __init__(self, *args: Any, user: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The projects whose costs the user may see (finance and admins: all of them).
        self.fields["project"].queryset = access.scope(Project.objects.order_by("name"), user)  # type: ignore[attr-defined]


def _budget_rows(budgets: Any, user: Any) -> list[dict[str, Any]]:
    return dashboard.budget_statuses(list(budgets), user=user)


def _budget_page(request: HttpRequest, form: BudgetForm, *, status: int = 200) -> HttpResponse:
    budgets = (
        dashboard.visible_budgets(request.user)
        .select_related("project", "created_by")
        .prefetch_related(Prefetch("crossings", queryset=BudgetCrossing.objects.order_by("-opened_at", "-id")))
    )
    page = paginate(request, budgets)
    return render(
        request,
        "monitoring/costs/budgets.html",
        {
            "page": page,
            "rows": _budget_rows(page, request.user),
            "form": form,
            "can_manage": permissions.has_permission(request.user, "budget.manage"),
            "month": selectors.month_start(dashboard.today()),
        },
        status=status,
    )


@require_http_methods(["GET", "POST"])
def budget_list(request: HttpRequest) -> HttpResponse:
    permissions.require(request.user, "cost.view")
    if request.method == "GET":
        return _budget_page(request, BudgetForm(user=request.user))
    permissions.require(request.user, "budget.manage")
    form = BudgetForm(request.POST, user=request.user)
    if form.is_valid():
        data = form.cleaned_data
        try:
            budget = services.budget_save(
                actor=request.user,
                project=data["project"],
                amount=data["amount"],
                thresholds=data["thresholds"],
                alert_on_forecast=data["alert_on_forecast"],
            )
        except ValidationError as exc:
            for name, errors in exc.message_dict.items():
                for error in errors:
                    form.add_error(name if name in form.fields else None, error)
        else:
            scope = budget.project.name if budget.project else "overall"
            messages.success(request, f"Budget ({scope}) set: {budget.amount} USD per month.")
            return HttpResponseRedirect(reverse("budget-list"), status=303)
    return _budget_page(request, form, status=400)


@require_POST
def budget_delete(request: HttpRequest, pk: int) -> HttpResponse:
    permissions.require(request.user, "budget.manage")
    try:
        deleted = services.budget_delete(actor=request.user, budget_id=pk)
    except ValidationError as exc:
        for errors in exc.message_dict.values():
            messages.error(request, "; ".join(errors))
    else:
        messages.success(request, f"Deleted {deleted}.")
    return HttpResponseRedirect(reverse("budget-list"), status=303)
