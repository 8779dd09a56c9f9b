"""The local serving backend (workers/deploy/local.py) with real routers and real serving processes: rollouts by
the clock, traffic through the stable address, failures, a router that died, other processes, and no request lost
while revisions come and go under constant load."""

from __future__ import annotations

import collections
import http.client
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import pytest

from serving.router import control
from tests.fixtures.models import Trained
from workers.deploy.base import (
    DeploymentNotFound,
    Handle,
    RevisionSpec,
    Rollout,
    RolloutStatus,
    ServiceSpec,
    ServingBackend,
    ServingSpan,
)
from workers.deploy.local import LocalServingBackend, _sockets_dir, _strays, timeline
from workers.errors import BackendError
from workers.local_state import create_exclusive, process_alive, read_json, running, write_json

REPO = Path(__file__).resolve().parents[2]
SERVICE = "churn-production"
WAIT_SECONDS = 90.0


# --- fixtures and helpers ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model(logistic: Trained) -> Trained:
    return logistic


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "services"


@pytest.fixture
def backend(root: Path) -> Iterator[LocalServingBackend]:
    backend = LocalServingBackend(root)
    yield backend
    recorded = recorded_processes(root)
    backend.shutdown_all(timeout=10)
    alive = [p.get("name", "router") for p in recorded if process_alive(p)]
    assert alive == [], f"still running after shutdown_all: {alive}"
    for directory in root.iterdir() if root.is_dir() else []:
        state = read_json(directory / "service.json")
        assert _strays(directory, Path(state["sockets"])) == []


def recorded_processes(root: Path) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for path in root.glob("*/service.json"):
        router = read_json(path).get("router")
        if router:
            found.append(router)
    for path in root.glob("*/revisions/*/revision.json"):
        found.extend(p for p in read_json(path)["processes"] if p.get("pid"))
    return found


def service(count: int = 1) -> ServiceSpec:
    return ServiceSpec(name=SERVICE, desired_count=count, tags={"project": "churn", "environment": "production"})


def model_env(model: Trained, **extra: str) -> dict[str, str]:
    return {"MODEL_URI": model.uri, "MODEL_SHA256": model.sha256, "MODEL_CARD": json.dumps(model.card), **extra}


def revision(
    deployment: str, model: Trained, *, reuse: str = "", env: dict[str, str] | None = None, **rollout: Any
) -> RevisionSpec:
    return RevisionSpec(
        deployment_id=deployment,
        environment=model_env(model) if env is None and not reuse else (env or {}),
        rollout=Rollout(**rollout),
        reuse=reuse,
    )


def wait_phase(backend: LocalServingBackend, spec: ServiceSpec, handle: Handle, *phases: str) -> RolloutStatus:
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        status = backend.progress(spec, handle)
        if status.phase in phases:
            return status
        assert time.monotonic() < deadline, f"{handle.revision} never reached {phases}: {status}"
        time.sleep(0.1)


