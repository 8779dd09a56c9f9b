"""The boto3 client factory, AWS error translation, and choosing the object store from OBJECT_STORE_URL."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from botocore.exceptions import (
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ParamValidationError,
    ReadTimeoutError,
)

from workers import aws
from workers.errors import BackendError, ConfigError
from workers.objectstore import (
    LocalObjectStore,
    ObjectStore,
    S3ObjectStore,
    open_object_store,
    validate_object_store_url,
)

REGION = "us-east-1"


def client_error(code: str, message: str = "Something happened", status: int = 400) -> ClientError:
    response = {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}}
    return ClientError(response, "PutObject")  # type: ignore[arg-type]


# translate_client_error


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("Throttling", 400),
        ("ThrottlingException", 400),
        ("RequestLimitExceeded", 503),
        ("TooManyRequestsException", 429),
        ("SlowDown", 503),
        ("ProvisionedThroughputExceededException", 400),
        ("RequestTimeout", 400),
        ("InternalError", 500),
        ("ServiceUnavailable", 503),
    ],
)
def test_throttling_and_transient_codes_are_retryable(code: str, status: int) -> None:
    error = aws.translate_client_error(client_error(code, "Please slow down", status), action="upload s3://b/k")

    assert isinstance(error, BackendError)
    assert error.permanent is False
    assert str(error) == f"Could not upload s3://b/k: AWS returned {code} (Please slow down)"


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_any_server_error_status_is_retryable(status: int) -> None:
    assert aws.translate_client_error(client_error("SomethingNew", status=status), action="x").permanent is False


def test_a_bare_5xx_code_from_a_head_request_is_retryable() -> None:
    response = {"Error": {"Code": "503", "Message": "Service Unavailable"}, "ResponseMetadata": {}}
    error = aws.translate_client_error(ClientError(response, "HeadObject"), action="look up s3://b/k")  # type: ignore[arg-type]

    assert error.permanent is False


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("AccessDenied", 403),
        ("NoSuchBucket", 404),
        ("ValidationException", 400),
        ("InvalidBucketName", 400),
        ("ResourceLimitExceeded", 400),
        ("404", 404),
    ],
)
def test_other_codes_are_permanent(code: str, status: int) -> None:
    error = aws.translate_client_error(client_error(code, "No.", status), action="create the training job")

    assert error.permanent is True
    assert "create the training job" in str(error)
    assert code in str(error)
    assert "No." in str(error)


def test_an_error_without_a_message_still_reads_well() -> None:
    response = {"Error": {"Code": "AccessDenied"}, "ResponseMetadata": {"HTTPStatusCode": 403}}
    error = aws.translate_client_error(ClientError(response, "GetObject"), action="read s3://b/k")  # type: ignore[arg-type]

    assert str(error) == "Could not read s3://b/k: AWS returned AccessDenied"


@pytest.mark.parametrize(
    "exc",
    [
        EndpointConnectionError(endpoint_url="https://s3.us-east-1.amazonaws.com"),
        ConnectTimeoutError(endpoint_url="https://s3.us-east-1.amazonaws.com"),
        ReadTimeoutError(endpoint_url="https://s3.us-east-1.amazonaws.com"),
    ],
)
def test_connection_failures_are_retryable(exc: Exception) -> None:
    error = aws.translate_botocore_error(exc, action="upload s3://b/k")  # type: ignore[arg-type]

    assert error.permanent is False
    assert str(error).startswith("Could not upload s3://b/k: ")
    assert "s3.us-east-1.amazonaws.com" in str(error)


@pytest.mark.parametrize("exc", [NoCredentialsError(), ParamValidationError(report="Bucket is required")])
def test_other_botocore_errors_are_permanent(exc: Exception) -> None:
    assert aws.translate_botocore_error(exc, action="upload s3://b/k").permanent is True  # type: ignore[arg-type]


def test_aws_errors_translates_inside_the_block_and_keeps_the_cause() -> None:
    original = client_error("SlowDown", status=503)

    with pytest.raises(BackendError) as caught, aws.aws_errors("list s3://b"):
        raise original

    assert caught.value.permanent is False
    assert caught.value.__cause__ is original
    with pytest.raises(BackendError) as caught_botocore, aws.aws_errors("list s3://b"):
        raise NoCredentialsError()
    assert caught_botocore.value.permanent is True


# aws_client


@pytest.fixture
def clean_aws_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
    aws.clear_client_cache()
    yield
    aws.clear_client_cache()


def test_client_region_is_the_one_passed_in_never_the_environment(
    clean_aws_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_REGION", "eu-central-1")
    assert aws.aws_client("sts", region="ap-south-1").meta.region_name == "ap-south-1"
    with pytest.raises(TypeError):
        aws.aws_client("sts")  # type: ignore[call-arg]


@pytest.mark.parametrize("region", ["", "US-EAST-1", "us-east-1\n", "useast1", "eu-west", "us-east-1 "])
def test_a_malformed_region_is_a_config_error_naming_aws_region(clean_aws_env: None, region: str) -> None:
    with pytest.raises(ConfigError, match="AWS_REGION"):
        aws.aws_client("s3", region=region)


def test_client_endpoint_comes_from_aws_endpoint_url_and_empty_means_aws(
    clean_aws_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "")
    assert aws.aws_client("s3", region=REGION).meta.endpoint_url.endswith(".amazonaws.com")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:4566")
    assert aws.aws_client("s3", region=REGION).meta.endpoint_url == "http://127.0.0.1:4566"
    assert (
        aws.aws_client("s3", region=REGION, endpoint_url="http://localhost:9000").meta.endpoint_url
        == "http://localhost:9000"
    )


def test_clients_use_standard_retries_and_timeouts(clean_aws_env: None) -> None:
    config = aws.aws_client("sagemaker", region=REGION).meta.config

    # botocore stores max_attempts (retries after the first try) as total_max_attempts (every try).
    assert config.retries == {"mode": "standard", "total_max_attempts": 6}
    assert (config.connect_timeout, config.read_timeout) == (5, 60)
    assert aws.aws_client("s3", region=REGION).meta.config.signature_version == "s3v4"


def test_s3_checksums_are_only_when_required_through_an_s3_compatible_endpoint(clean_aws_env: None) -> None:
    compatible = aws.aws_client("s3", region=REGION, endpoint_url="http://127.0.0.1:9000").meta.config
    assert (compatible.request_checksum_calculation, compatible.response_checksum_validation) == (
        "when_required",
        "when_required",
    )
    assert compatible.signature_version == "s3v4"
    for endpoint in (None, "https://s3.eu-west-1.amazonaws.com", "https://s3.cn-north-1.amazonaws.com.cn"):
        real = aws.aws_client("s3", region=REGION, endpoint_url=endpoint).meta.config
        assert real.request_checksum_calculation == "when_supported", endpoint


def test_clients_are_cached_per_service_region_and_endpoint(clean_aws_env: None) -> None:
    s3 = aws.aws_client("s3", region=REGION)

    assert aws.aws_client("s3", region="us-east-1") is s3
    assert aws.aws_client("s3", region="eu-west-1") is not s3
    assert aws.aws_client("s3", region=REGION, endpoint_url="http://127.0.0.1:4566") is not s3
    assert aws.aws_client("ecs", region=REGION) is not s3
    aws.clear_client_cache()
    assert aws.aws_client("s3", region=REGION) is not s3


def test_concurrent_first_calls_share_one_client(clean_aws_env: None) -> None:
    barrier = threading.Barrier(16)
    clients: list[object] = []

    def build() -> None:
        barrier.wait()
        clients.append(aws.aws_client("logs", region=REGION))

    threads = [threading.Thread(target=build) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert len(clients) == 16
    assert len({id(client) for client in clients}) == 1


# open_object_store and validate_object_store_url

BAD_URLS = [
    "",
    "   ",
    "var/objects",
    "/var/objects",
    "file:var/objects",
    "file://var/objects",
    "file://host.example/var/objects",
    "file:///var/objects?mode=fast",
    " file:///var/objects",
    "s3://",
    "s3:///prefix",
    "s3://ab",
    "s3://My_Bucket",
    "s3://bucket..name",
    "s3://-bucket",
    "s3://192.168.1.10",
    "s3://xn--bucket",
    "s3://" + "b" * 64,
    "s3://user@bucket",
    "s3://bucket:9000",
    "s3://bucket/a/../b",
    "s3://bucket/a//b",
    "http://example.com/objects",
    "gs://bucket/prefix",
    "s3://bucket\n/prefix",
]


@pytest.mark.parametrize("url", BAD_URLS)
def test_bad_object_store_urls_give_one_line_naming_the_setting_and_accepted_forms(url: str, tmp_path: Path) -> None:
    for call in (validate_object_store_url, open_object_store):
        with pytest.raises(ConfigError) as caught:
            call(url)

        message = str(caught.value)
        assert isinstance(caught.value, ValueError)
        assert "\n" not in message
        assert message.startswith("OBJECT_STORE_URL ")
        assert "file:///absolute/path" in message
        assert "s3://bucket[/prefix]" in message


def test_validating_a_file_url_creates_nothing(tmp_path: Path) -> None:
    root = tmp_path / "not" / "yet"

    validate_object_store_url(root.as_uri())

    assert not (tmp_path / "not").exists()


def test_a_file_url_opens_a_local_store_at_that_directory(tmp_path: Path) -> None:
    root = tmp_path / "my objects"

    store = open_object_store(root.as_uri(), download_base_url="http://portal.test/dl", signing_key="k")

    assert isinstance(store, LocalObjectStore)
    assert isinstance(store, ObjectStore)
    assert store.root == root
    assert store.url == root.as_uri()
    assert root.is_dir()
    assert store.download_url("k").startswith("http://portal.test/dl/k?")


@pytest.mark.parametrize(
    ("url", "bucket", "prefix", "store_url"),
    [
        ("s3://my-bucket", "my-bucket", "", "s3://my-bucket"),
        ("s3://my-bucket/", "my-bucket", "", "s3://my-bucket"),
        ("s3://my.bucket-1/ml/objects", "my.bucket-1", "ml/objects/", "s3://my.bucket-1/ml/objects/"),
        ("s3://my-bucket/ml/objects/", "my-bucket", "ml/objects/", "s3://my-bucket/ml/objects/"),
    ],
)
def test_an_s3_url_opens_an_s3_store_on_that_bucket_and_prefix(
    aws_env: str, url: str, bucket: str, prefix: str, store_url: str
) -> None:
    validate_object_store_url(url)
    store = open_object_store(url, region="eu-west-1")

    assert isinstance(store, S3ObjectStore)
    assert isinstance(store, ObjectStore)
    assert (store.bucket, store.prefix, store.url) == (bucket, prefix, store_url)
    # The region is settings.AWS_REGION handed in, whatever the environment says (aws_env sets us-east-1).
    assert store.region == "eu-west-1"


def test_an_s3_url_without_a_region_is_a_config_error(aws_env: str) -> None:
    with pytest.raises(ConfigError, match="AWS_REGION"):
        open_object_store("s3://my-bucket/objects")


# settings.AWS_REGION: the one place the region is read


def settings_region(**env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k not in ("AWS_REGION", "AWS_DEFAULT_REGION", "DATABASE_URL")}
    environment.update(DJANGO_SETTINGS_MODULE="controlplane.settings.local", **env)
    return subprocess.run(
        [sys.executable, "-c", "from django.conf import settings; print(settings.AWS_REGION)"],
        cwd=Path(__file__).resolve().parents[2],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_settings_region_agrees_with_what_the_aws_cli_would_use() -> None:
    # Only AWS_DEFAULT_REGION set: the settings and a boto3 left to itself used to pick us-east-1 and eu-west-1.
    assert settings_region(AWS_DEFAULT_REGION="eu-west-1").stdout.strip() == "eu-west-1"
    assert settings_region(AWS_DEFAULT_REGION="eu-west-1", AWS_REGION="eu-central-1").stdout.strip() == "eu-central-1"
    assert settings_region().stdout.strip() == "us-east-1"
    refused = settings_region(AWS_REGION="Frankfurt")
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines() == [
        "configuration error: AWS_REGION='Frankfurt' is not valid; expected an AWS region name such as us-east-1 or "
        "eu-central-1"
    ]


# The operations guide's IAM policy against the calls the code makes

ROOT = Path(__file__).resolve().parents[2]
# What each AWS call the workers make needs, as the IAM service authorization reference lists it.
ACTIONS_FOR_CALL: dict[str, set[str]] = {
    "head_object": {"s3:GetObject"},
    # With VersionId (pinned objects in versioned buckets) GetObject needs s3:GetObjectVersion.
    "get_object": {"s3:GetObject", "s3:GetObjectVersion"},
    "put_object": {"s3:PutObject"},
    "create_multipart_upload": {"s3:PutObject"},
    "upload_part": {"s3:PutObject"},
    "complete_multipart_upload": {"s3:PutObject"},
    "abort_multipart_upload": {"s3:AbortMultipartUpload"},
    "list_multipart_uploads": {"s3:ListBucketMultipartUploads"},
    "head_bucket": {"s3:ListBucket"},
    "get_bucket_location": {"s3:GetBucketLocation"},
    "get_bucket_versioning": {"s3:GetBucketVersioning"},
    "list_objects_v2": {"s3:ListBucket"},
    "list_object_versions": {"s3:ListBucketVersions"},
    # Managed transfers: PutObject or a multipart upload (aborted on failure); HeadObject then GetObject.
    "upload_file": {"s3:PutObject", "s3:AbortMultipartUpload"},
    "download_file": {"s3:GetObject"},
    # Tags on create need AddTags; the job runs as SAGEMAKER_ROLE_ARN, which the caller passes.
    "create_training_job": {"sagemaker:CreateTrainingJob", "sagemaker:AddTags", "iam:PassRole"},
    "describe_training_job": {"sagemaker:DescribeTrainingJob"},
    "stop_training_job": {"sagemaker:StopTrainingJob"},
    # The approval mirror (workers/registry): tags on create need AddTags here too.
    "describe_model_package_group": {"sagemaker:DescribeModelPackageGroup"},
    "create_model_package_group": {"sagemaker:CreateModelPackageGroup", "sagemaker:AddTags"},
    "create_model_package": {"sagemaker:CreateModelPackage", "sagemaker:AddTags"},
    "list_model_packages": {"sagemaker:ListModelPackages"},
    "describe_model_package": {"sagemaker:DescribeModelPackage"},
    "update_model_package": {"sagemaker:UpdateModelPackage"},
    "describe_log_streams": {"logs:DescribeLogStreams"},
    "get_log_events": {"logs:GetLogEvents"},
    # Deployments on ECS Fargate (workers/deploy/fargate.py): the task definition passes both of its roles, and a
    # service for traffic-shifting strategies passes the load balancer role.
    "register_task_definition": {"ecs:RegisterTaskDefinition", "ecs:TagResource", "iam:PassRole"},
    "describe_task_definition": {"ecs:DescribeTaskDefinition"},
    "tag_resource": {"ecs:TagResource"},
    "untag_resource": {"ecs:UntagResource"},
    "create_service": {"ecs:CreateService", "ecs:TagResource", "iam:PassRole"},
    "update_service": {"ecs:UpdateService", "iam:PassRole"},
    "describe_services": {"ecs:DescribeServices"},
    "list_service_deployments": {"ecs:ListServiceDeployments"},
    "describe_service_deployments": {"ecs:DescribeServiceDeployments"},
    "describe_service_revisions": {"ecs:DescribeServiceRevisions"},
    "continue_service_deployment": {"ecs:ContinueServiceDeployment"},
    "stop_service_deployment": {"ecs:StopServiceDeployment"},
    "list_tasks": {"ecs:ListTasks"},
    "describe_tasks": {"ecs:DescribeTasks"},
    "describe_rules": {"elasticloadbalancing:DescribeRules"},
    "describe_load_balancers": {"elasticloadbalancing:DescribeLoadBalancers"},
    # The target groups' health check on /ping, read and (when it checks something else) set on the first deploy.
    "describe_target_groups": {"elasticloadbalancing:DescribeTargetGroups"},
    "modify_target_group": {"elasticloadbalancing:ModifyTargetGroup"},
    "register_scalable_target": {"application-autoscaling:RegisterScalableTarget"},
    "deregister_scalable_target": {"application-autoscaling:DeregisterScalableTarget"},
    "describe_scalable_targets": {"application-autoscaling:DescribeScalableTargets"},
    "put_scaling_policy": {"application-autoscaling:PutScalingPolicy"},
    "delete_scaling_policy": {"application-autoscaling:DeleteScalingPolicy"},
    "describe_scaling_policies": {"application-autoscaling:DescribeScalingPolicies"},
    # The metrics pull (workers/metrics/cloudwatch.py): GetMetricData takes no resource-level permissions.
    "get_metric_data": {"cloudwatch:GetMetricData"},
}


def calls_the_workers_make() -> set[str]:
    """Every S3, SageMaker, CloudWatch Logs, ECS, Application Auto Scaling, ELB and CloudWatch operation (and managed
    transfer) called anywhere under workers/."""
    import ast

    import botocore.session
    from botocore import xform_name

    session = botocore.session.get_session()
    operations = {
        xform_name(name)
        for service in ("s3", "sagemaker", "logs", "ecs", "application-autoscaling", "elbv2", "cloudwatch")
        for name in session.get_service_model(service).operation_names
    }
    found: set[str] = set()
    for path in (ROOT / "workers").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            name = node.func.attr
            # The Fargate backend names each operation to its one caller: self._call(client, "update_service", …).
            if name in ("_call", "_ignore_missing") and len(node.args) >= 2:
                argument = node.args[1]
                assert isinstance(argument, ast.Constant), f"{path}: {name} with a computed operation"
                found.add(str(argument.value))
                continue
            # Only calls on a boto3 client (self.s3, self.sagemaker, self.logs_client, self.ecs, client, aws_client()).
            if not re.search(r"client|s3|sagemaker|logs|ecs|autoscaling|elbv2", ast.unparse(node.func.value)):
                continue
            if name in ("get_paginator", "generate_presigned_url") and node.args:
                argument = node.args[0]
                assert isinstance(argument, ast.Constant), f"{path}: {name} with a computed operation"
                found.add(str(argument.value))
            elif name in operations or name in ("upload_file", "download_file", "upload_fileobj", "download_fileobj"):
                found.add(name)
    return found


def policy_actions(heading: str) -> set[str]:
    """The actions of the JSON policy under `heading` in the operations guide."""
    text = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    section = text[text.index(heading) :]
    block = section[section.index("```json") + len("```json") : section.index("```", section.index("```json") + 7)]
    actions: set[str] = set()
    for statement in json.loads(block)["Statement"]:
        assert statement["Effect"] == "Allow"
        listed = statement["Action"]
        actions |= {listed} if isinstance(listed, str) else set(listed)
    return actions


def test_the_documented_policy_allows_every_call_the_code_makes() -> None:
    calls = calls_the_workers_make()
    # A call this table does not know is a new permission someone must add to the guide.
    assert calls - set(ACTIONS_FOR_CALL) == set()
    assert {
        "get_object",
        "create_training_job",
        "get_log_events",
        "list_object_versions",
        "update_model_package",
        "get_metric_data",
    } <= calls
    needed = set().union(*(ACTIONS_FOR_CALL[call] for call in calls))
    assert needed - policy_actions("### The role the web and worker processes run as") == set()


def test_the_documented_execution_role_can_run_a_job() -> None:
    actions = policy_actions("### The SageMaker execution role")
    assert {"s3:GetObject", "s3:PutObject", "s3:ListBucket", "cloudwatch:PutMetricData"} <= actions
    assert {"logs:CreateLogStream", "logs:PutLogEvents", "ecr:BatchGetImage"} <= actions


def test_the_guide_says_which_uploads_are_conditional() -> None:
    guide = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    object_store = (ROOT / "workers" / "objectstore" / "s3.py").read_text(encoding="utf-8")
    training = (ROOT / "workers" / "training" / "sagemaker.py").read_text(encoding="utf-8")
    # The object store's single and multipart writes are conditional; the SageMaker backend's copies are not.
    assert object_store.count('IfNoneMatch="*"') == 2
    assert "IfNoneMatch" not in training and "upload_file(" in training
    assert "`If-None-Match: *`" in guide and "plain managed uploads without `If-None-Match`" in guide
