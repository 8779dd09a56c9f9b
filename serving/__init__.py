"""The serving runtime: the inference server every deployment runs (no Django; also the serving image's code).

`python -m serving` reads its settings from the environment (serving/config.py) and serves `GET /ping`,
`POST /invocations` and `GET /metrics` on one event loop (serving/http.py).
"""
