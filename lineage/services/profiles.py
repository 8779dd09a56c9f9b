"""Profiling a dataset version once, in a worker: the profile is the drift baseline."""

from __future__ import annotations

import logging

from django.utils import timezone

from controlplane.claims import claim
from lineage.models import (
    DatasetProfile,
    DatasetVersion,
)
from lineage.services.datasets import (
    throttled_progress,
    version_local_files,
)
from workers import datasets as dataset_files
from workers import sources

log = logging.getLogger(__name__)


def dataset_profile_run(*, version_id: int) -> DatasetProfile | None:
    """Worker side: profile a version once. Claimed with a conditional update; a redelivery does nothing."""
    if not claim(DatasetProfile.objects.filter(version_id=version_id), progress=0.0):
        return None
    version = DatasetVersion.objects.get(pk=version_id)

    def progress(fraction: float) -> None:
        DatasetProfile.objects.filter(version_id=version_id).update(progress=round(min(fraction, 1.0), 3))

    try:
        with version_local_files(version) as paths:
            profile = dataset_files.profile_files(paths, format=version.content_format, progress=throttled_progress(progress))
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

