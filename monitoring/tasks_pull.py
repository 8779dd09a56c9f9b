"""The CloudWatch pull's Celery task (beat, every minute: controlplane/settings/base.py). Kept out of tasks.py so it
lands on its own; monitoring.apps imports it, since Celery's autodiscovery only looks for `tasks` modules."""

from __future__ import annotations

from celery import shared_task


# Named under monitoring.tasks, so CELERY_TASK_ROUTES sends it to the sync queue with monitoring's other tasks.
@shared_task(name="monitoring.tasks.metrics_pull", ignore_result=True, expires=55)
def metrics_pull_task() -> None:
    """Read every aws service's new minutes from CloudWatch into metric points."""
    from monitoring.services.pull import metrics_pull

    metrics_pull()
