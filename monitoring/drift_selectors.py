"""Reads for the drift pages: a service's reports, the feature-by-window heatmap, one report's detail, open alerts,
and the "Retrain on newer data" link (the training launch form filled in as the serving version was trained)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from django.db.models import OuterRef, Q, QuerySet, Subquery
from django.urls import reverse

from controlplane import access
from controlplane.filters import (
    ChoiceFilter,
    DateRangeFilterSet,
    ExistingFilter,
    ListFilterForm,
    apply_filters,
    environment_filter,
    filter_values,
)
from deployments.models import Service
from lineage.models import DatasetVersion, ModelVersion
from monitoring.models import Alert, DriftFeature, DriftReport

HEATMAP_REPORTS = 500


def serving_revision(service: Service) -> str | None:
    """The revision label of what serves all of the service's traffic (None before its first deployment)."""
    from monitoring.selectors import revision_label

    deployment = service.current_deployment
    return revision_label(deployment) if deployment is not None else None


def drift_reports(
    service: Service, start: datetime | None = None, end: datetime | None = None, *, revision: str | None = None
) -> QuerySet[DriftReport]:
    """The service's reports whose window ends in (start, end], newest first (either bound may be left open), of
    one revision when `revision` is given (during a canary both revisions have a report per window)."""
    reports = DriftReport.objects.filter(service=service).select_related("baseline__dataset")
    if revision is not None:
        reports = reports.filter(revision=revision)
    if start is not None:
        reports = reports.filter(window_end__gt=start)
    if end is not None:
        reports = reports.filter(window_end__lte=end)
    return reports.order_by("-window_end", "-id")


def latest_reports(revisions: dict[int, str]) -> dict[int, DriftReport]:
    """The newest succeeded report of each service's given revision ({service id: revision label}, e.g. the one
    serving all its traffic), in one query however many services: {service id: report}; a service without one is
    left out."""
    if not revisions:
        return {}
    wanted = Q()
    for service_id, revision in revisions.items():
        wanted |= Q(service_id=service_id, revision=revision)
    newest = (
        DriftReport.objects.filter(
            service_id=OuterRef("service_id"), revision=OuterRef("revision"), status=DriftReport.Status.SUCCEEDED
        )
        .order_by("-window_end", "-id")
        .values("pk")[:1]
    )
    reports = DriftReport.objects.filter(wanted, status=DriftReport.Status.SUCCEEDED, pk=Subquery(newest))
    return {report.service_id: report for report in reports}


def drift_heatmap(
    service: Service, start: datetime | None = None, end: datetime | None = None, *, revision: str | None = None
) -> dict[str, Any]:
    """Each feature's score per window, for a heatmap: `times` (window ends, ISO 8601, oldest first), `starts` (the
    windows' starts), `features`
    (by name, so rows stay put as the window moves), `scores[i][j]` and `drifted[i][j]` for feature i in window j
    (None: not measured then), `thresholds[i]` (the newest report's), and `methods[i]`. Only succeeded reports; a
    window with no captured requests is a column of None. A p-value's score is drift when low, a distance's when
    high: compare scores with their thresholds, not with each other. One revision's reports: by default the one
    serving all traffic now (a canary's reports would put two columns on one window)."""
    if revision is None:
        revision = serving_revision(service)
    reports = list(
        drift_reports(service, start, end, revision=revision).filter(status=DriftReport.Status.SUCCEEDED)[
            :HEATMAP_REPORTS
        ]
    )
    reports.reverse()
    column = {report.pk: j for j, report in enumerate(reports)}
    cells: dict[str, dict[int, tuple[float | None, bool | None]]] = {}
    latest: dict[str, tuple[float, str]] = {}
    rows = DriftFeature.objects.filter(report_id__in=list(column)).values_list(
        "report_id", "feature", "score", "drifted", "threshold", "method"
    )
    for report_id, feature, score, drifted, threshold, method in rows.order_by("report__window_end", "report_id"):
        j = column[report_id]
        cells.setdefault(feature, {})[j] = (score, bool(drifted) if score is not None else None)
        latest[feature] = (threshold, method)
    features = sorted(cells)
    width = len(reports)
    return {
        "times": [report.window_end.isoformat() for report in reports],
        "starts": [report.window_start.isoformat() for report in reports],
        "reports": [report.pk for report in reports],
        "features": features,
        "scores": [[cells[name].get(j, (None, None))[0] for j in range(width)] for name in features],
        "drifted": [[cells[name].get(j, (None, None))[1] for j in range(width)] for name in features],
        "thresholds": [latest[name][0] for name in features],
        "methods": [latest[name][1] for name in features],
    }


def drift_report_detail(report: DriftReport) -> dict[str, Any]:
    """One report for its page: the report, its features (drifted first), each with the histogram to draw
    (baseline against the window), and what it was compared with."""
    features = list(report.features.order_by("-drifted", "feature"))
    return {
        "report": report,
        "service": report.service,
        "baseline": report.baseline,
        "features": features,
        "charts": [
            {"kind": "drift", "title": feature.feature, "method": feature.method, **(feature.histogram or {})}
            for feature in features
            if feature.histogram
        ],
        "unreadable": list(report.unreadable or []),
        "config": dict(report.config or {}),
        "no_verdict": report.status == DriftReport.Status.SUCCEEDED and report.drifted is None,
    }


