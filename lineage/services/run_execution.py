"""Running a run (worker side): start its job, follow it with short polls, finish it."""

from __future__ import annotations

import io
import json
import logging
import shutil
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from controlplane.backends import object_store
from lineage import tasks
from lineage.models import (
    DatasetVersion,
    Run,
)
from lineage.services.costs import measured_cost
from lineage.services.datasets import (
    DatasetTarget,
    dataset_version_create,
    version_local_files,
)
from lineage.services.registry import _model_scratch, model_artifact_from_job, model_version_register
from lineage.services.runs import (
    DONE_STATUSES,
    cleanup_work_dir,
    poll_interval,
    run_image,
    run_tags,
    run_transition,
    run_transition_quietly,
    training_backend_for,
    work_dir_for,
)
from workers import datasets as dataset_files
from workers import recipes as recipe_registry
from workers import sources
from workers.errors import BackendError
from workers.training.base import InputFile, JobSpec

log = logging.getLogger(__name__)


def run_start(*, run_id: int) -> Run:
    """Start a queued run's job. A redelivered message finds the job the first delivery started (start is idempotent)."""


    run = Run.objects.select_related("project").get(pk=run_id)
    if run.status == Run.Status.QUEUED:
        run = run_transition(run_id=run.pk, action="start", reason="a worker took the run")
    elif run.status == Run.Status.STOPPING and not run.backend_job_id:
        # Stopped while the job was being created, and that worker is gone: there is nothing to stop.
        return run_transition_quietly(run, "stopped", "stopped before the job started")
    elif run.status != Run.Status.STARTING or run.backend_job_id:
        return run  # already started, finished or stopped: nothing to do
    try:
        spec = recipe_registry.get_recipe(run.recipe)
        backend = training_backend_for(run)  # a misconfigured backend fails the run with its reason
        with ExitStack() as stack:
            inputs = []
            for run_input in run.inputs.select_related("dataset_version__dataset"):
                version = run_input.dataset_version
                for index, path in enumerate(stack.enter_context(version_local_files(version))):
                    suffix = "".join(path.suffixes)
                    inputs.append(InputFile(channel=run_input.channel, path=path, filename=f"{version.dataset.slug}-v{version.number}-{index:04d}{suffix}"))
            job_id = backend.start(
                JobSpec(
                    run_id=str(run.pk), recipe=spec, hyperparameters=run.parameters, inputs=inputs,
                    work_dir=work_dir_for(run), instance_type=run.instance_type, instance_count=run.instance_count,
                    max_runtime_seconds=run.max_runtime_seconds, tags=run_tags(run),
                )
            )
    except BackendError as exc:
        if not exc.permanent:
            raise  # the task retries with backoff
        return run_transition(run_id=run.pk, action="fail", reason=f"could not start the job: {exc}")
    except (sources.SourceError, dataset_files.DatasetFileError, ValueError, OSError) as exc:
        return run_transition_quietly(run, "fail", f"could not start the job: {exc}")
    recorded = Run.objects.filter(
        pk=run.pk, status__in=[Run.Status.STARTING, Run.Status.STOPPING], backend_job_id__in=["", job_id]
    ).update(backend_job_id=job_id, last_polled_at=timezone.now(), image=run_image(run, backend))
    run.refresh_from_db()
    if not recorded or run.status == Run.Status.STOPPING:
        # The run ended or was stopped while its job was being created: do not leave the job running (and billing).
        backend.stop(job_id)
    if recorded:
        restart_poll_chain(run)
    return run


def restart_poll_chain(run: Run, *, countdown: float | None = None) -> None:
    """Start a new poll chain for the run, retiring any chain already going (so chains never multiply)."""

    Run.objects.filter(pk=run.pk).update(poll_generation=F("poll_generation") + 1)
    generation = Run.objects.values_list("poll_generation", flat=True).get(pk=run.pk)
    _enqueue_poll(run.pk, generation=generation, countdown=poll_interval(run) if countdown is None else countdown)


def _enqueue_poll(run_id: int, *, generation: int, countdown: float) -> None:

    tasks.training_run_poll_task.apply_async((run_id, generation), countdown=countdown)


def run_poll(*, run_id: int, generation: int | None = None) -> Run:
    """Ask the backend how the job is doing and make the run follow its truth; queue the next poll if it goes on.

    `generation` is the chain's ticket: a chain that was replaced stops here. None polls once, outside any chain.
    """
    run = Run.objects.select_related("project", "created_by").get(pk=run_id)
    if run.done or not run.backend_job_id:
        return run
    if generation is not None and generation != run.poll_generation:
        return run
    backend = training_backend_for(run)
    status = backend.describe(run.backend_job_id)
    lines, _ = backend.logs(run.backend_job_id, start=0)
    # Never over a finished run: a slow poll must not replace the final metrics with older ones.
    Run.objects.filter(pk=run.pk).exclude(status__in=DONE_STATUSES).update(
        last_polled_at=timezone.now(), metrics=status.metrics, log_tail=lines[-LOG_TAIL_LINES:]
    )
    if run.status == Run.Status.STARTING and status.state in ("running", "succeeded", "failed", "stopped"):
        run = run_transition_quietly(run, "running", f"job {run.backend_job_id} is running")
    if not status.finished:
        if run.status == Run.Status.STOPPING and status.state == "running":
            backend.stop(run.backend_job_id)  # the first stop was lost or refused: ask again
        if generation is not None:
            _enqueue_poll(run.pk, generation=generation, countdown=poll_interval(run))
        return run
    return _finish(run, backend, status)


