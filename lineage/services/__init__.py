"""Writes and transitions of the lineage app, one module per noun.

- datasets: dataset versions (uploads, the version for a set of bytes) · registrations: data that lives elsewhere ·
  profiles: the profile of a version · edges: lineage edges
- runs: the run transition table; launch, stop, reproduce · run_execution: start, poll, finish (worker side) ·
  sweeps: the periodic jobs · registry: model versions (what approvals and deployments call) · costs: measured cost

Callers import the module they need (`from lineage.services import runs`); the names below are the public surface.
"""

from lineage.services.datasets import (
    dataset_target,
    dataset_version_change_refused,
    dataset_version_upload,
    version_local_files,
)
from lineage.services.edges import lineage_link
from lineage.services.profiles import dataset_profile_fail, dataset_profile_run
from lineage.services.registrations import (
    dataset_registration_fail,
    dataset_registration_request,
    dataset_registration_run,
)
from lineage.services.registry import model_version_artifact_sha256, model_version_register
from lineage.services.run_execution import run_fail, run_poll, run_start, run_stop_job
from lineage.services.runs import (
    IllegalTransition,
    run_reproduce,
    run_stop,
    run_transition,
    training_run_launch,
    transform_run_launch,
    work_dir_for,
)
from lineage.services.sweeps import lineage_requeue_stale, runs_poll_stale

__all__ = [
    "model_version_artifact_sha256",
    "IllegalTransition",
    "dataset_profile_fail",
    "dataset_profile_run",
    "dataset_registration_fail",
    "dataset_registration_request",
    "dataset_registration_run",
    "dataset_target",
    "dataset_version_change_refused",
    "dataset_version_upload",
    "lineage_link",
    "lineage_requeue_stale",
    "model_version_register",
    "run_fail",
    "run_poll",
    "run_reproduce",
    "run_start",
    "run_stop",
    "run_stop_job",
    "run_transition",
    "runs_poll_stale",
    "training_run_launch",
    "transform_run_launch",
    "version_local_files",
    "work_dir_for",
]
