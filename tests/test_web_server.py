"""The portal's web server as `make run` and the image start it (controlplane/web.py: one address in front of two
gunicorn pools from docker/gunicorn.conf.py), under a slow upload, with one pool stopped, and when a pool dies.

Short timeouts and a small upload limit keep it quick: the upload takes longer than the configured worker timeout,
bytes arriving in small chunks with pauses, as over a slow link.
"""

from __future__ import annotations

import contextlib
import hashlib
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests
from rest_framework.authtoken.models import Token

from controlplane import services as controlplane_services
from controlplane import web
from controlplane.management.commands.runall import web_command
from lineage.models import DatasetVersion
from tests.fixtures.processes import child_env, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parents[1]
WORKER_TIMEOUT = 2
Portal = tuple[int, subprocess.Popen[bytes]]  # its port and the web process
READ_TIMEOUT = 3


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(command: list[str], port: int, log_path: Path, **extra_env: str) -> subprocess.Popen[bytes]:
    env = child_env(DATASET_MAX_UPLOAD_BYTES="400000", **extra_env)
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
def portal_process(uploader: str, tmp_path: Path) -> Iterator[Portal]:
    """The portal started with runall's command: one process per pool (so its threads are all that serve), short
    timeouts."""
    port = free_port()
    process = start_server(
        web_command("127.0.0.1", port),
        port,
        tmp_path / "web.log",
        WEB_CONCURRENCY="1",
        API_CONCURRENCY="1",
        GUNICORN_THREADS="4",
        GUNICORN_TIMEOUT=str(WORKER_TIMEOUT),
        GUNICORN_READ_TIMEOUT=str(READ_TIMEOUT),
    )
    yield port, process
    stop_server(process)


@pytest.fixture
def portal(portal_process: Portal) -> int:
    return portal_process[0]


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
    # The API pool's one worker process answers other API requests while the upload arrives (and the pages' pool
    # its pages).
    for _ in range(3):
        answer = requests.get(
            f"http://127.0.0.1:{portal}/api/v1/projects/", headers={"Authorization": f"Token {uploader}"}, timeout=2
        )
        assert answer.status_code == 200 and upload.is_alive(), "the upload must still be arriving"
        assert requests.get(f"http://127.0.0.1:{portal}/healthz", timeout=2).status_code == 200
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


def pool_processes(web: subprocess.Popen[bytes]) -> dict[str, list[psutil.Process]]:
    """Each pool's gunicorn master and workers, by the pool's name (`--name controlplane-<pool>`)."""
    found: dict[str, list[psutil.Process]] = {"pages": [], "api": []}
    for process in psutil.Process(web.pid).children(recursive=True):
        try:
            command = " ".join(process.cmdline())
        except psutil.Error:  # gone, or a worker that has exited and waits for its master to reap it
            continue
        for name in found:
            if f"controlplane-{name}" in command:
                found[name].append(process)
    return found


def raw_exchange(port: int, data: bytes, *, timeout: float = 10) -> bytes:
    """Send the bytes, then read until the server closes the connection."""
    answer = b""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                answer += chunk
    return answer


def test_people_s_pages_are_served_while_the_api_pool_is_stuck(portal_process: Portal, uploader: str) -> None:
    """Pages and /api/ are served by pools of their own, the API's at a lower CPU priority: with every API process
    stopped (SIGSTOP), pages still answer, and the API answers again when its processes go on."""
    port, web = portal_process
    api = f"http://127.0.0.1:{port}/api/v1/projects/"
    headers = {"Authorization": f"Token {uploader}"}
    assert requests.get(api, headers=headers, timeout=30).status_code == 200  # its worker has booted
    pools = pool_processes(web)
    assert len(pools["pages"]) == 2 and len(pools["api"]) == 2, pools  # a master and one worker each
    assert {p.nice() for p in pools["pages"]} == {0} and {p.nice() for p in pools["api"]} == {10}
    for process in pools["api"]:
        process.suspend()
    try:
        with pytest.raises(requests.ReadTimeout):
            requests.get(api, headers=headers, timeout=2)
        for path in ("/healthz", "/accounts/login/"):
            assert requests.get(f"http://127.0.0.1:{port}{path}", timeout=5).status_code == 200, path
    finally:
        for process in pools["api"]:
            process.resume()
    assert requests.get(api, headers=headers, timeout=10).json()["results"][0]["slug"] == "cancer"


