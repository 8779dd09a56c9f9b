"""Monitoring pages: the overview of every service, a service's latency, errors and throughput over a window, its
drift, and the alerts. Thin: each reads through the metric and drift selectors and hands plain numbers to charts."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

from django.core.exceptions import ValidationError
from django.db.models import Count, Q
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django_htmx.http import HttpResponseClientRefresh

from controlplane import access, permissions
from controlplane.filters import filtered_list
from controlplane.views import paginate
from deployments import selectors as deployment_selectors
from deployments.models import Service
from monitoring import charts, drift_selectors
from monitoring import selectors as metric_selectors
from monitoring.costs.object_selectors import open_budget_crossings
from monitoring.models import Alert, DriftReport
from monitoring.windows import WINDOW_LABELS, Window, parse_window

ALERT_LABELS = {
    "p99_latency_ms": "p99 latency",
    "error_rate": "error rate",
    "drift_share": "drifted share",
    "drift": "inputs drifted",
}
# Each plotly chart costs the browser 50–100 ms: the drift page draws this many feature histograms, drifted first.
HISTOGRAMS_SHOWN = 8


def _service_or_404(request: HttpRequest, pk: int) -> Service:
    """The service, when the user may see its project; else 404, as if there were none."""
    service = deployment_selectors.service_by_id(pk, user=request.user)
    if service is None:
        raise Http404(f"there is no service {pk}")
    return service


def _window(request: HttpRequest, *, default: str) -> tuple[Window | None, dict[str, list[str]]]:
    try:
        return parse_window(request.GET, default=default), {}
    except ValidationError as exc:
        return None, exc.message_dict


def _window_context(
    request: HttpRequest, window: Window | None, errors: dict[str, list[str]], default: str
) -> dict[str, Any]:
    """What the window form shows: the choice as typed (kept when refused), the labels, each field's errors."""
    return {
        "window": window,
        "window_errors": errors,
        "window_choice": request.GET.get("window") or default,
        "window_start": request.GET.get("start", "") if window is None or window.name == "custom" else "",
        "window_end": request.GET.get("end", "") if window is None or window.name == "custom" else "",
        "window_labels": WINDOW_LABELS,
        "window_query": urlencode(window.as_query()) if window is not None else "",
    }


def alert_label(name: str) -> str:
    return ALERT_LABELS.get(name, name.replace("_", " "))


def _latest_report(service: Service) -> DriftReport | None:
    revision = drift_selectors.serving_revision(service)
    return drift_selectors.drift_reports(service, revision=revision).filter(status=DriftReport.Status.SUCCEEDED).first()


# --- overview -----------------------------------------------------------------------------------------------------


def _overview_services(user: Any, filters: dict[str, str]) -> Any:
    return (
        access.scope(deployment_selectors.service_list(filters=filters), user)
        .annotate(open_alert_count=Count("alerts", filter=Q(alerts__status=Alert.Status.OPEN)))
        .order_by("environment__order", "registered_model__slug", "pk")
    )


