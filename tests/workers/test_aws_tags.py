"""Every AWS resource the aws backend creates carries the cost-allocation tags Cost Explorer groups by.

One walk through the real code paths, from the portal's services down to boto3, against moto's server over HTTP (and
the Stubber for the ECS service-deployment calls moto lacks, as tests/deployments/test_fargate_flow.py): a SageMaker
training run is launched and started, a model version is approved for production (mirrored to the SageMaker Model
Registry) and deployed on Fargate with autoscaling. Every call made on a client workers.aws builds is recorded before
it is sent, through botocore's `provide-client-params` event. Then:

- every create call seen is one this file knows (CREATES); a new create call fails here until its tags are decided;
- each one whose operation takes tags sends the tag keys Cost Explorer's breakdowns need, with the values of the run,
  model version, environment and deployment made here, and the project's own extra cost tag.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
import sklearn
from botocore.client import BaseClient
from botocore.stub import Stubber
from django.urls import reverse

from controlplane import backends
from controlplane import services as controlplane_services
from deployments import services as deployment_services
from deployments.models import ApprovalRequest, Environment
from lineage import services as lineage_services
from lineage.models import Run
from tests.deployments import test_fargate_flow as flow_tests
from tests.deployments.conftest import make_model_version
from tests.deployments.test_deploys import approve
from tests.lineage import conftest as lineage_fixtures
from tests.lineage.conftest import upload
from tests.workers import test_deploy_fargate as fargate_tests
from tests.workers.test_deploy_fargate import NAME, Network, expect_lookup, td
from workers import aws

pytestmark = pytest.mark.django_db

# The fixtures of the backend's and the flow's own tests, as fixtures here too.
network = fargate_tests.network
stub = fargate_tests.stub
stub_client = fargate_tests.stub_client
fargate = flow_tests.fargate
cancer_csv = lineage_fixtures.cancer_csv

# What a create call's tags must say. Keys name the resource's place in Cost Explorer's breakdowns
# (workers.costs.base): project × SERVICE, model × environment, run × deployment.
TAGGED: dict[tuple[str, str], tuple[str, ...]] = {
    # A run is in no environment: its cost shows under its model with environment "" (untagged).
    ("sagemaker", "CreateTrainingJob"): ("project", "model", "run"),
    # A group spans a model's environments and runs; it costs nothing itself.
    ("sagemaker", "CreateModelPackageGroup"): ("project", "model"),
    ("sagemaker", "CreateModelPackage"): ("project", "model", "environment", "run"),
    ("ecs", "RegisterTaskDefinition"): ("project", "model", "environment", "deployment"),
    # A service outlives its deployments; its tasks take their revision's tags (propagateTags, checked below).
    ("ecs", "CreateService"): ("project", "model", "environment"),
    ("application-autoscaling", "RegisterScalableTarget"): ("project", "model", "environment"),
}
# Create calls that send no tags, and why.
UNTAGGED: dict[tuple[str, str], str] = {
    ("application-autoscaling", "PutScalingPolicy"): "a scaling policy takes no tags (not in the service model)",
    # S3 bills storage and requests per bucket; object tags never reach Cost Explorer, and would be billed per tag.
    ("s3", "PutObject"): "objects are not cost-allocated (buckets are, and the system creates none)",
    ("s3", "CreateMultipartUpload"): "likewise",
    ("s3", "UploadPart"): "likewise",
}
CREATES = set(TAGGED) | set(UNTAGGED)
# An operation that makes something: what the walk must know about.
_CREATE = re.compile(r"(?:Create|Register|Put|Start|Run|Copy|Upload|Import|Allocate|Launch|Request|Submit)[A-Z]\w*")
_RECORDER = "test-aws-tags-record"


@dataclass(frozen=True)
class Call:
    service: str
    operation: str
    params: dict[str, Any]
    takes_tags: bool


def sent_tags(params: dict[str, Any]) -> dict[str, str] | None:
    """The tags a request sends, whichever of AWS's shapes it uses ([{Key, Value}], [{key, value}] or a map)."""
    for name in ("Tags", "tags"):
        if name in params:
            value = params[name]
            if isinstance(value, dict):
                return {str(k): str(v) for k, v in value.items()}
            return {str(t.get("Key", t.get("key"))): str(t.get("Value", t.get("value"))) for t in value}
    return None


