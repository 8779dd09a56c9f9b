"""The model registry: a finished training run's model becomes a write-once model version."""

from __future__ import annotations

import io
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.core.exceptions import ValidationError
from django.db.models import Max

from controlplane.backends import object_store
from controlplane.services import audit_record
from lineage.models import (
    ModelVersion,
    RegisteredModel,
    Run,
)
from lineage.services.datasets import version_local_files
from lineage.services.edges import lineage_link
from lineage.services.runs import (
    training_backend_for,
)
from workers.recipes._contract import read_data_file
from workers.sources import sha256_file

log = logging.getLogger(__name__)


@dataclass
class ModelArtifact:
    uri: str
    key: str
    sha256: str
    size: int
    metadata_path: Path
    # The folder with model.joblib (and the recipe's held-out sample), while the finish's scratch folder lasts.
    model_dir: Path | None = None

    def open_metadata(self) -> Any:
        return self.metadata_path.open()


def model_artifact_from_job(run: Run, status: Any, *, scratch: Path) -> ModelArtifact:
    """The job's model as a write-once object: model.joblib stored here for local runs; SageMaker's model.tar.gz
    stays where SageMaker put it, hashed as it is downloaded. `scratch` is this attempt's own empty folder."""
    scratch.mkdir(parents=True, exist_ok=True)
    if status.model_dir is not None and (Path(status.model_dir) / "model.joblib").is_file():
        model_dir = Path(status.model_dir)
        with (model_dir / "model.joblib").open("rb") as handle:
            stored = object_store().put_content_addressed(handle, prefix="models/", suffix=".joblib")
        metadata = scratch / "model.json"
        shutil.copyfile(model_dir / "model.json", metadata)
        return ModelArtifact(
            uri=stored.uri,
            key=stored.key,
            sha256=stored.sha256,
            size=stored.size,
            metadata_path=metadata,
            model_dir=model_dir,
        )
    if status.model_uri and status.model_uri.startswith("s3://"):
        backend = training_backend_for(run)
        tar_path = backend.download_artifact(status.model_uri, scratch / "model.tar.gz")
        extracted = backend.extract_model_tar(tar_path, scratch / "model")
        metadata = Path(extracted) / "model.json"
        if not metadata.is_file():
            raise ValidationError({"model": ["the model archive has no model.json"]})
        return ModelArtifact(
            uri=status.model_uri,
            key="",
            sha256=sha256_file(tar_path),
            size=tar_path.stat().st_size,
            metadata_path=metadata,
            model_dir=Path(extracted),
        )
    raise ValidationError({"model": ["the job finished without a model (no model.joblib in the model folder)"]})


def model_version_compile(*, run: Run, artifact: ModelArtifact, metadata: dict[str, Any]) -> dict[str, Any]:
    """A compiled copy of the run's model, checked against the original on held-out rows; the ModelVersion fields to
    record. Slow (loads the model, converts, predicts, stores): call it from the worker, outside any row lock. Never
    raises: whatever goes wrong is a refused check, and the original serves."""
    from serving import compiled  # numpy and scikit-learn: only the worker that registers pays for them

    try:
        return _compile(run, artifact, metadata)
    except Exception as exc:  # a compiled copy is an optimisation: it must never fail the run
        log.warning("run %s: no compiled copy of the model: %s", run.pk, exc, exc_info=True)
        return {"compiled_check": compiled.refused_check(f"the check failed: {type(exc).__name__}: {exc}")}


def _compile(run: Run, artifact: ModelArtifact, metadata: dict[str, Any]) -> dict[str, Any]:
    import joblib

    from serving import compiled

    refusal = compiled.version_refusal(metadata)
    model_file = artifact.model_dir / "model.joblib" if artifact.model_dir is not None else None
    if not refusal and (model_file is None or not model_file.is_file()):
        refusal = "the artifact has no model.joblib to convert"
    if refusal:
        return {"compiled_check": compiled.refused_check(refusal)}
    assert artifact.model_dir is not None and model_file is not None
    sample, source = _check_sample(run, artifact.model_dir, metadata)
    outcome = compiled.compile_model(joblib.load(model_file), metadata, sample, sample_source=source)
    fields: dict[str, Any] = {"compiled_check": outcome.check}
    if outcome.onnx is not None:
        stored = object_store().put_content_addressed(io.BytesIO(outcome.onnx), prefix="models/", suffix=".onnx")
        fields.update(
            compiled_runtime=outcome.check["runtime"],
            compiled_uri=stored.uri,
            compiled_key=stored.key,
            compiled_sha256=stored.sha256,
        )
    return fields


