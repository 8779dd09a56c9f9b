"""Running a run (worker side): start its job, follow it with short polls, finish it."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import shutil
import tempfile
from collections.abc import Callable
from contextlib import ExitStack
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from controlplane.backends import object_store
from controlplane.transitions import TAKEOVER_REASON, LostLease
from lineage import tasks
from lineage.models import (
    DatasetVersion,
    Run,
    RunLogChunk,
)
from lineage.services.costs import measured_cost
from lineage.services.datasets import (
    DatasetTarget,
    dataset_version_create,
    version_local_files,
)
from lineage.services.registry import model_artifact_from_job, model_version_compile, model_version_register
from lineage.services.runs import (
    RUN_MACHINE,
    cleanup_work_dir,
    poll_interval,
    run_image,
    run_lease_seconds,
    run_tags,
    run_transition,
    training_backend_for,
    work_dir_for,
)
from workers import datasets as dataset_files
from workers import recipes as recipe_registry
from workers import sources
from workers.errors import BackendError
from workers.recipes import MISSING_VALUES_HYPERPARAMETER
from workers.training.base import InputFile, JobNotFound, JobSpec

log = logging.getLogger(__name__)


def run_start(*, run_id: int) -> Run:
    """Start a queued run's job, once. A duplicate message finds the run claimed and returns quietly; a message sent
    after its worker died takes the start over once that worker's lease has expired, and finds the job the first
    attempt may have created (job ids are derived from the run, so starting one is idempotent)."""
    attempt = RUN_MACHINE.claim(
        run_id, "start", lease_seconds=run_lease_seconds(), where=Q(backend_job_id=""), reason="a worker took the run"
    )
    if attempt is None:
        run = Run.objects.get(pk=run_id)
        if run.status == Run.Status.STOPPING and not run.backend_job_id and _lease_expired(run):
            # Stopped while its job was being created, and that worker is gone; the sweep stops any job it made.
            return run_transition(run_id=run_id, action="stopped", reason="stopped before the job started", quiet=True)
        return run  # another worker got there first, or it already started, finished or was stopped
    try:
        return _start_claimed(run_id, attempt)
    except LostLease:
        return Run.objects.get(pk=run_id)
    except BaseException:
        RUN_MACHINE.release(run_id, attempt)  # the task retries (or the sweep re-sends) and takes it again
        raise


def _start_claimed(run_id: int, attempt: int) -> Run:
    run = Run.objects.select_related("project").get(pk=run_id)
    lost = run.events.filter(reason=TAKEOVER_REASON).count()
    if lost >= settings.RUN_START_ATTEMPTS:
        return run_transition(
            run_id=run_id,
            action="fail",
            attempt=attempt,
            quiet=True,
            reason=f"the workers starting it were lost {lost} times",
        )
    try:
        spec = recipe_registry.get_recipe(run.recipe)
        backend = training_backend_for(run)  # a misconfigured backend fails the run with its reason
        with ExitStack() as stack:
            # Copying inputs (and uploading them, on SageMaker) may outlast a lease: keep renewing it meanwhile.
            stack.enter_context(RUN_MACHINE.holding(run_id, attempt, every=run_lease_seconds() / 3))
            inputs = []
            for run_input in run.inputs.select_related("dataset_version__dataset"):
                version = run_input.dataset_version
                for index, path in enumerate(stack.enter_context(version_local_files(version))):
                    suffix = "".join(path.suffixes)
                    inputs.append(
                        InputFile(
                            channel=run_input.channel,
                            path=path,
                            filename=f"{version.dataset.slug}-v{version.number}-{index:04d}{suffix}",
                        )
                    )
            job_spec = JobSpec(
                run_id=str(run.pk),
                recipe=spec,
                hyperparameters=job_hyperparameters(run),
                inputs=inputs,
                work_dir=work_dir_for(run),
                instance_type=run.instance_type,
                instance_count=run.instance_count,
                max_runtime_seconds=run.max_runtime_seconds,
                tags=run_tags(run),
            )
            # Known before it exists: whatever happens next, the sweep can find and stop this job.
            if not Run.objects.filter(pk=run_id, attempt=attempt).update(expected_job_id=backend.job_id_for(job_spec)):
                raise LostLease(f"run {run_id}: attempt {attempt} was taken over")
            job_id = backend.start(job_spec)
    except BackendError as exc:
        if not exc.permanent:
            raise  # released by run_start; the task retries with backoff
        return run_transition(
            run_id=run_id, action="fail", attempt=attempt, quiet=True, reason=f"could not start the job: {exc}"
        )
    except (sources.SourceError, dataset_files.DatasetFileError, ValueError) as exc:
        return run_transition(
            run_id=run_id, action="fail", attempt=attempt, quiet=True, reason=f"could not start the job: {exc}"
        )
    # Only the attempt that still holds the start records its job (and gives the claim back for the finish).
    recorded = Run.objects.filter(
        pk=run_id,
        attempt=attempt,
        status__in=[Run.Status.STARTING, Run.Status.STOPPING],
        backend_job_id__in=["", job_id],
    ).update(backend_job_id=job_id, last_polled_at=timezone.now(), image=run_image(run, backend), claimed_at=None)
    run.refresh_from_db()
    if recorded and run.status == Run.Status.STOPPING:
        backend.stop(job_id)  # stopped while its job was being created (if this fails, the stop task asks again)
    if recorded:
        restart_poll_chain(run)
    elif run.done:
        # The run ended while this worker created the job: the release sweep makes sure it stops.
        transaction.on_commit(lambda: tasks.training_run_stop_task.delay(run_id), robust=True)
    return run


def _lease_expired(run: Run) -> bool:
    return run.claimed_at is None or run.claimed_at < timezone.now() - timedelta(seconds=run_lease_seconds())


def job_hyperparameters(run: Run) -> dict[str, Any]:
    """What the recipe receives: the run's hyperparameters, plus how each input channel marks missing values."""
    markers = {
        i.channel: list(i.dataset_version.missing_values or [""]) for i in run.inputs.select_related("dataset_version")
    }
    return {**run.parameters, MISSING_VALUES_HYPERPARAMETER: markers}


