"""Writes and transitions for datasets, dataset versions, registrations, runs and lineage edges."""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import UploadedFile
from django.db import IntegrityError, transaction
from django.db.models import Max, Q
from django.utils import timezone
from django.utils.text import slugify

from controlplane import permissions
from controlplane.backends import object_store
from controlplane.claims import abandoned, claim
from controlplane.models import Project
from controlplane.services import SLUG_RE, audit_record
from lineage.models import (
    Dataset,
    DatasetProfile,
    DatasetRegistration,
    DatasetVersion,
    LineageEdge,
    ModelVersion,
    RegisteredModel,
    Run,
    RunEvent,
    RunInput,
    WriteOnceError,
)
from workers import datasets as dataset_files
from workers import sources

log = logging.getLogger(__name__)

FORMAT_SUFFIX = {"csv": ".csv", "parquet": ".parquet", "jsonl": ".jsonl", "manifest": ".manifest.json"}


def to_slug(text: str, *, max_length: int = 63) -> str:
    """A name as a slug (lowercase letters, digits, hyphens): recipe names like clean_missing included."""
    return slugify(text).replace("_", "-")[:max_length].strip("-")


# --- datasets -------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetTarget:
    """Which dataset a new version goes to; the dataset itself is created with its first version."""

    project: Project
    slug: str
    name: str
    description: str


def dataset_target(*, project: str | Project, dataset: str, description: str = "") -> DatasetTarget:
    """Check the project and dataset name before anything is read or stored."""
    errors: dict[str, list[str]] = {}
    project_obj = project if isinstance(project, Project) else Project.objects.filter(slug=project).first()
    if project_obj is None:
        errors["project"] = [f"no project with slug {project!r}"]
    name = (dataset or "").strip()
    slug = to_slug(name)
    if not name:
        errors["dataset"] = ["required: the dataset's name, e.g. breast-cancer"]
    elif len(name) > 100:
        errors["dataset"] = ["expected at most 100 characters"]
    elif not SLUG_RE.match(slug):
        errors["dataset"] = ["expected a name with at least one letter or digit"]
    if errors:
        raise ValidationError(errors)
    assert project_obj is not None
    existing = Dataset.objects.filter(project=project_obj, slug=slug).first()
    return DatasetTarget(project=project_obj, slug=slug, name=existing.name if existing else name, description=description)


def _dataset_for(target: DatasetTarget, actor: Any) -> Dataset:
    dataset, created = Dataset.objects.get_or_create(
        project=target.project,
        slug=target.slug,
        defaults={"name": target.name, "description": target.description.strip(), "created_by": actor},
    )
    if created:
        audit_record(
            actor=actor, action="dataset.create", object_type="dataset", object_id=str(dataset),
            object_repr=dataset.name, after={"project": target.project.slug, "slug": dataset.slug, "name": dataset.name},
        )
    return dataset


def _version_create(
    *,
    actor: Any,
    target: DatasetTarget,
    stored_key: str,
    stored_uri: str,
    sha256: str,
    size: int,
    format: str,
    content_format: str,
    compressed: bool,
    columns: list[str],
    row_count: int | None,
    source: str,
    source_uri: str = "",
    source_etag: str = "",
    source_version_id: str = "",
    original_filename: str = "",
    object_count: int = 1,
    produced_by: Run | None = None,
) -> tuple[DatasetVersion, bool]:
    """The version for these bytes: the existing one if the dataset already has them, else the next number."""
    for attempt in range(5):
        try:
            with transaction.atomic():
                dataset = _dataset_for(target, actor)
                dataset = Dataset.objects.select_for_update().get(pk=dataset.pk)
                existing = DatasetVersion.objects.filter(dataset=dataset, sha256=sha256).first()
                if existing is not None:
                    return existing, False
                number = (dataset.versions.aggregate(top=Max("number"))["top"] or 0) + 1
                version = DatasetVersion.objects.create(
                    dataset=dataset, number=number, sha256=sha256, uri=stored_uri, storage_key=stored_key, size=size,
                    format=format, content_format=content_format, compressed=compressed, columns=columns,
                    row_count=row_count, object_count=object_count, source=source, source_uri=source_uri,
                    source_etag=source_etag, source_version_id=source_version_id,
                    original_filename=original_filename[:255], produced_by=produced_by, created_by=actor,
                )
                DatasetProfile.objects.create(version=version)
                if produced_by is not None:
                    lineage_link(source=produced_by.node_id, target=version.node_id)
                audit_record(
                    actor=actor, action="dataset_version.create", object_type="dataset_version",
                    object_id=version.pk, object_repr=str(version),
                    after={"sha256": sha256, "uri": stored_uri, "size": size, "format": format, "source": source,
                           "source_uri": source_uri, "rows": row_count},
                )
                transaction.on_commit(lambda pk=version.pk: _enqueue_profile(pk), robust=True)
                return version, True
        except IntegrityError:
            # Two registrations of the same dataset raced for a number or the same bytes: look again.
            if attempt == 4:
                raise
            time.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")


def _enqueue_profile(version_id: int) -> None:
    from lineage.tasks import dataset_profile_task

    dataset_profile_task.delay(version_id)


@contextmanager
def _local_copy(upload: UploadedFile) -> Any:
    """A path to the uploaded bytes: Django already spooled large uploads to disk; small ones are written out."""
    if hasattr(upload, "temporary_file_path"):
        yield Path(upload.temporary_file_path())
        return
    with tempfile.NamedTemporaryFile(prefix="upload-", dir=settings.FILE_UPLOAD_TEMP_DIR) as handle:
        for chunk in upload.chunks():
            handle.write(chunk)
        handle.flush()
        yield Path(handle.name)


