"""Thin Celery wrappers for dataset registration, profiling and runs."""

from __future__ import annotations

from celery import shared_task

from lineage import services
from lineage.models import Run
from lineage.openlineage import openlineage_emit
from workers.errors import BackendError


@shared_task(name="lineage.tasks.dataset_registration", acks_late=True, reject_on_worker_lost=True)
def dataset_registration_task(registration_id: int) -> None:
    try:
        services.dataset_registration_run(registration_id=registration_id)
    except Exception as exc:
        services.dataset_registration_fail(registration_id=registration_id, error=f"{type(exc).__name__}: {exc}")
        raise


@shared_task(name="lineage.tasks.dataset_profile", acks_late=True, reject_on_worker_lost=True)
def dataset_profile_task(version_id: int) -> None:
    try:
        services.dataset_profile_run(version_id=version_id)
    except Exception as exc:
        services.dataset_profile_fail(version_id=version_id, error=f"{type(exc).__name__}: {exc}")
        raise


@shared_task(
    name="lineage.tasks.training_run_start", bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=8
)
def training_run_start_task(self, run_id: int) -> None:  # type: ignore[no-untyped-def]
    try:
        services.run_start(run_id=run_id)
    except BackendError as exc:
        # Throttling and transient AWS errors: back off and try again; the start is idempotent.
        if exc.permanent or self.request.retries >= self.max_retries:
            services.run_fail(run_id=run_id, reason=f"could not start the job: {exc}")
            return
        raise self.retry(exc=exc, countdown=min(2 ** self.request.retries * 5, 300)) from exc
    except Exception as exc:
        # Anything else would leave the run in `starting`: fail it with the reason, then let Celery log it.
        services.run_fail(run_id=run_id, reason=f"could not start the job: {type(exc).__name__}: {exc}")
        raise


@shared_task(name="lineage.tasks.training_run_poll", bind=True, acks_late=True, max_retries=20)
def training_run_poll_task(self, run_id: int, generation: int | None = None) -> None:  # type: ignore[no-untyped-def]
    try:
        services.run_poll(run_id=run_id, generation=generation)
    except BackendError as exc:
        if exc.permanent or self.request.retries >= self.max_retries:
            services.run_fail(run_id=run_id, reason=f"the backend could not be asked about the job: {exc}")
            return
        raise self.retry(exc=exc, countdown=min(2 ** self.request.retries * 5, 100)) from exc
    except Exception as exc:
        services.run_fail(run_id=run_id, reason=f"following the job failed: {type(exc).__name__}: {exc}")
        raise


@shared_task(name="lineage.tasks.training_run_stop", bind=True, acks_late=True, max_retries=8)
def training_run_stop_task(self, run_id: int) -> None:  # type: ignore[no-untyped-def]
    try:
        services.run_stop_job(run_id=run_id)
    except BackendError as exc:
        # A stop must not be lost to throttling: the job would run (and bill) until its maximum runtime.
        if exc.permanent:
            raise
        raise self.retry(exc=exc, countdown=min(2 ** self.request.retries * 5, 300)) from exc


@shared_task(name="lineage.tasks.training_runs_poll_stale", ignore_result=True, expires=50)
def training_runs_poll_stale_task() -> None:
    services.runs_poll_stale()


@shared_task(name="lineage.tasks.openlineage_emit", bind=True, max_retries=5, default_retry_delay=30)
def openlineage_emit_task(self, run_id: int, status: str) -> None:  # type: ignore[no-untyped-def]
    # One event per transition, for the state the run entered then (not whatever it is by the time we send).
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
    services.lineage_requeue_stale()
