"""The server's behaviour, apart from HTTP framing: routes, predictions, errors, metrics and capture.

`ServingApp.handle` takes a whole request and returns a whole response; serving/http.py (the deployed HTTP stack)
and serving/asgi.py (the same app on ASGI/RSGI servers, for comparison) only move bytes.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from serving.capture import Capture
from serving.metrics import Metrics
from serving.model import LoadedModel
from serving.predictors import Batch, Prediction
from serving.schema import BadRequest, RequestSchema

log = logging.getLogger("serving")

JSON = b"application/json"
PROMETHEUS = b"text/plain; version=0.0.4; charset=utf-8"


@dataclass
class Response:
    status: int
    body: bytes
    content_type: bytes = JSON
    # An invocation's time in the server, in ms: exactly what its latency histogram counted, sent back to the caller
    # as `Server-Timing: app;dur=<ms>` (None: not an invocation, no header).
    duration_ms: float | None = None


class ServerError(Exception):
    """A failure on our side (a package's hook) whose message is worded for the caller; answered 500."""


def error(status: int, message: str) -> Response:
    return Response(status, orjson.dumps({"error": message}))


class ServingApp:
    def __init__(
        self,
        model: LoadedModel,
        *,
        metrics: Metrics,
        capture: Capture | None = None,
        max_body_bytes: int,
        service: str = "",
        revision: str = "",
    ) -> None:
        self.model = model
        self.metrics = metrics
        self.capture = capture
        self.max_body_bytes = max_body_bytes
        self.service = service
        self.revision = revision
        self.schema = RequestSchema(model.features)
        self.ready = True
        self.classes = model.classes
        self._classes_json = orjson.dumps(model.classes) if model.classes is not None else b""
        ping = {"status": "ok", "service": service, "revision": revision, "runtime": model.predictor.runtime,
                "model_sha256": model.sha256}
        if model.compiled_sha256:
            ping["compiled_sha256"] = model.compiled_sha256
        self._ping = orjson.dumps(ping)

    def handle(self, method: str, path: str, content_type: str, body: bytes) -> Response:
        path = path.split("?", 1)[0]
        if path == "/invocations":
            if method != "POST":
                return error(405, "use POST for /invocations")
            return self.invoke(body, content_type)
        if path == "/ping":
            if method not in ("GET", "HEAD"):
                return error(405, "use GET for /ping")
            if not self.ready:
                return error(503, "shutting down")
            return Response(200, self._ping)
        if path == "/metrics":
            if method not in ("GET", "HEAD"):
                return error(405, "use GET for /metrics")
            return Response(200, self.metrics.prometheus().encode(), PROMETHEUS)
        return error(404, f"no route {path[:100]!r}: the server answers GET /ping, POST /invocations, GET /metrics")

    def too_large(self) -> Response:
        """The answer to a body over the limit; counted like any refused invocation."""
        self.metrics.record(413, 0.0)
        return error(413, f"the body is larger than the limit of {self.max_body_bytes} bytes (MAX_BODY_BYTES)")

    def invoke(self, body: bytes, content_type: str) -> Response:
        started = time.perf_counter()
        rows = 0
        try:
            batch = self.schema.parse(body, content_type)
            rows = batch.rows
            response = self.predict(batch)
        except BadRequest as exc:
            response = error(exc.status, str(exc))
        except ServerError as exc:
            log.exception("prediction failed")
            response = error(500, str(exc))
        except Exception as exc:
            log.exception("prediction failed")
            response = error(500, f"the prediction failed: {type(exc).__name__}: {exc}")
        seconds = time.perf_counter() - started
        self.metrics.record(response.status, seconds, rows if response.status == 200 else 0)
        response.duration_ms = seconds * 1000.0  # the value Metrics.record bucketed, to the last bit
        return response

    def predict(self, batch: Batch) -> Response:
        hooks = self.model.hooks
        frame = None
        to_predict = batch
        if hooks.preprocess is not None:
            frame = batch.frame()
            try:
                frame = hooks.preprocess(frame)
            except ValueError as exc:
                raise BadRequest(f"refused by the model's preprocess hook: {exc}") from None
            except Exception as exc:
                raise ServerError(f"the preprocess hook failed: {type(exc).__name__}: {exc}") from exc
            to_predict = self._batch_from_frame(frame, batch.rows)
        prediction = self.model.predictor.predict(to_predict)
        if self.capture is not None:
            self.capture.offer(batch, prediction)
        if hooks.postprocess is not None:
            answer = self._answer(prediction)
            try:
                result = hooks.postprocess(answer, frame if frame is not None else batch.frame())
            except Exception as exc:
                raise ServerError(f"the postprocess hook failed: {type(exc).__name__}: {exc}") from exc
            return Response(200, orjson.dumps(result, option=orjson.OPT_SERIALIZE_NUMPY))
        return Response(200, self._encode(prediction))

    def _batch_from_frame(self, frame: Any, rows: int) -> Batch:
        names = self.schema.names
        if list(getattr(frame, "columns", [])) != names:
            raise ServerError("the preprocess hook must return a DataFrame with the model's columns, in order")
        if len(frame) != rows:
            # Answers are matched to the rows sent, one for one: a hook may change values, never drop rows.
            raise ServerError(f"the preprocess hook returned {len(frame)} rows for the {rows} it was given")
        columns = {name: frame[name].to_numpy() for name in names}
        matrix = None
        if self.schema.numeric_only:
            matrix = np.column_stack([columns[n].astype(np.float64, copy=False) for n in names])
        return Batch(columns=columns, rows=len(frame), matrix=matrix)

    def _labels(self, prediction: Prediction) -> Any:
        labels = prediction.labels
        # orjson writes numeric and boolean arrays itself; text classes (object or numpy str) go as a list.
        return labels.tolist() if isinstance(labels, np.ndarray) and labels.dtype.kind not in "biuf" else labels

    def _answer(self, prediction: Prediction) -> dict[str, Any]:
        answer: dict[str, Any] = {"predictions": np.asarray(self._labels(prediction)).tolist()}
        if prediction.probabilities is not None:
            answer["probabilities"] = np.asarray(prediction.probabilities).tolist()
            answer["classes"] = self.classes
        return answer

    def _encode(self, prediction: Prediction) -> bytes:
        # orjson writes numpy arrays directly; the classes are encoded once at start.
        labels = orjson.dumps(self._labels(prediction), option=orjson.OPT_SERIALIZE_NUMPY)
        if prediction.probabilities is None:
            return b'{"predictions":' + labels + b"}"
        # In the runtime's own precision: a float32 copy writes 0.72, not 0.7200000286102295.
        probabilities = orjson.dumps(np.ascontiguousarray(prediction.probabilities), option=orjson.OPT_SERIALIZE_NUMPY)
        return b'{"predictions":' + labels + b',"probabilities":' + probabilities + b',"classes":' + (
            self._classes_json + b"}"
        )