def dataset_version_upload(
    *, actor: Any, project: str | Project, dataset: str, upload: UploadedFile, description: str = ""
) -> tuple[DatasetVersion, bool]:
    """Validate an uploaded CSV/Parquet/JSON Lines file and store it write-once. Bad files store nothing."""
    permissions.require(actor, "dataset.register")
    target = dataset_target(project=project, dataset=dataset, description=description)
    with _local_copy(upload) as path:
        try:
            file_format, summary, stored = _validate_and_store(path, upload.name or "upload")
        except dataset_files.DatasetFileError as exc:
            raise ValidationError({"file": [str(exc)]}) from None
    return _version_create(
        actor=actor, target=target, stored_key=stored.key, stored_uri=stored.uri, sha256=stored.sha256,
        size=stored.size, format=file_format, content_format=file_format, compressed=summary.compressed,
        columns=summary.columns, row_count=summary.row_count, source=DatasetVersion.Source.UPLOAD,
        original_filename=upload.name or "",
    )


def _validate_and_store(path: Path, filename: str) -> tuple[str, Any, Any]:
    """Detect the format, validate the whole file (size limit included), then store it write-once."""
    with path.open("rb") as handle:
        head = handle.read(8)
    file_format = dataset_files.detect_format(filename, head)
    summary = dataset_files.validate_file(path, format=file_format, max_bytes=settings.DATASET_MAX_UPLOAD_BYTES)
    suffix = FORMAT_SUFFIX[file_format] + (".gz" if summary.compressed else "")
    with path.open("rb") as handle:
        stored = object_store().put_content_addressed(handle, prefix="datasets/", suffix=suffix)
    return file_format, summary, stored


def dataset_version_change_refused(*, actor: Any, version: DatasetVersion, attempted: dict[str, Any]) -> None:
    """Someone tried to change or delete a dataset version: keep a record, then refuse."""
    with transaction.atomic():
        audit_record(
            actor=actor, action="dataset_version.change_refused", object_type="dataset_version", object_id=version.pk,
            object_repr=str(version), after={"attempted": attempted},
            reason="dataset versions are write-once",
        )
    raise WriteOnceError("dataset versions are write-once: register the changed data as a new version")


# --- registrations of data that lives elsewhere ---------------------------------------------


def dataset_registration_request(
    *, actor: Any, project: str | Project, dataset: str, uri: str, description: str = ""
) -> DatasetRegistration:
    """Queue the registration of an s3:// object or prefix, or a file:// file or folder under an allowed root."""
    permissions.require(actor, "dataset.register")
    target = dataset_target(project=project, dataset=dataset, description=description)
    uri = (uri or "").strip()
    try:
        sources.check_source_uri(uri, allowed_roots=settings.DATASET_FILE_ROOTS)
    except sources.SourceError as exc:
        raise ValidationError({"uri": [str(exc)]}) from None
    if uri.startswith("s3://") and settings.CONTROLPLANE_BACKEND != "aws" and not settings.AWS_ENDPOINT_URL:
        raise ValidationError({"uri": ["s3:// locations need CONTROLPLANE_BACKEND=aws (or AWS_ENDPOINT_URL)"]})
    with transaction.atomic():
        registration = DatasetRegistration.objects.create(
            project=target.project, dataset_slug=target.slug, dataset_name=target.name,
            description=description.strip(), source_uri=uri, created_by=actor,
        )
        transaction.on_commit(lambda: _enqueue_registration(registration.pk), robust=True)
    return registration


def _enqueue_registration(registration_id: int) -> None:
    from lineage.tasks import dataset_registration_task

    dataset_registration_task.delay(registration_id)


def _throttled(update: Callable[[float], None], every: float = 0.5) -> Callable[[float], None]:
    last = [0.0]

    def report(fraction: float) -> None:
        now = time.monotonic()
        if fraction >= 1.0 or now - last[0] >= every:
            last[0] = now
            update(fraction)

    return report


def dataset_registration_run(*, registration_id: int) -> DatasetRegistration | None:
    """Worker side: read the location, validate it, store it write-once, make (or find) the version."""
    if not claim(DatasetRegistration.objects.filter(pk=registration_id)):
        return None
    registration = DatasetRegistration.objects.select_related("project", "created_by").get(pk=registration_id)

    def progress(fraction: float) -> None:
        DatasetRegistration.objects.filter(pk=registration_id).update(progress=round(fraction, 3))

    try:
        version, created = _register_source(registration, _throttled(progress))
    except (sources.SourceError, dataset_files.DatasetFileError) as exc:
        DatasetRegistration.objects.filter(pk=registration_id).update(
            status=DatasetRegistration.Status.FAILED, error=str(exc), finished_at=timezone.now()
        )
        return DatasetRegistration.objects.get(pk=registration_id)
    DatasetRegistration.objects.filter(pk=registration_id).update(
        status=DatasetRegistration.Status.SUCCEEDED, version=version, created_new_version=created, progress=1.0,
        finished_at=timezone.now(),
    )
    return DatasetRegistration.objects.get(pk=registration_id)


def dataset_registration_fail(*, registration_id: int, error: str) -> None:
    DatasetRegistration.objects.filter(pk=registration_id).exclude(status=DatasetRegistration.Status.SUCCEEDED).update(
        status=DatasetRegistration.Status.FAILED, error=error, finished_at=timezone.now()
    )


