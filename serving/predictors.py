"""What predicts: the original scikit-learn pipeline, or a compiled copy of it that was checked equal at registration.

Both take a `Batch` (validated columns, in the model's feature order) and return a `Prediction`. The request
parser (serving/schema.py) builds the batch; nothing here parses or validates user input.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np


@dataclass(frozen=True)
class Feature:
    """One input column of the model version's schema; `type` is numeric, boolean or categorical."""

    name: str
    type: str


class Batch:
    """Rows to predict, by column: float64 arrays for numeric features (NaN for missing), bool arrays for boolean
    ones, object arrays of str (NaN for missing, as the pipeline's imputer expects) for categorical ones; every array
    has `rows` items. When every feature is numeric, `matrix` holds the same values as one float64 array of shape
    (rows, features), in feature order, for runtimes that take a matrix; a batch made from a matrix and the feature
    `names` builds its columns only when something asks for them (most requests never do)."""

    __slots__ = ("_columns", "matrix", "names", "rows")

    def __init__(
        self,
        columns: dict[str, np.ndarray] | None = None,
        rows: int = 0,
        matrix: np.ndarray | None = None,
        names: list[str] | None = None,
    ) -> None:
        if columns is None and (matrix is None or names is None):
            raise ValueError("a batch needs its columns, or a matrix and the feature names")
        self._columns = columns
        self.rows = rows
        self.matrix = matrix
        self.names = names

    @property
    def columns(self) -> dict[str, np.ndarray]:
        if self._columns is None:
            assert self.matrix is not None and self.names is not None
            self._columns = {name: self.matrix[:, i] for i, name in enumerate(self.names)}
        return self._columns

    def frame(self) -> Any:
        import pandas as pd

        return pd.DataFrame(self.columns, copy=False)


@dataclass
class Prediction:
    """`labels` has one item per row; `probabilities` (classifiers) one row per row, one column per class."""

    labels: np.ndarray
    probabilities: np.ndarray | None = None


class Predictor(Protocol):
    """Anything that predicts a batch. `runtime` says what it runs on, for /ping, /metrics and the logs."""

    runtime: str

    def predict(self, batch: Batch) -> Prediction: ...


class SklearnPredictor:
    """The fitted pipeline exactly as the recipe saved it, fed a DataFrame (its ColumnTransformer selects columns by
    name)."""

    def __init__(self, model: Any, *, classifier: bool) -> None:
        import sklearn

        self.model = model
        self.classifier = classifier and hasattr(model, "predict_proba")
        self.runtime = f"scikit-learn {sklearn.__version__}"

    def predict(self, batch: Batch) -> Prediction:
        frame = batch.frame()
        if self.classifier:
            probabilities = self.model.predict_proba(frame)
            labels = self.model.classes_.take(probabilities.argmax(axis=1))
            return Prediction(labels=labels, probabilities=probabilities)
        return Prediction(labels=self.model.predict(frame))
