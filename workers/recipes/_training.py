"""What the training recipes share: load train/validation, build the preprocessing, score, and save the model.

Ships next to the recipe like `_contract.py`. The saved pipeline holds scikit-learn classes only (no function from
this file), so the serving runtime can load it with scikit-learn alone. Written for Python >= 3.9 and
scikit-learn >= 1.2, the oldest the SageMaker scikit-learn images still offer.
"""

from __future__ import annotations

import json
import math
import platform
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import _contract as sm

if TYPE_CHECKING:
    import pandas as pd

CLASSIFICATION = "classification"
REGRESSION = "regression"
# Per-step series are thinned to about this many points so a 5000-iteration run does not flood the log.
MAX_STEP_POINTS = 100
# One-hot encoding folds rarer categories into one column, so an id-like column cannot explode the feature count.
MAX_CATEGORIES = 50
# Validation rows saved next to the model, on which registration checks a compiled copy against the original.
HOLDOUT_SAMPLE = "holdout_sample.csv"
HOLDOUT_SAMPLE_ROWS = 500


@dataclass
class TrainingData:
    """Features and target for training and validation, and what the model card records about them."""

    x_train: pd.DataFrame
    y_train: pd.Series
    x_validation: pd.DataFrame
    y_validation: pd.Series
    features: list[str]
    feature_types: dict[str, str]
    validation_source: str


def _feature_type(values: pd.Series) -> str:
    import pandas as pd

    if pd.api.types.is_bool_dtype(values):
        return "boolean"
    if pd.api.types.is_numeric_dtype(values):
        return "numeric"
    return "categorical"


def _check_target(frame: pd.DataFrame, target: str, task: str, where: str) -> pd.DataFrame:
    import pandas as pd

    if target not in frame.columns:
        raise sm.RecipeFailure(
            f"target column '{target}' is not in the {where} data (columns: {sm.list_columns(list(frame.columns))})"
        )
    missing = int(frame[target].isna().sum())
    if missing:
        print(f"note: dropped {missing} {where} rows with no value in '{target}'", flush=True)
        frame = frame[frame[target].notna()]
    if frame.empty:
        raise sm.RecipeFailure(f"the {where} data has no rows with a value in target column '{target}'")
    values = frame[target]
    if task == REGRESSION and (not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values)):
        raise sm.RecipeFailure(f"target column '{target}' is not numeric, so it cannot be a regression target")
    if task == CLASSIFICATION and pd.api.types.is_float_dtype(values) and not (values % 1 == 0).all():
        raise sm.RecipeFailure(
            f"target column '{target}' holds continuous values, so it cannot be a classification target "
            "(use a regression recipe or task=regression)"
        )
    return frame


def load_data(params: Mapping[str, Any], task: str) -> TrainingData:
    """Train from channel `train`; validation from channel `validation`, else a seeded held-out part of train."""
    from sklearn.model_selection import train_test_split

    target = params["target"]
    train = _check_target(sm.read_channel("train"), target, task, "training")
    features = [column for column in train.columns if column != target]
    if not features:
        raise sm.RecipeFailure(f"the training data has no feature columns besides the target '{target}'")
    validation = sm.read_channel("validation", required=False)
    if validation is not None:
        validation = _check_target(validation, target, task, "validation")
        absent = [column for column in features if column not in validation.columns]
        if absent:
            raise sm.RecipeFailure(f"the validation data lacks the feature columns: {sm.list_columns(absent)}")
        source = "channel"
    else:
        stratify = None
        if task == CLASSIFICATION and train[target].value_counts().min() >= 2:
            stratify = train[target]
        try:
            train, validation = train_test_split(
                train, test_size=params["validation_fraction"], random_state=params["seed"], stratify=stratify
            )
        except ValueError as exc:
            raise sm.RecipeFailure(
                f"cannot hold out validation rows from the {len(train)} training rows: {exc}"
            ) from exc
        source = f"held out {params['validation_fraction']:g} of train (seed {params['seed']})"
    sm.emit_metric("train_rows", len(train))
    sm.emit_metric("validation_rows", len(validation))
    return TrainingData(
        x_train=train[features],
        y_train=train[target],
        x_validation=validation[features],
        y_validation=validation[target],
        features=features,
        feature_types={column: _feature_type(train[column]) for column in features},
        validation_source=source,
    )