def _register_source(registration: DatasetRegistration, progress: Callable[[float], None]) -> tuple[DatasetVersion, bool]:
    uri = registration.source_uri
    target = DatasetTarget(
        project=registration.project, slug=registration.dataset_slug, name=registration.dataset_name,
        description=registration.description,
    )
    roots = settings.DATASET_FILE_ROOTS
    with tempfile.TemporaryDirectory(prefix="register-", dir=settings.FILE_UPLOAD_TEMP_DIR) as tmp:
        if uri.startswith("s3://") and not sources.is_prefix(uri):
            snapshot: sources.SingleObject | sources.Manifest = sources.snapshot_s3_object(
                uri, Path(tmp) / "object", progress=progress, max_bytes=settings.DATASET_MAX_UPLOAD_BYTES
            )
        elif uri.startswith("s3://"):
            snapshot = sources.snapshot_s3_prefix(uri)
        else:
            snapshot = sources.snapshot_local(uri, allowed_roots=roots)
        if isinstance(snapshot, sources.SingleObject):
            file_format, summary, stored = _validate_and_store(snapshot.path, uri.rsplit("/", 1)[-1])
            return _version_create(
                actor=registration.created_by, target=target, stored_key=stored.key, stored_uri=stored.uri,
                sha256=stored.sha256, size=stored.size, format=file_format, content_format=file_format,
                compressed=summary.compressed, columns=summary.columns, row_count=summary.row_count,
                source=DatasetVersion.Source.S3 if uri.startswith("s3://") else DatasetVersion.Source.FILE,
                source_uri=uri, source_etag=snapshot.etag, source_version_id=snapshot.version_id,
            )
        # A manifest: check the first object's format now so a folder of junk fails at registration.
        first = snapshot.entries[0]
        first_path = sources.fetch_manifest_entry(snapshot, first, Path(tmp) / "first", allowed_roots=roots)
        with first_path.open("rb") as handle:
            head = handle.read(8)
        content_format = dataset_files.detect_format(first.key, head)
        summary = dataset_files.validate_file(first_path, format=content_format)
        import io

        stored = object_store().put_content_addressed(
            io.BytesIO(snapshot.to_bytes()), prefix="datasets/manifests/", suffix=FORMAT_SUFFIX["manifest"]
        )
        progress(1.0)
        return _version_create(
            actor=registration.created_by, target=target, stored_key=stored.key, stored_uri=stored.uri,
            sha256=stored.sha256, size=snapshot.total_size, format=DatasetVersion.Format.MANIFEST,
            content_format=content_format, compressed=summary.compressed, columns=summary.columns, row_count=None,
            source=DatasetVersion.Source.S3 if uri.startswith("s3://") else DatasetVersion.Source.FILE,
            source_uri=uri, object_count=len(snapshot.entries),
        )


# --- profiles -------------------------------------------------------------------------------


@contextmanager
def version_local_files(version: DatasetVersion) -> Any:
    """Local paths of a version's data (its objects, for a manifest), for profiling and for runs."""
    store = object_store()
    with tempfile.TemporaryDirectory(prefix="version-", dir=settings.FILE_UPLOAD_TEMP_DIR) as tmp:
        if version.format != DatasetVersion.Format.MANIFEST:
            path = Path(tmp) / f"data{FORMAT_SUFFIX[version.format]}{'.gz' if version.compressed else ''}"
            with store.open(version.storage_key) as source:
                sources.copy_stream(source, path)
            yield [path]
            return
        with store.open(version.storage_key) as source:
            manifest = sources.Manifest.from_bytes(source.read())
        paths = []
        for index, entry in enumerate(manifest.entries):
            suffix = "".join(Path(entry.key).suffixes[-2:])
            dest = Path(tmp) / f"part-{index:06d}{suffix}"
            paths.append(sources.fetch_manifest_entry(manifest, entry, dest, allowed_roots=settings.DATASET_FILE_ROOTS))
        yield paths


def dataset_profile_run(*, version_id: int) -> DatasetProfile | None:
    """Worker side: profile a version once. Claimed with a conditional update; a redelivery does nothing."""
    if not claim(DatasetProfile.objects.filter(version_id=version_id), progress=0.0):
        return None
    version = DatasetVersion.objects.get(pk=version_id)

    def progress(fraction: float) -> None:
        DatasetProfile.objects.filter(version_id=version_id).update(progress=round(min(fraction, 1.0), 3))

    try:
        with version_local_files(version) as paths:
            profile = dataset_files.profile_files(paths, format=version.content_format, progress=_throttled(progress))
    except (sources.SourceError, dataset_files.DatasetFileError) as exc:
        DatasetProfile.objects.filter(version_id=version_id).update(
            status=DatasetProfile.Status.FAILED, error=str(exc), finished_at=timezone.now()
        )
    else:
        DatasetProfile.objects.filter(version_id=version_id).update(
            status=DatasetProfile.Status.READY, profile=profile, progress=1.0, finished_at=timezone.now()
        )
    return DatasetProfile.objects.get(version_id=version_id)


def dataset_profile_fail(*, version_id: int, error: str) -> None:
    DatasetProfile.objects.filter(version_id=version_id).exclude(status=DatasetProfile.Status.READY).update(
        status=DatasetProfile.Status.FAILED, error=error, finished_at=timezone.now()
    )


# --- lineage ----------------------------------------------------------------------------------


def lineage_link(*, source: str, target: str) -> None:
    LineageEdge.objects.get_or_create(source=source, target=target)


# --- runs -------------------------------------------------------------------------------------


class IllegalTransition(ValidationError):
    pass


# action -> (allowed sources, target). The only way a run's status changes.
RUN_TRANSITIONS: dict[str, tuple[frozenset[str], str]] = {
    "start": (frozenset({"queued"}), "starting"),
    "running": (frozenset({"starting"}), "running"),
    "succeed": (frozenset({"running", "stopping"}), "succeeded"),
    "fail": (frozenset({"queued", "starting", "running", "stopping"}), "failed"),
    "stop": (frozenset({"starting", "running"}), "stopping"),
    "cancel": (frozenset({"queued"}), "stopped"),
    "stopped": (frozenset({"stopping"}), "stopped"),
}


