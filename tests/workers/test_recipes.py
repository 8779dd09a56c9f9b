"""The recipe registry and parameter validation, and every recipe run for real through the local training backend."""

from __future__ import annotations

import dataclasses
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes

from workers.recipes import (
    RECIPES,
    RECIPES_DIR,
    Parameter,
    UnknownRecipe,
    get_recipe,
    metric_definitions,
    recipe_fingerprint,
    validate_parameters,
)
from workers.recipes._contract import format_metric
from workers.training import InputFile, JobSpec, JobStatus, LocalTrainingBackend, parse_metrics
from workers.training.base import Progress, parse_progress

JOB_TIMEOUT = 120.0


def wait_all(backend: LocalTrainingBackend, job_ids: list[str]) -> dict[str, JobStatus]:
    """Each job's final status, with the metric series its whole log holds (describe reports none)."""
    deadline = time.monotonic() + JOB_TIMEOUT
    while True:
        statuses = {job_id: backend.describe(job_id) for job_id in job_ids}
        if all(status.finished for status in statuses.values()):
            break
        assert time.monotonic() < deadline, {job_id: status.state for job_id, status in statuses.items()}
        time.sleep(0.2)
    for job_id, status in statuses.items():
        definitions = json.loads((backend.root / job_id / "job.json").read_text())["metric_definitions"]
        chunk = backend.read_log(job_id, cursor=None, metric_definitions=definitions)
        statuses[job_id] = dataclasses.replace(status, metrics=chunk.metrics)
    return statuses


def log_lines(jobs: Path, job: str) -> list[str]:
    return LocalTrainingBackend(jobs).read_log(job, cursor=None, metric_definitions=[]).lines


def values(status: JobStatus, name: str) -> list[float]:
    return [point["value"] for point in status.metrics.get(name, [])]


# --- the registry -----------------------------------------------------------------------------------------------


def test_registry_lists_the_recipes() -> None:
    assert set(RECIPES) == {
        "split",
        "clean_missing",
        "select_columns",
        "logistic_regression",
        "linear_regression",
        "random_forest",
        "hist_gradient_boosting",
    }
    for recipe in RECIPES.values():
        assert recipe.script.is_file()
        if recipe.kind == "training":
            assert recipe.channels == ("train", "validation")
            assert recipe.optional_channels == ("validation",)
            assert recipe.parameter("target").required
            assert recipe.parameter("seed").type == "int"
        else:
            assert recipe.channels == ("input",)
            assert recipe.outputs
    assert get_recipe("split").outputs == ("train", "test")
    assert get_recipe("clean_missing").outputs == ("output",)


def test_unknown_recipe_names_the_known_ones() -> None:
    with pytest.raises(UnknownRecipe, match=r"unknown recipe 'nope' \(known: clean_missing, .*split\)"):
        get_recipe("nope")
    assert issubclass(UnknownRecipe, ValueError)


def test_every_default_is_valid() -> None:
    for recipe in RECIPES.values():
        given = {p.name: ("a" if p.type == "columns" else "y") for p in recipe.parameters if p.required}
        cleaned, errors = validate_parameters(recipe, given)
        assert errors == {}, recipe.name
        for parameter in recipe.parameters:
            if not parameter.required:
                assert cleaned[parameter.name] == parameter.default


def test_fingerprint_is_stable_and_covers_the_version() -> None:
    recipe = get_recipe("random_forest")
    fingerprint = recipe_fingerprint(recipe)
    assert re.fullmatch(r"[0-9a-f]{64}", fingerprint)
    assert recipe_fingerprint(recipe) == fingerprint
    assert recipe_fingerprint(dataclasses.replace(recipe, version=recipe.version + ".1")) != fingerprint
    assert recipe_fingerprint(get_recipe("split")) != fingerprint


# --- validate_parameters -------------------------------------------------------------------------------------------


