"""Taking a queued row for work, so a task runs once even when its message is delivered twice.

A row is taken with a conditional update (the row count says who won). A row left `running` by a worker that
died is taken again once its lease (the task time limit) has passed, instead of staying stuck for ever.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db.models import Q, QuerySet
from django.utils import timezone


def lease_seconds() -> int:
    # A task cannot outlive the hard time limit, so after it a `running` row has no live worker.
    return int(settings.CELERY_TASK_TIME_LIMIT) + 60


def claim(queryset: QuerySet[Any], **update: Any) -> bool:
    now = timezone.now()
    expired = now - timedelta(seconds=lease_seconds())
    taken = queryset.filter(Q(status="queued") | Q(status="running", started_at__lt=expired)).update(
        status="running", started_at=now, **update
    )
    return taken == 1


def abandoned(queryset: QuerySet[Any], *, queued_before: Any) -> QuerySet[Any]:
    """Rows whose message seems lost: still queued after a while, or running past their lease."""
    expired = timezone.now() - timedelta(seconds=lease_seconds())
    return queryset.filter(Q(status="queued", **queued_before) | Q(status="running", started_at__lt=expired))
