"""The local serving backend: each service is a router process (serving/router.py) on a stable local port, in front
of its revisions' serving processes (`python -m serving`), all on this machine.

Everything lives in files under `root/<service>/`, so any worker process can call any method for any service, and a
worker killed mid-call leaves nothing that the next call cannot pick up:

    service.json                 the router (pid, start time, its stable port), the revisions' weights, which one
                                 serves and which one is rolling out
    service.lock                 held for every read-modify-write of the files below
    router.log                   the router's output
    revisions/r-<deployment>/    revision.json (its model environment, its processes, its rollout with events;
                                 0600: the environment holds SERVING_TOKEN) and each process's <i>.out, <i>.err
                                 and <i>.exit.json

Processes are detached (their own session), so they outlive the worker that started them, and are known again by
pid and start time (workers.local_state), so a pid the kernel reused is never taken for ours. Each serving process
runs under a small wrapper that records its exit code, so any later call can tell why it ended (2: a bad setting,
3: a model that cannot be served). Unix socket paths must stay under ~100 bytes: when `root` is deep the sockets go
to a short directory under the system's temporary directory, named by a hash of the service's directory.

Every call re-ensures the service: it restarts a dead router on the same port, sends the router the weights the
files hold (idempotent), starts again the serving revision's processes that died after serving (a crash, a reboot;
not one that refused to start or never passed /ping: scale() does those), stops what was asked to stop (SIGTERM
once the router no longer chooses it), and kills what did not drain within its DRAIN_SECONDS + 10 s.

stop_service() ends a service's processes and keeps its files; resume() brings it back from them: the router on the
same port, the given revision's processes from its recorded environment, all traffic once they pass /ping (the app
stops its local services when it stops and resumes what served when it starts again).

usage() reads what each process did from the same files, under the lock: every start of a process (its `attempt`)
is one span, from `started_at` to when it ended. A process started again keeps its earlier attempts in its record's
`history` (attempt, pid, started_at, ended_at), written when it is started again. When it ended: the time its
wrapper wrote in <i>.exit.json; else the time we SIGKILLed it (`killed_at`); else (killed together with its wrapper,
the machine went down) the last moment it is known to have lived: the later of its start, the last call that saw it
running (`seen_alive_at`: every call that looks at it, usage() included) and the last write to its <i>.out/<i>.err,
but never after the first call that found it gone. That undercounts by at most the time between two looks, and the
cost sync looks often. Each revision records the Fargate size it stands for (`cpu`, `memory` from the RevisionSpec;
256/512 for a revision recorded before sizes were).

A revision is `r-<deployment id>`; its processes are `r-<deployment id>-<i>`, each with its own port and hand-off
socket, running with REVISION=<deployment id> and SERVICE_NAME=<service name> (every answer carries `x-revision`).
Traffic is shared among a revision's processes equally.

Rollout timeline (H: the moment progress() first sees every new process answer /ping 200; B: bake_minutes; the
previous revision keeps running, at whatever weight is left, until promote() or roll_back()):

    every strategy  starting   processes start, no traffic (but rolling, below; and a first deploy is given all
                               the weight at once, gated by the router's own ping: there is nothing else to serve).
                               A process that exits, or not all passing /ping within start_timeout_seconds (120 s),
                               ends it: failed (a process that lost its port to another program is started again).
    first deploy    baking     100 % from H for B, then paused (whatever the strategy: nothing to shift from)
    all_at_once     baking     100 % from H for B, then paused
    rolling         shifting   before H, each new process takes its share as it passes /ping (k of n: k/n × 100 %)
                    baking     100 % from H for B, then paused
    canary          shifting   canary_percent from H for B (the canary is the bake)
                    paused     100 % from H + B (previous still up at weight 0)
    linear          shifting   linear_step_percent at H, one step more every linear_interval_minutes; 100 % at
                               H + (ceil(100 / step) − 1) × interval
                    baking     100 % from then for B, then paused
    any             paused     waits for promote() (→ complete: 100 % new; the previous leaves the router, then gets
                               SIGTERM and drains) or roll_back() (→ rolled_back: 100 % previous at once; the new
                               one leaves the router, then SIGTERM; with no previous the service serves nothing)

promote() also works from shifting or baking (the caller may decide early) and refuses a failed or rolled back
rollout; roll_back() works from any unfinished phase, does nothing more to a failed one, and refuses a promoted one
(the previous revision is gone: deploy it again with `reuse`).
The weights move only when a call is made: the clock decides what they should be, progress() (any caller) applies
it. A new revision's process that dies after H fails the rollout the same way as at start: its traffic goes back to
the previous revision at once and the caller is told (failed). A deploy while another rollout of the service is
unfinished rolls that one back first (its message says by which revision it was superseded).
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

import serving
from serving.config import ConfigError, ServingConfig
from serving.router import control
from workers.deploy.base import (
    FINAL_PHASES,
    DeploymentNotFound,
    Handle,
    Phase,
    RevisionSpec,
    Rollout,
    RolloutStatus,
    ServiceSpec,
    ServiceStatus,
    ServingSpan,
)
from workers.errors import BackendError
from workers.local_state import (
    create_exclusive,
    locked,
    process_alive,
    read_json,
    signal_group,
    started_after_boot,
    tail_lines,
    write_json,
)

# Runs `python -m serving` as its child, passes SIGTERM/SIGINT on, and records how the child ended (argv[1]), which
# only a parent can know: the worker that started it may be long gone.
WRAPPER = r"""
import json, os, signal, subprocess, sys, time
exit_path, child, asked = sys.argv[1], None, []
def forward(signum, frame):
    asked.append(signum)
    if child is not None:
        child.send_signal(signum)
signal.signal(signal.SIGTERM, forward)
signal.signal(signal.SIGINT, forward)
child = subprocess.Popen(sys.argv[2:])
if asked:
    child.send_signal(asked[0])
code = child.wait()
with open(exit_path + ".tmp", "w") as handle:
    json.dump({"exit_code": code, "ended_at": time.time()}, handle)
