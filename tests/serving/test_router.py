"""The service's stable address (serving/router.py) in front of real serving processes: split, gating, switching
revisions under load without losing a request, drain."""

from __future__ import annotations

import collections
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from serving.router import control
from tests.serving.conftest import REPO, Server, Trained, free_port
from tests.serving.test_lifecycle import wait_until


@dataclass
class RouterProcess:
    process: subprocess.Popen[str]
    port: int
    control_path: str
    stderr_path: Path

    def send(self, message: dict[str, Any]) -> dict[str, Any]:
        answer = control(self.control_path, message)
        assert answer["ok"], answer
        state: dict[str, Any] = answer["state"]
        return state

    def set(self, *revisions: tuple[Server, float]) -> dict[str, Any]:
        return self.send({"op": "set", "revisions": [entry(server, weight) for server, weight in revisions]})

    def revision(self, name: str) -> dict[str, Any]:
        return next(r for r in self.send({"op": "state"})["revisions"] if r["name"] == name)

    def wait_healthy(self, *names: str) -> None:
        wait_until(lambda: all(self.revision(n)["healthy"] for n in names), what=f"{names} healthy behind the router")


def entry(server: Server, weight: float) -> dict[str, Any]:
    return {
        "name": server.env["REVISION"],
        "address": f"127.0.0.1:{server.port}",
        "handoff": server.env["SERVING_HANDOFF_SOCKET"],
        "weight": weight,
    }