def test_bytes_pass_through_untouched_kept_alive_pipelined_and_silent(
    portal_process: Portal,
) -> None:
    port, _ = portal_process
    # Two requests written at once on one connection: both answered, in order, by the pool of the first.
    request = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    twice = request + b"\r\n" + request + b"Connection: close\r\n\r\n"
    answer = raw_exchange(port, twice)
    assert answer.count(b"HTTP/1.1 200 OK") == 2, answer
    # A request line the pools cannot parse reaches gunicorn, which answers it 400.
    assert raw_exchange(port, b"\x16\x03\x01 not http\r\n\r\n").startswith(b"HTTP/1.1 400"), "garbage"
    # A client that connects and says nothing is let go after the read timeout.
    started = time.monotonic()
    assert raw_exchange(port, b"", timeout=READ_TIMEOUT + 10) == b""
    assert READ_TIMEOUT - 0.5 <= time.monotonic() - started <= READ_TIMEOUT + 5


def test_the_web_process_stops_when_a_pool_dies(portal_process: Portal) -> None:
    """A pool that dies stops the whole web process with an error, so its supervisor restarts all of it."""
    port, web = portal_process
    pools = pool_processes(web)
    pages_master = next(p for p in pools["pages"] if p.ppid() == web.pid)
    pages_master.kill()
    assert web.wait(timeout=30) != 0
    gone, alive = psutil.wait_procs(pools["api"], timeout=30)
    assert not alive, alive
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2)


def test_the_request_line_is_found_after_empty_lines_and_chooses_the_pool() -> None:
    assert web.request_line(b"GET /api/v1/runs/ HTTP/1.1\r\nHost: x\r\n") == b"GET /api/v1/runs/ HTTP/1.1"
    assert web.request_line(b"\r\nGET /api/v1/ HTTP/1.1\r\n") == b"GET /api/v1/ HTTP/1.1"  # RFC 9112 2.2
    assert web.request_line(b"\r\n\r\nGET /api/v1/ HTTP/1.1\r\n") == b""  # one only, as gunicorn: its 400
    assert web.request_line(b"\r\nGET /api/v1/ru") is None  # not whole yet
    assert web.request_line(b"\r\n") is None
    assert web.choose_pool(b"GET /api/v1/ HTTP/1.1") == "api"
    assert web.choose_pool(b"GET http://cp.example/api/v1/runs/ HTTP/1.1") == "api"
    assert web.choose_pool(b"GET /apiary HTTP/1.1") == "pages"
    assert web.choose_pool(b"GET /runs/?next=/api/ HTTP/1.1") == "pages"
    assert web.choose_pool(b"\x16\x03\x01") == "pages"


def _ppid(process: psutil.Process) -> int | None:
    try:
        return process.ppid()
    except psutil.Error:  # exited meanwhile (a worker replaced by a reload)
        return None


def masters_and_workers(web_process: subprocess.Popen[bytes]) -> tuple[dict[str, int], set[int]]:
    pools = pool_processes(web_process)
    masters = {name: next(p.pid for p in found if _ppid(p) == web_process.pid) for name, found in pools.items()}
    workers = {p.pid for found in pools.values() for p in found} - set(masters.values())
    return masters, workers