def wait_until(check: Callable[[], Any], *, what: str) -> Any:
    deadline = time.monotonic() + WAIT_SECONDS
    while not (value := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return value


def port_of(backend: LocalServingBackend, spec: ServiceSpec) -> int:
    address = backend.status(spec).address
    assert address.startswith("http://127.0.0.1:"), address
    return int(address.rsplit(":", 1)[1])


def ask(port: int, path: str = "/ping", body: bytes | None = None) -> tuple[int, str, bytes]:
    """One request on a new connection: (status, the x-revision that answered, body)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    headers = {"Connection": "close"}
    if body is not None:
        headers["Content-Type"] = "application/json"
    connection.request("POST" if body is not None else "GET", path, body=body, headers=headers)
    answer = connection.getresponse()
    result = answer.status, answer.getheader("x-revision") or "", answer.read()
    connection.close()
    return result


def served_by(port: int, times: int = 1) -> collections.Counter[str]:
    return collections.Counter(ask(port)[1] for _ in range(times))


def body_of(model: Trained, rows: int = 2) -> bytes:
    return json.dumps({"instances": model.rows.head(rows).to_numpy().tolist()}).encode()


def healthy_in_router(root: Path) -> list[str]:
    """The processes the service's router found healthy by its own /ping (it passes connections to no other)."""
    path = Path(read_json(root / SERVICE / "service.json")["sockets"]) / "router.sock"
    return sorted(r["name"] for r in control(str(path), {"op": "state"})["state"]["revisions"] if r["healthy"])


def revision_record(root: Path, name: str) -> dict[str, Any]:
    return read_json(root / SERVICE / "revisions" / name / "revision.json")


def exit_code(root: Path, name: str, index: int = 0) -> int | None:
    path = root / SERVICE / "revisions" / name / f"{index}.exit.json"
    return read_json(path)["exit_code"] if path.is_file() else None


def in_another_process(root: Path, code: str, *, returncode: int = 0) -> Any:
    """Run `code` in a new Python process holding its own LocalServingBackend on `root`; it prints JSON (read
    back when it ends with `returncode` 0)."""
    script = (
        "import json, sys\nfrom pathlib import Path\n"
        "from workers.deploy.base import Handle, ServiceSpec\n"
        "from workers.deploy.local import LocalServingBackend\n"
        f"backend = LocalServingBackend(Path(sys.argv[1]))\nservice = ServiceSpec(name={SERVICE!r}, desired_count=1)\n"
        + code
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(root)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=WAIT_SECONDS,
    )
    assert done.returncode == returncode, done.stderr
    return json.loads(done.stdout) if returncode == 0 else None


def first_deploy(
    backend: LocalServingBackend, model: Trained, spec: ServiceSpec | None = None, env: dict[str, str] | None = None
) -> Handle:
    spec = spec or service()
    handle = backend.deploy(spec, revision("d1", model, env=env))
    wait_phase(backend, spec, handle, "paused")
    assert backend.promote(spec, handle).phase == "complete"
    return handle


class Load:
    """Client threads posting through the stable address until stopped, counting every answer by the revision that
    gave it (x-revision) and every failure. Keep-alive clients reuse one connection (http.client reconnects after
    `connection: close`); the others open a new connection per request."""

    def __init__(self, port: int, body: bytes, *, keepalive: int, fresh: int) -> None:
        self.port = port
        self.body = body
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.statuses: collections.Counter[int] = collections.Counter()
        self.revisions: collections.Counter[str] = collections.Counter()
        self.failures: list[str] = []
        self.threads = [threading.Thread(target=self._keepalive, daemon=True) for _ in range(keepalive)]
        self.threads += [threading.Thread(target=self._fresh, daemon=True) for _ in range(fresh)]
        for thread in self.threads:
            thread.start()

    def _record(self, status: int, revision: str) -> None:
        with self.lock:
            self.statuses[status] += 1
            self.revisions[revision] += 1

    def _failed(self, what: str) -> None:
        with self.lock:
            self.failures.append(what)

    def _keepalive(self) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=15)
        headers = {"Content-Type": "application/json"}
        while not self.stopping.is_set():
            try:
                connection.request("POST", "/invocations", body=self.body, headers=headers)
                answer = connection.getresponse()
                answer.read()
                self._record(answer.status, answer.getheader("x-revision") or "")
            except (OSError, http.client.HTTPException) as exc:
                self._failed(f"keep-alive: {exc!r}")
                connection.close()
            time.sleep(0.002)
        connection.close()

    def _fresh(self) -> None:
        while not self.stopping.is_set():
            try:
                status, revision, _ = ask(self.port, "/invocations", self.body)
                self._record(status, revision)
            except (OSError, http.client.HTTPException) as exc:
                self._failed(f"new connection: {exc!r}")
            time.sleep(0.002)

    def answered_by(self, name: str) -> int:
        with self.lock:
            return self.revisions[name]

    def settle(self, name: str, more: int = 30) -> None:
        """Wait until `name` has given `more` answers beyond those counted so far."""
        before = self.answered_by(name)
        wait_until(lambda: self.answered_by(name) >= before + more, what=f"{more} answers from {name}")

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=30)


# --- the timeline, by the clock --------------------------------------------------------------------------------------


def rollout_record(strategy: str, *, previous: str = "r-d1", bake: float = 60.0, **extra: float) -> dict[str, Any]:
    return {
        "strategy": strategy,
        "previous": previous,
        "healthy_at": 1000.0,
        "bake_seconds": bake,
        "canary_percent": extra.get("canary", 10.0),
        "linear_step_percent": extra.get("step", 25.0),
        "linear_interval_seconds": extra.get("interval", 30.0),
    }


def test_the_timeline_of_each_strategy() -> None:
    at = 1000.0  # when every new process passed /ping
    for strategy in ("all_at_once", "rolling"):
        record = rollout_record(strategy)
        assert timeline(record, at) == ("baking", 100.0, 60.0)
        assert timeline(record, at + 59.5) == ("baking", 100.0, 0.5)
        assert timeline(record, at + 60.0) == ("paused", 100.0, None)
    canary = rollout_record("canary", canary=15.0)
    assert timeline(canary, at + 10) == ("shifting", 15.0, 50.0)
    assert timeline(canary, at + 60) == ("paused", 100.0, None)  # the canary is the bake
    linear = rollout_record("linear", step=25.0, interval=30.0, bake=20.0)
    assert [timeline(linear, at + t)[:2] for t in (0, 29, 30, 61, 90, 109, 110)] == [
        ("shifting", 25.0),
        ("shifting", 25.0),
        ("shifting", 50.0),
        ("shifting", 75.0),
        ("baking", 100.0),
        ("baking", 100.0),
        ("paused", 100.0),
    ]
    assert timeline(linear, at + 45)[2] == 15.0
    uneven = rollout_record("linear", step=40.0, interval=10.0, bake=0.0)
    assert [timeline(uneven, at + t)[:2] for t in (0, 10, 20)] == [
        ("shifting", 40.0),
        ("shifting", 80.0),
        ("paused", 100.0),
    ]
    # A first deploy has nothing to shift from: all traffic, then the bake, whatever the strategy.
    for strategy in ("canary", "linear"):
        assert timeline(rollout_record(strategy, previous=""), at + 1) == ("baking", 100.0, 59.0)
    # Fractional minutes of bake (the tests' 0.05) are seconds in the record.
    assert timeline(rollout_record("all_at_once", bake=0.05 * 60), at + 2.9)[0] == "baking"


