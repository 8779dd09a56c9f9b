"""A service serving a model trained on a real, profiled dataset version, and capture files written as the serving
runtime writes them (serving.capture.Capture.parquet, the same key layout), for the drift job's tests."""

from __future__ import annotations

import csv
import io
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from controlplane import services as controlplane_services
from controlplane.backends import object_store
from deployments import objectives as objective_rules
from deployments import services as deployment_services
from deployments.models import Deployment, Environment, Service
from lineage.models import DatasetVersion, ModelVersion, Run, RunInput
from lineage.services import datasets as dataset_services
from lineage.services import profiles
from serving.capture import Capture, Sample
from serving.metrics import Metrics
from serving.predictors import Batch, Prediction
from tests.deployments.conftest import make_model_version

FEATURES = ["age", "income", "plan"]
TRAIN_PARAMETERS = {"target": "churned", "C": 0.5, "max_iter": 300, "class_weight": "balanced", "seed": 7}


def rows(n: int, *, seed: int, age_shift: float = 0.0, income_scale: float = 1.0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "age": rng.normal(40.0, 10.0, n) + age_shift,
        "income": rng.lognormal(10.0, 0.5, n) * income_scale,
        "plan": rng.choice(np.array(["basic", "pro", "team"], dtype=object), n, p=[0.5, 0.3, 0.2]),
    }


def training_csv(path: Path, n: int = 2000, *, seed: int = 1) -> Path:
    data = rows(n, seed=seed)
    churned = (data["age"] > 45).astype(int)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*FEATURES, "churned"])
        for i in range(n):
            writer.writerow([f"{data['age'][i]:.3f}", f"{data['income'][i]:.2f}", data["plan"][i], churned[i]])
    return path


def profiled_version(actor: Any, project: Any, path: Path, *, dataset: str = "churn") -> DatasetVersion:
    """A dataset version registered as an upload is, profiled by the profile job's own code."""
    target = dataset_services.dataset_target(project=project, dataset=dataset)
    version, _ = dataset_services.dataset_version_from_file(
        actor=actor, target=target, path=path, filename=path.name, source=DatasetVersion.Source.UPLOAD
    )
    profiles.dataset_profile_run(version_id=version.pk)
    return version


@dataclass
class World:
    project: Any
    environment: Environment
    train: DatasetVersion
    version: ModelVersion
    service: Service
    deployment: Deployment


def make_world(users: Any, tmp_path: Path, *, train: DatasetVersion | None = None, **environment: Any) -> World:
    project = controlplane_services.project_create(actor=users.admin, name="Churn", slug="churn")
    env = deployment_services.environment_create(
        actor=users.admin,
        data={"name": "staging", "approvals_required": 1, "gates": [], "drift_window_minutes": 60, **environment},
    )
    if train is None:
        train = profiled_version(users.data_scientist, project, training_csv(tmp_path / "train.csv"))
    schema = [{"name": "age", "type": "float"}, {"name": "income", "type": "float"}, {"name": "plan", "type": "str"}]
    version = make_model_version(project, users.data_scientist, model="churn-model", input_schema=schema)
    Run.objects.filter(pk=version.run_id).update(parameters=TRAIN_PARAMETERS, seed=7)
    RunInput.objects.create(run_id=version.run_id, dataset_version=train, channel="train")
    return serve(users, project, env, train, version)


def serve(users: Any, project: Any, env: Environment, train: DatasetVersion, version: ModelVersion) -> World:
    """The service, with `version` serving as a succeeded deployment left it (no serving process: drift reads the
    capture files the serving runtime stored)."""
    service = Service.objects.create(
        registered_model=version.registered_model,
        environment=env,
        name=f"churn-{uuid.uuid4().hex[:10]}",
        backend="local",
        created_by=users.admin,
    )
    deployment = Deployment.objects.create(
        service=service,
        model_version=version,
        status=Deployment.Status.SUCCEEDED,
        reason="first deploy",
        initiated_by=users.approver,
        revision="d1",
        objectives=objective_rules.environment_objectives(env),
        finished_at=datetime(2026, 11, 30, 9, 20, tzinfo=UTC),
    )
    service.current_deployment = deployment
    service.save(update_fields=["current_deployment"])
    return World(project, env, train, version, service, deployment)


def capture_key(service: str, revision: str, at: datetime, count: int) -> str:
    return f"capture/{service}/{revision}/{at:%Y/%m/%d}/{at:%H%M%S}-{count}-{secrets.token_hex(6)}.parquet"


def serving_label(service: Service) -> str:
    from monitoring.selectors import revision_label

    assert service.current_deployment is not None
    return revision_label(service.current_deployment)


def write_capture(service: Service, at: datetime, data: dict[str, np.ndarray], *, revision: str | None = None) -> str:
    """One capture file of `data`'s rows, sampled at `at`, as the serving runtime's writer stores it (by default,
    labelled as the current deployment's serving processes label theirs)."""
    revision = revision or serving_label(service)
    count = len(data["age"])
    columns = {"age": data["age"], "income": data["income"], "plan": data["plan"]}
    capture = Capture(
        object_store(),
        fraction=1.0,
        feature_names=FEATURES,
        service=service.name,
        revision=revision,
        metrics=Metrics(service=service.name, revision=revision, runtime="test"),
    )
    sample = Sample(
        at.timestamp(), Batch(columns=columns, rows=count), Prediction(labels=np.zeros(count, dtype=np.int64))
    )
    key = capture_key(service.name, revision, at, count)
    object_store().put(key, io.BytesIO(capture.parquet([sample])), content_type="application/vnd.apache.parquet")
    return key


def write_corrupt_capture(service: Service, at: datetime, *, revision: str | None = None) -> str:
    key = capture_key(service.name, revision or serving_label(service), at, 10)
    object_store().put(
        key, io.BytesIO(b"PAR1 this is not a parquet file"), content_type="application/vnd.apache.parquet"
    )
    return key