def errors_for(recipe_name: str, given: dict[str, Any], **kwargs: Any) -> dict[str, str]:
    return validate_parameters(get_recipe(recipe_name), given, **kwargs)[1]


def test_float_errors_name_the_range() -> None:
    for bad in (0.01, 1.5, "abc", True, "nan", "inf", [0.2]):
        assert errors_for("split", {"test_fraction": bad}) == {
            "test_fraction": "expected a number between 0.05 and 0.95"
        }
    assert errors_for("logistic_regression", {"target": "t", "C": 0}) == {
        "C": "expected a number between 0.0001 and 10000"
    }


def test_int_errors_name_the_range() -> None:
    for bad in (0, 2001, 2.5, "many", False):
        assert errors_for("random_forest", {"target": "t", "n_estimators": bad}) == {
            "n_estimators": "expected a whole number between 1 and 2000"
        }
    recipe = dataclasses.replace(get_recipe("split"), parameters=(Parameter("k", "int", default=3, minimum=1),))
    assert validate_parameters(recipe, {"k": 0})[1] == {"k": "expected a whole number >= 1"}
    assert validate_parameters(recipe, {"k": "12"})[0] == {"k": 12}
    recipe = dataclasses.replace(recipe, parameters=(Parameter("k", "int", maximum=9),))
    assert validate_parameters(recipe, {"k": 10})[1] == {"k": "expected a whole number <= 9"}


def test_choice_error_lists_the_choices() -> None:
    assert errors_for("clean_missing", {"strategy": "zap"}) == {
        "strategy": "expected one of: drop_rows, impute_mean, impute_median, impute_most_frequent"
    }


def test_bool_accepts_true_and_false_only() -> None:
    for good, expected in ((True, True), (False, False), ("true", True), ("False", False)):
        cleaned, errors = validate_parameters(get_recipe("linear_regression"), {"target": "t", "fit_intercept": good})
        assert errors == {} and cleaned["fit_intercept"] is expected
    for bad in ("yes", 1, 0, "1", "on"):
        assert errors_for("linear_regression", {"target": "t", "fit_intercept": bad}) == {
            "fit_intercept": "expected true or false"
        }


def test_unknown_and_required_parameters() -> None:
    assert errors_for("clean_missing", {"bogus": 1}) == {"bogus": "unknown parameter (known: columns, strategy)"}
    assert errors_for("select_columns", {}) == {
        "columns": "a value is required: expected a list of column names (a JSON list or comma-separated text)"
    }
    assert errors_for("select_columns", {"columns": " , "}) == {
        "columns": "a value is required: expected a list of column names (a JSON list or comma-separated text)"
    }
    assert errors_for("random_forest", {"target": ""}) == {
        "target": "a value is required: expected the name of a column"
    }


def test_columns_accept_lists_and_comma_separated_text() -> None:
    recipe = get_recipe("select_columns")
    for given in ("a, b", ["a", "b"], '["a", "b"]', '"a,b"'):
        cleaned, errors = validate_parameters(recipe, {"columns": given})
        assert errors == {} and cleaned == {"columns": ["a", "b"]}, given
    assert errors_for("select_columns", {"columns": [1, 2]}) == {
        "columns": "expected a list of column names (a JSON list or comma-separated text)"
    }
    assert errors_for("select_columns", {"columns": "a,a"}) == {"columns": "column 'a' is listed more than once"}


def test_column_names_are_checked_against_the_dataset() -> None:
    columns = ["a", "b", "c"]
    assert errors_for("select_columns", {"columns": "a,foo"}, columns=columns) == {
        "columns": "column 'foo' is not in the dataset (columns: a, b, c)"
    }
    assert errors_for("split", {"stratify_column": "foo"}, columns=columns) == {
        "stratify_column": "column 'foo' is not in the dataset (columns: a, b, c)"
    }
    assert errors_for("split", {"stratify_column": "b"}, columns=columns) == {}
    many = [f"c{i}" for i in range(30)]
    message = errors_for("random_forest", {"target": "x"}, columns=many)["target"]
    assert message.endswith("c19, … (10 more))")


