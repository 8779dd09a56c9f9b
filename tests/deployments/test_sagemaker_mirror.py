"""Approval requests mirrored to the SageMaker Model Registry on the aws backend: through moto's server over real
HTTP with the same boto3 code, and botocore's Stubber where moto does not model a field (package tags) or a
behaviour (throttling)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from botocore.client import BaseClient
from botocore.model import Shape
from botocore.stub import ANY, Stubber
from celery.exceptions import Retry
from django.db.models import F

from controlplane import backends
from controlplane import services as controlplane_services
from deployments import services, tasks
from deployments.models import ApprovalRequest
from lineage.models import ModelVersion, Run
from tests.deployments.conftest import make_model_version
from workers import aws
from workers.errors import BackendError
from workers.registry import PackageSpec, clean_text, group_name_for
from workers.registry import sagemaker as registry_module
from workers.registry.sagemaker import SageMakerModelRegistry

pytestmark = pytest.mark.django_db

REGION = "us-east-1"
WHEN = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/controlplane-serving:1.4.0"


@pytest.fixture
def aws_backend(s3_bucket: str, moto_server: str, settings: Any) -> Iterator[Any]:
    """The aws backend: models stored in the moto bucket, the mirror on moto's SageMaker."""
    settings.CONTROLPLANE_BACKEND = "aws"
    settings.OBJECT_STORE_URL = f"s3://{s3_bucket}/cp"
    settings.AWS_ENDPOINT_URL = moto_server
    settings.AWS_REGION = REGION
    settings.SERVING_IMAGE = IMAGE
    backends.object_store.cache_clear()
    yield settings
    backends.object_store.cache_clear()


@pytest.fixture
def sagemaker(aws_backend: Any, moto_server: str) -> BaseClient:
    """A client of the test's own, to look at what the mirror made."""
    return boto3.client("sagemaker", endpoint_url=moto_server, region_name=REGION)


@pytest.fixture
def project(users: Any) -> Any:
    return controlplane_services.project_create(
        actor=users.admin, name="Breast cancer", slug="bc", cost_tags={"team": "ml-platform"}
    )


@pytest.fixture
def s3_version(aws_backend: Any, project: Any, users: Any) -> ModelVersion:
    version = make_model_version(project, users.data_scientist)
    assert version.artifact_uri.startswith("s3://controlplane-test/cp/models/")
    return version


def request_promotion(users: Any, version: ModelVersion, environment: str = "staging") -> ApprovalRequest:
    return services.approval_request_create(
        actor=users.data_scientist,
        model_version_id=version.pk,
        environment=environment,
        justification="better recall on the holdout",
    )


def sync(request: ApprovalRequest) -> ApprovalRequest:
    done = services.approval_mirror_sync(request_id=request.pk)
    assert done is not None
    return done


def packages(sagemaker: BaseClient, version: ModelVersion) -> list[dict[str, Any]]:
    group = group_name_for(version.registered_model.project.slug, version.registered_model.slug)
    return sagemaker.list_model_packages(ModelPackageGroupName=group)["ModelPackageSummaryList"]


class FakeTask:
    """The bound task's retry bookkeeping, as Celery passes it (see tests/controlplane/test_transitions.py)."""

    max_retries = 12

    def __init__(self, retries: int = 0) -> None:
        self.request = type("request", (), {"retries": retries})()

    def retry(self, exc: BaseException, countdown: int) -> Retry:
        return Retry(exc=exc, when=countdown)


def run_task(request_id: int, *, retries: int = 0) -> None:
    """The mirror task's body with Celery's retry bookkeeping, run here so the test's AWS settings apply."""
    tasks.approval_mirror_task.run.__func__(FakeTask(retries), request_id)  # type: ignore[attr-defined]


# --- through moto's server -----------------------------------------------------------------------------------


