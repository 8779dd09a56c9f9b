"""Reads for projects, the audit log and system health."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import django_filters
from django.core.exceptions import ValidationError
from django.db.models import Q, QuerySet, Sum
from django.utils import timezone

from controlplane import access
from controlplane.filters import ChoiceFilter, DateRangeFilterSet, ListFilterForm, apply_filters, filter_values
from controlplane.models import AuditEvent, AwsRetryCount, Heartbeat, Notification, Project, ProjectMember, SystemCheck


def project_list(*, user: Any, search: str = "") -> QuerySet[Project]:
    """The projects the user may see (a restricted one only by its members, admins and finance)."""
    projects = access.scope(Project.objects.select_related("created_by"), user)
    if search:
        projects = projects.filter(Q(name__icontains=search) | Q(slug__icontains=search))
    return projects


class AuditEventFilter(DateRangeFilterSet):
    """The audit log's filters; the page draws its form (ListFilterForm checks that since <= until)."""

    actor = django_filters.CharFilter(field_name="actor_name", lookup_expr="iexact", max_length=150)
    action = django_filters.CharFilter(lookup_expr="startswith", max_length=100)
    object_type = django_filters.CharFilter(label="Object type", max_length=100)
    object_id = django_filters.CharFilter(label="Object id", max_length=100)

    class Meta:
        model = AuditEvent
        fields: list[str] = []
        form = ListFilterForm


class NotificationFilter(DateRangeFilterSet):
    """A person's notifications: `status` unread or read, a word of the title or text, the day it came."""

    status = ChoiceFilter(choices=[("unread", "unread"), ("read", "read")], method="filter_status")
    q = django_filters.CharFilter(method="filter_search", label="Search", max_length=200)

    class Meta:
        model = Notification
        fields: list[str] = []
        form = ListFilterForm

    def filter_status(self, queryset: QuerySet[Notification], name: str, value: str) -> QuerySet[Notification]:
        return queryset.filter(read_at__isnull=value == "unread")

    def filter_search(self, queryset: QuerySet[Notification], name: str, value: str) -> QuerySet[Notification]:
        return queryset.filter(Q(title__icontains=value) | Q(body__icontains=value))


def notification_list(*, user: Any, filters: Mapping[str, Any] | None = None) -> QuerySet[Notification]:
    """`user`'s notifications newest first, narrowed by NotificationFilter (a ValidationError names a bad one)."""
    mine = Notification.objects.filter(user=user).order_by("-created_at", "-id")
    return apply_filters(NotificationFilter, filters, mine)


def audit_filter(data: Mapping[str, Any] | None) -> AuditEventFilter:
    """The audit filter bound to the page's or the API's query parameters (empty ones left out)."""
    values = {name: value for name, value in filter_values(AuditEventFilter, data).items() if value}
    return AuditEventFilter(values or None, queryset=AuditEvent.objects.all())


def audit_event_list(
    *, user: Any, filters: Mapping[str, Any] | None = None, object_type: str = "", object_id: str = ""
) -> QuerySet[AuditEvent]:
    """The audit events the user may read (none of a restricted project they are not in), newest first, narrowed by
    the filter parameters (ValidationError names each bad one); `object_type`/`object_id` select one object's
    history."""
    filterset = audit_filter(filters)
    if filterset.is_bound and not filterset.is_valid():
        raise ValidationError(filterset.errors.as_data())
    events = access.scope(filterset.qs, user)
    if object_type:
        events = events.filter(object_type=object_type)
    if object_id:
        events = events.filter(object_id=object_id)
    return events


def audit_filter_choices(*, user: Any) -> dict[str, list[str]]:
    # order_by() replaces the model's newest-first ordering, which DISTINCT would otherwise keep in its rows.
    events = access.scope(AuditEvent.objects.all(), user)
    return {
        "actions": list(events.order_by("action").values_list("action", flat=True).distinct()),
        "object_types": list(events.order_by("object_type").values_list("object_type", flat=True).distinct()),
    }


