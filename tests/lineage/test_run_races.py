"""Runs under real concurrency: duplicate messages, two poll chains, two finishers, stops racing starts.

Each race runs its contenders in threads with their own database connections (tests/fixtures/races.py); on
PostgreSQL they really interleave under row locks, on SQLite they serialise on its write lock.
"""

from __future__ import annotations

import contextlib
from datetime import timedelta

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db.models import F
from django.utils import timezone

from controlplane.transitions import LostLease
from lineage import services
from lineage.models import ModelVersion, Run, RunEvent, RunInput
from lineage.services import run_execution, runs, sweeps
from tests.fixtures.processes import wait_for
from tests.fixtures.races import race
from workers import recipes as recipe_registry
from workers.training.base import InputFile, JobNotFound, JobSpec

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def train_version(users, project, cancer_csv):
    version, _ = services.dataset_version_upload(
        actor=users.data_scientist, project=project, dataset="bc", upload=SimpleUploadedFile("bc.csv", cancer_csv)
    )
    return version


@pytest.fixture
def queued_run(users, project, train_version):
    """A queued training run as the launch service leaves it, without its start message (the test sends it)."""

    def make(recipe: str = "logistic_regression", **parameters) -> Run:
        spec = recipe_registry.get_recipe(recipe)
        run = Run.objects.create(
            project=project,
            kind="training",
            recipe=recipe,
            recipe_version=spec.version,
            recipe_fingerprint=recipe_registry.recipe_fingerprint(spec),
            parameters={"target": "target", "seed": 7, **parameters},
            seed=7,
            output_name="bc-model",
            created_by=users.data_scientist,
            enqueued_at=timezone.now(),
        )
        RunInput.objects.create(run=run, dataset_version=train_version, channel="train")
        RunEvent.objects.create(run=run, from_status="", to_status="queued", reason="launched")
        return run

    made: list[Run] = []
    yield lambda *a, **k: made.append(make(*a, **k)) or made[-1]
    for run in Run.objects.filter(pk__in=[r.pk for r in made]).exclude(backend_job_id=""):
        with contextlib.suppress(JobNotFound):
            runs.training_backend_for(run).stop(run.backend_job_id)  # leave no training process behind


def _wait_finished_job(run: Run, timeout: float = 120) -> None:
    """Until the job has finished. A real worker of the session may be following the run too (its poll messages
    are real), and once it has finished the run the job's folder is gone: that counts as finished."""
    backend = runs.training_backend_for(run)

    def finished() -> bool:
        try:
            return backend.describe(run.backend_job_id).finished
        except JobNotFound:
            return Run.objects.get(pk=run.pk).done

    wait_for(finished, timeout=timeout, what=f"job of {run}")


def _finished_run(run: Run, timeout: float = 120) -> Run:
    """The run once it is done. A poll that finds another worker (the session's) holding the finish returns the
    run as it stands, still running, and that worker records the outcome moments later."""
    wait_for(lambda: Run.objects.get(pk=run.pk).done, timeout=timeout, what=f"{run} to be done")
    return Run.objects.get(pk=run.pk)


def test_duplicate_start_messages_start_one_job_and_fail_nothing(queued_run) -> None:
    run = queued_run()
    outcomes = race(*[lambda: run_execution.run_start(run_id=run.pk)] * 3)
    assert [o.error for o in outcomes] == [None, None, None]
    run.refresh_from_db()
    assert run.status in ("starting", "running"), run.status_reason
    assert run.backend_job_id
    # One worker took the start; the others returned quietly instead of failing the run.
    assert list(run.events.values_list("to_status", flat=True)) == ["queued", "starting"]
    assert run.attempt == 1


