"""Periodic sweeps: restart broken poll chains, queue again work whose message was lost."""

from __future__ import annotations

import logging
from datetime import timedelta

from django.db.models import Q
from django.utils import timezone

from controlplane.claims import abandoned
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
    run_transition_quietly,
)

log = logging.getLogger(__name__)


def runs_poll_stale(*, older_than_seconds: int = 120, lost_start_seconds: int = 1800) -> dict[str, int]:
    """The periodic sweep: restart a poll chain that broke (its worker died) and fail runs whose start was lost."""

    now = timezone.now()
    active = Run.objects.filter(status__in=["starting", "running", "stopping"]).exclude(backend_job_id="")
    stale = list(active.filter(Q(last_polled_at__lt=now - timedelta(seconds=older_than_seconds)) | Q(last_polled_at__isnull=True)).values_list("pk", flat=True)[:500])
    for run in Run.objects.filter(pk__in=stale):
        restart_poll_chain(run, countdown=0)
    lost = 0
    lost_before = now - timedelta(seconds=lost_start_seconds)
    for run in Run.objects.filter(status__in=["starting", "stopping"], backend_job_id="", started_at__lt=lost_before)[:100]:
        if run.status == Run.Status.STOPPING:
            run_transition_quietly(run, "stopped", "stopped before the job started")
        else:
            run_transition_quietly(run, "fail", "the worker was lost before the job started")
        lost += 1
    return {"polled": len(stale), "failed": lost}


def lineage_requeue_stale(*, older_than_seconds: int = 300) -> dict[str, int]:
    """Queue again any profile, registration or run still queued after a while (its message was lost).

    Each task claims its row with a conditional update, so a duplicate message does nothing.
    """

    cutoff = timezone.now() - timedelta(seconds=older_than_seconds)
    profiles = list(abandoned(DatasetProfile.objects, queued_before={"version__created_at__lt": cutoff}).values_list("version_id", flat=True)[:500])
    registrations = list(abandoned(DatasetRegistration.objects, queued_before={"created_at__lt": cutoff}).values_list("pk", flat=True)[:500])
    runs = list(Run.objects.filter(status="queued", created_at__lt=cutoff).values_list("pk", flat=True)[:500])
    for version_id in profiles:
        enqueue_profile(version_id)
    for registration_id in registrations:
        enqueue_registration(registration_id)
    for run_id in runs:
        enqueue_run(run_id)
    return {"profiles": len(profiles), "registrations": len(registrations), "runs": len(runs)}

