"""Datasets and their write-once versions: uploads, the version for a set of bytes, local copies of a version."""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import UploadedFile
from django.db import IntegrityError, transaction
from django.db.models import Max
from django.utils import timezone
from django.utils.text import slugify

from controlplane import permissions
from controlplane.backends import object_store
from controlplane.models import Project
from controlplane.services import SLUG_RE, audit_record
from lineage import tasks
from lineage.models import (
    Dataset,
    DatasetProfile,
    DatasetVersion,
    Run,
    WriteOnceError,
)
from lineage.services.edges import lineage_link
from workers import datasets as dataset_files
from workers import sources

log = logging.getLogger(__name__)


FORMAT_SUFFIX = {"csv": ".csv", "parquet": ".parquet", "jsonl": ".jsonl", "manifest": ".manifest.json"}


def to_slug(text: str, *, max_length: int = 63) -> str:
    """A name as a slug (lowercase letters, digits, hyphens): recipe names like clean_missing included."""
    return slugify(text).replace("_", "-")[:max_length].strip("-")


@dataclass(frozen=True)
class DatasetTarget:
    """Which dataset a new version goes to; the dataset itself is created with its first version."""

    project: Project
    slug: str
    name: str
    description: str
    # The strings that mean "no value" in this data: empty fields only, unless the user names others (e.g. NA).
    missing_values: tuple[str, ...] = ("",)


MAX_MISSING_VALUES = 20


def parse_missing_values(value: Any) -> tuple[str, ...]:
    """The user's missing-value markers (a comma-separated text or a list of strings), always with the empty field.

    Raises ValidationError naming the field. Nothing is missing by guesswork: `NA` is Namibia unless the user says.
    """
    if value is None or value == "":
        return ("",)
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not all(isinstance(item, str) for item in items):
        raise ValidationError({"missing_values": ["expected text markers, e.g. NA, n/a (comma-separated)"]})
    markers = [""]
    for item in (item.strip() for item in items):
        if any(ch in item for ch in '\r\n"') or len(item) > 32:
            raise ValidationError(
                {"missing_values": [f"{item[:40]!r}: expected at most 32 characters, no quotes or line breaks"]}
            )
        if item not in markers:
            markers.append(item)
    if len(markers) > MAX_MISSING_VALUES + 1:
        raise ValidationError({"missing_values": [f"expected at most {MAX_MISSING_VALUES} markers"]})
    return tuple(markers)


def describe_missing_values(markers: Any) -> str:
    names = [m for m in (markers or [""]) if m]
    return "empty fields" + (" and " + ", ".join(repr(m) for m in names) if names else " only")


def dataset_target(
    *, project: str | Project, dataset: str, description: str = "", missing_values: Any = None
) -> DatasetTarget:
    """Check the project, dataset name and missing-value markers before anything is read or stored."""
    errors: dict[str, list[str]] = {}
    try:
        markers = parse_missing_values(missing_values)
    except ValidationError as exc:
        errors.update(exc.message_dict)
        markers = ("",)
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
    return DatasetTarget(
        project=project_obj,
        slug=slug,
        name=existing.name if existing else name,
        description=description,
        missing_values=markers,
    )


def _dataset_for(target: DatasetTarget, actor: Any) -> Dataset:
    dataset, created = Dataset.objects.get_or_create(
        project=target.project,
        slug=target.slug,
        defaults={"name": target.name, "description": target.description.strip(), "created_by": actor},
    )
    if created:
        audit_record(
            actor=actor,
            action="dataset.create",
            object_type="dataset",
            object_id=str(dataset),
            object_repr=dataset.name,
            after={"project": target.project.slug, "slug": dataset.slug, "name": dataset.name},
            project=target.project,
        )
    return dataset


