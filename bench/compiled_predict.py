"""Predict time of the original pipeline against its compiled (ONNX Runtime) copy, per request of 1 and 100 rows.

Run from the repository root:

    .venv/bin/python bench/compiled_predict.py [--seconds 1.0]

Fits the recipes' pipelines (workers/recipes/_training.py's build_pipeline) on scikit-learn's breast cancer data:
logistic regression and a 100-tree random forest. Each figure is the median over 5 rounds of the mean time of one
call, taken after a warm-up. Rows: `sklearn` is serving.predictors.SklearnPredictor (DataFrame in, predict_proba);
`onnx` is serving.compiled.OnnxPredictor (the batch's arrays to the session's inputs, labels from the probabilities);
`onnx session only` is the session.run call alone on inputs already made; `numpy (LR only)` is the linear pipeline
written out by hand (impute, scale, dot, sigmoid) for comparison. One process, one thread for ONNX Runtime.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "workers" / "recipes"))

from _table import print_rows  # noqa: E402  bench/_table.py: the shared table printer


def per_call(function: Callable[[], Any], seconds: float) -> float:
    """Median over 5 rounds of the mean seconds per call."""
    function()
    calls = 1
    start = time.perf_counter()
    while time.perf_counter() - start < seconds / 10:
        function()
        calls += 1
    calls = max(10, calls * 2)
    rounds = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(calls):
            function()
        rounds.append((time.perf_counter() - start) / calls)
    return statistics.median(rounds)


def linear_by_hand(pipeline: Any) -> Callable[[np.ndarray], np.ndarray]:
    numeric = pipeline.named_steps["preprocess"].named_transformers_["numeric"]
    fill = numeric.named_steps["impute"].statistics_
    mean, scale = numeric.named_steps["scale"].mean_, numeric.named_steps["scale"].scale_
    estimator = pipeline.named_steps["model"]
    coef, intercept = (
        (estimator.coef_[0] / scale),
        estimator.intercept_[0] - float(np.dot(estimator.coef_[0], mean / scale)),
    )

    def predict(x: np.ndarray) -> np.ndarray:
        x = np.where(np.isnan(x), fill, x)
        p = 1.0 / (1.0 + np.exp(-(x @ coef + intercept)))
        return np.column_stack([1.0 - p, p])

    return predict


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="time per measurement (default 1)")
    args = parser.parse_args()

    import _training
    import sklearn
    from sklearn.datasets import load_breast_cancer
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    from serving.compiled import OnnxPredictor, batch_from_frame, compile_model
    from serving.predictors import Feature, SklearnPredictor

    frame = load_breast_cancer(as_frame=True).frame
    x, y = frame.drop(columns="target"), frame["target"]
    features = list(x.columns)
    kinds = {name: "numeric" for name in features}
    data = _training.TrainingData(x, y, x, y, features, kinds, "bench")
    card = {"features": features, "feature_types": kinds, "task": "classification", "classes": [0, 1]}
    schema = [Feature(name, kinds[name]) for name in features]
    models = {
        "logistic regression": _training.build_pipeline(data, LogisticRegression(max_iter=5000), scale=True),
        "random forest, 100 trees": _training.build_pipeline(
            data, RandomForestClassifier(n_estimators=100, random_state=0, n_jobs=1), scale=False
        ),
    }
    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}; "
        f"scikit-learn {sklearn.__version__}, python {platform.python_version()}"
    )
    rows = [("model / runtime", "1 row (µs)", "100 rows (µs)", "check")]
    for name, pipeline in models.items():
        pipeline.fit(x, y)
        outcome = compile_model(pipeline, card, x.sample(200, random_state=1), sample_source="bench")
        assert outcome.onnx is not None, outcome.check
        original = SklearnPredictor(pipeline, classifier=True)
        compiled = OnnxPredictor(outcome.onnx, features=schema, classes=card["classes"])
        batches = {n: batch_from_frame(x.iloc[:n], schema) for n in (1, 100)}
        feeds = {n: compiled.inputs(batches[n]) for n in (1, 100)}
        check = f"max |diff| {outcome.check['max_abs_diff']:.1e}"
        candidates: list[tuple[str, dict[int, Callable[[], Any]]]] = [
            ("sklearn", {n: partial(original.predict, batches[n]) for n in batches}),
            ("onnx", {n: partial(compiled.predict, batches[n]) for n in batches}),
            ("onnx session only", {n: partial(compiled.session.run, compiled._output, feeds[n]) for n in batches}),
        ]
        if name.startswith("logistic"):
            by_hand = linear_by_hand(pipeline)
            arrays = {n: np.array([batches[n].columns[c] for c in features]).T.copy() for n in batches}
            candidates.append(("numpy (LR only)", {n: partial(by_hand, arrays[n]) for n in batches}))
        for label, calls in candidates:
            timings = [per_call(calls[n], args.seconds) * 1e6 for n in (1, 100)]
            rows.append(
                (f"{name}: {label}", f"{timings[0]:.1f}", f"{timings[1]:.1f}", check if label == "onnx" else "")
            )
    print_rows(rows)


if __name__ == "__main__":
    main()