def project_members(*, project: Project) -> QuerySet[ProjectMember]:
    return project.members.select_related("user", "added_by").order_by("-role", "user__username")


def system_status(*, stale_after: timedelta = timedelta(minutes=2)) -> dict[str, Any]:
    now = timezone.now()
    beats = list(Heartbeat.objects.order_by("name"))
    return {
        "heartbeats": [
            {"name": beat.name, "last_seen": beat.last_seen, "alive": now - beat.last_seen < stale_after}
            for beat in beats
        ],
        "checks": SystemCheck.objects.select_related("requested_by")[:10],
        "aws_retries": list(
            AwsRetryCount.objects.filter(day__gte=now.date() - timedelta(days=6))
            .values("service", "operation")
            .annotate(retries=Sum("retries"), gave_up=Sum("gave_up"))
            .order_by("-gave_up", "-retries", "service", "operation")
        ),
    }


# --- home pages -------------------------------------------------------------------------------------------------

# Rows in each of the home page's lists; each links to its full, paginated list.
HOME_ROWS = 5
HOME_VERSIONS_EACH = 3


def home_runs(*, user: Any) -> dict[str, Any]:
    """A person's newest runs; `runs_active` while any of them has not finished (the page then refreshes them)."""
    from lineage import selectors as lineage_selectors
    from lineage.models import Run

    runs = lineage_selectors.runs_of(user=user, limit=HOME_ROWS)
    return {
        "runs": runs,
        "run_count": access.scope(Run.objects.filter(created_by=user), user).count(),
        "runs_active": any(not run.done for run in runs),
    }


def home_models(*, user: Any) -> dict[str, Any]:
    """A person's registered models, each with its newest versions and where each of them stands."""
    from deployments import selectors as deployment_selectors
    from lineage import selectors as lineage_selectors

    models, count = lineage_selectors.models_of(user=user, limit=HOME_ROWS, versions_each=HOME_VERSIONS_EACH)
    versions = [version for model in models for version in model.latest_versions]
    standings = deployment_selectors.version_standings(versions=versions)
    for version in versions:
        version.standing = standings.get(version.pk, [])
    return {"models": models, "model_count": count}


def home_my_requests(*, user: Any) -> dict[str, Any]:
    from deployments import selectors as deployment_selectors

    requests = deployment_selectors.open_requests_of(user=user)
    shown = list(requests[:HOME_ROWS])
    return {"my_requests": shown, "my_request_count": requests.count()}


def home_queue(*, user: Any) -> dict[str, Any]:
    """The open requests an approver may decide, oldest first (first come, first decided), and how many."""
    from deployments import selectors as deployment_selectors

    queue = access.scope(deployment_selectors.approval_queue(user=user), user)
    shown = list(deployment_selectors.with_counts(queue).order_by("created_at", "id")[:HOME_ROWS])
    return {"queue": shown, "approvals_waiting": queue.count()}


def home_rollbacks(*, user: Any) -> dict[str, Any]:
    """The services an approver can roll back (in the projects they may see), each with where a rollback takes it."""
    from deployments import selectors as deployment_selectors

    candidates = deployment_selectors.rollback_candidates(user=user)
    services = list(candidates[:HOME_ROWS])
    targets = deployment_selectors.deployments_by_id([s.target_id for s in services if s.target_id])
    for service in services:
        service.rollback_to = targets.get(service.target_id) if service.target_id else None
    return {
        "rollback_services": services,
        "rollback_count": candidates.count(),
    }


def home_deployments(*, user: Any) -> dict[str, Any]:
    """Deployments under way in the projects the user may see; `deployments_active` while there are any (the page
    then refreshes them)."""
    from deployments import selectors as deployment_selectors

    deployments = list(deployment_selectors.deployments_in_progress(user=user)[:HOME_ROWS])
    return {"deployments": deployments, "deployments_active": bool(deployments)}
