"""The bare floor bench/serving.py compares the serving runtime with: the least an ASGI app can do to serve a model.

`FLOOR_MODEL` names the fitted pipeline (model.joblib). `POST /invocations` takes `{"instances": [[...], ...]}`,
checks that every row has as many numbers as the model has features, and answers `{"predictions": [...]}` from the
pipeline's `predict`, called on the event loop. `GET /ping` answers 200. Nothing else: no schema beyond the column
count, no capture, no metrics, no logging. The pipeline's ColumnTransformer selects its columns by name, so the rows
become a DataFrame with the model's column names (one float64 block, not copied) before `predict`.

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
    labels = MODEL.predict(pd.DataFrame(x, columns=COLUMNS, copy=False))
    await _answer(send, 200, orjson.dumps({"predictions": labels}, option=orjson.OPT_SERIALIZE_NUMPY))


async def _answer(send: Any, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": JSON})
    await send({"type": "http.response.body", "body": body})
