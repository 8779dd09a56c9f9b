"""The backends chosen by settings, built once per process."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from django.conf import settings
from django.urls import reverse

from workers.objectstore import ObjectStore, open_object_store
from workers.registry import ModelRegistry


@lru_cache(maxsize=1)
def object_store() -> ObjectStore:
    return open_object_store(
        settings.OBJECT_STORE_URL,
        # Local stores hand out links to the portal's signed download view.
        download_base_url=reverse("object-download", kwargs={"key": "x"}).rsplit("/", 1)[0],
        signing_key=settings.SECRET_KEY,
        region=settings.AWS_REGION,
    )


def training_backend(name: str) -> Any:
    """The training backend a run names: `local` (a subprocess here) or `sagemaker`."""
    if name == "local":
        from workers.training.local import LocalTrainingBackend

        return LocalTrainingBackend(Path(settings.RUNS_WORK_DIR))
    if name == "sagemaker":
        from urllib.parse import urlsplit

        from workers.training.sagemaker import SageMakerTrainingBackend

        location = urlsplit(settings.SAGEMAKER_S3_URL)
        return SageMakerTrainingBackend(
            bucket=location.netloc,
            prefix=location.path.strip("/"),
            role_arn=settings.SAGEMAKER_ROLE_ARN or "",
            region=settings.AWS_REGION,
        )
    raise ValueError(f"unknown training backend {name!r}")


def model_registry() -> ModelRegistry:
    """Where approval requests are mirrored on the aws backend: the SageMaker Model Registry in AWS_REGION.
    Built per call (cheap: workers.aws caches the client), so a test's fresh endpoint and credentials apply."""
    from workers.registry.sagemaker import SageMakerModelRegistry

    return SageMakerModelRegistry(region=settings.AWS_REGION)
