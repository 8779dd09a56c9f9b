"""The broker (a real redis-server, with AOF as docs/operations.md requires) restarted while tasks wait in it: none is
lost, and each runs once in effect.

- Tasks queued by the real services with no worker running (system checks, notification emails, and one message
  sent twice, as an acks_late redelivery would): the broker is stopped and started again, then a worker starts and
  every check passes on its first attempt and every email is sent once.
- Without AOF (and without snapshots) the same restart loses every queued message; the rows in the database still
  say what was asked, and the periodic sweeps send it again: a system check a minute after it was last sent, an
  email five minutes after its notification.
- A task a worker had taken (acks_late: not yet acknowledged) when the worker was SIGKILLed: the broker restarts, the
  unacknowledged message is still there, comes back once its visibility timeout has passed and a fresh worker
  completes it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from controlplane import services, tasks
from controlplane.celery import app
from controlplane.models import Notification, SystemCheck
from tests.fixtures.processes import Worker, kill_worker, start_worker, wait_for
from tests.fixtures.redis_server import RedisServer, _reset_celery_pools, publishing_to
from tests.test_web_server import free_port

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RedisServer]:
    """A private redis-server on a free loopback port, configured as production must be (appendonly yes, unless the
    test asks for `appendonly=False` by parametrizing this fixture); this process's tasks are sent to it while the
    test runs."""
    server = RedisServer(tmp_path / "redis", free_port(), appendonly=getattr(request, "param", True))
    server.start()
    try:
        with publishing_to(server.url):
            yield server
    finally:
        server.stop()


@pytest.fixture
def start(broker: RedisServer, tmp_path: Path) -> Iterator[Callable[[str], Worker]]:
    """Starts a worker on the private broker (default queue, one process, its own process group to kill)."""
    started: list[Worker] = []

    def start(name: str) -> Worker:
        worker = start_worker(
            f"{name}-{len(started)}@{os.uname().nodename}",
            tmp_path / f"{name}.log",
            extra_env={"CELERY_BROKER_URL": broker.url},
            queues="default",
            concurrency=1,
            include=("tests.controlplane.broker_tasks",),
            own_group=True,
        )
        started.append(worker)
        return worker

    yield start
    for worker in started:
        # Killed, not stopped: its broker is thrown away with the test, and a warm shutdown takes seconds.
        if worker.process.poll() is None:
            kill_worker(worker)


def restart(broker: RedisServer) -> None:
    broker.restart()
    _reset_celery_pools()  # this process's connections were to the server that stopped


def queue_checks_and_emails(users: Any) -> tuple[list[SystemCheck], list[Notification]]:
    checks = [services.system_check_request(actor=users.admin) for _ in range(2)]
    notes = services.notify(users=[users.data_scientist, users.approver], title="Broker restart", body="Still here?")
    return checks, notes


def test_tasks_queued_before_a_broker_restart_all_run_once_after_it(
    users: Any, broker: RedisServer, start: Callable[[str], Worker]
) -> None:
    checks, notes = queue_checks_and_emails(users)
    # The first check's message twice, as a redelivery would send it: its claim lets only one run it.
    tasks.system_check_run_task.delay(checks[0].pk)
    assert broker.client().llen("default") == 5

    restart(broker)
    assert broker.client().llen("default") == 5, "the queued messages survived the restart (AOF)"
    worker = start("after-restart")

    def all_done() -> bool:
        ran = SystemCheck.objects.filter(pk__in=[c.pk for c in checks], status="passed").count() == len(checks)
        sent = Notification.objects.filter(pk__in=[n.pk for n in notes], emailed_at__isnull=False).count()
        return ran and sent == len(notes)

    wait_for(all_done, timeout=60, what="every queued task to run after the restart")
    assert [check.attempt for check in SystemCheck.objects.filter(pk__in=[c.pk for c in checks])] == [1, 1]
    client = broker.client()
    wait_for(lambda: client.hlen("unacked") == 0, timeout=30, what="every message acknowledged")
    assert client.llen("default") == 0
    # The console email backend prints each email in the worker's log: one per recipient, not two.
    log = worker.log()
    assert log.count("Subject: [ControlPlane] Broker restart") == 2, log[-4000:]
    assert log.count(f"To: {users.data_scientist.email}") == 1 and log.count(f"To: {users.approver.email}") == 1
    assert log.count("another worker got there first") == 1, "the duplicate message did nothing"


@pytest.mark.parametrize("broker", [False], indirect=True, ids=["appendonly-no"])
def test_without_aof_a_restart_loses_the_queue_and_the_sweeps_send_the_work_again(
    users: Any, broker: RedisServer, start: Callable[[str], Worker]
) -> None:
    checks, notes = queue_checks_and_emails(users)
    assert broker.client().llen("default") == 4

    restart(broker)
    assert broker.client().llen("default") == 0, "lost: nothing was on disk"
    worker = start("after-restart")
    # The database still has them waiting; the beat's sweeps send them again once they look lost (a minute after a
    # check was sent, five minutes after a notification was made): here they are made to look that old.
    SystemCheck.objects.filter(pk__in=[c.pk for c in checks]).update(enqueued_at=timezone.now() - timedelta(minutes=2))
    Notification.objects.filter(pk__in=[n.pk for n in notes]).update(created_at=timezone.now() - timedelta(minutes=6))
    assert services.system_checks_requeue_stale() == 2
    assert services.notification_emails_resume() == 2

    def all_done() -> bool:
        ran = SystemCheck.objects.filter(pk__in=[c.pk for c in checks], status="passed").count() == len(checks)
        sent = Notification.objects.filter(pk__in=[n.pk for n in notes], emailed_at__isnull=False).count()
        return ran and sent == len(notes)

    wait_for(all_done, timeout=60, what="the work the sweeps sent again to run")
    assert worker.log().count("Subject: [ControlPlane] Broker restart") == 2


def test_a_task_taken_by_a_worker_killed_mid_task_comes_back_after_a_broker_restart_and_completes(
    broker: RedisServer, start: Callable[[str], Worker], tmp_path: Path
) -> None:
    from tests.controlplane.broker_tasks import hold_until_killed

    folder = tmp_path / "held"
    folder.mkdir()
    doomed = start("doomed")
    hold_until_killed.delay(str(folder))
    attempts = folder / "attempts"
    wait_for(attempts.is_file, timeout=30, what="the worker to take the task")
    kill_worker(doomed)
    client = broker.client()
    assert (client.llen("default"), client.hlen("unacked")) == (0, 1), "taken, not acknowledged"

    restart(broker)
    client = broker.client()
    assert client.hlen("unacked") == 1, "the unacknowledged message survived the restart (AOF)"
    fresh = start("fresh")
    # A worker gives an unacknowledged message back once it is older than the visibility timeout (30 s in the test
    # settings, checked every 10 s or so): the same kombu call with a 1 s timeout, rather than wait for it.
    with app.connection_for_write(broker.url, transport_options={"visibility_timeout": 1}) as connection:
        connection.default_channel.qos.restore_visible(num=100, interval=1)
    done = folder / "done"
    wait_for(done.is_file, timeout=60, what="the task to be delivered again and completed")
    pids = attempts.read_text().split()
    assert len(pids) == 2 and pids[0] != pids[1]
    assert done.read_text().split() == [pids[1]], "completed once, by the fresh worker"
    wait_for(lambda: client.hlen("unacked") == 0, timeout=30, what="the message acknowledged")
    assert "tests.hold_until_killed" in fresh.log() and "succeeded" in fresh.log()
