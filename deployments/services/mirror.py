"""The SageMaker Model Registry mirror of approval requests (aws backend): a worker keeps each request's Model
Package in line with the request, under a lease, idempotently."""

from __future__ import annotations

import logging
from typing import Any

from django.db.models import Q

from deployments.models import ApprovalDecision, ApprovalRequest
from deployments.services.approvals import APPROVAL_MACHINE

log = logging.getLogger(__name__)


# Where a request's state puts its Model Package.
MIRROR_APPROVAL_STATUS = {
    "open": "PendingManualApproval",
    "approved": "Approved",
    "rejected": "Rejected",
    "withdrawn": "Rejected",
    "expired": "Rejected",
}
# A request leaves `open` once, so two passes always converge; a third is for good measure.
MIRROR_PASSES = 3


def _mirror_description(request: ApprovalRequest) -> str:
    """ApprovalDescription: who approved and what they said, or why the request ended otherwise."""
    if request.status == ApprovalRequest.Status.OPEN:
        return ""
    if request.status == ApprovalRequest.Status.APPROVED:
        decisions = list(request.decisions.filter(verdict=ApprovalDecision.Verdict.APPROVE).select_related("approver"))
        names = ", ".join(decision.approver.get_username() for decision in decisions)
        comments = "; ".join(f"{decision.comment} ({decision.approver.get_username()})" for decision in decisions)
        return f"approved by {names}: {comments}"
    reason = request.status_reason or f"approval request {request.pk} is {request.status}"
    return reason if reason.lower().startswith(request.status) else f"{request.status}: {reason}"


def _mirror_package_spec(request: ApprovalRequest) -> Any:
    """What the request's Model Package is made of; a permanent BackendError when the settings or the artifact
    cannot make one (no SERVING_IMAGE, an artifact outside S3)."""
    import uuid

    from django.conf import settings

    from workers.errors import BackendError
    from workers.registry import PackageSpec, group_name_for

    version = request.model_version
    model = version.registered_model
    project = model.project
    image = (settings.SERVING_IMAGE or "").strip()
    if not image:
        raise BackendError(
            "SERVING_IMAGE is not set: the SageMaker model package needs the serving container image "
            "(e.g. ACCOUNT.dkr.ecr.REGION.amazonaws.com/controlplane-serving:TAG)",
            permanent=True,
        )
    if not version.artifact_uri.startswith("s3://"):
        raise BackendError(
            f"{version}'s artifact is at {version.artifact_uri!r}, not in S3: a SageMaker model package needs an "
            "s3:// ModelDataUrl (store models under an s3:// OBJECT_STORE_URL)",
            permanent=True,
        )
    system_tags = {"project": project.slug, "model": model.slug}
    return PackageSpec(
        group_name=group_name_for(project.slug, model.slug),
        group_description=f"ControlPlane model {project.slug}/{model.slug} ({model.name}). {model.description}",
        description=(
            f"{version} for {request.environment.name}, requested by {request.requested_by.get_username()}: "
            f"{request.justification}"
        ),
        image=image,
        model_data_url=version.artifact_uri,
        approval_request_id=str(request.pk),
        customer_metadata={
            "model_version_id": str(version.pk),
            "sha256": request.artifact_sha256,
            "environment": request.environment.name,
        },
        # The package is the version its run made, for one environment: both are its cost-allocation tags.
        tags={
            **(project.cost_tags or {}),
            **system_tags,
            "environment": request.environment.name,
            "run": str(version.run_id),
        },
        group_tags={**(project.cost_tags or {}), **system_tags},
        # The same request always sends the same token, so SageMaker answers a repeated create with the same package.
        client_token=str(
            uuid.uuid5(
                uuid.NAMESPACE_URL,
                f"controlplane:approval-request:{request.pk}:{request.artifact_sha256}:{request.created_at.isoformat()}",
            )
        ),
        requested_at=request.created_at,
    )


def _mirror_write(request_id: int, lease: int, **fields: Any) -> bool:
    """Write under this worker's lease: False when another worker has taken the mirror over."""
    return ApprovalRequest.objects.filter(pk=request_id, attempt=lease).update(**fields) == 1


def _mirror_converge(request_id: int, lease: int) -> ApprovalRequest | None:
    from controlplane.backends import model_registry

    registry = model_registry()
    for _ in range(MIRROR_PASSES):
        request = ApprovalRequest.objects.select_related(
            "model_version__registered_model__project", "environment", "requested_by"
        ).get(pk=request_id)
        if request.attempt != lease:
            return None
        arn, confirmed = request.mirror_arn, request.mirror_approval_status
        if not arn:
            spec = _mirror_package_spec(request)
            registry.ensure_group(name=spec.group_name, description=spec.group_description, tags=spec.group_tags)
            # A retry after a create whose response was lost finds the package instead of making a second one.
            found = registry.find_package(spec)
            if found is not None:
                arn, confirmed = found.arn, found.approval_status
            else:
                arn, confirmed = registry.create_package(spec), "PendingManualApproval"
            if not _mirror_write(request_id, lease, mirror_arn=arn, mirror_approval_status=confirmed):
                return None
        desired = MIRROR_APPROVAL_STATUS[request.status]
        if desired != confirmed:
            registry.set_approval(arn, status=desired, description=_mirror_description(request))
            if not _mirror_write(request_id, lease, mirror_approval_status=desired):
                return None
        # Synced only if the request is still in the state just mirrored; a transition meanwhile means another pass.
        # The lease ends in the same statement, so the task a later transition queues can take the work at once.
        synced = ApprovalRequest.objects.filter(pk=request_id, attempt=lease, status=request.status).update(
            mirror_status=ApprovalRequest.Mirror.SYNCED, mirror_error="", claimed_at=None
        )
        if synced:
            return ApprovalRequest.objects.get(pk=request_id)
    return None


def approval_mirror_sync(*, request_id: int) -> ApprovalRequest | None:
    """Bring the request's SageMaker Model Package in line with the request: create it (and its group) when
    missing, then set its ModelApprovalStatus from the request's state. Idempotent; the task retries throttling.
    Quiet (None) when another worker holds the mirror, or took it over."""
    lease = APPROVAL_MACHINE.lease(request_id, where=~Q(mirror_status=""))
    if lease is None:
        return None
    try:
        return _mirror_converge(request_id, lease)
    except BaseException:
        # A retry is on its way (or the task records the failure): give the lease back at once.
        APPROVAL_MACHINE.release(request_id, lease)
        raise
    finally:
        ApprovalRequest.objects.filter(pk=request_id, attempt=lease).update(claimed_at=None)


def approval_mirror_fail(*, request_id: int, error: str) -> None:
    """The mirror gave up (a permanent error, or retries exhausted). A mirror another worker has synced since stays
    synced."""
    ApprovalRequest.objects.filter(
        pk=request_id, mirror_status__in=[ApprovalRequest.Mirror.PENDING, ApprovalRequest.Mirror.FAILED]
    ).update(mirror_status=ApprovalRequest.Mirror.FAILED, mirror_error=error[:2000])