def test_a_start_whose_worker_died_is_taken_over_once_its_lease_expired(queued_run) -> None:
    run = queued_run()
    first = runs.RUN_MACHINE.claim(run.pk, "start", lease_seconds=600)
    assert first == 1
    # The same message delivered again while the first worker holds its lease: nothing to do.
    assert run_execution.run_start(run_id=run.pk).backend_job_id == ""
    Run.objects.filter(pk=run.pk).update(claimed_at=timezone.now() - timedelta(hours=1))
    started = run_execution.run_start(run_id=run.pk)
    assert started.backend_job_id and started.attempt == 2
    # The first worker wakes up: its lease is gone, so it can neither record a job nor fail the run.
    with pytest.raises(LostLease):
        runs.RUN_MACHINE.renew(run.pk, first)
    assert (
        runs.run_transition(run_id=run.pk, action="fail", attempt=first, quiet=True, reason="late").status != "failed"
    )


def test_two_poll_chain_restarts_never_share_a_generation(queued_run) -> None:
    run = queued_run()
    Run.objects.filter(pk=run.pk).update(status="running", backend_job_id="no-such-job")
    race(*[lambda: run_execution.restart_poll_chain(run, countdown=3600)] * 4)
    assert Run.objects.get(pk=run.pk).poll_generation == 4


def test_two_finishers_register_one_model_version(queued_run) -> None:
    run = run_execution.run_start(run_id=queued_run().pk)
    _wait_finished_job(run)
    # Two chains (or a chain and the sweep) find the finished job at the same moment.
    outcomes = race(*[lambda: run_execution.run_poll(run_id=run.pk)] * 2)
    assert [o.error for o in outcomes] == [None, None]
    run = _finished_run(run)
    assert run.status == "succeeded", run.status_reason
    assert ModelVersion.objects.filter(run=run).count() == 1
    assert run.events.filter(to_status="succeeded").count() == 1
    assert run.log_key and run.metrics


def test_a_poll_that_finds_the_job_released_by_the_worker_that_finished_the_run_returns_it(
    queued_run, monkeypatch
) -> None:
    """The interleaving of two followers: this poll reads the run still running, then another worker finishes it and
    releases its job before this one asks the backend. The poll returns the finished run; it does not take the
    vanished job for a permanent backend error."""
    run = run_execution.run_start(run_id=queued_run().pk)
    backend_class = type(runs.training_backend_for(run))

    def finished_by_another_worker_meanwhile(self, job_id):
        Run.objects.filter(pk=run.pk).update(status=Run.Status.SUCCEEDED, finished_at=timezone.now())
        raise JobNotFound(f"no training job {job_id!r}")

    monkeypatch.setattr(backend_class, "describe", finished_by_another_worker_meanwhile)
    polled = run_execution.run_poll(run_id=run.pk)
    assert polled.status == Run.Status.SUCCEEDED
    assert Run.objects.get(pk=run.pk).status == Run.Status.SUCCEEDED


def test_a_reproduction_with_the_same_bytes_links_to_the_existing_model_version(queued_run) -> None:
    first = run_execution.run_start(run_id=queued_run().pk)
    _wait_finished_job(first)
    run_execution.run_poll(run_id=first.pk)
    assert _finished_run(first).status == "succeeded"
    second = queued_run()
    Run.objects.filter(pk=second.pk).update(reproduced_from=first)
    second = run_execution.run_start(run_id=second.pk)
    _wait_finished_job(second)
    run_execution.run_poll(run_id=second.pk)
    second = _finished_run(second)
    assert second.status == "succeeded", second.status_reason
    original = ModelVersion.objects.get(run=first)
    assert ModelVersion.objects.filter(registered_model=original.registered_model).count() == 1
    assert second.same_model_as == original
    assert f"same bytes (SHA-256) as {original}" in second.status_reason
    from lineage.selectors import run_list

    assert run_list().get(pk=second.pk).model_version_pk == original.pk  # what the API and the runs list show
    from lineage.selectors import lineage_upstream_edges

    assert (second.node_id, original.node_id) in lineage_upstream_edges(original.node_id)


