"""The bare floor bench/serving.py compares the serving runtime with: the least an ASGI app can do to serve a model.

`FLOOR_MODEL` names the fitted pipeline (model.joblib). `POST /invocations` takes `{"instances": [[...], ...]}`,
checks that every row has as many numbers as the model has features, and answers `{"predictions": [...]}` from the
pipeline's `predict`, called on the event loop. `GET /ping` answers 200. Nothing else: no schema beyond the column
count, no capture, no metrics, no logging. The pipeline's ColumnTransformer selects its columns by name, so the rows
become a DataFrame with the model's column names (one float64 block, not copied) before `predict`.

With `FLOOR_ONNX` naming the compiled copy (serving/compiled.py's ONNX file) it predicts with that instead: one
onnxruntime session, one thread, the rows as one matrix in the graph's `numbers` input, the graph's own label
output. That is the floor for a server that serves the compiled copy; numeric features only.

Run by bench/serving.py under uvicorn (`--loop uvloop --http httptools --no-access-log`), or under granian as a
reference for what the HTTP server alone costs.
"""

from __future__ import annotations

import os
from typing import Any

import joblib
import numpy as np
import orjson
import pandas as pd

MODEL = joblib.load(os.environ["FLOOR_MODEL"])
COLUMNS = list(MODEL.feature_names_in_)
WIDTH = len(COLUMNS)
JSON = [(b"content-type", b"application/json")]


def _sklearn(x: np.ndarray) -> Any:
    return MODEL.predict(pd.DataFrame(x, columns=COLUMNS, copy=False))


predict = _sklearn
if os.environ.get("FLOOR_ONNX"):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    SESSION = onnxruntime.InferenceSession(os.environ["FLOOR_ONNX"], options, providers=["CPUExecutionProvider"])
    ORDER = SESSION.get_modelmeta().custom_metadata_map["numbers"].split("\x1f")
    if ORDER != COLUMNS or [i.name for i in SESSION.get_inputs()] != ["numbers"]:
        raise SystemExit("the ONNX floor handles a graph with one numbers input in the model's column order")
    DTYPE = np.float32 if SESSION.get_inputs()[0].type == "tensor(float)" else np.float64
    LABEL = SESSION.get_outputs()[0].name

    def _onnx(x: np.ndarray) -> Any:
        return SESSION.run([LABEL], {"numbers": x.astype(DTYPE, copy=False)})[0]

    predict = _onnx


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    if scope["path"] == "/ping":
        await _answer(send, 200, b"{}")
        return
    if scope["path"] != "/invocations" or scope["method"] != "POST":
        await _answer(send, 404, b'{"error": "not found"}')
        return
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    try:
        rows = orjson.loads(body)["instances"]
        if not rows or any(len(row) != WIDTH for row in rows):
            raise ValueError(f"every row needs {WIDTH} values")
        x = np.asarray(rows, dtype=np.float64)
    except (ValueError, TypeError, KeyError) as exc:
        await _answer(send, 400, orjson.dumps({"error": str(exc)}))
        return
    labels = predict(x)
    await _answer(send, 200, orjson.dumps({"predictions": labels}, option=orjson.OPT_SERIALIZE_NUMPY))


async def _answer(send: Any, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": JSON})
    await send({"type": "http.response.body", "body": body})
