"""Capture never makes a request wait: with the store stuck, samples beyond the bound are dropped and counted."""

from __future__ import annotations

import threading
import time

import numpy as np

from serving.capture import Capture
from serving.metrics import Metrics
from serving.predictors import Batch, Prediction


class StuckStore:
    """An object store whose writes hang until released, as a store does when S3 is slow."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Event()
        self.keys: list[str] = []

    def put(self, key: str, stream, *, content_type: str = "") -> None:
        self.entered.set()
        self.release.wait(timeout=30)
        self.keys.append(key)


def batch(rows: int) -> tuple[Batch, Prediction]:
    matrix = np.ones((rows, 2))
    columns = {"a": matrix[:, 0], "b": matrix[:, 1]}
    return Batch(columns=columns, rows=rows, matrix=matrix), Prediction(labels=np.zeros(rows, dtype=np.int64))


def test_a_stuck_store_drops_and_counts_instead_of_blocking() -> None:
    store = StuckStore()
    metrics = Metrics(service="s", revision="r", runtime="test")
    capture = Capture(
        store,
        fraction=1.0,
        feature_names=["a", "b"],
        service="s",
        revision="r",
        metrics=metrics,
        batch_rows=10,
        flush_seconds=0.05,
        max_queued_rows=50,
    )
    capture.start()
    capture.offer(*batch(10))  # taken by the writer, which then hangs in put()
    assert store.entered.wait(timeout=10)
    started = time.perf_counter()
    for _ in range(20):
        capture.offer(*batch(10))
    assert time.perf_counter() - started < 0.5  # never waited for the store
    assert metrics.captured_rows == 60 and metrics.capture_dropped_rows == 150
    assert "serving_capture_dropped_rows_total" in metrics.prometheus()
    store.release.set()
    capture.close()
    assert metrics.capture_written_rows == 60 and len(store.keys) >= 2