@pytest.mark.worker
def test_a_failed_run_stops_its_job(celery_worker, queued_run) -> None:
    run = run_execution.run_start(run_id=queued_run("random_forest", n_estimators=400, task="classification").pk)
    backend = runs.training_backend_for(run)
    assert not backend.describe(run.backend_job_id).finished
    run_execution.run_fail(run_id=run.pk, reason="the worker gave up")
    assert Run.objects.get(pk=run.pk).status == "failed"
    # The real worker takes the stop queued on commit: a failed run leaves no job running (and billing).
    wait_for(lambda: backend.describe(run.backend_job_id).state == "stopped", timeout=60, what="the job to stop")


@pytest.mark.worker
def test_a_stop_racing_the_start_leaves_no_job_running(celery_worker, queued_run, users) -> None:
    run = queued_run("random_forest", n_estimators=400, task="classification")
    outcomes = race(
        lambda: run_execution.run_start(run_id=run.pk),
        lambda: services.run_stop(actor=users.data_scientist, run=run, reason="changed my mind"),
    )
    assert [o.error for o in outcomes] == [None, None]
    run.refresh_from_db()
    if run.status == "stopped" and not run.backend_job_id:
        assert run.events.filter(to_status="starting").count() == 0  # cancelled while queued: no job was ever made
    else:
        # Stopped while starting or after: the start itself, or the real worker's stop task, stops the job.
        backend = runs.training_backend_for(run)
        wait_for(
            lambda: backend.describe(Run.objects.get(pk=run.pk).backend_job_id).state == "stopped",
            timeout=60,
            what="the job to stop",
        )


def test_the_sweep_queues_again_only_starts_whose_lease_expired(queued_run) -> None:
    fresh, lost, waiting = queued_run(), queued_run(), queued_run()
    Run.objects.filter(pk=fresh.pk).update(status="starting", claimed_at=timezone.now())
    Run.objects.filter(pk=lost.pk).update(status="starting", claimed_at=timezone.now() - timedelta(hours=2))
    assert sweeps.runs_poll_stale()["restarted"] == 1
    # A queued run whose message was sent a moment ago is not sent again; one sent long ago is.
    Run.objects.filter(pk=waiting.pk).update(created_at=timezone.now() - timedelta(hours=2))
    assert sweeps.lineage_requeue_stale()["runs"] == 0
    Run.objects.filter(pk=waiting.pk).update(enqueued_at=timezone.now() - timedelta(hours=2))
    assert sweeps.lineage_requeue_stale()["runs"] == 1
    assert sweeps.lineage_requeue_stale()["runs"] == 0  # the resend stamped it


def test_a_stop_that_arrives_after_the_job_finished_keeps_the_results(queued_run) -> None:
    run = run_execution.run_start(run_id=queued_run().pk)
    # Retire the poll chain the start queued: a worker of the session must not finish the run before the stop.
    Run.objects.filter(pk=run.pk).update(poll_generation=F("poll_generation") + 1000)
    _wait_finished_job(run)
    runs.run_transition(run_id=run.pk, action="stop", reason="stop requested")
    finished = run_execution.run_poll(run_id=run.pk)
    assert finished.status == "succeeded"
    assert finished.status_reason == "finished before the stop reached it"
    assert ModelVersion.objects.filter(run=run).exists() and finished.metrics


def test_a_start_lost_too_often_fails_with_the_reason(queued_run, settings) -> None:
    run = queued_run()
    runs.RUN_MACHINE.claim(run.pk, "start", lease_seconds=600)
    for _ in range(settings.RUN_START_ATTEMPTS - 1):  # each worker dies holding the start; the next takes it over
        Run.objects.filter(pk=run.pk).update(claimed_at=timezone.now() - timedelta(hours=2))
        runs.RUN_MACHINE.claim(run.pk, "start", lease_seconds=600)
    Run.objects.filter(pk=run.pk).update(claimed_at=timezone.now() - timedelta(hours=2))
    failed = run_execution.run_start(run_id=run.pk)
    assert failed.status == "failed"
    assert failed.status_reason == f"the workers starting it were lost {settings.RUN_START_ATTEMPTS} times"