def restart_poll_chain(run: Run, *, countdown: float | None = None) -> None:
    """Start a new poll chain for the run, retiring any chain already going (so chains never multiply): the
    generation is raised and read under the row lock, so two restarts never share one."""
    with transaction.atomic():
        generation = RUN_MACHINE.new_poll_chain(run.pk)
        delay = poll_interval(run) if countdown is None else countdown
        transaction.on_commit(
            lambda: _enqueue_poll(run.pk, generation=generation, tick=0, countdown=delay), robust=True
        )


def _enqueue_poll(run_id: int, *, generation: int, tick: int, countdown: float) -> None:
    tasks.training_run_poll_task.apply_async((run_id, generation, tick), countdown=countdown)


def run_poll(*, run_id: int, generation: int | None = None, tick: int | None = None) -> Run:
    """Ask the backend how the job is doing and make the run follow its truth; queue the next poll if it goes on.

    (`generation`, `tick`) is the chain's ticket: a chain that was replaced stops here, and of two deliveries of the
    same message only one takes the tick, so a redelivered message never forks the chain. No ticket: poll once.
    """
    run = Run.objects.select_related("project", "created_by").get(pk=run_id)
    if run.done or not run.backend_job_id:
        return run
    # Taking the tick also stamps the heartbeat the sweep judges a chain by: when a poll starts, not when it ends.
    if not RUN_MACHINE.take_poll_tick(run_id, generation, tick):
        return run
    backend = training_backend_for(run)
    try:
        status = backend.describe(run.backend_job_id)
    except JobNotFound:
        now = Run.objects.select_related("project", "created_by").get(pk=run_id)
        if now.done:
            return now  # another worker finished it meanwhile, and released its job: nothing left to follow
        raise
    run = _read_log(run, backend)
    if run.status == Run.Status.STARTING and status.state in ("running", "succeeded", "failed", "stopped"):
        run = run_transition(run_id=run_id, action="running", reason=f"job {run.backend_job_id} is running", quiet=True)
    if not status.finished:
        if run.status == Run.Status.STOPPING and status.state == "running":
            backend.stop(run.backend_job_id)  # the first stop was lost or refused: ask again
        if generation is not None:
            # The backend read only part of a long log this time: come back soon for the rest.
            behind = bool((run.log_cursor or {}).get("more"))
            _enqueue_poll(
                run.pk,
                generation=generation,
                tick=(tick or 0) + 1,
                countdown=min(1.0, poll_interval(run)) if behind else poll_interval(run),
            )
        return run
    return _finish(run, backend, status)


LOG_TAIL_LINES = 200


