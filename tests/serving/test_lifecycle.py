"""Starting, refusing, capturing, reporting and stopping: the serving process as a deployment runs it."""

from __future__ import annotations

import io
import json
import socket
import tarfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

from serving.metrics import BUCKETS_MS, FORMAT
from tests.serving.conftest import Ingest, Server, Trained, server_env, start_server
from tests.serving.test_server import call, invoke
from workers import aws
from workers.sources import sha256_file


def wait_until(check: Any, *, timeout: float = 20.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def refused(model: Trained, tmp_path: Path, **env: str) -> tuple[int, str]:
    server = start_server(server_env(model, **env), tmp_path, wait=False)
    code = server.process.wait(timeout=60)
    return code, server.stderr().strip()


def test_a_hash_mismatch_is_refused_with_one_line(trained: dict[str, Trained], tmp_path: Path) -> None:
    code, stderr = refused(trained["logistic"], tmp_path, MODEL_SHA256="0" * 64)
    assert code == 3
    assert stderr.count("\n") == 0 and "refusing to serve" in stderr
    assert trained["logistic"].sha256 in stderr and "0" * 64 in stderr


def test_a_library_mismatch_is_refused_naming_the_image(trained: dict[str, Trained], tmp_path: Path) -> None:
    card = {**trained["logistic"].card, "sklearn_version": "1.2.1"}
    code, stderr = refused(trained["logistic"], tmp_path, MODEL_CARD=json.dumps(card))
    assert code == 3 and stderr.count("\n") == 0
    assert "trained with scikit-learn 1.2.1" in stderr and "sklearn-1.2" in stderr


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"MODEL_SHA256": "abc"}, "MODEL_SHA256 must be the artifact's SHA-256"),
        ({"MODEL_URI": "http://example.com/m"}, "MODEL_URI='http://example.com/m' must start with file:// or s3://"),
        ({"CAPTURE_FRACTION": "2"}, "CAPTURE_FRACTION='2' must be between 0 and 1"),
        ({"CAPTURE_FRACTION": "0.5"}, "CAPTURE_URL"),
        ({"METRICS_SINK": "portal"}, "METRICS_INGEST_URL"),
        ({"PORT": "http"}, "PORT='http' is not a number"),
        ({"MODEL_CARD": "{"}, "MODEL_CARD is not valid JSON"),
    ],
)
def test_bad_settings_are_refused_naming_the_variable(
    trained: dict[str, Trained], tmp_path: Path, env: dict[str, str], message: str
) -> None:
    code, stderr = refused(trained["logistic"], tmp_path, **env)
    assert code == 2 and message in stderr and stderr.count("\n") == 0


def test_a_model_on_s3_is_fetched_through_the_client_factory(trained: dict[str, Trained], serve, s3_bucket) -> None:
    model = trained["logistic"]
    aws.aws_client("s3", region="us-east-1").upload_file(str(model.joblib), s3_bucket, "models/m.joblib")
    server = serve(model, MODEL_URI=f"s3://{s3_bucket}/models/m.joblib")
    assert invoke(server, {"instances": model.rows.head(2).to_numpy().tolist()})[0] == 200