def overview(request: HttpRequest) -> HttpResponse:
    """Every service over the chosen window (the service page's choice; the last hour unless asked): requests/s,
    error rates, p50/p95/p99, its open alerts and its latest drifted share; and a row per revision where more than
    one took traffic in the window (during a canary, say); the services list's filters narrow it. The same queries
    however many services a page shows."""
    permissions.require(request.user, "service.view")
    default = "1h"
    window, errors = _window(request, default=default)
    context: dict[str, Any] = {
        **_window_context(request, window, errors, default),
        "alerts": drift_selectors.open_alerts(user=request.user)[:10],
        "open_count": drift_selectors.open_alerts(user=request.user).count(),
    }
    if window is None:
        return render(request, "monitoring/overview.html", context, status=400)
    listed = filtered_list(
        request.GET, deployment_selectors.ServiceFilter, lambda filters: _overview_services(request.user, filters)
    )
    context.update(
        filters=listed.values,
        errors=listed.errors,
        projects=access.visible_projects(request.user).order_by("slug"),
        environments=deployment_selectors.environment_list(),
        # Each form keeps the other's choice: the window form the filters, the filters form the window.
        keep_in_window={name: value for name, value in listed.values.items() if value},
        keep_in_filters={name: request.GET[name] for name in ("window", "start", "end") if request.GET.get(name)},
    )
    if listed.errors:
        return render(request, "monitoring/overview.html", context, status=400)
    page = paginate(request, listed.rows)
    shown = list(page)
    ids = [service.pk for service in shown]
    figures = metric_selectors.window_summaries(services=ids, start=window.start, end=window.end)
    revisions = metric_selectors.service_revisions(ids)
    serving = {
        service.pk: revisions[service.pk]["labels"][service.current_deployment_id]
        for service in shown
        if service.current_deployment_id in revisions[service.pk]["labels"]
    }
    drift = drift_selectors.latest_reports(serving)
    rows = []
    for service in shown:
        served = {r: summary for r, summary in figures[service.pk]["revisions"].items() if summary["requests"]}
        names = revisions[service.pk]["names"]
        rows.append(
            {
                "service": service,
                "summary": figures[service.pk]["summary"],
                "revisions": [
                    {"revision": revision, "label": names.get(revision, revision), "summary": summary}
                    for revision, summary in served.items()
                ]
                if len(served) > 1
                else [],
                "drift": drift.get(service.pk),
            }
        )
    context.update(page=page, rows=rows, query="&".join(q for q in (context["window_query"], listed.query) if q))
    return render(request, "monitoring/overview.html", context)


# --- a service's latency, errors and throughput -------------------------------------------------------------------


def service_metrics(request: HttpRequest, pk: int) -> HttpResponse:
    permissions.require(request.user, "service.view")
    service = _service_or_404(request, pk)
    # A service that has served for less than a day opens on the last hour: its first minutes are readable there,
    # a thin spike at the edge of a day's chart.
    first = metric_selectors.first_metric_at(service)
    default = "24h" if first is not None and first <= timezone.now() - timedelta(days=1) else "1h"
    window, errors = _window(request, default=default)
    context: dict[str, Any] = {
        "service": service,
        **_window_context(request, window, errors, default),
    }
    if window is None:
        return render(request, "monitoring/service_metrics.html", context, status=400)
    whole = metric_selectors.metric_series(service=service, start=window.start, end=window.end)
    per_revision = metric_selectors.metric_series(service=service, start=window.start, end=window.end, by_revision=True)
    markers = metric_selectors.deployment_markers(service=service, start=window.start, end=window.end)
    revisions = sorted(per_revision["series"])
    names = metric_selectors.service_revisions([service.pk])[service.pk]["names"]
    labels = {revision: names[revision] for revision in revisions if revision in names}
    figures = metric_selectors.window_summaries(services=[service], start=window.start, end=window.end)[service.pk]
    summaries = [{"revision": None, "label": "all revisions", **figures["summary"]}] + [
        {"revision": revision, "label": labels.get(revision, revision), **figures["revisions"][revision]}
        for revision in revisions
    ]
    for summary in summaries:
        summary["rate_over"] = _rate_over(summary, window)
    context.update(
        step=whole["step"],
        summaries=summaries,
        markers=markers,
        charts=charts.metric_charts(whole, per_revision, markers, labels),
    )
    return render(request, "monitoring/service_metrics.html", context)


def _rate_over(figures: dict[str, Any], window: Window) -> str:
    """What the average rate is taken over, in words, when that is less than the window: "over the 5 min with
    data"."""
    seconds = figures.get("data_seconds")
    if not seconds or seconds >= (window.end - window.start).total_seconds() - 60:
        return ""
    minutes = round(seconds / 60)
    span = f"{minutes} min" if minutes < 120 else f"{minutes / 60:.1f} h"
    return f"over the {span} with data"


# --- a service's drift --------------------------------------------------------------------------------------------


def _histograms(features: list[Any]) -> list[dict[str, Any]]:
    ordered = sorted(features, key=lambda f: (not f.drifted, f.feature))
    shown: list[dict[str, Any]] = []
    for feature in ordered:
        if len(shown) >= HISTOGRAMS_SHOWN:
            break
        figure = charts.drift_histogram_chart(feature)
        if figure is not None:
            shown.append({"id": f"drift-histogram-{len(shown)}", "feature": feature.feature, "figure": figure})
    return shown


