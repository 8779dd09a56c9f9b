"""The training backend interface: start a recipe as a job, describe it, stop it, read its logs and metrics."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from workers.errors import BackendError
from workers.recipes import Recipe

JobState = Literal["starting", "running", "succeeded", "failed", "stopping", "stopped"]
TERMINAL_STATES: frozenset[str] = frozenset({"succeeded", "failed", "stopped"})

# Labels a metric line may carry after its value: `metric: accuracy=0.95; step=3; time=1712345678.123`.
_LABEL = re.compile(r";\s*(step|fold|time)=([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)")
# What a recipe prints as it goes: `progress: 3/5 folds` (done/total, then what is counted).
_PROGRESS = re.compile(r"progress:\s*([0-9]+)\s*/\s*([0-9]+)\s*(.*?)\s*$")


class JobNotFound(BackendError):
    """The backend knows no job with that id."""

    def __init__(self, message: str) -> None:
        super().__init__(message, permanent=True)


@dataclass(frozen=True)
class InputFile:
    """A file the backend places in a channel's directory under `filename`."""

    channel: str
    path: Path
    filename: str


@dataclass(frozen=True)
class JobSpec:
    """Everything a backend needs to run one recipe once."""

    run_id: str
    recipe: Recipe
    hyperparameters: dict[str, Any]
    inputs: list[InputFile]
    work_dir: Path
    instance_type: str = "local"
    max_runtime_seconds: int = 3600
    tags: dict[str, str] = field(default_factory=dict)
    # Instances the job runs on (SageMaker's InstanceCount); the local backend always runs one process.
    instance_count: int = 1


@dataclass(frozen=True)
class JobStatus:
    """A job as the backend sees it now; `metrics` maps a name to its points in log order.

    `model_uri` and `output_uri` say where the outputs are whatever the backend: a local directory's file:// URI
    (filled in from `model_dir`/`output_dir` when not given) or an S3 object (SageMaker's model.tar.gz and
    output.tar.gz). `secondary_status` is the backend's finer-grained status, when it has one.
    """

    state: JobState
    message: str
    metrics: dict[str, list[dict[str, Any]]]
    model_dir: Path | None
    output_dir: Path | None
    usage: dict[str, float | None]
    model_uri: str | None = None
    output_uri: str | None = None
    secondary_status: str = ""

    def __post_init__(self) -> None:
        # Frozen, so the derived defaults are set the way dataclasses set fields.
        if self.model_uri is None and self.model_dir is not None:
            object.__setattr__(self, "model_uri", Path(self.model_dir).resolve().as_uri())
        if self.output_uri is None and self.output_dir is not None:
            object.__setattr__(self, "output_uri", Path(self.output_dir).resolve().as_uri())

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL_STATES


@dataclass(frozen=True)
class Progress:
    """How far a job has got, as its recipe last said: `done` of `total` `unit` (e.g. 3 of 5 folds)."""

    done: int
    total: int
    unit: str

    @property
    def fraction(self) -> float:
        return min(1.0, self.done / self.total) if self.total > 0 else 0.0


@dataclass(frozen=True)
class LogChunk:
    """What a job logged since the cursor it was read from.

    `cursor` is opaque and JSON-serialisable: the caller keeps it and passes it back to read only what follows
    (a byte offset locally; each CloudWatch stream's nextForwardToken on SageMaker). `metrics` are the points the
    recipe's metric definitions find in these lines only; `progress` is the last progress line among them.
    """

    lines: list[str]
    cursor: dict[str, Any]
    metrics: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    progress: Progress | None = None


@runtime_checkable
class TrainingBackend(Protocol):
    """Runs recipes under the SageMaker script-mode contract; any worker process may describe or stop any job."""

    def start(self, spec: JobSpec) -> str:
        """Start the job and return its id; starting the same run again returns the same id."""
        ...

    def job_id_for(self, spec: JobSpec) -> str:
        """The id `start(spec)` gives (or gave) its job, known before the job exists: derived from the run and its
        work dir, so a job whose start was lost half-way can still be found and stopped."""
        ...

    def describe(self, job_id: str) -> JobStatus:
        """The job's state, failure message, output locations and measured usage; never reads the logs.

        `metrics` holds only what the backend itself keeps (SageMaker's FinalMetricDataList); the series come from
        `read_log`, so each poll reads each log line once.
        """
        ...

    def stop(self, job_id: str) -> None:
        """Stop the job (no-op once it has finished)."""
        ...

    def read_log(
        self, job_id: str, *, cursor: Mapping[str, Any] | None, metric_definitions: Sequence[Mapping[str, str]]
    ) -> LogChunk:
        """The log lines written since `cursor` (None: from the start), with the metrics and progress in them."""
        ...


def parse_metrics(
    lines: Iterable[str],
    metric_definitions: Sequence[Mapping[str, str]],
    *,
    default_time: float | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """Metric points found by the recipe's MetricDefinitions regexes (the ones SageMaker applies to the same lines).

    The value is the regex's first group; `step`, `fold` and `time` come from the line's labels when present.
    """
    patterns = [(definition["Name"], re.compile(definition["Regex"])) for definition in metric_definitions]
    series: dict[str, list[dict[str, Any]]] = {}
    for line in lines:
        if "metric:" not in line:
            continue
        labels = {name: value for name, value in _LABEL.findall(line)}
        for name, pattern in patterns:
            match = pattern.search(line)
            if match is None:
                continue
            point: dict[str, Any] = {"value": float(match.group(1))}
            for label in ("step", "fold"):
                if label in labels:
                    point[label] = int(float(labels[label]))
            point["time"] = float(labels["time"]) if "time" in labels else default_time
            series.setdefault(name, []).append(point)
    return series


def parse_progress(lines: Iterable[str]) -> Progress | None:
    """The last `progress: done/total unit` line among `lines`, if any."""
    found = None
    for line in lines:
        if "progress:" not in line:
            continue
        match = _PROGRESS.search(line)
        if match is not None:
            found = Progress(done=int(match.group(1)), total=int(match.group(2)), unit=match.group(3))
    return found


def encode_hyperparameters(values: Mapping[str, Any]) -> dict[str, str]:
    """Hyperparameters as SageMaker carries them: every value JSON-encoded, strings too, as the SageMaker Python SDK
    sends them (`json.dumps` each value), because the training toolkit `json.loads` every value it receives.

    A string sent raw would change type in the container: a column named `1e3` would arrive as 1000.0, "true" as
    True. Unset values (None) are left out, so the recipe falls back to its default.
    """
    return {name: json.dumps(value) for name, value in values.items() if value is not None}
