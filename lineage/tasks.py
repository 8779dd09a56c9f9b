"""Thin Celery wrappers for dataset registration, profiling and runs.

Services import this module at the top and enqueue through it; each task imports its service where it runs, so the
two never import each other at load time.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from celery import shared_task

from controlplane.transitions import INFRASTRUCTURE_ERRORS, retry_backoff
from workers.errors import BackendError


@shared_task(
    name="lineage.tasks.dataset_registration", bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=10
)
def dataset_registration_task(self, registration_id: int) -> None:  # type: ignore[no-untyped-def]
    from lineage.services import registrations

    try:
        registrations.dataset_registration_run(registration_id=registration_id)
    except INFRASTRUCTURE_ERRORS as exc:
        raise self.retry(exc=exc, countdown=retry_backoff(self)) from exc
    except Exception as exc:
        registrations.dataset_registration_fail(registration_id=registration_id, error=f"{type(exc).__name__}: {exc}")
        raise


@shared_task(
    name="lineage.tasks.dataset_profile", bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=10
)
def dataset_profile_task(self, version_id: int) -> None:  # type: ignore[no-untyped-def]
    from lineage.services import profiles

    try:
        profiles.dataset_profile_run(version_id=version_id)
    except INFRASTRUCTURE_ERRORS as exc:
        raise self.retry(exc=exc, countdown=retry_backoff(self)) from exc
    except Exception as exc:
        profiles.dataset_profile_fail(version_id=version_id, error=f"{type(exc).__name__}: {exc}")
        raise


@contextmanager
def _retry_or_fail_run(
    task: Any, run_id: int, doing: str, *, max_countdown: int, unexpected_retries: int = 0
) -> Iterator[None]:
    """The one error policy of run tasks: transient backend errors (throttling) and infrastructure errors (database,
    broker, network) back off and retry; a permanent backend error, or one retried too often, fails the run with the
    reason (which stops its job), so no run is left half-way; anything else fails the run with it, after
    `unexpected_retries` tries (a poll may meet a half-written file). A worker that lost its lease just stops."""
    from controlplane.transitions import LostLease
    from lineage.services import run_execution

    try:
        yield
    except LostLease:
        return
    except BackendError as exc:
        if exc.permanent or task.request.retries >= task.max_retries:
            run_execution.run_fail(run_id=run_id, reason=f"{doing}: {exc}")
            return
        raise task.retry(exc=exc, countdown=retry_backoff(task, max_countdown)) from exc
    except INFRASTRUCTURE_ERRORS as exc:
        # Not the run's fault: never its outcome. Past the retries the sweep picks the run up again.
        raise task.retry(exc=exc, countdown=retry_backoff(task, max_countdown)) from exc
    except Exception as exc:
        if task.request.retries < unexpected_retries:
            raise task.retry(exc=exc, countdown=retry_backoff(task, max_countdown)) from exc
        run_execution.run_fail(run_id=run_id, reason=f"{doing}: {type(exc).__name__}: {exc}")
        raise  # and let Celery log it


@shared_task(
    name="lineage.tasks.training_run_start", bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=8
)
def training_run_start_task(self, run_id: int) -> None:  # type: ignore[no-untyped-def]
    from lineage.services import run_execution

    # The start is idempotent, so a retry (or a redelivery) finds the job the first attempt created.
    with _retry_or_fail_run(self, run_id, "could not start the job", max_countdown=300):
        run_execution.run_start(run_id=run_id)


@shared_task(name="lineage.tasks.training_run_poll", bind=True, acks_late=True, max_retries=20)
def training_run_poll_task(self, run_id: int, generation: int | None = None, tick: int | None = None) -> None:  # type: ignore[no-untyped-def]
    from lineage.services import run_execution

    with _retry_or_fail_run(self, run_id, "following the job failed", max_countdown=100, unexpected_retries=3):
        run_execution.run_poll(run_id=run_id, generation=generation, tick=tick)


@shared_task(name="lineage.tasks.training_run_stop", bind=True, acks_late=True, max_retries=8)
def training_run_stop_task(self, run_id: int) -> None:  # type: ignore[no-untyped-def]
    from lineage.services import run_execution

    try:
        run_execution.run_stop_job(run_id=run_id)
    except BackendError as exc:
        # A stop must not be lost to throttling: the job would run (and bill) until its maximum runtime.
        if exc.permanent:
            raise
        raise self.retry(exc=exc, countdown=retry_backoff(self)) from exc
    except INFRASTRUCTURE_ERRORS as exc:
        raise self.retry(exc=exc, countdown=retry_backoff(self)) from exc


@shared_task(name="lineage.tasks.training_runs_poll_stale", ignore_result=True, expires=50)
def training_runs_poll_stale_task() -> None:
    from lineage.services import sweeps

    sweeps.runs_poll_stale()


@shared_task(name="lineage.tasks.openlineage_emit", bind=True, max_retries=5, default_retry_delay=30)
def openlineage_emit_task(self, run_id: int, status: str) -> None:  # type: ignore[no-untyped-def]
    # One event per transition, for the state the run entered then (not whatever it is by the time we send).
    from lineage.models import Run
    from lineage.openlineage import openlineage_emit

    run = Run.objects.get(pk=run_id)
    run.status = status
    try:
        openlineage_emit(run)
    except BackendError as exc:
        if exc.permanent:
            raise
        raise self.retry(exc=exc) from exc


@shared_task(name="lineage.tasks.requeue_stale", ignore_result=True, expires=240)
def requeue_stale_task() -> None:
    from lineage.services import sweeps

    sweeps.lineage_requeue_stale()


@shared_task(name="lineage.tasks.direct_uploads_abort_stale", ignore_result=True, expires=600)
def direct_uploads_abort_stale_task() -> None:
    from lineage.services import uploads

    if uploads.direct_uploads_enabled():
        uploads.direct_uploads_abort_stale()
