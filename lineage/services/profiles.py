"""Profiling a dataset version once, in a worker: the profile is the drift baseline."""

from __future__ import annotations

import logging

from controlplane.transitions import StateMachine, transitions
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


PROFILE_MACHINE = StateMachine(
    model=DatasetProfile,
    table=transitions(
        {
            "run": ({"queued"}, "running"),
            "ready": ({"running"}, "ready"),
            "fail": ({"queued", "running"}, "failed"),
        }
    ),
    terminal=frozenset({"ready", "failed"}),
    timestamps={"running": "started_at"},
)


def dataset_profile_run(*, version_id: int) -> DatasetProfile | None:
    """Worker side: profile a version once. Claimed by one worker (a duplicate message returns quietly); a worker
    whose lease expired cannot overwrite the outcome of the one that took over."""
    attempt = PROFILE_MACHINE.claim(version_id, "run", progress=0.0)
    if attempt is None:
        log.info("profile of version %s: another worker got there first", version_id)
        return None
    version = DatasetVersion.objects.get(pk=version_id)

    def progress(fraction: float) -> None:
        DatasetProfile.objects.filter(version_id=version_id, attempt=attempt).update(
            progress=round(min(fraction, 1.0), 3)
        )

    try:
        with version_local_files(version) as paths:
            profile = dataset_files.profile_files(
                paths,
                format=version.content_format,
                progress=throttled_progress(progress),
                missing_values=tuple(version.missing_values or [""]),
            )
    except (sources.SourceError, dataset_files.DatasetFileError) as exc:
        PROFILE_MACHINE.apply(version_id, "fail", attempt=attempt, quiet=True, reason=str(exc), error=str(exc))
    except BaseException:
        PROFILE_MACHINE.release(
            version_id, attempt
        )  # an infrastructure error: the task retries and takes it again at once
        raise
    else:
        PROFILE_MACHINE.apply(version_id, "ready", attempt=attempt, quiet=True, profile=profile, progress=1.0)
    return DatasetProfile.objects.get(version_id=version_id)


def dataset_profile_fail(*, version_id: int, error: str) -> None:
    """The task gave up on the profile (an unexpected error): fail it unless it has an outcome already."""
    PROFILE_MACHINE.apply(version_id, "fail", quiet=True, reason=error, error=error)
