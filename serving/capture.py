"""Sampling requests into Parquet capture files in the object store: the drift job's input.

A sampled request's rows are queued on the request path (an append); a writer thread turns queued rows into one
Parquet file per batch (`CAPTURE_BATCH_ROWS` rows, or whatever came in `CAPTURE_FLUSH_SECONDS`) and stores it.
The queue holds at most `CAPTURE_MAX_QUEUED_ROWS` rows: when the store is slow and the queue is full, new samples
are dropped and counted (`serving_capture_dropped_rows_total`), so serving never waits for the store.

Files are written under `capture/<service>/<revision>/<YYYY>/<MM>/<DD>/<HHMMSS>-<rows>-<random>.parquet`, one row per
predicted row: the feature columns as served, `prediction`, `probability` (of the predicted class, classifiers),
`captured_at` (UTC timestamp, ms), `service`, `revision`.
"""

from __future__ import annotations

import io
import logging
import random
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from serving.metrics import Metrics
from serving.predictors import Batch, Prediction

log = logging.getLogger("serving")

STORE_ATTEMPTS = 3


@dataclass
class Sample:
    at: float
    batch: Batch
    prediction: Prediction


class Capture:
    """Samples `fraction` of requests; `offer` is cheap and never blocks, `close` writes what is queued."""

    def __init__(
        self,
        store: Any,
        *,
        fraction: float,
        feature_names: list[str],
        service: str,
        revision: str,
        metrics: Metrics,
        batch_rows: int = 5000,
        flush_seconds: float = 60.0,
        max_queued_rows: int = 20_000,
    ) -> None:
        self.store = store
        self.fraction = fraction
        self.feature_names = feature_names
        self.service = service
        self.revision = revision or "unknown"
        self.metrics = metrics
        self.batch_rows = batch_rows
        self.flush_seconds = flush_seconds
        self.max_queued_rows = max_queued_rows
        self._queue: deque[Sample] = deque()
        self._queued_rows = 0  # changed by the request path (+) and the writer (-), under the lock
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closing = threading.Event()
        self._random = random.Random()
        self._warned_large = False
        self._thread = threading.Thread(target=self._run, name="capture-writer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def offer(self, batch: Batch, prediction: Prediction) -> None:
        if self.fraction <= 0 or (self.fraction < 1 and self._random.random() >= self.fraction):
            return
        if len(prediction.labels) != batch.rows:
            # A misaligned sample would spoil the whole file it lands in: refuse it alone, counted.
            self.metrics.capture_counted(dropped=batch.rows)
            return
        if batch.rows > self.max_queued_rows and not self._warned_large:
            self._warned_large = True
            log.warning("capture: a request of %d rows is more than CAPTURE_MAX_QUEUED_ROWS (%d): such requests are "
                        "not captured", batch.rows, self.max_queued_rows)
        with self._lock:
            if self._queued_rows + batch.rows > self.max_queued_rows:
                dropped = True
            else:
                dropped = False
                self._queue.append(Sample(time.time(), batch, prediction))
                self._queued_rows += batch.rows
                wake = self._queued_rows >= self.batch_rows
        if dropped:
            self.metrics.capture_counted(dropped=batch.rows)
            return
        self.metrics.capture_counted(captured=batch.rows)
        if wake:
            self._wake.set()

    def _take(self, limit: int) -> list[Sample]:
        taken: list[Sample] = []
        rows = 0
        with self._lock:
            while self._queue and rows < limit:
                sample = self._queue.popleft()
                taken.append(sample)
                rows += sample.batch.rows
            self._queued_rows -= rows
        return taken

    def _run(self) -> None:
        oldest = time.monotonic()
        while True:
            self._wake.wait(timeout=min(self.flush_seconds, 1.0))
            self._wake.clear()
            closing = self._closing.is_set()
            due = time.monotonic() - oldest >= self.flush_seconds
            if closing or due or self._queued_rows >= self.batch_rows:
                while self._queue and (closing or due or self._queued_rows >= self.batch_rows):
                    self._write(self._take(self.batch_rows))
                    due = False
                oldest = time.monotonic()
            if closing:
                return

    def _write(self, samples: list[Sample]) -> None:
        if not samples:
            return
        rows = sum(s.batch.rows for s in samples)
        try:
            content = self.parquet(samples)
        except Exception:
            log.exception("capture: could not build a Parquet file of %d rows; dropped", rows)
            self.metrics.capture_stored(failed=rows)
            return
        now = datetime.fromtimestamp(samples[0].at, UTC)
        key = (
            f"capture/{self.service}/{self.revision}/{now:%Y/%m/%d}/"
            f"{now:%H%M%S}-{rows}-{secrets.token_hex(6)}.parquet"
        )
        for attempt in range(1, STORE_ATTEMPTS + 1):
            try:
                self.store.put(key, io.BytesIO(content), content_type="application/vnd.apache.parquet")
            except Exception as exc:
                if attempt == STORE_ATTEMPTS:
                    log.error("capture: storing %s failed %d times (%s); %d rows dropped", key, attempt, exc, rows)
                    self.metrics.capture_stored(failed=rows)
                    return
                time.sleep(0.2 * 2**attempt)
            else:
                self.metrics.capture_stored(written=rows)
                return

    def parquet(self, samples: list[Sample]) -> bytes:
        import pyarrow as pa
        import pyarrow.parquet as pq

        # Whole arrays at a time: this runs beside the request path, and per-sample Python work holds the GIL.
        columns: dict[str, Any] = {}
        if all(s.batch.matrix is not None for s in samples):
            matrix = np.concatenate([s.batch.matrix for s in samples])  # type: ignore[misc]
            for i, name in enumerate(self.feature_names):
                columns[name] = pa.array(matrix[:, i])
        else:
            for name in self.feature_names:
                values = np.concatenate([s.batch.columns[name] for s in samples])
                if values.dtype == object:  # categorical: text with NaN for missing
                    columns[name] = pa.array([v if isinstance(v, str) else None for v in values], type=pa.string())
                else:
                    columns[name] = pa.array(values)
        labels = np.concatenate([np.asarray(s.prediction.labels) for s in samples])
        columns["prediction"] = pa.array(labels.tolist() if labels.dtype.kind not in "biuf" else labels)
        if all(s.prediction.probabilities is not None for s in samples):
            probabilities = np.concatenate([np.asarray(s.prediction.probabilities) for s in samples])
            columns["probability"] = pa.array(probabilities.max(axis=1), type=pa.float64())
        stamps = np.repeat(
            np.array([int(s.at * 1000) for s in samples], dtype=np.int64), [s.batch.rows for s in samples]
        )
        columns["captured_at"] = pa.array(stamps, type=pa.timestamp("ms", tz="UTC"))
        total = len(stamps)
        columns["service"] = pa.array([self.service] * total, type=pa.string())
        columns["revision"] = pa.array([self.revision] * total, type=pa.string())
        table = pa.table(columns)
        sink = io.BytesIO()
        # Dictionary encoding only where values repeat (text): numbers dictionary-encoded make the drift job's reads
        # slower for files no smaller.
        text = [f.name for f in table.schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)]
        pq.write_table(table, sink, compression="zstd", use_dictionary=text)
        return sink.getvalue()

    def close(self, timeout: float = 5.0) -> None:
        """Write everything queued, then stop the writer; what is still queued after `timeout` counts as failed."""
        self._closing.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=timeout)
        else:
            while self._queue:
                self._write(self._take(self.batch_rows))
        if self._thread.is_alive():
            left = sum(sample.batch.rows for sample in self._take(self.max_queued_rows + self.batch_rows))
            log.error("capture: the store did not take the last files within %gs; %d rows not written", timeout, left)
            self.metrics.capture_stored(failed=left)