def test_signals_reload_both_pools_and_none_stops_the_web_process(portal_process: Portal, uploader: str) -> None:
    """SIGHUP reloads both pools (new workers, the same masters); SIGUSR1 (reopen logs), SIGTTIN, SIGTTOU and SIGUSR2
    leave the web process serving, where their default action would end or stop it. SIGQUIT then stops it all, in
    the middle of a graceful stop too."""
    port, web_process = portal_process
    api = f"http://127.0.0.1:{port}/api/v1/projects/"
    headers = {"Authorization": f"Token {uploader}"}
    assert requests.get(api, headers=headers, timeout=30).status_code == 200
    masters, workers = masters_and_workers(web_process)
    assert len(masters) == 2 and len(workers) == 2, (masters, workers)
    web_process.send_signal(signal.SIGHUP)

    def reloaded() -> bool:
        now_masters, now_workers = masters_and_workers(web_process)
        assert now_masters == masters  # the masters stay; only their workers are replaced
        return len(now_workers) == 2 and not now_workers & workers

    wait_for(reloaded, timeout=60, interval=0.2, what="both pools' workers to be replaced")
    for signum in (signal.SIGUSR1, signal.SIGTTIN, signal.SIGTTOU, signal.SIGUSR2):
        web_process.send_signal(signum)
    time.sleep(1)
    assert web_process.poll() is None
    assert masters_and_workers(web_process)[0] == masters
    assert requests.get(f"http://127.0.0.1:{port}/healthz", timeout=15).status_code == 200
    assert requests.get(api, headers=headers, timeout=15).status_code == 200
    assert requests.get(f"http://127.0.0.1:{port}/accounts/login/", timeout=15).status_code == 200
    # An empty line before the request line is skipped, as RFC 9112 asks.
    assert raw_exchange(port, b"\r\nGET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").startswith(
        b"HTTP/1.1 200"
    )
    # SIGTERM waits for the requests in flight (an upload trickling in over two minutes); a SIGQUIT then stops
    # everything at once, as it cuts one gunicorn's graceful stop short.
    everything = psutil.Process(web_process.pid).children(recursive=True)
    head, body = upload_request(port, uploader, csv_content())
    upload = SlowUpload(port, head, body, seconds=120, chunks=240)
    upload.start()
    time.sleep(1.5)  # the upload is in a worker, its body arriving
    web_process.send_signal(signal.SIGTERM)
    time.sleep(1.5)
    assert web_process.poll() is None and upload.is_alive()  # the graceful stop waits for it
    quit_sent = time.monotonic()
    web_process.send_signal(signal.SIGQUIT)
    assert web_process.wait(timeout=30) == 0
    # About 2 s here; without the QUIT passed on, the graceful stop went on for another 14 s or more.
    assert time.monotonic() - quit_sent < 8
    _, alive = psutil.wait_procs(everything, timeout=30)
    assert not alive, alive
    upload.join(timeout=30)
    assert not DatasetVersion.objects.exists()


def test_a_reload_signal_while_the_pools_boot_does_not_end_them(uploader: str, tmp_path: Path) -> None:
    """gunicorn sets its handlers only after loading Django: until then a HUP or USR1 passed on to a master would end
    it (and so the web process). They are ignored in the masters until gunicorn handles them."""
    port = free_port()
    env = child_env(WEB_CONCURRENCY="1", API_CONCURRENCY="1")
    log_path = tmp_path / "web.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            web_command("127.0.0.1", port), cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        wait_for(lambda: len(pool_processes(process)["api"]) >= 1, timeout=30, interval=0.05, what="the masters")
        booted = False
        deadline = time.monotonic() + 60
        while not booted and time.monotonic() < deadline:  # a HUP and a USR1 every 0.2 s, all through the boot
            assert process.poll() is None, log_path.read_text()[-3000:]
            process.send_signal(signal.SIGHUP)
            process.send_signal(signal.SIGUSR1)
            time.sleep(0.2)
            with contextlib.suppress(requests.RequestException):
                booted = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
        assert booted, log_path.read_text()[-3000:]
        time.sleep(1)
        assert process.poll() is None, log_path.read_text()[-3000:]
        assert requests.get(f"http://127.0.0.1:{port}/api/v1/projects/", timeout=15).status_code in (401, 403)
    finally:
        stop_server(process)
