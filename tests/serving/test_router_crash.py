"""A serving process SIGKILLed under constant traffic, behind the service's router (the local serving backend, real
processes): the router alone stops choosing it, with no call to the backend, and every request from then on is
answered by the other revision. Only the requests that were on the dead process fail, each with no answer at all."""

from __future__ import annotations

import collections
import http.client
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

from serving.router import control
from tests.fixtures.models import Trained
from workers.deploy.base import Handle, RevisionSpec, Rollout, ServiceSpec
from workers.deploy.local import LocalServingBackend
from workers.local_state import read_json

SERVICE = ServiceSpec(name="crash-router", desired_count=1)
WAIT_SECONDS = 90.0
THREADS = 6  # half keep one connection alive, half open a new one per request


@dataclass(frozen=True)
class Request:
    client: int
    keep_alive: bool
    started: int  # the order in which requests were sent, over every client
    revision: str  # who answered (x-revision); "" when nothing did
    status: int  # 0: no answer
    error: str


class OrderedLoad:
    """Client threads posting through the stable address until stopped; every request is numbered as it is sent
    and kept with what came back, so what happened after a moment can be told apart by count, not by time."""

    def __init__(self, port: int, body: bytes, *, threads: int) -> None:
        self.port = port
        self.body = body
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.sent = 0
        self.done: list[Request] = []
        self.threads = [threading.Thread(target=self._send, args=(i, i % 2 == 0), daemon=True) for i in range(threads)]

    def __enter__(self) -> OrderedLoad:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)

    def _send(self, client: int, keep_alive: bool) -> None:
        connection: http.client.HTTPConnection | None = None
        while not self.stop.is_set():
            if connection is None:
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            with self.lock:
                started = self.sent
                self.sent += 1
            try:
                headers = {"content-type": "application/json"}
                if not keep_alive:
                    headers["connection"] = "close"
                connection.request("POST", "/invocations", self.body, headers)
                answer = connection.getresponse()
                answer.read()
                done = Request(client, keep_alive, started, answer.getheader("x-revision", ""), answer.status, "")
                if not keep_alive or answer.getheader("connection", "").lower() == "close":
                    connection.close()
                    connection = None
            except (OSError, http.client.HTTPException) as exc:
                done = Request(client, keep_alive, started, "", 0, f"{type(exc).__name__}: {exc}")
                connection.close()
                connection = None
            with self.lock:
                self.done.append(done)
        if connection is not None:
            connection.close()

    def requests(self) -> list[Request]:
        with self.lock:
            return sorted(self.done, key=lambda r: r.started)

    def answered_by(self, revision: str) -> int:
        return sum(1 for r in self.requests() if r.revision == revision)

    def sent_so_far(self) -> int:
        with self.lock:
            return self.sent