def test_sockets_go_to_a_short_directory_when_the_root_is_deep(tmp_path: Path) -> None:
    shallow = Path("/srv/cp/churn")
    assert _sockets_dir(shallow) == shallow / "sockets"
    deep = tmp_path / ("x" * 80) / SERVICE
    short = _sockets_dir(deep)
    assert deep not in short.parents and len(str(short).encode()) + 52 <= 100
    assert _sockets_dir(deep) == short  # the same service, the same directory


def test_bad_requests_are_refused_before_anything_starts(
    backend: LocalServingBackend, model: Trained, root: Path
) -> None:
    assert isinstance(backend, ServingBackend)
    cases = [
        (ServiceSpec(name="Churn_Prod", desired_count=1), revision("d1", model), "service name"),
        (service(), revision("d 1", model), "deployment_id"),
        (service(), revision("d1", model, strategy="canary", canary_percent=0), "canary_percent"),
        (service(), revision("d1", model, strategy="linear", linear_interval_minutes=0), "linear_interval_minutes"),
        (service(), revision("d1", model, bake_minutes=-1), "bake_minutes"),
        (service(), revision("d1", model, env={"MODEL_SHA256": model.sha256}), "MODEL_URI"),
        (service(), revision("d1", model, env=model_env(model, DRAIN_SECONDS="soon")), "DRAIN_SECONDS"),
        (service(0), revision("d1", model), "desired_count"),
        (service(), replace(revision("d1", model), cpu=0), "cpu"),
    ]
    for spec, spec_revision, field in cases:
        with pytest.raises(BackendError) as caught:
            backend.deploy(spec, spec_revision)
        assert caught.value.permanent and field in caught.value.message, caught.value.message
    assert not root.exists() or list(root.iterdir()) == []
    with pytest.raises(DeploymentNotFound):
        backend.status(service())
    with pytest.raises(DeploymentNotFound):
        backend.progress(service(), Handle("r-d1"))


# --- with real processes ---------------------------------------------------------------------------------------------


def test_a_first_deploy_serves_through_the_stable_address_and_any_process_sees_it(
    backend: LocalServingBackend, model: Trained, root: Path
) -> None:
    spec = service()
    # Three workers deploy the same deployment at once: one creates it, all get the same handle.
    handles: list[Handle] = []
    racers = [
        threading.Thread(target=lambda: handles.append(LocalServingBackend(root).deploy(spec, revision("d1", model))))
        for _ in range(3)
    ]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join(timeout=WAIT_SECONDS)
    handle = Handle(revision="r-d1", rollout_id="", previous_revision="")
    assert handles == [handle] * 3
    assert backend.deploy(spec, revision("d1", model)) == handle  # again: the same handle, nothing more started
    status = wait_phase(backend, spec, handle, "paused")
    assert (status.traffic_percent, status.desired, status.running, status.healthy) == (100.0, 1, 1, 1)
    assert [event[0] for event in status.events] == [
        "processes-started",
        "ping-r-d1-0-1",
        "healthy",
        "traffic-100",
        "paused",
    ]
    assert len(revision_record(root, "r-d1")["processes"]) == 1
    port = port_of(backend, spec)
    body = body_of(model, 5)
    through = ask(port, "/invocations", body)
    direct = ask(int(status.revision_address.rsplit(":", 1)[1]), "/invocations", body)
    assert through[0] == 200 and through[1] == "d1" and json.loads(through[2]) == json.loads(direct[2])
    assert json.loads(ask(port)[2])["service"] == SERVICE
    assert backend.promote(spec, handle).phase == "complete"
    assert backend.promote(spec, handle).phase == "complete"  # idempotent
    # Nothing is kept in memory: a new backend object, and another process, see the same service.
    assert LocalServingBackend(root).status(spec) == backend.status(spec)
    seen = in_another_process(
        root,
        "s = backend.status(service)\np = backend.progress(service, Handle('r-d1'))\n"
        "print(json.dumps([s.address, s.serving_revision, s.running, p.phase]))",
    )
    assert seen == [f"http://127.0.0.1:{port}", "r-d1", 1, "complete"]
    state = read_json(root / SERVICE / "service.json")
    assert state["port"] == port and state["router_starts"] == 1
    # The revision's environment holds its SERVING_TOKEN: the file, made and rewritten, is for this user only.
    assert stat.S_IMODE((root / SERVICE / "revisions" / "r-d1" / "revision.json").stat().st_mode) == 0o600