@pytest.fixture
def sockets_dir() -> Iterator[Path]:
    # Unix socket paths must be short (108 bytes); pytest's tmp_path can be longer.
    folder = Path(tempfile.mkdtemp(prefix="cp-router-", dir="/tmp"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def router(sockets_dir: Path, tmp_path: Path) -> Iterator[RouterProcess]:
    port = free_port()
    control_path = str(sockets_dir / "control.sock")
    stderr = tmp_path / "router.err"
    process = subprocess.Popen(
        [sys.executable, "-m", "serving.router", "--port", str(port), "--control", control_path],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.DEVNULL,
        stderr=stderr.open("w"),
        text=True,
    )
    wait_until(lambda: process.poll() is not None or os.path.exists(control_path), what="the router's control socket")
    assert process.poll() is None, stderr.read_text()
    yield RouterProcess(process, port, control_path, stderr)
    process.terminate()
    assert process.wait(timeout=10) == 0, stderr.read_text()


@pytest.fixture
def revision(serve: Callable[..., Server], sockets_dir: Path, trained: dict[str, Trained]) -> Callable[..., Server]:
    def start(name: str, *, wait: bool = True) -> Server:
        return serve(
            trained["logistic"], wait=wait, REVISION=name, SERVING_HANDOFF_SOCKET=str(sockets_dir / f"{name}.sock")
        )

    return start


def get(port: int, path: str, body: bytes | None = None, *, close: bool = True) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"Connection": "close"} if close else {}
    if body is not None:
        headers["Content-Type"] = "application/json"
    connection.request("POST" if body is not None else "GET", path, body=body, headers=headers)
    answer = connection.getresponse()
    result = answer.status, answer.read()
    connection.close()
    return result


def served_by(port: int) -> str:
    status, body = get(port, "/ping")
    assert status == 200, body
    return str(json.loads(body)["revision"])


def body_of(model: Trained, rows: int = 2) -> bytes:
    return json.dumps({"instances": model.rows.head(rows).to_numpy().tolist()}).encode()


def test_traffic_through_the_stable_address_reaches_the_revision(router, revision, trained) -> None:
    r1 = revision("r1")
    router.set((r1, 1))
    router.wait_healthy("r1")
    body = body_of(trained["logistic"], 5)
    through = get(router.port, "/invocations", body)
    direct = get(r1.port, "/invocations", body)
    assert through[0] == 200 and json.loads(through[1]) == json.loads(direct[1])
    assert served_by(router.port) == "r1"
    state = router.revision("r1")
    assert state["connections_passed"] == 2 and state["failed_passes"] == 0


def test_a_canary_weight_splits_new_connections_as_asked(router, revision) -> None:
    r1, r2 = revision("r1"), revision("r2")
    router.set((r1, 90), (r2, 10))
    router.wait_healthy("r1", "r2")
    # The split is per connection: each GET /ping below is a new connection, and says which revision answered.
    counts = collections.Counter(served_by(router.port) for _ in range(600))
    # 10% of 600 is 60, with a standard deviation of about 7.3: five of them either side.
    assert 24 <= counts["r2"] <= 96 and counts["r1"] + counts["r2"] == 600, counts
    state = {r["name"]: r["connections_passed"] for r in router.send({"op": "state"})["revisions"]}
    assert state == {"r1": counts["r1"], "r2": counts["r2"]}


def test_keep_alive_clients_are_chosen_again_as_their_connections_age(
    router, revision, sockets_dir, serve, trained
) -> None:
    def fast(name: str) -> Server:
        return serve(
            trained["logistic"],
            REVISION=name,
            SERVING_HANDOFF_SOCKET=str(sockets_dir / f"{name}.sock"),
            SERVING_HANDOFF_RECHOOSE_SECONDS="0.2",
        )

    r1, r2 = fast("r1"), fast("r2")
    router.set((r1, 75), (r2, 25))
    router.wait_healthy("r1", "r2")
    counts: collections.Counter[str] = collections.Counter()
    lock = threading.Lock()

    def client() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", router.port, timeout=10)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            connection.request("GET", "/ping")
            answer = connection.getresponse()
            revision = json.loads(answer.read())["revision"]
            with lock:
                counts[revision] += 1
            time.sleep(0.005)
        connection.close()

    threads = [threading.Thread(target=client) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Four keep-alive clients, each reconnecting every 0.2 s: about 60 choices, so r2's share is near 25% (not 0%
    # or 25%-per-client as it would be if each kept its first revision).
    share = counts["r2"] / sum(counts.values())
    assert 0.08 <= share <= 0.45, counts
    assert router.revision("r1")["connections_passed"] + router.revision("r2")["connections_passed"] >= 30


class _NotReady(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (the http.server API)
        self.send_response(503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        return None


def test_a_revision_failing_ping_never_gets_traffic(router, revision) -> None:
    r1 = revision("r1")
    # r2 is a real revision whose hand-off socket works, but the address the router pings answers 503.
    r2 = revision("r2")
    failing = ThreadingHTTPServer(("127.0.0.1", 0), _NotReady)
    threading.Thread(target=failing.serve_forever, daemon=True).start()
    # r3 is still loading when it is given most of the weight.
    r3 = revision("r3", wait=False)
    try:
        router.send(
            {
                "op": "set",
                "revisions": [
                    entry(r1, 1),
                    {**entry(r2, 50), "address": f"127.0.0.1:{failing.server_address[1]}"},
                    entry(r3, 50),
                ],
            }
        )
        router.wait_healthy("r1")
        seen = collections.Counter(served_by(router.port) for _ in range(100))
        assert seen == {"r1": 100} or (seen["r2"] == 0 and router.revision("r3")["healthy"]), seen
        assert router.revision("r2")["connections_passed"] == 0 and router.revision("r2")["last_ping"] == "503"
    finally:
        failing.shutdown()
    # Once r3 answers its ping it gets its share; r2 still none.
    router.wait_healthy("r3")
    seen = collections.Counter(served_by(router.port) for _ in range(100))
    assert seen["r3"] > 0 and seen["r2"] == 0, seen


class Load:
    """Clients posting through the router until stopped, counting every answer and every failure. (Only
    /invocations: a draining revision answers /ping 503 by design, and so would count as a failure here.)"""

    def __init__(self, port: int, body: bytes, *, keepalive: int, fresh: int) -> None:
        self.port = port
        self.body = body
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.answers: collections.Counter[int] = collections.Counter()
        self.failures: list[str] = []
        self.threads = [threading.Thread(target=self._keepalive, daemon=True) for _ in range(keepalive)]
        self.threads += [threading.Thread(target=self._fresh, daemon=True) for _ in range(fresh)]
        for thread in self.threads:
            thread.start()

    def _record(self, status: int) -> None:
        with self.lock:
            self.answers[status] += 1

    def _failed(self, what: str) -> None:
        with self.lock:
            self.failures.append(what)

    def _keepalive(self) -> None:
        # One http.client connection reused; after an answer with `connection: close` it reconnects by itself.
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        while not self.stopping.is_set():
            try:
                connection.request("POST", "/invocations", body=self.body, headers={"Content-Type": "application/json"})
                answer = connection.getresponse()
                answer.read()
                self._record(answer.status)
            except (OSError, http.client.HTTPException) as exc:
                self._failed(f"keep-alive: {exc!r}")
                connection.close()
        connection.close()

    def _fresh(self) -> None:
        while not self.stopping.is_set():
            try:
                self._record(get(self.port, "/invocations", self.body)[0])
            except (OSError, http.client.HTTPException) as exc:
                self._failed(f"new connection: {exc!r}")

    def total(self) -> int:
        with self.lock:
            return sum(self.answers.values()) + len(self.failures)

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=20)


def test_deploy_canary_rollbacks_under_constant_load_lose_no_request(router, revision, trained) -> None:
    r1 = revision("r1")
    router.set((r1, 100))
    router.wait_healthy("r1")
    load = Load(router.port, body_of(trained["logistic"]), keepalive=4, fresh=2)
    passed: dict[str, int] = {}

    def settle(name: str) -> None:
        """Wait until `name` has been given 20 more of the load's new connections."""
        before = router.revision(name)["connections_passed"]
        wait_until(lambda: router.revision(name)["connections_passed"] >= before + 20, what=f"traffic on {name}")
        passed[name] = router.revision(name)["connections_passed"]

    try:
        settle("r1")
        # A canary: r2 starts, takes 10% once its ping passes (no traffic while it loads).
        r2 = revision("r2", wait=False)
        router.set((r1, 90), (r2, 10))
        router.wait_healthy("r2")
        settle("r2")
        # The automatic rollback: r2 breached an objective; everything back to r1, r2 drained and stopped.
        router.set((r1, 100))
        assert r2.stop() == 0
        settle("r1")
        # A deploy: r3 replaces r1 outright once ready; r1 is drained and stopped after the bake.
        r3 = revision("r3", wait=False)
        router.set((r1, 100), (r3, 0))
        router.wait_healthy("r3")
        router.set((r3, 100))
        settle("r3")
        assert r1.stop() == 0
        settle("r3")
        # The manual rollback: the previous model version again (a new process for it), r3 drained and stopped.
        r4 = revision("r4", wait=False)
        router.set((r3, 100), (r4, 0))
        router.wait_healthy("r4")
        router.set((r4, 100))
        assert r3.stop() == 0
        settle("r4")
    finally:
        load.stop()
    assert load.failures == [] and set(load.answers) == {200}, (load.failures[:5], load.answers)
    assert load.total() > 500 and set(passed) == {"r1", "r2", "r3", "r4"}, (load.total(), passed)
    assert router.send({"op": "state"})["unavailable"] == 0


def test_drain_finishes_the_requests_in_flight(router, revision, trained) -> None:
    r1, r2 = revision("r1"), revision("r2")
    router.set((r1, 100))
    router.wait_healthy("r1")
    body = body_of(trained["logistic"], 3)
    head = (
        b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
        % len(body)
    )
    # Four clients are halfway through a request on r1, and one keep-alive client is between requests.
    halfway = [socket.create_connection(("127.0.0.1", router.port), timeout=10) for _ in range(4)]
    for sock in halfway:
        sock.sendall(head + body[: len(body) // 2])
    idle = http.client.HTTPConnection("127.0.0.1", router.port, timeout=10)
    idle.request("GET", "/ping")
    first = idle.getresponse()
    assert json.loads(first.read())["revision"] == "r1"
    # r2 takes over; r1 is told to stop.
    router.set((r1, 0), (r2, 100))
    router.wait_healthy("r2")
    r1.process.send_signal(15)
    time.sleep(0.3)
    for sock in halfway:
        sock.sendall(body[len(body) // 2 :])
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 200 OK") and b"connection: close" in answer, answer
        sock.close()
    # The idle client's next request is still answered by r1, with `connection: close`; the one after goes to r2.
    idle.request("POST", "/invocations", body=body, headers={"Content-Type": "application/json"})
    second = idle.getresponse()
    assert second.status == 200 and second.getheader("connection") == "close"
    second.read()
    idle.request("GET", "/ping")
    third = idle.getresponse()
    assert third.status == 200 and json.loads(third.read())["revision"] == "r2"
    idle.close()
    assert r1.process.wait(timeout=30) == 0
    assert served_by(router.port) == "r2"


def test_a_connection_waits_for_the_first_revision_then_gets_503_when_none_comes(router, revision, sockets_dir) -> None:
    # Nothing ready: the connection is held (up to --hold-seconds, 5) and answered once a revision's ping passes.
    r1 = revision("r1", wait=False)
    router.set((r1, 1))
    assert served_by(router.port) == "r1"
    assert router.send({"op": "state"})["unavailable"] == 0
    # A revision that never comes: after the hold the client gets a 503 saying so, not a reset.
    router.send(
        {
            "op": "set",
            "revisions": [
                {
                    "name": "gone",
                    "address": f"127.0.0.1:{free_port()}",
                    "handoff": str(sockets_dir / "gone.sock"),
                    "weight": 1,
                }
            ],
        }
    )
    began = time.monotonic()
    status, body = get(router.port, "/ping")
    assert status == 503 and b"no revision" in body and 4 <= time.monotonic() - began < 10
    assert router.send({"op": "state"})["unavailable"] == 1
