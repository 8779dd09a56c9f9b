"""Random forest (scikit-learn) for classification or regression."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import _contract as sm
import _training

RECIPE = {
    "name": "random_forest",
    "kind": "training",
    "version": "2",
    "description": (
        "Random forest classifier or regressor; reports k-fold cross-validation (mean and standard deviation), "
        "then validation metrics."
    ),
    "channels": ["train", "validation"],
    "optional_channels": ["validation"],
    "metrics": [
        "train_rows",
        "validation_rows",
        "cv_accuracy_fold",
        "cv_accuracy",
        "cv_accuracy_std",
        "accuracy",
        "f1",
        "roc_auc",
        "log_loss",
        "cv_rmse_fold",
        "cv_rmse",
        "cv_rmse_std",
        "rmse",
        "mae",
        "r2",
    ],
    "parameters": [
        {"name": "target", "type": "column", "required": True, "help": "The column to predict."},
        {
            "name": "task",
            "type": "choice",
            "default": "classification",
            "choices": ["classification", "regression"],
            "help": "Predict a class or a number.",
        },
        {
            "name": "n_estimators",
            "type": "int",
            "default": 100,
            "minimum": 1,
            "maximum": 2000,
            "help": "Number of trees.",
        },
        {
            "name": "max_depth",
            "type": "int",
            "minimum": 1,
            "maximum": 100,
            "help": "Deepest a tree may grow (empty: until leaves are pure).",
        },
        {
            "name": "min_samples_leaf",
            "type": "int",
            "default": 1,
            "minimum": 1,
            "maximum": 10000,
            "help": "Fewest training rows in a leaf.",
        },
        {
            "name": "seed",
            "type": "int",
            "default": 42,
            "minimum": 0,
            "maximum": 4294967295,
            "help": "Seed for the trees, the validation hold-out and the cross-validation folds.",
        },
        {
            "name": "validation_fraction",
            "type": "float",
            "default": 0.2,
            "minimum": 0.05,
            "maximum": 0.5,
            "help": "Share of train held out for validation when there is no validation channel.",
        },
        {
            "name": "cv_folds",
            "type": "int",
            "default": 5,
            "minimum": 0,
            "maximum": 20,
            "help": "Cross-validation folds on train (0 or 1: none).",
        },
    ],
}


def make_estimator(params: Mapping[str, Any], task: str) -> Any:
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

    forest = RandomForestClassifier if task == _training.CLASSIFICATION else RandomForestRegressor
    # Trees are seeded one by one from random_state, so n_jobs does not change the result.
    return forest(
        n_estimators=params["n_estimators"],
        max_depth=params["max_depth"],
        min_samples_leaf=params["min_samples_leaf"],
        random_state=params["seed"],
        n_jobs=-1,
    )


def fit(pipeline: Any, x: Any, y: Any) -> Any:
    """Build the trees in batches, printing how many are built (a forest on many rows takes minutes)."""
    return _training.fit_in_batches(pipeline, x, y, size_parameter="n_estimators", unit="trees")


if __name__ == "__main__":
    sm.run(lambda: _training.train(RECIPE, make_estimator, fit=fit))
