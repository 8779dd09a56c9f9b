"""Thin Celery wrappers for the drift job and the continuous objectives (monitoring.services.drift, .objectives).

Not named tasks.py, so Celery's autodiscovery does not find it: monitoring.apps imports it when Django is ready.
Services import this module at the top and enqueue through it; each task imports its service where it runs.
"""

from __future__ import annotations

from celery import shared_task

from controlplane.transitions import INFRASTRUCTURE_ERRORS, LostLease, retry_backoff
from workers.errors import BackendError

RETRYABLE: tuple[type[BaseException], ...] = (BackendError, *INFRASTRUCTURE_ERRORS)


@shared_task(
    name="monitoring.tasks_drift.drift_report_run", bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=8
)
def drift_report_run_task(self, report_id: int) -> None:  # type: ignore[no-untyped-def]
    from monitoring.services import drift

    try:
        drift.drift_report_run(report_id=report_id)
    except LostLease:
        return
    except RETRYABLE as exc:
        # The store or the database failed, not the report (a permanent store error already failed it). Only the
        # attempt that raised is failed: one whose lease expired must not fail the worker's that took over.
        attempt = getattr(exc, "drift_attempt", None)
        if getattr(exc, "permanent", False):
            drift.drift_report_fail(report_id=report_id, error=str(exc), attempt=attempt)
            return
        if self.request.retries >= self.max_retries:
            error = f"gave up after {self.max_retries} retries: {exc}"
            drift.drift_report_fail(report_id=report_id, error=error, attempt=attempt)
            return
        raise self.retry(exc=exc, countdown=retry_backoff(self)) from exc
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
        drift.drift_report_fail(report_id=report_id, error=error, attempt=getattr(exc, "drift_attempt", None))
        raise


@shared_task(name="monitoring.tasks_drift.drift_reports_schedule", ignore_result=True, expires=50)
def drift_reports_schedule_task() -> None:
    from monitoring.services import drift

    drift.drift_reports_schedule()


@shared_task(name="monitoring.tasks_drift.drift_reports_requeue_stale", ignore_result=True, expires=110)
def drift_reports_requeue_stale_task() -> None:
    from monitoring.services import drift

    drift.drift_reports_requeue_stale()


@shared_task(name="monitoring.tasks_drift.objectives_evaluate", ignore_result=True, expires=50)
def objectives_evaluate_task() -> None:
    from monitoring.services import objectives

    objectives.objectives_evaluate()