LOG_TAIL_LINES = 200


def run_fail(*, run_id: int, reason: str) -> None:
    """Fail a run that is not finished yet (used when the backend refuses for good)."""
    run = Run.objects.get(pk=run_id)
    if not run.done:
        run_transition_quietly(run, "fail", reason)


def _finish(run: Run, backend: Any, status: Any) -> Run:
    # Slow work (reading logs, storing artifacts) happens before any row lock is taken; it is idempotent.
    fields: dict[str, Any] = {"metrics": status.metrics, "usage": status.usage, "cost": measured_cost(run, status.usage)}
    try:
        fields["log_key"] = _store_log(run, backend)
    except Exception as exc:  # a missing log must not lose the run's result
        log.warning("run %s: could not store the log: %s", run.pk, exc)
    if status.state == "stopped":
        if Run.objects.values_list("status", flat=True).get(pk=run.pk) not in (Run.Status.STOPPING, Run.Status.STOPPED):
            run_transition_quietly(run, "stop", "the backend stopped the job")
        return run_transition_quietly(run, "stopped", status.message or "stopped", **fields)
    if status.state == "failed":
        return run_transition_quietly(run, "fail", status.message or "the job failed", **fields)
    try:
        prepared = _prepare_outputs(run, status)
    except (ValidationError, dataset_files.DatasetFileError, sources.SourceError, OSError, ValueError, KeyError) as exc:
        message = "; ".join(exc.messages) if isinstance(exc, ValidationError) else f"{type(exc).__name__}: {exc}"
        return run_transition_quietly(run, "fail", f"the job's output is not usable: {message}", **fields)
    with transaction.atomic():
        locked = Run.objects.select_for_update().get(pk=run.pk)
        if locked.done:
            return locked
        # A stop that came after the job had finished: the backend's truth is success, so keep the results.
        reason = "finished before the stop reached it" if locked.status == Run.Status.STOPPING else "finished"
        prepared()
        finished = run_transition(run_id=run.pk, action="succeed", reason=reason, **fields)
    if run.backend == "local":
        cleanup_work_dir(work_dir_for(run))  # its inputs are copies; its log and outputs are stored
    return finished


def _store_log(run: Run, backend: Any) -> str:

    lines, _ = backend.logs(run.backend_job_id, start=0)
    stored = object_store().put_content_addressed(
        io.BytesIO("\n".join(lines).encode()), prefix=f"runs/{run.pk}/logs/", suffix=".log"
    )
    return stored.key


def _prepare_outputs(run: Run, status: Any) -> Callable[[], None]:
    """Store what the job produced; return the database writes to make under the run's lock."""
    if run.kind == Run.Kind.TRAINING:
        return _prepare_model_version(run, status)
    return _prepare_transform_outputs(run, status)


def _prepare_transform_outputs(run: Run, status: Any) -> Callable[[], None]:

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

    def write() -> None:
        for name, slug, stored, summary in prepared:
            target = DatasetTarget(project=run.project, slug=slug, name=slug,
                                   description=f"Derived by run {run.pk} ({run.recipe}) — {name}")
            dataset_version_create(
                actor=run.created_by, target=target, stored_key=stored.key, stored_uri=stored.uri,
                sha256=stored.sha256, size=stored.size, format="csv", content_format="csv", compressed=False,
                columns=summary.columns, row_count=summary.row_count, source=DatasetVersion.Source.DERIVED,
                source_uri=f"run:{run.pk}/{name}", produced_by=run,
            )

    return write


def _prepare_model_version(run: Run, status: Any) -> Callable[[], None]:
    """Keep the model artifact write-once with its SHA-256, and read the recipe's model.json."""

    artifact = model_artifact_from_job(run, status)
    try:
        with artifact.open_metadata() as handle:
            metadata = json.load(handle)
    finally:
        shutil.rmtree(_model_scratch(run), ignore_errors=True)

    def write() -> None:
        model_version_register(run=run, artifact_uri=artifact.uri, artifact_key=artifact.key, sha256=artifact.sha256,
                               size=artifact.size, metadata=metadata)

    return write


def run_stop_job(*, run_id: int) -> None:
    """Worker side of a stop request: tell the backend; the next poll records the stopped state."""
    run = Run.objects.get(pk=run_id)
    if run.status == Run.Status.STOPPING and run.backend_job_id:
        training_backend_for(run).stop(run.backend_job_id)
        restart_poll_chain(run, countdown=0)