def run_transition(*, run_id: int, action: str, reason: str = "", actor: Any = None, **fields: Any) -> Run:
    """Move a run along its transition table under a row lock, writing a RunEvent. Illegal moves raise."""
    sources_allowed, target = RUN_TRANSITIONS[action]
    with transaction.atomic():
        run = Run.objects.select_for_update().get(pk=run_id)
        if run.status not in sources_allowed:
            raise IllegalTransition(
                {"status": [f"a {run.status} run cannot {action} (allowed from: {', '.join(sorted(sources_allowed))})"]}
            )
        previous = run.status
        run.status = target
        if reason:
            run.status_reason = reason
        now = timezone.now()
        if target == "starting":
            run.started_at = now
        if target in ("succeeded", "failed", "stopped"):
            run.finished_at = now
        for name, value in fields.items():
            setattr(run, name, value)
        run.save()
        RunEvent.objects.create(run=run, from_status=previous, to_status=target, reason=reason, actor=actor)
        if settings.OPENLINEAGE_URL:
            transaction.on_commit(lambda: _enqueue_openlineage(run.pk, target), robust=True)
    return run


def _enqueue_openlineage(run_id: int, status: str) -> None:
    from lineage.tasks import openlineage_emit_task

    openlineage_emit_task.delay(run_id, status)


def transform_run_launch(
    *,
    actor: Any,
    inputs: list[DatasetVersion],
    recipe: str,
    parameters: dict[str, Any],
    output_name: str = "",
) -> Run:
    """Queue a transform run that derives new dataset versions from `inputs` with a recipe."""
    from workers import recipes as recipe_registry

    permissions.require(actor, "run.launch")
    errors: dict[str, list[str]] = {}
    spec = _recipe_of_kind(recipe, "transform")
    if not inputs:
        errors["inputs"] = ["expected at least one dataset version"]
    projects = {version.dataset.project_id for version in inputs}
    if len(projects) > 1:
        errors["inputs"] = ["all inputs must belong to one project"]
    columns = list(inputs[0].columns) if inputs else []
    for version in inputs[1:]:
        if list(version.columns) != columns:
            errors.setdefault("inputs", []).append(
                f"{version} has columns {', '.join(version.columns)}; expected the same columns as {inputs[0]}"
            )
    cleaned, parameter_errors = recipe_registry.validate_parameters(spec, parameters or {}, columns=columns)
    for name, message in parameter_errors.items():
        errors[f"parameters.{name}"] = [message]
    base = to_slug(output_name or (f"{inputs[0].dataset.slug}-{spec.name}" if inputs else ""), max_length=50)
    if inputs and not SLUG_RE.match(base):
        errors["output_name"] = ["expected a name with letters, digits or hyphens"]
    if errors:
        raise ValidationError(errors)
    return _run_queue(
        actor=actor, spec=spec, parameters=cleaned, channels=[("input", version) for version in inputs],
        kind=Run.Kind.TRANSFORM, backend="local", output_name=base,
    )


def _run_queue(
    *, actor: Any, spec: Any, parameters: dict[str, Any], channels: list[tuple[str, DatasetVersion]], kind: str,
    backend: str, output_name: str, reproduced_from: Run | None = None, **fields: Any,
) -> Run:
    """Create a validated run with its inputs, lineage edges, first event and audit record; queue it after commit."""
    from workers import recipes as recipe_registry

    with transaction.atomic():
        run = Run.objects.create(
            project=channels[0][1].dataset.project, kind=kind, recipe=spec.name, recipe_version=spec.version,
            recipe_fingerprint=recipe_registry.recipe_fingerprint(spec), parameters=parameters,
            seed=parameters.get("seed"), backend=backend, output_name=output_name, created_by=actor,
            reproduced_from=reproduced_from, **fields,
        )
        for channel, version in channels:
            RunInput.objects.create(run=run, dataset_version=version, channel=channel)
            lineage_link(source=version.node_id, target=run.node_id)
        reason = f"reproduction of run {reproduced_from.pk}" if reproduced_from else "launched"
        RunEvent.objects.create(run=run, from_status="", to_status=Run.Status.QUEUED, actor=actor, reason=reason)
        audit_record(
            actor=actor, action="run.launch", object_type="run", object_id=run.pk, object_repr=str(run),
            after={"recipe": spec.name, "parameters": parameters, "backend": backend,
                   "inputs": [version.node_id for _, version in channels],
                   **{key: str(value) for key, value in fields.items()}},
        )
        transaction.on_commit(lambda: _enqueue_run(run.pk), robust=True)
    return run


def _recipe_of_kind(name: str, kind: str) -> Any:
    from workers import recipes as recipe_registry

    try:
        spec = recipe_registry.get_recipe(name)
    except recipe_registry.UnknownRecipe as exc:
        raise ValidationError({"recipe": [str(exc)]}) from None
    if spec.kind != kind:
        raise ValidationError({"recipe": [f"{name} is a {spec.kind} recipe; expected a {kind} recipe"]})
    return spec


def _enqueue_run(run_id: int) -> None:
    from lineage.tasks import training_run_start_task

    training_run_start_task.delay(run_id)


def run_stop(*, actor: Any, run: Run, reason: str = "") -> Run:
    permissions.require(actor, "run.stop")
    with transaction.atomic():
        try:
            # Still queued: nothing started, and the locked transition makes sure nothing will.
            updated = run_transition(run_id=run.pk, action="cancel", actor=actor, reason=reason or "stopped before it started")
        except IllegalTransition:
            updated = run_transition(run_id=run.pk, action="stop", actor=actor, reason=reason or f"stop requested by {actor}")
            transaction.on_commit(lambda: _enqueue_stop(run.pk), robust=True)
        audit_record(actor=actor, action="run.stop", object_type="run", object_id=run.pk, object_repr=str(run), reason=reason)
    return updated


