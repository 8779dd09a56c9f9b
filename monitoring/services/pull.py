"""The CloudWatch pull: every minute (beat), each aws service's per-minute series are read from CloudWatch
(workers.metrics.cloudwatch) into the same metric points the local ingest fills, so no page ever calls AWS.

- Window: from where the service's last pull stopped, less settings.METRICS_PULL_OVERLAP_MINUTES (late EMF lines
  replace what was read early), or settings.METRICS_PULL_LOOKBACK_MINUTES back for a service never pulled, up to
  settings.METRICS_PULL_DELAY_SECONDS ago (CloudWatch's lag), on whole minutes; at most a day a pull and never
  older than CloudWatch keeps minutes, so a pull that fell behind catches up a day a minute.
- Revisions: the `Revision` dimension is the serving runtime's REVISION, `d<deployment id>` of the deployment that
  made the task definition (a rollback reuses an earlier one's, so it reports as that one). Asked for: every
  deployment of the service that may have had tasks in the window (created before its end, and current, active,
  or ended less than REVISION_GRACE before its start).
- Each minute CloudWatch has replaces the stored one (record_minutes(replace=True)), so pulling a window twice
  changes nothing.
- Never older than the ingest's floor (metrics.oldest_ingest_minute): a minute already rolled up into its hour
  would be counted twice.
- One pull per service at a time: a pull claims the service's MetricPull row with a conditional update (its lease,
  settings.METRICS_PULL_LEASE_SECONDS, from the clock at claim time) and only the claim's holder writes: each
  revision's minutes are replaced in one transaction with the renewal of the claim (its attempt, lease not run out),
  so a pull whose claim ran out or was taken over cannot overwrite a newer pull's minutes. AWS is called with no
  row lock held. A service's failure is counted on its row, logged, and does not stop the other services' pulls.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from deployments.models import Deployment, Service
from monitoring.models import MetricPoint, MetricPull
from monitoring.services.metrics import MinuteCounts, oldest_ingest_minute, record_minutes
from workers.errors import BackendError
from workers.metrics.cloudwatch import ONE_MINUTE_RETENTION, CloudWatchMetrics, whole_minute

log = logging.getLogger("monitoring.pull")

# A revision's tasks keep reporting a little while after the deployment that ended them finished (draining).
REVISION_GRACE = timedelta(minutes=10)
# The most one pull reads: a service far behind catches up this much a minute.
MAX_WINDOW = timedelta(days=1)
ERROR_MAX = 2000


@dataclass
class PullSummary:
    services: int = 0
    pulled: int = 0
    busy: int = 0  # another pull held the service
    failed: int = 0
    minutes: int = 0


def metrics_source() -> CloudWatchMetrics:
    """The aws backend's metrics source, in settings.AWS_REGION (the client is cached by workers.aws)."""
    return CloudWatchMetrics(
        region=settings.AWS_REGION,
        namespace=settings.SERVING_METRICS_NAMESPACE,
        endpoint_url=settings.AWS_ENDPOINT_URL,
    )


def metrics_pull(
    *, clock: Callable[[], datetime] = timezone.now, source: CloudWatchMetrics | None = None
) -> PullSummary:
    """Pull every aws service's new minutes from CloudWatch (beat, every minute). `clock` is read at each claim and
    write (a slow service's calls must not leave the next services with a lease already run out)."""
    summary = PullSummary()
    service_ids = list(Service.objects.filter(backend="aws").order_by("pk").values_list("pk", flat=True))
    if not service_ids:
        return summary
    source = source or metrics_source()
    for service_id in service_ids:
        summary.services += 1
        try:
            taken = metrics_pull_service(service_id=service_id, clock=clock, source=source)
        except Exception:  # counted and logged where it happened; the other services are still pulled
            summary.failed += 1
            continue
        if taken is None:
            summary.busy += 1
        else:
            summary.pulled += 1
            summary.minutes += taken
    if summary.failed:
        log.warning(
            "metrics pull: %d of %d aws services failed (see above); %d minutes recorded",
            summary.failed,
            summary.services,
            summary.minutes,
        )
    return summary


def pull_window(pulled_through: datetime | None, now: datetime) -> tuple[datetime, datetime]:
    """[start, end) of the next pull for a service pulled up to `pulled_through` (None: never)."""
    end = whole_minute(now - timedelta(seconds=settings.METRICS_PULL_DELAY_SECONDS))
    if pulled_through is None:
        start = end - timedelta(minutes=settings.METRICS_PULL_LOOKBACK_MINUTES)
    else:
        start = whole_minute(pulled_through) - timedelta(minutes=settings.METRICS_PULL_OVERLAP_MINUTES)
    # The oldest minute CloudWatch still keeps at a 60-second period, with an hour to spare; and none the roll-up
    # has taken (or is about to take) into its hour, the ingest's floor.
    start = max(start, end - ONE_MINUTE_RETENTION + timedelta(hours=1), oldest_ingest_minute(now))
    return start, min(end, start + MAX_WINDOW)


