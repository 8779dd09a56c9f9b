"""Thin Celery wrappers for approval requests (services import this module; tasks import services where they run)."""

from __future__ import annotations

from celery import shared_task

from controlplane.transitions import INFRASTRUCTURE_ERRORS, retry_backoff
from workers.errors import BackendError


@shared_task(
    name="deployments.tasks.approval_finish", bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=10
)
def approval_finish_task(self, request_id: int) -> None:  # type: ignore[no-untyped-def]
    from deployments import services

    try:
        services.approval_finish(request_id=request_id)
    except INFRASTRUCTURE_ERRORS as exc:
        raise self.retry(exc=exc, countdown=retry_backoff(self)) from exc
    except BackendError as exc:
        if not exc.permanent:
            raise self.retry(exc=exc, countdown=retry_backoff(self)) from exc
        services.approval_finish_fail(request_id=request_id, error=str(exc))
        raise
    except ValueError as exc:  # the version has no stored artifact at all
        services.approval_finish_fail(request_id=request_id, error=str(exc))
        raise
    except OSError as exc:  # a full disk, a read error: try again, the approvals stand
        raise self.retry(exc=exc, countdown=retry_backoff(self)) from exc


@shared_task(
    name="deployments.tasks.approval_announce", bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=10
)
def approval_announce_task(self, request_id: int) -> None:  # type: ignore[no-untyped-def]
    from deployments import services

    try:
        services.approval_announce(request_id=request_id)
    except INFRASTRUCTURE_ERRORS as exc:
        raise self.retry(exc=exc, countdown=retry_backoff(self)) from exc


@shared_task(
    name="deployments.tasks.approval_mirror", bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=12
)
def approval_mirror_task(self, request_id: int) -> None:  # type: ignore[no-untyped-def]
    from deployments import services

    try:
        services.approval_mirror_sync(request_id=request_id)
    except INFRASTRUCTURE_ERRORS as exc:
        raise self.retry(exc=exc, countdown=retry_backoff(self)) from exc
    except BackendError as exc:
        if not exc.permanent and self.request.retries < self.max_retries:
            raise self.retry(exc=exc, countdown=retry_backoff(self)) from exc
        services.approval_mirror_fail(request_id=request_id, error=str(exc))
        raise


@shared_task(name="deployments.tasks.approval_requests_expire", ignore_result=True, expires=250)
def approval_requests_expire_task() -> None:
    from deployments import services

    services.approval_requests_expire()


@shared_task(name="deployments.tasks.approval_requests_resume", ignore_result=True, expires=100)
def approval_requests_resume_task() -> None:
    from deployments import services

    services.approval_requests_resume()
