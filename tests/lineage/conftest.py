"""Fixtures for datasets and lineage: a project, CSV bytes made from a dataset scikit-learn ships."""

from __future__ import annotations

import io
from typing import Any

import pytest

from controlplane import services as controlplane_services


@pytest.fixture
def project(users: Any) -> Any:
    return controlplane_services.project_create(actor=users.admin, name="Cancer", slug="cancer")


@pytest.fixture(scope="session")
def cancer_csv() -> bytes:
    from sklearn.datasets import load_breast_cancer

    frame = load_breast_cancer(as_frame=True).frame
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False)
    return buffer.getvalue().encode()


def upload(client: Any, *, project: str, dataset: str, name: str, content: bytes, **extra: Any) -> Any:
    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.urls import reverse

    return client.post(
        reverse("api-dataset-version-upload"),
        {"project": project, "dataset": dataset, "file": SimpleUploadedFile(name, content), **extra},
        format="multipart",
    )