def _check_sample(run: Run, model_dir: Path, metadata: dict[str, Any]) -> tuple[Any, str]:
    """The recipe's held-out validation rows; for an artifact without them, rows of the run's training input."""
    import pandas as pd

    from serving import compiled

    features = list(metadata.get("features") or [])
    named = (metadata.get("holdout_sample") or {}).get("file") or "holdout_sample.csv"
    holdout = model_dir / Path(str(named)).name
    if holdout.is_file():
        return read_data_file(holdout)[features], "held-out validation rows"
    train = run.inputs.select_related("dataset_version").filter(channel="train").first()
    if train is None:
        return None, ""
    version = train.dataset_version
    with version_local_files(version) as paths:
        frames = []
        for path in paths:
            frames.append(read_data_file(path, missing_values=version.missing_values or [""]))
            if sum(len(frame) for frame in frames) >= compiled.SAMPLE_ROWS:
                break
    rows = pd.concat(frames, ignore_index=True)[features]
    rows = rows.sample(n=min(compiled.SAMPLE_ROWS, len(rows)), random_state=0)
    return rows, "training input rows (the artifact has no held-out sample)"


def model_version_register(
    *,
    run: Run,
    artifact_uri: str,
    artifact_key: str,
    sha256: str,
    size: int,
    metadata: dict[str, Any],
    compiled: dict[str, Any] | None = None,
) -> ModelVersion:
    """Add the run's model to its registered model as the next version, linked in lineage. Call under the run lock.

    The same bytes are the same model version, as for datasets: a model whose SHA-256 the registered model already
    has (a reproduction with the same seed) is linked to that version, recorded on the run as `same_model_as`.
    """
    registered, created = RegisteredModel.objects.get_or_create(
        project=run.project,
        slug=run.output_name,
        defaults={
            "name": run.output_name,
            "created_by": run.created_by,
            "description": f"Trained with the {run.recipe} recipe",
        },
    )
    registered = RegisteredModel.objects.select_for_update().get(pk=registered.pk)
    existing = registered.versions.filter(sha256=sha256).order_by("number").first()
    if existing is not None:
        Run.objects.filter(pk=run.pk).update(same_model_as=existing)
        run.same_model_as = existing
        lineage_link(source=run.node_id, target=existing.node_id)
        audit_record(
            actor=run.created_by,
            action="model_version.reproduced",
            object_type="model_version",
            object_id=existing.pk,
            object_repr=str(existing),
            after={"run": run.pk, "sha256": sha256},
            reason=f"run {run.pk} produced the same bytes as {existing}",
            project=run.project,
        )
        return existing
    number = (registered.versions.aggregate(top=Max("number"))["top"] or 0) + 1
    features = metadata.get("features") or []
    feature_types = metadata.get("feature_types") or {}
    version = ModelVersion.objects.create(
        registered_model=registered,
        number=number,
        run=run,
        artifact_uri=artifact_uri,
        artifact_key=artifact_key,
        sha256=sha256,
        size=size,
        task=metadata.get("task", ""),
        target=metadata.get("target", ""),
        input_schema=[{"name": name, "type": feature_types.get(name, "")} for name in features],
        classes=metadata.get("classes"),
        metrics=metadata.get("metrics") or {},
        metadata=metadata,
        framework_version=str(metadata.get("sklearn_version") or "")[:40],
        **(compiled or {}),
        created_by=run.created_by,
    )
    lineage_link(source=run.node_id, target=version.node_id)
    if created:
        audit_record(
            actor=run.created_by,
            action="model.create",
            object_type="model",
            object_id=str(registered),
            object_repr=registered.name,
            project=run.project,
        )
    audit_record(
        actor=run.created_by,
        action="model_version.create",
        object_type="model_version",
        object_id=version.pk,
        object_repr=str(version),
        after={
            "run": run.pk,
            "sha256": sha256,
            "artifact_uri": artifact_uri,
            "metrics": version.metrics,
            "compiled_runtime": version.compiled_runtime,
            "compiled_sha256": version.compiled_sha256,
        },
        project=run.project,
    )
    return version


def model_version_artifact_sha256(version: ModelVersion) -> str:
    """The SHA-256 of the version's artifact as the store holds it now (approval checks it against the record).
    Slow I/O: call it from a worker, outside any row lock."""
    from botocore.exceptions import BotoCoreError

    from workers.errors import BackendError
    from workers.objectstore.base import hash_stream

    if version.artifact_key:
        stream = object_store().open(version.artifact_key)
        try:
            digest, _ = hash_stream(stream)
        except BotoCoreError as exc:  # S3 stopped streaming mid-read: worth trying again
            raise BackendError(f"reading {version.artifact_uri} failed: {exc}", permanent=False) from exc
        finally:
            stream.close()
        return digest
    if version.artifact_uri.startswith("s3://"):
        backend = training_backend_for(version.run)
        with tempfile.TemporaryDirectory(prefix="artifact-check-") as folder:
            return sha256_file(backend.download_artifact(version.artifact_uri, Path(folder) / "model.tar.gz"))
    raise ValueError(f"{version} has no stored artifact to check (its URI is {version.artifact_uri!r})")
