"""The SageMaker Model Registry: a Model Package Group per registered model, a Model Package per approval request.

Packages are made `PendingManualApproval` and follow the request's decision through UpdateModelPackage. A create
carries a ClientToken and a retry first looks for the package by the request id in its CustomerMetadataProperties,
so a response lost on the way back never leaves two packages for one request.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from botocore.client import BaseClient
from botocore.exceptions import BotoCoreError, ClientError

from workers.aws import aws_client, aws_errors, translate_botocore_error, translate_client_error
from workers.errors import BackendError
from workers.registry.base import APPROVAL_STATUSES, PackageSpec, PackageStatus, clean_text

# Lengths from botocore's service model (tests check them against it): EntityDescription, ApprovalDescription,
# ContainerImage, Url.
DESCRIPTION_MAX = 1024
APPROVAL_DESCRIPTION_MAX = 1024
IMAGE_MAX = 255
MODEL_DATA_URL_MAX = 1024
# A package made before its request (less this much clock difference between us and AWS) is not the request's.
CLOCK_SKEW = timedelta(hours=1)
PENDING = "PendingManualApproval"


def _tag_list(tags: dict[str, str]) -> list[dict[str, str]]:
    return [{"Key": key, "Value": value} for key, value in tags.items()]


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _error_message(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Message", "")).lower()


def _is_missing(exc: ClientError) -> bool:
    """SageMaker answers a Describe of a missing group with a ValidationException saying it does not exist."""
    if _error_code(exc) in ("ResourceNotFound", "ResourceNotFoundException"):
        return True
    message = _error_message(exc)
    return _error_code(exc) == "ValidationException" and ("does not exist" in message or "not found" in message)


def _already_exists(exc: ClientError) -> bool:
    return _error_code(exc) in ("ValidationException", "ResourceInUse", "ConflictException") and (
        "already exist" in _error_message(exc)
    )


class SageMakerModelRegistry:
    """The ModelRegistry on SageMaker, through the project's one boto3 client factory (workers.aws)."""

    def __init__(self, *, region: str, sagemaker_client: BaseClient | None = None) -> None:
        self.region = region
        self.sagemaker = sagemaker_client if sagemaker_client is not None else aws_client("sagemaker", region=region)

    # --- groups ------------------------------------------------------------------------------------------------

    def _group_arn(self, name: str) -> str | None:
        try:
            response = self.sagemaker.describe_model_package_group(ModelPackageGroupName=name)
        except ClientError as exc:
            if _is_missing(exc):
                return None
            raise translate_client_error(exc, action=f"describe the SageMaker model package group {name}") from exc
        except BotoCoreError as exc:
            raise translate_botocore_error(exc, action=f"describe the SageMaker model package group {name}") from exc
        return str(response["ModelPackageGroupArn"])

    def ensure_group(self, *, name: str, description: str, tags: dict[str, str]) -> str:
        known = self._group_arn(name)
        if known is not None:
            return known
        action = f"create the SageMaker model package group {name}"
        try:
            response = self.sagemaker.create_model_package_group(
                ModelPackageGroupName=name,
                ModelPackageGroupDescription=clean_text(description, DESCRIPTION_MAX),
                Tags=_tag_list(tags),
            )
        except ClientError as exc:
            # Another worker made it between our Describe and Create.
            if _already_exists(exc):
                raced = self._group_arn(name)
                if raced is not None:
                    return raced
            raise translate_client_error(exc, action=action) from exc
        except BotoCoreError as exc:
            raise translate_botocore_error(exc, action=action) from exc
        return str(response["ModelPackageGroupArn"])

    # --- packages ----------------------------------------------------------------------------------------------

    @staticmethod
    def customer_metadata(spec: PackageSpec) -> dict[str, str]:
        return {**spec.customer_metadata, "approval_request_id": spec.approval_request_id}

    def find_package(self, spec: PackageSpec) -> PackageStatus | None:
        wanted = self.customer_metadata(spec)
        earliest = spec.requested_at - CLOCK_SKEW if spec.requested_at is not None else None
        with aws_errors(f"list the model packages of SageMaker group {spec.group_name}"):
            pages = self.sagemaker.get_paginator("list_model_packages").paginate(
                ModelPackageGroupName=spec.group_name, SortBy="CreationTime", SortOrder="Descending"
            )
            # Newest first: the request's package, if it exists, was made after the request was.
            for page in pages:
                for summary in page.get("ModelPackageSummaryList", []):
                    created = summary.get("CreationTime")
                    if earliest is not None and created is not None and created < earliest:
                        return None
                    found = self.describe(str(summary["ModelPackageArn"]))
                    if all(found.customer_metadata.get(key) == value for key, value in wanted.items()):
                        return found
        return None

    def create_package(self, spec: PackageSpec) -> str:
        if not spec.image or len(spec.image) > IMAGE_MAX or any(ch.isspace() for ch in spec.image):
            raise BackendError(
                f"the serving image {spec.image!r} is not a container image reference SageMaker accepts "
                f"(no spaces, at most {IMAGE_MAX} characters)",
                permanent=True,
            )
        if not spec.model_data_url.startswith("s3://") or len(spec.model_data_url) > MODEL_DATA_URL_MAX:
            raise BackendError(
                f"the model artifact {spec.model_data_url!r} must be an s3:// URI of at most {MODEL_DATA_URL_MAX} "
                "characters for SageMaker",
                permanent=True,
            )
        inference: dict[str, Any] = {
            "Containers": [{"Image": spec.image, "ModelDataUrl": spec.model_data_url}],
            "SupportedContentTypes": list(spec.content_types),
            "SupportedResponseMIMETypes": list(spec.response_types),
        }
        with aws_errors(f"create a SageMaker model package in group {spec.group_name}"):
            response = self.sagemaker.create_model_package(
                ModelPackageGroupName=spec.group_name,
                ModelPackageDescription=clean_text(spec.description, DESCRIPTION_MAX),
                InferenceSpecification=inference,
                ModelApprovalStatus=PENDING,
                CustomerMetadataProperties=self.customer_metadata(spec),
                Tags=_tag_list(spec.tags),
                ClientToken=spec.client_token,
            )
        return str(response["ModelPackageArn"])

    def set_approval(self, arn: str, *, status: str, description: str) -> None:
        if status not in APPROVAL_STATUSES:
            raise ValueError(f"status must be one of {', '.join(sorted(APPROVAL_STATUSES))}, not {status!r}")
        params: dict[str, Any] = {"ModelPackageArn": arn, "ModelApprovalStatus": status}
        text = clean_text(description, APPROVAL_DESCRIPTION_MAX)
        if text:
            params["ApprovalDescription"] = text
        with aws_errors(f"set the approval status of SageMaker model package {arn} to {status}"):
            self.sagemaker.update_model_package(**params)

    def describe(self, arn: str) -> PackageStatus:
        with aws_errors(f"describe SageMaker model package {arn}"):
            response = self.sagemaker.describe_model_package(ModelPackageName=arn)
        return PackageStatus(
            arn=str(response["ModelPackageArn"]),
            approval_status=str(response.get("ModelApprovalStatus") or ""),
            approval_description=str(response.get("ApprovalDescription") or ""),
            customer_metadata={str(k): str(v) for k, v in (response.get("CustomerMetadataProperties") or {}).items()},
        )
