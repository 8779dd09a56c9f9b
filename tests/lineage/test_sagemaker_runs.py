"""A training run on the SageMaker backend, from launch to registered model, against moto's server over HTTP."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import time

import boto3
import pytest
from django.urls import reverse

from lineage import services
from lineage.models import ModelVersion, Run
from tests.lineage.conftest import upload

pytestmark = pytest.mark.django_db


@pytest.fixture
def sagemaker_settings(aws_env, moto_server, settings):
    s3 = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    s3.create_bucket(Bucket="cp-training")
    settings.AWS_ENDPOINT_URL = moto_server
    settings.SAGEMAKER_ROLE_ARN = "arn:aws:iam::123456789012:role/ControlPlaneSageMaker"
    settings.SAGEMAKER_S3_URL = "s3://cp-training/controlplane"
    return s3


def model_tar(metrics: dict[str, float]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, body in (
            ("model.joblib", b"not really a model, but bytes to hash"),
            (
                "model.json",
                json.dumps(
                    {
                        "recipe": "logistic_regression",
                        "target": "target",
                        "task": "classification",
                        "features": ["a", "b"],
                        "feature_types": {"a": "float", "b": "float"},
                        "classes": [0, 1],
                        "metrics": metrics,
                    }
                ).encode(),
            ),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(body)
            archive.addfile(info, io.BytesIO(body))
    return buffer.getvalue()


def test_sagemaker_run_from_launch_to_model_version(
    api_client_for, users, project, cancer_csv, sagemaker_settings, moto_server
) -> None:
    client = api_client_for(users.data_scientist)
    train = upload(client, project="cancer", dataset="bc", name="bc.csv", content=cancer_csv).json()
    response = client.post(
        reverse("api-run-training-create"),
        {
            "recipe": "logistic_regression",
            "train": train["id"],
            "target": "target",
            "backend": "sagemaker",
            "instance_type": "ml.m5.xlarge",
            "max_runtime_seconds": 1800,
            "model_name": "bc-sm",
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    run = Run.objects.get(pk=response.json()["id"])
    assert str(run.estimated_cost) == "0.1200"  # 1 × ml.m5.xlarge × 0.5 h × $0.23/h = $0.115, shown to the cent

    run = services.run_start(run_id=run.pk)  # the worker's start task, in-process so moto's settings apply
    assert run.backend_job_id.startswith(f"cp-{run.pk}-")
    sagemaker = boto3.client("sagemaker", endpoint_url=moto_server, region_name="us-east-1")
    job = sagemaker.describe_training_job(TrainingJobName=run.backend_job_id)
    tags = {t["Key"]: t["Value"] for t in sagemaker.list_tags(ResourceArn=job["TrainingJobArn"])["Tags"]}
    assert tags["project"] == "cancer" and tags["model"] == "bc-sm" and tags["run"] == str(run.pk)
    assert job["RoleArn"] == "arn:aws:iam::123456789012:role/ControlPlaneSageMaker"
    assert job["ResourceConfig"]["InstanceType"] == "ml.m5.xlarge"
    assert job["StoppingCondition"]["MaxRuntimeInSeconds"] == 1800
    # JSON-encoded, as the SageMaker SDK sends them and the training toolkit decodes them.
    assert json.loads(job["HyperParameters"]["target"]) == "target"
    assert json.loads(job["HyperParameters"]["sagemaker_program"]).endswith(".py")
    assert json.loads(job["HyperParameters"]["missing_values"]) == {"train": [""]}

    # What the training container would leave behind: its log lines and the model archive.
    logs = boto3.client("logs", endpoint_url=moto_server, region_name="us-east-1")
    logs.create_log_group(logGroupName="/aws/sagemaker/TrainingJobs")
    stream = f"{run.backend_job_id}/algo-1-1700000000"
    logs.create_log_stream(logGroupName="/aws/sagemaker/TrainingJobs", logStreamName=stream)
    now = int(time.time() * 1000)
    logs.put_log_events(
        logGroupName="/aws/sagemaker/TrainingJobs",
        logStreamName=stream,
        logEvents=[
            {"timestamp": now, "message": "metric: cv_accuracy=0.95; fold=1"},
            {"timestamp": now + 1, "message": "metric: accuracy=0.9649; step=1"},
        ],
    )
    artifact = model_tar({"accuracy": 0.9649})
    bucket, key = job["ModelArtifacts"]["S3ModelArtifacts"].removeprefix("s3://").split("/", 1)
    sagemaker_settings.put_object(Bucket=bucket, Key=key, Body=artifact)

    run = services.run_poll(run_id=run.pk)  # one poll, outside any chain
    assert run.status == "succeeded", run.status_reason
    version = ModelVersion.objects.get(run=run)
    assert version.artifact_uri == job["ModelArtifacts"]["S3ModelArtifacts"]
    assert version.sha256 == hashlib.sha256(artifact).hexdigest() and version.metrics == {"accuracy": 0.9649}
    # (moto replaces the job's MetricDefinitions, so parsing these lines is tested against Stubber responses in
    # tests/workers.)
    assert "metric: accuracy=0.9649; step=1" in client.get(reverse("api-run-logs", args=[run.pk])).json()["lines"]


def test_sagemaker_not_configured_fails_the_launch_clearly(
    api_client_for, users, project, cancer_csv, settings
) -> None:
    settings.SAGEMAKER_ROLE_ARN = "arn:aws:iam::123456789012:role/x"
    settings.SAGEMAKER_S3_URL = ""
    client = api_client_for(users.data_scientist)
    train = upload(client, project="cancer", dataset="bc", name="bc.csv", content=cancer_csv).json()
    response = client.post(
        reverse("api-run-training-create"),
        {
            "recipe": "logistic_regression",
            "train": train["id"],
            "target": "target",
            "backend": "sagemaker",
            "instance_type": "ml.m5.large",
        },
        format="json",
    )
    assert response.status_code == 400 and "s3:// OBJECT_STORE_URL" in response.json()["error"]["fields"]["backend"][0]
