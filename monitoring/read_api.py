"""REST API to read what the monitoring pages show: a service's metrics over a window, its drift reports, alerts.

Read-only and thin: the window is parsed as the pages parse it (monitoring.windows: a bad one is HTTP 400 naming the
field), the numbers come from the same selectors, every list is paginated (`page`, `page_size`).
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.generics import GenericAPIView
from rest_framework.request import Request
from rest_framework.response import Response

from controlplane import access, permissions
from controlplane.api_support import Choice, Flag, Pagination, error_responses, filter_parameters, get_or_404
from deployments import selectors as deployment_selectors
from deployments.models import Service
from monitoring import drift_selectors
from monitoring import selectors as metric_selectors
from monitoring.models import Alert, DriftFeature, DriftReport
from monitoring.windows import WINDOW_LABELS, Window, parse_window

MAX_ID = 2**63 - 1
FIGURES = (
    "requests",
    "requests_per_s",
    "errors",
    "client_errors",
    "error_rate",
    "client_error_rate",
    "p50_ms",
    "p95_ms",
    "p99_ms",
)


class MetricsPagination(Pagination):
    """A page holds a whole window of the service's series (metric_series draws at most MAX_POINTS points, plus the
    step a window's edges may add), so the latest minutes are never on page 2; by_revision with many revisions
    still pages."""

    page_size = metric_selectors.MAX_POINTS + 2
    max_page_size = 5000


class WindowInput(serializers.Serializer):
    window = Choice(choices=list(WINDOW_LABELS), required=False, help_text="1h, 24h or 7d ending now, or custom")
    start = serializers.CharField(required=False, max_length=40, help_text="With window=custom: ISO 8601, UTC")
    end = serializers.CharField(
        required=False, max_length=40, help_text="With window=custom: ISO 8601, UTC, after start"
    )


class MetricsInput(WindowInput):
    by_revision = Flag(required=False, default=False, help_text="One series per revision instead of the service's")


class WindowOutput(serializers.Serializer):
    name = serializers.CharField()
    start = serializers.DateTimeField()
    end = serializers.DateTimeField()


class FiguresOutput(serializers.Serializer):
    requests = serializers.IntegerField()
    requests_per_s = serializers.FloatField(
        allow_null=True, help_text="Null for a step still in progress (its minutes are still arriving)"
    )
    errors = serializers.IntegerField(help_text="5xx answers")
    client_errors = serializers.IntegerField(help_text="4xx answers")
    error_rate = serializers.FloatField(allow_null=True, help_text="5xx share of requests; null without requests")
    client_error_rate = serializers.FloatField(
        allow_null=True, help_text="4xx share of requests; null without requests"
    )
    p50_ms = serializers.FloatField(allow_null=True, help_text="From the merged latency histogram")
    p95_ms = serializers.FloatField(allow_null=True)
    p99_ms = serializers.FloatField(allow_null=True)


class SummaryOutput(FiguresOutput):
    mean_ms = serializers.FloatField(allow_null=True, help_text="Mean latency")


class MetricPointOutput(FiguresOutput):
    time = serializers.DateTimeField(help_text="Start of the step this point covers")
    revision = serializers.CharField(help_text="`all` for the whole service, else the revision")


class MarkerOutput(serializers.Serializer):
    at = serializers.DateTimeField(help_text="When it took traffic (else when it started)")
    kind = serializers.CharField(help_text="deploy or rollback")
    deployment_id = serializers.IntegerField()
    revision = serializers.CharField()
    label = serializers.CharField()
    status = serializers.CharField()


class ServiceMetricsOutput(serializers.Serializer):
    count = serializers.IntegerField(help_text="Points in all pages")
    next = serializers.URLField(allow_null=True)
    previous = serializers.URLField(allow_null=True)
    service = serializers.IntegerField()
    window = WindowOutput()
    step_seconds = serializers.IntegerField(help_text="Seconds each point covers")
    summary = SummaryOutput(help_text="The whole window, from the merged histograms")
    markers = MarkerOutput(many=True, help_text="Deployments and rollbacks in the window")
    results = MetricPointOutput(many=True, help_text="Points by time, then revision")


class DriftFeatureOutput(serializers.ModelSerializer):
    histogram = serializers.DictField(help_text="{edges|values, baseline, current}: counts per bin")

    class Meta:
        model = DriftFeature
        fields = [
            "feature",
            "kind",
            "method",
            "statistic",
            "p_value",
            "score",
            "threshold",
            "drifted",
            "baseline_rows",
            "current_rows",
            "histogram",
            "note",
        ]


class DriftReportOutput(serializers.ModelSerializer):
    baseline = serializers.IntegerField(source="baseline_id", allow_null=True, help_text="Dataset version id")
    unreadable = serializers.ListField(child=serializers.DictField(), help_text="[{key, reason}] skipped files")
    features = DriftFeatureOutput(many=True)

    class Meta:
        model = DriftReport
        fields = [
            "id",
            "revision",
            "window_start",
            "window_end",
            "baseline",
            "status",
            "status_reason",
            "rows",
            "files_read",
            "unreadable",
            "feature_count",
            "drifted_count",
            "drifted_share",
            "drifted",
            "created_at",
            "finished_at",
            "features",
        ]


class AlertOutput(serializers.ModelSerializer):
    service = serializers.CharField(source="service.name")
    service_id = serializers.IntegerField()
    drift_report = serializers.IntegerField(source="drift_report_id", allow_null=True)

    class Meta:
        model = Alert
        fields = [
            "id",
            "service",
            "service_id",
            "name",
            "status",
            "value",
            "threshold",
            "window_start",
            "window_end",
            "message",
            "drift_report",
            "opened_at",
            "last_seen_at",
            "closed_at",
            "close_reason",
        ]


def _service(user: Any, pk: int) -> Service:
    """The service, when the user may see its project; else 404, as if there were none."""
    return get_or_404(access.scope(deployment_selectors.service_list(), user), f"there is no service {pk}", pk=pk)


def _window(request: Request, inputs: serializers.Serializer, *, default: str) -> Window:
    """Shapes first (the serializer), then the window's own rules, both as 400 naming the fields."""
    if not inputs.is_valid():
        raise ValidationError(dict(inputs.errors))
    return parse_window(request.query_params, default=default)