def test_private_state_files_are_this_users_alone_from_the_start(tmp_path: Path) -> None:
    os.umask(previous := os.umask(0o022))
    made, rewritten = tmp_path / "made.json", tmp_path / "rewritten.json"
    assert create_exclusive(made, {"token": "t"}, private=True)
    (tmp_path / f".{rewritten.name}.{os.getpid()}.{threading.get_ident()}.tmp").write_text("left by a crash")
    write_json(rewritten, {"token": "t"}, private=True)
    write_json(tmp_path / "shared.json", {})
    modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in tmp_path.iterdir()}
    assert modes == {"made.json": 0o600, "rewritten.json": 0o600, "shared.json": 0o666 & ~previous}
    assert read_json(rewritten) == {"token": "t"}


def test_a_deploy_cut_short_by_a_dying_worker_is_finished_by_the_next_call(
    backend: LocalServingBackend, model: Trained, root: Path
) -> None:
    # Another process dies (SIGKILL, as a worker killed by the OOM killer) just as it would start the first process.
    env = json.dumps(json.dumps(model_env(model)))
    code = (
        "import os, signal\nfrom workers.deploy import local\n"
        "local.LocalServingBackend._spawn = lambda *args: os.kill(os.getpid(), signal.SIGKILL)\n"
        "from workers.deploy.base import RevisionSpec, Rollout\n"
        f"backend.deploy(service, RevisionSpec('d1', json.loads({env}), Rollout()))\n"
    )
    in_another_process(root, code, returncode=-signal.SIGKILL)
    assert read_json(root / SERVICE / "service.json")["rollout"] == "r-d1"
    assert [p.get("pid") for p in revision_record(root, "r-d1")["processes"]] == [None]
    handle = backend.deploy(service(), revision("d1", model))
    assert handle == Handle("r-d1")
    wait_phase(backend, service(), handle, "paused")
    assert served_by(port_of(backend, service()), 5) == {"d1": 5}


def test_a_canary_splits_new_connections_and_promote_stops_the_previous_revision(
    backend: LocalServingBackend, model: Trained, root: Path
) -> None:
    spec = service()
    first_deploy(backend, model)
    port = port_of(backend, spec)
    handle = backend.deploy(spec, revision("d2", model, strategy="canary", canary_percent=25, bake_minutes=10))
    assert handle.previous_revision == "r-d1"
    status = wait_phase(backend, spec, handle, "shifting")
    assert status.traffic_percent == 25.0 and status.seconds_to_next_step is not None
    assert 0 < status.seconds_to_next_step <= 600
    # The router pings on its own too, a moment later than progress() did: counted once it passes connections.
    wait_until(lambda: "r-d2-0" in healthy_in_router(root), what="r-d2-0 healthy behind the router")
    # Each /ping below is a new connection: 25% of 400 is 100, with a standard deviation of about 8.7.
    counts = served_by(port, 400)
    assert 55 <= counts["d2"] <= 145 and counts["d1"] + counts["d2"] == 400, counts
    status = backend.promote(spec, handle)
    assert status.phase == "complete" and status.traffic_percent == 100.0
    assert {"traffic-25", "traffic-100", "promoted", "previous-stopped"} <= {e[0] for e in status.events}
    assert served_by(port, 20) == {"d2": 20}
    wait_until(lambda: exit_code(root, "r-d1") is not None, what="r-d1 to stop")
    assert exit_code(root, "r-d1") == 0  # drained and stopped gracefully
    final = backend.status(spec)
    assert (final.serving_revision, final.desired, final.running) == ("r-d2", 1, 1)