def package(model: Trained, folder: Path, hooks: str | None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.tar.gz"
    with tarfile.open(path, "w:gz") as archive:
        archive.add(model.joblib, arcname="model.joblib")
        archive.add(model.folder / "model.json", arcname="model.json")
        if hooks is not None:
            data = hooks.encode()
            info = tarfile.TarInfo("hooks.py")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


HOOKS = """
def preprocess(frame):
    if (frame["mean radius"] < 0).any():
        raise ValueError("mean radius cannot be negative")
    return frame.clip(lower=0)


def postprocess(answer, frame):
    answer["diagnosis"] = ["benign" if label == 1 else "malignant" for label in answer["predictions"]]
    return answer
"""


ROW_DROPPING_HOOK = """
def preprocess(frame):
    return frame.iloc[1:]
"""


def test_a_preprocess_hook_that_drops_rows_is_a_server_error_that_says_so(
    trained: dict[str, Trained], serve, tmp_path: Path
) -> None:
    model = trained["logistic"]
    path = package(model, tmp_path / "pkg", ROW_DROPPING_HOOK)
    server = serve(model, MODEL_URI=path.as_uri(), MODEL_SHA256=sha256_file(path), MODEL_CARD="")
    status, answer = invoke(server, {"instances": model.rows.head(3).to_numpy().tolist()})
    assert status == 500 and "the preprocess hook returned 2 rows for the 3 it was given" in answer["error"]


def test_a_model_package_brings_its_card_and_hooks(trained: dict[str, Trained], serve, tmp_path: Path) -> None:
    model = trained["logistic"]
    path = package(model, tmp_path / "pkg", HOOKS)
    server = serve(model, MODEL_URI=path.as_uri(), MODEL_SHA256=sha256_file(path), MODEL_CARD="")
    rows = model.rows.head(3).to_numpy().copy()
    status, answer = invoke(server, {"instances": rows.tolist()})
    assert status == 200
    assert answer["diagnosis"] == ["benign" if p == 1 else "malignant" for p in answer["predictions"]]
    rows[1, 0] = -1.0
    status, answer = invoke(server, {"instances": rows.tolist()})
    assert status == 400 and answer["error"] == "refused by the model's preprocess hook: mean radius cannot be negative"


def test_a_package_whose_hooks_do_not_load_is_refused(trained: dict[str, Trained], tmp_path: Path) -> None:
    path = package(trained["logistic"], tmp_path / "pkg", "import no_such_module\n")
    code, stderr = refused(trained["logistic"], tmp_path, MODEL_URI=path.as_uri(), MODEL_SHA256=sha256_file(path))
    assert code == 3 and "hooks.py failed to load: ModuleNotFoundError" in stderr


def send_rows(server: Server, model: Trained, requests: int, rows: int = 2) -> None:
    body = {"instances": model.rows.head(rows).to_numpy().tolist()}
    for _ in range(requests):
        assert invoke(server, body)[0] == 200


def read_capture(files: list[bytes]) -> Any:
    import pyarrow as pa

    return pa.concat_tables([pq.read_table(io.BytesIO(content)) for content in files])


def test_capture_files_land_in_the_local_store_as_parquet(trained: dict[str, Trained], serve, tmp_path: Path) -> None:
    model = trained["logistic"]
    store = tmp_path / "store"
    server = serve(
        model, CAPTURE_URL=store.as_uri(), CAPTURE_FRACTION="1", CAPTURE_BATCH_ROWS="10", CAPTURE_FLUSH_SECONDS="0.2"
    )
    send_rows(server, model, 15)
    files = wait_until(lambda: sorted((store / "capture").rglob("*.parquet")), what="capture files")
    assert str(files[0].relative_to(store)).startswith("capture/test-service/r1/")
    assert server.stop() == 0  # the rest is flushed on the way out
    table = read_capture([f.read_bytes() for f in sorted((store / "capture").rglob("*.parquet"))])
    assert table.num_rows == 30
    assert table.column_names[: len(model.features)] == model.features
    assert {"prediction", "probability", "captured_at", "service", "revision"} <= set(table.column_names)
    assert set(table.column("revision").to_pylist()) == {"r1"}
    expected = np.tile(model.rows.head(2).to_numpy(), (15, 1))
    np.testing.assert_array_equal(table.select(model.features).to_pandas().to_numpy(), expected)


def test_capture_files_land_on_s3(trained: dict[str, Trained], serve, s3_bucket: str) -> None:
    model = trained["logistic"]
    server = serve(model, CAPTURE_URL=f"s3://{s3_bucket}/serving", CAPTURE_FRACTION="1", CAPTURE_FLUSH_SECONDS="0.2")
    send_rows(server, model, 5)
    assert server.stop() == 0
    client = aws.aws_client("s3", region="us-east-1")
    listed = client.list_objects_v2(Bucket=s3_bucket, Prefix="serving/capture/test-service/r1/").get("Contents", [])
    assert listed, "no capture file on S3"
    table = read_capture([client.get_object(Bucket=s3_bucket, Key=o["Key"])["Body"].read() for o in listed])
    assert table.num_rows == 10


def test_a_fraction_samples_about_that_share(trained: dict[str, Trained], serve, tmp_path: Path) -> None:
    model = trained["logistic"]
    store = tmp_path / "store"
    server = serve(model, CAPTURE_URL=store.as_uri(), CAPTURE_FRACTION="0.25", CAPTURE_FLUSH_SECONDS="0.2")
    send_rows(server, model, 400, rows=1)
    assert server.stop() == 0
    table = read_capture([f.read_bytes() for f in (store / "capture").rglob("*.parquet")])
    assert 50 <= table.num_rows <= 150  # 100 expected; a binomial(400, 0.25) is inside this 99.99% of the time


def test_metrics_reach_the_ingest_endpoint_with_the_token(trained: dict[str, Trained], serve, ingest: Ingest) -> None:
    model = trained["logistic"]
    ingest.status[0] = 503  # the portal is down at first: minutes are kept and sent again
    server = serve(
        model,
        METRICS_SINK="portal",
        METRICS_INGEST_URL=ingest.url,
        SERVING_TOKEN="tok-123",
        METRICS_FLUSH_SECONDS="0.2",
    )
    send_rows(server, model, 12)
    assert call(server, "POST", "/invocations", b"{}", "application/json")[0] == 400
    wait_until(lambda: ingest.received, what="a first POST")
    ingest.status[0] = 204
    assert server.stop() == 0
    refused_posts = [body for _, body, status in ingest.received if status == 503]
    assert refused_posts, "the first POST should have met the 503"
    headers, body, _ = ingest.received[-1]
    assert headers["Authorization"] == "Bearer tok-123"
    assert body["format"] == FORMAT and body["service"] == "test-service" and body["revision"] == "r1"
    assert body["latency_buckets_ms"] == list(BUCKETS_MS)
    # What met the 503 was kept and sent again: across the accepted POSTs every request counts exactly once.
    minutes = ingest.minutes()
    # The parts that met the 503 came again with the same ids, so a portal that did take them can tell.
    retried = {m["part"] for body in refused_posts for m in body["minutes"]}
    assert retried <= {m["part"] for m in minutes} and len({m["part"] for m in minutes}) == len(minutes)
    assert sum(m["requests"] for m in minutes) == 13
    assert sum(m["client_errors"] for m in minutes) == 1 and sum(m["errors"] for m in minutes) == 0
    assert sum(m["rows"] for m in minutes) == 24
    for minute in minutes:
        assert len(minute["latency_ms_counts"]) == len(BUCKETS_MS) + 1
        assert sum(minute["latency_ms_counts"]) == minute["requests"]


def test_emf_lines_on_stdout_with_the_aws_setting(trained: dict[str, Trained], serve) -> None:
    model = trained["logistic"]
    server = serve(model, METRICS_SINK="emf", METRICS_FLUSH_SECONDS="0.2")
    send_rows(server, model, 7)
    assert server.stop() == 0
    records = [json.loads(line) for line in server.stdout().splitlines() if line.strip()]
    assert records and all("_aws" in r for r in records)
    directive = records[0]["_aws"]["CloudWatchMetrics"][0]
    assert directive["Namespace"] == "ControlPlane/Serving"
    assert {"Requests", "Errors", "Latency"} <= {m["Name"] for m in directive["Metrics"]}
    assert ["Service", "Revision"] in directive["Dimensions"]
    for record in records:  # every metric a line declares is in that line
        declared = [m["Name"] for m in record["_aws"]["CloudWatchMetrics"][0]["Metrics"]]
        assert all(name in record for name in declared) and record["Revision"] == "r1"
    assert sum(r["Requests"] for r in records) == 7
    latency = [r["Latency"] for r in records if "Latency" in r]
    assert sum(sum(entry["Counts"]) for entry in latency) == 7
    assert all(len(entry["Values"]) == len(entry["Counts"]) <= 100 for entry in latency)


def test_sigterm_finishes_requests_in_flight_then_exits_0(
    trained: dict[str, Trained], serve, ingest: Ingest, tmp_path: Path
) -> None:
    model = trained["logistic"]
    store = tmp_path / "store"
    server = serve(
        model,
        METRICS_SINK="portal",
        METRICS_INGEST_URL=ingest.url,
        SERVING_TOKEN="t",
        CAPTURE_URL=store.as_uri(),
        CAPTURE_FRACTION="1",
        CAPTURE_FLUSH_SECONDS="3600",
        CAPTURE_BATCH_ROWS="100000",
    )
    body = json.dumps({"instances": model.rows.head(3).to_numpy().tolist()}).encode()
    head = (
        b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
        % len(body)
    )
    # Eight clients are halfway through sending a request when the server is told to stop. Each first gets an
    # answer to a ping, so the server has surely accepted its connection (not left it in the listen backlog).
    sockets = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(8)]
    for sock in sockets:
        sock.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = b""
        while not answer.endswith(b"}"):
            answer += sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 200 ")
        sock.sendall(head + body[: len(body) // 2])
    time.sleep(0.2)
    server.process.send_signal(15)
    time.sleep(0.5)
    answers: list[bytes] = [b""] * len(sockets)

    def finish(i: int) -> None:
        sockets[i].sendall(body[len(body) // 2 :])
        chunks = []
        while chunk := sockets[i].recv(65536):
            chunks.append(chunk)
        answers[i] = b"".join(chunks)

    threads = [threading.Thread(target=finish, args=(i,)) for i in range(len(sockets))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=15)
    assert all(a.startswith(b"HTTP/1.1 200 OK") and b"connection: close" in a for a in answers), answers
    assert server.process.wait(timeout=30) == 0
    with pytest.raises(OSError):  # no longer listening
        socket.create_connection(("127.0.0.1", server.port), timeout=2).close()
    # Capture and metrics were flushed on the way out: every row and every request is accounted for.
    table = read_capture([f.read_bytes() for f in (store / "capture").rglob("*.parquet")])
    assert table.num_rows == 8 * 3
    assert sum(m["requests"] for m in ingest.minutes()) == 8


def test_startup_mistakes_a_user_makes_are_one_line_each(trained: dict[str, Trained], tmp_path: Path) -> None:
    model = trained["logistic"]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = str(taken.getsockname()[1])
        code, stderr = refused(model, tmp_path, PORT=port)
    assert code == 2 and f"cannot listen on 127.0.0.1:{port} (HOST, PORT)" in stderr and "\n" not in stderr
    other = {**model.card, "features": ["a", "b"], "feature_types": {"a": "numeric", "b": "numeric"}}
    code, stderr = refused(model, tmp_path, MODEL_CARD=json.dumps(other))
    assert code == 3 and "the card belongs to another model" in stderr
    code, stderr = refused(model, tmp_path, MODEL_CARD="{}")
    assert code == 3 and "MODEL_CARD is empty" in stderr
    code, stderr = refused(model, tmp_path, MODEL_CARD="/tmp/model.json")
    assert code == 2 and 'MODEL_CARD="$(cat model.json)"' in stderr
    code, stderr = refused(model, tmp_path, COMPILED_URI=model.uri)
    assert code == 2 and "COMPILED_URI is set but COMPILED_SHA256" in stderr
    csv = tmp_path / "rows.csv"
    csv.write_text("a,b\n1,2\n")
    code, stderr = refused(model, tmp_path, MODEL_URI=csv.as_uri(), MODEL_SHA256=sha256_file(csv))
    assert code == 3 and "is it a model.joblib?" in stderr


def test_the_compiled_copy_says_so_on_ping_and_answers_in_its_precision(trained: dict[str, Trained], serve) -> None:
    model = trained["forest"]
    assert model.compiled is not None
    server = serve(model, COMPILED_URI=model.compiled.as_uri(), COMPILED_SHA256=model.compiled_sha256)
    assert json.loads(call(server, "GET", "/ping")[2])["compiled_sha256"] == model.compiled_sha256
    status, _, body = call(
        server, "POST", "/invocations", model.rows.head(1).to_csv(index=False, header=False), "text/csv"
    )
    text = body.decode()
    assert status == 200 and "000000" not in text  # float32 written as float32 (0.72), not widened (0.72000002…)