def _enqueue_stop(run_id: int) -> None:
    from lineage.tasks import training_run_stop_task

    training_run_stop_task.delay(run_id)


def training_run_launch(
    *,
    actor: Any,
    recipe: str,
    train: DatasetVersion,
    validation: DatasetVersion | None = None,
    target: str = "",
    hyperparameters: dict[str, Any] | None = None,
    seed: int | None = None,
    backend: str = "local",
    instance_type: str = "",
    instance_count: int = 1,
    max_runtime_seconds: int = 3600,
    model_name: str = "",
    reproduced_from: Run | None = None,
) -> Run:
    """Queue a training run; every input is checked first and a bad one creates nothing."""
    from workers import recipes as recipe_registry

    permissions.require(actor, "run.launch")
    errors: dict[str, list[str]] = {}
    spec = _recipe_of_kind(recipe, "training")
    values = dict(hyperparameters or {})
    if target:
        values["target"] = target
    if seed is not None:
        values["seed"] = seed
    cleaned, parameter_errors = recipe_registry.validate_parameters(spec, values, columns=list(train.columns))
    for name, message in parameter_errors.items():
        errors["target" if name == "target" else f"hyperparameters.{name}"] = [message]
    if validation is not None:
        if validation.dataset.project_id != train.dataset.project_id:
            errors["validation"] = ["expected a dataset version of the same project as the training data"]
        elif validation.pk == train.pk:
            errors["validation"] = ["expected different data from the training set (or none)"]
        else:
            differences = _schema_differences(validation, train)
            if differences:
                errors["validation"] = ["the validation set's schema differs from the training set's: " + "; ".join(differences)]
    instance_type = instance_type or ("local" if backend == "local" else "")
    if backend == "local":
        if instance_type != "local":
            errors["instance_type"] = ["the local backend runs on this machine: expected 'local'"]
        if instance_count != 1:
            errors["instance_count"] = ["the local backend runs one process: expected 1"]
    elif backend == "sagemaker":
        allowed = sorted(k for k in settings.TRAINING_INSTANCE_PRICES if k != "local")
        if instance_type not in settings.TRAINING_INSTANCE_PRICES or instance_type == "local":
            errors["instance_type"] = [f"expected one of: {', '.join(allowed)}"]
        if not 1 <= instance_count <= settings.TRAINING_MAX_INSTANCES:
            errors["instance_count"] = [f"expected a whole number between 1 and {settings.TRAINING_MAX_INSTANCES}"]
        if not settings.SAGEMAKER_ROLE_ARN:
            errors["backend"] = ["SageMaker is not configured here: SAGEMAKER_ROLE_ARN is not set"]
        elif not settings.SAGEMAKER_S3_URL:
            errors["backend"] = ["SageMaker is not configured here: it needs an s3:// OBJECT_STORE_URL or SAGEMAKER_S3_URL"]
    else:
        errors["backend"] = ["expected local or sagemaker"]
    if not 60 <= max_runtime_seconds <= settings.TRAINING_MAX_RUNTIME_SECONDS:
        errors["max_runtime_seconds"] = [f"expected between 60 and {settings.TRAINING_MAX_RUNTIME_SECONDS} seconds"]
    name = to_slug(model_name or f"{train.dataset.slug}-{spec.name}")
    if not SLUG_RE.match(name):
        errors["model_name"] = ["expected a name with letters, digits or hyphens"]
    if errors:
        raise ValidationError(errors)
    estimate, _ = run_cost_estimate(backend=backend, instance_type=instance_type, instance_count=instance_count,
                                    max_runtime_seconds=max_runtime_seconds)
    channels = [("train", train)] + ([("validation", validation)] if validation is not None else [])
    return _run_queue(
        actor=actor, spec=spec, parameters=cleaned, channels=channels, kind=Run.Kind.TRAINING, backend=backend,
        output_name=name, reproduced_from=reproduced_from, instance_type=instance_type, instance_count=instance_count,
        max_runtime_seconds=max_runtime_seconds, estimated_cost=estimate,
    )


def _schema_differences(validation: DatasetVersion, train: DatasetVersion) -> list[str]:
    """Column names first; with both profiles ready, column types too."""
    train_profile = getattr(train, "profile", None)
    validation_profile = getattr(validation, "profile", None)
    if train_profile and validation_profile and train_profile.profile and validation_profile.profile:
        return dataset_files.schemas_compatible(
            dataset_files.profile_to_schema(validation_profile.profile), dataset_files.profile_to_schema(train_profile.profile)
        )
    missing = [c for c in train.columns if c not in validation.columns]
    extra = [c for c in validation.columns if c not in train.columns]
    return [f"column '{c}' is missing" for c in missing] + [f"column '{c}' is extra" for c in extra]


def run_reproduce(*, actor: Any, run: Run) -> Run:
    """A new run with identical inputs, recipe code, parameters, seed and backend settings."""
    from workers import recipes as recipe_registry

    permissions.require(actor, "run.launch")
    try:
        spec = recipe_registry.get_recipe(run.recipe)
    except recipe_registry.UnknownRecipe as exc:
        raise ValidationError({"recipe": [str(exc)]}) from None
    fingerprint = recipe_registry.recipe_fingerprint(spec)
    if fingerprint != run.recipe_fingerprint:
        raise ValidationError({"recipe": [
            f"the {run.recipe} recipe's code changed since run {run.pk} (code {run.recipe_fingerprint[:12]} then, "
            f"{fingerprint[:12]} now), so it cannot be reproduced exactly"
        ]})
    if run.backend == "local" and run.image:
        current = _image_of(run, None)
        if current != run.image:
            raise ValidationError({"recipe": [f"run {run.pk} ran on {run.image}; this machine has {current}, so it cannot be reproduced exactly"]})
    run_inputs = list(run.inputs.select_related("dataset_version__dataset__project", "dataset_version__profile").order_by("pk"))
    inputs = {i.channel: i.dataset_version for i in run_inputs}
    if run.kind == Run.Kind.TRANSFORM:
        new = transform_run_launch(actor=actor, inputs=[i.dataset_version for i in run_inputs if i.channel == "input"],
                                   recipe=run.recipe, parameters=run.parameters, output_name=run.output_name)
        Run.objects.filter(pk=new.pk).update(reproduced_from=run)
        new.refresh_from_db()
        return new
    parameters = dict(run.parameters)
    target = parameters.pop("target", "")
    seed = parameters.pop("seed", None)
    return training_run_launch(
        actor=actor, recipe=run.recipe, train=inputs["train"], validation=inputs.get("validation"), target=target,
        hyperparameters=parameters, seed=seed, backend=run.backend, instance_type=run.instance_type,
        instance_count=run.instance_count, max_runtime_seconds=run.max_runtime_seconds, model_name=run.output_name,
        reproduced_from=run,
    )


