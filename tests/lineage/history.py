"""A history of datasets, runs, models, lineage edges and audit events, made in bulk for tests that count queries."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from controlplane.models import AuditEvent, Project
from lineage.models import (
    Dataset,
    DatasetProfile,
    DatasetVersion,
    LineageEdge,
    ModelVersion,
    RegisteredModel,
    Run,
    RunInput,
)


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class History:
    project: Project
    user: Any
    popular: DatasetVersion | None = None
    counter: int = 0
    datasets: list[Dataset] = field(default_factory=list)
    models: list[RegisteredModel] = field(default_factory=list)

    def _next(self) -> int:
        self.counter += 1
        return self.counter

    def add_datasets(self, count: int, *, versions: int = 1) -> list[DatasetVersion]:
        start = self._next()
        self.counter += count
        datasets = Dataset.objects.bulk_create(
            Dataset(project=self.project, name=f"Data {start + i}", slug=f"data-{start + i}", created_by=self.user)
            for i in range(count)
        )
        self.datasets.extend(datasets)
        made = DatasetVersion.objects.bulk_create(
            DatasetVersion(
                dataset=dataset,
                number=number,
                sha256=_sha(f"{dataset.slug}/{number}"),
                uri=f"file:///{dataset.slug}/{number}",
                storage_key=f"datasets/{dataset.slug}/{number}",
                size=100,
                format="csv",
                content_format="csv",
                columns=[{"name": f"c{i}", "type": "float"} for i in range(30)],
                row_count=1000,
                source="upload",
                created_by=self.user,
            )
            for dataset in datasets
            for number in range(1, versions + 1)
        )
        DatasetProfile.objects.bulk_create(DatasetProfile(version=v, status="ready", progress=1.0) for v in made)
        if self.popular is None:
            self.popular = made[0]
        return made

    def add_runs(self, count: int, *, reading: DatasetVersion | None = None, with_models: bool = True) -> list[Run]:
        """`count` succeeded training runs reading `reading` (the popular version by default), each with a model
        version."""
        source = reading or self.popular
        assert source is not None, "add datasets first"
        runs = Run.objects.bulk_create(
            Run(
                project=self.project,
                kind="training",
                recipe="sklearn-logistic",
                recipe_version="1",
                recipe_fingerprint="f" * 64,
                parameters={"target": "y", "C": 1.0},
                status="succeeded",
                created_by=self.user,
                metrics={"cv_accuracy": [{"value": 0.9, "fold": k} for k in range(5)]},
                log_tail=[f"line {k}: " + "x" * 100 for k in range(200)],
            )
            for _ in range(count)
        )
        RunInput.objects.bulk_create(RunInput(run=run, dataset_version=source, channel="train") for run in runs)
        edges = [LineageEdge(source=source.node_id, target=run.node_id) for run in runs]
        if with_models:
            model = RegisteredModel.objects.create(
                project=self.project, name=f"Model {self._next()}", slug=f"model-{self.counter}", created_by=self.user
            )
            self.models.append(model)
            versions = ModelVersion.objects.bulk_create(
                ModelVersion(
                    registered_model=model,
                    number=i + 1,
                    run=run,
                    artifact_uri=f"file:///models/{run.pk}",
                    sha256=_sha(f"model/{run.pk}"),
                    size=10,
                    metrics={"accuracy": 0.9},
                    created_by=self.user,
                )
                for i, run in enumerate(runs)
            )
            edges += [
                LineageEdge(source=run.node_id, target=version.node_id)
                for run, version in zip(runs, versions, strict=True)
            ]
        LineageEdge.objects.bulk_create(edges)
        return runs

    def add_models(self, count: int, *, versions: int = 2) -> None:
        """`count` registered models, each with `versions` versions from their own runs."""
        for _ in range(count):
            self.add_runs(versions)

    def add_audit_events(self, count: int) -> None:
        start = self._next()
        self.counter += count
        actions = ["dataset.create", "dataset_version.create", "run.launch", "run.finish", "project.update"]
        AuditEvent.objects.bulk_create(
            AuditEvent(
                actor=self.user,
                actor_name=self.user.username,
                action=actions[i % len(actions)],
                object_type="run",
                object_id=str(start + i),
                object_repr=f"run {start + i}",
                after={"status": "succeeded"},
            )
            for i in range(count)
        )