def test_no_request_is_lost_across_deploys_canary_rollbacks_and_promotes_under_constant_load(
    backend: LocalServingBackend, model: Trained, root: Path
) -> None:
    spec = service()
    # Keep-alive clients are told to reconnect every second, so they too cross every change of weights.
    env = model_env(model, SERVING_HANDOFF_RECHOOSE_SECONDS="1")
    first_deploy(backend, model, env=env)
    port = port_of(backend, spec)
    load = Load(port, body_of(model), keepalive=3, fresh=2)
    try:
        load.settle("d1")
        # A canary that breaches its objectives: rolled back while it takes its share.
        canary = backend.deploy(
            spec, revision("d2", model, env=env, strategy="canary", canary_percent=30, bake_minutes=10)
        )
        wait_phase(backend, spec, canary, "shifting")
        load.settle("d2", 60)
        status = backend.roll_back(spec, canary)
        assert status.phase == "rolled_back" and status.traffic_percent == 0.0
        assert backend.roll_back(spec, canary).phase == "rolled_back"  # idempotent
        load.settle("d1")
        # A deploy, baked by the clock, then promoted.
        deploy = backend.deploy(spec, revision("d3", model, env=env, strategy="all_at_once", bake_minutes=0.05))
        assert deploy.previous_revision == "r-d1"
        status = wait_phase(backend, spec, deploy, "paused")
        assert [e[0] for e in status.events if e[0] in ("traffic-100", "baking", "paused")] == [
            "traffic-100",
            "baking",
            "paused",
        ]
        load.settle("d3")
        assert backend.promote(spec, deploy).phase == "complete"
        load.settle("d3")
        # The manual rollback: the first revision's model again, as a new revision.
        back = backend.deploy(spec, revision("d4", model, reuse="r-d1", strategy="all_at_once"))
        assert back.previous_revision == "r-d3"
        wait_phase(backend, spec, back, "paused")
        load.settle("d4")
        assert backend.promote(spec, back).phase == "complete"
        load.settle("d4", 60)
    finally:
        load.stop()
    assert load.failures == [] and set(load.statuses) == {200}, (load.failures[:5], load.statuses)
    assert set(load.revisions) == {"d1", "d2", "d3", "d4"} and sum(load.statuses.values()) > 300, load.revisions
    assert revision_record(root, "r-d4")["environment"] == revision_record(root, "r-d1")["environment"]
    assert revision_record(root, "r-d4")["reused_from"] == "r-d1"
    assert backend.status(spec).serving_revision == "r-d4"
    for name in ("r-d1", "r-d2", "r-d3"):
        wait_until(lambda name=name: exit_code(root, name) is not None, what=f"{name} to stop")
        assert exit_code(root, name) == 0, name
    router = control(str(Path(read_json(root / SERVICE / "service.json")["sockets"]) / "router.sock"), {"op": "state"})
    assert router["state"]["unavailable"] == 0 and [r["name"] for r in router["state"]["revisions"]] == ["r-d4-0"]


def test_failures_a_revision_that_cannot_start_a_dead_router_a_taken_port_and_a_crash_while_serving(
    backend: LocalServingBackend, model: Trained, root: Path
) -> None:
    spec = service()
    first_deploy(backend, model)
    port = port_of(backend, spec)
    # A revision whose artifact does not match its hash: its process refuses to serve it.
    bad = backend.deploy(spec, revision("d2", model, env=model_env(model, MODEL_SHA256="0" * 64)))
    status = wait_phase(backend, spec, bad, "failed")
    assert "r-d2-0 exited with code 3 (the model cannot be served)" in status.message, status.message
    assert "sha256" in status.message.lower() and status.traffic_percent == 0.0
    assert backend.roll_back(spec, bad).phase == "failed"  # nothing more to do
    with pytest.raises(BackendError) as caught:
        backend.promote(spec, bad)
    assert caught.value.permanent
    assert served_by(port, 20) == {"d1": 20}
    with pytest.raises(DeploymentNotFound):
        backend.deploy(spec, revision("d3", model, reuse="r-d99"))
    # The router dies: the next call, from another process, starts it again on the same port with the weights.
    state = read_json(root / SERVICE / "service.json")
    os.kill(state["router"]["pid"], signal.SIGKILL)
    wait_until(lambda: not process_alive(state["router"]), what="the router to die")
    assert in_another_process(root, "print(json.dumps(backend.status(service).address))") == (
        f"http://127.0.0.1:{port}"
    )
    restarted = read_json(root / SERVICE / "service.json")
    assert restarted["router"]["pid"] != state["router"]["pid"] and restarted["router_starts"] == 2
    assert served_by(port, 20) == {"d1": 20}
    # It dies again while another program takes its port: said plainly, and it comes back once the port is free.
    os.kill(restarted["router"]["pid"], signal.SIGKILL)
    wait_until(lambda: not process_alive(restarted["router"]), what="the router to die")
    squatter = socket.create_server(("127.0.0.1", port))
    try:
        with pytest.raises(BackendError) as caught:
            backend.status(spec)
        assert not caught.value.permanent and f"127.0.0.1:{port} is taken" in caught.value.message
    finally:
        squatter.close()
    assert backend.status(spec).address == f"http://127.0.0.1:{port}"
    assert served_by(port, 5) == {"d1": 5}
    # The serving revision's process crashes: the next call starts it again (on a new port behind the same address).
    crashed = revision_record(root, "r-d1")["processes"][0]
    psutil.Process(crashed["pid"]).children()[0].kill()
    wait_until(lambda: not process_alive(crashed), what="r-d1-0 to end")
    backend.status(spec)
    restarted_process = revision_record(root, "r-d1")["processes"][0]
    assert restarted_process["attempt"] == 2 and restarted_process["pid"] != crashed["pid"]
    assert served_by(port, 5) == {"d1": 5}  # held by the router until the new process passes its ping
    events = {e[0]: e[2] for e in backend.progress(spec, Handle("r-d1")).events}
    assert "killed by SIGKILL" in events["restarted-r-d1-0-2"]
    # A canary whose process dies while it serves: failed, its traffic back on the previous revision.
    canary = backend.deploy(spec, revision("d3", model, strategy="canary", canary_percent=50, bake_minutes=10))
    wait_phase(backend, spec, canary, "shifting")
    wrapper = psutil.Process(revision_record(root, "r-d3")["processes"][0]["pid"])
    wrapper.children()[0].kill()
    status = wait_phase(backend, spec, canary, "failed")
    assert "r-d3-0 was killed by SIGKILL" in status.message and status.traffic_percent == 0.0, status.message
    assert served_by(port, 20) == {"d1": 20}
    assert backend.status(spec).serving_revision == "r-d1"


