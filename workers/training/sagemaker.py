"""The SageMaker training backend: each job is a SageMaker training job running the recipe in the AWS scikit-learn
framework container under the same script-mode contract the local backend follows.

The recipe script and SUPPORT_FILES go up as a source archive and the inputs as objects under the run's prefix in
the bucket; the job is polled with DescribeTrainingJob and its logs (and so its metrics) read on from a cursor in
CloudWatch Logs.
SageMaker keeps all state, so any worker process can describe or stop a job another one started.

    s3://<bucket>/<prefix>/runs/<run_id>/source/sourcedir.tar.gz
    s3://<bucket>/<prefix>/runs/<run_id>/input/<channel>/<filename>
    s3://<bucket>/<prefix>/runs/<run_id>/output/<job name>/output/model.tar.gz   (SM_MODEL_DIR, written by SageMaker)
    s3://<bucket>/<prefix>/runs/<run_id>/output/<job name>/output/output.tar.gz  (SM_OUTPUT_DATA_DIR)
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import re
import tarfile
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from boto3.exceptions import S3UploadFailedError
from botocore.client import BaseClient
from botocore.exceptions import ClientError

from workers.archives import extract_model_tar
from workers.aws import aws_client, aws_errors, translate_client_error
from workers.errors import BackendError, ConfigError
from workers.recipes import SUPPORT_FILES, Recipe, validate_parameters
from workers.training.base import (
    JobNotFound,
    JobSpec,
    JobState,
    JobStatus,
    LogChunk,
    encode_hyperparameters,
    parse_metrics,
    parse_progress,
)
from workers.training.images import sklearn_image_uri

logger = logging.getLogger(__name__)

LOG_GROUP = "/aws/sagemaker/TrainingJobs"
SOURCE_ARCHIVE = "sourcedir.tar.gz"
# GetLogEvents pages (each up to 10,000 events or 1 MB) one read_log call reads across all of a job's streams.
LOG_PAGES_PER_READ = 10
# What the script-mode toolkit logs at (Python's logging.INFO).
CONTAINER_LOG_LEVEL = logging.INFO
# SageMaker's limits on CreateTrainingJob's HyperParameters map.
MAX_HYPERPARAMETERS = 100
MAX_HYPERPARAMETER_CHARS = 2500

# TrainingJobName: ^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}
MAX_JOB_NAME_CHARS = 63
_JOB_NAME = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}")
_JOB_NAME_PREFIX = "cp-"
_HASH_CHARS = 8
# Run ids become part of S3 keys, so they stay within one path segment.
_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
# SageMaker's InProgress secondary statuses before the script runs (the last three are no longer reported).
_STARTING_STATUSES = frozenset(
    {
        "Starting",
        "Pending",
        "Downloading",
        "Restarting",
        "LaunchingMLInstances",
        "PreparingTrainingStack",
        "PreparingTraining",
        "DownloadingTrainingImage",
    }
)
_FINISHED_STATUSES = frozenset({"Completed", "Failed", "Stopped"})
# A log stream is named `<job name>/<host>-<epoch seconds>`, e.g. `cp-7-1a2b3c4d/algo-1-1712345678`.
_STREAM_HOST = re.compile(r"(.+)-[0-9]+")


class SageMakerTrainingBackend:
    """Runs jobs as SageMaker training jobs; the job id is the training job's name."""

    def __init__(
        self,
        *,
        bucket: str,
        prefix: str,
        role_arn: str,
        region: str,
        image_uri: str | None = None,
        volume_size_gb: int = 30,
        log_pages_per_read: int = LOG_PAGES_PER_READ,
        sagemaker_client: BaseClient | None = None,
        s3_client: BaseClient | None = None,
        logs_client: BaseClient | None = None,
    ) -> None:
        if not bucket:
            raise ConfigError("the SageMaker training backend needs a bucket (OBJECT_STORE_URL s3://bucket/prefix)")
        if not role_arn:
            raise ConfigError("the SageMaker training backend needs an execution role ARN (SAGEMAKER_ROLE_ARN)")
        if not region:
            raise ConfigError("the SageMaker training backend needs a region (AWS_REGION)")
        if volume_size_gb < 1:
            raise ConfigError(f"volume_size_gb must be a whole number of GB of at least 1, not {volume_size_gb}")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.role_arn = role_arn
        self.region = region
        self.image_uri = image_uri or sklearn_image_uri(region)
        self.volume_size_gb = volume_size_gb
        if log_pages_per_read < 1:
            raise ConfigError(f"log_pages_per_read must be at least 1, not {log_pages_per_read}")
        self.log_pages_per_read = log_pages_per_read
        self.sagemaker = sagemaker_client or aws_client("sagemaker", region=region)
        self.s3 = s3_client or aws_client("s3", region=region)
        self.logs_client = logs_client or aws_client("logs", region=region)

    # --- the TrainingBackend interface ----------------------------------------------------------------------------

    def job_id_for(self, spec: JobSpec) -> str:
        """The training job's name, derived from the run and its work dir, so it is known before the job exists."""
        return training_job_name(spec.run_id, spec.work_dir)

    def start(self, spec: JobSpec) -> str:
        """Upload the source and inputs and create the training job; the same spec started again returns the same
        job without creating another."""
        hyperparameters = self._check_spec(spec)
        job_name = training_job_name(spec.run_id, spec.work_dir)
        run_prefix = self._key(f"runs/{spec.run_id}")
        source_uri = self._uri(f"{run_prefix}/source/{SOURCE_ARCHIVE}")
        # The script-mode keys, JSON-encoded like the recipe's own values, exactly as the SageMaker Python SDK sends
        # them.
        hyperparameters.update(
            encode_hyperparameters(
                {
                    "sagemaker_program": spec.recipe.script.name,
                    "sagemaker_submit_directory": source_uri,
                    "sagemaker_region": self.region,
                    "sagemaker_container_log_level": CONTAINER_LOG_LEVEL,
                }
            )
        )
        existing = self._find_job(job_name)
        if existing is not None:
            _check_same_job(existing, job_name, spec.run_id, hyperparameters)
            return job_name

        with tempfile.TemporaryDirectory(prefix="cp-source-") as scratch:
            archive = Path(scratch) / SOURCE_ARCHIVE
            build_source_archive(spec.recipe, archive)
            self._upload(archive, f"{run_prefix}/source/{SOURCE_ARCHIVE}")
        for item in spec.inputs:
            self._upload(item.path, f"{run_prefix}/input/{item.channel}/{item.filename}")

        channels = [channel for channel in spec.recipe.channels if any(i.channel == channel for i in spec.inputs)]
        request: dict[str, Any] = {
            "TrainingJobName": job_name,
            "RoleArn": self.role_arn,
            "AlgorithmSpecification": {
                "TrainingImage": self.image_uri,
                "TrainingInputMode": "File",
            },
            "HyperParameters": hyperparameters,
            "OutputDataConfig": {"S3OutputPath": self._uri(f"{run_prefix}/output")},
            "ResourceConfig": {
                "InstanceType": spec.instance_type,
                "InstanceCount": spec.instance_count,
                "VolumeSizeInGB": self.volume_size_gb,
            },
            "StoppingCondition": {"MaxRuntimeInSeconds": spec.max_runtime_seconds},
        }
        if spec.recipe.metric_definitions:
            request["AlgorithmSpecification"]["MetricDefinitions"] = [
                {"Name": d["Name"], "Regex": d["Regex"]} for d in spec.recipe.metric_definitions
            ]
        if channels:
            request["InputDataConfig"] = [
                {
                    "ChannelName": channel,
                    "DataSource": {
                        "S3DataSource": {
                            "S3DataType": "S3Prefix",
                            # The trailing slash keeps channel `train` from also taking `train2/`'s objects.
                            "S3Uri": self._uri(f"{run_prefix}/input/{channel}/"),
                            "S3DataDistributionType": "FullyReplicated",
                        }
                    },
                    "InputMode": "File",
                }
                for channel in channels
            ]
        if spec.tags:
            request["Tags"] = [{"Key": key, "Value": value} for key, value in sorted(spec.tags.items())]

        with aws_errors(f"create SageMaker training job {job_name} for run {spec.run_id}"):
            try:
                self.sagemaker.create_training_job(**request)
            except ClientError as exc:
                # Another worker created it between our look-up and now: that job is this run's job.
                if _error_code(exc) != "ResourceInUse":
                    raise
        return job_name

    def describe(self, job_id: str) -> JobStatus:
        """The job's state from DescribeTrainingJob; `metrics` are SageMaker's FinalMetricDataList only (the series
        come from read_log, so no poll reads the logs twice)."""
        description = self._describe_job(job_id)
        state, message = job_state(description)
        secondary = str(description.get("SecondaryStatus") or "")
        metrics = _final_metrics(description.get("FinalMetricDataList") or [])
        model_uri = output_uri = None
        if state == "succeeded":
            model_uri = description.get("ModelArtifacts", {}).get("S3ModelArtifacts")
            output_path = str(description.get("OutputDataConfig", {}).get("S3OutputPath", "")).rstrip("/")
            if output_path:
                output_uri = f"{output_path}/{job_id}/output/output.tar.gz"
        return JobStatus(
            state=state,
            message=message,
            metrics=metrics,
            model_dir=None,
            output_dir=None,
            usage=_usage(description),
            model_uri=model_uri,
            output_uri=output_uri,
            secondary_status=secondary,
        )

    def stop(self, job_id: str) -> None:
        """StopTrainingJob; a job that has already finished (or is stopping) is left as it is."""
        self._check_job_id(job_id)
        action = f"stop SageMaker training job {job_id}"
        with aws_errors(action):
            try:
                self.sagemaker.stop_training_job(TrainingJobName=job_id)
                return
            except ClientError as exc:
                if _is_not_found(exc):
                    raise JobNotFound(f"no SageMaker training job {job_id!r}") from exc
                if _error_code(exc) != "ValidationException":
                    raise
                refusal = exc
        # SageMaker refuses to stop a job that is not in progress; find out whether that is why.
        status = self._describe_job(job_id).get("TrainingJobStatus")
        if status in _FINISHED_STATUSES or status == "Stopping":
            return
        raise translate_client_error(refusal, action=action) from refusal

    def read_log(
        self, job_id: str, *, cursor: Mapping[str, Any] | None, metric_definitions: Sequence[Mapping[str, str]]
    ) -> LogChunk:
        """The lines the job's CloudWatch streams got since `cursor`, with the metrics and progress in them.

        The cursor keeps each stream's nextForwardToken, so every line is read once. At most `log_pages_per_read`
        GetLogEvents pages are read per call; when that budget runs out the cursor says `"more": True` and the next
        call goes on from there. Lines are in stream-name order, prefixed with their host when the job has several.
        """
        self._check_job_id(job_id)
        previous = dict((cursor or {}).get("streams") or {})
        last_times = dict((cursor or {}).get("last_event_ms") or {})
        streams = sorted(set(previous) | set(self._log_streams(job_id)))
        several = len(streams) > 1
        tokens = dict(previous)
        budget = self.log_pages_per_read
        more = False
        lines: list[str] = []
        metrics: dict[str, list[dict[str, Any]]] = {}
        for stream in streams:
            if budget <= 0:
                more = True
                break
            host = _host(stream, job_id)
            read = self._read_stream(stream, tokens.get(stream), last_times.get(stream), budget)
            budget -= read.pages
            more = more or not read.at_end
            if read.token is not None:
                tokens[stream] = read.token
            if read.last_ms is not None:
                last_times[stream] = read.last_ms
            for timestamp_ms, message in read.events:
                new_lines = [f"[{host}] {line}" if several else line for line in message.splitlines() or [""]]
                lines += new_lines
                if metric_definitions:
                    found = parse_metrics(new_lines, metric_definitions, default_time=timestamp_ms / 1000.0)
                    for name, points in found.items():
                        metrics.setdefault(name, []).extend(points)
        next_cursor: dict[str, Any] = {"streams": tokens, "last_event_ms": last_times, "more": more}
        return LogChunk(lines=lines, cursor=next_cursor, metrics=metrics, progress=parse_progress(lines))

    # --- artifacts ------------------------------------------------------------------------------------------------

    def download_artifact(self, uri: str, dest: Path) -> Path:
        """Stream the S3 object at `uri` (e.g. a job's model.tar.gz) to the file `dest`; returns `dest`."""
        bucket, key = parse_s3_uri(uri)
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        with aws_errors(f"download {uri}"):
            try:
                # Managed transfer: written to a temporary name beside `dest` and renamed when complete.
                self.s3.download_file(bucket, key, str(dest))
            except ClientError as exc:
                if _error_code(exc) in ("404", "NoSuchKey", "NotFound"):
                    raise BackendError(f"no object at {uri}", permanent=True) from exc
                raise
        return dest

    @staticmethod
    def extract_model_tar(path: Path, dest_dir: Path) -> Path:
        """The module's extract_model_tar, so callers holding the backend need nothing else."""
        return extract_model_tar(path, dest_dir)

    # --- helpers ---------------------------------------------------------------------------------------------------

    def _check_spec(self, spec: JobSpec) -> dict[str, str]:
        """The encoded hyperparameters (defaults filled in, as the local backend sends them), or a BackendError
        listing every problem."""
        recipe = spec.recipe
        problems = []
        if not _RUN_ID.fullmatch(spec.run_id):
            problems.append(
                f"run id {spec.run_id!r} must be 1-128 letters, digits, '.', '_' or '-' starting with a letter or digit"
            )
        cleaned, errors = validate_parameters(recipe, spec.hyperparameters)
        problems += [f"hyperparameter {name}: {message}" for name, message in errors.items()]
        names: set[tuple[str, str]] = set()
        for item in spec.inputs:
            if item.channel not in recipe.channels:
                problems.append(
                    f"input {item.filename!r}: recipe {recipe.name} has no channel {item.channel!r} "
                    f"(channels: {', '.join(recipe.channels) or 'none'})"
                )
            if not item.filename or "/" in item.filename or item.filename in (".", ".."):
                problems.append(f"input {item.filename!r}: the file name must be a single path segment")
            if (item.channel, item.filename) in names:
                problems.append(f"channel {item.channel!r} has two inputs named {item.filename!r}")
            names.add((item.channel, item.filename))
            if not Path(item.path).is_file():
                problems.append(f"input {item.filename!r}: {item.path} is not a file")
        given = {item.channel for item in spec.inputs}
        for channel in recipe.channels:
            if channel not in recipe.optional_channels and channel not in given:
                problems.append(f"channel {channel!r} needs at least one input file")
        if spec.max_runtime_seconds <= 0:
            problems.append("max_runtime_seconds must be a positive whole number of seconds")
        if not spec.instance_type.startswith("ml."):
            problems.append(f"instance type {spec.instance_type!r} is not a SageMaker instance type (e.g. ml.m5.large)")
        if spec.instance_count < 1:
            problems.append("instance_count must be at least 1")
        encoded = encode_hyperparameters(cleaned)
        for name, value in encoded.items():
            if len(value) > MAX_HYPERPARAMETER_CHARS:
                problems.append(
                    f"hyperparameter {name}: SageMaker takes at most {MAX_HYPERPARAMETER_CHARS} characters per value "
                    f"and this one has {len(value)}"
                )
        if len(encoded) + 4 > MAX_HYPERPARAMETERS:
            problems.append(f"SageMaker takes at most {MAX_HYPERPARAMETERS - 4} hyperparameters besides its own")
        if problems:
            raise BackendError(f"cannot start run {spec.run_id}: " + "; ".join(problems), permanent=True)
        return encoded

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def _upload(self, path: Path, key: str) -> None:
        action = f"upload {path} to {self._uri(key)}"
        try:
            with aws_errors(action):
                # Managed transfer: streamed from disk, multipart when large.
                self.s3.upload_file(str(path), self.bucket, key)
        except S3UploadFailedError as exc:
            # boto3 wraps the S3 error response; it is the exception being handled when it raises.
            cause = exc.__context__
            if isinstance(cause, ClientError):
                raise translate_client_error(cause, action=action) from exc
            raise BackendError(f"Could not {action}: {exc}", permanent=False) from exc
        except OSError as exc:
            raise BackendError(f"Could not {action}: {exc}", permanent=True) from exc

    def _check_job_id(self, job_id: str) -> None:
        if not _JOB_NAME.fullmatch(job_id):
            raise JobNotFound(f"no SageMaker training job {job_id!r} (not a training job name)")

    def _describe_job(self, job_id: str) -> dict[str, Any]:
        self._check_job_id(job_id)
        with aws_errors(f"describe SageMaker training job {job_id}"):
            try:
                response: dict[str, Any] = self.sagemaker.describe_training_job(TrainingJobName=job_id)
            except ClientError as exc:
                if _is_not_found(exc):
                    raise JobNotFound(f"no SageMaker training job {job_id!r}") from exc
                raise
        return response

    def _find_job(self, job_id: str) -> dict[str, Any] | None:
        try:
            return self._describe_job(job_id)
        except JobNotFound:
            return None

    def _log_streams(self, job_id: str) -> list[str]:
        names: list[str] = []
        token: str | None = None
        with aws_errors(f"list the CloudWatch log streams of training job {job_id}"):
            while True:
                kwargs: dict[str, Any] = {"logGroupName": LOG_GROUP, "logStreamNamePrefix": f"{job_id}/"}
                if token:
                    kwargs["nextToken"] = token
                try:
                    response = self.logs_client.describe_log_streams(**kwargs)
                except ClientError as exc:
                    # The group appears with the account's first training job's first log line.
                    if _error_code(exc) == "ResourceNotFoundException":
                        return []
                    raise
                names += [stream["logStreamName"] for stream in response.get("logStreams", [])]
                token = response.get("nextToken")
                if not token:
                    return names

    def _read_stream(self, stream: str, token: str | None, last_ms: int | None, pages: int) -> _StreamRead:
        """Up to `pages` GetLogEvents pages of `stream` after `token` (None: from its first event)."""
        read = _StreamRead(token=token, last_ms=last_ms)
        start_ms: int | None = None
        with aws_errors(f"read CloudWatch log stream {stream}"):
            while read.pages < pages:
                # A forward token must be read with startFromHead=true (GetLogEvents' documentation).
                kwargs: dict[str, Any] = {"logGroupName": LOG_GROUP, "logStreamName": stream, "startFromHead": True}
                if read.token:
                    kwargs["nextToken"] = read.token
                elif start_ms is not None:
                    kwargs["startTime"] = start_ms
                try:
                    response = self.logs_client.get_log_events(**kwargs)
                except ClientError as exc:
                    code = _error_code(exc)
                    if code == "ResourceNotFoundException":
                        read.at_end = True
                        return read
                    if code == "InvalidParameterException" and read.token and start_ms is None:
                        # Forward tokens expire after 24 hours: go on from the last event this cursor saw.
                        logger.warning("the log cursor of %s expired; reading on by time", stream)
                        read.token = None
                        start_ms = (read.last_ms + 1) if read.last_ms is not None else 0
                        continue
                    raise
                read.pages += 1
                events = response.get("events", [])
                for event in events:
                    timestamp = int(event.get("timestamp", 0))
                    read.events.append((timestamp, str(event.get("message", ""))))
                    read.last_ms = timestamp
                next_token = response.get("nextForwardToken")
                # At the end of the stream CloudWatch hands back the token it was given.
                at_end = not next_token or next_token == read.token or (read.token is None and not events)
                if next_token:
                    read.token = next_token
                if at_end:
                    read.at_end = True
                    return read
        return read


