"""Thin Celery wrappers for monitoring (beat schedules them: controlplane/settings/base.py)."""

from __future__ import annotations

from celery import shared_task


@shared_task(name="monitoring.tasks.metrics_rollup", ignore_result=True, expires=3000)
def metrics_rollup_task() -> None:
    """Hourly: minutes past settings.METRICS_ROLLUP_AFTER_DAYS into hours; hours past retention deleted."""
    from monitoring.services.metrics import metrics_rollup

    metrics_rollup()