def test_values_arriving_as_sagemaker_strings_get_their_declared_types() -> None:
    cleaned, errors = validate_parameters(
        get_recipe("random_forest"),
        {"target": "2024", "task": "regression", "n_estimators": "50", "max_depth": "7.0", "validation_fraction": ".3"},
    )
    assert errors == {}
    assert cleaned["n_estimators"] == 50 and isinstance(cleaned["n_estimators"], int)
    assert cleaned["max_depth"] == 7 and isinstance(cleaned["max_depth"], int)
    assert cleaned["validation_fraction"] == 0.3
    assert cleaned["target"] == "2024"
    # SageMaker's toolkit JSON-decodes values, so a numeric column name can arrive as a number.
    assert validate_parameters(get_recipe("random_forest"), {"target": 2024})[0]["target"] == "2024"


# --- metric lines and their regexes ----------------------------------------------------------------------------------


def test_metric_lines_parse_through_the_metric_definitions() -> None:
    definitions = metric_definitions(["accuracy", "cv_accuracy", "rmse"])
    lines = [
        format_metric("cv_accuracy", 0.9561, fold=3),
        format_metric("accuracy", 0.987654321),
        "metric: rmse=1.5e-05; step=7",
        "INFO something else accuracy=0.1",
        "metric: rmse=nan",
    ]
    assert lines[0].startswith("metric: cv_accuracy=0.9561; fold=3; time=")
    metrics = parse_metrics(lines, definitions)
    assert [point["value"] for point in metrics["cv_accuracy"]] == [0.9561]
    assert metrics["cv_accuracy"][0]["fold"] == 3
    assert metrics["cv_accuracy"][0]["time"] == pytest.approx(time.time(), abs=60)
    assert [point["value"] for point in metrics["accuracy"]] == [0.987654]
    assert metrics["rmse"] == [{"value": 1.5e-05, "step": 7, "time": None}]
    for definition in definitions:
        # SageMaker allows at most 500 characters and takes the first capture group as the value.
        assert len(definition["Regex"]) <= 500 and re.compile(definition["Regex"]).groups == 1


# --- the transform recipes, run through the local backend -------------------------------------------------------------


def write_inputs(directory: Path) -> dict[str, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rows = 200
    table = pd.DataFrame(
        {
            "id": np.arange(rows),
            "x": rng.normal(size=rows).round(3),
            "label": ["yes"] * 40 + ["no"] * 160,
        }
    )
    table.to_csv(directory / "table.csv", index=False)
    gaps = pd.DataFrame(
        {
            "a": [1.0, None, 3.0, 4.0, None, 6.0],
            "b": [10, 20, 30, 40, 50, 60],
            "c": ["p", "q", None, "q", "r", "q"],
        }
    )
    gaps.to_csv(directory / "gaps.csv", index=False)
    table.iloc[:150].to_csv(directory / "part-a.csv", index=False)
    table.iloc[150:].to_parquet(directory / "part-b.parquet", index=False)
    return {
        "table": directory / "table.csv",
        "gaps": directory / "gaps.csv",
        "part-a.csv": directory / "part-a.csv",
        "part-b.parquet": directory / "part-b.parquet",
    }


TRANSFORM_JOBS: dict[str, tuple[str, dict[str, Any], list[str]]] = {
    "split-seed7": ("split", {"test_fraction": 0.25, "seed": 7}, ["table"]),
    "split-seed7-again": ("split", {"test_fraction": 0.25, "seed": 7}, ["table"]),
    "split-seed8": ("split", {"test_fraction": 0.25, "seed": 8}, ["table"]),
    "split-stratified": ("split", {"test_fraction": 0.25, "stratify_column": "label"}, ["table"]),
    "split-bad-column": ("split", {"stratify_column": "colour"}, ["table"]),
    "drop-rows": ("clean_missing", {}, ["gaps"]),
    "drop-rows-in-a": ("clean_missing", {"strategy": "drop_rows", "columns": "a"}, ["gaps"]),
    "impute-mean": ("clean_missing", {"strategy": "impute_mean", "columns": ["a"]}, ["gaps"]),
    "impute-median-all": ("clean_missing", {"strategy": "impute_median"}, ["gaps"]),
    "impute-most-frequent": ("clean_missing", {"strategy": "impute_most_frequent"}, ["gaps"]),
    "select": ("select_columns", {"columns": "label,id"}, ["part-b.parquet", "part-a.csv"]),
}


@pytest.fixture(scope="module")
def transforms(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, JobStatus]]]:
    base = tmp_path_factory.mktemp("transforms")
    files = write_inputs(base / "data")
    backend = LocalTrainingBackend(base / "jobs")
    for job, (recipe_name, hyperparameters, inputs) in TRANSFORM_JOBS.items():
        spec = JobSpec(
            run_id=job,
            recipe=get_recipe(recipe_name),
            hyperparameters=hyperparameters,
            inputs=[InputFile("input", files[name], Path(files[name]).name) for name in inputs],
            work_dir=base / "jobs" / job,
        )
        assert backend.start(spec) == job
    yield base / "jobs", wait_all(backend, list(TRANSFORM_JOBS))