def test_a_request_becomes_a_pending_model_package_in_its_models_group(users, s3_version, staging, sagemaker) -> None:
    req = request_promotion(users, s3_version)
    assert req.mirror_status == "pending" and req.mirror_arn == ""
    done = sync(req)
    assert done.mirror_status == "synced" and done.mirror_error == ""
    assert done.mirror_approval_status == "PendingManualApproval"
    assert re.fullmatch(
        r"arn:aws:sagemaker:us-east-1:\d{12}:model-package/cp-bc-bc-classifier-[0-9a-f]{8}/1", done.mirror_arn
    )

    package = sagemaker.describe_model_package(ModelPackageName=done.mirror_arn)
    assert package["ModelApprovalStatus"] == "PendingManualApproval"
    assert package["CustomerMetadataProperties"] == {
        "model_version_id": str(s3_version.pk),
        "sha256": s3_version.sha256,
        "environment": "staging",
        "approval_request_id": str(req.pk),
    }
    container = package["InferenceSpecification"]["Containers"][0]
    assert container == {"Image": IMAGE, "ModelDataUrl": s3_version.artifact_uri}
    assert package["InferenceSpecification"]["SupportedContentTypes"] == ["application/json", "text/csv"]
    assert "bc/bc-classifier v1 for staging" in package["ModelPackageDescription"]

    group = sagemaker.describe_model_package_group(ModelPackageGroupName=package["ModelPackageGroupName"])
    tags = sagemaker.list_tags(ResourceArn=group["ModelPackageGroupArn"])["Tags"]
    assert {(t["Key"], t["Value"]) for t in tags} == {
        ("project", "bc"),
        ("model", "bc-classifier"),
        ("team", "ml-platform"),
    }


def test_approval_marks_the_package_approved_naming_the_approvers(users, s3_version, production, sagemaker) -> None:
    staging_request = request_promotion(users, s3_version)
    services.approval_decide(actor=users.approver, request_id=staging_request.pk, verdict="approve", comment="ok")
    services.approval_finish(request_id=staging_request.pk)
    assert sync(staging_request).mirror_approval_status == "Approved"
    req = request_promotion(users, s3_version, "production")
    assert sync(req).mirror_approval_status == "PendingManualApproval"
    services.approval_decide(actor=users.approver, request_id=req.pk, verdict="approve", comment="metrics hold up")
    services.approval_decide(actor=users.approver2, request_id=req.pk, verdict="approve", comment="schema matches")
    finished = services.approval_finish(request_id=req.pk)
    assert finished is not None and finished.status == "approved"
    # The transition queued the mirror again.
    assert ApprovalRequest.objects.get(pk=req.pk).mirror_status == "pending"

    done = sync(req)
    assert done.mirror_status == "synced" and done.mirror_approval_status == "Approved"
    package = sagemaker.describe_model_package(ModelPackageName=done.mirror_arn)
    assert package["ModelApprovalStatus"] == "Approved"
    assert package["ApprovalDescription"] == ("approved by alex, blair: metrics hold up (alex); schema matches (blair)")
    # Both environments' packages live in the model's one group.
    assert [p["ModelApprovalStatus"] for p in packages(sagemaker, s3_version)] == ["Approved", "Approved"]


def test_a_rejection_marks_the_package_rejected_with_the_reason(users, s3_version, staging, sagemaker) -> None:
    req = request_promotion(users, s3_version)
    sync(req)
    services.approval_decide(actor=users.approver, request_id=req.pk, verdict="reject", comment="recall\ntoo low")
    assert ApprovalRequest.objects.get(pk=req.pk).mirror_status == "pending"
    done = sync(req)
    assert done.mirror_status == "synced" and done.mirror_approval_status == "Rejected"
    package = sagemaker.describe_model_package(ModelPackageName=done.mirror_arn)
    assert package["ModelApprovalStatus"] == "Rejected"
    # A newline is not allowed in ApprovalDescription: the comment arrives on one line.
    assert package["ApprovalDescription"] == "rejected by alex: recall too low"


def test_withdrawn_and_expired_requests_are_rejected_in_the_registry(users, s3_version, staging, sagemaker) -> None:
    req = request_promotion(users, s3_version)
    sync(req)
    services.approval_withdraw(actor=users.data_scientist, request_id=req.pk, reason="retraining with more data")
    done = sync(req)
    package = sagemaker.describe_model_package(ModelPackageName=done.mirror_arn)
    assert package["ModelApprovalStatus"] == "Rejected"
    assert package["ApprovalDescription"] == "withdrawn: retraining with more data"

    again = request_promotion(users, s3_version)
    ApprovalRequest.objects.filter(pk=again.pk).update(expires_at=again.created_at)
    assert services.approval_requests_expire() == 1
    done = sync(again)
    package = sagemaker.describe_model_package(ModelPackageName=done.mirror_arn)
    assert package["ModelApprovalStatus"] == "Rejected" and package["ApprovalDescription"].startswith("expired on ")


