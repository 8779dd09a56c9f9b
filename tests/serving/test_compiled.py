"""The compiled copy (serving/compiled.py): equal to the original pipeline or refused, and checked at registration."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sklearn
from sklearn.datasets import load_breast_cancer, load_diabetes
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.linear_model import LinearRegression, LogisticRegression

from serving.compiled import OnnxPredictor, batch_from_frame, compile_model
from serving.predictors import Feature, SklearnPredictor

RECIPES_DIR = Path(__file__).resolve().parents[2] / "workers" / "recipes"


@pytest.fixture(scope="module")
def training() -> Any:
    """The recipes' shared module, imported as recipe scripts import it (a top-level module)."""
    import sys

    sys.path.insert(0, str(RECIPES_DIR))
    try:
        import _training
    finally:
        sys.path.remove(str(RECIPES_DIR))
    return _training


def fit(training: Any, x: pd.DataFrame, y: pd.Series, estimator: Any, *, scale: bool, task: str) -> tuple[Any, dict]:
    """A pipeline built and fitted the way the recipes do, and the model card they write."""
    features = list(x.columns)
    kinds = {column: training._feature_type(x[column]) for column in features}
    data = training.TrainingData(x, y, x, y, features, kinds, "test")
    pipeline = training.build_pipeline(data, estimator, scale=scale).fit(x, y)
    card: dict[str, Any] = {
        "features": features,
        "feature_types": kinds,
        "task": task,
        "sklearn_version": sklearn.__version__,
    }
    if task == "classification":
        card["classes"] = [value.item() if hasattr(value, "item") else value for value in pipeline.classes_]
    return pipeline, card


def schema(card: dict) -> list[Feature]:
    return [Feature(name, card["feature_types"][name]) for name in card["features"]]