@contextmanager
def recording(monkeypatch: pytest.MonkeyPatch, *more: BaseClient) -> Iterator[list[Call]]:
    """Every call made from now on, on the clients workers.aws has built, the ones it builds meanwhile, and `more`."""
    calls: list[Call] = []

    def keep(params: dict[str, Any], model: Any, **_: Any) -> None:
        members = model.input_shape.members if model.input_shape is not None else {}
        takes_tags = "Tags" in members or "tags" in members
        calls.append(Call(model.service_model.service_name, model.name, dict(params), takes_tags))

    hooked: list[BaseClient] = []

    def hook(client: BaseClient) -> None:
        client.meta.events.register("provide-client-params", keep, unique_id=_RECORDER)
        hooked.append(client)

    build = boto3.session.Session.client

    def build_and_hook(self: boto3.session.Session, *args: Any, **kwargs: Any) -> BaseClient:
        client = build(self, *args, **kwargs)
        hook(client)
        return client

    monkeypatch.setattr(boto3.session.Session, "client", build_and_hook)
    with aws._clients_lock:
        existing = list(aws._clients.values())
    for client in [*existing, *more]:
        hook(client)
    try:
        yield calls
    finally:
        monkeypatch.setattr(boto3.session.Session, "client", build)
        for client in hooked:
            client.meta.events.unregister("provide-client-params", unique_id=_RECORDER)


@pytest.fixture
def aws_everywhere(fargate: Any, s3_bucket: str, moto_server: str, settings: Any) -> Iterator[Any]:
    """The aws backend throughout: models and datasets in the moto bucket, SageMaker training and the registry
    mirror on moto, Fargate through the flow test's backend."""
    aws.aws_client("s3", region="us-east-1").create_bucket(Bucket="cp-training")
    settings.OBJECT_STORE_URL = f"s3://{s3_bucket}/cp"
    settings.AWS_ENDPOINT_URL = moto_server
    settings.SAGEMAKER_ROLE_ARN = "arn:aws:iam::123456789012:role/ControlPlaneSageMaker"
    settings.SAGEMAKER_S3_URL = "s3://cp-training/controlplane"
    backends.object_store.cache_clear()
    yield settings
    backends.object_store.cache_clear()


@pytest.fixture
def project(users: Any) -> Any:
    return controlplane_services.project_create(
        actor=users.admin, name="Retention", slug="retention", cost_tags={"team": "ml-platform"}
    )


@pytest.fixture
def production(users: Any, network: Network) -> Environment:
    environment = deployment_services.environment_create(
        actor=users.admin,
        data={"name": "production", "order": 20, "approvals_required": 1, "gates": []},
    )
    Environment.objects.filter(pk=environment.pk).update(
        backend_settings=network.settings,
        strategy="canary",
        canary_percent=10.0,
        bake_minutes=5,
        autoscaling_metric="cpu",
        autoscaling_target=60.0,
        min_desired_count=1,
        max_desired_count=4,
    )
    return Environment.objects.get(pk=environment.pk)