def output(jobs: Path, job: str, name: str) -> pd.DataFrame:
    return pd.read_csv(jobs / job / "output" / "data" / f"{name}.csv")


def test_split_is_deterministic_for_a_seed(transforms: tuple[Path, dict[str, JobStatus]]) -> None:
    jobs, statuses = transforms
    for job in ("split-seed7", "split-seed7-again", "split-seed8"):
        assert statuses[job].state == "succeeded", statuses[job].message
        assert values(statuses[job], "rows_in") == [200]
        assert values(statuses[job], "rows_out") == [200]
        assert values(statuses[job], "test_rows") == [50]
        assert statuses[job].output_dir == jobs / job / "output" / "data"
    for name in ("train", "test"):
        first = (jobs / "split-seed7" / "output" / "data" / f"{name}.csv").read_bytes()
        assert first == (jobs / "split-seed7-again" / "output" / "data" / f"{name}.csv").read_bytes()
        assert first != (jobs / "split-seed8" / "output" / "data" / f"{name}.csv").read_bytes()
    train, test = output(jobs, "split-seed7", "train"), output(jobs, "split-seed7", "test")
    assert len(train) == 150 and len(test) == 50
    assert sorted([*train["id"], *test["id"]]) == list(range(200))
    assert list(train.columns) == ["id", "x", "label"]


def test_stratified_split_keeps_class_ratios(transforms: tuple[Path, dict[str, JobStatus]]) -> None:
    jobs, statuses = transforms
    assert statuses["split-stratified"].state == "succeeded", statuses["split-stratified"].message
    train, test = output(jobs, "split-stratified", "train"), output(jobs, "split-stratified", "test")
    assert (test["label"] == "yes").sum() == 10 and len(test) == 50
    assert (train["label"] == "yes").sum() == 30 and len(train) == 150


def test_split_rejects_an_unknown_stratify_column(transforms: tuple[Path, dict[str, JobStatus]]) -> None:
    _, statuses = transforms
    status = statuses["split-bad-column"]
    assert status.state == "failed"
    assert status.message == (
        "hyperparameter stratify_column: column 'colour' is not in the dataset (columns: id, x, label)"
    )


def test_clean_missing_drops_rows(transforms: tuple[Path, dict[str, JobStatus]]) -> None:
    jobs, statuses = transforms
    assert statuses["drop-rows"].state == "succeeded", statuses["drop-rows"].message
    assert output(jobs, "drop-rows", "output")["b"].tolist() == [10, 40, 60]
    assert values(statuses["drop-rows"], "rows_in") == [6]
    assert values(statuses["drop-rows"], "rows_out") == [3]
    assert values(statuses["drop-rows"], "missing_cells_in") == [3]
    assert values(statuses["drop-rows"], "missing_cells_out") == [0]
    assert output(jobs, "drop-rows-in-a", "output")["b"].tolist() == [10, 30, 40, 60]


