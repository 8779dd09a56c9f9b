"""Serving services held to their environment's objectives all the time, not only while a revision bakes.

Beat calls `objectives_evaluate` every minute: for each service that serves something in an environment with
objectives, the revision serving is judged over the last settings.OBJECTIVE_WINDOW_MINUTES by
deployments.objectives.objective_status (the same question the bake asks). A breached objective opens (or
refreshes) the service's alert of that name; one back within its objective closes it. Too little traffic to judge
changes nothing: an open alert stays open until the service is judged again.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from deployments import objectives as objective_rules
from deployments.models import Service
from monitoring.models import Alert
from monitoring.services import alerts

log = logging.getLogger(__name__)

OBJECTIVE_NAMES = tuple(name for name, _, _ in objective_rules.OBJECTIVES)


def _span(window: tuple[datetime, datetime]) -> str:
    start, end = window
    minutes = round((end - start).total_seconds() / 60)
    return f"over the last {minutes} min ({start:%H:%M}–{end:%H:%M} UTC)"


def service_objectives_evaluate(service: Service, *, now: datetime) -> dict[str, str]:
    """Judge one service; returns what happened to each objective: breached, held, not judged or no objective."""
    outcome: dict[str, str] = {}
    wanted = objective_rules.environment_objectives(service.environment)
    for name in OBJECTIVE_NAMES:
        if name not in wanted:
            closed = alerts.alert_resolve(
                service, name, reason=f"the environment {service.environment.name} no longer sets this objective"
            )
            outcome[name] = "closed: no objective" if closed else "no objective"
    deployment = service.current_deployment
    if not wanted or deployment is None:
        return outcome
    start = now - timedelta(minutes=settings.OBJECTIVE_WINDOW_MINUTES)
    # Not from before the revision serving took all traffic: its bake judged that part, and the message would
    # name a span it did not serve.
    if deployment.finished_at is not None and start < deployment.finished_at < now:
        start = deployment.finished_at
    window = (start, now)
    # The environment's objectives as they are now (an admin may have changed them since the deployment).
    status = objective_rules.objective_status(
        service,
        deployment.revision,
        window,
        objectives=wanted,
        # The newest drift report of what serves, though it may have ended before this window began.
        drift_lookback=timedelta(minutes=service.environment.drift_window_minutes),
    )
    for result in status.results:
        judged = result.value is not None and (status.judged or result.name == "drift_share")
        if result.breached:
            alerts.alert_raise(
                service,
                result.name,
                value=result.value,
                threshold=result.threshold,
                window=window,
                message=f"{result.describe()} {_span(window)}, revision {deployment.revision}",
            )
            outcome[result.name] = "breached"
        elif judged:
            alerts.alert_resolve(service, result.name, reason=f"{result.describe()} {_span(window)}")
            outcome[result.name] = "held"
        else:
            outcome[result.name] = "not judged"
    return outcome


def objectives_evaluate(*, now: datetime | None = None) -> int:
    """Beat: every serving service against its objectives. Returns how many services were evaluated."""
    now = now or timezone.now()
    serving = Service.objects.filter(current_deployment__isnull=False).select_related(
        "environment", "current_deployment"
    )
    with_alerts = set(Alert.objects.filter(status=Alert.Status.OPEN).values_list("service_id", flat=True))
    count = 0
    for service in serving:
        if not objective_rules.environment_objectives(service.environment) and service.pk not in with_alerts:
            continue
        try:
            service_objectives_evaluate(service, now=now)
        except Exception:  # one service's failure must not stop the others' evaluation
            log.exception("evaluating the objectives of %s failed", service.name)
            continue
        count += 1
    return count
