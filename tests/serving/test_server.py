"""The serving runtime as a real process on real trained artifacts: endpoints, answers and every bad request."""

from __future__ import annotations

import http.client
import json
import socket
import time
from typing import Any

import joblib
import numpy as np
import pytest

from tests.serving.conftest import Server, Trained


def call(
    server: Server,
    method: str,
    path: str,
    body: bytes | str | None = None,
    content_type: str | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    sent = dict(headers or {})
    if content_type:
        sent["Content-Type"] = content_type
    data = body.encode() if isinstance(body, str) else body
    connection.request(method, path, body=data, headers=sent)
    answer = connection.getresponse()
    payload = answer.read()
    result = answer.status, {k.lower(): v for k, v in answer.getheaders()}, payload
    connection.close()
    return result


def invoke(server: Server, document: Any) -> tuple[int, Any]:
    status, _, body = call(server, "POST", "/invocations", json.dumps(document), "application/json")
    return status, json.loads(body)


def expected(model: Trained, rows: Any) -> tuple[list[Any], np.ndarray | None]:
    pipeline = joblib.load(model.joblib)
    labels = pipeline.predict(rows).tolist()
    probabilities = pipeline.predict_proba(rows) if hasattr(pipeline, "predict_proba") else None
    return labels, probabilities


def test_ping_invocations_and_metrics(trained: dict[str, Trained], serve) -> None:
    model = trained["logistic"]
    server = serve(model)
    status, headers, body = call(server, "GET", "/ping")
    assert status == 200 and json.loads(body)["model_sha256"] == model.sha256
    rows = model.rows.head(5)
    labels, probabilities = expected(model, rows)

    status, answer = invoke(server, {"instances": rows.to_numpy().tolist()})
    assert status == 200, answer
    assert answer["predictions"] == labels and answer["classes"] == model.card["classes"]
    np.testing.assert_allclose(answer["probabilities"], probabilities, rtol=1e-12)

    named = json.loads(rows.to_json(orient="records"))
    assert invoke(server, {"inputs": named})[1]["predictions"] == labels

    csv_body = rows.to_csv(index=False, header=False)
    status, headers, body = call(server, "POST", "/invocations", csv_body, "text/csv")
    assert status == 200 and json.loads(body)["predictions"] == labels
    with_header = rows.to_csv(index=False)  # a first row that is exactly the feature names is a header
    assert (
        json.loads(call(server, "POST", "/invocations", with_header, "text/csv; charset=utf-8")[2])["predictions"]
        == labels
    )

    status, headers, body = call(server, "GET", "/metrics")
    text = body.decode()
    assert status == 200 and headers["content-type"].startswith("text/plain; version=0.0.4")
    assert 'serving_requests_total{service="test-service",revision="r1",status="200"} 4' in text
    assert 'serving_request_duration_seconds_count{service="test-service",revision="r1"} 4' in text
    assert 'serving_predicted_rows_total{service="test-service",revision="r1"} 20' in text


def test_a_regressor_answers_numbers_and_mixed_types_are_read_by_type(trained: dict[str, Trained], serve) -> None:
    linear = trained["linear"]
    server = serve(linear)
    rows = linear.rows.head(3)
    status, answer = invoke(server, {"instances": rows.to_numpy().tolist()})
    assert status == 200 and "probabilities" not in answer
    np.testing.assert_allclose(answer["predictions"], joblib.load(linear.joblib).predict(rows), rtol=1e-12)

    mixed = trained["mixed"]
    server = serve(mixed)
    rows = mixed.rows.head(30)  # holds missing texture and grade values
    labels, _ = expected(mixed, rows)
    named = [
        {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in row.items()}
        for row in rows.to_dict(orient="records")
    ]
    named = [{**row, "smooth": bool(row["smooth"])} for row in named]
    assert invoke(server, {"inputs": named}) == (200, invoke(server, {"inputs": named})[1])
    assert invoke(server, {"inputs": named})[1]["predictions"] == labels
    csv_body = rows.to_csv(index=False, header=False)
    assert json.loads(call(server, "POST", "/invocations", csv_body, "text/csv")[2])["predictions"] == labels


BAD_JSON = [
    (b'{"instances": [[1, 2', "not valid JSON"),
    (b"[[1, 2, 3]]", 'either "instances"'),
    (b'{"instances": [], "x": 1}', "unknown keys 'x'"),
    (b'{"instances": []}', "non-empty list"),
    (b'{"instances": [[1, 2, 3]]}', "row 1 has 3 values; the model takes 30 columns"),
    (b'{"instances": [1]}', "row 1 of instances is a number"),
]


@pytest.mark.parametrize(("body", "message"), BAD_JSON)
def test_bad_json_bodies_are_400_with_the_problem(
    trained: dict[str, Trained], serve, body: bytes, message: str, logistic_server: Server
) -> None:
    status, headers, answer = call(logistic_server, "POST", "/invocations", body, "application/json")
    assert status == 400 and headers["content-type"] == "application/json"
    assert message in json.loads(answer)["error"]


@pytest.fixture(scope="module")
def logistic_server(trained: dict[str, Trained], tmp_path_factory: pytest.TempPathFactory):
    from tests.serving.conftest import server_env, start_server

    server = start_server(server_env(trained["logistic"], MAX_BODY_BYTES="65536"), tmp_path_factory.mktemp("srv"))
    yield server
    server.process.kill()
    server.process.wait()


def test_each_schema_problem_names_the_row_and_column(trained: dict[str, Trained], logistic_server: Server) -> None:
    model = trained["logistic"]
    row = model.rows.iloc[0].tolist()
    names = model.features
    cases = [
        ({"instances": [row, [*row[:5], "abc", *row[6:]]]}, f"row 2, column '{names[5]}': expected a number"),
        ({"instances": [[*row[:2], True, *row[3:]]]}, f"row 1, column '{names[2]}': expected a number or null"),
        ({"instances": [row, row[:-1]]}, "row 2 has 29 values"),
        ({"inputs": [dict(zip(names[1:], row[1:], strict=True))]}, f"row 1 lacks the column(s) '{names[0]}'"),
        ({"inputs": [{**dict(zip(names, row, strict=True)), "extra": 1}]}, "the model does not take: 'extra'"),
        ({"inputs": [{**dict(zip(names, row, strict=True)), names[3]: "x"}]}, f"column '{names[3]}'"),
        ({"inputs": [[1, 2]]}, "row 1 of inputs is a list"),
    ]
    for document, message in cases:
        status, answer = invoke(logistic_server, document)
        assert status == 400 and message in answer["error"], (document, answer)

    csv_cases = [
        ("1,2,3\n", "CSV row 1 has 3 values"),
        (",".join(["1"] * 29 + ["abc"]) + "\n", f"row 1, column '{names[29]}': 'abc' is not a number"),
        ('"unterminated,' + ",".join(["1"] * 29) + "\n", "CSV"),
        ("", "no rows"),
    ]
    for body, message in csv_cases:
        status, _, answer = call(logistic_server, "POST", "/invocations", body, "text/csv")
        assert status == 400 and message in json.loads(answer)["error"], (body, answer)
    status, _, answer = call(logistic_server, "POST", "/invocations", b"\xff\xfe,1", "text/csv")
    assert status == 400 and "not UTF-8" in json.loads(answer)["error"]
    status, _, answer = call(logistic_server, "POST", "/invocations", "a=1", "application/x-www-form-urlencoded")
    assert status == 415 and "application/json or text/csv" in json.loads(answer)["error"]


def test_routes_methods_and_sizes(logistic_server: Server, trained: dict[str, Trained]) -> None:
    assert call(logistic_server, "GET", "/invocations")[0] == 405
    assert call(logistic_server, "POST", "/ping", b"{}")[0] == 405
    status, _, answer = call(logistic_server, "GET", "/nowhere")
    assert status == 404 and "/invocations" in json.loads(answer)["error"]
    row = trained["logistic"].rows.iloc[0].tolist()
    big = json.dumps({"instances": [row] * 400})  # about 250 kB, over this server's 64 KiB limit
    status, headers, answer = call(logistic_server, "POST", "/invocations", big, "application/json")
    assert status == 413 and "65536" in json.loads(answer)["error"] and headers["connection"] == "close"
    # Said up front: refused before the body is sent (curl's Expect: 100-continue).
    status, _, _ = call(
        logistic_server, "POST", "/invocations", big, "application/json", headers={"Expect": "100-continue"}
    )
    assert status == 413
    # The server is fine afterwards.
    assert invoke(logistic_server, {"instances": [row]})[0] == 200


def test_every_answer_names_the_revision_that_gave_it(logistic_server: Server, trained: dict[str, Trained]) -> None:
    # Behind the service's router this is how a client (and the local backend's tests) tells a canary's answers.
    row = trained["logistic"].rows.iloc[0].tolist()
    body = json.dumps({"instances": [row]})
    answers = [
        call(logistic_server, "GET", "/ping"),
        call(logistic_server, "POST", "/invocations", body, "application/json"),
        call(logistic_server, "POST", "/invocations", "{", "application/json"),
        call(logistic_server, "GET", "/nowhere"),
        call(logistic_server, "HEAD", "/ping"),
    ]
    assert [status for status, _, _ in answers] == [200, 200, 400, 404, 200]
    assert {headers.get("x-revision") for _, headers, _ in answers} == {"r1"}


def test_each_invocation_says_its_time_in_the_server_as_its_latency_histogram_counted_it(
    trained: dict[str, Trained], serve
) -> None:
    from bisect import bisect_left

    from serving.metrics import BUCKETS_MS

    server = serve(trained["logistic"])
    row = trained["logistic"].rows.iloc[0].tolist()
    durations = []
    for i in range(40):
        body = json.dumps({"instances": [row] * (1 + i % 7)}) if i % 5 else '{"instances": [[1, 2]]}'  # 400s too
        status, headers, _ = call(server, "POST", "/invocations", body, "application/json")
        assert status == (200 if i % 5 else 400)
        name, _, duration = headers["server-timing"].partition(";dur=")
        assert name == "app", headers["server-timing"]
        durations.append(float(duration))
    # Anything but an invocation has no time to tell.
    for method, path in (("GET", "/ping"), ("GET", "/nowhere"), ("GET", "/metrics")):
        assert "server-timing" not in call(server, method, path)[1], path
    text = call(server, "GET", "/metrics")[2].decode()
    served = [
        int(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("serving_request_duration_seconds_bucket")
    ]
    # Bucketed as the server buckets them, the times the answers carried are the server's histogram, every count.
    counts = [0] * (len(BUCKETS_MS) + 1)
    for ms in durations:
        counts[bisect_left(BUCKETS_MS, ms)] += 1
    assert served == [sum(counts[: i + 1]) for i in range(len(counts))]
    total = next(line for line in text.splitlines() if line.startswith("serving_request_duration_seconds_sum"))
    assert float(total.rsplit(" ", 1)[1]) * 1000 == pytest.approx(sum(durations), rel=1e-9)


def raw(server: Server, data: bytes, *, wait: float = 5.0) -> bytes:
    with socket.create_connection(("127.0.0.1", server.port), timeout=wait) as sock:
        sock.sendall(data)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


def test_malformed_http_chunked_bodies_pipelining_and_keep_alive(
    logistic_server: Server, trained: dict[str, Trained]
) -> None:
    answer = raw(logistic_server, b"NOT HTTP AT ALL\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400 ") and b"malformed HTTP" in answer
    row = json.dumps({"instances": [trained["logistic"].rows.iloc[0].tolist()]}).encode()
    half = len(row) // 2
    chunked = (
        b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (half, row[:half], len(row) - half, row[half:])
    )
    ping = b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n"
    closing = b"GET /ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    answer = raw(logistic_server, chunked + ping + closing)  # three pipelined requests on one connection
    assert answer.count(b"HTTP/1.1 200 OK") == 3 and b'"predictions"' in answer
    assert answer.endswith(b"}") and b"connection: close" in answer


def test_a_request_that_never_finishes_gets_408_and_the_connection_closes(trained: dict[str, Trained], serve) -> None:
    server = serve(trained["logistic"], REQUEST_TIMEOUT_SECONDS="1", KEEPALIVE_SECONDS="2")
    started = time.monotonic()
    answer = raw(server, b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{", wait=10)
    assert answer.startswith(b"HTTP/1.1 408 ") and time.monotonic() - started < 9
    # An idle keep-alive connection is closed after KEEPALIVE_SECONDS, not held forever.
    answer = raw(server, b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n", wait=10)
    assert answer.startswith(b"HTTP/1.1 200 ") and time.monotonic() - started < 9


@pytest.mark.parametrize("name", ["logistic", "forest", "linear", "mixed"])
def test_the_compiled_copy_serves_what_the_original_would(trained: dict[str, Trained], serve, name: str) -> None:
    model = trained[name]
    assert model.compiled is not None, f"{name} did not compile"
    server = serve(model, COMPILED_URI=model.compiled.as_uri(), COMPILED_SHA256=model.compiled_sha256)
    assert json.loads(call(server, "GET", "/ping")[2])["runtime"].startswith("onnxruntime ")
    rows = model.rows.head(50)
    pipeline = joblib.load(model.joblib)
    csv_body = rows.to_csv(index=False, header=False)  # missing values as empty cells, for the mixed model
    status, _, body = call(server, "POST", "/invocations", csv_body, "text/csv")
    answer = json.loads(body)
    assert status == 200, answer
    if model.card["task"] == "classification":
        assert answer["predictions"] == pipeline.predict(rows).tolist()
        np.testing.assert_allclose(answer["probabilities"], pipeline.predict_proba(rows), atol=1e-5)
    else:
        np.testing.assert_allclose(answer["predictions"], pipeline.predict(rows), rtol=1e-5)
    if model.features == list(model.rows.columns) and name != "mixed":  # the all-numeric fast path agrees too
        status, fast = invoke(server, {"instances": rows.to_numpy().tolist()})
        assert status == 200 and fast["predictions"] == answer["predictions"]


def test_a_compiled_copy_with_the_wrong_hash_is_refused(trained: dict[str, Trained], tmp_path) -> None:
    from tests.serving.conftest import server_env, start_server

    model = trained["forest"]
    assert model.compiled is not None
    env = server_env(model, COMPILED_URI=model.compiled.as_uri(), COMPILED_SHA256="1" * 64)
    server = start_server(env, tmp_path, wait=False)
    assert server.process.wait(timeout=60) == 3
    assert "refusing to serve" in server.stderr() and "COMPILED_SHA256" in server.stderr()


def test_limits_on_urls_headers_and_upgrades_answer_once(logistic_server: Server) -> None:
    answer = raw(logistic_server, b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 414 ") and answer.count(b"HTTP/1.1") == 1
    headers = b"".join(b"X-Filler-%d: %s\r\n" % (i, b"y" * 1000) for i in range(40))
    answer = raw(logistic_server, b"GET /ping HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
    assert answer.startswith(b"HTTP/1.1 431 ") and answer.count(b"HTTP/1.1") == 1
    upgrade = b"GET /ping HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
    answer = raw(logistic_server, upgrade)
    assert answer.startswith(b"HTTP/1.1 400 ") and answer.count(b"HTTP/1.1") == 1 and b"upgrades" in answer
    answer = raw(logistic_server, b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400 ") and answer.count(b"HTTP/1.1") == 1
    assert call(logistic_server, "GET", "/ping")[0] == 200


def test_numbers_beyond_float32_and_loose_csv_numbers_are_refused(trained: dict[str, Trained], serve) -> None:
    model = trained["forest"]  # forests compute in float32: 1e300 would be a 500 inside scikit-learn
    server = serve(model)
    row = model.rows.iloc[0].tolist()
    status, answer = invoke(server, {"instances": [row, [*row[:3], 1e300, *row[4:]]]})
    assert status == 400 and f"row 2, column '{model.features[3]}': 1e+300 is too large" in answer["error"]
    status, answer = invoke(server, {"inputs": [{**dict(zip(model.features, row, strict=True)), "mean area": -1e39}]})
    assert status == 400 and "column 'mean area'" in answer["error"] and "too large" in answer["error"]
    for cell in ("1_000", "١٢", "inf", "nan", "0x10"):
        body = ",".join([cell] + ["1"] * 29) + "\n"
        status, _, text = call(server, "POST", "/invocations", body, "text/csv")
        assert status == 400 and "is not a number" in json.loads(text)["error"], cell
    two_rows_and_a_gap = ",".join(["1"] * 30) + "\n\n" + ",".join(["1"] * 30)
    status, _, text = call(server, "POST", "/invocations", two_rows_and_a_gap, "text/csv")
    assert status == 400 and "CSV row 2 is empty" in json.loads(text)["error"]


def test_a_one_column_model_reads_an_empty_csv_line_as_a_missing_value(trained: dict[str, Trained], serve) -> None:
    model = trained["single"]
    server = serve(model)
    status, _, body = call(server, "POST", "/invocations", "0.05\n\n-0.02\n", "text/csv")
    predictions = json.loads(body)["predictions"]
    assert status == 200 and len(predictions) == 3
    pipeline = joblib.load(model.joblib)
    import pandas as pd

    np.testing.assert_allclose(predictions, pipeline.predict(pd.DataFrame({"bmi": [0.05, None, -0.02]})), rtol=1e-12)


def test_text_classes_in_a_numpy_string_array_are_answered(trained: dict[str, Trained], serve, tmp_path) -> None:
    from sklearn.tree import DecisionTreeClassifier

    from workers.sources import sha256_file

    source = trained["logistic"]
    labels = np.where(np.arange(len(source.rows)) % 2 == 0, "even", "odd")  # a numpy <U4 array, not object
    model = DecisionTreeClassifier(max_depth=3, random_state=0).fit(source.rows.to_numpy(), labels)
    path = tmp_path / "model.joblib"
    joblib.dump(model, path)
    card = {**source.card, "classes": ["even", "odd"]}
    server = serve(source, MODEL_URI=path.as_uri(), MODEL_SHA256=sha256_file(path), MODEL_CARD=json.dumps(card))
    status, answer = invoke(server, {"instances": source.rows.head(2).to_numpy().tolist()})
    assert status == 200 and set(answer["predictions"]) <= {"even", "odd"} and answer["classes"] == ["even", "odd"]


def test_a_model_of_another_patch_release_is_served_with_a_warning(trained: dict[str, Trained], serve) -> None:
    import sklearn

    model = trained["logistic"]
    major, minor, *_ = sklearn.__version__.split(".")
    card = {**model.card, "sklearn_version": f"{major}.{minor}.99"}
    server = serve(model, MODEL_CARD=json.dumps(card))
    assert invoke(server, {"instances": model.rows.head(1).to_numpy().tolist()})[0] == 200
    assert f"trained with scikit-learn {major}.{minor}.99; serving it with {sklearn.__version__}" in server.stderr()


def test_messages_for_mistakes_people_make(logistic_server: Server, trained: dict[str, Trained]) -> None:
    names = trained["logistic"].features
    assert "the body is empty" in invoke_raw(logistic_server, b"", "application/json")
    assert "send null for a missing value" in invoke_raw(
        logistic_server, b'{"instances": [[NaN, 1]]}', "application/json"
    )
    assert 'both "instances" and "inputs"' in invoke_raw(
        logistic_server, b'{"instances": [], "inputs": []}', "application/json"
    )
    assert "its keys: 'rows'" in invoke_raw(logistic_server, b'{"rows": []}', "application/json")
    header = ",".join(reversed(names)) + "\n" + ",".join(["1"] * 30) + "\n"
    assert "looks like a header" in invoke_raw(logistic_server, header.encode(), "text/csv")
    assert "separated by commas" in invoke_raw(logistic_server, ";".join(["1"] * 30).encode(), "text/csv")
    assert "an index column?" in invoke_raw(logistic_server, ",".join(["1"] * 31).encode(), "text/csv")
    assert "leave the cell empty" in invoke_raw(logistic_server, ",".join(["NA"] + ["1"] * 29).encode(), "text/csv")
    status, _, body = call(
        logistic_server, "POST", "/invocations", b"\x1f\x8b", "application/json", headers={"Content-Encoding": "gzip"}
    )
    assert status == 415 and "Content-Encoding 'gzip'" in json.loads(body)["error"]


def invoke_raw(server: Server, body: bytes, content_type: str) -> str:
    status, _, answer = call(server, "POST", "/invocations", body, content_type)
    assert status == 400, answer
    return json.loads(answer)["error"]
