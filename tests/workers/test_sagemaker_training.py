"""The SageMaker training backend against moto's server over real HTTP, and botocore's Stubber where moto does not
model SageMaker's behaviour (job progress, failures, StopTrainingJob, throttling).

What moto 5.2 does with training jobs: CreateTrainingJob stores the request and the job is Completed at once
(SecondaryStatus Completed, no TrainingTimeInSeconds/BillableTimeInSeconds); DescribeTrainingJob replaces the
MetricDefinitions with its own and adds a FinalMetricDataList of `train:progress`; an unknown name is a
ValidationException; a second create with the same name silently replaces the job; StopTrainingJob is not
implemented (HTTP 500). CloudWatch Logs (groups, streams, events, forward tokens) and S3 are modelled faithfully.
"""

from __future__ import annotations

import io
import json
import re
import tarfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.client import BaseClient
from botocore.stub import Stubber

from workers import aws
from workers.errors import BackendError
from workers.recipes import SUPPORT_FILES, Recipe, _contract, get_recipe
from workers.training import InputFile, JobNotFound, JobSpec, JobStatus, TrainingBackend
from workers.training.base import LogChunk, Progress
from workers.training.images import SKLEARN_REGISTRIES, sklearn_image_uri
from workers.training.sagemaker import (
    LOG_GROUP,
    SageMakerTrainingBackend,
    extract_model_tar,
    training_job_name,
)

ROLE = "arn:aws:iam::123456789012:role/controlplane-training"
PREFIX = "controlplane"
REGION = "us-east-1"
IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3"
TAGS = {"project": "churn", "model": "churn-classifier", "run": "41", "environment": "development"}
JOB_NAME_PATTERN = r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}"
TRAIN_CSV = b"age,plan,churned\n31,basic,0\n45,pro,1\n27,basic,0\n"
VALIDATION_CSV = b"age,plan,churned\n52,pro,1\n38,basic,0\n"


@pytest.fixture
def recipe() -> Recipe:
    return get_recipe("logistic_regression")


@pytest.fixture
def inputs(tmp_path: Path) -> list[InputFile]:
    (tmp_path / "train.csv").write_bytes(TRAIN_CSV)
    (tmp_path / "validation.csv").write_bytes(VALIDATION_CSV)
    return [
        InputFile(channel="train", path=tmp_path / "train.csv", filename="data.csv"),
        InputFile(channel="validation", path=tmp_path / "validation.csv", filename="data.csv"),
    ]


@pytest.fixture
def backend(s3_bucket: str) -> SageMakerTrainingBackend:
    """The backend as production builds it: clients from workers.aws, pointed at moto by the environment."""
    return SageMakerTrainingBackend(bucket=s3_bucket, prefix=PREFIX, role_arn=ROLE, region=REGION)


def make_spec(recipe: Recipe, inputs: list[InputFile], tmp_path: Path, **fields: Any) -> JobSpec:
    values: dict[str, Any] = {
        "run_id": "41",
        "recipe": recipe,
        "hyperparameters": {"target": "churned", "C": 0.5, "class_weight": "balanced"},
        "inputs": inputs,
        "work_dir": tmp_path / "runs" / "run-41",
        "instance_type": "ml.m5.large",
        "max_runtime_seconds": 900,
        "tags": dict(TAGS),
    }
    values.update(fields)
    return JobSpec(**values)


def record_requests(client: BaseClient, operation: str) -> list[dict[str, Any]]:
    """The JSON bodies of every `operation` request the client sends over HTTP."""
    bodies: list[dict[str, Any]] = []

    def capture(request: Any, **_: Any) -> None:
        bodies.append(json.loads(request.body))

    client.meta.events.register(f"before-send.{client.meta.service_model.endpoint_prefix}.{operation}", capture)
    return bodies


@pytest.fixture(scope="module")
def stub_session() -> boto3.session.Session:
    """The session the stubbed clients are made from: its loader parses SageMaker's service model once, where a
    session per client parsed it again for every test (a tenth of a second each)."""
    return boto3.session.Session(region_name=REGION)


@pytest.fixture
def stubbed_sagemaker(aws_env: str, stub_session: boto3.session.Session) -> Iterator[tuple[BaseClient, Stubber]]:
    """A SageMaker client of its own whose responses come from a Stubber (validated against the service model)."""
    client = stub_session.client("sagemaker", endpoint_url=aws_env)
    with Stubber(client) as stubber:
        yield client, stubber
        stubber.assert_no_pending_responses()


def stubbed_backend(s3_bucket: str, client: BaseClient) -> SageMakerTrainingBackend:
    return SageMakerTrainingBackend(
        bucket=s3_bucket, prefix=PREFIX, role_arn=ROLE, region=REGION, sagemaker_client=client
    )


def described(job: str, status: str, secondary: str, **extra: Any) -> dict[str, Any]:
    """A DescribeTrainingJob response as SageMaker gives it for a job this backend started."""
    now = datetime(2026, 5, 4, 12, 0, tzinfo=UTC)
    response: dict[str, Any] = {
        "TrainingJobName": job,
        "TrainingJobArn": f"arn:aws:sagemaker:{REGION}:123456789012:training-job/{job}",
        "ModelArtifacts": {"S3ModelArtifacts": f"s3://bucket/{PREFIX}/runs/41/output/{job}/output/model.tar.gz"},
        "TrainingJobStatus": status,
        "SecondaryStatus": secondary,
        "AlgorithmSpecification": {
            "TrainingImage": IMAGE,
            "TrainingInputMode": "File",
            "MetricDefinitions": [dict(d) for d in get_recipe("logistic_regression").metric_definitions],
        },
        "RoleArn": ROLE,
        "OutputDataConfig": {"S3OutputPath": f"s3://bucket/{PREFIX}/runs/41/output"},
        "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 30},
        "StoppingCondition": {"MaxRuntimeInSeconds": 600},
        "CreationTime": now,
    }
    response.update(extra)
    return response