def test_linear_steps_by_the_clock_and_scaling_the_serving_revision(
    backend: LocalServingBackend, model: Trained, root: Path
) -> None:
    two = service(2)
    first_deploy(backend, model, two, env=model_env(model, DRAIN_SECONDS="1"))
    port = port_of(backend, two)
    assert backend.status(two).running == 2
    wait_until(lambda: healthy_in_router(root) == ["r-d1-0", "r-d1-1"], what="both processes behind the router")
    backend.scale(service(3))
    assert backend.status(service(3)).desired == 3
    wait_until(lambda: healthy_in_router(root) == ["r-d1-0", "r-d1-1", "r-d1-2"], what="a third process behind it")
    # One of the two to go is stuck (stopped by a debugger, say): it cannot drain, so it is killed after its
    # DRAIN_SECONDS and the backend's grace (a second here).
    stuck = psutil.Process(revision_record(root, "r-d1")["processes"][2]["pid"]).children()[0]
    stuck.suspend()
    impatient = LocalServingBackend(root, kill_after_drain_seconds=1)
    impatient.scale(service(1))
    wait_until(lambda: impatient.status(service(1)).running == 1, what="the extra processes to end")
    assert healthy_in_router(root) == ["r-d1-0"] and served_by(port, 10) == {"d1": 10}
    ended = revision_record(root, "r-d1")["processes"]
    assert exit_code(root, "r-d1", 1) == 0 and not ended[1].get("killed_at")  # drained
    assert ended[2]["killed_at"] and not running(stuck)
    # Linear: 50% when healthy, 100% one interval later, then the bake, then paused; each seen by progress().
    one = service(1)
    handle = backend.deploy(
        one,
        revision(
            "d2", model, strategy="linear", linear_step_percent=50, linear_interval_minutes=0.03, bake_minutes=0.03
        ),
    )
    shifting = wait_phase(backend, one, handle, "shifting")
    assert shifting.traffic_percent == 50.0
    wait_until(lambda: "r-d2-0" in healthy_in_router(root), what="r-d2-0 healthy behind the router")
    counts = served_by(port, 100)
    assert counts["d1"] > 0 and counts["d2"] > 0, counts
    status = wait_phase(backend, one, handle, "paused")
    assert [e[0] for e in status.events if e[0].startswith(("traffic", "baking", "paused"))] == [
        "traffic-50",
        "traffic-100",
        "baking",
        "paused",
    ]
    assert served_by(port, 10) == {"d2": 10}
    # A deploy while that rollout waits for its verdict: it is rolled back first, and the new one replaces r-d1.
    newer = backend.deploy(one, revision("d3", model))
    superseded = backend.progress(one, handle)
    assert superseded.phase == "rolled_back" and superseded.message == "superseded by r-d3: rolled back"
    assert newer.previous_revision == "r-d1"
    with pytest.raises(BackendError):
        backend.promote(one, handle)
    wait_phase(backend, one, newer, "paused")
    assert served_by(port, 10) == {"d3": 10}
    # Rolled back from paused: all traffic to the previous revision at once.
    assert backend.roll_back(one, newer).phase == "rolled_back"
    assert served_by(port, 10) == {"d1": 10}
    with pytest.raises(BackendError) as caught:
        backend.promote(one, newer)
    assert caught.value.permanent and "rolled back" in caught.value.message