def test_clean_missing_imputes(transforms: tuple[Path, dict[str, JobStatus]]) -> None:
    jobs, statuses = transforms
    assert statuses["impute-mean"].state == "succeeded", statuses["impute-mean"].message
    mean = output(jobs, "impute-mean", "output")
    assert mean["a"].tolist() == [1.0, 3.5, 3.0, 4.0, 3.5, 6.0]
    assert mean["c"].isna().sum() == 1
    frequent = output(jobs, "impute-most-frequent", "output")
    assert frequent["c"].tolist() == ["p", "q", "q", "q", "r", "q"]
    assert frequent["a"].tolist() == [1.0, 1.0, 3.0, 4.0, 1.0, 6.0]
    assert values(statuses["impute-most-frequent"], "missing_cells_out") == [0]


def test_clean_missing_refuses_the_mean_of_text(transforms: tuple[Path, dict[str, JobStatus]]) -> None:
    _, statuses = transforms
    status = statuses["impute-median-all"]
    assert status.state == "failed"
    assert status.message.startswith("column 'c' is not numeric, so impute_median cannot fill it")


def test_select_columns_reads_every_file_in_name_order(transforms: tuple[Path, dict[str, JobStatus]]) -> None:
    jobs, statuses = transforms
    assert statuses["select"].state == "succeeded", statuses["select"].message
    selected = output(jobs, "select", "output")
    assert list(selected.columns) == ["label", "id"]
    # part-a.csv sorts before part-b.parquet, whatever order the inputs were given in.
    assert selected["id"].tolist() == list(range(200))
    assert values(statuses["select"], "columns_in") == [3]
    assert values(statuses["select"], "columns_out") == [2]


# --- the training recipes --------------------------------------------------------------------------------------------

TRAINING_JOBS: dict[str, tuple[str, dict[str, Any], str]] = {
    "logistic": ("logistic_regression", {"target": "target", "seed": 3}, "cancer"),
    "linear": ("linear_regression", {"target": "target", "seed": 3}, "diabetes"),
    "forest": ("random_forest", {"target": "target", "n_estimators": 40, "seed": 3}, "cancer"),
    "forest-regression": (
        "random_forest",
        {"target": "target", "task": "regression", "n_estimators": 30, "cv_folds": 0, "seed": 3},
        "diabetes+validation",
    ),
    "boosting": ("hist_gradient_boosting", {"target": "target", "max_iter": 30, "seed": 3}, "cancer"),
    "boosting-regression": (
        "hist_gradient_boosting",
        {"target": "target", "task": "regression", "max_iter": 250, "seed": 3},
        "diabetes",
    ),
    "missing-target": ("random_forest", {"target": "diagnosis"}, "cancer"),
}
REPEATED = ("logistic", "linear", "forest", "boosting")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, JobStatus]]]:
    base = tmp_path_factory.mktemp("training")
    cancer, diabetes = base / "cancer.csv", base / "diabetes.csv"
    load_breast_cancer(as_frame=True).frame.to_csv(cancer, index=False)
    frame = load_diabetes(as_frame=True).frame
    frame.to_csv(diabetes, index=False)
    frame.iloc[:350].to_csv(base / "diabetes-train.csv", index=False)
    frame.iloc[350:].to_csv(base / "diabetes-validation.csv", index=False)
    inputs = {
        "cancer": [InputFile("train", cancer, "train.csv")],
        "diabetes": [InputFile("train", diabetes, "train.csv")],
        "diabetes+validation": [
            InputFile("train", base / "diabetes-train.csv", "train.csv"),
            InputFile("validation", base / "diabetes-validation.csv", "validation.csv"),
        ],
    }
    backend = LocalTrainingBackend(base / "jobs")
    jobs = {**TRAINING_JOBS, **{f"{job}-again": TRAINING_JOBS[job] for job in REPEATED}}
    for job, (recipe_name, hyperparameters, data) in jobs.items():
        spec = JobSpec(
            run_id=job,
            recipe=get_recipe(recipe_name),
            hyperparameters=hyperparameters,
            inputs=inputs[data],
            work_dir=base / "jobs" / job,
        )
        backend.start(spec)
    yield base / "jobs", wait_all(backend, list(jobs))


