"""Thin Celery wrappers: take ids, call a service (imported where the task runs: services import this module)."""

from __future__ import annotations

import socket

from celery import shared_task


@shared_task(name="controlplane.tasks.system_check_run", acks_late=True, reject_on_worker_lost=True)
def system_check_run_task(check_id: int) -> None:
    from controlplane import services

    services.system_check_run(check_id=check_id, worker=socket.gethostname())


@shared_task(name="controlplane.tasks.heartbeat_record", ignore_result=True, expires=60)
def heartbeat_record_task() -> None:
    from controlplane import services

    # Scheduled by beat and executed by a worker, so its timestamp proves both are alive.
    services.heartbeat_record(name="beat", detail={"worker": socket.gethostname()})


@shared_task(name="controlplane.tasks.system_checks_requeue_stale", ignore_result=True, expires=50)
def system_checks_requeue_stale_task() -> None:
    from controlplane import services

    services.system_checks_requeue_stale()


@shared_task(
    name="controlplane.tasks.notification_email", bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=8
)
def notification_email_task(self, notification_id: int) -> None:  # type: ignore[no-untyped-def]
    from controlplane import services

    try:
        services.notification_email_send(notification_id=notification_id)
    except OSError as exc:  # the mail server is down or refused (smtplib's errors are OSErrors): try again later
        raise self.retry(exc=exc, countdown=min(2**self.request.retries * 30, 1800)) from exc


@shared_task(name="controlplane.tasks.notification_emails_resume", ignore_result=True, expires=250)
def notification_emails_resume_task() -> None:
    from controlplane import services

    services.notification_emails_resume()
