"""`python -m controlplane.web`: the portal's web process. One address; people's pages and scripts' API calls are
served by gunicorn pools of their own, so a person's page never waits behind the API.

Why (docs/benchmarks/load.md): with one pool, 50 API clients and 10 metrics streams put every page in the same
queue and the same interpreters as the API calls, and 14 to 35 of 36 pages missed their goal. Two pools, the API's
at a lower CPU priority, keep the pages' time under that load close to their idle time; the API gets every cycle
the pages leave.

- **One listening address** (`--bind`, or GUNICORN_BIND, default 0.0.0.0:8000), read by this process.
- **Two gunicorn masters** started from docker/gunicorn.conf.py, each on a loopback socket this process made and
  hands over (`--bind fd://N`, so no port is chosen twice): `pages` (WEB_CONCURRENCY workers) for everything but
  `/api/`, and `api` (API_CONCURRENCY workers, default 2) for `/api/`, which includes the serving runtime's
  metrics ingest. The api pool runs at nice API_NICE (default 10; 0 for the same priority): when the CPU is short,
  pages go first. Both pools have GUNICORN_THREADS threads per worker and the file's timeouts.
- **Per connection**: read up to the end of its first request line (waiting at most the read timeout), choose the
  pool by that request's path, then pass bytes both ways untouched until either side closes. A kept-alive
  connection stays with its pool (a browser's connection is a page connection; a script's is an API one); whichever
  pool serves a request serves it completely, so this is a matter of priority, never of correctness.
  Nothing is parsed beyond the request line: headers, bodies and uploads stream through (gunicorn's limits and
  timeouts apply as before). Django sees the connection as coming from 127.0.0.1 (no X-Forwarded-For is added;
  gunicorn trusts no forwarded header from it).
- **Exits** when either master exits (with its status, after stopping the other: a supervisor or the container
  restarts the whole), and on SIGTERM or SIGINT stops accepting, lets both masters finish what they are serving
  (gunicorn's graceful stop) and exits 0; SIGQUIT stops both at once. The masters die with this process
  (PR_SET_PDEATHSIG).
- **Other signals** do what they do to one gunicorn, to both pools: SIGHUP reloads (new workers, the old ones finish
  gracefully), SIGUSR1 reopens the log files. SIGTTIN/SIGTTOU (one worker more or less) and SIGUSR2 (gunicorn's
  binary upgrade, which cannot take over a socket this process made) are refused with a log line: a pool's size is
  WEB_CONCURRENCY / API_CONCURRENCY, or send SIGTTIN to that pool's master. None of them stops the web process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import logging
import os
import runpy
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("controlplane.web")

GUNICORN_CONFIG = Path(__file__).resolve().parents[1] / "docker" / "gunicorn.conf.py"
API_PREFIX = b"/api/"
FIRST_LINE_LIMIT = 8192  # longer than gunicorn's request-line limit (4094): gunicorn answers such a request 400
CHUNK = 256 * 1024
PR_SET_PDEATHSIG = 1
FORWARDED_SIGNALS = (signal.SIGHUP, signal.SIGUSR1)
REFUSED_SIGNALS = (signal.SIGTTIN, signal.SIGTTOU, signal.SIGUSR2)

# libc is loaded here, once: loading a library in the child between fork and exec could wait forever on a lock
# another thread of this process held at the fork.
try:
    _PRCTL: Any = ctypes.CDLL(None, use_errno=True).prctl  # the symbol too: looking it up takes the loader's lock
except (OSError, AttributeError):  # pragma: no cover - not Linux: the masters outlive a killed front
    _PRCTL = None


@dataclass(frozen=True)
class Pool:
    name: str
    workers: int
    threads: int
    nice: int


def _env_int(name: str, default: int, minimum: int, maximum: int | None = None) -> int:
    raw = os.environ.get(name, "").strip() or str(default)
    try:
        value = int(raw)
    except ValueError:
        value = minimum - 1
    if value < minimum or (maximum is not None and value > maximum):
        expected = f"a whole number from {minimum} to {maximum}" if maximum is not None else f"at least {minimum}"
        raise SystemExit(f"{name}={raw!r} is invalid: expected {expected}")
    return value


def gunicorn_settings() -> dict[str, Any]:
    """docker/gunicorn.conf.py's values, as gunicorn reads them (the environment overrides included)."""
    return runpy.run_path(str(GUNICORN_CONFIG))


def pools(config: dict[str, Any] | None = None) -> list[Pool]:
    config = config or gunicorn_settings()
    return [
        Pool("pages", workers=config["workers"], threads=config["threads"], nice=0),
        Pool(
            "api",
            workers=_env_int("API_CONCURRENCY", 2, 1),
            threads=config["threads"],
            nice=_env_int("API_NICE", 10, 0, 19),
        ),
    ]


