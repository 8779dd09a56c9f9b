"""A real Celery worker SIGKILLed inside a run's start, after the local backend started the training process and
before the database recorded its job: once the dead worker's lease has run out, the sweep the beat runs sends the
start again, a fresh worker takes it over, finds the job the dead one started (no second training process) and the
run finishes, with each transition recorded once. Killed one step earlier (the job laid out, its process not
started yet), the takeover records the job the local backend never started, and the run fails with that reason once
the backend's start timeout has passed: never stuck.

The worker is a `celery worker` process (prefork, like production) killed with its pool processes by one SIGKILL to
its process group (tests/fixtures/hold.py and kill_points.py choose the moment); the training process lives in a
session of its own and goes on. Leases are 3 s here (set in the workers and in the test's own sweep).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controlplane.transitions import TAKEOVER_REASON
from lineage.models import ModelVersion, Run
from lineage.services import runs, sweeps
from tests.fixtures.hold import KillWorkers, kill_workers
from tests.fixtures.processes import kill_worker, wait_for
from tests.lineage.test_run_races import queued_run, train_version  # noqa: F401 (fixtures)
from workers.local_state import process_alive, read_json, write_json
from workers.training import local

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

LEASE_SECONDS = 3


@pytest.fixture
def workers(tmp_path: Path, settings: Any) -> Iterator[KillWorkers]:
    settings.RUN_LEASE_SECONDS = LEASE_SECONDS
    with kill_workers(tmp_path, "training", "tests.fixtures.kill_points", {"RUN_LEASE_SECONDS": LEASE_SECONDS}) as own:
        yield own


def killed_at(at: str, make_run: Any, workers: KillWorkers) -> Any:
    """A queued run whose start a worker takes (the launch's message) and is SIGKILLed in, at `at`: the run."""
    run = make_run()
    workers.hold(at, run=run.pk)
    doomed = workers.start("doomed")
    runs.enqueue_run(run.pk)
    held = workers.held()
    assert (held["at"], held["run"]) == (at, run.pk)
    kill_worker(doomed)
    return run


def test_a_worker_killed_mid_start_is_taken_over_and_the_run_finishes_with_one_training_process(
    queued_run: Any,  # noqa: F811
    workers: KillWorkers,
) -> None:
    run = killed_at("training-start", queued_run, workers)

    # What the dead worker left: the start claimed, its job named and its process running, no job recorded.
    left = Run.objects.get(pk=run.pk)
    assert (left.status, left.backend_job_id, left.attempt) == ("starting", "", 1)
    assert left.expected_job_id
    job = read_json(runs.work_dir_for(left) / "job.json")
    assert job["run_id"] == str(run.pk) and process_alive(job)
    assert [line["job_pid"] for line in workers.recorded("spawned")] == [job["pid"]]

    workers.start("fresh")
    workers.until(
        sweeps.runs_poll_stale,
        lambda: Run.objects.filter(pk=run.pk, attempt=2).exclude(backend_job_id="").exists(),
        timeout=30,
        what="the start taken over once the lease ran out",
    )
    wait_for(lambda: Run.objects.get(pk=run.pk).done, timeout=60, what="the run to finish")
    done = Run.objects.get(pk=run.pk)
    assert done.status == "succeeded", (done.status_reason, workers.logs())
    assert done.backend_job_id == left.expected_job_id
    # The takeover found the job the dead worker started: one training process in all.
    assert [line["run"] for line in workers.recorded("spawned")] == [run.pk]
    assert ModelVersion.objects.filter(run=done).count() == 1
    assert [(e.from_status, e.to_status, e.reason) for e in done.events.order_by("created_at", "id")] == [
        ("", "queued", "launched"),
        ("queued", "starting", "a worker took the run"),
        ("starting", "starting", TAKEOVER_REASON),
        ("starting", "running", f"job {done.backend_job_id} is running"),
        ("running", "succeeded", "finished"),
    ]


def test_a_worker_killed_before_the_training_process_started_leaves_a_run_that_fails_with_the_reason(
    queued_run: Any,  # noqa: F811
    workers: KillWorkers,
) -> None:
    run = killed_at("training-layout", queued_run, workers)
    job_file = runs.work_dir_for(run) / "job.json"
    assert read_json(job_file)["state"] == "starting" and "pid" not in read_json(job_file)

    workers.start("fresh")
    # The takeover finds the job named and laid out, and records it; the local backend starts no process for it.
    workers.until(
        sweeps.runs_poll_stale,
        lambda: Run.objects.filter(pk=run.pk, attempt=2).exclude(backend_job_id="").exists(),
        timeout=30,
        what="the start taken over once the lease ran out",
    )
    # Two minutes on for the job (the local backend's START_TIMEOUT_SECONDS): it never started, so it failed.
    job = read_json(job_file)
    write_json(job_file, {**job, "created_at": job["created_at"] - local.START_TIMEOUT_SECONDS - 1})
    wait_for(lambda: Run.objects.get(pk=run.pk).done, timeout=30, what="the run to end")
    done = Run.objects.get(pk=run.pk)
    assert (done.status, done.status_reason) == ("failed", local.NEVER_STARTED)
    assert workers.recorded("spawned") == []
    assert ModelVersion.objects.filter(run=done).count() == 0
    assert [(e.from_status, e.to_status, e.reason) for e in done.events.order_by("created_at", "id")] == [
        ("", "queued", "launched"),
        ("queued", "starting", "a worker took the run"),
        ("starting", "starting", TAKEOVER_REASON),
        # (as for any job found ended at its first poll: the run passes through running)
        ("starting", "running", f"job {done.backend_job_id} is running"),
        ("running", "failed", local.NEVER_STARTED),
    ]
