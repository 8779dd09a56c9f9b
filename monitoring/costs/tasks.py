"""Thin Celery wrappers for cost syncs and budget checks (monitoring.costs.services).

Not found by Celery's autodiscovery (it imports <app>.tasks only): monitoring.apps imports it when Django is ready.
"""

from __future__ import annotations

from celery import shared_task

from controlplane.transitions import INFRASTRUCTURE_ERRORS, retry_backoff
from workers.errors import BackendError

RETRYABLE: tuple[type[BaseException], ...] = (BackendError, *INFRASTRUCTURE_ERRORS)


@shared_task(
    name="monitoring.costs.tasks.cost_sync", bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=6
)
def cost_sync_task(self, sync_id: int) -> None:  # type: ignore[no-untyped-def]
    from monitoring.costs import services

    try:
        services.cost_sync_run(sync_id=sync_id)
    except RETRYABLE as exc:
        # Cost Explorer throttled or the database blinked: the sync was given back, try again later.
        if self.request.retries >= self.max_retries:
            services.cost_sync_fail(sync_id=sync_id, reason=f"gave up after {self.max_retries} retries: {exc}")
            return
        raise self.retry(exc=exc, countdown=retry_backoff(self)) from exc


@shared_task(name="monitoring.costs.tasks.cost_syncs_schedule", ignore_result=True, expires=120)
def cost_syncs_schedule_task(source: str) -> None:
    """The beat's periodic sync of `source` (estimates often, the bill daily)."""
    from monitoring.costs import services

    services.cost_syncs_schedule(source=source)


@shared_task(name="monitoring.costs.tasks.cost_syncs_requeue_stale", ignore_result=True, expires=110)
def cost_syncs_requeue_stale_task() -> None:
    from monitoring.costs import services

    services.cost_syncs_requeue_stale()


@shared_task(name="monitoring.costs.tasks.budgets_check", ignore_result=True, expires=300)
def budgets_check_task() -> None:
    from monitoring.costs import services

    services.budgets_check()
