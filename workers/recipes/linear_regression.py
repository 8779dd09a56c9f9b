"""Ordinary least squares linear regression (scikit-learn)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import _contract as sm
import _training

RECIPE = {
    "name": "linear_regression",
    "kind": "training",
    "task": "regression",
    "version": "2",
    "description": "Least-squares linear regression; reports k-fold cross-validation RMSE, then validation metrics.",
    "channels": ["train", "validation"],
    "optional_channels": ["validation"],
    "metrics": ["train_rows", "validation_rows", "cv_rmse_fold", "cv_rmse", "cv_rmse_std", "rmse", "mae", "r2"],
    "parameters": [
        {"name": "target", "type": "column", "required": True, "help": "The column to predict."},
        {"name": "fit_intercept", "type": "bool", "default": True, "help": "Fit a constant term."},
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
    from sklearn.linear_model import LinearRegression

    return LinearRegression(fit_intercept=params["fit_intercept"])


if __name__ == "__main__":
    sm.run(lambda: _training.train(RECIPE, make_estimator, task=RECIPE["task"]))