def build_pipeline(data: TrainingData, estimator: Any, *, scale: bool) -> Any:
    """Impute, one-hot encode (and scale, for linear models) the features, then the estimator."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    def encoder() -> Any:
        return OneHotEncoder(handle_unknown="infrequent_if_exist", max_categories=MAX_CATEGORIES, sparse_output=False)

    groups: dict[str, list[str]] = {"numeric": [], "boolean": [], "categorical": []}
    for column, kind in data.feature_types.items():
        groups[kind].append(column)
    numeric_steps: list[tuple[str, Any]] = [("impute", SimpleImputer(strategy="median"))]
    if scale:
        numeric_steps.append(("scale", StandardScaler()))
    transformers = []
    if groups["numeric"]:
        transformers.append(("numeric", Pipeline(numeric_steps), groups["numeric"]))
    if groups["boolean"]:
        # SimpleImputer rejects bool arrays, and a bool column cannot hold a missing value anyway.
        transformers.append(("boolean", encoder(), groups["boolean"]))
    if groups["categorical"]:
        categorical = Pipeline([("impute", SimpleImputer(strategy="most_frequent")), ("encode", encoder())])
        transformers.append(("categorical", categorical, groups["categorical"]))
    return Pipeline([("preprocess", ColumnTransformer(transformers)), ("model", estimator)])


def primary_metric(task: str) -> str:
    return "accuracy" if task == CLASSIFICATION else "rmse"


def score(task: str, y_true: Any, y_pred: Any) -> float:
    """The primary metric: accuracy for classification, root mean squared error for regression."""
    from sklearn.metrics import accuracy_score, mean_squared_error

    if task == CLASSIFICATION:
        return float(accuracy_score(y_true, y_pred))
    return math.sqrt(float(mean_squared_error(y_true, y_pred)))


def evaluate(task: str, model: Any, x: pd.DataFrame, y: pd.Series) -> dict[str, float]:
    """Final metrics on the validation rows."""
    from sklearn import metrics

    predicted = model.predict(x)
    if task == REGRESSION:
        results = {
            "rmse": math.sqrt(float(metrics.mean_squared_error(y, predicted))),
            "mae": float(metrics.mean_absolute_error(y, predicted)),
        }
        if len(y) >= 2:
            results["r2"] = float(metrics.r2_score(y, predicted))
        return results
    results = {
        "accuracy": float(metrics.accuracy_score(y, predicted)),
        "f1": float(metrics.f1_score(y, predicted, average="macro")),
    }
    classes = list(model.classes_)
    if hasattr(model, "predict_proba"):
        probabilities = model.predict_proba(x)
        # ROC AUC is only defined when both classes of a binary problem occur among the validation rows.
        if len(classes) == 2 and y.nunique() == 2:
            results["roc_auc"] = float(metrics.roc_auc_score(y, probabilities[:, 1]))
        results["log_loss"] = float(metrics.log_loss(y, probabilities, labels=classes))
    return results


def cross_validate(task: str, pipeline: Any, data: TrainingData, folds: int, seed: int) -> dict[str, float]:
    """`folds`-fold cross-validation on the training rows: {"cv_<metric>": mean, "cv_<metric>_std": std}.

    Each fold's score goes to its own series (`cv_<metric>_fold`, labelled with the fold), and the mean and the
    standard deviation follow the folds, so the last point of each series is the run's result.
    """
    from sklearn.base import clone
    from sklearn.model_selection import KFold, StratifiedKFold

    if folds < 2:
        return {}
    y = data.y_train
    if task == CLASSIFICATION:
        smallest = int(y.value_counts().min())
        if smallest < folds:
            print(f"note: cross-validation skipped: a class has {smallest} rows, fewer than {folds} folds", flush=True)
            return {}
        splitter: Any = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    else:
        if len(y) < folds:
            print(f"note: cross-validation skipped: {len(y)} rows, fewer than {folds} folds", flush=True)
            return {}
        splitter = KFold(n_splits=folds, shuffle=True, random_state=seed)
    name = "cv_" + primary_metric(task)
    scores = []
    sm.emit_progress(0, folds, "folds")
    for fold, (fit_rows, score_rows) in enumerate(splitter.split(data.x_train, y), start=1):
        model = clone(pipeline).fit(data.x_train.iloc[fit_rows], y.iloc[fit_rows])
        value = score(task, y.iloc[score_rows], model.predict(data.x_train.iloc[score_rows]))
        scores.append(value)
        sm.emit_metric(f"{name}_fold", value, fold=fold)
        sm.emit_progress(fold, folds, "folds")
    mean = math.fsum(scores) / len(scores)
    # The population standard deviation of the fold scores, as scikit-learn's cv_results_ reports it.
    std = math.sqrt(math.fsum((value - mean) ** 2 for value in scores) / len(scores))
    results = {name: mean, f"{name}_std": std}
    for metric, value in results.items():
        sm.emit_metric(metric, value)
    return results


def fit_in_batches(
    pipeline: Any, x: pd.DataFrame, y: pd.Series, *, size_parameter: str, unit: str, batches: int = 10
) -> Any:
    """Fit a pipeline whose estimator grows with warm_start (trees or boosting iterations), reporting progress.

    `size_parameter` is the estimator's count of trees or iterations (n_estimators, max_iter). Forests seed their
    trees in order from random_state and boosting adds stages in order, so the batches build the model a single fit
    would; the preprocessing is fitted once, as Pipeline.fit would.
    """
    preprocess, estimator = pipeline.named_steps["preprocess"], pipeline.named_steps["model"]
    features = preprocess.fit_transform(x, y)
    total = int(estimator.get_params()[size_parameter])
    size = max(1, math.ceil(total / batches))
    estimator.set_params(warm_start=True)
    built = 0
    sm.emit_progress(0, total, unit)
    while built < total:
        built = min(total, built + size)
        estimator.set_params(**{size_parameter: built})
        estimator.fit(features, y)
        sm.emit_progress(built, total, unit)
    # Saved as a single fit would leave it, so refitting the saved model starts from scratch.
    estimator.set_params(warm_start=False)
    return pipeline


def report_stages(task: str, model: Any, data: TrainingData) -> None:
    """Train and validation scores after each boosting stage (thinned to about MAX_STEP_POINTS points)."""
    stages = int(model.named_steps["model"].n_iter_)
    every = max(1, math.ceil(stages / MAX_STEP_POINTS))
    name = primary_metric(task)
    for split, x, y in (("train", data.x_train, data.y_train), ("validation", data.x_validation, data.y_validation)):
        features = model.named_steps["preprocess"].transform(x)
        for step, predicted in enumerate(model.named_steps["model"].staged_predict(features), start=1):
            if step % every == 0 or step == stages:
                sm.emit_metric(f"{split}_{name}", score(task, y, predicted), step=step)


def save_model(
    recipe: Mapping[str, Any],
    params: Mapping[str, Any],
    task: str,
    model: Any,
    data: TrainingData,
    results: Mapping[str, float],
) -> None:
    """model.joblib (the fitted pipeline), model.json (what the registry and serving need to know) and a sample of
    the validation rows' features (rows the model was not fitted on), for the check of a compiled copy."""
    import joblib
    import sklearn

    directory = sm.model_dir()
    directory.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, directory / "model.joblib")
    rows = min(HOLDOUT_SAMPLE_ROWS, len(data.x_validation))
    sample = data.x_validation.sample(n=rows, random_state=params["seed"]) if rows else data.x_validation
    # Missing values are written as the empty field, which every reader of our CSVs takes as missing.
    sample.to_csv(directory / HOLDOUT_SAMPLE, index=False)
    card: dict[str, Any] = {
        "recipe": recipe["name"],
        "recipe_version": recipe["version"],
        "task": task,
        "target": params["target"],
        "features": data.features,
        "feature_types": data.feature_types,
        "metrics": dict(results),
        "hyperparameters": dict(params),
        "validation": data.validation_source,
        "holdout_sample": {"file": HOLDOUT_SAMPLE, "rows": rows},
        "sklearn_version": sklearn.__version__,
        "python_version": platform.python_version(),
    }
    if task == CLASSIFICATION:
        card["classes"] = [value.item() if hasattr(value, "item") else value for value in model.classes_]
    (directory / "model.json").write_text(json.dumps(card, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def train(
    recipe: Mapping[str, Any],
    make_estimator: Callable[[Mapping[str, Any], str], Any],
    *,
    task: str | None = None,
    scale: bool = False,
    staged: bool = False,
    fit: Callable[[Any, pd.DataFrame, pd.Series], Any] | None = None,
) -> None:
    """The whole training run: the recipe supplies the estimator; `task` is fixed or read from params["task"].

    `fit(pipeline, x, y)` fits the final model when the recipe reports progress while it fits (default: Pipeline.fit).
    """
    params = sm.load_hyperparameters(recipe)
    task = task or params["task"]
    data = load_data(params, task)
    pipeline = build_pipeline(data, make_estimator(params, task), scale=scale)
    cv_results: dict[str, float] = {}
    if "cv_folds" in params:
        cv_results = cross_validate(task, pipeline, data, params["cv_folds"], params["seed"])
    model = fit(pipeline, data.x_train, data.y_train) if fit is not None else pipeline.fit(data.x_train, data.y_train)
    if staged:
        report_stages(task, model, data)
    results = evaluate(task, model, data.x_validation, data.y_validation)
    for name, value in results.items():
        sm.emit_metric(name, value)
    save_model(recipe, params, task, model, data, {**results, **cv_results})