def wait_until(check: Callable[[], Any], *, what: str) -> Any:
    deadline = time.monotonic() + WAIT_SECONDS
    while not (value := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return value


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[LocalServingBackend]:
    backend = LocalServingBackend(tmp_path / "services")
    yield backend
    backend.shutdown_all(timeout=10)


def revision(deployment: str, model: Trained, **rollout: Any) -> RevisionSpec:
    environment = {"MODEL_URI": model.uri, "MODEL_SHA256": model.sha256, "MODEL_CARD": json.dumps(model.card)}
    return RevisionSpec(deployment_id=deployment, environment=environment, rollout=Rollout(**rollout))


def wait_phase(backend: LocalServingBackend, handle: Handle, phase: str) -> None:
    wait_until(lambda: backend.progress(SERVICE, handle).phase == phase, what=f"{handle.revision} {phase}")


def router_state(backend: LocalServingBackend) -> dict[str, dict[str, Any]]:
    """The router's own view, per process: healthy by its /ping, connections passed, passes that failed."""
    state = read_json(backend.root / SERVICE.name / "service.json")
    answer = control(str(Path(state["sockets"]) / "router.sock"), {"op": "state"})
    return {r["name"]: r for r in answer["state"]["revisions"]}


def serving_process(backend: LocalServingBackend, name: str) -> tuple[psutil.Process, psutil.Process]:
    """The wrapper (the recorded pid) of the revision's first process and its one child, `python -m serving`."""
    record = read_json(backend.root / SERVICE.name / "revisions" / name / "revision.json")
    wrapper = psutil.Process(record["processes"][0]["pid"])
    children = wrapper.children()
    assert len(children) == 1 and children[0].cmdline()[1:3] == ["-m", "serving"], children
    return wrapper, children[0]


def test_a_revision_killed_under_traffic_gets_no_new_connection_and_the_other_answers_every_request(
    backend: LocalServingBackend, logistic: Trained
) -> None:
    first = backend.deploy(SERVICE, revision("d1", logistic, bake_minutes=0))
    wait_phase(backend, first, "paused")
    backend.promote(SERVICE, first)
    # A canary taking half the connections; its bake is long: nothing changes by the clock during the test.
    canary = backend.deploy(SERVICE, revision("d2", logistic, strategy="canary", canary_percent=50, bake_minutes=10))
    wait_phase(backend, canary, "shifting")
    wait_until(lambda: all(r["healthy"] for r in router_state(backend).values()), what="both healthy in the router")
    port = int(backend.status(SERVICE).address.rsplit(":", 1)[1])
    body = json.dumps({"instances": logistic.rows.head(3).to_numpy().tolist()}).encode()

    with OrderedLoad(port, body, threads=THREADS) as load:
        wait_until(lambda: load.answered_by("d1") >= 30 and load.answered_by("d2") >= 30, what="both answering")
        wrapper, victim = serving_process(backend, "r-d2")
        killed_at = load.sent_so_far()
        victim.kill()
        victim.wait(timeout=30)
        # Dead now: every descriptor it held is closed. No call to the backend from here: the router is alone.
        died_at = load.sent_so_far()
        passed_at_death = router_state(backend)["r-d2-0"]["connections_passed"]
        wait_until(lambda: len(load.requests()) >= died_at + 200, what="200 more requests")
    wrapper.wait(timeout=30)  # it records how its server ended, for the backend's next call
    requests = load.requests()
    after = [r for r in requests if r.started >= died_at]
    failed = [r for r in requests if r.status != 200]
    in_flight = f"killed at #{killed_at}, dead at #{died_at}: " + "; ".join(
        f"#{r.started} client {r.client} {'keep-alive' if r.keep_alive else 'new'}: {r.error}" for r in failed
    )

    # The dead revision was given no connection after it died (its count could only fall: a connection queued for
    # it is passed on to another), and is out of the router's choice.
    router = router_state(backend)
    assert router["r-d2-0"]["connections_passed"] <= passed_at_death, router
    assert not router["r-d2-0"]["healthy"] and router["r-d2-0"]["failed_passes"] <= 1, router
    assert router["r-d1-0"]["healthy"], router
    # Only requests that reached the dead process failed, each with no answer at all (no 5xx, no 503 wait): those
    # in flight on it at the kill (one per client at most) and those the router passed it while it was dying
    # (killed, not yet gone); after its death only a kept-alive connection that was on it can fail, once.
    assert all(r.status == 0 and r.error for r in failed), in_flight
    assert len(failed) <= THREADS + (died_at - killed_at), in_flight
    after_death = [r for r in failed if r.started >= died_at]
    assert all(r.keep_alive for r in after_death) and len({r.client for r in after_death}) == len(after_death), (
        in_flight
    )
    # Every other request from its death on was answered 200 by the other revision, and so was every request of a
    # client after its last failure.
    assert {(r.revision, r.status) for r in after if r not in failed} == {("d1", 200)}, collections.Counter(
        (r.revision, r.status) for r in after
    )
    for client in {r.client for r in failed}:
        mine = [r for r in requests if r.client == client]
        last_failure = max(i for i, r in enumerate(mine) if r.status != 200)
        assert {(r.revision, r.status) for r in mine[last_failure + 1 :]} == {("d1", 200)}, mine[last_failure:]
    print(f"\n{len(failed)} request(s) in flight on the killed revision failed: {in_flight or 'none'}")

    # The next call to the backend sees the crash: the canary failed, saying how, its traffic all on d1.
    status = backend.progress(SERVICE, canary)
    assert status.phase == "failed" and status.traffic_percent == 0.0, status
    assert status.message.startswith("r-d2-0 was killed by SIGKILL"), status.message
    assert backend.status(SERVICE).serving_revision == "r-d1"