def test_a_run_stopped_while_its_lost_start_held_it_ends_stopped(queued_run) -> None:
    run = queued_run()
    Run.objects.filter(pk=run.pk).update(status="stopping", claimed_at=timezone.now() - timedelta(hours=2))
    assert sweeps.runs_poll_stale()["restarted"] == 1  # its start is queued again, and that start ends it
    stopped = run_execution.run_start(run_id=run.pk)
    assert stopped.status == "stopped" and stopped.status_reason == "stopped before the job started"


def _lay_job_like_a_worker_that_then_died(run: Run) -> str:
    """What a start worker does up to creating the job, then dies (no record of the job on the run)."""
    attempt = runs.RUN_MACHINE.claim(run.pk, "start", lease_seconds=600)
    backend = runs.training_backend_for(run)
    with contextlib.ExitStack() as stack:
        version = run.inputs.get().dataset_version
        paths = stack.enter_context(services.version_local_files(version))
        spec = JobSpec(
            run_id=str(run.pk),
            recipe=recipe_registry.get_recipe(run.recipe),
            hyperparameters=run_execution.job_hyperparameters(run),
            inputs=[InputFile(channel="train", path=paths[0], filename="bc-v1-0000.csv")],
            work_dir=runs.work_dir_for(run),
            tags={},
        )
        Run.objects.filter(pk=run.pk, attempt=attempt).update(expected_job_id=backend.job_id_for(spec))
        job_id = backend.start(spec)
    Run.objects.filter(pk=run.pk).update(claimed_at=timezone.now() - timedelta(hours=2))  # it died: no renewals
    return job_id


@pytest.mark.worker
def test_a_job_made_by_a_start_worker_that_died_is_stopped_when_the_run_ends(celery_worker, queued_run, users) -> None:
    run = queued_run("random_forest", n_estimators=400, task="classification")
    job_id = _lay_job_like_a_worker_that_then_died(run)
    backend = runs.training_backend_for(run)
    assert not backend.describe(job_id).finished
    services.run_stop(actor=users.data_scientist, run=Run.objects.get(pk=run.pk), reason="no longer needed")
    assert run_execution.run_start(run_id=run.pk).status == "stopped"  # the sweep's re-sent start ends it
    sweeps.runs_release_jobs()
    wait_for(lambda: backend.describe(job_id).state == "stopped", timeout=60, what="the orphaned job to stop")
    wait_for(lambda: Run.objects.get(pk=run.pk).job_released_at is not None, timeout=30, what="the release")


def test_a_job_made_by_a_start_worker_that_died_is_adopted_by_the_takeover(queued_run) -> None:
    run = queued_run()
    job_id = _lay_job_like_a_worker_that_then_died(run)
    taken = run_execution.run_start(run_id=run.pk)
    assert taken.backend_job_id == job_id and taken.attempt == 2
    assert taken.events.filter(reason="taken over: the previous worker's lease expired").count() == 1


def test_retries_after_throttling_are_not_counted_as_lost_workers(queued_run, settings) -> None:
    run = queued_run()
    for _ in range(settings.RUN_START_ATTEMPTS + 2):  # each throttled try gives its claim back for the retry
        attempt = runs.RUN_MACHINE.claim(run.pk, "start", lease_seconds=600)
        runs.RUN_MACHINE.release(run.pk, attempt)
    started = run_execution.run_start(run_id=run.pk)
    assert started.backend_job_id, started.status_reason
    # A released start is not sent again by the sweep until a lease has passed (its retry is on its way).
    assert Run.objects.filter(pk=run.pk, backend_job_id="").count() == 0


def test_a_redelivered_poll_message_does_not_fork_the_chain(queued_run) -> None:
    run = run_execution.run_start(run_id=queued_run().pk)
    generation = Run.objects.get(pk=run.pk).poll_generation
    Run.objects.filter(pk=run.pk).update(poll_tick=5)
    outcomes = race(*[lambda: run_execution.run_poll(run_id=run.pk, generation=generation, tick=5)] * 2)
    assert [o.error for o in outcomes] == [None, None]
    # One delivery took tick 5 (and queued tick 6); the other found it taken and stopped there.
    assert Run.objects.get(pk=run.pk).poll_tick == 6
