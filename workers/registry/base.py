"""The model registry interface: one group per registered model, one package per approval request, whose approval
status follows the request. Plain dataclasses in and out; nothing here knows Django."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol, runtime_checkable

ApprovalStatus = Literal["PendingManualApproval", "Approved", "Rejected"]
APPROVAL_STATUSES: frozenset[str] = frozenset({"PendingManualApproval", "Approved", "Rejected"})

# SageMaker's EntityName: ^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$ (at most 63 characters).
GROUP_NAME_MAX = 63
GROUP_NAME_RE = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}")
_NOT_NAME_CHARS = re.compile(r"[^a-zA-Z0-9-]+")


def group_name_for(project_slug: str, model_slug: str) -> str:
    """The Model Package Group name of a registered model: `cp-<project>-<model>-<hash>`, valid for SageMaker.

    The hash of the exact (project, model) pair keeps two models apart whose slugs read alike once joined
    (project `fraud-eu` with model `scorer`, project `fraud` with model `eu-scorer`); the readable part is shortened
    to fit 63 characters.
    """
    digest = hashlib.sha256(f"{project_slug}/{model_slug}".encode()).hexdigest()[:8]
    readable = _NOT_NAME_CHARS.sub("-", f"cp-{project_slug}-{model_slug}").strip("-")
    readable = readable[: GROUP_NAME_MAX - len(digest) - 1].rstrip("-")
    name = f"{readable}-{digest}"
    assert GROUP_NAME_RE.fullmatch(name), name
    return name


def clean_text(text: str, limit: int) -> str:
    """`text` as SageMaker's description fields accept it: control characters (newlines, tabs) become spaces, runs of
    spaces one, and at most `limit` characters (ending in … when cut)."""
    flat = "".join(" " if unicodedata.category(ch).startswith("C") else ch for ch in text)
    flat = re.sub(r"\s+", " ", flat).strip()
    if len(flat) <= limit:
        return flat
    return flat[: limit - 1].rstrip() + "…"


@dataclass(frozen=True)
class PackageSpec:
    """One model version requested for one environment, as a Model Package in its model's group."""

    group_name: str
    group_description: str
    description: str
    # The serving image and the artifact it loads (an s3:// URI).
    image: str
    model_data_url: str
    # Identifies the package as this request's, so a retry after a lost response finds it instead of making another.
    approval_request_id: str
    # The rest of CustomerMetadataProperties (model_version_id, sha256, environment).
    customer_metadata: dict[str, str]
    # Tags on the package (project, model, environment and the project's cost tags); the group gets `group_tags`.
    tags: dict[str, str]
    group_tags: dict[str, str]
    # Idempotency token for CreateModelPackage: the same request always sends the same token.
    client_token: str
    content_types: tuple[str, ...] = ("application/json", "text/csv")
    response_types: tuple[str, ...] = ("application/json",)
    # Packages created before this cannot be the request's (it did not exist yet): bounds the search for one.
    requested_at: datetime | None = None


@dataclass(frozen=True)
class PackageStatus:
    """A package as the registry describes it now."""

    arn: str
    approval_status: str
    approval_description: str
    customer_metadata: dict[str, str]


@runtime_checkable
class ModelRegistry(Protocol):
    """Where approval requests are mirrored. Every call is safe to repeat."""

    def ensure_group(self, *, name: str, description: str, tags: dict[str, str]) -> str:
        """The ARN of the group `name`, created (with `description` and `tags`) when missing."""
        ...

    def find_package(self, spec: PackageSpec) -> PackageStatus | None:
        """The package already made for `spec`'s approval request, if any (a create whose response was lost)."""
        ...

    def create_package(self, spec: PackageSpec) -> str:
        """Create the package, pending manual approval, and return its ARN."""
        ...

    def set_approval(self, arn: str, *, status: str, description: str) -> None:
        """Set the package's approval status (Approved, Rejected, PendingManualApproval) and say why."""
        ...

    def describe(self, arn: str) -> PackageStatus:
        """The package's approval status, approval description and customer metadata."""
        ...