def final_metrics(run: Run) -> dict[str, float]:
    """The last value of each metric series (what a run ended with)."""
    return {name: points[-1]["value"] for name, points in (run.metrics or {}).items() if points}


def reproduction_check(run: Run) -> dict[str, Any] | None:
    """For a reproduction: do its final metrics equal the original's?"""
    if run.reproduced_from_id is None or not run.done:
        return None
    original = final_metrics(run.reproduced_from)
    mine = final_metrics(run)
    rows = [
        {"name": name, "original": original.get(name), "reproduction": mine.get(name),
         "match": original.get(name) == mine.get(name)}
        for name in sorted(set(original) | set(mine))
        if not name.startswith(("time", "wall"))
    ]
    return {"original": run.reproduced_from, "rows": rows, "match": bool(rows) and all(r["match"] for r in rows)}


def work_dir_for(run: Run) -> Path:
    return Path(settings.RUNS_WORK_DIR) / f"run-{run.pk}-{run.uuid.hex[:8]}"


def cleanup_work_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


# --- run execution (worker side) ------------------------------------------------------------
# A run is started by one task and then followed by a chain of short poll tasks (and a periodic sweep that
# restarts a broken chain), so no worker sits in a loop while a job runs and any worker can pick it up.


def training_backend_for(run: Run) -> Any:
    from controlplane.backends import training_backend

    return training_backend(run.backend)


def poll_interval(run: Run) -> float:
    return settings.RUN_POLL_SECONDS.get(run.backend, 30.0)


def run_start(*, run_id: int) -> Run:
    """Start a queued run's job. A redelivered message finds the job the first delivery started (start is idempotent)."""
    from contextlib import ExitStack

    from workers import recipes as recipe_registry
    from workers.errors import BackendError
    from workers.training.base import InputFile, JobSpec

    run = Run.objects.select_related("project").get(pk=run_id)
    if run.status == Run.Status.QUEUED:
        run = run_transition(run_id=run.pk, action="start", reason="a worker took the run")
    elif run.status == Run.Status.STOPPING and not run.backend_job_id:
        # Stopped while the job was being created, and that worker is gone: there is nothing to stop.
        return _transition_quietly(run, "stopped", "stopped before the job started")
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
        return _transition_quietly(run, "fail", f"could not start the job: {exc}")
    recorded = Run.objects.filter(
        pk=run.pk, status__in=[Run.Status.STARTING, Run.Status.STOPPING], backend_job_id__in=["", job_id]
    ).update(backend_job_id=job_id, last_polled_at=timezone.now(), image=_image_of(run, backend))
    run.refresh_from_db()
    if not recorded or run.status == Run.Status.STOPPING:
        # The run ended or was stopped while its job was being created: do not leave the job running (and billing).
        backend.stop(job_id)
    if recorded:
        restart_poll_chain(run)
    return run


def _image_of(run: Run, backend: Any) -> str:
    if run.backend == "sagemaker":
        return str(getattr(backend, "image_uri", "") or "")
    import platform

    import sklearn

    return f"python {platform.python_version()}, scikit-learn {sklearn.__version__}"


def restart_poll_chain(run: Run, *, countdown: float | None = None) -> None:
    """Start a new poll chain for the run, retiring any chain already going (so chains never multiply)."""
    from django.db.models import F

    Run.objects.filter(pk=run.pk).update(poll_generation=F("poll_generation") + 1)
    generation = Run.objects.values_list("poll_generation", flat=True).get(pk=run.pk)
    _enqueue_poll(run.pk, generation=generation, countdown=poll_interval(run) if countdown is None else countdown)


def run_tags(run: Run) -> dict[str, str]:
    """The cost-allocation tags every AWS resource made for this run carries."""
    tags = {"project": run.project.slug, "run": str(run.pk)}
    if run.kind == Run.Kind.TRAINING:
        tags["model"] = run.output_name
    for key, value in (run.project.cost_tags or {}).items():
        tags.setdefault(key, value)
    return tags


def _enqueue_poll(run_id: int, *, generation: int, countdown: float) -> None:
    from lineage.tasks import training_run_poll_task

    training_run_poll_task.apply_async((run_id, generation), countdown=countdown)


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
        run = _transition_quietly(run, "running", f"job {run.backend_job_id} is running")
    if not status.finished:
        if run.status == Run.Status.STOPPING and status.state == "running":
            backend.stop(run.backend_job_id)  # the first stop was lost or refused: ask again
        if generation is not None:
            _enqueue_poll(run.pk, generation=generation, countdown=poll_interval(run))
        return run
    return _finish(run, backend, status)


DONE_STATUSES = (Run.Status.SUCCEEDED, Run.Status.FAILED, Run.Status.STOPPED)
LOG_TAIL_LINES = 200


