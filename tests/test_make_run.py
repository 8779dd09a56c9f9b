"""`make run` on a fresh var/: the portal answers at once, a demo user signs in, and the demo the system makes in the
background fills the latency, drift and cost charts with data within five minutes (and opens the drift alert);
Ctrl-C stops everything; a second `make run` on the same var/ leaves the demo's data as it was."""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from tests.fixtures.processes import wait_for

ROOT = Path(__file__).resolve().parents[1]
PASSWORD = "controlplane-demo"
CHARTS_WITHIN = 300.0  # seconds from `make run`, as the issue asks

# `make run` always runs on the embedded default (the test clears DATABASE_URL and REDIS_URL for it), so the two
# suite passes would run the very same thing twice: the embedded pass runs it.
pytestmark = pytest.mark.skipif(
    bool(os.environ.get("DATABASE_URL")),
    reason="make run always uses the embedded default (SQLite, embedded broker): the embedded suite pass runs this",
)


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


class MakeRun:
    """One `make run` on `var_dir`, its output in a log file, stopped with Ctrl-C (SIGINT to its process group)."""

    def __init__(self, var_dir: str, name: str, port: int | None = None) -> None:
        self.var_dir = var_dir
        self.port = port or free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = Path(var_dir) / f"{name}.log"
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "DJANGO_SETTINGS_MODULE")
        }
        env["CONTROLPLANE_VAR_DIR"] = var_dir
        self.started = time.monotonic()
        self.stopped = False
        with self.log_path.open("wb") as log:
            self.make = subprocess.Popen(
                ["make", "run", f"PORT={self.port}"],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def demo_lines(self) -> list[str]:
        return [line for line in self.output().splitlines() if line.startswith("demo: ")]

    def answers(self) -> bool:
        if self.make.poll() is not None:
            raise AssertionError(f"make run exited early:\n{self.output()[-3000:]}")
        try:
            return requests.get(f"{self.base}/healthz", timeout=2).status_code == 200
        except (requests.ConnectionError, requests.Timeout):  # not listening yet, or its pools still booting
            return False

    def session(self, username: str) -> requests.Session:
        session = requests.Session()
        # The portal closes a kept-alive connection idle for 5 s (gunicorn keepalive); a GET sent on it just then
        # meets the close. A browser sends it again on a fresh connection, and so does this client (GETs only).
        retry = Retry(total=3, connect=3, read=3, backoff_factor=0.2, allowed_methods={"GET"})
        session.mount("http://", HTTPAdapter(max_retries=retry))
        login = session.get(f"{self.base}/accounts/login/", timeout=10)
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login.text).group(1)
        home = session.post(
            f"{self.base}/accounts/login/",
            data={"username": username, "password": PASSWORD, "csrfmiddlewaretoken": token, "next": "/"},
            headers={"Referer": f"{self.base}/accounts/login/"},
            timeout=10,
        )
        assert home.status_code == 200 and home.url == f"{self.base}/", home.text[-500:]
        session.home = home.text  # type: ignore[attr-defined]
        return session

    def stop(self) -> None:
        if self.make.poll() is not None and self.stopped:
            return
        self.stopped = True
        os.killpg(self.make.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
        try:
            self.make.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.make.pid, signal.SIGKILL)
            raise
        deadline = time.monotonic() + 30
        while processes_using(self.var_dir) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert processes_using(self.var_dir) == [], "processes left running after Ctrl-C"
        assert "stopped." in self.output()


def demo_data(var_dir: str) -> dict[str, list[tuple[Any, ...]]]:
    """What the demo registered, read from the stopped system's database: everything a user made or the demo made
    as a user (runs' and requests' outcomes too). Deployments by identity only: a bake left running goes on."""
    queries = {
        "users": "select id, username from auth_user",
        "projects": "select id, slug from controlplane_project",
        "environments": "select id, name, bake_minutes, drift_window_minutes from deployments_environment",
        "datasets": "select id, slug from lineage_dataset",
        "dataset versions": "select id, dataset_id, number, sha256 from lineage_datasetversion",
        "runs": "select id, kind, recipe, status from lineage_run",
        "model versions": "select id, registered_model_id, number, sha256 from lineage_modelversion",
        "approval requests": "select id, model_version_id, environment_id, status from deployments_approvalrequest",
        "decisions": "select id, request_id, approver_id, verdict from deployments_approvaldecision",
        "services": "select id, name, address from deployments_service",
        "deployments": "select id, kind, model_version_id, service_id from deployments_deployment",
        "users' audit events": "select id, actor_id, action, object_id from controlplane_auditevent where actor_id "
        "is not null",
    }
    with sqlite3.connect(f"file:{var_dir}/controlplane.sqlite3?mode=ro", uri=True) as db:
        return {name: sorted(db.execute(sql).fetchall()) for name, sql in queries.items()}


