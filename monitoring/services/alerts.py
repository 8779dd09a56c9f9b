"""Alerts: an objective breached or a service's inputs drifted, open until the value recovers.

The database holds at most one open alert per (service, name) (a partial unique constraint), so two evaluations
raising the same alert at once open one: the loser of the insert finds the winner's and refreshes it. Opening and
closing are audited; opening tells the people behind the serving model.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from django.db import IntegrityError, transaction
from django.urls import reverse
from django.utils import timezone

from controlplane import access
from controlplane.services import audit_record, notify
from deployments.models import Service
from deployments.services.deploys import service_project
from monitoring.models import Alert, DriftReport

log = logging.getLogger(__name__)

RAISE_ATTEMPTS = 5


def _state(alert: Alert) -> dict[str, Any]:
    return {
        "service": alert.service.name,
        "name": alert.name,
        "status": alert.status,
        "value": alert.value,
        "threshold": alert.threshold,
        "window_start": alert.window_start.isoformat() if alert.window_start else None,
        "window_end": alert.window_end.isoformat() if alert.window_end else None,
    }


def alert_raise(
    service: Service,
    name: str,
    *,
    value: float | None,
    threshold: float | None,
    window: tuple[datetime, datetime] | None,
    message: str,
    drift_report: DriftReport | None = None,
) -> Alert:
    """Open the service's `name` alert, or refresh the open one (its value, window, message, last seen)."""
    now = timezone.now()
    start, end = window if window is not None else (None, None)
    latest = {
        "value": value,
        "threshold": threshold,
        "window_start": start,
        "window_end": end,
        "message": message,
        "last_seen_at": now,
    }
    if drift_report is not None:
        latest["drift_report"] = drift_report
    for _ in range(RAISE_ATTEMPTS):
        open_alert = Alert.objects.filter(service=service, name=name, status=Alert.Status.OPEN)
        if open_alert.update(**latest):
            found = open_alert.select_related("service").first()
            if found is not None:
                return found
            continue  # closed between the update and the read: open a new one
        try:
            with transaction.atomic():
                alert = Alert.objects.create(service=service, name=name, status=Alert.Status.OPEN, **latest)
                audit_record(
                    actor=None,
                    action="alert.open",
                    object_type="alert",
                    object_id=alert.pk,
                    object_repr=f"{service.name}: {name}",
                    after=_state(alert),
                    reason=message,
                    project=service_project(service.pk),
                )
                _tell(alert)
            return alert
        except IntegrityError:
            continue  # another evaluation opened it first: refresh that one
    raise RuntimeError(f"could not raise alert {name!r} of {service.name}: it kept changing under us")


def alert_resolve(service: Service, name: str, *, reason: str) -> Alert | None:
    """Close the service's open `name` alert, saying why; None when none is open."""
    with transaction.atomic():
        alert = (
            Alert.objects.select_for_update()
            .select_related("service")
            .filter(service=service, name=name, status=Alert.Status.OPEN)
            .first()
        )
        if alert is None:
            return None
        before = _state(alert)
        alert.status = Alert.Status.CLOSED
        alert.closed_at = timezone.now()
        alert.close_reason = reason
        alert.save(update_fields=["status", "closed_at", "close_reason"])
        audit_record(
            actor=None,
            action="alert.close",
            object_type="alert",
            object_id=alert.pk,
            object_repr=f"{service.name}: {name}",
            before=before,
            after=_state(alert),
            reason=reason,
            project=service_project(service.pk),
        )
    return alert


def _tell(alert: Alert) -> None:
    """Who made the serving model version, who deployed it, and who asked for its promotion."""
    service = Service.objects.select_related(
        "current_deployment__model_version__created_by",
        "current_deployment__initiated_by",
        "current_deployment__approval_request__requested_by",
    ).get(pk=alert.service_id)
    deployment = service.current_deployment
    if deployment is None:
        return
    users = [
        deployment.model_version.created_by,
        deployment.initiated_by,
        getattr(deployment.approval_request, "requested_by", None),
    ]
    project = service_project(service.pk)
    notify(
        users=[user for user in users if user is not None and access.can_act(user, project)],
        title=f"{service.name}: {alert.name.replace('_', ' ')} alert",
        body=alert.message,
        url=reverse("service-detail", kwargs={"pk": service.pk}),
    )