WINDOW_400 = "A bad window: `window` not one of 1h, 24h, 7d, custom; `start`/`end` missing or not a date and time; "
WINDOW_400 += "end before start or more than a few minutes after now; longer than the metrics are kept."


class ServiceMetricsApi(GenericAPIView):
    serializer_class = ServiceMetricsOutput
    pagination_class = MetricsPagination

    @extend_schema(
        operation_id="services_metrics",
        parameters=[MetricsInput],
        responses={200: ServiceMetricsOutput, **error_responses(400, 403, 404, e400=WINDOW_400)},
        description="Requests/s, error rate and p50/p95/p99 latency over a window (default 24h), one point per "
        "step; percentiles come from merged histograms. Paginated over the points.",
    )
    def get(self, request: Request, pk: int) -> Response:
        permissions.require(request.user, "service.view")
        service = _service(request.user, pk)
        inputs = MetricsInput(data=request.query_params)
        window = _window(request, inputs, default="24h")
        by_revision = inputs.validated_data["by_revision"]
        series = metric_selectors.metric_series(
            service=service, start=window.start, end=window.end, by_revision=by_revision
        )
        points = [
            {"time": time, "revision": key, **{name: values[name][i] for name in FIGURES}}
            for i, time in enumerate(series["times"])
            for key, values in sorted(series["series"].items())
        ]
        page = self.paginate_queryset(points)
        assert self.paginator is not None and page is not None
        body = {
            "count": self.paginator.page.paginator.count,  # type: ignore[attr-defined]
            "next": self.paginator.get_next_link(),  # type: ignore[attr-defined]
            "previous": self.paginator.get_previous_link(),  # type: ignore[attr-defined]
            "service": service.pk,
            "window": {"name": window.name, "start": window.start, "end": window.end},
            "step_seconds": series["step"],
            "summary": metric_selectors.window_summary(service=service, start=window.start, end=window.end),
            "markers": metric_selectors.deployment_markers(service=service, start=window.start, end=window.end),
            "results": page,
        }
        return Response(ServiceMetricsOutput(body).data)


class ServiceDriftApi(GenericAPIView):
    serializer_class = DriftReportOutput

    @extend_schema(
        operation_id="services_drift",
        parameters=[WindowInput],
        responses={200: DriftReportOutput(many=True), **error_responses(400, 403, 404, e400=WINDOW_400)},
        description="The service's drift reports whose window ended in the window asked for (default 7d), newest "
        "first, each with its per-feature verdicts and histograms.",
    )
    def get(self, request: Request, pk: int) -> Response:
        permissions.require(request.user, "service.view")
        service = _service(request.user, pk)
        window = _window(request, WindowInput(data=request.query_params), default="7d")
        reports = (
            drift_selectors.drift_reports(service, window.start, window.end)
            .prefetch_related("features")
            .order_by("-window_end", "-id")
        )
        page = self.paginate_queryset(reports)
        return self.get_paginated_response(DriftReportOutput(page, many=True).data)


class AlertListApi(GenericAPIView):
    serializer_class = AlertOutput

    @extend_schema(
        operation_id="alerts_list",
        parameters=filter_parameters(drift_selectors.AlertFilter),
        responses={200: AlertOutput(many=True), **error_responses(400, 403)},
        description="Objective breaches and drift verdicts, newest first: open ones by default, `status=all` for "
        "every one; by `service` (id), `environment`, `name` (what was breached) and the day opened (`since`, "
        "`until`). A bad filter is a 400 naming it.",
    )
    def get(self, request: Request) -> Response:
        permissions.require(request.user, "service.view")
        page = self.paginate_queryset(drift_selectors.alert_list(user=request.user, filters=request.query_params))
        return self.get_paginated_response(AlertOutput(page, many=True).data)