def test_syncing_again_or_after_a_lost_response_makes_no_second_package(users, s3_version, staging, sagemaker) -> None:
    req = request_promotion(users, s3_version)
    first = sync(req)
    assert sync(req).mirror_arn == first.mirror_arn
    # The create succeeded but its response never reached us: the worker kept no ARN.
    ApprovalRequest.objects.filter(pk=req.pk).update(mirror_arn="", mirror_approval_status="", mirror_status="pending")
    found = sync(req)
    assert found.mirror_arn == first.mirror_arn and found.mirror_approval_status == "PendingManualApproval"
    assert len(packages(sagemaker, s3_version)) == 1
    # Another request's package in the same group is never mistaken for this one's.
    other = make_model_version(s3_version.registered_model.project, users.data_scientist)
    other_request = request_promotion(users, other)
    assert sync(other_request).mirror_arn not in ("", first.mirror_arn)
    assert len(packages(sagemaker, s3_version)) == 2


def test_a_request_decided_during_the_sync_ends_mirrored_as_decided(users, s3_version, staging, sagemaker) -> None:
    req = request_promotion(users, s3_version)
    client = aws.aws_client("sagemaker", region=REGION)

    def withdraw_meanwhile(**_: Any) -> None:
        # The requester withdraws while the worker is creating the package (its queued task finds the lease held).
        services.approval_withdraw(actor=users.data_scientist, request_id=req.pk)
        assert services.approval_mirror_sync(request_id=req.pk) is None

    client.meta.events.register_first("before-call.sagemaker.CreateModelPackage", withdraw_meanwhile)
    try:
        done = sync(req)
    finally:
        client.meta.events.unregister("before-call.sagemaker.CreateModelPackage", withdraw_meanwhile)
    assert done.status == "withdrawn" and done.mirror_status == "synced" and done.mirror_approval_status == "Rejected"
    assert sagemaker.describe_model_package(ModelPackageName=done.mirror_arn)["ModelApprovalStatus"] == "Rejected"


def test_a_worker_whose_lease_was_taken_over_writes_nothing(users, s3_version, staging, sagemaker) -> None:
    req = request_promotion(users, s3_version)
    client = aws.aws_client("sagemaker", region=REGION)

    def taken_over(**_: Any) -> None:
        ApprovalRequest.objects.filter(pk=req.pk).update(attempt=F("attempt") + 1)

    client.meta.events.register("after-call.sagemaker.CreateModelPackage", taken_over)
    try:
        assert services.approval_mirror_sync(request_id=req.pk) is None
    finally:
        client.meta.events.unregister("after-call.sagemaker.CreateModelPackage", taken_over)
    stale = ApprovalRequest.objects.get(pk=req.pk)
    assert stale.mirror_arn == "" and stale.mirror_status == "pending"
    # The worker that holds the mirror now finds the package the stale one made.
    ApprovalRequest.objects.filter(pk=req.pk).update(claimed_at=None)
    assert sync(req).mirror_status == "synced"
    assert len(packages(sagemaker, s3_version)) == 1


def test_throttling_is_retried_and_the_mirror_stays_pending(users, s3_version, staging, sagemaker) -> None:
    req = request_promotion(users, s3_version)
    sync(req)
    services.approval_decide(actor=users.approver, request_id=req.pk, verdict="approve", comment="fine")
    services.approval_finish(request_id=req.pk)
    # moto never throttles; the Stubber answers the shared client the worker uses.
    client = aws.aws_client("sagemaker", region=REGION)
    with Stubber(client) as stub:
        stub.add_client_error(
            "update_model_package",
            service_error_code="ThrottlingException",
            http_status_code=400,
            service_message="Rate exceeded",
        )
        with pytest.raises(BackendError) as raised:
            services.approval_mirror_sync(request_id=req.pk)
        assert raised.value.permanent is False and "ThrottlingException" in raised.value.message
        stub.add_client_error("update_model_package", service_error_code="ThrottlingException", http_status_code=400)
        with pytest.raises(Retry):
            run_task(req.pk)
        stub.assert_no_pending_responses()
    waiting = ApprovalRequest.objects.get(pk=req.pk)
    assert waiting.mirror_status == "pending" and waiting.mirror_error == ""
    # The lease was given back, so the retry need not wait for it to expire.
    assert waiting.claimed_at is None and waiting.enqueued_at is not None

    run_task(req.pk, retries=1)
    done = ApprovalRequest.objects.get(pk=req.pk)
    assert done.mirror_status == "synced" and done.mirror_approval_status == "Approved"
    assert sagemaker.describe_model_package(ModelPackageName=done.mirror_arn)["ModelApprovalStatus"] == "Approved"


