"""`python -m serving.router`: a service's stable local address in front of its revisions (the local serving backend).

The router accepts TCP connections on the stable address and passes each accepted socket to one revision's serving
process over a Unix socket (SCM_RIGHTS; the revision runs with SERVING_HANDOFF_SOCKET, see serving/http.py), which
then serves that connection itself. After the accept the router is off the request path: it reads no byte of any
request. Chosen by measurement against a reverse proxy on the same stack (docs/benchmarks/serving.md, "Router").

- **Split**: each new connection goes to a revision drawn by weight among the healthy ones, so a canary's share is
  its share of connections. A keep-alive client stays with its revision until the revision lets it go: each
  revision answers a connection older than SERVING_HANDOFF_RECHOOSE_SECONDS (30 s) with `connection: close`, so
  long-lived clients are chosen again by the current weights.
- **Health gating**: every revision's `GET /ping` (on its own address) is polled; a revision gets connections only
  after a ping answered 200, and none while its last ping failed.
- **Drain**: set the revision's weight to 0 (or leave it out), then stop its process (SIGTERM). Stopping behind the
  router answers each open connection once more with `connection: close`, so its client reconnects through the
  router to the revisions chosen now; the process exits once its connections are gone.
- **No revision healthy**: new connections wait up to `--hold-seconds` for one, then get a 503.

Control: a Unix socket (`--control`) taking one JSON object per line and answering one per line:

    {"op": "set", "revisions": [{"name": "r2", "address": "127.0.0.1:8081", "handoff": "/run/r2.sock",
                                 "weight": 10}, ...]}
    {"op": "state"}

Both answer `{"ok": true, "state": {...}}` (per revision: weight, healthy, connections passed, last ping) or
`{"ok": false, "error": "..."}` naming the field. `control(path, message)` is the client.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import signal
import socket
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("serving.router")

PING_INTERVAL_SECONDS = 0.25
PING_TIMEOUT_SECONDS = 1.0
ACCEPT_BATCH = 64


def _unavailable() -> bytes:
    body = b'{"error":"no revision of this service is ready to serve"}'
    return (
        b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
        b"connection: close\r\n\r\n%s" % (len(body), body)
    )


class ControlError(ValueError):
    """A control message the router refuses; says which field and what was expected."""


@dataclass
class Revision:
    name: str
    host: str
    port: int
    handoff: str
    weight: float
    healthy: bool = False
    last_ping: str = "not yet pinged"
    passed: int = 0  # connections passed to it
    failed_passes: int = 0
    channel: socket.socket | None = None
    backlog: deque[socket.socket] = field(default_factory=deque)  # waiting for the channel to take them
    pinger: asyncio.Task[None] | None = None

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "address": f"{self.host}:{self.port}",
            "handoff": self.handoff,
            "weight": self.weight,
            "healthy": self.healthy,
            "last_ping": self.last_ping,
            "connections_passed": self.passed,
            "failed_passes": self.failed_passes,
        }


def parse_revisions(value: Any) -> list[Revision]:
    if not isinstance(value, list):
        raise ControlError("revisions must be a list of {name, address, handoff, weight}")
    revisions: list[Revision] = []
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise ControlError(f"revisions[{i}] must be an object with name, address, handoff, weight")
        name = item.get("name")
        if not isinstance(name, str) or not name:
            raise ControlError(f"revisions[{i}].name must be a non-empty string")
        if any(r.name == name for r in revisions):
            raise ControlError(f"revisions[{i}].name {name!r} appears twice")
        address = item.get("address")
        host, _, port = address.rpartition(":") if isinstance(address, str) else ("", "", "")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ControlError(f"revisions[{i}].address must be host:port, not {address!r}")
        handoff = item.get("handoff")
        if not isinstance(handoff, str) or not handoff.startswith("/"):
            raise ControlError(f"revisions[{i}].handoff must be the absolute path of its SERVING_HANDOFF_SOCKET")
        weight = item.get("weight")
        if isinstance(weight, bool) or not isinstance(weight, int | float) or weight < 0:
            raise ControlError(f"revisions[{i}].weight must be a number ≥ 0, not {weight!r}")
        revisions.append(Revision(name, host, int(port), handoff, float(weight)))
    return revisions


class Router:
    def __init__(self, *, host: str, port: int, control_path: str, hold_seconds: float = 5.0) -> None:
        self.host = host
        self.port = port
        self.control_path = control_path
        self.hold_seconds = hold_seconds
        self.revisions: dict[str, Revision] = {}
        self.accepted = 0
        self.unavailable = 0  # connections answered 503 after waiting hold_seconds
        self.held: deque[tuple[float, socket.socket]] = deque()  # waiting for a healthy revision
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listener: socket.socket | None = None
        self._stopped: asyncio.Event | None = None

    # -- running ------------------------------------------------------------------------------------------------

    async def serve(self, *, on_ready: Any = None) -> None:
        self._loop = loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        listener = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, self.port))
        listener.listen(2048)
        listener.setblocking(False)
        self._listener = listener
        self.port = listener.getsockname()[1]
        loop.add_reader(listener.fileno(), self._accept)
        try:
            os.unlink(self.control_path)
        except FileNotFoundError:
            pass
        control = await asyncio.start_unix_server(self._control, self.control_path)
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, self.stop)
            except (NotImplementedError, RuntimeError):
                pass
        loop.call_later(0.1, self._expire_held)
        if on_ready is not None:
            on_ready(self)
        await self._stopped.wait()
        control.close()
        loop.remove_reader(listener.fileno())
        listener.close()
        for revision in self.revisions.values():
            self._forget(revision)
        while self.held:
            self.held.popleft()[1].close()
        try:
            os.unlink(self.control_path)
        except FileNotFoundError:
            pass

    def stop(self) -> None:
        if self._stopped is not None:
            self._stopped.set()

    # -- the accept path ----------------------------------------------------------------------------------------

    def _accept(self) -> None:
        assert self._listener is not None
        for _ in range(ACCEPT_BATCH):
            try:
                client, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. out of file descriptors: try again on the next readiness
                log.warning("accept failed: %s", exc)
                return
            self.accepted += 1
            if self.held:
                self._release_held()
            if self.held or not self._pass(client):
                self.held.append((time.monotonic() + self.hold_seconds, client))

    def _choose(self) -> Revision | None:
        candidates = [r for r in self.revisions.values() if r.healthy and r.weight > 0 and r.channel is not None]
        if not candidates:
            return None
        if len(candidates) == 1:
            return candidates[0]
        pick = random.random() * sum(r.weight for r in candidates)
        for revision in candidates:
            pick -= revision.weight
            if pick < 0:
                return revision
        return candidates[-1]

    def _pass(self, client: socket.socket) -> bool:
        """Hand the client to a chosen revision; False when none can take it now."""
        while True:
            revision = self._choose()
            if revision is None:
                return False
            if revision.backlog:
                revision.backlog.append(client)
                revision.passed += 1
                return True
            channel = revision.channel
            assert channel is not None and self._loop is not None  # _choose takes only revisions with a channel
            try:
                socket.send_fds(channel, [b"c"], [client.fileno()])
            except BlockingIOError:  # its process is not reading fast enough: queue, in order
                revision.backlog.append(client)
                self._loop.add_writer(channel.fileno(), self._flush, revision)
                revision.passed += 1
                return True
            except OSError as exc:  # its process is gone: stop choosing it until a ping says it is back
                revision.failed_passes += 1
                self._lost(revision, f"passing a connection failed: {exc}")
                continue
            revision.passed += 1
            client.close()  # the revision holds its own descriptor now
            return True

    def _flush(self, revision: Revision) -> None:
        assert self._loop is not None and revision.channel is not None
        while revision.backlog:
            client = revision.backlog[0]
            try:
                socket.send_fds(revision.channel, [b"c"], [client.fileno()])
            except BlockingIOError:
                return
            except OSError as exc:
                revision.failed_passes += 1
                self._lost(revision, f"passing a connection failed: {exc}")
                return
            revision.backlog.popleft()
            client.close()
        self._loop.remove_writer(revision.channel.fileno())

    def _lost(self, revision: Revision, why: str) -> None:
        revision.healthy = False
        revision.last_ping = why
        pending = list(revision.backlog)
        revision.backlog.clear()
        self._close_channel(revision)
        revision.passed -= len(pending)
        for client in pending:
            if not self._pass(client):
                self.held.append((time.monotonic() + self.hold_seconds, client))

    def _release_held(self) -> None:
        while self.held:
            _, client = self.held[0]
            if not self._pass(client):
                return
            self.held.popleft()

    def _expire_held(self) -> None:
        assert self._loop is not None
        self._release_held()
        now = time.monotonic()
        while self.held and self.held[0][0] <= now:
            _, client = self.held.popleft()
            self.unavailable += 1
            try:
                client.send(_unavailable())
            except OSError:
                pass
            client.close()
        if not (self._stopped and self._stopped.is_set()):
            self._loop.call_later(0.1, self._expire_held)

    # -- revisions ----------------------------------------------------------------------------------------------

    def set_revisions(self, revisions: list[Revision]) -> None:
        """Take the new set at once: connections accepted from now on go by the new weights. A revision left out
        is forgotten (its process is stopped by whoever started it); one kept keeps its health and counters."""
        assert self._loop is not None
        wanted = {r.name: r for r in revisions}
        for name in list(self.revisions):
            old = self.revisions[name]
            new = wanted.get(name)
            if new is None or (new.host, new.port, new.handoff) != (old.host, old.port, old.handoff):
                self._forget(self.revisions.pop(name))
        for name, new in wanted.items():
            if name in self.revisions:
                self.revisions[name].weight = new.weight
            else:
                self.revisions[name] = new
                new.pinger = self._loop.create_task(self._ping_forever(new))
        self._release_held()

    def _forget(self, revision: Revision) -> None:
        if revision.pinger is not None:
            revision.pinger.cancel()
        if revision.backlog and revision.channel is not None:
            # Already promised to it: hand them over blocking rather than drop them (a few descriptors at most).
            revision.channel.setblocking(True)
            try:
                while revision.backlog:
                    socket.send_fds(revision.channel, [b"c"], [revision.backlog[0].fileno()])
                    revision.backlog.popleft().close()
            except OSError:
                pass
        for client in revision.backlog:
            client.close()
        revision.backlog.clear()
        self._close_channel(revision)

    def _close_channel(self, revision: Revision) -> None:
        if revision.channel is not None:
            assert self._loop is not None
            self._loop.remove_writer(revision.channel.fileno())
            revision.channel.close()
            revision.channel = None

    async def _ping_forever(self, revision: Revision) -> None:
        while True:
            ok, what = await ping(revision.host, revision.port)
            revision.last_ping = what
            if ok and revision.channel is None:
                ok, what = self._connect(revision)
                if not ok:
                    revision.last_ping = what
            was = revision.healthy
            revision.healthy = ok
            if ok and not was:
                log.info("revision %s is healthy", revision.name)
                self._release_held()
            elif was and not ok:
                log.warning("revision %s is unhealthy: %s", revision.name, what)
            await asyncio.sleep(PING_INTERVAL_SECONDS)

    def _connect(self, revision: Revision) -> tuple[bool, str]:
        channel = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            channel.connect(revision.handoff)
        except OSError as exc:
            channel.close()
            return False, f"cannot reach its hand-off socket {revision.handoff}: {exc.strerror or exc}"
        channel.setblocking(False)
        revision.channel = channel
        return True, "200"

    def state(self) -> dict[str, Any]:
        return {
            "address": f"{self.host}:{self.port}",
            "accepted": self.accepted,
            "held": len(self.held),
            "unavailable": self.unavailable,
            "revisions": [r.describe() for r in self.revisions.values()],
        }

    # -- control ------------------------------------------------------------------------------------------------

    async def _control(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                try:
                    answer = self._command(json.loads(line))
                except (ValueError, ControlError) as exc:
                    answer = {"ok": False, "error": str(exc)}
                writer.write(json.dumps(answer).encode() + b"\n")
                await writer.drain()
        finally:
            writer.close()

    def _command(self, message: Any) -> dict[str, Any]:
        if not isinstance(message, dict):
            raise ControlError("a control message is a JSON object with an op")
        op = message.get("op")
        if op == "set":
            self.set_revisions(parse_revisions(message.get("revisions")))
        elif op != "state":
            raise ControlError(f"op must be 'set' or 'state', not {op!r}")
        return {"ok": True, "state": self.state()}


async def ping(host: str, port: int) -> tuple[bool, str]:
    """GET /ping on a fresh connection: (answered 200, what happened)."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), PING_TIMEOUT_SECONDS)
    except (TimeoutError, OSError) as exc:
        return False, f"cannot connect: {exc.__class__.__name__}"
    try:
        writer.write(b"GET /ping HTTP/1.1\r\nhost: router\r\nconnection: close\r\n\r\n")
        status_line = await asyncio.wait_for(reader.readline(), PING_TIMEOUT_SECONDS)
        parts = status_line.split()
        status = parts[1].decode() if len(parts) > 1 else "no answer"
        return status == "200", status
    except (TimeoutError, OSError) as exc:
        return False, f"no answer: {exc.__class__.__name__}"
    finally:
        writer.close()