os.replace(exit_path + ".tmp", exit_path)
"""

START_TIMEOUT_SECONDS = 120.0
ROUTER_START_SECONDS = 15.0
PING_TIMEOUT_SECONDS = 1.0
# A stopped process has DRAIN_SECONDS (its own setting) to finish its connections, then this long, then SIGKILL.
KILL_AFTER_DRAIN_SECONDS = 10.0
DEFAULT_DRAIN_SECONDS = 15.0
# A process that found its port taken (another program got it first) is started again on another one, this often.
PORT_ATTEMPTS = 3
STDERR_TAIL_LINES = 12
STDERR_TAIL_BYTES = 16 * 1024
MAX_SOCKET_PATH = 100  # bytes; sun_path holds 108 with its terminator
_SERVICE_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?")
_DEPLOYMENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,39}")
_INHERITED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR")
# Set by the backend for each process; the revision's environment cannot override them.
_OWN_ENV = ("HOST", "PORT", "SERVICE_NAME", "REVISION", "SERVING_HANDOFF_SOCKET")
_CODE_ROOT = Path(serving.__file__).resolve().parents[1]
_EXIT_MEANINGS = {2: "a bad setting", 3: "the model cannot be served"}


def timeline(rollout: Mapping[str, Any], now: float) -> tuple[Phase, float, float | None]:
    """Where a rollout whose processes all passed /ping at `rollout["healthy_at"]` is at `now`, by the clock: its
    phase, the new revision's traffic percent and the seconds until the next change (None: waits for the caller)."""
    elapsed = max(0.0, now - float(rollout["healthy_at"]))
    bake = float(rollout["bake_seconds"])
    strategy = rollout["strategy"]
    if not rollout.get("previous") or strategy in ("all_at_once", "rolling"):
        if elapsed < bake:
            return "baking", 100.0, bake - elapsed
        return "paused", 100.0, None
    if strategy == "canary":
        if elapsed < bake:
            return "shifting", float(rollout["canary_percent"]), bake - elapsed
        return "paused", 100.0, None
    step = float(rollout["linear_step_percent"])
    interval = float(rollout["linear_interval_seconds"])
    steps = math.ceil(100.0 / step - 1e-9)
    full_at = (steps - 1) * interval
    if elapsed < full_at:
        done = math.floor(elapsed / interval) + 1
        return "shifting", min(100.0, done * step), done * interval - elapsed
    if elapsed < full_at + bake:
        return "baking", 100.0, full_at + bake - elapsed
    return "paused", 100.0, None


@dataclass
class _Call:
    """One call's view of a service, loaded under its lock and written back before the lock is let go."""

    directory: Path
    state: dict[str, Any]
    revisions: dict[str, dict[str, Any]] = field(default_factory=dict)
    dirty: set[str] = field(default_factory=set)

    def revision(self, name: str) -> dict[str, Any]:
        if name not in self.revisions:
            path = self.directory / "revisions" / name / "revision.json"
            if not _is_revision_name(name) or not path.is_file():
                raise DeploymentNotFound(f"service {self.state['name']} has no revision {name!r}")
            self.revisions[name] = read_json(path)
        return self.revisions[name]

    def changed(self, record: dict[str, Any]) -> None:
        self.dirty.add(record["name"])

    def revision_dir(self, name: str) -> Path:
        return self.directory / "revisions" / name

    def save(self) -> None:
        for name in sorted(self.dirty):
            write_json(self.revision_dir(name) / "revision.json", self.revisions[name], private=True)
        self.dirty.clear()
        write_json(self.directory / "service.json", self.state)


