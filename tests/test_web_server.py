"""The portal's web server as `make run` and the image start it (gunicorn, docker/gunicorn.conf.py), under a
slow upload.

Short timeouts and a small upload limit keep it quick: the upload takes longer than the configured worker timeout,
bytes arriving in small chunks with pauses, as over a slow link.
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from rest_framework.authtoken.models import Token

from controlplane import services as controlplane_services
from controlplane.management.commands.runall import web_command
from lineage.models import DatasetVersion
from tests.fixtures.processes import database_url, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parents[1]
WORKER_TIMEOUT = 2
READ_TIMEOUT = 3


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(command: list[str], port: int, log_path: Path, **extra_env: str) -> subprocess.Popen[bytes]:
    from django.conf import settings
    from django.db import connection

    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="controlplane.settings.test",
        DATABASE_URL=database_url(connection.settings_dict),
        CELERY_BROKER_URL=settings.CELERY_BROKER_URL,
        DATASET_MAX_UPLOAD_BYTES="400000",
        PYTHONPATH=str(ROOT),
        **extra_env,
    )
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )

    def answers() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"the server exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            # The first request loads Django in the worker, which takes a few seconds on a busy machine.
            return requests.get(f"http://127.0.0.1:{port}/healthz", timeout=15).status_code == 200
        except requests.RequestException:
            return False

    try:
        wait_for(answers, timeout=60, interval=0.2, what="the web server to answer")
    except BaseException:
        stop_server(process)
        raise
    return process


def stop_server(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture
def uploader(users: Any) -> str:
    controlplane_services.project_create(actor=users.admin, name="Cancer", slug="cancer")
    return Token.objects.create(user=users.data_scientist).key


@pytest.fixture
def portal(uploader: str, tmp_path: Path) -> Iterator[int]:
    """The portal started with runall's command: one process (so its threads are all that serve), short timeouts."""
    port = free_port()
    process = start_server(
        web_command("127.0.0.1", port),
        port,
        tmp_path / "web.log",
        WEB_CONCURRENCY="1",
        GUNICORN_THREADS="4",
        GUNICORN_TIMEOUT=str(WORKER_TIMEOUT),
        GUNICORN_READ_TIMEOUT=str(READ_TIMEOUT),
    )
    yield port
    stop_server(process)


def upload_request(port: int, token: str, content: bytes) -> tuple[bytes, bytes]:
    boundary = "----controlplane-slow-upload"
    fields = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in (("project", "cancer"), ("dataset", "slow"))
    )
    body = (
        fields
        + f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="slow.csv"\r\n'
        f"Content-Type: text/csv\r\n\r\n".encode()
        + content
        + f"\r\n--{boundary}--\r\n".encode()
    )
    head = (
        f"POST /api/v1/dataset-versions/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Token {token}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    return head, body


class SlowUpload(threading.Thread):
    """A client on a slow link: the body in small chunks with pauses, then the whole answer read."""

    def __init__(self, port: int, head: bytes, body: bytes, *, seconds: float, chunks: int = 50) -> None:
        super().__init__(daemon=True)
        self.port, self.head, self.body, self.seconds, self.chunks = port, head, body, seconds, chunks
        self.answer = b""
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=30) as sock:
                sock.sendall(self.head)
                step = -(-len(self.body) // self.chunks)
                for start in range(0, len(self.body), step):
                    sock.sendall(self.body[start : start + step])
                    time.sleep(self.seconds / self.chunks)
                while data := sock.recv(65536):
                    self.answer += data
        except OSError as exc:
            self.error = exc

    @property
    def status(self) -> int | None:
        line = self.answer.split(b"\r\n", 1)[0].split()
        return int(line[1]) if len(line) > 1 else None


def csv_content() -> bytes:
    rows = "".join(f"{i},{i * 7 % 13},{'abc'[i % 3]}\n" for i in range(20_000))
    return ("id,value,label\n" + rows).encode()[:350_000].rsplit(b"\n", 1)[0] + b"\n"


def test_an_upload_slower_than_the_timeout_is_accepted_while_others_are_served(portal: int, uploader: str) -> None:
    content = csv_content()
    head, body = upload_request(portal, uploader, content)
    # Three times the worker timeout, each pause far shorter than the read timeout: a slow link, not a dead one.
    upload = SlowUpload(portal, head, body, seconds=3 * WORKER_TIMEOUT)
    started = time.monotonic()
    upload.start()
    time.sleep(1)
    # The one worker process answers other requests while the upload arrives.
    for _ in range(3):
        answer = requests.get(f"http://127.0.0.1:{portal}/healthz", timeout=2)
        assert answer.status_code == 200 and upload.is_alive(), "the upload must still be arriving"
    upload.join(timeout=60)
    assert upload.error is None, upload.error
    assert time.monotonic() - started > 3 * WORKER_TIMEOUT
    assert upload.status == 201, upload.answer[:2000]
    version = DatasetVersion.objects.get()
    assert version.sha256 == hashlib.sha256(content).hexdigest() and version.size == len(content)


def test_a_client_that_stops_sending_is_dropped_after_the_read_timeout(portal: int, uploader: str) -> None:
    head, body = upload_request(portal, uploader, csv_content())
    with socket.create_connection(("127.0.0.1", portal), timeout=READ_TIMEOUT + 10) as sock:
        sock.sendall(head + body[: len(body) // 2])
        started = time.monotonic()
        try:
            while sock.recv(65536):
                pass
        except ConnectionResetError:
            pass
        waited = time.monotonic() - started
    # Its thread is free again: neither held for ever nor cut off before the configured read timeout.
    assert READ_TIMEOUT - 0.5 <= waited <= READ_TIMEOUT + 5, waited
    assert not DatasetVersion.objects.exists()


def test_the_old_sync_worker_fails_the_same_upload(uploader: str, tmp_path: Path) -> None:
    """What the image ran before (sync workers): the same slow upload is cut off at the worker timeout."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "controlplane.wsgi:application",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        "1",
        "--timeout",
        str(WORKER_TIMEOUT),
    ]
    process = start_server(command, port, tmp_path / "sync.log")
    try:
        head, body = upload_request(port, uploader, csv_content())
        upload = SlowUpload(port, head, body, seconds=3 * WORKER_TIMEOUT)
        upload.start()
        upload.join(timeout=60)
        assert upload.status != 201
        assert not DatasetVersion.objects.exists()
    finally:
        stop_server(process)