def test_rolling_gives_each_new_process_its_share_as_it_passes_ping(
    backend: LocalServingBackend, model: Trained, root: Path
) -> None:
    first_deploy(backend, model)
    port = port_of(backend, service())
    two = service(2)
    handle = backend.deploy(two, revision("d2", model, strategy="rolling"))
    # One of the two new processes is held before it can answer its first /ping.
    wrapper = psutil.Process(revision_record(root, "r-d2")["processes"][1]["pid"])
    held = wait_until(lambda: wrapper.children(), what="r-d2-1's server to start")[0]
    held.suspend()
    try:
        status = wait_phase(backend, two, handle, "shifting")
        assert (status.traffic_percent, status.healthy, status.desired) == (50.0, 1, 2)
        assert "processes still starting" in status.message
        wait_until(lambda: "r-d2-0" in healthy_in_router(root), what="r-d2-0 healthy behind the router")
        counts = served_by(port, 100)
        assert counts["d1"] > 0 and counts["d2"] > 0, counts
    finally:
        held.resume()
    status = wait_phase(backend, two, handle, "paused")
    assert (status.traffic_percent, status.healthy) == (100.0, 2)
    assert [e[0] for e in status.events if e[0].startswith("traffic")] == ["traffic-50", "traffic-100"]
    assert backend.promote(two, handle).phase == "complete"
    wait_until(lambda: healthy_in_router(root) == ["r-d2-0", "r-d2-1"], what="only r-d2 behind the router")
    assert served_by(port, 20) == {"d2": 20}


def test_resume_brings_a_stopped_or_killed_service_back_on_its_port_and_leaves_a_running_one_alone(
    backend: LocalServingBackend, model: Trained, root: Path
) -> None:
    spec = service(count=2)
    handle = first_deploy(backend, model, spec)
    port = port_of(backend, spec)
    unfinished = backend.deploy(spec, revision("d2", model, strategy="canary", canary_percent=50, bake_minutes=10))
    wait_phase(backend, spec, unfinished, "shifting")
    backend.stop_service(SERVICE)
    with pytest.raises(ConnectionRefusedError):
        ask(port)
    # The stop ended the canary: its next poll says so; it is never resumed.
    status = backend.progress(spec, unfinished)
    assert status.phase == "rolled_back" and status.message == "the service was stopped", status
    with pytest.raises(BackendError) as caught:
        backend.resume(spec, unfinished)
    assert caught.value.permanent and "never took all the traffic" in caught.value.message
    with pytest.raises(ConnectionRefusedError):
        ask(port)  # the refusal started nothing

    # Another program holds the port now: said, naming it; nothing started.
    squatter = socket.create_server(("127.0.0.1", port))
    try:
        with pytest.raises(BackendError) as caught:
            backend.resume(spec, handle)
        assert f"127.0.0.1:{port} is taken" in caught.value.message, caught.value.message
    finally:
        squatter.close()
    assert not any(process_alive(p) for p in revision_record(root, "r-d1")["processes"])

    resumed = backend.resume(spec, handle)
    assert resumed.address == f"http://127.0.0.1:{port}" and resumed.serving_revision == "r-d1"
    assert resumed.running == 2
    assert served_by(port, 10) == {"d1": 10}
    assert ask(port, "/invocations", body_of(model))[:2] == (200, "d1")
    before = sorted(p["pid"] for p in recorded_processes(root) if process_alive(p))
    assert len(before) == 3  # the router and two serving processes
    assert backend.resume(spec, handle).serving_revision == "r-d1"
    assert sorted(p["pid"] for p in recorded_processes(root) if process_alive(p)) == before

    # Everything killed at once, as when the machine goes down: the files still say it serves; resume restarts it.
    for pid in before:
        os.killpg(pid, signal.SIGKILL)
    wait_until(lambda: not any(process_alive(p) for p in recorded_processes(root)), what="everything to die")
    assert backend.resume(spec, handle).running == 2
    assert served_by(port, 10) == {"d1": 10}


# --- usage: each serving process's spans, for cost estimates ---------------------------------------------------------


def at(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, tz=UTC)


def spans(backend: LocalServingBackend, spec: ServiceSpec, since: datetime) -> dict[str, ServingSpan]:
    found = backend.usage(spec, since=since)
    assert [s.started_at for s in found] == sorted(s.started_at for s in found)
    return {span.process: span for span in found}