def dataset_version_create(
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
                    if list(existing.missing_values) != list(target.missing_values):
                        # The same bytes are the same version: it is never re-read differently behind the user's back.
                        raise ValidationError(
                            {
                                "missing_values": [
                                    f"these bytes are already {existing}, read with missing values: "
                                    f"{describe_missing_values(existing.missing_values)}; "
                                    "register them with that setting"
                                ]
                            }
                        )
                    return existing, False
                number = (dataset.versions.aggregate(top=Max("number"))["top"] or 0) + 1
                version = DatasetVersion.objects.create(
                    dataset=dataset,
                    number=number,
                    sha256=sha256,
                    uri=stored_uri,
                    storage_key=stored_key,
                    size=size,
                    format=format,
                    content_format=content_format,
                    compressed=compressed,
                    columns=columns,
                    row_count=row_count,
                    object_count=object_count,
                    source=source,
                    source_uri=source_uri,
                    source_etag=source_etag,
                    source_version_id=source_version_id,
                    original_filename=original_filename[:255],
                    produced_by=produced_by,
                    created_by=actor,
                    missing_values=list(target.missing_values),
                )
                DatasetProfile.objects.create(version=version)
                if produced_by is not None:
                    lineage_link(source=produced_by.node_id, target=version.node_id)
                audit_record(
                    actor=actor,
                    action="dataset_version.create",
                    object_type="dataset_version",
                    object_id=version.pk,
                    object_repr=str(version),
                    after={
                        "sha256": sha256,
                        "uri": stored_uri,
                        "size": size,
                        "format": format,
                        "source": source,
                        "source_uri": source_uri,
                        "rows": row_count,
                        "missing_values": list(target.missing_values),
                    },
                    project=target.project,
                )
                transaction.on_commit(lambda pk=version.pk: enqueue_profile(pk), robust=True)
                return version, True
        except IntegrityError:
            # Two registrations of the same dataset raced for a number or the same bytes: look again.
            if attempt == 4:
                raise
            time.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")


def enqueue_profile(version_id: int) -> None:
    DatasetProfile.objects.filter(pk=version_id).update(enqueued_at=timezone.now())
    tasks.dataset_profile_task.delay(version_id)


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
    *,
    actor: Any,
    project: str | Project,
    dataset: str,
    upload: UploadedFile,
    description: str = "",
    missing_values: Any = None,
) -> tuple[DatasetVersion, bool]:
    """Validate an uploaded CSV/Parquet/JSON Lines file and store it write-once. Bad files store nothing."""
    permissions.require(actor, "dataset.register")
    target = dataset_target(project=project, dataset=dataset, description=description, missing_values=missing_values)
    permissions.require(actor, "dataset.register", project=target.project)
    with _local_copy(upload) as path:
        try:
            return dataset_version_from_file(
                actor=actor,
                target=target,
                path=path,
                filename=upload.name or "upload",
                source=DatasetVersion.Source.UPLOAD,
                original_filename=upload.name or "",
            )
        except dataset_files.DatasetFileError as exc:
            raise ValidationError({"file": [str(exc)]}) from None


def dataset_version_from_file(
    *, actor: Any, target: DatasetTarget, path: Path, filename: str, source: str, **provenance: Any
) -> tuple[DatasetVersion, bool]:
    """One data file (uploaded or fetched from its location): validated, stored write-once, made (or found) a
    version. A bad file raises DatasetFileError and stores nothing."""
    file_format, summary, stored = validate_and_store(path, filename)
    return dataset_version_create(
        actor=actor,
        target=target,
        stored_key=stored.key,
        stored_uri=stored.uri,
        sha256=stored.sha256,
        size=stored.size,
        format=file_format,
        content_format=file_format,
        compressed=summary.compressed,
        columns=summary.columns,
        row_count=summary.row_count,
        source=source,
        **provenance,
    )


def validate_and_store(path: Path, filename: str) -> tuple[str, Any, Any]:
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
            actor=actor,
            action="dataset_version.change_refused",
            object_type="dataset_version",
            object_id=version.pk,
            object_repr=str(version),
            after={"attempted": attempted},
            reason="dataset versions are write-once",
            project=version.dataset.project,
        )
    raise WriteOnceError("dataset versions are write-once: register the changed data as a new version")


def throttled_progress(update: Callable[[float], None], every: float = 0.5) -> Callable[[float], None]:
    last = [0.0]

    def report(fraction: float) -> None:
        now = time.monotonic()
        if fraction >= 1.0 or now - last[0] >= every:
            last[0] = now
            update(fraction)

    return report


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
            paths.append(
                sources.fetch_manifest_entry(
                    manifest, entry, dest, allowed_roots=settings.DATASET_FILE_ROOTS, region=settings.AWS_REGION
                )
            )
        yield paths