def run_fail(*, run_id: int, reason: str) -> None:
    """Fail a run that is not finished yet (used when the backend refuses for good)."""
    run = Run.objects.get(pk=run_id)
    if not run.done:
        _transition_quietly(run, "fail", reason)


def _transition_quietly(run: Run, action: str, reason: str, **fields: Any) -> Run:
    """A transition another poll may already have made: losing that race is fine."""
    try:
        return run_transition(run_id=run.pk, action=action, reason=reason, **fields)
    except IllegalTransition:
        return Run.objects.get(pk=run.pk)


def _finish(run: Run, backend: Any, status: Any) -> Run:
    # Slow work (reading logs, storing artifacts) happens before any row lock is taken; it is idempotent.
    fields: dict[str, Any] = {"metrics": status.metrics, "usage": status.usage, "cost": measured_cost(run, status.usage)}
    try:
        fields["log_key"] = _store_log(run, backend)
    except Exception as exc:  # a missing log must not lose the run's result
        log.warning("run %s: could not store the log: %s", run.pk, exc)
    if status.state == "stopped":
        if Run.objects.values_list("status", flat=True).get(pk=run.pk) not in (Run.Status.STOPPING, Run.Status.STOPPED):
            _transition_quietly(run, "stop", "the backend stopped the job")
        return _transition_quietly(run, "stopped", status.message or "stopped", **fields)
    if status.state == "failed":
        return _transition_quietly(run, "fail", status.message or "the job failed", **fields)
    try:
        prepared = _prepare_outputs(run, status)
    except (ValidationError, dataset_files.DatasetFileError, sources.SourceError, OSError, ValueError, KeyError) as exc:
        message = "; ".join(exc.messages) if isinstance(exc, ValidationError) else f"{type(exc).__name__}: {exc}"
        return _transition_quietly(run, "fail", f"the job's output is not usable: {message}", **fields)
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
    import io

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
    from workers import recipes as recipe_registry

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
            _version_create(
                actor=run.created_by, target=target, stored_key=stored.key, stored_uri=stored.uri,
                sha256=stored.sha256, size=stored.size, format="csv", content_format="csv", compressed=False,
                columns=summary.columns, row_count=summary.row_count, source=DatasetVersion.Source.DERIVED,
                source_uri=f"run:{run.pk}/{name}", produced_by=run,
            )

    return write


def _prepare_model_version(run: Run, status: Any) -> Callable[[], None]:
    """Keep the model artifact write-once with its SHA-256, and read the recipe's model.json."""
    import json as jsonlib

    artifact = model_artifact_from_job(run, status)
    try:
        with artifact.open_metadata() as handle:
            metadata = jsonlib.load(handle)
    finally:
        shutil.rmtree(_model_scratch(run), ignore_errors=True)

    def write() -> None:
        model_version_register(run=run, artifact_uri=artifact.uri, artifact_key=artifact.key, sha256=artifact.sha256,
                               size=artifact.size, metadata=metadata)

    return write


@dataclass
class ModelArtifact:
    uri: str
    key: str
    sha256: str
    size: int
    metadata_path: Path

    def open_metadata(self) -> Any:
        return self.metadata_path.open()


def _model_scratch(run: Run) -> Path:
    return Path(settings.FILE_UPLOAD_TEMP_DIR) / f"model-{run.pk}-{run.uuid.hex[:8]}"


def model_artifact_from_job(run: Run, status: Any) -> ModelArtifact:
    """The job's model as a write-once object: model.joblib stored here for local runs; SageMaker's model.tar.gz
    stays where SageMaker put it, hashed as it is downloaded."""
    from workers.sources import sha256_file

    scratch = _model_scratch(run)
    scratch.mkdir(parents=True, exist_ok=True)
    if status.model_dir is not None and (Path(status.model_dir) / "model.joblib").is_file():
        model_dir = Path(status.model_dir)
        with (model_dir / "model.joblib").open("rb") as handle:
            stored = object_store().put_content_addressed(handle, prefix="models/", suffix=".joblib")
        metadata = scratch / "model.json"
        shutil.copyfile(model_dir / "model.json", metadata)
        return ModelArtifact(uri=stored.uri, key=stored.key, sha256=stored.sha256, size=stored.size, metadata_path=metadata)
    if status.model_uri and status.model_uri.startswith("s3://"):
        backend = training_backend_for(run)
        tar_path = backend.download_artifact(status.model_uri, scratch / "model.tar.gz")
        extracted = backend.extract_model_tar(tar_path, scratch / "model")
        metadata = Path(extracted) / "model.json"
        if not metadata.is_file():
            raise ValidationError({"model": ["the model archive has no model.json"]})
        return ModelArtifact(uri=status.model_uri, key="", sha256=sha256_file(tar_path), size=tar_path.stat().st_size,
                             metadata_path=metadata)
    raise ValidationError({"model": ["the job finished without a model (no model.joblib in the model folder)"]})


def model_version_register(*, run: Run, artifact_uri: str, artifact_key: str, sha256: str, size: int,
                           metadata: dict[str, Any]) -> ModelVersion:
    """Add the run's model to its registered model as the next version, linked in lineage. Call under the run lock."""
    registered, created = RegisteredModel.objects.get_or_create(
        project=run.project, slug=run.output_name,
        defaults={"name": run.output_name, "created_by": run.created_by,
                  "description": f"Trained with the {run.recipe} recipe"},
    )
    registered = RegisteredModel.objects.select_for_update().get(pk=registered.pk)
    number = (registered.versions.aggregate(top=Max("number"))["top"] or 0) + 1
    features = metadata.get("features") or []
    feature_types = metadata.get("feature_types") or {}
    version = ModelVersion.objects.create(
        registered_model=registered, number=number, run=run, artifact_uri=artifact_uri, artifact_key=artifact_key,
        sha256=sha256, size=size, task=metadata.get("task", ""), target=metadata.get("target", ""),
        input_schema=[{"name": name, "type": feature_types.get(name, "")} for name in features],
        classes=metadata.get("classes"), metrics=metadata.get("metrics") or {}, metadata=metadata,
        created_by=run.created_by,
    )
    lineage_link(source=run.node_id, target=version.node_id)
    if created:
        audit_record(actor=run.created_by, action="model.create", object_type="model", object_id=str(registered),
                     object_repr=registered.name)
    audit_record(
        actor=run.created_by, action="model_version.create", object_type="model_version", object_id=version.pk,
        object_repr=str(version), after={"run": run.pk, "sha256": sha256, "artifact_uri": artifact_uri, "metrics": version.metrics},
    )
    return version