def test_throttling_past_the_last_retry_fails_the_mirror(users, s3_version, staging) -> None:
    req = request_promotion(users, s3_version)
    with Stubber(aws.aws_client("sagemaker", region=REGION)) as stub:
        stub.add_client_error(
            "describe_model_package_group", service_error_code="ThrottlingException", http_status_code=400
        )
        with pytest.raises(BackendError):
            run_task(req.pk, retries=FakeTask.max_retries)
    failed = ApprovalRequest.objects.get(pk=req.pk)
    assert failed.mirror_status == "failed" and "ThrottlingException" in failed.mirror_error


def test_without_a_serving_image_the_mirror_fails_saying_so(users, s3_version, staging, sagemaker, settings) -> None:
    settings.SERVING_IMAGE = ""
    req = request_promotion(users, s3_version)
    with pytest.raises(BackendError) as raised:
        run_task(req.pk)
    assert raised.value.permanent
    failed = ApprovalRequest.objects.get(pk=req.pk)
    assert failed.mirror_status == "failed" and failed.mirror_arn == ""
    assert failed.mirror_error.startswith("SERVING_IMAGE is not set: the SageMaker model package needs the serving")
    assert sagemaker.list_model_package_groups()["ModelPackageGroupSummaryList"] == []


def test_an_artifact_outside_s3_fails_the_mirror_saying_so(users, s3_version, staging, sagemaker) -> None:
    run = Run.objects.create(
        project=s3_version.run.project,
        kind="training",
        recipe="logistic_regression",
        recipe_version="2",
        recipe_fingerprint="0" * 64,
        created_by=users.data_scientist,
        status="succeeded",
    )
    local = ModelVersion.objects.create(
        registered_model=s3_version.registered_model,
        number=2,
        run=run,
        artifact_uri="file:///var/objects/models/x.joblib",
        sha256=s3_version.sha256,
        size=s3_version.size,
        input_schema=s3_version.input_schema,
        metrics=s3_version.metrics,
        created_by=users.data_scientist,
    )
    req = request_promotion(users, local)
    with pytest.raises(BackendError):
        run_task(req.pk)
    failed = ApprovalRequest.objects.get(pk=req.pk)
    assert failed.mirror_status == "failed"
    assert (
        "'file:///var/objects/models/x.joblib', not in S3" in failed.mirror_error
        and "ModelDataUrl" in failed.mirror_error
    )


def test_the_local_backend_mirrors_nothing(users, project, staging, settings, tmp_path) -> None:
    settings.CONTROLPLANE_BACKEND = "local"
    settings.OBJECT_STORE_URL = f"file://{tmp_path}"
    backends.object_store.cache_clear()
    try:
        req = request_promotion(users, make_model_version(project, users.data_scientist))
    finally:
        backends.object_store.cache_clear()
    assert req.mirror_status == "" and services.approval_mirror_sync(request_id=req.pk) is None


# --- what we send, checked against SageMaker's service model (moto keeps no package tags, checks no lengths) ----


def assert_fits(shape: Shape, value: Any, where: str = "") -> None:
    """`value` meets `shape`'s length limits and (where Python's re can read it) its pattern, which botocore's own
    validation does not check."""
    if shape.type_name == "structure":
        for name, member in value.items():
            assert name in shape.members, f"{where}{name} is not a field"
            assert_fits(shape.members[name], member, f"{where}{name}.")
    elif shape.type_name == "list":
        assert len(value) <= shape.metadata.get("max", len(value)), where
        for item in value:
            assert_fits(shape.member, item, where)
    elif shape.type_name == "map":
        assert len(value) <= shape.metadata.get("max", len(value)), where
        for key, item in value.items():
            assert_fits(shape.key, key, where)
            assert_fits(shape.value, item, where)
    elif shape.type_name == "string":
        assert shape.metadata.get("min", 0) <= len(value) <= shape.metadata.get("max", len(value)), (where, value)
        if "enum" in shape.metadata:
            assert value in shape.metadata["enum"], (where, value)
        pattern = shape.metadata.get("pattern")
        if pattern and "\\p{" not in pattern:
            assert re.fullmatch(pattern, value), (where, pattern, value)