def put_log_lines(job: str, stream_suffix: str, lines: list[str], *, first_ms: int | None = None) -> None:
    logs = aws.aws_client("logs", region=REGION)
    try:
        logs.create_log_group(logGroupName=LOG_GROUP)
    except logs.exceptions.ResourceAlreadyExistsException:
        pass
    stream = f"{job}/{stream_suffix}"
    try:
        logs.create_log_stream(logGroupName=LOG_GROUP, logStreamName=stream)
    except logs.exceptions.ResourceAlreadyExistsException:
        pass
    start = first_ms if first_ms is not None else int(time.time() * 1000)
    for offset in range(0, len(lines), 10_000):
        chunk = lines[offset : offset + 10_000]
        response = logs.put_log_events(
            logGroupName=LOG_GROUP,
            logStreamName=stream,
            logEvents=[{"timestamp": start + offset + i, "message": line} for i, line in enumerate(chunk)],
        )
        assert "rejectedLogEventsInfo" not in response


# --- start ---------------------------------------------------------------------------------------------------------


def test_the_backend_is_a_training_backend(backend: SageMakerTrainingBackend) -> None:
    assert isinstance(backend, TrainingBackend)


def test_start_creates_the_training_job_the_spec_describes(
    backend: SageMakerTrainingBackend, recipe: Recipe, inputs: list[InputFile], tmp_path: Path, s3_bucket: str
) -> None:
    sent = record_requests(backend.sagemaker, "CreateTrainingJob")

    job = backend.start(make_spec(recipe, inputs, tmp_path, instance_count=2))

    assert len(sent) == 1
    request = sent[0]
    run = f"s3://{s3_bucket}/{PREFIX}/runs/41"
    assert request["TrainingJobName"] == job
    assert request["RoleArn"] == ROLE
    assert request["AlgorithmSpecification"] == {
        "TrainingImage": IMAGE,
        "TrainingInputMode": "File",
        "MetricDefinitions": [dict(d) for d in recipe.metric_definitions],
    }
    assert request["InputDataConfig"] == [
        {
            "ChannelName": channel,
            "DataSource": {
                "S3DataSource": {
                    "S3DataType": "S3Prefix",
                    "S3Uri": f"{run}/input/{channel}/",
                    "S3DataDistributionType": "FullyReplicated",
                }
            },
            "InputMode": "File",
        }
        for channel in ("train", "validation")
    ]
    assert request["OutputDataConfig"] == {"S3OutputPath": f"{run}/output"}
    assert request["ResourceConfig"] == {"InstanceType": "ml.m5.large", "InstanceCount": 2, "VolumeSizeInGB": 30}
    assert request["StoppingCondition"] == {"MaxRuntimeInSeconds": 900}
    # Every value JSON text; defaults filled in as the local backend does; the script-mode keys SageMaker needs.
    assert request["HyperParameters"] == {
        "target": '"churned"',
        "C": "0.5",
        "max_iter": "200",
        "class_weight": '"balanced"',
        "seed": "42",
        "validation_fraction": "0.2",
        "cv_folds": "5",
        "sagemaker_program": '"logistic_regression.py"',
        "sagemaker_submit_directory": f'"{run}/source/sourcedir.tar.gz"',
        "sagemaker_region": f'"{REGION}"',
        "sagemaker_container_log_level": "20",
    }
    assert sorted(request["Tags"], key=lambda tag: tag["Key"]) == sorted(
        ({"Key": key, "Value": value} for key, value in TAGS.items()), key=lambda tag: tag["Key"]
    )

    # What moto recorded, read back through the API.
    sagemaker = aws.aws_client("sagemaker", region=REGION)
    description = sagemaker.describe_training_job(TrainingJobName=job)
    assert description["RoleArn"] == ROLE
    assert description["AlgorithmSpecification"]["TrainingImage"] == IMAGE
    assert description["HyperParameters"] == request["HyperParameters"]
    assert [channel["ChannelName"] for channel in description["InputDataConfig"]] == ["train", "validation"]
    assert description["StoppingCondition"] == {"MaxRuntimeInSeconds": 900}
    tags = sagemaker.list_tags(ResourceArn=description["TrainingJobArn"])["Tags"]
    assert {tag["Key"]: tag["Value"] for tag in tags} == TAGS