def request_line(head: bytes) -> bytes | None:
    """The first request line in what a connection sent so far, or None while it is not whole. One empty line before
    it is skipped, as RFC 9112 (2.2) asks of a server and as gunicorn does (which answers more of them 400)."""
    head = head.removeprefix(b"\r\n")
    line, newline, _ = head.partition(b"\n")
    return line.rstrip(b"\r") if newline else None


def choose_pool(first_line: bytes) -> str:
    """`GET /api/v1/runs/ HTTP/1.1` → "api"; every other request line (garbage included) → "pages"."""
    parts = first_line.split(b" ", 2)
    target = parts[1] if len(parts) > 1 else b""
    if target.startswith((b"http://", b"https://")):  # the absolute form: the path starts after the authority
        target = b"/" + target.split(b"/", 3)[-1] if target.count(b"/") >= 3 else b"/"
    return "api" if target.startswith(API_PREFIX) else "pages"


def _unavailable(pool: str) -> bytes:
    message = "the portal is restarting; try again in a few seconds"
    if pool == "api":
        body = json.dumps({"error": {"status": 503, "code": "unavailable", "message": message}}).encode()
        kind = b"application/json"
    else:
        body = f"<!doctype html><title>Unavailable</title><p>{message.capitalize()}.</p>".encode()
        kind = b"text/html; charset=utf-8"
    return (
        b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: %s\r\ncontent-length: %d\r\nretry-after: 5\r\n"
        b"connection: close\r\n\r\n%s" % (kind, len(body), body)
    )


def _child_setup(nice: int) -> Callable[[], None]:
    """In a master, between fork and exec: SIGTERM when the web process dies, however it dies; its priority; and the
    signals this process passes on or refuses ignored until gunicorn sets its own handlers, seconds later (after
    loading Django): by default each of them would end the master, a HUP sent while it boots would end the pool."""

    def setup() -> None:
        if _PRCTL is not None:
            _PRCTL(PR_SET_PDEATHSIG, signal.SIGTERM)
        for signum in (*FORWARDED_SIGNALS, *REFUSED_SIGNALS):
            signal.signal(signum, signal.SIG_IGN)  # kept across exec; gunicorn's init_signals replaces it
        if nice:
            os.nice(nice)

    return setup


def _listen_loopback() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    return sock


