"""Periodic sweeps: restart broken poll chains, queue again work whose message was lost."""

from __future__ import annotations

import logging
from datetime import timedelta

from django.db.models import Q
from django.utils import timezone

from controlplane.transitions import default_lease_seconds
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
    """Restart a poll chain that broke (its worker died), and queue again a start whose worker died.

    Judged by heartbeats and leases, not by how long ago things began: a run being finished holds a lease (renewed
    before each slow step), so a slow finish does not get a second chain.
    """
    now = timezone.now()
    unclaimed = Q(claimed_at__isnull=True) | Q(claimed_at__lt=now - timedelta(seconds=run_lease_seconds()))
    active = Run.objects.filter(status__in=["starting", "running", "stopping"]).exclude(backend_job_id="").filter(unclaimed)
    stale = list(active.filter(Q(last_polled_at__lt=now - timedelta(seconds=older_than_seconds)) | Q(last_polled_at__isnull=True)).values_list("pk", flat=True)[:500])
    for run in Run.objects.filter(pk__in=stale):
        restart_poll_chain(run, countdown=0)
    # A start whose worker died before the job existed: the start task takes it over (or ends a stopped one).
    lost = list(Run.objects.filter(status__in=["starting", "stopping"], backend_job_id="").filter(unclaimed).values_list("pk", flat=True)[:100])
    for run_id in lost:
        enqueue_run(run_id)
    return {"polled": len(stale), "restarted": len(lost)}


def lineage_requeue_stale() -> dict[str, int]:
    """Queue again any profile, registration or run whose message seems lost: still queued a lease after it was
    last queued, or claimed by a worker whose lease expired. Each task claims its row, so a duplicate does nothing."""
    now = timezone.now()
    resend = now - timedelta(seconds=run_lease_seconds())
    expired = now - timedelta(seconds=default_lease_seconds())
    not_recent = Q(enqueued_at__lt=resend) | Q(enqueued_at__isnull=True)
    lost = (Q(status="queued") | Q(status="running") & (Q(claimed_at__lt=expired) | Q(claimed_at__isnull=True))) & not_recent
    profiles = list(DatasetProfile.objects.filter(lost, version__created_at__lt=resend).values_list("version_id", flat=True)[:500])
    registrations = list(DatasetRegistration.objects.filter(lost, created_at__lt=resend).values_list("pk", flat=True)[:500])
    runs = list(Run.objects.filter(not_recent, status="queued", created_at__lt=resend).values_list("pk", flat=True)[:500])
    for version_id in profiles:
        enqueue_profile(version_id)
    for registration_id in registrations:
        enqueue_registration(registration_id)
    for run_id in runs:
        enqueue_run(run_id)
    return {"profiles": len(profiles), "registrations": len(registrations), "runs": len(runs)}