def drawn(html: str) -> int:
    """How many non-zero values the page's charts draw: the figure specs it embeds (json_script blocks) that
    static/ turns into plotly figures — each trace's `y` (time series, cost bars), or a heatmap's `z`."""
    count = 0
    for block in re.findall(r'<script id="[^"]+" type="application/json">(.*?)</script>', html, re.S):
        spec = json.loads(block)
        if not isinstance(spec, dict):
            continue
        rows = spec.get("z") if spec.get("kind") == "heatmap" else [t.get("y") for t in spec.get("traces") or []]
        values = [v for row in rows or [] for v in (row or [])]
        count += sum(v is not None and float(v) != 0 for v in values)
    return count


def charts_filled(run: MakeRun, approver: requests.Session, finance: requests.Session) -> dict[str, Any] | None:
    """The staging service's latency points with requests, its drift reports with features and the month's costs,
    in the API and drawn on their pages: None until all three have data."""
    listing = approver.get(f"{run.base}/api/v1/services/", params={"environment": "staging"}, timeout=10)
    if listing.status_code != 200 or not listing.json()["results"]:
        return None
    service = listing.json()["results"][0]["id"]
    metrics = approver.get(f"{run.base}/api/v1/services/{service}/metrics/", params={"window": "1h"}, timeout=10)
    points = [p for p in metrics.json()["results"] if p["requests"] and p["p99_ms"] is not None]
    drift = approver.get(f"{run.base}/api/v1/services/{service}/drift/", timeout=10).json()["results"]
    reports = [r for r in drift if r["status"] == "succeeded" and r["features"]]
    costs = finance.get(f"{run.base}/api/v1/costs/", timeout=10).json()
    if not (points and reports and float(costs["total"]) > 0):
        return None
    pages = {
        "latency": approver.get(f"{run.base}/services/{service}/monitoring/", params={"window": "1h"}, timeout=10),
        "drift": approver.get(f"{run.base}/services/{service}/drift/", timeout=10),
        "cost": finance.get(f"{run.base}/costs/", timeout=10),
    }
    if not all(drawn(page.text) for page in pages.values()):
        return None
    return {"service": service, "points": points, "reports": reports, "costs": costs}


def first_run(first: MakeRun) -> dict[str, Any]:
    """What the first `make run` must show, checked as it happens (from the moment it starts): the portal at once,
    the charts filled within five minutes, the drift alert, the demo's steps to `ready`, the worker consuming."""
    var_dir = first.var_dir
    # The portal is usable at once, while the demo works in the background.
    wait_for(first.answers, timeout=240, interval=0.5, what="the portal to answer")
    output = first.output()
    for username, role in [
        ("dana", "data scientist"),
        ("alex", "approver"),
        ("blair", "approver"),
        ("fran", "finance"),
        ("ada", "admin"),
    ]:
        assert re.search(rf"{username}\s+{role}", output), output[-2000:]
    dana = first.session("dana")
    assert "Welcome, Dana Scientist" in dana.home  # type: ignore[attr-defined]
    assert "Demo" in dana.get(f"{first.base}/projects/", timeout=10).text
    alex, fran = first.session("alex"), first.session("fran")

    # Within five minutes of `make run`: latency, drift and cost charts have data.
    remaining = CHARTS_WITHIN - (time.monotonic() - first.started)
    filled = wait_for(
        lambda: charts_filled(first, alex, fran), timeout=remaining, interval=5, what="the demo to fill the charts"
    )
    filled_after = time.monotonic() - first.started
    assert all(p["error_rate"] is not None for p in filled["points"])
    assert {f["feature"] for f in filled["reports"][0]["features"]} >= {"mean radius", "mean area"}
    assert filled["costs"]["series"], filled["costs"]

    # The staging traffic's size features drift: a drift alert opens on that service.
    def drift_alert() -> dict[str, Any] | None:
        alerts = alex.get(f"{first.base}/api/v1/alerts/", params={"service": filled["service"]}, timeout=10)
        return next((a for a in alerts.json()["results"] if a["name"] == "drift"), None)

    alert = wait_for(drift_alert, timeout=180, interval=5, what="the staging service's drift alert")
    assert alert["status"] == "open" and alert["value"] >= alert["threshold"], alert

    # The demo says what it does, step by step, and ends set up: the canary promoted in production, a request
    # waiting for an approver. (Stopped while a bake runs, the next start would roll that bake back.)
    wait_for(lambda: any("demo: ready" in line for line in first.demo_lines()), timeout=240, what="demo: ready")
    lines = "\n".join(first.demo_lines())
    for step in [
        "dana registered the dataset breast-cancer",
        "alex approved request",
        "blair approved request",
        "staging deploys",
        "alex deployed",
        "bakes as a canary with 20 % of the traffic",
        "waits for an approver",
        "v2 serves in production",
    ]:
        assert step in lines, lines
    for trouble in ["stopped", "failed", "rolled_back"]:
        assert trouble not in lines, lines
    queue = alex.get(f"{first.base}/api/v1/approval-requests/", params={"status": "open"}, timeout=10).json()
    assert queue["count"] == 1, queue

    # The worker is really consuming: beat's heartbeat task is executed by it.
    worker_log = Path(var_dir) / "log" / "worker.log"
    assert f"Logs: {var_dir}/log/web.log" in first.output()
    wait_for(
        lambda: re.search(r"controlplane\.tasks\.heartbeat_record\[[^\]]+\] succeeded", worker_log.read_text()),
        timeout=90,
        what="beat's heartbeat task to be executed by the worker",
    )
    assert processes_using(var_dir)
    return {"filled_after": filled_after}