@pytest.fixture
def stubbed(aws_env: str) -> Iterator[tuple[SageMakerModelRegistry, Stubber, list[tuple[str, dict[str, Any]]]]]:
    client = boto3.session.Session(region_name=REGION).client("sagemaker", endpoint_url=aws_env)
    sent: list[tuple[str, dict[str, Any]]] = []
    client.meta.events.register(
        "provide-client-params.sagemaker.*", lambda params, model, **_: sent.append((model.name, dict(params)))
    )
    with Stubber(client) as stub:
        yield SageMakerModelRegistry(region=REGION, sagemaker_client=client), stub, sent
        stub.assert_no_pending_responses()
    model = client.meta.service_model
    for operation, params in sent:
        assert_fits(model.operation_model(operation).input_shape, params, f"{operation}.")


def spec(**overrides: Any) -> PackageSpec:
    values: dict[str, Any] = {
        "group_name": group_name_for("bc", "bc-classifier"),
        "group_description": "ControlPlane model bc/bc-classifier",
        "description": "bc/bc-classifier v3 for production: " + "long justification\n" * 100,
        "image": IMAGE,
        "model_data_url": "s3://controlplane-test/cp/models/ab/abcdef.joblib",
        "approval_request_id": "42",
        "customer_metadata": {"model_version_id": "7", "sha256": "a" * 64, "environment": "production"},
        "tags": {"team": "ml-platform", "project": "bc", "model": "bc-classifier", "environment": "production"},
        "group_tags": {"team": "ml-platform", "project": "bc", "model": "bc-classifier"},
        "client_token": "0f8fad5b-d9cb-469f-a165-70867728950e",
    }
    return PackageSpec(**{**values, **overrides})


def test_create_package_sends_what_sagemaker_expects(stubbed) -> None:
    registry, stub, _ = stubbed
    package = spec()
    arn = f"arn:aws:sagemaker:{REGION}:123456789012:model-package/{package.group_name}/1"
    stub.add_response(
        "create_model_package",
        {"ModelPackageArn": arn},
        {
            "ModelPackageGroupName": package.group_name,
            "ModelPackageDescription": ANY,
            "InferenceSpecification": {
                "Containers": [{"Image": IMAGE, "ModelDataUrl": package.model_data_url}],
                "SupportedContentTypes": ["application/json", "text/csv"],
                "SupportedResponseMIMETypes": ["application/json"],
            },
            "ModelApprovalStatus": "PendingManualApproval",
            "CustomerMetadataProperties": {
                "model_version_id": "7",
                "sha256": "a" * 64,
                "environment": "production",
                "approval_request_id": "42",
            },
            "Tags": [
                {"Key": "team", "Value": "ml-platform"},
                {"Key": "project", "Value": "bc"},
                {"Key": "model", "Value": "bc-classifier"},
                {"Key": "environment", "Value": "production"},
            ],
            "ClientToken": package.client_token,
        },
    )
    assert registry.create_package(package) == arn


def test_group_creation_tolerates_a_group_made_meanwhile(stubbed) -> None:
    registry, stub, sent = stubbed
    name = group_name_for("bc", "bc-classifier")
    group_arn = f"arn:aws:sagemaker:{REGION}:123456789012:model-package-group/{name}"
    stub.add_client_error(
        "describe_model_package_group",
        service_error_code="ValidationException",
        service_message=f"ModelPackageGroup {group_arn} does not exist.",
    )
    stub.add_client_error(
        "create_model_package_group",
        service_error_code="ValidationException",
        service_message=f"Model Package Group already exists: {group_arn}",
    )
    stub.add_response(
        "describe_model_package_group",
        {
            "ModelPackageGroupName": name,
            "ModelPackageGroupArn": group_arn,
            "CreationTime": WHEN,
            "CreatedBy": {},
            "ModelPackageGroupStatus": "Completed",
        },
        {"ModelPackageGroupName": name},
    )
    assert registry.ensure_group(name=name, description="a\nb", tags={"project": "bc"}) == group_arn
    created = dict(sent)["CreateModelPackageGroup"]
    assert created["ModelPackageGroupDescription"] == "a b" and created["Tags"] == [{"Key": "project", "Value": "bc"}]