class LocalServingBackend:
    """Serves revisions of services on this machine; see the module docstring for the files and the timeline."""

    def __init__(
        self,
        root: Path,
        *,
        python: str | None = None,
        host: str = "127.0.0.1",
        start_timeout_seconds: float = START_TIMEOUT_SECONDS,
        kill_after_drain_seconds: float = KILL_AFTER_DRAIN_SECONDS,
    ) -> None:
        self.root = Path(root).resolve()
        self.python = python or sys.executable
        self.host = host
        self.start_timeout_seconds = start_timeout_seconds
        self.kill_after_drain_seconds = kill_after_drain_seconds

    # --- the ServingBackend interface ----------------------------------------------------------------------------

    def deploy(self, service: ServiceSpec, revision: RevisionSpec) -> Handle:
        _check_service(service)
        _check_revision(revision)
        if service.desired_count < 1:
            raise BackendError(
                f"cannot deploy {revision.deployment_id} to {service.name}: desired_count must be at least 1",
                permanent=True,
            )
        name = f"r-{revision.deployment_id}"
        environment = dict(revision.environment)
        if not revision.reuse:
            self._check_environment(service, revision, environment)  # said before anything is created
        with self._service(service, create=True) as call:
            path = call.revision_dir(name) / "revision.json"
            if path.is_file():
                record = call.revision(name)
            else:
                if revision.reuse:
                    environment = dict(call.revision(revision.reuse)["environment"])
                drain = self._check_environment(service, revision, environment)
                previous = str(call.state.get("serving", ""))
                record = self._new_revision(call, service, revision, name, environment, drain, previous)
                call.revision_dir(name).mkdir(parents=True, exist_ok=True)
                if not create_exclusive(path, record, private=True):
                    raise BackendError(
                        f"revision {name} of {service.name} is being created by another call", permanent=False
                    )
                call.revisions[name] = record
            rollout = record["rollout"]
            previous = str(rollout.get("previous", ""))
            state = call.state
            if rollout["phase"] == "starting" and name not in state["active"]:
                # New, or made by a deploy that was cut short before the service knew it: take it on now.
                unfinished = state.get("rollout", "")
                if unfinished and unfinished != name:
                    self._end_rollout(
                        call, call.revision(unfinished), "rolled_back", f"superseded by {name}: rolled back"
                    )
                state["rollout"] = name
                state["active"].append(name)
                # A first deploy has nothing else to serve: the router gates it on its own ping.
                state["weights"][name] = 0.0 if previous else 100.0
                write_json(call.directory / "service.json", state)  # before any process starts: none goes unknown
            unstarted = [p for p in record["processes"] if p.get("pid") is None]
            for process in unstarted:
                self._spawn(call, record, process)
            if unstarted:
                ports = ", ".join(f"{p['name']} on port {p['port']}" for p in record["processes"])
                _event(record, "processes-started", f"started {len(record['processes'])} serving process(es): {ports}")
                call.changed(record)
            return Handle(revision=name, previous_revision=previous)

    def progress(self, service: ServiceSpec, handle: Handle) -> RolloutStatus:
        with self._service(service) as call:
            record = call.revision(handle.revision)
            self._advance(call, record)
            return self._rollout_status(call, record)

    def promote(self, service: ServiceSpec, handle: Handle) -> RolloutStatus:
        with self._service(service) as call:
            record = call.revision(handle.revision)
            self._advance(call, record)
            rollout = record["rollout"]
            phase = rollout["phase"]
            if phase in ("failed", "rolled_back"):
                raise BackendError(
                    f"cannot promote {record['name']}: its rollout has {phase.replace('_', ' ')} "
                    f"({rollout.get('message', '')})",
                    permanent=True,
                )
            if phase == "starting":
                raise BackendError(
                    f"cannot promote {record['name']} yet: {self._starting_message(record)}", permanent=False
                )
            if phase != "complete":
                self._set_traffic(call, record, 100.0)
                previous = rollout.get("previous", "")
                call.state["weights"] = {record["name"]: 100.0}
                call.state["serving"] = record["name"]
                call.state["rollout"] = ""
                rollout.update(phase="complete", ended_at=time.time(), message="promoted")
                _event(record, "promoted", f"promoted: {record['name']} alone serves")
                if previous:
                    self._stop_revision(call, call.revision(previous))
                    _event(
                        record, "previous-stopped", f"previous revision {previous} stopped (draining its connections)"
                    )
                call.changed(record)
            return self._rollout_status(call, record)

    def roll_back(self, service: ServiceSpec, handle: Handle) -> RolloutStatus:
        with self._service(service) as call:
            record = call.revision(handle.revision)
            phase = record["rollout"]["phase"]
            if phase == "complete":
                raise BackendError(
                    f"cannot roll back {record['name']}: it was promoted and the previous revision stopped; deploy "
                    "the previous revision again (reuse it) instead",
                    permanent=True,
                )
            if phase not in FINAL_PHASES:
                self._end_rollout(call, record, "rolled_back", "rolled back")
            return self._rollout_status(call, record)

    def scale(self, service: ServiceSpec) -> None:
        """Bring the serving revision (during a rollout: the previous one; none before a first deploy is promoted)
        to desired_count processes, within the autoscaling bounds: more start behind the router, the
        extra ones drain; any that ended are started again. A rollout's new revision keeps the count it was
        deployed with."""
        _check_service(service)
        wanted = service.desired_count
        if service.autoscaling is not None:
            wanted = min(max(wanted, service.autoscaling.min_count), service.autoscaling.max_count)
        with self._service(service) as call:
            serving_name = call.state.get("serving") or ""
            if not serving_name:
                return
            record = call.revision(serving_name)
            self._observe(call, record)
            kept = _in_service(record)
            for process in kept[wanted:]:
                process["stop_requested_at"] = time.time()
            for process in kept[:wanted]:
                if process.get("exited"):  # scale is the explicit call to run `wanted`: even one that refused
                    self._spawn(call, record, process)
            index = max((int(p["index"]) for p in record["processes"]), default=-1) + 1
            for _ in range(wanted - len(kept)):
                process = self._new_process(call, record, index)
                record["processes"].append(process)
                self._spawn(call, record, process)
                index += 1
            record["count"] = wanted
            call.changed(record)

    def status(self, service: ServiceSpec) -> ServiceStatus:
        with self._service(service) as call:
            return self._status(call)

    def usage(self, service: ServiceSpec, *, since: datetime) -> list[ServingSpan]:
        """Every attempt of every process of every revision (stopped ones too) that ran at some moment since `since`
        (module docstring: when a process ended). Starts and stops nothing; notes which processes it saw running."""
        _check_service(service)
        if since.tzinfo is None:
            raise ValueError("usage(since=...) needs a timezone-aware datetime")
        directory = self.root / service.name
        if not (directory / "service.json").is_file():
            return []
        floor = since.timestamp()
        spans: list[ServingSpan] = []
        with locked(directory / "service.lock"):
            call = _Call(directory, read_json(directory / "service.json"))
            now = time.time()
            for path in sorted((directory / "revisions").glob("r-*/revision.json")):
                name = path.parent.name
                if not _is_revision_name(name):
                    continue
                record = call.revision(name)
                for process in record["processes"]:
                    if process.get("pid") is not None and process_alive(process):
                        process["seen_alive_at"] = now
                        call.changed(record)
                for attempt, started, ended in _attempts(call.revision_dir(name), record):
                    if ended is not None and ended < floor:
                        continue
                    spans.append(
                        ServingSpan(
                            revision=str(record["deployment_id"]),
                            process=attempt,
                            started_at=datetime.fromtimestamp(started, tz=UTC),
                            ended_at=None if ended is None else datetime.fromtimestamp(ended, tz=UTC),
                            cpu=int(record.get("cpu", RevisionSpec.cpu)),
                            memory=int(record.get("memory", RevisionSpec.memory)),
                        )
                    )
            for record in call.revisions.values():
                if record["name"] in call.dirty:
                    write_json(call.revision_dir(record["name"]) / "revision.json", record, private=True)
        spans.sort(key=lambda span: (span.started_at, span.process))
        return spans

    def _status(self, call: _Call) -> ServiceStatus:
        serving_name = self._serving_now(call)
        desired = running = 0
        if serving_name:
            record = call.revision(serving_name)
            desired = int(record["count"])
            running = sum(1 for p in record["processes"] if process_alive(p))  # draining ones too, as ECS counts
        return ServiceStatus(
            address=f"http://{self._ping_host()}:{call.state['port']}",
            serving_revision=serving_name,
            desired=desired,
            running=running,
        )

    # --- beyond the interface: bringing a service back -------------------------------------------------------------

    def resume(self, service: ServiceSpec, serving: Handle) -> ServiceStatus:
        """Bring back a stopped service (stop_service, or a machine that went down under it): its router on the
        port it always had, then `serving.revision`'s processes (its count of them) from the revision's recorded
        environment, which take all the traffic once each passes /ping. Waits for that, under the service's lock.

        A service already serving that revision is left as it is (its dead processes are started again, as any
        call does); one serving another revision, or a revision that never took all the traffic (a rollout that
        failed or was rolled back), is refused. A port another program holds now is said, naming it."""
        _check_service(service)
        if not (self.root / service.name / "service.json").is_file():
            raise DeploymentNotFound(f"no service {service.name!r} under {self.root}")
        with self._service(service) as call:
            state = call.state
            record = call.revision(serving.revision)
            name = record["name"]
            phase = record["rollout"]["phase"]
            if phase != "complete":
                raise BackendError(
                    f"cannot resume {service.name} on {name}: it never took all the traffic (its rollout is "
                    f"{phase.replace('_', ' ')}: {record['rollout'].get('message') or 'unfinished'})",
                    permanent=True,
                )
            if state.get("serving") and state["serving"] != name:
                raise BackendError(
                    f"cannot resume {service.name} on {name}: it serves {state['serving']}", permanent=True
                )
            self._send_router(call, {"op": "state"})  # the stable port first: nothing starts when it is taken
            if name not in state.get("active", []):
                state.setdefault("active", []).append(name)
            self._observe(call, record)
            wanted = int(record["count"])
            kept = [p for p in _in_service(record) if not p.get("exited")]
            # Its processes that ended (a crash, a reboot) first, then those the stop asked to end, in their order.
            dead = sorted(
                (p for p in record["processes"] if p not in kept and not process_alive(p)),
                key=lambda p: (bool(p.get("stop_requested_at")), int(p["index"])),
            )
            started = dead[: max(0, wanted - len(kept))]
            for process in started:
                _archive_attempt(call.revision_dir(name), process)  # while killed_at still says how it ended
                for key in ("stop_requested_at", "signalled_at", "killed_at"):
                    process.pop(key, None)
                self._spawn(call, record, process)
            index = max((int(p["index"]) for p in record["processes"]), default=-1) + 1
            for _ in range(wanted - len(kept) - len(started)):
                process = self._new_process(call, record, index)
                record["processes"].append(process)
                self._spawn(call, record, process)
                started.append(process)
                index += 1
            call.changed(record)
            if started:
                self._wait_resumed(call, record, started)
                resumes = int(state.get("resumes", 0)) + 1
                state["resumes"] = resumes
                _event(
                    record,
                    f"resumed-{resumes}",
                    f"resumed: {len(started)} process(es) started again on port(s) "
                    + ", ".join(str(p["port"]) for p in started),
                )
            if not state.get("rollout"):  # a rollout the machine stopped under is left to its own calls
                state["weights"] = {name: 100.0}
            state["serving"] = name
            state.pop("stopped_at", None)
            return self._status(call)  # the router gets the weights as the call ends (_ensure)

    def _wait_resumed(self, call: _Call, record: dict[str, Any], started: list[dict[str, Any]]) -> None:
        """Until every process started passes /ping; one that cannot start ends the resume (the others are stopped)."""
        deadline = time.monotonic() + self.start_timeout_seconds
        while True:
            self._observe(call, record)
            problem = ""
            for process in started:
                exited = process.get("exited")
                if not exited:
                    continue
                if exited["exit_code"] == 2 and "cannot listen" in exited["message"]:
                    if int(process["attempt"]) < PORT_ATTEMPTS:
                        self._spawn(call, record, process)  # another program took its port first: another port
                        continue
                problem = exited["message"]
                break
            if not problem and all(p.get("passed_ping_at") for p in started):
                return
            if not problem and time.monotonic() > deadline:
                problem = (
                    f"not every process passed /ping within {self.start_timeout_seconds:g}s: "
                    f"{self._starting_message(record)}"
                )
            if problem:
                now = time.time()
                for process in started:
                    process.setdefault("stop_requested_at", now)  # _ensure stops them
                call.changed(record)
                raise BackendError(
                    f"cannot resume {record['service']} on {record['name']}: {problem}",
                    permanent=any(_refused(p) for p in started),
                )
            time.sleep(0.1)

    # --- beyond the interface: ending services ---------------------------------------------------------------------

    def stop_service(self, name: str, *, timeout: float = 20.0) -> None:
        """Stop the service's router and every process it started (SIGTERM, SIGKILL after `timeout`); its files
        stay (logs, revisions to reuse), and resume() or a later deploy starts it again on the same port."""
        directory = self.root / name
        if not (directory / "service.json").is_file():
            return
        with locked(directory / "service.lock"):
            call = _Call(directory, read_json(directory / "service.json"))
            state = call.state
            leaders: list[dict[str, Any]] = []
            now = time.time()
            for revision_name in list(state.get("active", [])):
                record = call.revision(revision_name)
                if record["rollout"]["phase"] not in FINAL_PHASES:
                    record["rollout"].update(phase="rolled_back", ended_at=now, message="the service was stopped")
                    _event(record, "service-stopped", "the service was stopped")
                for process in record["processes"]:
                    process.setdefault("stop_requested_at", now)
                    if process_alive(process):
                        if not process.get("signalled_at"):  # a second SIGTERM could cut its own stop short
                            process["signalled_at"] = now
                            os.kill(int(process["pid"]), signal.SIGTERM)
                        leaders.append(process)
                call.changed(record)
            router = state.get("router")
            if router and process_alive(router):
                signal_group(int(router["pgid"]), signal.SIGTERM)
                leaders.append(router)
            deadline = time.monotonic() + timeout
            while any(process_alive(p) for p in leaders) and time.monotonic() < deadline:
                time.sleep(0.05)
            for process in leaders:
                if process_alive(process):
                    signal_group(int(process["pgid"]), signal.SIGKILL)
                    process["killed_at"] = time.time()  # its wrapper dies with it: no exit file says when
            sockets = Path(state.get("sockets") or directory / "sockets")
            for pid in _strays(directory, sockets):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    if os.getpgid(pid) == pid:
                        os.killpg(pid, signal.SIGKILL)
                    else:
                        os.kill(pid, signal.SIGKILL)
            if directory not in sockets.parents:
                shutil.rmtree(sockets, ignore_errors=True)  # a short directory under the temporary one
            state.update(router=None, weights={}, serving="", rollout="", active=[], stopped_at=now)
            call.save()

    def shutdown_all(self, *, timeout: float = 20.0) -> None:
        """stop_service for every service under root (the app's shutdown, the tests' cleanup)."""
        if not self.root.is_dir():
            return
        for directory in sorted(self.root.iterdir()):
            if (directory / "service.json").is_file():
                self.stop_service(directory.name, timeout=timeout)

    # --- one call ------------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _service(self, service: ServiceSpec, *, create: bool = False) -> Iterator[_Call]:
        """Lock the service, load it, let the caller change it, then re-ensure it (module docstring) and save."""
        _check_service(service)
        directory = self.root / service.name
        if not (directory / "service.json").is_file():
            if not create:
                raise DeploymentNotFound(f"no service {service.name!r} under {self.root}")
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        with locked(directory / "service.lock"):
            path = directory / "service.json"
            if path.is_file():
                state = read_json(path)
            else:
                state = {
                    "name": service.name,
                    "host": self.host,
                    "port": None,
                    "router": None,
                    "serving": "",
                    "rollout": "",
                    "weights": {},
                    "active": [],
                    "created_at": time.time(),
                    "sockets": str(_sockets_dir(directory)),
                }
                write_json(path, state)
            call = _Call(directory, state)
            for name in state.get("active", []):
                call.revision(name)
            try:
                yield call
            finally:
                # Whatever the caller managed to decide is applied and kept, even when it (or this) then raised.
                try:
                    self._ensure(call)
                finally:
                    call.save()

    def _ensure(self, call: _Call) -> None:
        now = time.time()
        for record in list(call.revisions.values()):
            for process in record["processes"]:
                signalled = process.get("signalled_at")
                if signalled and process_alive(process):
                    drain = float(record.get("drain_seconds", DEFAULT_DRAIN_SECONDS))
                    if now > float(signalled) + drain + self.kill_after_drain_seconds:
                        signal_group(int(process["pgid"]), signal.SIGKILL)
                        process["killed_at"] = now
                        _event(
                            record,
                            f"killed-{process['name']}-{process['attempt']}",
                            f"{process['name']} had not drained {drain + self.kill_after_drain_seconds:g}s on: killed",
                        )
                        call.changed(record)
        self._heal(call)
        self._apply_weights(call)
        # Only once the router no longer chooses them: stop what was asked to stop.
        for record in list(call.revisions.values()):
            for process in record["processes"]:
                if process.get("stop_requested_at") and not process.get("signalled_at"):
                    process["signalled_at"] = now
                    if process_alive(process):
                        os.kill(int(process["pid"]), signal.SIGTERM)  # the wrapper passes it on to the server
                    call.changed(record)
        active = call.state.get("active", [])
        for name in list(active):
            record = call.revisions[name]
            stopped = all(p.get("stop_requested_at") or p.get("exited") for p in record["processes"])
            if stopped and not any(process_alive(p) for p in record["processes"]):
                active.remove(name)

    def _heal(self, call: _Call) -> None:
        """Start again the serving revision's processes that died after serving (a crash, a reboot). Not one that
        never passed /ping since its last start, nor one that refused to start: starting it again would not help."""
        serving_name = call.state.get("serving") or ""
        if not serving_name or serving_name not in call.state.get("weights", {}):
            return
        record = call.revision(serving_name)
        self._observe(call, record)
        for process in _in_service(record):
            exited = process.get("exited")
            if not exited or _refused(process) or not process.get("passed_ping_at"):
                continue
            self._spawn(call, record, process)
            _event(
                record,
                f"restarted-{process['name']}-{process['attempt']}",
                f"{exited['message']}; started again on port {process['port']}",
            )

    def _apply_weights(self, call: _Call) -> None:
        """Send the router every process of the weighted revisions, each with its share of its revision's weight.
        A new revision's processes are there at 0 while they start, so the router pings them already; while a
        rollout is starting only those that passed /ping take a share (rolling)."""
        state = call.state
        weights = state.get("weights", {})
        router = state.get("router")
        if not weights and not state.get("active") and not (router and process_alive(router)):
            return  # nothing to route (a stopped service): no router to start
        entries = []
        for name, weight in weights.items():
            record = call.revision(name)
            rollout = record["rollout"]
            live = [p for p in _in_service(record) if not p.get("exited")]
            takers = live
            if rollout["healthy_at"] is None and rollout.get("previous") and rollout["phase"] not in FINAL_PHASES:
                takers = [p for p in live if p.get("passed_ping_at")]
            for process in live:
                share = float(weight) / len(takers) if process in takers else 0.0
                entries.append(
                    {
                        "name": process["name"],
                        "address": f"{self._ping_host()}:{process['port']}",
                        "handoff": process["handoff"],
                        "weight": share,
                    }
                )
        self._send_router(call, {"op": "set", "revisions": entries})

    # --- the router ----------------------------------------------------------------------------------------------

    def _send_router(self, call: _Call, message: dict[str, Any]) -> dict[str, Any]:
        state = call.state
        control_path = str(Path(state["sockets"]) / "router.sock")
        router = state.get("router")
        if router and process_alive(router):
            try:
                answer = control(control_path, message, timeout=5.0)
            except (OSError, ValueError):
                answer = None
            if answer is not None:
                if not answer.get("ok"):
                    raise BackendError(
                        f"the router of service {state['name']} refused {message['op']}: {answer.get('error')}",
                        permanent=True,
                    )
                return answer
            signal_group(int(router["pgid"]), signal.SIGKILL)  # alive but not answering: replace it
            deadline = time.monotonic() + 5.0
            while process_alive(router) and time.monotonic() < deadline:
                time.sleep(0.02)
        self._start_router(call)
        try:
            answer = control(control_path, message, timeout=5.0)
        except (OSError, ValueError) as exc:
            raise BackendError(
                f"the router of service {state['name']} stopped answering: {exc}", permanent=False
            ) from exc
        if not answer.get("ok"):
            raise BackendError(
                f"the router of service {state['name']} refused {message['op']}: {answer.get('error')}", permanent=True
            )
        return answer

    def _start_router(self, call: _Call) -> None:
        state = call.state
        sockets = Path(state["sockets"])
        _make_private_dir(sockets)
        control_path = sockets / "router.sock"
        fixed = state.get("port") is not None
        for attempt in range(PORT_ATTEMPTS):
            port = int(state["port"]) if fixed else _free_port(self.host)
            log_path = call.directory / "router.log"
            with open(log_path, "ab") as log:
                log.write(f"--- router starting on {self.host}:{port} at {time.ctime()}\n".encode())
                log.flush()
                try:
                    process = subprocess.Popen(
                        [
                            self.python,
                            "-m",
                            "serving.router",
                            "--host",
                            self.host,
                            "--port",
                            str(port),
                            "--control",
                            str(control_path),
                        ],
                        cwd=call.directory,
                        env=_base_env(),
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                        close_fds=True,
                    )
                except OSError as exc:
                    raise BackendError(f"cannot start {self.python}: {exc}", permanent=True) from exc
            _reap_later(process)
            deadline = time.monotonic() + ROUTER_START_SECONDS
            answered = False
            while not answered and process.poll() is None and time.monotonic() < deadline:
                with contextlib.suppress(OSError, ValueError):
                    answered = bool(control(str(control_path), {"op": "state"}, timeout=1.0).get("ok"))
                if not answered:
                    time.sleep(0.02)
            code = process.poll()
            if code is None and not answered:
                signal_group(process.pid, signal.SIGKILL)
                raise BackendError(
                    f"the router of service {state['name']} did not answer on {control_path} within "
                    f"{ROUTER_START_SECONDS:g}s; its log ends: " + " | ".join(tail_lines(log_path, 5, max_bytes=4096)),
                    permanent=False,
                )
            if code is None:
                restarts = int(state.get("router_starts", 0))
                state.update(
                    port=port,
                    router_starts=restarts + 1,
                    router={
                        "pid": process.pid,
                        "pgid": process.pid,
                        "started_at": time.time(),
                        "process_started_after_boot": started_after_boot(process.pid),
                    },
                )
                write_json(call.directory / "service.json", state)  # at once: a router must never go unrecorded
                if restarts and state.get("rollout"):
                    record = call.revision(state["rollout"])
                    _event(record, f"router-started-{restarts + 1}", f"the router was restarted on port {port}")
                    call.changed(record)
                return
            tail = "\n".join(tail_lines(log_path, 5, max_bytes=STDERR_TAIL_BYTES))
            if code == 2 and "cannot listen" in tail:
                if fixed:
                    # Maybe a router of ours that went unrecorded: end it and try once more, else say who is in the way.
                    strays = _strays(call.directory, sockets, routers_only=True)
                    for pid in strays:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, signal.SIGKILL)
                    if strays and attempt + 1 < PORT_ATTEMPTS:
                        time.sleep(0.2)
                        continue
                    raise BackendError(
                        f"cannot start the router of service {state['name']}: its port {self.host}:{port} is taken "
                        f"by another program (the service's address stays on that port; free it): {tail}",
                        permanent=False,
                    )
                continue  # a first start lost a race for a free port: pick another
            raise BackendError(
                f"the router of service {state['name']} exited with code {code}: {tail}", permanent=code == 2
            )
        raise BackendError(
            f"cannot start the router of service {state['name']}: no free port after {PORT_ATTEMPTS} attempts",
            permanent=False,
        )

    # --- revisions and processes ---------------------------------------------------------------------------------

    def _check_environment(self, service: ServiceSpec, revision: RevisionSpec, environment: dict[str, str]) -> float:
        """The settings as a serving process will read them (a bad one is said now, not after a start); returns
        the revision's drain time."""
        probe = {
            **environment,
            "HOST": self.host,
            "PORT": "0",
            "SERVICE_NAME": service.name,
            "REVISION": revision.deployment_id,
            "SERVING_HANDOFF_SOCKET": "/x.sock",
        }
        try:
            config = ServingConfig.from_env(probe)
        except ConfigError as exc:
            raise BackendError(
                f"cannot deploy {revision.deployment_id} to {service.name}: {exc}", permanent=True
            ) from None
        return config.drain_seconds

    def _new_revision(
        self,
        call: _Call,
        service: ServiceSpec,
        revision: RevisionSpec,
        name: str,
        environment: dict[str, str],
        drain: float,
        previous: str,
    ) -> dict[str, Any]:
        rollout = revision.rollout
        record: dict[str, Any] = {
            "name": name,
            "service": service.name,
            "deployment_id": revision.deployment_id,
            "environment": {k: v for k, v in environment.items() if k not in _OWN_ENV},
            "reused_from": revision.reuse,
            "created_at": time.time(),
            "count": service.desired_count,
            "cpu": revision.cpu,
            "memory": revision.memory,
            "drain_seconds": drain,
            "tags": {**service.tags, **revision.tags},
            "processes": [],
            "rollout": {
                "strategy": rollout.strategy,
                "bake_seconds": rollout.bake_minutes * 60.0,
                "canary_percent": rollout.canary_percent,
                "linear_step_percent": rollout.linear_step_percent,
                "linear_interval_seconds": rollout.linear_interval_minutes * 60.0,
                "previous": previous,
                "phase": "starting",
                "created_at": time.time(),
                "healthy_at": None,
                "traffic": 0.0,
                "ended_at": None,
                "message": "",
                "events": [],
            },
        }
        record["processes"] = [self._new_process(call, record, i) for i in range(service.desired_count)]
        return record

    def _new_process(self, call: _Call, record: dict[str, Any], index: int) -> dict[str, Any]:
        name = f"{record['name']}-{index}"
        return {
            "name": name,
            "index": index,
            "port": None,
            "attempt": 0,
            "handoff": str(_socket_path(Path(call.state["sockets"]), name)),
        }

    def _spawn(self, call: _Call, record: dict[str, Any], process: dict[str, Any]) -> None:
        """Start (or start again) one serving process of a revision, and record it at once."""
        directory = call.revision_dir(record["name"])
        index = process["index"]
        _archive_attempt(directory, process)  # before its exit file goes: it says when the last attempt ended
        exit_path = directory / f"{index}.exit.json"
        exit_path.unlink(missing_ok=True)
        _make_private_dir(Path(call.state["sockets"]))
        port = _free_port(self.host)
        env = _base_env()
        env.update(record["environment"])
        # Our code first (`-m serving`), then whatever the revision's environment adds (its hooks' packages).
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_CODE_ROOT), record["environment"].get("PYTHONPATH")]))
        env.update(
            HOST=self.host,
            PORT=str(port),
            SERVICE_NAME=record["service"],
            REVISION=record["deployment_id"],
            SERVING_HANDOFF_SOCKET=process["handoff"],
        )
        with open(directory / f"{index}.out", "ab") as out, open(directory / f"{index}.err", "ab") as err:
            try:
                child = subprocess.Popen(
                    [self.python, "-c", WRAPPER, str(exit_path), self.python, "-m", "serving"],
                    cwd=directory,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    start_new_session=True,
                    close_fds=True,
                )
            except OSError as exc:
                raise BackendError(f"cannot start {self.python}: {exc}", permanent=True) from exc
        _reap_later(child)
        process.update(
            port=port,
            pid=child.pid,
            pgid=child.pid,
            process_started_after_boot=started_after_boot(child.pid),
            started_at=time.time(),
            attempt=int(process.get("attempt", 0)) + 1,
            passed_ping_at=None,
            exited=None,
        )
        write_json(directory / "revision.json", record, private=True)

    def _stop_revision(self, call: _Call, record: dict[str, Any]) -> None:
        """Take the revision out of the router, then (in _ensure, after the router has the new weights) SIGTERM."""
        call.state.get("weights", {}).pop(record["name"], None)
        now = time.time()
        for process in record["processes"]:
            process.setdefault("stop_requested_at", now)
        call.changed(record)

    def _observe(self, call: _Call, record: dict[str, Any]) -> None:
        """Note which of the revision's processes ended (and why) and which passed /ping since the last call."""
        for process in _in_service(record):
            if process.get("exited"):
                continue
            exit_path = call.revision_dir(record["name"]) / f"{process['index']}.exit.json"
            if exit_path.is_file() or not process_alive(process):
                code = read_json(exit_path).get("exit_code") if exit_path.is_file() else None
                process["exited"] = {
                    "exit_code": code,
                    "at": time.time(),
                    "message": _exit_message(call.revision_dir(record["name"]), process, code),
                }
            else:
                process["seen_alive_at"] = time.time()
                if not process.get("passed_ping_at") and self._ping(int(process["port"])):
                    process["passed_ping_at"] = time.time()
                    _event(record, f"ping-{process['name']}-{process['attempt']}", f"{process['name']} passed /ping")
        call.changed(record)

    def _ping(self, port: int) -> bool:
        connection = http.client.HTTPConnection(self._ping_host(), port, timeout=PING_TIMEOUT_SECONDS)
        try:
            connection.request("GET", "/ping", headers={"Connection": "close"})
            answer = connection.getresponse()
            answer.read()
            return answer.status == 200
        except (OSError, http.client.HTTPException):
            return False
        finally:
            connection.close()

    def _ping_host(self) -> str:
        return "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host

    # --- the rollout -----------------------------------------------------------------------------------------------

    def _advance(self, call: _Call, record: dict[str, Any]) -> None:
        rollout = record["rollout"]
        if rollout["phase"] in FINAL_PHASES:
            return
        self._observe(call, record)
        now = time.time()
        for process in _in_service(record):
            exited = process.get("exited")
            if not exited:
                continue
            if (
                rollout["healthy_at"] is None
                and exited["exit_code"] == 2
                and "cannot listen" in exited["message"]
                and int(process["attempt"]) < PORT_ATTEMPTS
            ):
                self._spawn(call, record, process)  # another program took its port first: another port
                _event(
                    record,
                    f"respawned-{process['name']}-{process['attempt']}",
                    f"{process['name']} found its port taken; started again on port {process['port']}",
                )
                continue
            self._end_rollout(call, record, "failed", exited["message"])
            return
        if rollout["healthy_at"] is None:
            processes = _in_service(record)
            passed = [p for p in processes if p.get("passed_ping_at")]
            if len(passed) < len(processes):
                if now - float(rollout["created_at"]) > self.start_timeout_seconds:
                    self._end_rollout(
                        call,
                        record,
                        "failed",
                        f"not every process passed /ping within {self.start_timeout_seconds:g}s: "
                        f"{self._starting_message(record)}",
                    )
                elif rollout["strategy"] == "rolling" and rollout["previous"] and passed:
                    rollout["phase"] = "shifting"
                    self._set_traffic(call, record, 100.0 * len(passed) / len(processes))
                return
            rollout["healthy_at"] = now
            _event(record, "healthy", f"all {len(processes)} process(es) of {record['name']} passed /ping")
        phase, traffic, _ = timeline(rollout, now)
        self._set_traffic(call, record, traffic)
        if phase != rollout["phase"]:
            rollout["phase"] = phase
            if phase == "baking":
                _event(
                    record,
                    "baking",
                    f"baking with all traffic for {rollout['bake_seconds']:g}s"
                    + (f"; previous revision {rollout['previous']} still running" if rollout["previous"] else ""),
                )
            elif phase == "paused":
                _event(record, "paused", "the bake is over: waiting for promote or roll back")
        call.changed(record)

    def _set_traffic(self, call: _Call, record: dict[str, Any], traffic: float) -> None:
        rollout = record["rollout"]
        weights = call.state["weights"]
        weights[record["name"]] = traffic
        if rollout.get("previous"):
            weights[rollout["previous"]] = 100.0 - traffic
        if traffic != rollout.get("traffic") or not any(e[0] == f"traffic-{traffic:g}" for e in rollout["events"]):
            rollout["traffic"] = traffic
            _event(record, f"traffic-{traffic:g}", f"traffic {traffic:g}% to {record['name']}")
        call.changed(record)

    def _end_rollout(self, call: _Call, record: dict[str, Any], phase: Phase, message: str) -> None:
        """failed or rolled back: all traffic to the previous revision at once, the new one stopped."""
        rollout = record["rollout"]
        previous = rollout.get("previous", "")
        call.state["weights"] = {previous: 100.0} if previous else {}
        if call.state.get("rollout") == record["name"]:
            call.state["rollout"] = ""
        self._stop_revision(call, record)
        rollout.update(phase=phase, ended_at=time.time(), message=message, traffic=0.0)
        if phase == "failed":
            _event(record, "failed", f"failed: {message}")
        else:
            _event(record, "rolled-back", message)
        _event(
            record,
            "traffic-0",
            f"traffic 0% to {record['name']}; "
            + (f"all to {previous}" if previous else "no previous revision: the service serves nothing"),
        )
        _event(record, "stopped", f"{record['name']} stopped (draining its connections)")
        call.changed(record)

    def _starting_message(self, record: dict[str, Any]) -> str:
        processes = _in_service(record)
        waiting = [p["name"] for p in processes if not p.get("passed_ping_at")]
        return f"{len(waiting)} of {len(processes)} process(es) have not passed /ping yet ({', '.join(waiting)})"

    def _serving_now(self, call: _Call) -> str:
        """The revision with the largest share of traffic now (the established one on a tie)."""
        weights = call.state.get("weights", {})
        serving_name = call.state.get("serving") or ""
        if not weights:
            return ""
        best = max(weights.values())
        if best <= 0:
            return ""
        if weights.get(serving_name) == best:
            return str(serving_name)
        return str(next(name for name, weight in weights.items() if weight == best))

    def _rollout_status(self, call: _Call, record: dict[str, Any]) -> RolloutStatus:
        rollout = record["rollout"]
        phase: Phase = rollout["phase"]
        running = [p for p in record["processes"] if process_alive(p)]
        healthy = [p for p in running if p.get("passed_ping_at") and not p.get("stop_requested_at")]
        seconds: float | None = None
        message = rollout.get("message", "")
        if phase == "starting":
            message = self._starting_message(record)
        elif phase in ("shifting", "baking", "paused") and rollout.get("healthy_at") is not None:
            _, _, seconds = timeline(rollout, time.time())
            message = {
                "shifting": f"{rollout['traffic']:g}% of traffic on {record['name']}",
                "baking": f"baking with all traffic on {record['name']}",
                "paused": "the bake is over: waiting for promote or roll back",
            }[phase]
        elif phase == "shifting":
            message = f"{rollout['traffic']:g}% of traffic on {record['name']} (rolling: processes still starting)"
        address = next((f"http://{self._ping_host()}:{p['port']}" for p in healthy or running), "")
        return RolloutStatus(
            phase=phase,
            traffic_percent=float(rollout.get("traffic", 0.0)),
            desired=int(record["count"]),
            running=len(running),
            healthy=len(healthy),
            message=message,
            seconds_to_next_step=seconds,
            events=tuple((str(e[0]), float(e[1]), str(e[2])) for e in rollout["events"]),
            revision_address=address,
        )