def _drift_running(service: Service) -> list[DriftReport]:
    """The service's drift reports being computed (queued or running), oldest first, with their progress."""
    return list(
        DriftReport.objects.filter(
            service=service, status__in=[DriftReport.Status.QUEUED, DriftReport.Status.RUNNING]
        ).order_by("created_at", "id")
    )


def service_drift(request: HttpRequest, pk: int) -> HttpResponse:
    permissions.require(request.user, "service.view")
    service = _service_or_404(request, pk)
    if request.htmx and request.GET.get("part") == "running":
        # The reports under way poll on their own; once none is left, the page is drawn again with their results.
        running = _drift_running(service)
        if not running:
            return HttpResponseClientRefresh()
        return render(request, "monitoring/_drift_running.html", {"service": service, "running": running})
    default = "7d"
    window, errors = _window(request, default=default)
    context: dict[str, Any] = {
        "service": service,
        **_window_context(request, window, errors, default),
    }
    report_text = request.GET.get("report", "")
    if report_text and not (report_text.isascii() and report_text.isdigit() and len(report_text) <= 18):
        errors = {**errors, "report": [f"expected a drift report id, got {report_text!r}"]}
        context["window_errors"] = errors
    if errors or window is None:
        return render(request, "monitoring/service_drift.html", context, status=400)
    reports = drift_selectors.drift_reports(service, window.start, window.end)
    latest = _latest_report(service)
    if report_text:
        report = drift_selectors.drift_reports(service).filter(pk=int(report_text)).first()
        if report is None:
            raise Http404(f"service {service.name} has no drift report {report_text}")
    else:
        report = latest
    detail = drift_selectors.drift_report_detail(report) if report is not None else None
    features = detail["features"] if detail is not None else []
    heatmap = drift_selectors.drift_heatmap(service, window.start, window.end)
    # Offered while the service's latest report says its inputs drifted, to those who may launch runs.
    drifted = latest is not None and bool(latest.drifted)
    can_launch = permissions.has_permission(request.user, "run.launch")
    retrain = drift_selectors.retrain_target(service) if drifted and can_launch else None
    query = request.GET.copy()
    query.pop("page", None)
    page = paginate(request, reports)
    context.update(
        reports=page,
        page=page,
        query=query.urlencode(),
        report=report,
        features=features,
        unreadable=detail["unreadable"] if detail is not None else [],
        crossed=[f for f in features if f.drifted],
        heatmap={"id": "drift-heatmap", "figure": charts.drift_heatmap_chart(heatmap)} if heatmap["features"] else None,
        histograms=_histograms(features),
        retrain=retrain,
        running=_drift_running(service),
    )
    return render(request, "monitoring/service_drift.html", context)


# --- alerts -------------------------------------------------------------------------------------------------------


def alert_list(request: HttpRequest) -> HttpResponse:
    permissions.require(request.user, "service.view")
    listed = filtered_list(
        request.GET,
        drift_selectors.AlertFilter,
        lambda filters: drift_selectors.alert_list(user=request.user, filters=filters),
    )
    status = listed.values["status"] or "open"
    return render(
        request,
        "monitoring/alert_list.html",
        {
            "page": paginate(request, listed.rows),
            "filters": {**listed.values, "status": status},
            "status": status,
            "statuses": ("open", "closed", "all"),
            "names": {name: alert_label(name) for name in drift_selectors.ALERT_NAMES},
            "services": access.scope(Service.objects.order_by("name"), request.user).only("pk", "name"),
            "environments": deployment_selectors.environment_list(),
            "errors": listed.errors,
            "query": listed.query,
            # A budget crossing is an alert about money, not a service: its own section, always the open ones.
            "budget_crossings": list(open_budget_crossings(user=request.user))
            if permissions.has_permission(request.user, "cost.view")
            else [],
        },
        status=400 if listed.errors else 200,
    )