def _read_log(run: Run, backend: Any, *, attempts: int = 3) -> Run:
    """Read what the job logged since the last poll (each line once) and keep it: a chunk row, the tail the pages
    show, the new metric points and the latest progress. Of two polls reading from the same cursor, one stores its
    chunk; the other reads again from where that one left off."""
    spec = recipe_registry.get_recipe(run.recipe)
    for _ in range(attempts):
        seq = run.log_seq
        chunk = backend.read_log(run.backend_job_id, cursor=run.log_cursor, metric_definitions=spec.metric_definitions)
        with transaction.atomic():
            locked = Run.objects.select_for_update().get(pk=run.pk)
            if locked.done:
                return locked
            if locked.log_seq != seq:
                run = locked  # another poll stored this part of the log: read on from its cursor
                continue
            fields: dict[str, Any] = {
                "log_cursor": chunk.cursor,
                "metrics": merge_metrics(locked.metrics, chunk.metrics),
            }
            if chunk.lines:
                fields["log_seq"] = seq + 1
                fields["log_tail"] = [*(locked.log_tail or []), *chunk.lines][-LOG_TAIL_LINES:]
                RunLogChunk.objects.create(run=locked, seq=seq + 1, lines=chunk.lines)
            if chunk.progress is not None:
                fields["progress"] = {
                    "done": chunk.progress.done,
                    "total": chunk.progress.total,
                    "unit": chunk.progress.unit,
                }
            Run.objects.filter(pk=run.pk).update(**fields)
        run.refresh_from_db()
        return run
    return run


