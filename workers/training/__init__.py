"""Training backends: run a recipe as a job under the SageMaker script-mode contract, locally or on SageMaker."""

from __future__ import annotations

from workers.training.base import (
    TERMINAL_STATES,
    InputFile,
    JobNotFound,
    JobSpec,
    JobState,
    JobStatus,
    TrainingBackend,
    encode_hyperparameters,
    parse_metrics,
)
from workers.training.local import LocalTrainingBackend

__all__ = [
    "TERMINAL_STATES",
    "InputFile",
    "JobNotFound",
    "JobSpec",
    "JobState",
    "JobStatus",
    "LocalTrainingBackend",
    "TrainingBackend",
    "encode_hyperparameters",
    "parse_metrics",
]
