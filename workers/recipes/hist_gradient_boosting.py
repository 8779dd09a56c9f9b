"""Histogram-based gradient boosting (scikit-learn) for classification or regression."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import _contract as sm
import _training

RECIPE = {
    "name": "hist_gradient_boosting",
    "kind": "training",
    "version": "1",
    "description": "Histogram gradient boosting; reports train and validation scores per boosting stage.",
    "channels": ["train", "validation"],
    "optional_channels": ["validation"],
    "metrics": [
        "train_rows",
        "validation_rows",
        "train_accuracy",
        "validation_accuracy",
        "accuracy",
        "f1",
        "roc_auc",
        "log_loss",
        "train_rmse",
        "validation_rmse",
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
            "name": "learning_rate",
            "type": "float",
            "default": 0.1,
            "minimum": 0.001,
            "maximum": 1.0,
            "help": "Shrinkage applied to each stage.",
        },
        {"name": "max_iter", "type": "int", "default": 100, "minimum": 1, "maximum": 5000, "help": "Boosting stages."},
        {
            "name": "max_leaf_nodes",
            "type": "int",
            "default": 31,
            "minimum": 2,
            "maximum": 4096,
            "help": "Most leaves per tree.",
        },
        {
            "name": "max_depth",
            "type": "int",
            "minimum": 1,
            "maximum": 100,
            "help": "Deepest a tree may grow (empty: no limit).",
        },
        {
            "name": "min_samples_leaf",
            "type": "int",
            "default": 20,
            "minimum": 1,
            "maximum": 10000,
            "help": "Fewest training rows in a leaf.",
        },
        {
            "name": "l2_regularization",
            "type": "float",
            "default": 0.0,
            "minimum": 0.0,
            "maximum": 10000.0,
            "help": "L2 penalty on leaf values.",
        },
        {
            "name": "seed",
            "type": "int",
            "default": 42,
            "minimum": 0,
            "maximum": 4294967295,
            "help": "Seed for the model and the validation hold-out.",
        },
        {
            "name": "validation_fraction",
            "type": "float",
            "default": 0.2,
            "minimum": 0.05,
            "maximum": 0.5,
            "help": "Share of train held out for validation when there is no validation channel.",
        },
    ],
}


def make_estimator(params: Mapping[str, Any], task: str) -> Any:
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    boosting = HistGradientBoostingClassifier if task == _training.CLASSIFICATION else HistGradientBoostingRegressor
    # Early stopping is off: it would carve its own validation split and stop at a data-dependent stage.
    return boosting(
        learning_rate=params["learning_rate"],
        max_iter=params["max_iter"],
        max_leaf_nodes=params["max_leaf_nodes"],
        max_depth=params["max_depth"],
        min_samples_leaf=params["min_samples_leaf"],
        l2_regularization=params["l2_regularization"],
        early_stopping=False,
        random_state=params["seed"],
    )


def fit(pipeline: Any, x: Any, y: Any) -> Any:
    """Boost in batches of iterations, printing how many are done (each batch continues where the last stopped)."""
    return _training.fit_in_batches(pipeline, x, y, size_parameter="max_iter", unit="iterations")


if __name__ == "__main__":
    sm.run(lambda: _training.train(RECIPE, make_estimator, staged=True, fit=fit))