def merge_metrics(stored: dict[str, Any] | None, new: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    merged = dict(stored or {})
    for name, points in new.items():
        merged[name] = [*merged.get(name, []), *points]
    return merged


def run_fail(*, run_id: int, reason: str) -> None:
    """Fail a run that is not finished yet (the backend refused for good, or its task gave up), unless another
    worker holds a live claim on it (that worker decides the outcome). Its job is stopped after commit, so a failed
    run never leaves one running (and billing); the release sweep asks again if that message is lost."""

    def not_held_by_another(run: Run) -> None:
        if not _lease_expired(run):
            raise LostLease(f"run {run_id} is held by attempt {run.attempt}: its worker decides")

    with transaction.atomic():
        try:
            run = run_transition(
                run_id=run_id, action="fail", reason=reason, quiet=True, under_lock=not_held_by_another
            )
        except LostLease:
            log.info("run %s: not failed (%s): another worker holds it", run_id, reason)
            return
        if run.status == Run.Status.FAILED:
            transaction.on_commit(lambda: tasks.training_run_stop_task.delay(run_id), robust=True)


def _finish(run: Run, backend: Any, status: Any) -> Run:
    """Record the job's outcome, once: the finish is claimed like a start, so a second poll chain (or a second
    worker) returns quietly; slow work (log, artifacts) happens before the run's lock, with the lease renewed
    meanwhile, in a folder of this attempt's own."""
    attempt = RUN_MACHINE.lease(
        run.pk,
        lease_seconds=run_lease_seconds(),
        where=Q(status__in=[Run.Status.STARTING, Run.Status.RUNNING, Run.Status.STOPPING]),
    )
    if attempt is None:
        return Run.objects.get(pk=run.pk)  # another worker is finishing it
    try:
        scratch = Path(tempfile.mkdtemp(prefix=f"run-{run.pk}-finish-{attempt}-", dir=settings.FILE_UPLOAD_TEMP_DIR))
        try:
            with RUN_MACHINE.holding(run.pk, attempt, every=run_lease_seconds() / 3):
                return _finish_claimed(run, backend, status, attempt, scratch)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    except LostLease:
        return Run.objects.get(pk=run.pk)
    except BaseException:
        RUN_MACHINE.release(run.pk, attempt)  # let the retry (or the next chain) take the finish again
        raise


def _finish_claimed(run: Run, backend: Any, status: Any, attempt: int, scratch: Path) -> Run:
    run = _read_log(run, backend)  # the last lines

    def final_fields(locked: Run) -> dict[str, Any]:
        # From the locked row, so points another poll stored meanwhile are kept; what the backend itself kept
        # (SageMaker's final metrics) fills any series the log did not have.
        metrics = dict(locked.metrics or {})
        for name, points in (status.metrics or {}).items():
            metrics.setdefault(name, points)
        return {"metrics": metrics}

    fields: dict[str, Any] = {"usage": status.usage, "cost": measured_cost(run, status.usage)}
    try:
        fields["log_key"] = _store_log(run)
    except Exception as exc:  # a missing log must not lose the run's result
        log.warning("run %s: could not store the log: %s", run.pk, exc)
    common = {"attempt": attempt, "quiet": True, "under_lock": final_fields, **fields}
    if status.state == "stopped":
        if Run.objects.values_list("status", flat=True).get(pk=run.pk) not in (Run.Status.STOPPING, Run.Status.STOPPED):
            run_transition(
                run_id=run.pk, action="stop", reason="the backend stopped the job", attempt=attempt, quiet=True
            )
        return run_transition(run_id=run.pk, action="stopped", reason=status.message or "stopped", **common)
    if status.state == "failed":
        return run_transition(run_id=run.pk, action="fail", reason=status.message or "the job failed", **common)
    try:
        prepared = _prepare_outputs(run, status, scratch)
    except (ValidationError, dataset_files.DatasetFileError, sources.SourceError, ValueError, KeyError) as exc:
        message = "; ".join(exc.messages) if isinstance(exc, ValidationError) else f"{type(exc).__name__}: {exc}"
        return run_transition(
            run_id=run.pk, action="fail", reason=f"the job's output is not usable: {message}", **common
        )
    with transaction.atomic():
        locked = Run.objects.select_for_update().get(pk=run.pk)
        if locked.done or locked.attempt != attempt:
            return locked
        # A stop that came after the job had finished: the backend's truth is success, so keep the results.
        reason = "finished before the stop reached it" if locked.status == Run.Status.STOPPING else "finished"
        note = prepared(locked)
        finished = run_transition(run_id=run.pk, action="succeed", reason=reason + note, **{**common, "quiet": False})
    if run.backend == "local":
        cleanup_work_dir(work_dir_for(run))  # its inputs are copies; its log and outputs are stored
    return finished


def _store_log(run: Run) -> str:
    """The whole log, joined from the chunks the polls read, as one write-once object."""
    lines = [line for chunk in run.log_chunks.order_by("seq").values_list("lines", flat=True) for line in chunk]
    stored = object_store().put_content_addressed(
        io.BytesIO("\n".join(lines).encode()), prefix=f"runs/{run.pk}/logs/", suffix=".log"
    )
    return stored.key


def _prepare_outputs(run: Run, status: Any, scratch: Path) -> Callable[[Run], str]:
    """Store what the job produced; return the database writes to make under the run's lock (they return a note
    for the run's status reason)."""
    if run.kind == Run.Kind.TRAINING:
        return _prepare_model_version(run, status, scratch)
    return _prepare_transform_outputs(run, status)


def _prepare_transform_outputs(run: Run, status: Any) -> Callable[[Run], str]:
    spec = recipe_registry.get_recipe(run.recipe)
    prepared = []
    for name in spec.outputs:
        path = Path(status.output_dir) / f"{name}.csv"
        if not path.is_file():
            raise ValidationError({"outputs": [f"the recipe wrote no {name}.csv"]})
        summary = dataset_files.validate_file(path, format="csv")
        with path.open("rb") as handle:
            stored = object_store().put_content_addressed(handle, prefix="datasets/", suffix=".csv")
        slug = run.output_name if len(spec.outputs) == 1 else f"{run.output_name}-{name}"[:63]
        prepared.append((name, slug, stored, summary))

    def write(locked: Run) -> str:
        for name, slug, stored, summary in prepared:
            target = DatasetTarget(
                project=run.project,
                slug=slug,
                name=slug,
                description=f"Derived by run {run.pk} ({run.recipe}) — {name}",
            )
            dataset_version_create(
                actor=run.created_by,
                target=target,
                stored_key=stored.key,
                stored_uri=stored.uri,
                sha256=stored.sha256,
                size=stored.size,
                format="csv",
                content_format="csv",
                compressed=False,
                columns=summary.columns,
                row_count=summary.row_count,
                source=DatasetVersion.Source.DERIVED,
                source_uri=f"run:{run.pk}/{name}",
                produced_by=run,
            )
        return ""

    return write


def _prepare_model_version(run: Run, status: Any, scratch: Path) -> Callable[[Run], str]:
    """Keep the model artifact write-once with its SHA-256, and read the recipe's model.json."""
    artifact = model_artifact_from_job(run, status, scratch=scratch)
    with artifact.open_metadata() as handle:
        metadata = json.load(handle)
    compiled = model_version_compile(run=run, artifact=artifact, metadata=metadata)

    def write(locked: Run) -> str:
        version = model_version_register(
            run=locked,
            artifact_uri=artifact.uri,
            artifact_key=artifact.key,
            sha256=artifact.sha256,
            size=artifact.size,
            metadata=metadata,
            compiled=compiled,
        )
        if version.run_id != locked.pk:
            return f": the model has the same bytes (SHA-256) as {version}, so the run is linked to that version"
        return ""

    return write


def run_stop_job(*, run_id: int) -> None:
    """Worker side of a stop request (the next poll records the stopped state), and of a run that ended while its
    job may still be running (failed, or stopped before its job was recorded): stop that job, once, and say so."""
    run = Run.objects.get(pk=run_id)
    if run.status == Run.Status.STOPPING and run.backend_job_id:
        training_backend_for(run).stop(run.backend_job_id)
        restart_poll_chain(run, countdown=0)
    elif run.status in (Run.Status.FAILED, Run.Status.STOPPED) and run.job_released_at is None:
        job_id = run.backend_job_id or run.expected_job_id
        if job_id:
            with contextlib.suppress(JobNotFound):  # the job was never made
                training_backend_for(run).stop(job_id)
        Run.objects.filter(pk=run_id).update(job_released_at=timezone.now())