def test_set_approval_sends_a_description_within_the_limit(stubbed) -> None:
    registry, stub, sent = stubbed
    arn = f"arn:aws:sagemaker:{REGION}:123456789012:model-package/cp-bc-bc-classifier-12345678/1"
    stub.add_response(
        "update_model_package",
        {"ModelPackageArn": arn},
        {"ModelPackageArn": arn, "ModelApprovalStatus": "Approved", "ApprovalDescription": ANY},
    )
    registry.set_approval(arn, status="Approved", description="approved by alex, blair: " + "x" * 5000)
    description = dict(sent)["UpdateModelPackage"]["ApprovalDescription"]
    assert (
        len(description) == 1024
        and description.startswith("approved by alex, blair: xxx")
        and description.endswith("…")
    )
    with pytest.raises(ValueError, match="Approved, PendingManualApproval, Rejected"):
        registry.set_approval(arn, status="approved", description="")


def test_a_lost_create_is_found_by_its_request_id_newest_first(stubbed) -> None:
    registry, stub, sent = stubbed
    package = spec()
    base = f"arn:aws:sagemaker:{REGION}:123456789012:model-package/{package.group_name}"
    summaries = [
        {
            "ModelPackageArn": f"{base}/{n}",
            "ModelPackageGroupName": package.group_name,
            "ModelPackageVersion": n,
            "CreationTime": WHEN,
            "ModelPackageStatus": "Completed",
            "ModelApprovalStatus": "PendingManualApproval",
        }
        for n in (3, 2)
    ]
    stub.add_response(
        "list_model_packages",
        {"ModelPackageSummaryList": summaries},
        {"ModelPackageGroupName": package.group_name, "SortBy": "CreationTime", "SortOrder": "Descending"},
    )
    for n, request_id in ((3, "43"), (2, "42")):
        stub.add_response(
            "describe_model_package",
            {
                "ModelPackageName": package.group_name,
                "ModelPackageArn": f"{base}/{n}",
                "CreationTime": WHEN,
                "ModelPackageStatus": "Completed",
                "ModelPackageStatusDetails": {"ValidationStatuses": []},
                "ModelApprovalStatus": "PendingManualApproval",
                "CustomerMetadataProperties": {**package.customer_metadata, "approval_request_id": request_id},
            },
            {"ModelPackageName": f"{base}/{n}"},
        )
    found = registry.find_package(package)
    assert found is not None and found.arn == f"{base}/2" and found.approval_status == "PendingManualApproval"


def test_lengths_follow_the_service_model() -> None:
    model = boto3.session.Session(region_name=REGION).client("sagemaker").meta.service_model
    create = model.operation_model("CreateModelPackage").input_shape.members
    container = create["InferenceSpecification"].members["Containers"].member.members
    update = model.operation_model("UpdateModelPackage").input_shape.members
    assert registry_module.DESCRIPTION_MAX == create["ModelPackageDescription"].metadata["max"]
    assert registry_module.APPROVAL_DESCRIPTION_MAX == update["ApprovalDescription"].metadata["max"]
    assert registry_module.IMAGE_MAX == container["Image"].metadata["max"]
    assert registry_module.MODEL_DATA_URL_MAX == container["ModelDataUrl"].metadata["max"]


@pytest.mark.parametrize(
    ("project", "model"),
    [("bc", "bc-classifier"), ("p" * 63, "m" * 63), ("fraud_eu", "Scorer_v2"), ("a--b", "c")],
)
def test_group_names_are_valid_for_sagemaker(project: str, model: str) -> None:
    name = group_name_for(project, model)
    assert len(name) <= 63 and re.fullmatch(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}", name)
    assert name.startswith("cp-")


def test_slugs_that_read_alike_once_joined_get_different_groups() -> None:
    assert group_name_for("fraud-eu", "scorer") != group_name_for("fraud", "eu-scorer")
    assert group_name_for("bc", "bc-classifier") == group_name_for("bc", "bc-classifier")


def test_clean_text_flattens_control_characters_and_cuts_at_the_limit() -> None:
    assert clean_text("two\nlines\tand\x00more  spaces ", 100) == "two lines and more spaces"
    assert clean_text("abcdef", 4) == "abc…"