def open_alerts(*, user: Any, service: Service | None = None) -> QuerySet[Alert]:
    """The open alerts the user may see (of one service, or of all), newest first."""
    alerts = access.scope(Alert.objects.filter(status=Alert.Status.OPEN), user).select_related("service")
    if service is not None:
        alerts = alerts.filter(service=service)
    return alerts.order_by("-opened_at", "-id")


ALERT_NAMES = ("p99_latency_ms", "error_rate", "drift_share", "drift")


class AlertFilter(DateRangeFilterSet):
    """The alerts list's filters (its page and the API): `status` open (the default), closed or all."""

    date_field = "opened_at"
    status = ChoiceFilter(choices=[("open", "open"), ("closed", "closed"), ("all", "all")], method="filter_status")
    service = ExistingFilter(
        field_name="service", queryset=Service.objects.all(), noun="service", label="Service", scoped=True
    )
    environment = environment_filter("service__environment")
    name = ChoiceFilter(choices=[(name, name) for name in ALERT_NAMES], label="What")

    class Meta:
        model = Alert
        fields: list[str] = []
        form = ListFilterForm

    def filter_status(self, queryset: QuerySet[Alert], name: str, value: str) -> QuerySet[Alert]:
        return queryset if value == "all" else queryset.filter(status=value)


def alert_list(*, user: Any, filters: Mapping[str, Any] | None = None) -> QuerySet[Alert]:
    """The alerts the user may see, newest first, open ones unless `status` says closed or all (a ValidationError
    names a bad filter)."""
    values = filter_values(AlertFilter, filters)
    values["status"] = values["status"] or "open"
    alerts = access.scope(Alert.objects.all(), user).select_related("service", "drift_report")
    return apply_filters(AlertFilter, values, alerts, user=user).order_by("-opened_at", "-id")


def alert_history(service: Service) -> QuerySet[Alert]:
    return Alert.objects.filter(service=service).order_by("-opened_at", "-id")


# --- retraining -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetrainTarget:
    """Where "Retrain on newer data" leads: the launch form for `train`, filled in as `model_version` was trained."""

    url: str
    model_version: ModelVersion
    trained_on: DatasetVersion
    train: DatasetVersion
    # False: the newest version of the dataset is the one the serving version was trained on (nothing newer yet).
    newer: bool

    @property
    def message(self) -> str:
        if self.newer:
            model = self.model_version.registered_model.slug
            return f"Retrain {model} on {self.train} (it was trained on {self.trained_on})"
        return f"{self.trained_on} is still the newest version of its dataset: a retrain would use the same data"


def _form_text(value: Any) -> str | None:
    """A parameter's value as the launch form's text field takes it."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return ",".join(str(item) for item in value)
    if isinstance(value, dict):
        return json.dumps(value)
    return str(value)


def retrain_target(service: Service) -> RetrainTarget | None:
    """The launch form for the newest version of the dataset the serving model version was trained on, with that
    version's recipe, hyperparameters, target, seed, backend and instance; None when nothing serves or the version
    records no training data."""
    from monitoring.services.drift import training_dataset_version
    from workers import recipes as recipe_registry

    deployment = (
        Service.objects.select_related("current_deployment__model_version__run", "registered_model")
        .get(pk=service.pk)
        .current_deployment
    )
    if deployment is None:
        return None
    version = deployment.model_version
    run = version.run
    trained_on = training_dataset_version(version)
    if trained_on is None:
        return None
    newest = DatasetVersion.objects.filter(dataset_id=trained_on.dataset_id).order_by("-number").first() or trained_on
    parameters = dict(run.parameters or {})
    params: dict[str, str] = {"train": str(newest.pk), "recipe": run.recipe}
    target = parameters.get("target") or version.target
    if target:
        params["target"] = str(target)
    seed = run.seed if run.seed is not None else parameters.get("seed")
    if seed is not None:
        params["seed"] = str(seed)
    params.update(
        backend=run.backend,
        instance_type=run.instance_type,
        instance_count=str(run.instance_count),
        max_runtime_minutes=str(max(run.max_runtime_seconds // 60, 1)),
        model_name=version.registered_model.slug,
    )
    validation = run.inputs.filter(channel="validation").values_list("dataset_version_id", flat=True).first()
    if validation is not None and validation != newest.pk:
        params["validation"] = str(validation)
    recipe = recipe_registry.RECIPES.get(run.recipe)
    declared = [parameter.name for parameter in recipe.parameters] if recipe is not None else list(parameters)
    for name in declared:
        if name in ("target", "seed"):
            continue
        text = _form_text(parameters.get(name))
        if text not in (None, ""):
            params[f"hp_{name}"] = text
    return RetrainTarget(
        url=f"{reverse('training-create')}?{urlencode(params)}",
        model_version=version,
        trained_on=trained_on,
        train=newest,
        newer=newest.pk != trained_on.pk,
    )


def retrain_url(service: Service) -> str | None:
    target = retrain_target(service)
    return target.url if target is not None else None