def assert_same_predictions(pipeline: Any, card: dict, onnx: bytes, rows: pd.DataFrame) -> None:
    """The compiled predictor and the original one give the same labels (type and value) and close numbers, for
    the whole frame and for single rows."""
    classifier = card["task"] == "classification"
    features = schema(card)
    compiled = OnnxPredictor(onnx, features=features, classes=card.get("classes") if classifier else None)
    original = SklearnPredictor(pipeline, classifier=classifier)
    assert compiled.runtime.startswith("onnxruntime ")
    for part in (rows, rows.iloc[:1], rows.iloc[-1:]):
        batch = batch_from_frame(part, features)
        got, expected = compiled.predict(batch), original.predict(batch)
        if classifier:
            assert got.labels.tolist() == expected.labels.tolist()
            assert [type(v) for v in got.labels.tolist()] == [type(v) for v in expected.labels.tolist()]
            assert np.abs(got.probabilities - expected.probabilities).max() < 1e-5
        else:
            assert np.allclose(got.labels, expected.labels, rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def cancer() -> tuple[pd.DataFrame, pd.Series]:
    frame = load_breast_cancer(as_frame=True).frame
    return frame.drop(columns="target"), frame["target"]


@pytest.fixture(scope="module")
def diabetes() -> tuple[pd.DataFrame, pd.Series]:
    frame = load_diabetes(as_frame=True).frame
    return frame.drop(columns="target"), frame["target"]


@pytest.mark.parametrize(
    ("estimator", "scale", "dtype"),
    [
        (LogisticRegression(max_iter=5000), True, "float64"),
        (RandomForestClassifier(n_estimators=100, random_state=0), False, "float32"),
        (HistGradientBoostingClassifier(max_iter=50, random_state=0), False, "float32"),
    ],
    ids=["logistic_regression", "random_forest", "hist_gradient_boosting"],
)
def test_classifiers_compile_to_the_same_predictions(training, cancer, estimator, scale, dtype) -> None:
    x, y = cancer
    train, held_out = x.iloc[:400], x.iloc[400:]
    pipeline, card = fit(training, train, y.iloc[:400], estimator, scale=scale, task="classification")

    outcome = compile_model(pipeline, card, held_out, sample_source="held-out validation rows")

    assert outcome.accepted, outcome.check
    check = outcome.check
    assert check["accepted"] and check["labels_identical"] and check["reason"] == ""
    assert check["sample_rows"] == len(held_out) and check["input_dtype"] == dtype
    assert 0 <= check["max_abs_diff"] <= 1e-5
    assert check["runtime"].startswith("onnxruntime ") and set(check["versions"]) == {
        "onnxruntime",
        "skl2onnx",
        "onnx",
        "scikit-learn",
    }
    assert_same_predictions(pipeline, card, outcome.onnx, held_out)


@pytest.mark.parametrize(
    ("estimator", "scale"),
    [
        (LinearRegression(), True),
        (RandomForestRegressor(n_estimators=50, random_state=0), False),
        (HistGradientBoostingRegressor(max_iter=50, random_state=0), False),
    ],
    ids=["linear_regression", "random_forest", "hist_gradient_boosting"],
)
def test_regressors_compile_to_the_same_predictions(training, diabetes, estimator, scale) -> None:
    x, y = diabetes
    pipeline, card = fit(training, x.iloc[:350], y.iloc[:350], estimator, scale=scale, task="regression")

    outcome = compile_model(pipeline, card, x.iloc[350:])

    assert outcome.accepted, outcome.check
    assert outcome.check["labels_identical"] is None
    # Predictions are in the target's units (25 to 346 here): the tolerance is relative.
    assert outcome.check["max_abs_diff"] < 1e-5 * float(np.abs(y).max())
    assert_same_predictions(pipeline, card, outcome.onnx, x.iloc[350:])


def mixed_frame(rows: int, seed: int) -> tuple[pd.DataFrame, pd.Series]:
    """Numeric, boolean and categorical columns with missing values; a city column with more than 50 values, so
    the rarer ones share the encoder's infrequent column; text classes."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "age": rng.normal(40, 12, rows).round(1),
            "income": rng.lognormal(10, 1, rows),
            "member": rng.random(rows) < 0.4,
            "colour": pd.Series(rng.choice(["red", "green", "blue"], rows), dtype="str"),
            "city": pd.Series([f"city-{value}" for value in rng.zipf(1.3, rows) % 400], dtype="str"),
        }
    )
    frame.loc[rng.random(rows) < 0.1, "age"] = np.nan
    frame.loc[rng.random(rows) < 0.1, "colour"] = np.nan
    frame.loc[rng.random(rows) < 0.05, "city"] = np.nan
    score = frame["age"].fillna(40) / 40 + frame["member"] + (frame["colour"] == "red") + rng.normal(0, 0.5, rows)
    target = pd.Series(np.where(score > 1.6, "yes", "no"), name="target")
    return frame, target


@pytest.mark.parametrize(
    ("estimator", "scale"),
    [
        (LogisticRegression(max_iter=2000), True),
        (RandomForestClassifier(n_estimators=30, random_state=0), False),
        (HistGradientBoostingClassifier(max_iter=30, random_state=0), False),
    ],
    ids=["logistic_regression", "random_forest", "hist_gradient_boosting"],
)
def test_categorical_and_boolean_columns_with_missing_and_unseen_values(training, estimator, scale) -> None:
    x, y = mixed_frame(1500, seed=1)
    pipeline, card = fit(training, x, y, estimator, scale=scale, task="classification")
    assert card["feature_types"] == {
        "age": "numeric",
        "income": "numeric",
        "member": "boolean",
        "colour": "categorical",
        "city": "categorical",
    }
    encoder = pipeline.named_steps["preprocess"].named_transformers_["categorical"].named_steps["encode"]
    assert encoder.infrequent_categories_[1] is not None  # the city column has an infrequent column
    held_out, _ = mixed_frame(300, seed=2)
    # Values training never saw: they go to the infrequent column (city) or to no column (colour), as in sklearn.
    held_out.loc[:19, "city"] = "atlantis"
    held_out.loc[20:39, "colour"] = "mauve"
    held_out.loc[40:59, ["colour", "city", "age"]] = np.nan

    outcome = compile_model(pipeline, card, held_out)

    assert outcome.accepted, outcome.check
    assert outcome.check["labels_identical"] and outcome.check["max_abs_diff"] <= 1e-5
    assert_same_predictions(pipeline, card, outcome.onnx, held_out)
    compiled = OnnxPredictor(outcome.onnx, features=schema(card), classes=card["classes"])
    labels = compiled.predict(batch_from_frame(held_out.iloc[:3], schema(card))).labels
    assert set(labels.tolist()) <= {"yes", "no"} and labels.dtype == object


def test_a_model_skl2onnx_cannot_convert_is_refused(training, cancer) -> None:
    class HomeMadeClassifier(LogisticRegression):
        """No converter is registered for this class."""

    x, y = cancer
    pipeline, card = fit(training, x, y, HomeMadeClassifier(max_iter=5000), scale=True, task="classification")

    outcome = compile_model(pipeline, card, x.iloc[:50])

    assert outcome.onnx is None and not outcome.accepted
    assert outcome.check["accepted"] is False and outcome.check["reason"].startswith("cannot convert: ")
    assert "HomeMadeClassifier" in outcome.check["reason"]


def test_a_copy_outside_the_tolerance_is_refused(training, cancer) -> None:
    x, y = cancer
    pipeline, card = fit(
        training, x, y, RandomForestClassifier(n_estimators=50, random_state=0), scale=False, task="classification"
    )

    accepted = compile_model(pipeline, card, x.iloc[:200])
    refused = compile_model(pipeline, card, x.iloc[:200], tolerance=1e-12)

    assert accepted.accepted and accepted.check["max_abs_diff"] > 1e-12  # float32 sums of the trees' fractions
    assert refused.onnx is None and refused.check["labels_identical"] is True
    assert refused.check["max_abs_diff"] == accepted.check["max_abs_diff"]
    assert "more than the tolerance 1e-12" in refused.check["reason"]


def test_other_refusals_name_their_reason(training, cancer) -> None:
    x, y = cancer
    pipeline, card = fit(training, x, y, LogisticRegression(max_iter=5000), scale=True, task="classification")

    older = compile_model(pipeline, {**card, "sklearn_version": "1.2.2"}, x.iloc[:50])
    empty = compile_model(pipeline, card, x.iloc[:0])
    not_a_pipeline = compile_model(pipeline.named_steps["model"], card, x.iloc[:50])

    assert "trained with scikit-learn 1.2.2" in older.check["reason"] and older.onnx is None
    assert empty.check["reason"] == "no rows to check the compiled copy on"
    assert not_a_pipeline.check["reason"].startswith("cannot convert: not a recipe pipeline")


# --- registration, through a real local training run --------------------------------------------------------


@pytest.fixture
def project(users: Any) -> Any:
    from controlplane import services as controlplane_services

    return controlplane_services.project_create(actor=users.admin, name="Cancer", slug="cancer")


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_registration_records_and_stores_the_checked_compiled_copy(
    celery_worker, api_client_for, client, users, project, tmp_path
) -> None:
    from django.urls import reverse

    from controlplane.backends import object_store
    from controlplane.models import AuditEvent
    from lineage.models import DatasetProfile, ModelVersion
    from lineage.services.registry import ModelArtifact, model_version_compile
    from tests.fixtures.processes import wait_for
    from tests.lineage.conftest import upload
    from tests.lineage.test_training import finished, launch

    frame = load_breast_cancer(as_frame=True).frame
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False)
    api = api_client_for(users.data_scientist)
    data = upload(api, project="cancer", dataset="bc", name="bc.csv", content=buffer.getvalue().encode()).json()
    wait_for(
        lambda: DatasetProfile.objects.filter(version_id=data["id"], status="ready").exists(),
        timeout=120,
        what="profile",
    )
    response = launch(
        api,
        recipe="random_forest",
        train=data["id"],
        hyperparameters={"n_estimators": 40, "cv_folds": 0},
        model_name="bc-forest",
    )
    assert response.status_code == 201, response.content
    run = finished(response.json()["id"])
    assert run.status == "succeeded", run.status_reason

    version = ModelVersion.objects.get(run=run)
    validation_rows = version.metadata["holdout_sample"]["rows"]
    assert validation_rows == 114  # the default validation fraction, 0.2 of 569 rows, rounded up
    assert version.framework_version == sklearn.__version__
    import onnxruntime

    assert version.compiled_runtime == f"onnxruntime {onnxruntime.__version__}"
    check = version.compiled_check
    assert check["accepted"] and check["labels_identical"] and 0 <= check["max_abs_diff"] <= 1e-5
    assert (check["sample_rows"], check["sample_source"]) == (validation_rows, "held-out validation rows")
    assert version.compiled_key.startswith("models/") and version.compiled_key.endswith(".onnx")
    with object_store().open(version.compiled_key) as handle:
        onnx = handle.read()
    assert hashlib.sha256(onnx).hexdigest() == version.compiled_sha256 and version.compiled_uri
    # The stored bytes serve: equal to the original on the whole dataset.
    import joblib

    with object_store().open(version.artifact_key) as handle:
        pipeline = joblib.load(io.BytesIO(handle.read()))
    assert_same_predictions(pipeline, version.metadata, onnx, frame.drop(columns="target"))

    audit = AuditEvent.objects.get(action="model_version.create", object_id=str(version.pk))
    assert audit.after["compiled_runtime"] == version.compiled_runtime
    assert audit.after["compiled_sha256"] == version.compiled_sha256
    body = api.get(reverse("api-model-version-detail", args=[version.pk])).json()
    assert body["compiled_runtime"] == version.compiled_runtime and body["compiled_check"]["accepted"] is True
    assert (body["framework_version"], body["compiled_sha256"]) == (sklearn.__version__, version.compiled_sha256)
    client.force_login(users.data_scientist)
    page = client.get(reverse("model-version-detail", args=["cancer", "bc-forest", version.number])).content.decode()
    assert f"{version.compiled_runtime} — checked on {validation_rows} held-out rows, max |difference|" in page
    assert "classes identical" in page
    minor = ".".join(sklearn.__version__.split(".")[:2])
    assert f'data-testid="serving-image"><code>sklearn-{minor}</code>' in page
    # What the page says to run serves this very version, on its compiled copy.
    from lineage.selectors import model_version_serving_settings
    from tests.serving.conftest import start_server

    assert "Serve it yourself" in page and f"MODEL_SHA256={version.sha256}" in page
    settings = model_version_serving_settings(version)
    assert body["serving_settings"] == settings and body["card"] == version.metadata  # the API gives the same
    assert settings["COMPILED_SHA256"] == version.compiled_sha256
    server = start_server({**settings, "HOST": "127.0.0.1"}, tmp_path / "serve")
    try:
        rows = frame.drop(columns="target").head(5)
        request = urllib.request.Request(
            server.url + "/invocations",
            data=rows.to_csv(index=False, header=False).encode(),
            headers={"Content-Type": "text/csv"},
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert json.loads(answer.read())["predictions"] == pipeline.predict(rows).tolist()
        with urllib.request.urlopen(server.url + "/ping", timeout=10) as answer:
            assert json.loads(answer.read())["runtime"] == version.compiled_runtime
    finally:
        assert server.stop() == 0

    # An artifact without the held-out sample (made before recipes wrote one) is checked on the training input.
    bare = tmp_path / "model"
    bare.mkdir()
    with object_store().open(version.artifact_key) as handle, (bare / "model.joblib").open("wb") as out:
        shutil.copyfileobj(handle, out)
    artifact = ModelArtifact(uri="", key="", sha256="", size=0, metadata_path=bare / "model.json", model_dir=bare)
    fields = model_version_compile(run=run, artifact=artifact, metadata=version.metadata)
    assert fields["compiled_check"]["accepted"], fields["compiled_check"]
    assert fields["compiled_check"]["sample_source"].startswith("training input rows")
    assert fields["compiled_check"]["sample_rows"] == 500 and fields["compiled_sha256"] == version.compiled_sha256
    # And one whose check cannot run is refused with the reason, never failing.
    older = model_version_compile(run=run, artifact=artifact, metadata={**version.metadata, "sklearn_version": "1.2.2"})
    assert older == {"compiled_check": older["compiled_check"]} and not older["compiled_check"]["accepted"]
    assert "trained with scikit-learn 1.2.2" in older["compiled_check"]["reason"]


def test_the_same_model_compiles_to_the_same_bytes_in_any_process(trained, tmp_path) -> None:
    """The copy is stored content-addressed: two workers (two hash seeds) must produce the same object."""
    import subprocess
    import sys

    model = trained["forest"]
    script = (
        "import hashlib, json, sys, joblib, pandas as pd\n"
        "from serving.compiled import compile_model\n"
        "folder = sys.argv[1]\n"
        "outcome = compile_model(joblib.load(folder + '/model.joblib'), json.load(open(folder + '/model.json')),\n"
        "                        pd.read_csv(folder + '/holdout_sample.csv'))\n"
        "print(hashlib.sha256(outcome.onnx).hexdigest())\n"
    )
    digests = {
        subprocess.run(
            [sys.executable, "-c", script, str(model.folder)],
            env={**__import__("os").environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        ).stdout.strip()
        for seed in ("1", "3")
    }
    assert digests == {model.compiled_sha256}