# --- helpers -------------------------------------------------------------------------------------------------------


def _check_service(service: ServiceSpec) -> None:
    if not _SERVICE_NAME.fullmatch(service.name):
        raise BackendError(
            f"service name {service.name!r} must be 1 to 40 lowercase letters, digits and hyphens, not starting or "
            "ending with a hyphen",
            permanent=True,
        )
    if service.desired_count < 0 or service.desired_count > 64:
        raise BackendError(
            f"desired_count of {service.name} must be between 0 and 64, not {service.desired_count}", permanent=True
        )


def _check_revision(revision: RevisionSpec) -> None:
    problems = []
    if not _DEPLOYMENT_ID.fullmatch(revision.deployment_id):
        problems.append(f"deployment_id {revision.deployment_id!r} must be 1 to 40 letters, digits, '.', '_' or '-'")
    if revision.reuse and not _is_revision_name(revision.reuse):
        problems.append(f"reuse {revision.reuse!r} must name a local revision (r-<deployment id>)")
    for name, value in (("cpu", revision.cpu), ("memory", revision.memory)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            problems.append(f"{name} must be a whole number above 0 (the Fargate size it stands for), not {value!r}")
    rollout: Rollout = revision.rollout
    if rollout.strategy not in ("rolling", "all_at_once", "canary", "linear"):
        problems.append(f"rollout.strategy must be rolling, all_at_once, canary or linear, not {rollout.strategy!r}")
    if not (math.isfinite(rollout.bake_minutes) and rollout.bake_minutes >= 0):
        problems.append(f"rollout.bake_minutes must be a number of minutes >= 0, not {rollout.bake_minutes!r}")
    if rollout.strategy == "canary" and not 0 < rollout.canary_percent < 100:
        problems.append(f"rollout.canary_percent must be above 0 and below 100, not {rollout.canary_percent!r}")
    if rollout.strategy == "linear":
        if not 0 < rollout.linear_step_percent <= 100:
            problems.append(
                f"rollout.linear_step_percent must be above 0 and at most 100, not {rollout.linear_step_percent!r}"
            )
        if not (math.isfinite(rollout.linear_interval_minutes) and rollout.linear_interval_minutes > 0):
            problems.append(f"rollout.linear_interval_minutes must be above 0, not {rollout.linear_interval_minutes!r}")
    if problems:
        raise BackendError(f"cannot deploy {revision.deployment_id!r}: " + "; ".join(problems), permanent=True)


def _is_revision_name(name: str) -> bool:
    return name.startswith("r-") and bool(_DEPLOYMENT_ID.fullmatch(name[2:]))


def _in_service(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The revision's processes that were not asked to stop."""
    return [p for p in record["processes"] if not p.get("stop_requested_at")]


def _refused(process: dict[str, Any]) -> bool:
    """Did the process refuse to start (a bad setting, a model it cannot serve)? Starting it again would not help."""
    exited = process.get("exited") or {}
    code = exited.get("exit_code")
    return code == 3 or (code == 2 and "cannot listen" not in exited.get("message", ""))


def _ended_at(directory: Path, process: dict[str, Any]) -> float:
    """When the current attempt of a process that no longer runs ended (see the module docstring)."""
    started = float(process["started_at"])
    exit_path = directory / f"{process['index']}.exit.json"
    with contextlib.suppress(OSError, ValueError, TypeError):
        ended = read_json(exit_path).get("ended_at")
        if ended is not None:
            return max(started, float(ended))
    if process.get("killed_at"):
        return max(started, float(process["killed_at"]))
    evidence = [started, float(process.get("seen_alive_at") or started)]
    for suffix in ("out", "err"):
        with contextlib.suppress(OSError):
            evidence.append((directory / f"{process['index']}.{suffix}").stat().st_mtime)
    last_alive = max(evidence)
    gone = (process.get("exited") or {}).get("at")
    if gone is not None:
        last_alive = min(last_alive, float(gone))
    return max(started, last_alive)


def _archive_attempt(directory: Path, process: dict[str, Any]) -> None:
    """Keep the span of a process's attempt that ended before it is started again (once per attempt)."""
    if process.get("pid") is None or process.get("started_at") is None:
        return
    history = process.setdefault("history", [])
    attempt = int(process.get("attempt", 0))
    if any(int(past["attempt"]) == attempt for past in history):
        return
    history.append(
        {
            "attempt": attempt,
            "pid": process["pid"],
            "started_at": float(process["started_at"]),
            "ended_at": _ended_at(directory, process),
        }
    )


def _attempts(directory: Path, record: dict[str, Any]) -> list[tuple[str, float, float | None]]:
    """(process and attempt, start, end or None while it runs) for every start of the revision's processes."""
    found: list[tuple[str, float, float | None]] = []
    for process in record["processes"]:
        for past in process.get("history", []):
            found.append((f"{process['name']}#{past['attempt']}", float(past["started_at"]), float(past["ended_at"])))
        if process.get("pid") is None or process.get("started_at") is None:
            continue
        current = f"{process['name']}#{process.get('attempt', 0)}"
        if any(name == current for name, _, _ in found):
            continue  # archived already by a start that did not get as far as recording the new attempt
        # Its exit file is written just before its wrapper exits, and belongs to this attempt (a start removes it).
        finished = (directory / f"{process['index']}.exit.json").is_file() or not process_alive(process)
        ended = _ended_at(directory, process) if finished else None
        found.append((current, float(process["started_at"]), ended))
    return found


def _event(record: dict[str, Any], event_id: str, text: str) -> None:
    events = record["rollout"]["events"]
    if not any(e[0] == event_id for e in events):
        events.append([event_id, time.time(), text])


def _exit_message(directory: Path, process: dict[str, Any], code: int | None) -> str:
    if code is None:
        cause = f"{process['name']} disappeared (killed, or the machine restarted?)"
    elif code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        cause = f"{process['name']} was killed by {name}"
    else:
        meaning = _EXIT_MEANINGS.get(code)
        cause = f"{process['name']} exited with code {code}" + (f" ({meaning})" if meaning else "")
    tail = tail_lines(directory / f"{process['index']}.err", STDERR_TAIL_LINES, max_bytes=STDERR_TAIL_BYTES)
    return f"{cause}; its stderr ends:\n" + "\n".join(tail) if tail else cause


def _base_env() -> dict[str, str]:
    env = {name: os.environ[name] for name in _INHERITED_ENV if name in os.environ}
    env.update({name: value for name, value in os.environ.items() if name.startswith("AWS_")})
    env.update(PYTHONPATH=str(_CODE_ROOT), PYTHONUNBUFFERED="1", PYTHONDONTWRITEBYTECODE="1")
    return env


def _free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _sockets_dir(service_dir: Path) -> Path:
    """Where the service's Unix sockets go: its own directory when the paths fit, else a short private one."""
    longest = len("r-") + 40 + len("-64.sock") + 1  # the longest socket file name, with its slash
    own = service_dir / "sockets"
    if len(str(own).encode()) + longest <= MAX_SOCKET_PATH:
        return own
    digest = hashlib.sha256(str(service_dir).encode()).hexdigest()[:16]
    for base in (tempfile.gettempdir(), "/tmp"):
        short = Path(base) / f"cp-serving-{digest}"
        if len(str(short).encode()) + longest <= MAX_SOCKET_PATH:
            return short
    raise BackendError(f"no directory short enough for the Unix sockets of {service_dir}", permanent=True)


def _socket_path(directory: Path, name: str) -> Path:
    return directory / f"{name}.sock"


def _make_private_dir(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    owner = directory.stat().st_uid
    if owner != os.getuid():
        raise BackendError(f"the sockets directory {directory} belongs to another user (uid {owner})", permanent=True)


def _reap_later(process: subprocess.Popen[bytes]) -> None:
    # So a long-lived worker does not keep its exited children as zombies.
    threading.Thread(target=process.wait, name=f"reap-{process.pid}", daemon=True).start()


def _strays(service_dir: Path, sockets: Path, *, routers_only: bool = False) -> list[int]:
    """Processes of this service that its files may not know (a worker killed between a start and its record):
    routers on its control socket, serving wrappers writing under its directory, servers on its hand-off sockets."""
    found = []
    own = {os.getpid(), *(p.pid for p in psutil.Process().parents())}
    control_path = str(sockets / "router.sock")
    for process in psutil.process_iter(["pid", "cmdline"]):
        try:
            pid = process.info["pid"]
            argv = process.info["cmdline"] or []
            if pid in own:
                continue
            if argv[1:3] == ["-m", "serving.router"] and control_path in argv:
                found.append(pid)
            elif routers_only:
                continue
            elif (
                argv[1:2] == ["-c"]
                and argv[2:3] == [WRAPPER]
                and len(argv) > 3
                and argv[3].startswith(str(service_dir) + os.sep)
            ):
                found.append(pid)
            elif argv[1:3] == ["-m", "serving"] and process.environ().get("SERVING_HANDOFF_SOCKET", "").startswith(
                str(sockets) + os.sep
            ):
                found.append(pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found
