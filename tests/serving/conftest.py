"""Real trained artifacts (the recipes run by the local training backend, tests/fixtures/models.py) and real serving
processes.

`trained` trains each model once per session; `serve(model, **env)` starts `python -m serving` on a free port and
waits for /ping; `Server.stop()` sends SIGTERM and returns the exit code. `ingest` is a test ingest endpoint that
keeps what the servers POST (the portal side comes with the monitoring issue).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.models import Trained, train

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT = 60.0


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Trained]:
    return train(tmp_path_factory.mktemp("serving-training"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    process: subprocess.Popen[str]
    port: int
    stderr_path: Path
    stdout_path: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def stdout(self) -> str:
        return self.stdout_path.read_text()

    def stop(self, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)


def server_env(model: Trained, **env: str) -> dict[str, str]:
    values = {
        "MODEL_URI": model.uri,
        "MODEL_SHA256": model.sha256,
        "MODEL_CARD": json.dumps(model.card),
        "HOST": "127.0.0.1",
        "SERVICE_NAME": "test-service",
        "REVISION": "r1",
    }
    values.update(env)
    return values


def start_server(model_env: dict[str, str], folder: Path, *, wait: bool = True) -> Server:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODEL_", "COMPILED_", "CAPTURE_", "METRICS_"))}
    env["PORT"] = str(port)
    env.update(model_env)
    env["PYTHONPATH"] = str(REPO)
    folder.mkdir(parents=True, exist_ok=True)
    stdout, stderr = folder / f"serving-{port}.out", folder / f"serving-{port}.err"
    process = subprocess.Popen(
        [sys.executable, "-m", "serving"],
        cwd=REPO,
        env=env,
        stdout=stdout.open("w"),
        stderr=stderr.open("w"),
        text=True,
    )
    server = Server(process, port, stderr, stdout, model_env)
    if wait:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if process.poll() is not None:
                raise AssertionError(f"the server exited with {process.returncode}: {server.stderr()}")
            try:
                with urllib.request.urlopen(server.url + "/ping", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, server.stderr()
            time.sleep(0.05)
    return server


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    started: list[Server] = []

    def start(model: Trained, *, wait: bool = True, **env: str) -> Server:
        server = start_server(server_env(model, **env), tmp_path / "servers", wait=wait)
        started.append(server)
        return server

    yield start
    for server in started:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait()


@dataclass
class Ingest:
    """A test ingest endpoint: keeps each POST's headers and JSON body."""

    url: str
    received: list[tuple[dict[str, str], dict[str, Any], int]]  # headers, body, the status it was answered
    status: list[int]  # what to answer next

    def minutes(self) -> list[dict[str, Any]]:
        """The minutes of every POST it accepted (answered 2xx)."""
        return [minute for _, body, status in self.received if status < 300 for minute in body["minutes"]]


@pytest.fixture
def ingest() -> Iterator[Ingest]:
    received: list[tuple[dict[str, str], dict[str, Any], int]] = []
    status = [204]

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (the http.server API)
            body = self.rfile.read(int(self.headers["Content-Length"]))
            answer = status[0]
            received.append((dict(self.headers), json.loads(body), answer))
            self.send_response(answer)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield Ingest(f"http://127.0.0.1:{server.server_address[1]}/api/v1/ingest/serving-metrics", received, status)
    server.shutdown()