def revisions_between(service: Service, start: datetime, end: datetime) -> list[str]:
    """The Revision dimension values of `service`'s deployments that may have had tasks in [start, end)."""
    deployments = list(
        Deployment.objects.filter(service=service)
        .only("pk", "status", "revision", "replaces_id", "created_at", "finished_at")
        .order_by("pk")
    )
    first_of_revision: dict[str, int] = {}
    replaced_at: dict[int, datetime] = {}
    for deployment in deployments:
        if deployment.revision:
            first_of_revision.setdefault(deployment.revision, deployment.pk)
        if (
            deployment.replaces_id is not None
            and deployment.status == Deployment.Status.SUCCEEDED
            and deployment.finished_at is not None
        ):
            earlier = replaced_at.get(deployment.replaces_id)
            replaced_at[deployment.replaces_id] = max(deployment.finished_at, earlier or deployment.finished_at)
    names: list[str] = []
    for deployment in deployments:
        if deployment.created_at >= end:
            continue
        ended: datetime | None
        if deployment.active or deployment.pk == service.current_deployment_id:
            ended = None
        elif deployment.status == Deployment.Status.SUCCEEDED:
            ended = replaced_at.get(deployment.pk, deployment.finished_at)
        else:
            ended = deployment.finished_at
        if ended is not None and ended + REVISION_GRACE <= start:
            continue
        names.append(f"d{first_of_revision.get(deployment.revision, deployment.pk)}")
    return list(dict.fromkeys(names))


def _minute_counts(minute: dict[str, Any]) -> MinuteCounts:
    return MinuteCounts(
        start=datetime.strptime(minute["minute"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC),
        requests=minute["requests"],
        errors=minute["errors"],
        client_errors=minute["client_errors"],
        rows=minute["rows"],
        latency_counts=minute["latency_ms_counts"],
        latency_sum_ms=minute["latency_ms_sum"],
        captured_rows=minute["captured_rows"],
        capture_dropped_rows=minute["capture_dropped_rows"],
    )


def _claim(service_id: int, now: datetime) -> int | None:
    """The attempt number of this pull's claim on the service, or None when another pull holds it."""
    MetricPull.objects.get_or_create(service_id=service_id)
    with transaction.atomic():
        claimed = (
            MetricPull.objects.filter(service_id=service_id)
            .filter(Q(claimed_until__isnull=True) | Q(claimed_until__lte=now))
            .update(
                claimed_until=now + timedelta(seconds=settings.METRICS_PULL_LEASE_SECONDS), attempt=F("attempt") + 1
            )
        )
        if not claimed:
            return None
        return int(MetricPull.objects.filter(service_id=service_id).values_list("attempt", flat=True).get())


def _renewed(service_id: int, attempt: int, now: datetime) -> bool:
    """Whether this pull's claim still holds (its attempt, its lease not run out), renewing it; inside the write's
    transaction, so no other pull can take the service over between the check and the write."""
    lease = timedelta(seconds=settings.METRICS_PULL_LEASE_SECONDS)
    held = MetricPull.objects.filter(service_id=service_id, attempt=attempt, claimed_until__gt=now)
    return bool(held.update(claimed_until=now + lease))


def metrics_pull_service(
    *, service_id: int, clock: Callable[[], datetime] = timezone.now, source: CloudWatchMetrics
) -> int | None:
    """Pull one service's new minutes; the number of minutes recorded, or None when another pull holds it (or took
    it over meanwhile: then nothing more is written). Raises what failed, after counting it on the service's
    MetricPull row and logging it."""
    now = clock()
    attempt = _claim(service_id, now)
    if attempt is None:
        log.info("metrics pull of service %s skipped: another pull holds it", service_id)
        return None
    service = Service.objects.get(pk=service_id)
    try:
        pulled_through = MetricPull.objects.values_list("pulled_through", flat=True).get(service_id=service_id)
        start, end = pull_window(pulled_through, now)
        taken = 0
        if start < end:
            revisions = revisions_between(service, start, end)
            found = source.minutes(service=service.name, revisions=revisions, start=start, end=end)
            for revision, minutes in found.items():
                if not minutes:
                    continue
                with transaction.atomic():
                    if not _renewed(service_id, attempt, clock()):
                        log.warning(
                            "metrics pull of %s stopped: its claim ran out or another pull took it over", service.name
                        )
                        return None
                    recorded = record_minutes(
                        service,
                        revision,
                        [_minute_counts(m) for m in minutes],
                        source=MetricPoint.Source.CLOUDWATCH,
                        replace=True,
                    )
                taken += recorded.taken
    except Exception as exc:
        _failed(service, attempt, exc, clock())
        raise
    MetricPull.objects.filter(service_id=service_id, attempt=attempt).update(
        pulled_through=max(end, pulled_through or end),
        claimed_until=None,
        last_pulled_at=clock(),
        failures=0,
    )
    return taken


def _failed(service: Service, attempt: int, exc: Exception, now: datetime) -> None:
    if isinstance(exc, BackendError):
        if exc.permanent:
            log.error("metrics pull of %s failed and will keep failing until fixed: %s", service.name, exc)
        else:
            log.warning("metrics pull of %s failed; the next pull tries again: %s", service.name, exc)
        message = str(exc)
    else:
        log.exception("metrics pull of %s failed", service.name)
        message = f"{type(exc).__name__}: {exc}"
    MetricPull.objects.filter(service_id=service.pk, attempt=attempt).update(
        claimed_until=None, failures=F("failures") + 1, last_error=message[:ERROR_MAX], last_error_at=now
    )