def test_usage_gives_every_start_of_every_process_until_it_ended_however_it_ended(
    backend: LocalServingBackend, model: Trained, root: Path
) -> None:
    spec = service()
    since = datetime.now(UTC)
    assert backend.usage(spec, since=since) == []  # never deployed
    with pytest.raises(ValueError):
        backend.usage(spec, since=datetime.now())
    before = time.time()
    sized = replace(revision("d1", model, env=model_env(model, DRAIN_SECONDS="1")), cpu=1024, memory=2048)
    handle = backend.deploy(spec, sized)
    deployed = time.time()
    wait_phase(backend, spec, handle, "paused")
    backend.promote(spec, handle)
    first = revision_record(root, "r-d1")["processes"][0]
    assert before <= first["started_at"] <= deployed
    # The kernel's own start time of the process agrees (it counts from a boot time given in whole seconds).
    assert abs(psutil.Process(first["pid"]).create_time() - first["started_at"]) < 1.0

    # While it runs: one open span from its start, at the size the revision stands for.
    seen = time.time()
    assert spans(backend, spec, since) == {
        "r-d1-0#1": ServingSpan("d1", "r-d1-0#1", at(first["started_at"]), None, cpu=1024, memory=2048)
    }

    # Killed with its wrapper (no exit file, as when the machine goes down): it ends at its last sign of life,
    # after the look that saw it running and before the kill; the next look says the same.
    os.killpg(first["pgid"], signal.SIGKILL)
    killed = time.time()
    wait_until(lambda: not process_alive(first), what="r-d1-0 to die")
    assert exit_code(root, "r-d1") is None
    ended = spans(backend, spec, since)["r-d1-0#1"].ended_at
    assert ended is not None and at(seen) <= ended <= at(killed)
    assert spans(backend, spec, since)["r-d1-0#1"].ended_at == ended

    # The next call starts it again: the first attempt keeps its span, the second one is open.
    backend.status(spec)
    second = revision_record(root, "r-d1")["processes"][0]
    assert second["attempt"] == 2
    found = spans(backend, spec, since)
    assert found["r-d1-0#1"].ended_at == ended
    assert found["r-d1-0#2"] == ServingSpan("d1", "r-d1-0#2", at(second["started_at"]), None, 1024, 2048)
    assert found["r-d1-0#2"].started_at >= ended

    # Its server crashes once it serves: the wrapper writes when, and that is the end the restart keeps.
    wait_until(
        lambda: backend.status(spec) and revision_record(root, "r-d1")["processes"][0]["passed_ping_at"],
        what="r-d1-0 to pass /ping again",
    )
    wrapper = psutil.Process(second["pid"])
    wait_until(wrapper.children, what="r-d1-0's server to start")[0].kill()
    wait_until(lambda: exit_code(root, "r-d1") is not None, what="r-d1-0's exit file")
    crashed = read_json(root / SERVICE / "revisions" / "r-d1" / "0.exit.json")["ended_at"]
    backend.status(spec)
    third = revision_record(root, "r-d1")["processes"][0]
    assert third["attempt"] == 3
    found = spans(backend, spec, since)
    assert sorted(found) == ["r-d1-0#1", "r-d1-0#2", "r-d1-0#3"]
    assert found["r-d1-0#2"].ended_at == at(crashed) and found["r-d1-0#3"].ended_at is None
    assert [p["attempt"] for p in third["history"]] == [1, 2]

    # A promote stops the previous revision: its last attempt ends when it drained; the new one runs at the
    # default size.
    newer = backend.deploy(spec, revision("d2", model))
    wait_phase(backend, spec, newer, "paused")
    backend.promote(spec, newer)
    wait_until(lambda: exit_code(root, "r-d1") == 0, what="r-d1-0 to drain and exit")
    drained = read_json(root / SERVICE / "revisions" / "r-d1" / "0.exit.json")["ended_at"]
    found = spans(backend, spec, since)
    assert found["r-d1-0#3"].ended_at == at(drained) and found["r-d1-0#3"].started_at < at(drained)
    d2 = revision_record(root, "r-d2")["processes"][0]
    assert found["r-d2-0#1"] == ServingSpan("d2", "r-d2-0#1", at(d2["started_at"]), None, 256, 512)

    # Only what ran since `since`; from another process too; and stop_service ends what still ran.
    later = datetime.now(UTC)
    assert list(spans(backend, spec, later)) == ["r-d2-0#1"]
    elsewhere = in_another_process(
        root,
        "from datetime import datetime\n"
        f"print(json.dumps([s.process for s in backend.usage(service, since=datetime.fromisoformat({str(later)!r}))]))",
    )
    assert elsewhere == ["r-d2-0#1"]
    backend.stop_service(SERVICE)
    stopped = spans(backend, spec, later)["r-d2-0#1"]
    assert stopped.ended_at is not None and stopped.ended_at > stopped.started_at
    assert stopped.ended_at == at(read_json(root / SERVICE / "revisions" / "r-d2" / "0.exit.json")["ended_at"])
    # resume() starts it again: a second span, the first one as it was.
    backend.resume(spec, newer)
    found = spans(backend, spec, later)
    assert found["r-d2-0#1"] == stopped and found["r-d2-0#2"].ended_at is None