def model_card(jobs: Path, job: str) -> dict[str, Any]:
    return json.loads((jobs / job / "model" / "model.json").read_text())


@pytest.mark.parametrize("job", ["logistic", "forest", "boosting"])
def test_classifiers_train_and_report(trained: tuple[Path, dict[str, JobStatus]], job: str) -> None:
    jobs, statuses = trained
    status = statuses[job]
    assert status.state == "succeeded", status.message
    assert status.model_dir == jobs / job / "model"
    for name in ("accuracy", "f1", "roc_auc", "log_loss"):
        assert len(values(status, name)) == 1, name
    assert values(status, "accuracy")[0] > 0.9
    assert values(status, "roc_auc")[0] > 0.95
    assert values(status, "train_rows") == [455] and values(status, "validation_rows") == [114]
    card = model_card(jobs, job)
    assert card["recipe"] == TRAINING_JOBS[job][0] and card["recipe_version"] == get_recipe(card["recipe"]).version
    assert card["target"] == "target" and card["classes"] == [0, 1]
    assert len(card["features"]) == 30 and "target" not in card["features"]
    assert set(card["feature_types"].values()) == {"numeric"}
    cross_validated = {"cv_accuracy", "cv_accuracy_std"} if job != "boosting" else set()
    assert set(card["metrics"]) == {"accuracy", "f1", "roc_auc", "log_loss", *cross_validated}
    assert card["metrics"]["accuracy"] == pytest.approx(values(status, "accuracy")[0], rel=1e-5)
    assert card["sklearn_version"]
    model = joblib.load(jobs / job / "model" / "model.joblib")
    sample = load_breast_cancer(as_frame=True).frame.drop(columns="target").head(3)
    assert set(model.predict(sample)) <= {0, 1}


def test_cross_validation_reports_the_mean_and_deviation_of_the_folds(
    trained: tuple[Path, dict[str, JobStatus]],
) -> None:
    jobs, statuses = trained
    for job, name in (("logistic", "cv_accuracy"), ("forest", "cv_accuracy"), ("linear", "cv_rmse")):
        metrics = statuses[job].metrics
        folds = metrics[f"{name}_fold"]
        assert [point["fold"] for point in folds] == [1, 2, 3, 4, 5]
        assert all(point["time"] is not None for point in folds)
        scores = [point["value"] for point in folds]
        # One point each, after the folds: the last point of every series is the run's result.
        assert len(metrics[name]) == len(metrics[f"{name}_std"]) == 1
        assert metrics[name][0]["value"] == pytest.approx(float(np.mean(scores)), rel=1e-5)
        assert metrics[f"{name}_std"][0]["value"] == pytest.approx(float(np.std(scores)), rel=1e-4)
        assert metrics[name][0]["time"] >= folds[-1]["time"]
        card = model_card(jobs, job)["metrics"]
        assert card[name] == pytest.approx(metrics[name][0]["value"], rel=1e-5)
        assert card[f"{name}_std"] == pytest.approx(metrics[f"{name}_std"][0]["value"], rel=1e-4)
    assert len(set(scores)) > 1  # the folds differ, so a last-fold value would not pass for the mean
    assert not any(name.startswith("cv_") for name in statuses["forest-regression"].metrics)


