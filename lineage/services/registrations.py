"""Registering data that lives elsewhere (s3:// objects and prefixes, file:// files and folders), in a worker."""

from __future__ import annotations

import io
import logging
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from controlplane import permissions
from controlplane.backends import object_store
from controlplane.models import Project
from controlplane.transitions import StateMachine, transitions
from lineage import tasks
from lineage.models import (
    DatasetRegistration,
    DatasetVersion,
)
from lineage.services.datasets import (
    FORMAT_SUFFIX,
    DatasetTarget,
    dataset_target,
    dataset_version_create,
    dataset_version_from_file,
    throttled_progress,
)
from workers import datasets as dataset_files
from workers import sources

log = logging.getLogger(__name__)


def dataset_registration_request(
    *,
    actor: Any,
    project: str | Project,
    dataset: str,
    uri: str,
    description: str = "",
    missing_values: Any = None,
) -> DatasetRegistration:
    """Queue the registration of an s3:// object or prefix, or a file:// file or folder under an allowed root."""
    permissions.require(actor, "dataset.register")
    target = dataset_target(project=project, dataset=dataset, description=description, missing_values=missing_values)
    permissions.require(actor, "dataset.register", project=target.project)
    uri = (uri or "").strip()
    try:
        sources.check_source_uri(uri, allowed_roots=settings.DATASET_FILE_ROOTS)
    except sources.SourceError as exc:
        raise ValidationError({"uri": [str(exc)]}) from None
    if uri.startswith("s3://") and settings.CONTROLPLANE_BACKEND != "aws" and not settings.AWS_ENDPOINT_URL:
        raise ValidationError({"uri": ["s3:// locations need CONTROLPLANE_BACKEND=aws (or AWS_ENDPOINT_URL)"]})
    with transaction.atomic():
        registration = DatasetRegistration.objects.create(
            project=target.project,
            dataset_slug=target.slug,
            dataset_name=target.name,
            description=description.strip(),
            source_uri=uri,
            created_by=actor,
            missing_values=list(target.missing_values),
            enqueued_at=timezone.now(),
        )
        transaction.on_commit(lambda: enqueue_registration(registration.pk), robust=True)
    return registration


def enqueue_registration(registration_id: int) -> None:
    DatasetRegistration.objects.filter(pk=registration_id).update(enqueued_at=timezone.now())
    tasks.dataset_registration_task.delay(registration_id)


REGISTRATION_MACHINE = StateMachine(
    model=DatasetRegistration,
    table=transitions(
        {
            "run": ({"queued"}, "running"),
            "succeed": ({"running"}, "succeeded"),
            "fail": ({"queued", "running"}, "failed"),
        }
    ),
    terminal=frozenset({"succeeded", "failed"}),
    timestamps={"running": "started_at"},
)


def dataset_registration_run(*, registration_id: int) -> DatasetRegistration | None:
    """Worker side: read the location, validate it, store it write-once, make (or find) the version. Claimed by one
    worker; a duplicate message returns quietly."""
    attempt = REGISTRATION_MACHINE.claim(registration_id, "run")
    if attempt is None:
        log.info("registration %s: another worker got there first", registration_id)
        return None
    registration = DatasetRegistration.objects.select_related("project", "created_by").get(pk=registration_id)

    def progress(fraction: float) -> None:
        DatasetRegistration.objects.filter(pk=registration_id, attempt=attempt).update(progress=round(fraction, 3))

    try:
        version, created = _register_source(registration, throttled_progress(progress))
    except (sources.SourceError, dataset_files.DatasetFileError) as exc:
        REGISTRATION_MACHINE.apply(
            registration_id, "fail", attempt=attempt, quiet=True, reason=str(exc), error=str(exc)
        )
    except BaseException:
        REGISTRATION_MACHINE.release(
            registration_id, attempt
        )  # an infrastructure error: the task retries and takes it again at once
        raise
    else:
        REGISTRATION_MACHINE.apply(
            registration_id,
            "succeed",
            attempt=attempt,
            quiet=True,
            version=version,
            created_new_version=created,
            progress=1.0,
        )
    return DatasetRegistration.objects.get(pk=registration_id)


def dataset_registration_fail(*, registration_id: int, error: str) -> None:
    """The task gave up on the registration (an unexpected error): fail it unless it has an outcome already."""
    REGISTRATION_MACHINE.apply(registration_id, "fail", quiet=True, reason=error, error=error)


def _register_source(
    registration: DatasetRegistration, progress: Callable[[float], None]
) -> tuple[DatasetVersion, bool]:
    uri = registration.source_uri
    target = DatasetTarget(
        project=registration.project,
        slug=registration.dataset_slug,
        name=registration.dataset_name,
        description=registration.description,
        missing_values=tuple(registration.missing_values or [""]),
    )
    roots = settings.DATASET_FILE_ROOTS
    with tempfile.TemporaryDirectory(prefix="register-", dir=settings.FILE_UPLOAD_TEMP_DIR) as tmp:
        if uri.startswith("s3://") and not sources.is_prefix(uri):
            snapshot: sources.SingleObject | sources.Manifest = sources.snapshot_s3_object(
                uri,
                Path(tmp) / "object",
                region=settings.AWS_REGION,
                progress=progress,
                max_bytes=settings.DATASET_MAX_UPLOAD_BYTES,
            )
        elif uri.startswith("s3://"):
            snapshot = sources.snapshot_s3_prefix(uri, region=settings.AWS_REGION)
        else:
            snapshot = sources.snapshot_local(uri, allowed_roots=roots)
        if isinstance(snapshot, sources.SingleObject):
            return dataset_version_from_file(
                actor=registration.created_by,
                target=target,
                path=snapshot.path,
                filename=uri.rsplit("/", 1)[-1],
                source=DatasetVersion.Source.S3 if uri.startswith("s3://") else DatasetVersion.Source.FILE,
                source_uri=uri,
                source_etag=snapshot.etag,
                source_version_id=snapshot.version_id,
            )
        # A manifest: check the first object's format now so a folder of junk fails at registration.
        first = snapshot.entries[0]
        first_path = sources.fetch_manifest_entry(
            snapshot, first, Path(tmp) / "first", allowed_roots=roots, region=settings.AWS_REGION
        )
        with first_path.open("rb") as handle:
            head = handle.read(8)
        content_format = dataset_files.detect_format(first.key, head)
        summary = dataset_files.validate_file(first_path, format=content_format)

        stored = object_store().put_content_addressed(
            io.BytesIO(snapshot.to_bytes()), prefix="datasets/manifests/", suffix=FORMAT_SUFFIX["manifest"]
        )
        progress(1.0)
        return dataset_version_create(
            actor=registration.created_by,
            target=target,
            stored_key=stored.key,
            stored_uri=stored.uri,
            sha256=stored.sha256,
            size=snapshot.total_size,
            format=DatasetVersion.Format.MANIFEST,
            content_format=content_format,
            compressed=summary.compressed,
            columns=summary.columns,
            row_count=None,
            source=DatasetVersion.Source.S3 if uri.startswith("s3://") else DatasetVersion.Source.FILE,
            source_uri=uri,
            object_count=len(snapshot.entries),
        )