@dataclass
class _StreamRead:
    """What one read of one log stream got: its events (epoch ms, message) and where to go on from."""

    token: str | None
    last_ms: int | None
    events: list[tuple[int, str]] = field(default_factory=list)
    pages: int = 0
    at_end: bool = False


# --- pure helpers ---------------------------------------------------------------------------------------------------


def training_job_name(run_id: str, work_dir: Path) -> str:
    """`cp-<run id>-<8 hex>`: the hash is of the run id and the work dir's name (the part the local backend uses as
    its job id), so the same run in the same work dir always maps to the same job, whichever worker starts it."""
    digest = hashlib.sha256(f"{run_id}\n{Path(work_dir).name}".encode()).hexdigest()[:_HASH_CHARS]
    body = re.sub(r"[^A-Za-z0-9-]+", "-", run_id).strip("-")
    room = MAX_JOB_NAME_CHARS - len(_JOB_NAME_PREFIX) - 1 - _HASH_CHARS
    body = body[:room].rstrip("-")
    return f"{_JOB_NAME_PREFIX}{body}-{digest}" if body else f"{_JOB_NAME_PREFIX}{digest}"


def build_source_archive(recipe: Recipe, target: Path) -> None:
    """The recipe script and SUPPORT_FILES at the root of a gzipped tar, byte-for-byte the same every time."""
    with open(target, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as zipped:
        with tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as archive:
            for path in (recipe.script, *SUPPORT_FILES):
                info = tarfile.TarInfo(path.name)
                info.size = path.stat().st_size
                info.mode = 0o644
                info.mtime = 0
                with open(path, "rb") as handle:
                    archive.addfile(info, handle)


def job_state(description: Mapping[str, Any]) -> tuple[JobState, str]:
    """(state, message) for a DescribeTrainingJob response, in the local backend's terms."""
    status = str(description.get("TrainingJobStatus") or "")
    secondary = str(description.get("SecondaryStatus") or "")
    if status == "InProgress":
        return ("starting" if secondary in _STARTING_STATUSES else "running"), ""
    if status == "Completed":
        return "succeeded", ""
    if status == "Failed":
        reason = str(description.get("FailureReason") or "").strip()
        return "failed", reason or "SageMaker reports the training job failed without giving a reason"
    if status == "Stopping":
        return "stopping", "stopping on request"
    if status == "Stopped":
        limits = description.get("StoppingCondition") or {}
        if secondary == "MaxRuntimeExceeded":
            limit = limits.get("MaxRuntimeInSeconds")
            return "failed", f"the run exceeded its maximum runtime of {limit} seconds and was stopped"
        if secondary == "MaxWaitTimeExceeded":
            limit = limits.get("MaxWaitTimeInSeconds")
            return "failed", f"the run waited longer than its maximum wait time of {limit} seconds and was stopped"
        return "stopped", "stopped on request"
    if status == "Deleting":
        return "failed", "SageMaker is deleting the training job"
    # A status newer than this code: keep polling rather than end the run.
    return "running", f"SageMaker reports status {status or 'unknown'} ({secondary or 'no secondary status'})"


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """(bucket, key) of an `s3://bucket/key` URI."""
    if not uri.startswith("s3://"):
        raise BackendError(f"{uri!r} is not an s3://bucket/key URI", permanent=True)
    bucket, _, key = uri[len("s3://") :].partition("/")
    if not bucket or not key:
        raise BackendError(f"{uri!r} is not an s3://bucket/key URI", permanent=True)
    return bucket, key


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _is_not_found(exc: ClientError) -> bool:
    """SageMaker answers an unknown training job with ValidationException "Requested resource not found."."""
    code = _error_code(exc)
    if code in ("ResourceNotFound", "ResourceNotFoundException"):
        return True
    message = str(exc.response.get("Error", {}).get("Message", ""))
    return (
        code == "ValidationException"
        and re.search(r"not found|could not find|does not exist", message, re.I) is not None
    )


def _check_same_job(existing: Mapping[str, Any], job_name: str, run_id: str, expected: Mapping[str, str]) -> None:
    """Refuse to adopt a job of the same name that was started for something else (e.g. before a database reset)."""
    found = existing.get("HyperParameters") or {}
    keys = {name for name in (*expected, *found) if not name.startswith("sagemaker_")}
    keys |= {"sagemaker_program", "sagemaker_submit_directory"}
    different = sorted(name for name in keys if found.get(name) != expected.get(name))
    if different:
        raise BackendError(
            f"SageMaker training job {job_name} already exists but was started with other values for "
            f"{', '.join(different)}; it is not run {run_id}'s job with this spec (start the run in a new work dir)",
            permanent=True,
        )


def _host(stream: str, job_id: str) -> str:
    name = stream[len(job_id) + 1 :] if stream.startswith(f"{job_id}/") else stream
    match = _STREAM_HOST.fullmatch(name)
    return match.group(1) if match else name


def _final_metrics(final: Sequence[Mapping[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """The final value SageMaker kept for each metric (FinalMetricDataList), one point each."""
    series: dict[str, list[dict[str, Any]]] = {}
    for item in final:
        name = item.get("MetricName")
        if not name or item.get("Value") is None:
            continue
        stamp = item.get("Timestamp")
        series[str(name)] = [{"value": float(item["Value"]), "time": stamp.timestamp() if stamp else None}]
    return series


def _usage(description: Mapping[str, Any]) -> dict[str, float | None]:
    """SageMaker's measured times; billable seconds are per instance (multiply by instance_count for the bill)."""
    wall: float | None = None
    if description.get("TrainingTimeInSeconds") is not None:
        wall = float(description["TrainingTimeInSeconds"])
    elif description.get("TrainingStartTime") is not None:
        began = description["TrainingStartTime"]
        ended = description.get("TrainingEndTime") or datetime.now(UTC)
        wall = max(0.0, (ended - began).total_seconds())
    billable = description.get("BillableTimeInSeconds")
    count = (description.get("ResourceConfig") or {}).get("InstanceCount")
    return {
        "wall_seconds": wall,
        "billable_seconds": float(billable) if billable is not None else None,
        "cpu_seconds": None,
        "peak_memory_mb": None,
        "instance_count": float(count) if count is not None else None,
    }


__all__ = [
    "LOG_GROUP",
    "SageMakerTrainingBackend",
    "build_source_archive",
    "extract_model_tar",
    "job_state",
    "parse_s3_uri",
    "training_job_name",
]