def test_no_metric_regex_matches_another_metrics_line() -> None:
    for recipe in RECIPES.values():
        for definition in recipe.metric_definitions:
            for other in recipe.metric_definitions:
                for line in (format_metric(other["Name"], 0.5), format_metric(other["Name"], 0.5, fold=2, step=3)):
                    matched = re.search(definition["Regex"], line) is not None
                    assert matched == (definition["Name"] == other["Name"]), (recipe.name, definition, line)


def test_cross_validation_of_the_issue_reports_the_mean_not_the_last_fold() -> None:
    definitions = get_recipe("logistic_regression").metric_definitions
    lines = [
        format_metric("cv_accuracy_fold", value, fold=fold) for fold, value in enumerate([0.96, 0.96, 0.98, 1, 1], 1)
    ]
    lines += [format_metric("cv_accuracy", 0.98), format_metric("cv_accuracy_std", 0.016)]
    metrics = parse_metrics(lines, definitions)
    assert metrics["cv_accuracy"][-1]["value"] == 0.98 and metrics["cv_accuracy_std"][-1]["value"] == 0.016
    assert [point["value"] for point in metrics["cv_accuracy_fold"]] == [0.96, 0.96, 0.98, 1, 1]


def test_boosting_reports_each_stage(trained: tuple[Path, dict[str, JobStatus]]) -> None:
    _, statuses = trained
    train = statuses["boosting"].metrics["train_accuracy"]
    assert [point["step"] for point in train] == list(range(1, 31))
    assert train[-1]["value"] >= train[0]["value"]
    assert len(statuses["boosting"].metrics["validation_accuracy"]) == 30
    # 250 stages are thinned to every third one plus the last.
    steps = [point["step"] for point in statuses["boosting-regression"].metrics["validation_rmse"]]
    assert steps[:3] == [3, 6, 9] and steps[-1] == 250 and len(steps) == 84


@pytest.mark.parametrize("job", ["linear", "forest-regression", "boosting-regression"])
def test_regressors_train_and_report(trained: tuple[Path, dict[str, JobStatus]], job: str) -> None:
    jobs, statuses = trained
    status = statuses[job]
    assert status.state == "succeeded", status.message
    for name in ("rmse", "mae", "r2"):
        assert len(values(status, name)) == 1, name
    assert 30 < values(status, "rmse")[0] < 80 and values(status, "r2")[0] > 0.2
    card = model_card(jobs, job)
    cross_validated = {"cv_rmse", "cv_rmse_std"} if job == "linear" else set()
    assert "classes" not in card and set(card["metrics"]) == {"rmse", "mae", "r2", *cross_validated}
    assert card["task"] == "regression"


def test_a_validation_channel_is_used_when_given(trained: tuple[Path, dict[str, JobStatus]]) -> None:
    jobs, statuses = trained
    assert values(statuses["forest-regression"], "train_rows") == [350]
    assert values(statuses["forest-regression"], "validation_rows") == [92]
    assert model_card(jobs, "forest-regression")["validation"] == "channel"


def progress_lines(jobs: Path, job: str) -> list[str]:
    return [line for line in log_lines(jobs, job) if line.startswith("progress:")]


def test_progress_is_reported_by_folds_then_trees_or_iterations(trained: tuple[Path, dict[str, JobStatus]]) -> None:
    jobs, _ = trained
    folds = [f"progress: {done}/5 folds" for done in range(6)]
    assert progress_lines(jobs, "forest") == folds + [f"progress: {done}/40 trees" for done in range(0, 41, 4)]
    assert parse_progress(log_lines(jobs, "forest")) == Progress(done=40, total=40, unit="trees")
    assert progress_lines(jobs, "logistic") == folds
    assert progress_lines(jobs, "boosting") == [f"progress: {done}/30 iterations" for done in range(0, 31, 3)]
    assert progress_lines(jobs, "boosting-regression")[-2:] == [
        "progress: 225/250 iterations",
        "progress: 250/250 iterations",
    ]