def toolkit_decode(hyperparameters: dict[str, str], directory: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The values a script sees once the SageMaker training toolkit has read `hyperparameters` from
    hyperparameters.json: its own read_hyperparameters when installed, else the same rule restated."""
    path = directory / "hyperparameters.json"
    path.write_text(json.dumps(hyperparameters), encoding="utf-8")
    # The SageMaker training toolkit's own decoding (a test dependency), exactly as a training container runs it.
    from sagemaker_training import environment as toolkit_environment

    monkeypatch.setattr(toolkit_environment, "hyperparameters_file_dir", str(path))
    return dict(toolkit_environment.read_hyperparameters())


@pytest.mark.parametrize("target", ["1e3", "1.50", "true", "null", "42", "churned", "naïve"])
def test_text_hyperparameters_reach_the_script_as_the_same_text(
    backend: SageMakerTrainingBackend,
    recipe: Recipe,
    inputs: list[InputFile],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    target: str,
) -> None:
    job = backend.start(make_spec(recipe, inputs, tmp_path, hyperparameters={"target": target, "C": 0.5}))
    sent = aws.aws_client("sagemaker", region=REGION).describe_training_job(TrainingJobName=job)["HyperParameters"]
    config = tmp_path / "config"
    config.mkdir()

    seen = toolkit_decode(sent, config, monkeypatch)

    assert seen["target"] == target
    assert (seen["C"], seen["max_iter"], seen["class_weight"]) == (0.5, 200, "none")
    assert seen["sagemaker_program"] == "logistic_regression.py"
    assert seen["sagemaker_submit_directory"].endswith("/source/sourcedir.tar.gz")
    assert seen["sagemaker_container_log_level"] == 20
    # The recipe contract reads them the same way, from hyperparameters.json and from the toolkit's SM_HPS.
    spec = {"parameters": [{"name": "target", "type": "column", "required": True}, {"name": "C", "type": "float"}]}
    monkeypatch.setenv("SM_INPUT_CONFIG_DIR", str(config))
    monkeypatch.delenv("SM_HPS", raising=False)
    wanted = {"target": sent["target"], "C": sent["C"]}
    (config / "hyperparameters.json").write_text(json.dumps(wanted), encoding="utf-8")
    assert _contract.load_hyperparameters(spec) == {"target": target, "C": 0.5}
    monkeypatch.setenv("SM_HPS", json.dumps({"target": seen["target"], "C": seen["C"]}))
    assert _contract.load_hyperparameters(spec) == {"target": target, "C": 0.5}


def test_the_recipe_contract_reads_hyperparameters_json_as_the_toolkit_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As SageMaker writes the file: every value a string, some JSON text, some not (typed in the console, say).
    raw = {
        "n": "5",
        "rate": "0.25",
        "flag": "true",
        "names": '["a", "b"]',
        "target": '"1e3"',
        "typed": "1e3",
        "plain": "species",
        "empty": "",
        "sagemaker_program": '"train.py"',
    }
    config = tmp_path / "config"
    config.mkdir()
    toolkit = toolkit_decode(raw, config, monkeypatch)
    monkeypatch.setenv("SM_INPUT_CONFIG_DIR", str(config))
    monkeypatch.delenv("SM_HPS", raising=False)

    ours = _contract.read_raw_hyperparameters()

    assert ours == {name: value for name, value in toolkit.items() if not name.startswith("sagemaker_")}
    assert (ours["n"], ours["typed"], ours["target"], ours["plain"]) == (5, 1000.0, "1e3", "species")


def test_start_uploads_the_source_archive_and_the_inputs(
    backend: SageMakerTrainingBackend, recipe: Recipe, inputs: list[InputFile], tmp_path: Path, s3_bucket: str
) -> None:
    backend.start(make_spec(recipe, inputs, tmp_path))

    s3 = aws.aws_client("s3", region=REGION)
    body = s3.get_object(Bucket=s3_bucket, Key=f"{PREFIX}/runs/41/source/sourcedir.tar.gz")["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as archive:
        contents = {member.name: archive.extractfile(member).read() for member in archive.getmembers()}  # type: ignore[union-attr]
    expected = {path.name: path.read_bytes() for path in (recipe.script, *SUPPORT_FILES)}
    assert contents == expected
    train = s3.get_object(Bucket=s3_bucket, Key=f"{PREFIX}/runs/41/input/train/data.csv")["Body"].read()
    validation = s3.get_object(Bucket=s3_bucket, Key=f"{PREFIX}/runs/41/input/validation/data.csv")["Body"].read()
    assert (train, validation) == (TRAIN_CSV, VALIDATION_CSV)


def test_only_the_channels_given_inputs_are_configured(
    backend: SageMakerTrainingBackend, recipe: Recipe, inputs: list[InputFile], tmp_path: Path
) -> None:
    sent = record_requests(backend.sagemaker, "CreateTrainingJob")

    backend.start(make_spec(recipe, inputs[:1], tmp_path))

    assert [channel["ChannelName"] for channel in sent[0]["InputDataConfig"]] == ["train"]


def test_starting_the_same_spec_twice_creates_one_job(
    backend: SageMakerTrainingBackend, recipe: Recipe, inputs: list[InputFile], tmp_path: Path
) -> None:
    sent = record_requests(backend.sagemaker, "CreateTrainingJob")
    spec = make_spec(recipe, inputs, tmp_path)

    first = backend.start(spec)
    second = backend.start(spec)

    assert first == second
    assert len(sent) == 1
    assert [
        job["TrainingJobName"]
        for job in aws.aws_client("sagemaker", region=REGION).list_training_jobs()["TrainingJobSummaries"]
    ] == [first]


def test_another_work_dir_is_another_job(
    backend: SageMakerTrainingBackend, recipe: Recipe, inputs: list[InputFile], tmp_path: Path
) -> None:
    first = backend.start(make_spec(recipe, inputs, tmp_path))
    second = backend.start(make_spec(recipe, inputs, tmp_path, work_dir=tmp_path / "runs" / "run-41-retry"))

    assert first != second


def test_a_job_of_the_same_name_started_with_other_values_is_not_adopted(
    backend: SageMakerTrainingBackend, recipe: Recipe, inputs: list[InputFile], tmp_path: Path
) -> None:
    backend.start(make_spec(recipe, inputs, tmp_path))

    with pytest.raises(BackendError) as caught:
        backend.start(make_spec(recipe, inputs, tmp_path, hyperparameters={"target": "churned", "C": 2.0}))

    assert caught.value.permanent is True
    assert "already exists" in caught.value.message
    assert "C, class_weight" in caught.value.message


def test_a_job_another_worker_created_meanwhile_is_this_runs_job(
    stubbed_sagemaker: tuple[BaseClient, Stubber],
    recipe: Recipe,
    inputs: list[InputFile],
    tmp_path: Path,
    s3_bucket: str,
) -> None:
    client, stubber = stubbed_sagemaker
    spec = make_spec(recipe, inputs, tmp_path)
    job = training_job_name(spec.run_id, spec.work_dir)
    stubber.add_client_error(
        "describe_training_job",
        service_error_code="ValidationException",
        service_message="Requested resource not found.",
    )
    stubber.add_client_error(
        "create_training_job",
        service_error_code="ResourceInUse",
        service_message=f"Training job names must be unique within an AWS account and region, and a training job "
        f"with this name already exists (arn:aws:sagemaker:{REGION}:123456789012:training-job/{job})",
    )

    assert stubbed_backend(s3_bucket, client).start(spec) == job


def test_a_bad_role_arn_is_a_permanent_error_carrying_the_aws_message(
    stubbed_sagemaker: tuple[BaseClient, Stubber],
    recipe: Recipe,
    inputs: list[InputFile],
    tmp_path: Path,
    s3_bucket: str,
) -> None:
    client, stubber = stubbed_sagemaker
    refusal = (
        "Could not assume role arn:aws:iam::123456789012:role/nope. Please ensure that the role exists and allows "
        "principal 'sagemaker.amazonaws.com' to assume the role."
    )
    stubber.add_client_error(
        "describe_training_job",
        service_error_code="ValidationException",
        service_message="Requested resource not found.",
    )
    stubber.add_client_error("create_training_job", service_error_code="ValidationException", service_message=refusal)

    with pytest.raises(BackendError) as caught:
        stubbed_backend(s3_bucket, client).start(make_spec(recipe, inputs, tmp_path))

    assert caught.value.permanent is True
    assert refusal in caught.value.message
    assert "ValidationException" in caught.value.message


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"instance_type": "local"}, "instance type 'local' is not a SageMaker instance type"),
        ({"hyperparameters": {"C": 0.5}}, "hyperparameter target: a value is required"),
        ({"hyperparameters": {"target": "churned", "gamma": 1}}, "hyperparameter gamma: unknown parameter"),
        ({"max_runtime_seconds": 0}, "max_runtime_seconds must be a positive"),
        ({"run_id": "../41"}, "run id '../41' must be"),
        ({"instance_count": 0}, "instance_count must be at least 1"),
    ],
)
def test_a_bad_spec_is_refused_before_anything_is_uploaded(
    backend: SageMakerTrainingBackend,
    recipe: Recipe,
    inputs: list[InputFile],
    tmp_path: Path,
    s3_bucket: str,
    fields: dict[str, Any],
    problem: str,
) -> None:
    with pytest.raises(BackendError) as caught:
        backend.start(make_spec(recipe, inputs, tmp_path, **fields))

    assert caught.value.permanent is True
    assert problem in caught.value.message
    assert aws.aws_client("s3", region=REGION).list_objects_v2(Bucket=s3_bucket)["KeyCount"] == 0
    assert aws.aws_client("sagemaker", region=REGION).list_training_jobs()["TrainingJobSummaries"] == []


def test_a_missing_required_channel_is_refused(
    backend: SageMakerTrainingBackend, recipe: Recipe, inputs: list[InputFile], tmp_path: Path
) -> None:
    with pytest.raises(BackendError, match="channel 'train' needs at least one input file"):
        backend.start(make_spec(recipe, inputs[1:], tmp_path))


def test_an_upload_to_a_missing_bucket_is_a_permanent_error_with_the_s3_code(
    aws_env: str, recipe: Recipe, inputs: list[InputFile], tmp_path: Path
) -> None:
    backend = SageMakerTrainingBackend(bucket="no-such-bucket", prefix=PREFIX, role_arn=ROLE, region=REGION)

    with pytest.raises(BackendError) as caught:
        backend.start(make_spec(recipe, inputs, tmp_path))

    assert caught.value.permanent is True
    assert "NoSuchBucket" in caught.value.message
    assert "s3://no-such-bucket/controlplane/runs/41/source/sourcedir.tar.gz" in caught.value.message


@pytest.mark.parametrize(
    ("run_id", "work_dir"),
    [
        ("41", "run-41"),
        ("0f8e2c9a-6a4f-4b7e-9a61-2f7d0c1e5b3a", "run-0f8e2c9a-6a4f-4b7e-9a61-2f7d0c1e5b3a"),
        ("r" * 128, "w"),
        ("a.b_c", "x"),
        ("--", "x"),
    ],
)
def test_job_names_are_valid_stable_training_job_names(run_id: str, work_dir: str, tmp_path: Path) -> None:
    name = training_job_name(run_id, tmp_path / work_dir)

    assert re.fullmatch(JOB_NAME_PATTERN, name)
    assert len(name) <= 63
    assert name.startswith("cp-")
    assert name == training_job_name(run_id, Path("/elsewhere") / work_dir)
    assert name != training_job_name(run_id, tmp_path / f"{work_dir}-2")


# --- describe ------------------------------------------------------------------------------------------------------


def test_a_job_moto_created_is_described_as_succeeded_with_its_artifacts(
    backend: SageMakerTrainingBackend, recipe: Recipe, inputs: list[InputFile], tmp_path: Path, s3_bucket: str
) -> None:
    job = backend.start(make_spec(recipe, inputs, tmp_path))

    status = backend.describe(job)

    output = f"s3://{s3_bucket}/{PREFIX}/runs/41/output/{job}/output"
    assert status.state == "succeeded"
    assert status.finished
    assert status.message == ""
    assert status.secondary_status == "Completed"
    assert status.model_uri == f"{output}/model.tar.gz"
    assert status.output_uri == f"{output}/output.tar.gz"
    assert (status.model_dir, status.output_dir) == (None, None)
    # moto reports a final train:progress metric and no log lines: SageMaker's final values are kept.
    assert status.metrics == {"train:progress": [{"value": 100.0, "time": pytest.approx(time.time(), abs=60)}]}
    assert status.usage["wall_seconds"] == 0.0
    assert status.usage["billable_seconds"] is None
    assert status.usage["cpu_seconds"] is None
    assert status.usage["peak_memory_mb"] is None


def test_an_unknown_job_is_job_not_found(backend: SageMakerTrainingBackend) -> None:
    with pytest.raises(JobNotFound):
        backend.describe("cp-404-00000000")
    with pytest.raises(JobNotFound):
        backend.describe("not a job name")


def test_sagemakers_not_found_answer_is_job_not_found(
    stubbed_sagemaker: tuple[BaseClient, Stubber], s3_bucket: str
) -> None:
    client, stubber = stubbed_sagemaker
    stubber.add_client_error(
        "describe_training_job",
        service_error_code="ValidationException",
        service_message="Requested resource not found.",
        expected_params={"TrainingJobName": "cp-404-00000000"},
    )

    with pytest.raises(JobNotFound):
        stubbed_backend(s3_bucket, client).describe("cp-404-00000000")


@pytest.mark.parametrize(
    ("status", "secondary", "state"),
    [
        ("InProgress", "Starting", "starting"),
        ("InProgress", "Pending", "starting"),
        ("InProgress", "LaunchingMLInstances", "starting"),
        ("InProgress", "PreparingTrainingStack", "starting"),
        ("InProgress", "Downloading", "starting"),
        ("InProgress", "DownloadingTrainingImage", "starting"),
        ("InProgress", "Training", "running"),
        ("InProgress", "Uploading", "running"),
        ("InProgress", "Interrupted", "running"),
        ("Stopping", "Stopping", "stopping"),
        ("Stopped", "Stopped", "stopped"),
        ("Completed", "Completed", "succeeded"),
    ],
)
def test_sagemaker_statuses_map_to_run_states(
    stubbed_sagemaker: tuple[BaseClient, Stubber], s3_bucket: str, status: str, secondary: str, state: str
) -> None:
    client, stubber = stubbed_sagemaker
    stubber.add_response("describe_training_job", described("cp-41-1a2b3c4d", status, secondary))

    described_status = stubbed_backend(s3_bucket, client).describe("cp-41-1a2b3c4d")

    assert described_status.state == state
    assert described_status.secondary_status == secondary
    assert (described_status.model_uri is not None) is (state == "succeeded")


def test_a_failed_job_carries_sagemakers_failure_reason(
    stubbed_sagemaker: tuple[BaseClient, Stubber], s3_bucket: str
) -> None:
    client, stubber = stubbed_sagemaker
    reason = (
        "AlgorithmError: ExecuteUserScriptError:\nExitCode 1\nErrorMessage "
        "\"hyperparameter target: column 'x' is not in the dataset\""
    )
    stubber.add_response("describe_training_job", described("cp-41-1a2b3c4d", "Failed", "Failed", FailureReason=reason))

    status = stubbed_backend(s3_bucket, client).describe("cp-41-1a2b3c4d")

    assert (status.state, status.message) == ("failed", reason)
    assert status.model_uri is None and status.output_uri is None


def test_a_job_stopped_at_its_maximum_runtime_failed(
    stubbed_sagemaker: tuple[BaseClient, Stubber], s3_bucket: str
) -> None:
    client, stubber = stubbed_sagemaker
    stubber.add_response("describe_training_job", described("cp-41-1a2b3c4d", "Stopped", "MaxRuntimeExceeded"))

    status = stubbed_backend(s3_bucket, client).describe("cp-41-1a2b3c4d")

    assert status.state == "failed"
    assert "the run exceeded its maximum runtime of 600 seconds" in status.message


def test_usage_is_sagemakers_measured_time(stubbed_sagemaker: tuple[BaseClient, Stubber], s3_bucket: str) -> None:
    client, stubber = stubbed_sagemaker
    response = described(
        "cp-41-1a2b3c4d",
        "Completed",
        "Completed",
        TrainingTimeInSeconds=125,
        BillableTimeInSeconds=120,
        ResourceConfig={"InstanceType": "ml.m5.large", "InstanceCount": 2, "VolumeSizeInGB": 30},
    )
    stubber.add_response("describe_training_job", response)

    usage = stubbed_backend(s3_bucket, client).describe("cp-41-1a2b3c4d").usage

    assert usage == {
        "wall_seconds": 125.0,
        "billable_seconds": 120.0,
        "cpu_seconds": None,
        "peak_memory_mb": None,
        "instance_count": 2.0,
    }


def test_a_running_jobs_wall_time_counts_from_its_start(
    stubbed_sagemaker: tuple[BaseClient, Stubber], s3_bucket: str
) -> None:
    client, stubber = stubbed_sagemaker
    began = datetime.now(UTC).replace(microsecond=0)
    stubber.add_response(
        "describe_training_job", described("cp-41-1a2b3c4d", "InProgress", "Training", TrainingStartTime=began)
    )

    usage = stubbed_backend(s3_bucket, client).describe("cp-41-1a2b3c4d").usage

    assert usage["wall_seconds"] is not None and 0 <= usage["wall_seconds"] < 30
    assert usage["billable_seconds"] is None


def test_throttling_is_a_retryable_error(stubbed_sagemaker: tuple[BaseClient, Stubber], s3_bucket: str) -> None:
    client, stubber = stubbed_sagemaker
    stubber.add_client_error("describe_training_job", service_error_code="ThrottlingException", http_status_code=400)

    with pytest.raises(BackendError) as caught:
        stubbed_backend(s3_bucket, client).describe("cp-41-1a2b3c4d")

    assert caught.value.permanent is False
    assert "ThrottlingException" in caught.value.message


def test_access_denied_is_a_permanent_error_with_the_aws_message(
    stubbed_sagemaker: tuple[BaseClient, Stubber], s3_bucket: str
) -> None:
    client, stubber = stubbed_sagemaker
    message = (
        "User: arn:aws:sts::123456789012:assumed-role/worker/i-0abc is not authorized to perform: "
        "sagemaker:DescribeTrainingJob on resource: "
        "arn:aws:sagemaker:us-east-1:123456789012:training-job/cp-41-1a2b3c4d"
    )
    stubber.add_client_error(
        "describe_training_job",
        service_error_code="AccessDeniedException",
        service_message=message,
        http_status_code=400,
    )

    with pytest.raises(BackendError) as caught:
        stubbed_backend(s3_bucket, client).describe("cp-41-1a2b3c4d")

    assert caught.value.permanent is True
    assert message in caught.value.message


# --- logs and metrics -----------------------------------------------------------------------------------------------


def read_all(backend: SageMakerTrainingBackend, job: str, cursor: dict[str, Any] | None = None) -> LogChunk:
    """read_log called until the cursor says nothing more is waiting; the lines of every call, in order."""
    lines: list[str] = []
    for _ in range(100):
        chunk = backend.read_log(job, cursor=cursor, metric_definitions=[])
        lines += chunk.lines
        cursor = chunk.cursor
        if not cursor["more"]:
            return LogChunk(lines=lines, cursor=cursor)
    raise AssertionError("read_log never reached the end of the logs")


def test_read_log_reads_the_jobs_stream_and_then_only_what_is_new(
    backend: SageMakerTrainingBackend, recipe: Recipe, inputs: list[InputFile], tmp_path: Path
) -> None:
    job = backend.start(make_spec(recipe, inputs, tmp_path))
    lines = ["Invoking script with the following command:", "metric: train_rows=3; time=1712345678.100", "done"]
    put_log_lines(job, "algo-1-1712345678", lines)
    # Another job's stream whose name merely starts like this one's is not this job's.
    put_log_lines(f"{job}0", "algo-1-1712345678", ["not mine"])
    reads = record_requests(backend.logs_client, "GetLogEvents")

    first = backend.read_log(job, cursor=None, metric_definitions=[])
    assert first.lines == lines
    assert first.cursor["more"] is False
    assert list(first.cursor["streams"]) == [f"{job}/algo-1-1712345678"]
    # The cursor is kept on the run, so it must survive a JSON round trip.
    cursor = json.loads(json.dumps(first.cursor))

    reads.clear()
    again = backend.read_log(job, cursor=cursor, metric_definitions=[])
    assert again.lines == []
    # Nothing new: one request that hands back the same token, and nothing read from the start again.
    assert len(reads) == 1 and reads[0]["nextToken"] == cursor["streams"][f"{job}/algo-1-1712345678"]
    assert reads[0]["startFromHead"] is True

    put_log_lines(job, "algo-1-1712345678", ["after the first poll", "and another"])
    later = backend.read_log(job, cursor=again.cursor, metric_definitions=[])
    assert later.lines == ["after the first poll", "and another"]


def test_a_long_stream_is_read_a_bounded_number_of_pages_per_call(
    s3_bucket: str, recipe: Recipe, inputs: list[InputFile], tmp_path: Path
) -> None:
    backend = SageMakerTrainingBackend(
        bucket=s3_bucket, prefix=PREFIX, role_arn=ROLE, region=REGION, log_pages_per_read=1
    )
    job = backend.start(make_spec(recipe, inputs, tmp_path))
    # More than one GetLogEvents page (at most 10,000 events each).
    lines = [f"line {number}" for number in range(10_050)]
    put_log_lines(job, "algo-1-1712345678", lines)
    reads = record_requests(backend.logs_client, "GetLogEvents")

    first = backend.read_log(job, cursor=None, metric_definitions=[])

    assert len(reads) == 1
    assert first.lines == lines[:10_000]
    assert first.cursor["more"] is True
    rest = read_all(backend, job, first.cursor)
    assert rest.lines == lines[10_000:]


def test_the_logs_of_several_instances_are_labelled_with_their_host_and_new_streams_are_found(
    backend: SageMakerTrainingBackend, recipe: Recipe, inputs: list[InputFile], tmp_path: Path
) -> None:
    job = backend.start(make_spec(recipe, inputs, tmp_path, instance_count=2))
    put_log_lines(job, "algo-2-1712345679", ["second host"])
    put_log_lines(job, "algo-1-1712345678", ["first host", "first host again"])

    chunk = backend.read_log(job, cursor=None, metric_definitions=[])

    assert chunk.lines == ["[algo-1] first host", "[algo-1] first host again", "[algo-2] second host"]
    put_log_lines(job, "algo-3-1712345680", ["third host, started late"])
    assert backend.read_log(job, cursor=chunk.cursor, metric_definitions=[]).lines == [
        "[algo-3] third host, started late"
    ]


def test_a_job_with_no_logs_yet_has_no_lines(
    backend: SageMakerTrainingBackend, recipe: Recipe, inputs: list[InputFile], tmp_path: Path
) -> None:
    job = backend.start(make_spec(recipe, inputs, tmp_path))

    # No log group at all yet (the account's first job is still starting).
    chunk = backend.read_log(job, cursor=None, metric_definitions=[])
    assert (chunk.lines, chunk.cursor["streams"], chunk.cursor["more"]) == ([], {}, False)
    # The group exists, but not this job's stream.
    put_log_lines("cp-other-00000000", "algo-1-1712345678", ["other job"])
    assert backend.read_log(job, cursor=chunk.cursor, metric_definitions=[]).lines == []
    # The stream appears after the first polls: its lines are read from its start.
    put_log_lines(job, "algo-1-1712345678", ["at last"])
    assert backend.read_log(job, cursor=chunk.cursor, metric_definitions=[]).lines == ["at last"]


def test_read_log_finds_metrics_and_progress_in_the_new_lines_only(
    backend: SageMakerTrainingBackend, recipe: Recipe, inputs: list[InputFile], tmp_path: Path
) -> None:
    job = backend.start(make_spec(recipe, inputs, tmp_path))
    # CloudWatch refuses events older than 14 days.
    first_ms = int(time.time()) * 1000 - 60_000
    put_log_lines(
        job,
        "algo-1-1712345678",
        [
            "Training starts",
            "metric: train_rows=800; time=1712345678.250",
            "progress: 1/5 folds",
            "metric: cv_accuracy=0.91; fold=0; time=1712345679.000",
            "progress: 2/5 folds",
            "metric: cv_accuracy=0.93; fold=1; time=1712345680.000",
            "metric: unknown_thing=1",
        ],
        first_ms=first_ms,
    )
    definitions = [dict(d) for d in recipe.metric_definitions]

    first = backend.read_log(job, cursor=None, metric_definitions=definitions)

    assert first.metrics == {
        "train_rows": [{"value": 800.0, "time": 1712345678.25}],
        "cv_accuracy": [
            {"value": 0.91, "fold": 0, "time": 1712345679.0},
            {"value": 0.93, "fold": 1, "time": 1712345680.0},
        ],
    }
    assert first.progress == Progress(done=2, total=5, unit="folds")

    put_log_lines(job, "algo-1-1712345678", ["metric: accuracy=0.925"], first_ms=first_ms + 10)
    second = backend.read_log(job, cursor=first.cursor, metric_definitions=definitions)

    # No time label on the line: the CloudWatch event's time. Earlier points are not read again.
    assert second.metrics == {"accuracy": [{"value": 0.925, "time": (first_ms + 10) / 1000}]}
    assert second.progress is None


def test_an_expired_forward_token_goes_on_from_the_last_event_seen(aws_env: str, s3_bucket: str) -> None:
    # CloudWatch refuses a forward token older than 24 hours; moto never expires them, so a Stubber says it.
    client = boto3.session.Session(region_name=REGION).client("logs", endpoint_url=aws_env)
    backend = SageMakerTrainingBackend(
        bucket=s3_bucket, prefix=PREFIX, role_arn=ROLE, region=REGION, logs_client=client
    )
    job = "cp-41-1a2b3c4d"
    stream = f"{job}/algo-1-1712345678"
    with Stubber(client) as stubber:
        stubber.add_response(
            "describe_log_streams",
            {"logStreams": [{"logStreamName": stream}]},
            expected_params={"logGroupName": LOG_GROUP, "logStreamNamePrefix": f"{job}/"},
        )
        stubber.add_client_error(
            "get_log_events",
            service_error_code="InvalidParameterException",
            service_message="The specified nextToken is invalid.",
            http_status_code=400,
            expected_params={
                "logGroupName": LOG_GROUP,
                "logStreamName": stream,
                "startFromHead": True,
                "nextToken": "f/old",
            },
        )
        stubber.add_response(
            "get_log_events",
            {"events": [{"timestamp": 1_712_345_679_001, "message": "new line"}], "nextForwardToken": "f/new"},
            expected_params={
                "logGroupName": LOG_GROUP,
                "logStreamName": stream,
                "startFromHead": True,
                "startTime": 1_712_345_679_001,
            },
        )
        stubber.add_response(
            "get_log_events",
            {"events": [], "nextForwardToken": "f/new"},
            expected_params={
                "logGroupName": LOG_GROUP,
                "logStreamName": stream,
                "startFromHead": True,
                "nextToken": "f/new",
            },
        )
        cursor = {"streams": {stream: "f/old"}, "last_event_ms": {stream: 1_712_345_679_000}, "more": False}

        chunk = backend.read_log(job, cursor=cursor, metric_definitions=[])

        stubber.assert_no_pending_responses()
    assert chunk.lines == ["new line"]
    assert chunk.cursor["streams"] == {stream: "f/new"}


def test_describe_reads_no_logs_and_reports_sagemakers_final_metrics(
    stubbed_sagemaker: tuple[BaseClient, Stubber], s3_bucket: str
) -> None:
    client, stubber = stubbed_sagemaker
    job = "cp-41-1a2b3c4d"
    put_log_lines(job, "algo-1-1712345678", ["metric: accuracy=0.5"])
    final = [
        {"MetricName": "accuracy", "Value": 0.925, "Timestamp": datetime(2026, 5, 4, 12, 5, tzinfo=UTC)},
        {"MetricName": "f1", "Value": 0.88, "Timestamp": datetime(2026, 5, 4, 12, 5, tzinfo=UTC)},
    ]
    stubber.add_response(
        "describe_training_job",
        described(job, "InProgress", "Training", FinalMetricDataList=final),
        expected_params={"TrainingJobName": job},
    )
    backend = stubbed_backend(s3_bucket, client)
    log_requests: list[str] = []
    backend.logs_client.meta.events.register(
        "before-send.logs", lambda request, **_: log_requests.append(request.headers["X-Amz-Target"])
    )

    status = backend.describe(job)

    assert status.state == "running"
    assert log_requests == []
    stamp = datetime(2026, 5, 4, 12, 5, tzinfo=UTC).timestamp()
    assert status.metrics == {
        "accuracy": [{"value": 0.925, "time": stamp}],
        "f1": [{"value": 0.88, "time": stamp}],
    }


# --- stop ------------------------------------------------------------------------------------------------------------


def test_stop_asks_sagemaker_to_stop_the_job(stubbed_sagemaker: tuple[BaseClient, Stubber], s3_bucket: str) -> None:
    client, stubber = stubbed_sagemaker
    stubber.add_response("stop_training_job", {}, expected_params={"TrainingJobName": "cp-41-1a2b3c4d"})

    stubbed_backend(s3_bucket, client).stop("cp-41-1a2b3c4d")


@pytest.mark.parametrize("status", ["Completed", "Failed", "Stopped", "Stopping"])
def test_stopping_a_job_that_is_no_longer_in_progress_is_a_no_op(
    stubbed_sagemaker: tuple[BaseClient, Stubber], s3_bucket: str, status: str
) -> None:
    client, stubber = stubbed_sagemaker
    stubber.add_client_error(
        "stop_training_job",
        service_error_code="ValidationException",
        service_message=f"The request was rejected because the training job is in status {status}.",
    )
    stubber.add_response("describe_training_job", described("cp-41-1a2b3c4d", status, status))

    stubbed_backend(s3_bucket, client).stop("cp-41-1a2b3c4d")


def test_stopping_an_unknown_job_is_job_not_found(
    stubbed_sagemaker: tuple[BaseClient, Stubber], s3_bucket: str
) -> None:
    client, stubber = stubbed_sagemaker
    stubber.add_client_error(
        "stop_training_job", service_error_code="ValidationException", service_message="Requested resource not found."
    )

    with pytest.raises(JobNotFound):
        stubbed_backend(s3_bucket, client).stop("cp-404-00000000")


def test_a_refused_stop_of_a_running_job_is_an_error(
    stubbed_sagemaker: tuple[BaseClient, Stubber], s3_bucket: str
) -> None:
    client, stubber = stubbed_sagemaker
    stubber.add_client_error(
        "stop_training_job", service_error_code="ValidationException", service_message="Something else is wrong."
    )
    stubber.add_response("describe_training_job", described("cp-41-1a2b3c4d", "InProgress", "Training"))

    with pytest.raises(BackendError) as caught:
        stubbed_backend(s3_bucket, client).stop("cp-41-1a2b3c4d")

    assert caught.value.permanent is True
    assert "Something else is wrong." in caught.value.message


def test_a_throttled_stop_is_retryable(stubbed_sagemaker: tuple[BaseClient, Stubber], s3_bucket: str) -> None:
    client, stubber = stubbed_sagemaker
    stubber.add_client_error("stop_training_job", service_error_code="ThrottlingException", http_status_code=400)

    with pytest.raises(BackendError) as caught:
        stubbed_backend(s3_bucket, client).stop("cp-41-1a2b3c4d")

    assert caught.value.permanent is False


# --- artifacts -------------------------------------------------------------------------------------------------------


def test_the_model_artifact_is_downloaded_and_extracted(
    backend: SageMakerTrainingBackend, recipe: Recipe, inputs: list[InputFile], tmp_path: Path, s3_bucket: str
) -> None:
    job = backend.start(make_spec(recipe, inputs, tmp_path))
    status = backend.describe(job)
    assert status.model_uri is not None
    # What SageMaker uploads from SM_MODEL_DIR when the job completes (moto does not run the job).
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:
        for name, data in (("model.joblib", b"model bytes"), ("metadata/info.json", b'{"ok": true}')):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    key = status.model_uri.removeprefix(f"s3://{s3_bucket}/")
    aws.aws_client("s3", region=REGION).put_object(Bucket=s3_bucket, Key=key, Body=archive.getvalue())

    downloaded = backend.download_artifact(status.model_uri, tmp_path / "download" / "model.tar.gz")
    extracted = backend.extract_model_tar(downloaded, tmp_path / "model")

    assert downloaded.read_bytes() == archive.getvalue()
    assert (extracted / "model.joblib").read_bytes() == b"model bytes"
    assert (extracted / "metadata" / "info.json").read_bytes() == b'{"ok": true}'


def test_downloading_a_missing_artifact_is_a_permanent_error(
    backend: SageMakerTrainingBackend, s3_bucket: str, tmp_path: Path
) -> None:
    uri = f"s3://{s3_bucket}/{PREFIX}/runs/41/output/cp-41-1a2b3c4d/output/model.tar.gz"

    with pytest.raises(BackendError) as caught:
        backend.download_artifact(uri, tmp_path / "model.tar.gz")

    assert caught.value.permanent is True
    assert caught.value.message == f"no object at {uri}"
    assert not (tmp_path / "model.tar.gz").exists()


def tar_with(path: Path, *members: tarfile.TarInfo) -> Path:
    with tarfile.open(path, mode="w:gz") as tar:
        tar.addfile(tarfile.TarInfo("model.joblib"), io.BytesIO(b""))
        for member in members:
            tar.addfile(member, io.BytesIO(b"x" * member.size) if member.isfile() else None)
    return path


def member(name: str, *, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.size = 1 if kind == tarfile.REGTYPE else 0
    return info


@pytest.mark.parametrize(
    ("evil", "problem"),
    [
        (member("../evil"), "has a '..' component"),
        (member("models/../../evil"), "has a '..' component"),
        (member("/tmp/evil"), "has an absolute path"),
        (member("link", kind=tarfile.SYMTYPE, linkname="../../outside"), "links outside the target directory"),
        (member("link", kind=tarfile.SYMTYPE, linkname="/etc/passwd"), "links to the absolute path"),
        (member("hard", kind=tarfile.LNKTYPE, linkname="../outside"), "links outside the target directory"),
        (member("device", kind=tarfile.CHRTYPE), "is not a regular file, directory or link"),
    ],
)
def test_extracting_refuses_members_that_escape_the_target(tmp_path: Path, evil: tarfile.TarInfo, problem: str) -> None:
    archive = tar_with(tmp_path / "model.tar.gz", evil)
    dest = tmp_path / "out" / "model"

    with pytest.raises(BackendError) as caught:
        extract_model_tar(archive, dest)

    assert caught.value.permanent is True
    assert problem in caught.value.message
    # Nothing was written: not even the harmless member before it.
    assert not dest.exists()
    assert not (tmp_path / "out" / "evil").exists() and not (tmp_path / "evil").exists()


def test_links_inside_the_archive_are_extracted(tmp_path: Path) -> None:
    archive = tar_with(tmp_path / "model.tar.gz", member("current", kind=tarfile.SYMTYPE, linkname="model.joblib"))

    extracted = extract_model_tar(archive, tmp_path / "model")

    assert (extracted / "current").is_symlink()
    assert (extracted / "current").resolve() == (extracted / "model.joblib").resolve()


def test_a_file_that_is_not_a_tar_is_a_permanent_error(tmp_path: Path) -> None:
    (tmp_path / "model.tar.gz").write_bytes(b"not a tar")

    with pytest.raises(BackendError) as caught:
        extract_model_tar(tmp_path / "model.tar.gz", tmp_path / "model")

    assert caught.value.permanent is True


# --- images and JobStatus ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("region", "uri"),
    [
        ("us-east-1", "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3"),
        ("us-west-2", "246618743249.dkr.ecr.us-west-2.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3"),
        ("eu-west-1", "141502667606.dkr.ecr.eu-west-1.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3"),
        ("ap-southeast-2", "783357654285.dkr.ecr.ap-southeast-2.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3"),
        ("cn-north-1", "450853457545.dkr.ecr.cn-north-1.amazonaws.com.cn/sagemaker-scikit-learn:1.2-1-cpu-py3"),
        ("us-gov-west-1", "414596584902.dkr.ecr.us-gov-west-1.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3"),
    ],
)
def test_the_sklearn_image_is_in_the_regions_own_registry(region: str, uri: str) -> None:
    assert sklearn_image_uri(region) == uri


def test_the_sklearn_image_version_is_the_tags_prefix() -> None:
    assert sklearn_image_uri("eu-central-1", version="1.0-1") == (
        "492215442770.dkr.ecr.eu-central-1.amazonaws.com/sagemaker-scikit-learn:1.0-1-cpu-py3"
    )
    with pytest.raises(BackendError, match="not a version tag"):
        sklearn_image_uri("eu-central-1", version="latest")


@pytest.mark.parametrize(
    ("version", "tag"),
    [
        ("0.20.0", "0.20.0-cpu-py3"),
        ("0.23-1", "0.23-1-cpu-py3"),
        ("1.4-2", "1.4-2-cpu-py3"),
        # The published tags of newer images also name their Python.
        ("1.4-2-py312", "1.4-2-py312-cpu-py3"),
        ("1.4-2-py312-cpu-py3", "1.4-2-py312-cpu-py3"),
        ("1.2-1-cpu-py3", "1.2-1-cpu-py3"),
    ],
)
def test_published_sklearn_image_tags_are_accepted(version: str, tag: str) -> None:
    assert sklearn_image_uri("us-west-2", version=version) == (
        f"246618743249.dkr.ecr.us-west-2.amazonaws.com/sagemaker-scikit-learn:{tag}"
    )


@pytest.mark.parametrize("version", ["latest", "1.4-2-py312-gpu-py3", "1.4-2\n", "1.4-2-cpu-py3-cpu-py3", "1.4_2"])
def test_other_sklearn_image_versions_are_refused(version: str) -> None:
    with pytest.raises(BackendError, match="not a version tag"):
        sklearn_image_uri("us-west-2", version=version)


def test_an_unknown_region_has_no_sklearn_image() -> None:
    with pytest.raises(BackendError) as caught:
        sklearn_image_uri("mars-north-1")

    assert caught.value.permanent is True
    assert "'mars-north-1'" in caught.value.message
    assert all(region in caught.value.message for region in SKLEARN_REGISTRIES)


def test_the_backend_uses_the_image_it_is_given(
    s3_bucket: str, recipe: Recipe, inputs: list[InputFile], tmp_path: Path
) -> None:
    image = "123456789012.dkr.ecr.us-east-1.amazonaws.com/controlplane-sklearn:7"
    backend = SageMakerTrainingBackend(bucket=s3_bucket, prefix="", role_arn=ROLE, region=REGION, image_uri=image)
    sent = record_requests(backend.sagemaker, "CreateTrainingJob")

    backend.start(make_spec(recipe, inputs, tmp_path))

    assert sent[0]["AlgorithmSpecification"]["TrainingImage"] == image
    # No prefix: the run's objects sit at the bucket's root.
    assert sent[0]["OutputDataConfig"] == {"S3OutputPath": f"s3://{s3_bucket}/runs/41/output"}


def test_a_local_jobs_status_names_its_directories_as_file_uris(tmp_path: Path) -> None:
    status = JobStatus(
        state="succeeded",
        message="",
        metrics={},
        model_dir=tmp_path / "model",
        output_dir=tmp_path / "output" / "data",
        usage={},
    )

    assert status.model_uri == (tmp_path / "model").resolve().as_uri()
    assert status.output_uri == (tmp_path / "output" / "data").resolve().as_uri()
    assert status.secondary_status == ""