def test_every_create_call_of_the_aws_backend_sends_the_cost_allocation_tags(
    aws_everywhere: Any,
    project: Any,
    production: Environment,
    users: Any,
    api_client_for: Any,
    cancer_csv: bytes,
    stub: Stubber,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = api_client_for(users.data_scientist)
    with recording(monkeypatch, stub.client) as calls:
        # A training run on SageMaker, launched as the portal does and started as the worker does.
        train = upload(client, project="retention", dataset="bc", name="bc.csv", content=cancer_csv)
        assert train.status_code == 201, train.content
        launched = client.post(
            reverse("api-run-training-create"),
            {
                "recipe": "logistic_regression",
                "train": train.json()["id"],
                "target": "target",
                "backend": "sagemaker",
                "instance_type": "ml.m5.large",
                "model_name": "churn",
            },
            format="json",
        )
        assert launched.status_code == 201, launched.content
        run = lineage_services.run_start(run_id=launched.json()["id"])
        assert run.backend_job_id, run.status_reason

        # A model version approved for production: its request mirrored to the Model Registry.
        version = make_model_version(
            project, users.data_scientist, model="churn", framework_version=sklearn.__version__
        )
        request = approve(version, production, users)
        assert request.status == "approved" and request.mirror_status == ApprovalRequest.Mirror.PENDING
        mirrored = deployment_services.approval_mirror_sync(request_id=request.pk)
        assert mirrored is not None and mirrored.mirror_status == "synced", mirrored and mirrored.mirror_error

        # Its first deployment on Fargate: a revision, the service, autoscaling.
        deployment = deployment_services.deployment_create(
            actor=users.approver, model_version_id=version.pk, environment="production"
        )
        expect_lookup(stub, [(1, 1)])
        deployment_services.deployment_start(deployment_id=deployment.pk)
        deployment.refresh_from_db()
        assert (deployment.status, deployment.revision) == ("in_progress", td(1)), deployment.status_reason
        assert deployment.service.name == NAME

    run = Run.objects.get(pk=run.pk)
    expected = {
        "project": "retention",
        "model": "churn",
        "environment": "production",
        "team": "ml-platform",  # the project's own cost tag, on everything
    }
    values = {
        ("sagemaker", "CreateTrainingJob"): {**expected, "run": str(run.pk)},
        ("sagemaker", "CreateModelPackage"): {**expected, "run": str(version.run_id)},
        ("ecs", "RegisterTaskDefinition"): {**expected, "deployment": str(deployment.pk)},
    }
    creates = [call for call in calls if _CREATE.fullmatch(call.operation)]
    seen = {(call.service, call.operation) for call in creates}
    assert seen - CREATES == set(), "create calls this test does not know: decide their tags and add them"
    assert set(TAGGED) <= seen, "the walk no longer reaches every tagged create call"
    problems = []
    for call in creates:
        key = (call.service, call.operation)
        tags = sent_tags(call.params)
        if key in UNTAGGED:
            if call.takes_tags and tags is None:
                problems.append(f"{key} takes tags but sends none; tag it or say why not in UNTAGGED")
            continue
        wanted = {name: values.get(key, expected)[name] for name in (*TAGGED[key], "team")}
        if tags is None:
            problems.append(f"{key} sends no tags")
            continue
        wrong = {name: tags.get(name) for name, value in wanted.items() if tags.get(name) != value}
        if wrong:
            problems.append(f"{key} sends {wrong}, not {wanted}")
    assert problems == []
    # Fargate bills tasks: they take the revision's tags, deployment included.
    (service_call,) = [call for call in creates if call.operation == "CreateService"]
    assert service_call.params["propagateTags"] == "TASK_DEFINITION"


def test_the_walk_finds_a_create_call_without_its_tags() -> None:
    """The checks above can fail: a training job without its run tag, or an unknown create call, is found."""
    assert sent_tags({"Tags": [{"Key": "project", "Value": "p"}]}) == {"project": "p"}
    assert sent_tags({"tags": [{"key": "project", "value": "p"}]}) == {"project": "p"}
    assert sent_tags({"Tags": {"project": "p"}}) == {"project": "p"}
    assert sent_tags({"Body": b""}) is None
    assert _CREATE.fullmatch("CreateLogGroup") and ("logs", "CreateLogGroup") not in CREATES
    assert not _CREATE.fullmatch("DescribeTrainingJob") and not _CREATE.fullmatch("UpdateService")
