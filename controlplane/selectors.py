"""Reads for projects, the audit log and system health."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Any

from django.db.models import Q, QuerySet
from django.utils import timezone

from controlplane.models import AuditEvent, Heartbeat, Project, SystemCheck


def project_list(*, search: str = "") -> QuerySet[Project]:
    projects = Project.objects.select_related("created_by")
    if search:
        projects = projects.filter(Q(name__icontains=search) | Q(slug__icontains=search))
    return projects


def audit_event_list(
    *,
    actor: str = "",
    action: str = "",
    object_type: str = "",
    object_id: str = "",
    since: date | None = None,
    until: date | None = None,
) -> QuerySet[AuditEvent]:
    events = AuditEvent.objects.all()
    if actor:
        events = events.filter(actor_name__iexact=actor)
    if action:
        events = events.filter(action__startswith=action)
    if object_type:
        events = events.filter(object_type=object_type)
    if object_id:
        events = events.filter(object_id=object_id)
    if since:
        events = events.filter(created_at__gte=timezone.make_aware(datetime.combine(since, time.min)))
    if until:
        events = events.filter(created_at__lt=timezone.make_aware(datetime.combine(until + timedelta(days=1), time.min)))
    return events


def audit_filter_choices() -> dict[str, list[str]]:
    return {
        "actions": sorted(AuditEvent.objects.values_list("action", flat=True).distinct()),
        "object_types": sorted(AuditEvent.objects.values_list("object_type", flat=True).distinct()),
    }


def system_status(*, stale_after: timedelta = timedelta(minutes=2)) -> dict[str, Any]:
    now = timezone.now()
    beats = list(Heartbeat.objects.order_by("name"))
    return {
        "heartbeats": [
            {"name": beat.name, "last_seen": beat.last_seen, "alive": now - beat.last_seen < stale_after}
            for beat in beats
        ],
        "checks": SystemCheck.objects.select_related("requested_by")[:10],
    }