class Early:
    """The first `make run`, started as soon as the suite is collected (tests/conftest.py) and watched by a thread
    while the other tests run: its five minutes overlap theirs. The test, run last, takes the watch's outcome."""

    run: MakeRun | None = None
    watch: concurrent.futures.Future[dict[str, Any]] | None = None

    @classmethod
    def start(cls) -> None:
        if cls.run is not None or os.environ.get("DATABASE_URL"):
            return
        # A short path: the broker's Unix socket lives under it.
        cls.run = MakeRun(tempfile.mkdtemp(prefix="cp-run-", dir="/tmp"), "first")
        cls.watch = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="make-run").submit(cls._watch, cls.run)

    @staticmethod
    def _watch(first: MakeRun) -> dict[str, Any]:
        """The first run checked, then stopped at once (its traffic would load the rest of the suite)."""
        try:
            seen = first_run(first)
        finally:
            first.stop()
        return seen

    @classmethod
    def stop(cls) -> None:
        """At the session's end: a first run the test never took (deselected, or the session stopped early)."""
        if cls.run is not None and cls.run.make.poll() is None:
            with contextlib.suppress(Exception):
                cls.run.stop()


def test_make_run_brings_up_the_portal_and_a_demo_that_fills_the_charts_then_a_second_run_changes_nothing() -> None:
    Early.start()  # already started, unless this test runs in a session of its own making
    assert Early.run is not None and Early.watch is not None
    first = Early.run
    var_dir = first.var_dir
    try:
        seen = Early.watch.result(timeout=900)
    finally:
        first.stop()  # when the watch timed out; a stopped run is left as it is
    assert seen["filled_after"] <= CHARTS_WITHIN
    before = demo_data(var_dir)
    assert len(before["model versions"]) == 3 and len(before["deployments"]) >= 4, before
    # The production canary was judged on its own requests during its bake (on the ingested metrics) and kept.
    with sqlite3.connect(f"file:{var_dir}/controlplane.sqlite3?mode=ro", uri=True) as db:
        status, verdict = db.execute(
            "select d.status, d.objective_status from deployments_deployment d join deployments_service s on "
            "s.id = d.service_id join deployments_environment e on e.id = s.environment_id where e.name = "
            "'production' and d.replaces_id is not null order by d.id desc"
        ).fetchone()
    verdict = json.loads(verdict)
    assert status == "succeeded" and verdict["judged"] and verdict["requests"] >= 20, verdict
    assert verdict["source"] == "metrics", verdict

    second = MakeRun(var_dir, "second", port=first.port)  # a second `make run` listens where the first did
    try:
        wait_for(second.answers, timeout=240, interval=0.5, what="the portal to answer again")
        wait_for(lambda: any("demo: ready" in line for line in second.demo_lines()), timeout=120, what="ready again")
        # The demo found everything in place and goes on sending traffic to the same addresses.
        wait_for(lambda: "sending about" in second.output(), timeout=60, what="traffic again")
        again = "\n".join(second.demo_lines())
        for made in ["registered the dataset", "launched", "requested", "approved request", "deployed"]:
            assert made not in again, again
    finally:
        second.stop()
    assert demo_data(var_dir) == before
