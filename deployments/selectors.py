"""Reads for environments and approval requests."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import django_filters
from django.conf import settings
from django.db.models import Count, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.urls import reverse

from controlplane import access
from controlplane.filters import apply_filters, environment_filter, project_filter
from deployments.models import (
    ACTIVE_DEPLOYMENT_STATUSES,
    ApprovalDecision,
    ApprovalRequest,
    Deployment,
    Environment,
    GateResult,
    Service,
)
from lineage.models import ModelVersion


def mirror_enabled() -> bool:
    """Requests are mirrored to the SageMaker Model Registry on the aws backend."""
    return settings.CONTROLPLANE_BACKEND == "aws"


def environment_list() -> QuerySet[Environment]:
    return Environment.objects.all()


def approved_environment_names(*, model_version: ModelVersion) -> list[str]:
    return list(
        ApprovalRequest.objects.filter(model_version=model_version, status="approved").values_list(
            "environment__name", flat=True
        )
    )


def baseline_version(*, registered_model_id: int, environment: Environment) -> ModelVersion | None:
    """The version a candidate is compared against in `environment`: the one serving there, else (nothing deployed
    yet) the one most recently approved for it."""
    serving = serving_version(registered_model_id=registered_model_id, environment=environment)
    if serving is not None:
        return serving
    latest = (
        ApprovalRequest.objects.filter(
            environment=environment, status="approved", model_version__registered_model_id=registered_model_id
        )
        .select_related("model_version__registered_model__project")
        .order_by("-finished_at", "-id")
        .first()
    )
    return latest.model_version if latest is not None else None


def approval_request_url(request: ApprovalRequest) -> str:
    return reverse("approval-request-detail", kwargs={"pk": request.pk})


MAX_AGE_DAYS = 3650


def approval_filter_problems(
    *, user: Any, project: str = "", environment: str = "", status: str = "", older_than: str = ""
) -> dict[str, list[str]]:
    """What is wrong with the approval list's filters, by filter (the page and the API say the same). A project the
    user may not see is no project to them."""
    errors: dict[str, list[str]] = {}
    if project and not access.visible_projects(user).filter(slug=project).exists():
        errors["project"] = [f"there is no project {project!r}"]
    if environment and not Environment.objects.filter(name=environment).exists():
        known = ", ".join(Environment.objects.values_list("name", flat=True)) or "none are configured yet"
        errors["environment"] = [f"there is no environment {environment!r} (environments: {known})"]
    if status and status not in ApprovalRequest.Status.values:
        errors["status"] = [f"expected one of {', '.join(ApprovalRequest.Status.values)}, got {status!r}"]
    if older_than and not (older_than.isascii() and older_than.isdigit() and int(older_than) <= MAX_AGE_DAYS):
        errors["older_than"] = [f"expected a whole number of days from 0 to {MAX_AGE_DAYS}, got {older_than!r}"]
    return errors


def approval_request_list(
    *,
    status: str | None = None,
    project: str | None = None,
    environment: str | None = None,
    requested_by: Any = None,
) -> QuerySet[ApprovalRequest]:
    """Approval requests by status, project (slug), environment (name) and requester (a user: "my requests")."""
    requests = ApprovalRequest.objects.select_related(
        "model_version__registered_model__project", "environment", "requested_by"
    )
    if requested_by is not None:
        requests = requests.filter(requested_by=requested_by)
    if status:
        requests = requests.filter(status=status)
    if project:
        requests = requests.filter(model_version__registered_model__project__slug=project)
    if environment:
        requests = requests.filter(environment__name=environment)
    return requests


def approval_queue(*, user: Any) -> QuerySet[ApprovalRequest]:
    """Open requests this user may decide: in a project they may see, not their own, not for a version whose bytes a
    run of theirs made (the training run or a reproduction: lineage.selectors.model_version_run_authors), not
    decided by them yet."""
    return (
        access.scope(approval_request_list(status="open"), user)
        .filter(quorum_at__isnull=True)
        .exclude(requested_by=user)
        .exclude(model_version__run__created_by=user)
        .exclude(model_version__reproduced_by__created_by=user)
        .exclude(decisions__approver=user)
        .order_by("created_at", "id")
    )


def eligible_approvers(*, request: ApprovalRequest) -> list[Any]:
    """The approvers who may decide this request: who may see its project (a restricted one's members), not its
    requester, not an author of the version's runs."""
    from django.contrib.auth import get_user_model

    from controlplane import permissions
    from lineage import selectors as lineage_selectors

    excluded = {request.requested_by_id} | lineage_selectors.model_version_run_authors(request.model_version)
    approvers = (
        get_user_model().objects.filter(is_active=True, groups__name=permissions.APPROVER).exclude(pk__in=excluded)
    )
    project = request.model_version.registered_model.project
    return [user for user in approvers.distinct() if access.can_act(user, project)]


def approval_queue_count(*, user: Any) -> int:
    from controlplane import permissions

    if not permissions.has_permission(user, "approval.decide"):
        return 0
    return approval_queue(user=user).count()


def model_version_approvals(*, model_version: ModelVersion) -> QuerySet[ApprovalRequest]:
    """Where a version stands, newest request first per environment."""
    return (
        ApprovalRequest.objects.filter(model_version=model_version)
        .select_related("environment", "requested_by")
        .prefetch_related("decisions__approver")
        .order_by("environment__order", "environment__name", "-created_at")
    )


def approval_matrix(*, versions: list[ModelVersion]) -> dict[int, dict[int, ApprovalRequest]]:
    """version id → environment id → the request that says where it stands there (the live one, else the newest)."""
    matrix: dict[int, dict[int, ApprovalRequest]] = {}
    requests = (
        ApprovalRequest.objects.filter(model_version__in=versions)
        .select_related("environment")
        .order_by("model_version_id", "environment_id", "-created_at", "-id")
    )
    for request in requests:
        row = matrix.setdefault(request.model_version_id, {})
        current = row.get(request.environment_id)
        if current is None or (current.status not in ("open", "approved") and request.status in ("open", "approved")):
            row[request.environment_id] = request
    return matrix


def live_request(*, model_version: ModelVersion, environment: Environment) -> ApprovalRequest | None:
    """The open or approved request of a version for an environment, if there is one."""
    return ApprovalRequest.objects.filter(
        model_version=model_version, environment=environment, status__in=["open", "approved"]
    ).first()


LOWER_IS_BETTER = ("loss", "error", "rmse", "mae", "mse", "std")


def metric_higher_is_better(name: str) -> bool:
    """Which way a metric improves: down for losses, errors and spreads (log_loss, rmse, cv_accuracy_std), up for
    the rest (accuracy, f1, roc_auc, r2)."""
    lowered = name.lower()
    return not any(word in lowered for word in LOWER_IS_BETTER)


def _count_of(rows: QuerySet[Any]) -> Coalesce:
    counted = rows.filter(request=OuterRef("pk")).order_by().values("request").annotate(n=Count("pk")).values("n")
    return Coalesce(Subquery(counted[:1]), 0)


def with_counts(requests: QuerySet[ApprovalRequest]) -> QuerySet[ApprovalRequest]:
    """Each request with `gate_count`, `gates_passed_count` and `approval_count`. Counted per row by correlated
    subqueries, so a page of a long list counts only its rows (a join and GROUP BY would aggregate every request
    before the page is cut, and drop the ordering)."""
    return requests.annotate(
        gate_count=_count_of(GateResult.objects.all()),
        gates_passed_count=_count_of(GateResult.objects.filter(passed=True)),
        approval_count=_count_of(ApprovalDecision.objects.filter(verdict="approve")),
    )


# --- services and deployments -----------------------------------------------------------------------------------


def serving_version(*, registered_model_id: int, environment: Environment) -> ModelVersion | None:
    """The version whose revision serves all of the model's traffic in `environment`, if it is deployed."""
    service = (
        Service.objects.filter(registered_model_id=registered_model_id, environment=environment)
        .select_related("current_deployment__model_version__registered_model__project")
        .first()
    )
    if service is None or service.current_deployment is None:
        return None
    return service.current_deployment.model_version


class ServiceFilter(django_filters.FilterSet):
    """The services list's filters (its page, the monitoring overview and the API)."""

    q = django_filters.CharFilter(field_name="name", lookup_expr="icontains", label="Search", max_length=100)
    project = project_filter("registered_model__project")
    environment = environment_filter("environment")
    model = django_filters.CharFilter(field_name="registered_model__slug", label="Model", max_length=63)

    class Meta:
        model = Service
        fields: list[str] = []


def service_list(*, filters: Mapping[str, Any] | None = None, user: Any = None) -> QuerySet[Service]:
    """Services with `active_status` and `active_id` (the deployment under way, if one is), narrowed by the
    ServiceFilter parameters in `filters` (a ValidationError names each bad one)."""
    services = Service.objects.select_related(
        "registered_model__project", "environment", "current_deployment__model_version"
    )
    if filters:
        services = apply_filters(ServiceFilter, filters, services, user=user)
    active = Deployment.objects.filter(service=OuterRef("pk"), status__in=ACTIVE_DEPLOYMENT_STATUSES)
    return services.annotate(
        active_status=Subquery(active.values("status")[:1]), active_id=Subquery(active.values("pk")[:1])
    )


def service_by_id(pk: Any, *, user: Any) -> Service | None:
    """The service, when `user` may see its project (None: a system read, every service)."""
    try:
        key = int(str(pk))
    except (TypeError, ValueError):
        return None
    services = Service.objects.all() if user is None else access.scope(Service.objects.all(), user)
    return (
        services.select_related(
            "registered_model__project", "environment", "current_deployment__model_version__registered_model__project"
        )
        .filter(pk=key)
        .first()
    )


def deployment_list(*, service: Service | None = None, status: str = "") -> QuerySet[Deployment]:
    deployments = Deployment.objects.select_related(
        "service__environment",
        "service__registered_model__project",
        "model_version__registered_model__project",
        "initiated_by",
        "rollback_of",
    )
    if service is not None:
        deployments = deployments.filter(service=service)
    if status:
        deployments = deployments.filter(status=status)
    # A deployment that succeeded and was later undone: the rollback that did it (its status stays succeeded: it
    # did succeed; this says it no longer serves because of that rollback).
    undoing = Deployment.objects.filter(rollback_of=OuterRef("pk"), kind="rollback").exclude(status="failed")
    return deployments.annotate(undone_by=Subquery(undoing.order_by("-id").values("pk")[:1]))


TIMELINE_EVENTS = 40


def deployment_timeline(*, service: Service) -> QuerySet[Deployment]:
    """A service's deployments, newest first, each with its event count and its latest TIMELINE_EVENTS events
    (a long rollout reports hundreds): one query for the page's rows, one for their events."""
    from django.db.models import Prefetch

    from deployments.models import DeploymentEvent

    latest = DeploymentEvent.objects.select_related("actor").order_by("-created_at", "-id")[:TIMELINE_EVENTS]
    return (
        deployment_list(service=service)
        .annotate(event_count=Count("events"))
        .prefetch_related(Prefetch("events", queryset=latest, to_attr="latest_events"))
        # Meta.ordering does not apply to an aggregating query: say the order again.
        .order_by("-created_at", "-id")
    )


def active_deployment(*, service: Service) -> Deployment | None:
    return deployment_list(service=service).filter(status__in=ACTIVE_DEPLOYMENT_STATUSES).first()


def deployable_environments(*, model_version: ModelVersion) -> list[Environment]:
    """Where the version is approved and not already serving: the environments its Deploy button offers."""
    approved = Environment.objects.filter(
        approval_requests__model_version=model_version, approval_requests__status="approved"
    ).distinct()
    serving = set(
        Service.objects.filter(
            registered_model_id=model_version.registered_model_id,
            current_deployment__model_version=model_version,
        ).values_list("environment_id", flat=True)
    )
    return [environment for environment in approved if environment.pk not in serving]


def model_version_deployments(*, model_version: ModelVersion) -> QuerySet[Deployment]:
    return deployment_list().filter(model_version=model_version)


def service_url(service: Service) -> str:
    return reverse("service-detail", kwargs={"pk": service.pk})


# --- home pages ---------------------------------------------------------------------------------------------------


def version_standings(*, versions: list[ModelVersion]) -> dict[int, list[dict[str, Any]]]:
    """Where each version stands, by environment in their order: "serving" (all of its service's traffic), else
    "open" (a request waits, with it) or "approved". Two queries for any number of versions."""
    standing: dict[int, dict[int, dict[str, Any]]] = {}
    order: dict[int, tuple[int, str]] = {}
    live = (
        ApprovalRequest.objects.filter(model_version__in=versions, status__in=["open", "approved"])
        .select_related("environment")
        .only("model_version", "status", "environment", "environment__name", "environment__order")
        .order_by("created_at", "id")
    )
    for request in live:
        order[request.environment_id] = (request.environment.order, request.environment.name)
        standing.setdefault(request.model_version_id, {})[request.environment_id] = {
            "environment": request.environment.name,
            "state": request.status,
            "request": request,
        }
    serving = Service.objects.filter(current_deployment__model_version__in=versions).values_list(
        "pk", "current_deployment__model_version_id", "environment_id", "environment__name", "environment__order"
    )
    for service_id, version_id, environment_id, name, position in serving:
        order[environment_id] = (position, name)
        standing.setdefault(version_id, {})[environment_id] = {
            "environment": name,
            "state": "serving",
            "service_id": service_id,
        }
    return {
        version_id: [row[environment_id] for environment_id in sorted(row, key=order.__getitem__)]
        for version_id, row in standing.items()
    }


def open_requests_of(*, user: Any) -> QuerySet[ApprovalRequest]:
    """The open approval requests a person made (in the projects they may still see), newest first, with their gate
    and approval counts."""
    requests = access.scope(approval_request_list(status="open", requested_by=user), user)
    return with_counts(requests).order_by("-created_at", "-id")


def rollback_candidates(*, user: Any = None) -> QuerySet[Service]:
    """Services an approver can roll back, the one deployed to most recently first: those rolling out (a rollback
    sends all traffic back to the current revision) and those with a deployment to roll back to, as
    deployments.services.deploys.rollback_target chooses it (`target_id`); each with `active_id`, `active_status`.
    With `user`, only the services they may see."""
    target = (
        Deployment.objects.filter(
            service=OuterRef("pk"),
            status="succeeded",
            created_at__lt=OuterRef("current_deployment__created_at"),
        )
        .exclude(model_version_id=OuterRef("current_deployment__model_version_id"))
        .exclude(rollbacks__status__in=["pending", "in_progress", "baking", "succeeded"])
        .order_by("-created_at", "-id")
        .values("pk")[:1]
    )
    active = Deployment.objects.filter(service=OuterRef("pk"), status__in=ACTIVE_DEPLOYMENT_STATUSES)
    services = Service.objects.all() if user is None else access.scope(Service.objects.all(), user)
    return (
        services.filter(current_deployment__isnull=False)
        .select_related("registered_model__project", "environment", "current_deployment__model_version")
        .annotate(
            target_id=Subquery(target),
            active_id=Subquery(active.values("pk")[:1]),
            active_status=Subquery(active.values("status")[:1]),
        )
        .filter(Q(target_id__isnull=False) | Q(active_id__isnull=False))
        .order_by("-current_deployment__created_at", "-id")
    )


def deployments_by_id(ids: list[int]) -> dict[int, Deployment]:
    return {d.pk: d for d in Deployment.objects.filter(pk__in=ids).select_related("model_version")}


def deployments_in_progress(*, user: Any = None) -> QuerySet[Deployment]:
    """Deployments and rollbacks under way (pending, in progress, baking), newest first; with `user`, those they may
    see."""
    deployments = Deployment.objects.all() if user is None else access.scope(Deployment.objects.all(), user)
    return (
        deployments.filter(status__in=ACTIVE_DEPLOYMENT_STATUSES)
        .select_related("service__environment", "model_version__registered_model", "initiated_by")
        .order_by("-created_at", "-id")
    )
