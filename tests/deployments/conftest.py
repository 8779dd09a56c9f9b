"""Model versions with real stored artifacts (no training needed), and environments to promote them to."""

from __future__ import annotations

import hashlib
import io
import itertools
import uuid
from typing import Any

import pytest

from controlplane import services as controlplane_services
from controlplane.backends import object_store
from deployments import services
from lineage.models import LineageEdge, ModelVersion, RegisteredModel, Run

_counter = itertools.count(1)

SCHEMA = [{"name": "mean radius", "type": "float"}, {"name": "mean texture", "type": "float"}]


def make_model_version(
    project: Any,
    author: Any,
    *,
    model: str = "bc-classifier",
    metrics: dict[str, float] | None = None,
    input_schema: list[dict[str, str]] | None = None,
    content: bytes | None = None,
    suffix: str = ".joblib",
    **fields: Any,
) -> ModelVersion:
    """A succeeded training run by `author` and the model version it made, its artifact in the object store:
    `content` (real servable bytes, e.g. a model package) or placeholder bytes; `fields` set more of the version
    (framework_version, metadata, …)."""
    n = next(_counter)
    if content is None:
        content = f"model bytes {n} {uuid.uuid4()}".encode()  # unique: a test may tamper with it
    stored = object_store().put_content_addressed(io.BytesIO(content), prefix="models/", suffix=suffix)
    registered, _ = RegisteredModel.objects.get_or_create(
        project=project, slug=model, defaults={"name": model, "created_by": author}
    )
    run = Run.objects.create(
        project=project,
        kind="training",
        recipe="logistic_regression",
        recipe_version="2",
        recipe_fingerprint=hashlib.sha256(content).hexdigest(),
        created_by=author,
        status="succeeded",
    )
    version = ModelVersion.objects.create(
        registered_model=registered,
        number=registered.versions.count() + 1,
        run=run,
        artifact_uri=stored.uri,
        artifact_key=stored.key,
        sha256=stored.sha256,
        size=stored.size,
        task="classification",
        target="target",
        input_schema=SCHEMA if input_schema is None else input_schema,
        metrics={"accuracy": 0.95, "f1": 0.94} if metrics is None else metrics,
        created_by=author,
        **fields,
    )
    LineageEdge.objects.create(source=run.node_id, target=version.node_id)
    return version


@pytest.fixture
def project(users: Any) -> Any:
    return controlplane_services.project_create(actor=users.admin, name="Breast cancer", slug="bc")


@pytest.fixture
def staging(users: Any) -> Any:
    return services.environment_create(
        actor=users.admin, data={"name": "staging", "order": 10, "approvals_required": 1, "gates": []}
    )


@pytest.fixture
def production(users: Any, staging: Any) -> Any:
    return services.environment_create(
        actor=users.admin,
        data={
            "name": "production",
            "order": 20,
            "approvals_required": 2,
            "gates": [
                "accuracy >= 0.90",
                "accuracy >= serving - 0.01",
                "schema matches serving",
                "approved in staging",
            ],
        },
    )


@pytest.fixture
def version(project: Any, users: Any) -> ModelVersion:
    return make_model_version(project, users.data_scientist)


@pytest.fixture
def stop_local_services() -> Any:
    """No local service outlives its test, and none is left from an earlier one: a service's files are kept for
    later deploys, and a test database numbers its deployments from 1 again."""
    import shutil

    from django.conf import settings

    from workers.deploy.local import LocalServingBackend

    backend = LocalServingBackend(settings.SERVICES_WORK_DIR)
    backend.shutdown_all()
    shutil.rmtree(settings.SERVICES_WORK_DIR, ignore_errors=True)
    yield
    backend.shutdown_all()
    shutil.rmtree(settings.SERVICES_WORK_DIR, ignore_errors=True)
