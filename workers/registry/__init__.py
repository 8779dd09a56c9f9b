"""The model registry a deployment backend reads approvals from: on the aws backend, SageMaker's Model Registry."""

from __future__ import annotations

from workers.registry.base import (
    APPROVAL_STATUSES,
    ModelRegistry,
    PackageSpec,
    PackageStatus,
    clean_text,
    group_name_for,
)

__all__ = [
    "APPROVAL_STATUSES",
    "ModelRegistry",
    "PackageSpec",
    "PackageStatus",
    "clean_text",
    "group_name_for",
]
