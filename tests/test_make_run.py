"""`make run` brings the whole system up on the embedded default, a demo user signs in, Ctrl-C stops everything."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import requests

from tests.fixtures.processes import wait_for

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def processes_using(marker: str) -> list[int]:
    """Processes whose environment carries `marker` (our private var dir): every process `make run` started."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid():
            try:
                if marker.encode() in (proc / "environ").read_bytes():
                    pids.append(int(proc.name))
            except OSError:
                continue
    return pids


def test_make_run_serves_the_portal_and_stops_cleanly_on_ctrl_c() -> None:
    port = free_port()
    # A short path: the broker's Unix socket lives under it.
    var_dir = tempfile.mkdtemp(prefix="cp-run-", dir="/tmp")
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "DJANGO_SETTINGS_MODULE")
    }
    env["CONTROLPLANE_VAR_DIR"] = var_dir
    log_path = Path(var_dir) / "make-run.log"
    with log_path.open("wb") as log:
        make = subprocess.Popen(
            ["make", "run", f"PORT={port}"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:

        def portal_answers() -> bool:
            if make.poll() is not None:
                raise AssertionError(f"make run exited early:\n{log_path.read_text()[-3000:]}")
            try:
                return requests.get(f"{base}/healthz", timeout=2).status_code == 200
            except requests.ConnectionError:
                return False

        wait_for(portal_answers, timeout=240, interval=0.5, what="the portal to answer")
        output = log_path.read_text()
        for username, role in [
            ("dana", "data scientist"),
            ("alex", "approver"),
            ("blair", "approver"),
            ("fran", "finance"),
            ("ada", "admin"),
        ]:
            assert re.search(rf"{username}\s+{role}", output), output[-2000:]

        session = requests.Session()
        login = session.get(f"{base}/accounts/login/", timeout=10)
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login.text).group(1)
        home = session.post(
            f"{base}/accounts/login/",
            data={"username": "dana", "password": "controlplane-demo", "csrfmiddlewaretoken": token, "next": "/"},
            headers={"Referer": f"{base}/accounts/login/"},
            timeout=10,
        )
        assert home.status_code == 200 and home.url == f"{base}/"
        assert "Welcome, Dana Scientist" in home.text
        assert "Demo" in session.get(f"{base}/projects/", timeout=10).text
        # The worker is really consuming: beat's first heartbeat task is executed by it.
        wait_for(
            lambda: re.search(r"controlplane\.tasks\.heartbeat_record\[[^\]]+\] succeeded", log_path.read_text()),
            timeout=90,
            what="beat's heartbeat task to be executed by the worker",
        )
        assert processes_using(var_dir)
    finally:
        os.killpg(make.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
        try:
            make.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(make.pid, signal.SIGKILL)
            raise
    deadline = time.monotonic() + 30
    while processes_using(var_dir) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert processes_using(var_dir) == [], "processes left running after Ctrl-C"
    assert "stopped." in log_path.read_text()
