"""Logistic regression classifier (scikit-learn), with scaled numeric and one-hot encoded categorical features."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import _contract as sm
import _training

RECIPE = {
    "name": "logistic_regression",
    "kind": "training",
    "task": "classification",
    "version": "2",
    "description": "Logistic regression classifier; reports k-fold cross-validation accuracy, then validation metrics.",
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
    ],
    "parameters": [
        {"name": "target", "type": "column", "required": True, "help": "The column to predict."},
        {
            "name": "C",
            "type": "float",
            "default": 1.0,
            "minimum": 0.0001,
            "maximum": 10000.0,
            "help": "Inverse regularization strength: smaller means a simpler model.",
        },
        {
            "name": "max_iter",
            "type": "int",
            "default": 200,
            "minimum": 10,
            "maximum": 10000,
            "help": "Solver iterations at most.",
        },
        {
            "name": "class_weight",
            "type": "choice",
            "default": "none",
            "choices": ["none", "balanced"],
            "help": "balanced weighs classes inversely to their frequency.",
        },
        {
            "name": "seed",
            "type": "int",
            "default": 42,
            "minimum": 0,
            "maximum": 4294967295,
            "help": "Seed for the validation hold-out and the cross-validation folds.",
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
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(
        C=params["C"],
        max_iter=params["max_iter"],
        class_weight=None if params["class_weight"] == "none" else params["class_weight"],
        random_state=params["seed"],
    )


if __name__ == "__main__":
    sm.run(lambda: _training.train(RECIPE, make_estimator, task=RECIPE["task"], scale=True))
