"""Periodic sweeps: restart broken poll chains, queue again work whose message was lost."""

from __future__ import annotations

import logging
from datetime import timedelta

from django.db.models import Q
from django.utils import timezone

from controlplane.transitions import default_lease_seconds
from lineage import tasks
from lineage.models import (
    DatasetProfile,
    DatasetRegistration,
    Run,
)
from lineage.services.datasets import (
    enqueue_profile,
)
from lineage.services.registrations import (
    enqueue_registration,
)
from lineage.services.run_execution import (
    restart_poll_chain,
)
from lineage.services.runs import (
    enqueue_run,
    run_lease_seconds,
)

log = logging.getLogger(__name__)


def runs_poll_stale(*, older_than_seconds: int = 120) -> dict[str, int]:
    """Restart a poll chain that broke (its worker died), queue again a start whose worker died (or whose retry was
    lost), and make sure the job of a run that ended without success is stopped.

    Judged by heartbeats and leases, not by how long ago things began: a worker renews its lease through slow steps,
    so a slow start or finish is not taken for a dead one.
    """
    now = timezone.now()
    expired = now - timedelta(seconds=run_lease_seconds())
    unclaimed = Q(claimed_at__isnull=True) | Q(claimed_at__lt=expired)
    active = (
        Run.objects.filter(status__in=["starting", "running", "stopping"]).exclude(backend_job_id="").filter(unclaimed)
    )
    stale = list(
        active.filter(
            Q(last_polled_at__lt=now - timedelta(seconds=older_than_seconds)) | Q(last_polled_at__isnull=True)
        ).values_list("pk", flat=True)[:500]
    )
    for run in Run.objects.filter(pk__in=stale):
        restart_poll_chain(run, countdown=0)
    # A start whose worker died before the job was recorded (its lease expired), or whose retry never came (released,
    # and not sent again for a lease): the start task takes it over, or ends a stopped one.
    lost_start = Q(claimed_at__lt=expired) | Q(claimed_at__isnull=True) & (
        Q(enqueued_at__lt=expired) | Q(enqueued_at__isnull=True)
    )
    lost = list(
        Run.objects.filter(lost_start, status__in=["starting", "stopping"], backend_job_id="").values_list(
            "pk", flat=True
        )[:100]
    )
    for run_id in lost:
        enqueue_run(run_id)
    return {"polled": len(stale), "restarted": len(lost), "released": runs_release_jobs()}


def runs_release_jobs(*, limit: int = 50) -> int:
    """Runs that ended without success while their job may still run (a stop message lost, a start that died after
    creating its job): queue the stop of that job. The stop task records when it made sure."""
    ended = Run.objects.filter(status__in=[Run.Status.FAILED, Run.Status.STOPPED], job_released_at__isnull=True)
    ended.filter(backend_job_id="", expected_job_id="").update(job_released_at=timezone.now())  # no job was ever named
    pending = list(ended.values_list("pk", flat=True)[:limit])
    for run_id in pending:
        tasks.training_run_stop_task.delay(run_id)
    return len(pending)


def lineage_requeue_stale() -> dict[str, int]:
    """Queue again any profile, registration or run whose message seems lost: still queued a lease after it was
    last queued, or claimed by a worker whose lease expired. Each task claims its row, so a duplicate does nothing."""
    now = timezone.now()
    resend = now - timedelta(seconds=run_lease_seconds())
    expired = now - timedelta(seconds=default_lease_seconds())
    not_recent = Q(enqueued_at__lt=resend) | Q(enqueued_at__isnull=True)
    lost = (
        Q(status="queued") | Q(status="running") & (Q(claimed_at__lt=expired) | Q(claimed_at__isnull=True))
    ) & not_recent
    profiles = list(
        DatasetProfile.objects.filter(lost, version__created_at__lt=resend).values_list("version_id", flat=True)[:500]
    )
    registrations = list(
        DatasetRegistration.objects.filter(lost, created_at__lt=resend).values_list("pk", flat=True)[:500]
    )
    runs = list(
        Run.objects.filter(not_recent, status="queued", created_at__lt=resend).values_list("pk", flat=True)[:500]
    )
    for version_id in profiles:
        enqueue_profile(version_id)
    for registration_id in registrations:
        enqueue_registration(registration_id)
    for run_id in runs:
        enqueue_run(run_id)
    return {"profiles": len(profiles), "registrations": len(registrations), "runs": len(runs)}
