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


# What a poll or a scale tries again later: the backend's errors and the infrastructure's.
POLL_ERRORS: tuple[type[BaseException], ...] = (BackendError, *INFRASTRUCTURE_ERRORS)


@shared_task(
    name="deployments.tasks.deployment_start", bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=10
)
def deployment_start_task(self, deployment_id: int) -> None:  # type: ignore[no-untyped-def]
    from deployments import services

    try:
        services.deployment_start(deployment_id=deployment_id)
    except INFRASTRUCTURE_ERRORS as exc:
        raise self.retry(exc=exc, countdown=retry_backoff(self, cap=60)) from exc
    except BackendError as exc:  # retryable (permanent ones fail the deployment inside)
        # A rollback never gives up: traffic must go back. A deployment fails after its retries, saying why.
        rollback = services.deployment_is_rollback(deployment_id=deployment_id)
        if rollback or self.request.retries < self.max_retries:
            limit = None if rollback else self.max_retries
            raise self.retry(exc=exc, countdown=retry_backoff(self, cap=60), max_retries=limit) from exc
        services.deployment_fail(deployment_id=deployment_id, reason=f"the backend kept failing: {exc}")
        raise


@shared_task(name="deployments.tasks.deployment_poll", bind=True, acks_late=True, reject_on_worker_lost=True)
def deployment_poll_task(self, deployment_id: int, generation: int, tick: int) -> None:  # type: ignore[no-untyped-def]
    """One step of a deployment's poll chain. A failed step is not retried here: the chain's ticket is spent, so
    the beat sweep (deployments_resume) starts a new chain when this one has gone quiet."""
    from deployments import services

    try:
        services.deployment_poll(deployment_id=deployment_id, generation=generation, tick=tick)
    except POLL_ERRORS as exc:
        # The tick was taken: queue the same generation's next tick, so one flaky call does not stall the rollout.
        services.deployment_poll_again(deployment_id=deployment_id, generation=generation, tick=tick + 1, error=exc)


@shared_task(
    name="deployments.tasks.service_scale", bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=10
)
def service_scale_task(self, service_id: int) -> None:  # type: ignore[no-untyped-def]
    from deployments import services

    try:
        services.service_scale_apply(service_id=service_id)
    except POLL_ERRORS as exc:
        if isinstance(exc, BackendError) and exc.permanent:
            raise
        raise self.retry(exc=exc, countdown=retry_backoff(self, cap=60)) from exc


@shared_task(name="deployments.tasks.deployments_resume", ignore_result=True, expires=25)
def deployments_resume_task() -> None:
    from deployments import services

    services.deployments_resume()