def run_stop_job(*, run_id: int) -> None:
    """Worker side of a stop request: tell the backend; the next poll records the stopped state."""
    run = Run.objects.get(pk=run_id)
    if run.status == Run.Status.STOPPING and run.backend_job_id:
        training_backend_for(run).stop(run.backend_job_id)
        restart_poll_chain(run, countdown=0)


def runs_poll_stale(*, older_than_seconds: int = 120, lost_start_seconds: int = 1800) -> dict[str, int]:
    """The periodic sweep: restart a poll chain that broke (its worker died) and fail runs whose start was lost."""
    from datetime import timedelta

    now = timezone.now()
    active = Run.objects.filter(status__in=["starting", "running", "stopping"]).exclude(backend_job_id="")
    stale = list(active.filter(Q(last_polled_at__lt=now - timedelta(seconds=older_than_seconds)) | Q(last_polled_at__isnull=True)).values_list("pk", flat=True)[:500])
    for run in Run.objects.filter(pk__in=stale):
        restart_poll_chain(run, countdown=0)
    lost = 0
    lost_before = now - timedelta(seconds=lost_start_seconds)
    for run in Run.objects.filter(status__in=["starting", "stopping"], backend_job_id="", started_at__lt=lost_before)[:100]:
        if run.status == Run.Status.STOPPING:
            _transition_quietly(run, "stopped", "stopped before the job started")
        else:
            _transition_quietly(run, "fail", "the worker was lost before the job started")
        lost += 1
    return {"polled": len(stale), "failed": lost}


def measured_cost(run: Run, usage: dict[str, Any] | None) -> Decimal | None:
    """Cost from measured usage: SageMaker's billable seconds × instance price; locally CPU time × the CPU-hour price."""
    usage = usage or {}
    if run.backend == "sagemaker":
        billable = usage.get("billable_seconds")
        price = settings.TRAINING_INSTANCE_PRICES.get(run.instance_type)
        if billable is None or price is None:
            return None
        return (Decimal(str(billable)) / 3600 * Decimal(str(price)) * run.instance_count).quantize(Decimal("0.0001"))
    cpu = usage.get("cpu_seconds")
    if cpu is None:
        return None
    return (Decimal(str(cpu)) / 3600 * Decimal(str(settings.LOCAL_CPU_HOUR_PRICE))).quantize(Decimal("0.0001"))


def run_cost_estimate(*, backend: str, instance_type: str, instance_count: int, max_runtime_seconds: int) -> tuple[Decimal, str]:
    """The most a run can cost: price per hour × instances × the maximum runtime, with the arithmetic spelled out."""
    from decimal import ROUND_CEILING

    hours = Decimal(max_runtime_seconds) / 3600
    cent = Decimal("0.01")
    if backend == "local":
        # A recipe may use every core (random forests, gradient boosting), so the most it can cost counts them all.
        cpus = settings.LOCAL_TRAINING_CPUS
        price = Decimal(str(settings.LOCAL_CPU_HOUR_PRICE))
        cost = (price * cpus * hours).quantize(cent, rounding=ROUND_CEILING)
        return cost, f"{cpus} CPU × {hours:.2f} h × ${price}/CPU-hour (local; actual cost is measured CPU time)"
    price = Decimal(str(settings.TRAINING_INSTANCE_PRICES[instance_type]))
    cost = (price * instance_count * hours).quantize(cent, rounding=ROUND_CEILING)
    return cost, f"{instance_count} × {instance_type} × {hours:.2f} h × ${price}/h (at most; SageMaker bills actual seconds)"


def run_log_tail(*, run: Run, lines: int = 200) -> list[str]:
    """The last lines of a run's log: live from the backend while it runs, from the object store after."""
    if run.log_key:
        with object_store().open(run.log_key) as handle:
            return handle.read().decode(errors="replace").splitlines()[-lines:]
    # While it runs, the poller keeps the tail here: pages never call the backend (or AWS) themselves.
    return list(run.log_tail or [])[-lines:]


def lineage_requeue_stale(*, older_than_seconds: int = 300) -> dict[str, int]:
    """Queue again any profile, registration or run still queued after a while (its message was lost).

    Each task claims its row with a conditional update, so a duplicate message does nothing.
    """
    from datetime import timedelta

    cutoff = timezone.now() - timedelta(seconds=older_than_seconds)
    profiles = list(abandoned(DatasetProfile.objects, queued_before={"version__created_at__lt": cutoff}).values_list("version_id", flat=True)[:500])
    registrations = list(abandoned(DatasetRegistration.objects, queued_before={"created_at__lt": cutoff}).values_list("pk", flat=True)[:500])
    runs = list(Run.objects.filter(status="queued", created_at__lt=cutoff).values_list("pk", flat=True)[:500])
    for version_id in profiles:
        _enqueue_profile(version_id)
    for registration_id in registrations:
        _enqueue_registration(registration_id)
    for run_id in runs:
        _enqueue_run(run_id)
    return {"profiles": len(profiles), "registrations": len(registrations), "runs": len(runs)}