def _parse_bind(bind: str) -> tuple[str, int]:
    host, sep, port = bind.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise SystemExit(f"--bind {bind!r} is invalid: expected HOST:PORT, such as 127.0.0.1:8000")
    return host.strip("[]") or "0.0.0.0", int(port)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Bytes from reader to writer until the reader's end closes; then the writer's half is closed too."""
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        pass


class Front:
    def __init__(self, bind: tuple[str, int], pools: list[Pool], gunicorn_args: list[str], read_timeout: float) -> None:
        self.bind = bind
        self.pools = pools
        self.gunicorn_args = gunicorn_args
        self.read_timeout = read_timeout
        self.upstreams: dict[str, tuple[str, int]] = {}
        self.masters: dict[str, subprocess.Popen[bytes]] = {}
        self.stopping = asyncio.Event()
        self.exit_status = 0
        self.stop_signal = signal.SIGTERM  # how the masters are stopped: gracefully, unless SIGQUIT asked otherwise
        self.connections: set[asyncio.Task[None]] = set()

    def start_pools(self) -> None:
        for pool in self.pools:
            sock = _listen_loopback()
            self.upstreams[pool.name] = sock.getsockname()[:2]
            command = [
                sys.executable,
                "-m",
                "gunicorn",
                "--config",
                str(GUNICORN_CONFIG),
                "--bind",
                f"fd://{sock.fileno()}",
                "--workers",
                str(pool.workers),
                "--threads",
                str(pool.threads),
                "--name",
                f"controlplane-{pool.name}",
                # Every connection comes from this process on 127.0.0.1, which gunicorn would otherwise trust to set
                # SCRIPT_NAME and the forwarded-scheme headers: no client is trusted so.
                "--forwarded-allow-ips",
                "",
                *self.gunicorn_args,
            ]
            self.masters[pool.name] = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
                command,
                pass_fds=(sock.fileno(),),
                preexec_fn=_child_setup(pool.nice),  # noqa: PLW1509 - async-signal-safe calls only, resolved earlier
                # A group of its own: a terminal's Ctrl-C or hangup reaches this process, which passes it on, not
                # the masters directly as well (twice, or a quick stop where this process stops gracefully).
                process_group=0,
                stdin=subprocess.DEVNULL,
            )
            sock.close()  # the master holds its own copy
            log.info(
                "web: %s pool: gunicorn pid %d, %d workers x %d threads, nice %d, on %s:%d",
                pool.name,
                self.masters[pool.name].pid,
                pool.workers,
                pool.threads,
                pool.nice,
                *self.upstreams[pool.name],
            )

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.connections.add(task)
        upstream_writer: asyncio.StreamWriter | None = None
        try:
            head = b""
            line: bytes | None = None
            with contextlib.suppress(TimeoutError, ConnectionError, OSError):
                async with asyncio.timeout(self.read_timeout):
                    while (line := request_line(head)) is None and len(head) < FIRST_LINE_LIMIT:
                        data = await reader.read(FIRST_LINE_LIMIT)
                        if not data:
                            break
                        head += data
            if line is None and len(head) < FIRST_LINE_LIMIT:
                return  # closed, or no whole request line within the read timeout: nothing is passed on
            pool = choose_pool(line or b"")  # a line longer than the limit goes on to gunicorn, which answers 400
            try:
                upstream_reader, upstream_writer = await asyncio.open_connection(*self.upstreams[pool])
            except OSError:
                writer.write(_unavailable(pool))
                with contextlib.suppress(ConnectionError, OSError):
                    await writer.drain()
                return
            upstream_writer.write(head)
            to_pool = asyncio.create_task(_pipe(reader, upstream_writer))
            # The pool's end decides: when gunicorn closes the connection (after a response, an idle keep-alive,
            # a read timeout), the client's connection is closed too, whatever it was still sending.
            await _pipe(upstream_reader, writer)
            to_pool.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await to_pool
        finally:
            for end in (upstream_writer, writer):
                if end is not None:
                    end.close()
            self.connections.discard(task)

    async def watch_masters(self) -> None:
        while not self.stopping.is_set():
            for name, master in self.masters.items():
                status = master.poll()
                if status is not None:
                    log.error("web: the %s pool's gunicorn exited with status %s; stopping", name, status)
                    self.exit_status = (128 - status if status < 0 else status) or 1
                    # The survivor stops at once (gunicorn's quick stop), so the restart is not held up.
                    self.signal_masters(signal.SIGQUIT)
                    self.stopping.set()
                    return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), 0.5)

    def signal_masters(self, signum: int) -> None:
        """The signal to each master still running."""
        for master in self.masters.values():
            if master.poll() is None:
                master.send_signal(signum)

    def forward(self, signum: int) -> None:
        if self.stopping.is_set():
            return  # the masters are stopping (or stopped, their pids free for reuse)
        log.info("web: %s passed on to both pools", signal.Signals(signum).name)
        self.signal_masters(signum)

    def refuse(self, signum: int) -> None:
        name = signal.Signals(signum).name
        masters = ", ".join(f"{pool} {master.pid}" for pool, master in self.masters.items())
        log.warning("web: %s is not passed on to two pools; send it to one pool's master (%s)", name, masters)

    def quit(self) -> None:
        """SIGQUIT: both pools stop at once (gunicorn's quick stop), then this process; during a graceful stop too,
        as gunicorn's own QUIT cuts its graceful stop short."""
        if self.stopping.is_set():
            self.signal_masters(signal.SIGQUIT)
        self.stop_signal = signal.SIGQUIT
        self.stopping.set()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        host, port = self.bind
        try:
            server = await asyncio.start_server(self.handle, host, port, backlog=1024, reuse_address=True)
        except OSError as exc:
            raise SystemExit(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        # Handlers first: a signal sent while the pools start does what it says, not the default (which for most is
        # to end this process and leave the masters to their death signal).
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.stopping.set)
        loop.add_signal_handler(signal.SIGQUIT, self.quit)
        for signum in FORWARDED_SIGNALS:
            loop.add_signal_handler(signum, self.forward, signum)
        for signum in REFUSED_SIGNALS:
            loop.add_signal_handler(signum, self.refuse, signum)
        self.start_pools()
        watcher = asyncio.create_task(self.watch_masters())
        log.info("web: listening on %s:%d (pages and /api/ in pools of their own)", host, port)
        try:
            await self.stopping.wait()
        finally:
            server.close()  # no new connections; the open ones go on until their pool closes them
            watcher.cancel()
            self.signal_masters(self.stop_signal)  # SIGTERM: gunicorn's graceful stop
            await asyncio.gather(*(asyncio.to_thread(master.wait) for master in self.masters.values()))
            for task in list(self.connections):
                task.cancel()
            await asyncio.gather(*self.connections, return_exceptions=True)
        return self.exit_status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m controlplane.web",
        description="The portal: one address, pages and /api/ in gunicorn pools of their own. Options it does not "
        "know go to both gunicorns.",
    )
    parser.add_argument("-b", "--bind", default=os.environ.get("GUNICORN_BIND", "0.0.0.0:8000"), help="HOST:PORT")
    args, gunicorn_args = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stdout)
    config = gunicorn_settings()  # the config file is run once: the pools' sizes and the read timeout
    front = Front(_parse_bind(args.bind), pools(config), gunicorn_args, float(config["read_timeout"]))
    return asyncio.run(front.run())


if __name__ == "__main__":
    sys.exit(main())