@pytest.fixture
def training_module(monkeypatch: pytest.MonkeyPatch) -> Any:
    """The recipes' shared module, imported the way recipe scripts import it (a top-level module)."""
    monkeypatch.syspath_prepend(str(RECIPES_DIR))
    import _training

    return _training


def _trees(model: Any) -> list[Any]:
    """Every tree's nodes (split features, thresholds, leaf values) as an array."""
    if hasattr(model, "estimators_"):
        return [
            np.concatenate(
                [
                    tree.tree_.__getstate__()["nodes"].view(np.uint8),
                    tree.tree_.__getstate__()["values"].view(np.uint8).ravel(),
                ]
            )
            for tree in model.estimators_
        ]
    # Boosting keeps one predictor per stage (and class).
    return [predictor.nodes.view(np.uint8) for stage in model._predictors for predictor in stage]


@pytest.mark.parametrize(
    ("recipe_name", "size", "unit"),
    [("random_forest", {"n_estimators": 23}, "trees"), ("hist_gradient_boosting", {"max_iter": 23}, "iterations")],
)
def test_fitting_in_batches_builds_the_model_one_fit_builds(
    training_module: Any, capsys: pytest.CaptureFixture[str], recipe_name: str, size: dict[str, int], unit: str
) -> None:
    import importlib

    script = importlib.import_module(recipe_name)
    params, errors = validate_parameters(get_recipe(recipe_name), {"target": "target", "seed": 5, **size})
    assert not errors
    frame = load_breast_cancer(as_frame=True).frame
    x, y = frame.drop(columns="target"), frame["target"]
    data = training_module.TrainingData(
        x_train=x,
        y_train=y,
        x_validation=x,
        y_validation=y,
        features=list(x.columns),
        feature_types=dict.fromkeys(x.columns, "numeric"),
        validation_source="test",
    )

    def pipeline() -> Any:
        return training_module.build_pipeline(data, script.make_estimator(params, "classification"), scale=False)

    single = pipeline().fit(x, y)
    batched = script.fit(pipeline(), x, y)
    assert np.array_equal(single.predict_proba(x), batched.predict_proba(x))
    final, built = single.named_steps["model"], batched.named_steps["model"]
    assert built.get_params() == final.get_params()  # saved as a single fit leaves it (warm_start off again)
    trees, again = _trees(final), _trees(built)
    assert len(trees) == len(again) == 23
    assert all(np.array_equal(a, b) for a, b in zip(trees, again, strict=True)), "the trees differ"
    printed = capsys.readouterr().out.splitlines()
    assert printed == [f"progress: {done}/23 {unit}" for done in (0, 3, 6, 9, 12, 15, 18, 21, 23)]


@pytest.mark.parametrize("job", REPEATED)
def test_training_is_reproducible(trained: tuple[Path, dict[str, JobStatus]], job: str) -> None:
    jobs, statuses = trained
    assert statuses[job].state == statuses[f"{job}-again"].state == "succeeded"
    strip_time = [{k: v for k, v in p.items() if k != "time"} for s in statuses[job].metrics.values() for p in s]
    again = [{k: v for k, v in p.items() if k != "time"} for s in statuses[f"{job}-again"].metrics.values() for p in s]
    assert strip_time == again
    for name in ("model.json", "model.joblib"):
        assert (jobs / job / "model" / name).read_bytes() == (jobs / f"{job}-again" / "model" / name).read_bytes()


def test_a_missing_target_fails_with_a_plain_message(trained: tuple[Path, dict[str, JobStatus]]) -> None:
    jobs, statuses = trained
    status = statuses["missing-target"]
    assert status.state == "failed"
    assert status.message.startswith("target column 'diagnosis' is not in the training data (columns: mean radius, ")
    assert status.message.endswith(" more))")
    assert (jobs / "missing-target" / "output" / "failure").read_text() == status.message
    assert json.loads((jobs / "missing-target" / "job.json").read_text())["exit_code"] == 1
    assert status.model_dir is None and not (jobs / "missing-target" / "model" / "model.joblib").exists()