def control(path: str, message: dict[str, Any], *, timeout: float = 5.0) -> dict[str, Any]:
    """Send one control message to a router and return its answer (the deployment code's client)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(json.dumps(message).encode() + b"\n")
        answer = b""
        while not answer.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"the router at {path} closed the control connection without answering")
            answer += chunk
    result: dict[str, Any] = json.loads(answer)
    return result


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="router %(levelname)s %(message)s")
    parser = argparse.ArgumentParser(prog="python -m serving.router", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="the stable address's host (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="the stable address's port (default: any free one)")
    parser.add_argument("--control", required=True, help="the control Unix socket's path")
    parser.add_argument("--hold-seconds", type=float, default=5.0,
                        help="how long a connection waits for a healthy revision before a 503 (default 5)")
    args = parser.parse_args(argv)
    router = Router(host=args.host, port=args.port, control_path=args.control, hold_seconds=args.hold_seconds)

    def ready(router: Router) -> None:
        log.info("ready on http://%s:%d, control %s", router.host, router.port, router.control_path)

    try:
        try:
            import uvloop

            uvloop.run(router.serve(on_ready=ready))
        except ImportError:
            asyncio.run(router.serve(on_ready=ready))
    except OSError as exc:
        print(f"router: refusing to start: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}",
              file=sys.stderr, flush=True)
        return 2
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
