"""The deployed HTTP stack: HTTP/1.1 on an asyncio protocol, parsed by httptools, on uvloop's event loop.

Chosen by measurement (docs/benchmarks/serving.md): per request it costs less than an ASGI server, because nothing
between the parser and `ServingApp.handle` allocates a scope, a receive/send pair or a task. It does what serving
needs and no more: keep-alive and pipelining, `Expect: 100-continue`, bodies by Content-Length or chunked, a body
limit answered 413 before the body is read, 400 for malformed HTTP, a deadline for a whole request (408) and for an
idle connection, back-pressure when a client does not read its answers, and a graceful stop: on SIGTERM it stops
accepting, answers `/ping` 503, finishes what is in flight (closing each connection after its current answer), and
returns once every connection is gone or `DRAIN_SECONDS` have passed. Every answer carries `x-revision` (REVISION),
so a client of the service can tell which revision answered it, and every answer to `/invocations` carries
`server-timing: app;dur=<ms>`, its time in the server as its latency histogram counted it.

Behind serving/router.py (SERVING_HANDOFF_SOCKET set) it also takes connections the router accepted on the
service's stable address, passed over a Unix socket (SCM_RIGHTS), and serves them as its own. Stopping then closes
no idle connection at once: each is answered once more with `connection: close` (its client reconnects through the
router, to the revision serving now), and only a connection left idle for `HANDOFF_IDLE_GRACE_SECONDS` is closed.
A connection older than SERVING_HANDOFF_RECHOOSE_SECONDS is answered with `connection: close` too, so keep-alive
clients go back through the router now and then and a canary's weight holds for them, not only for new connections.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import time
from email.utils import formatdate
from http import HTTPStatus
from typing import Any

import httptools

from serving.app import Response, ServingApp, error

log = logging.getLogger("serving")

SWEEP_SECONDS = 1.0
MAX_URL_BYTES = 8 * 1024
MAX_HEADER_BYTES = 32 * 1024
# A client that pipelines requests without reading the answers is cut off once this much waits to be sent.
MAX_UNREAD_BYTES = 1024 * 1024
_REASONS = {status.value: status.phrase.encode() for status in HTTPStatus}
# Stopping behind the router: how long an idle connection may stay open for one more request (answered with
# `connection: close`) before it is closed; a client under load sends its next request well within it.
HANDOFF_IDLE_GRACE_SECONDS = 2.0


class _Abort(Exception):
    """Stop parsing this connection: an answer has been written and the connection is closing."""


class _Clock:
    """The Date header, formatted once a second."""

    def __init__(self) -> None:
        self.second = 0
        self.header = b""

    def date(self) -> bytes:
        now = int(time.time())
        if now != self.second:
            self.second = now
            self.header = b"date: " + formatdate(now, usegmt=True).encode() + b"\r\n"
        return self.header


class HttpServer:
    def __init__(
        self,
        app: ServingApp,
        *,
        host: str,
        port: int,
        keepalive_seconds: float = 75.0,
        request_timeout_seconds: float = 30.0,
        drain_seconds: float = 30.0,
        handoff_path: str = "",
        rechoose_seconds: float = 0.0,
    ) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.keepalive_seconds = keepalive_seconds
        self.request_timeout_seconds = request_timeout_seconds
        self.drain_seconds = drain_seconds
        self.handoff_path = handoff_path
        # Behind the router: a connection older than this is answered with `connection: close`, so its client
        # reconnects and the router chooses again by the current weights (0: never).
        self.rechoose_seconds = rechoose_seconds if handoff_path else 0.0
        self._adopting = 0  # received, not yet connected: the drain waits for them too
        self._handoff: socket.socket | None = None
        self.connections: set[Connection] = set()
        self.draining = False
        self.clock = _Clock()
        # Every answer says which revision gave it (REVISION), so a client behind the router can tell a canary's.
        self.revision_header = _revision_header(getattr(app, "revision", ""))
        self._server: asyncio.base_events.Server | None = None
        self._stopped: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, *, on_ready: Any = None, sock: socket.socket | None = None) -> None:
        """Listen until stopped (SIGTERM, SIGINT or `stop()`), then drain and return. `sock` is a socket already
        bound (see `bind`): connections are refused until this starts listening on it."""
        self._loop = loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        if sock is not None:
            self._server = await loop.create_server(lambda: Connection(self), sock=sock, backlog=2048)
        else:
            self._server = await loop.create_server(
                lambda: Connection(self), self.host, self.port, backlog=2048, reuse_address=True
            )
        self.port = self._server.sockets[0].getsockname()[1]
        if self.handoff_path:
            self._listen_for_handoffs()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, self.stop)
            except (NotImplementedError, RuntimeError):  # not the main thread (tests run it in one)
                pass
        loop.call_later(SWEEP_SECONDS, self._sweep)
        if on_ready is not None:
            on_ready(self)
        await self._stopped.wait()

    def stop(self) -> None:
        """Begin the graceful stop (idempotent)."""
        if self.draining or self._loop is None:
            return
        self.draining = True
        self.app.ready = False
        log.info("stopping: no new connections; finishing %d open one(s)", len(self.connections))
        if self._server is not None:
            self._server.close()
        # The hand-off socket stays open while draining: a connection the router passed just before it stopped
        # choosing this revision must still be answered (once, with `connection: close`), never dropped.
        for connection in list(self.connections):
            connection.drain()
        self._loop.create_task(self._drain())

    async def _drain(self) -> None:
        assert self._loop is not None and self._stopped is not None
        deadline = self._loop.time() + self.drain_seconds
        while (self.connections or self._adopting) and self._loop.time() < deadline:
            await asyncio.sleep(0.01)
        if self.connections:
            log.warning("stopping: %d connection(s) still open after %gs; closing them", len(self.connections),
                        self.drain_seconds)
            for connection in list(self.connections):
                connection.transport_close(abort=True)
        if self._server is not None:
            await self._server.wait_closed()
        self._close_handoff()
        self._stopped.set()

    def _sweep(self) -> None:
        """Close idle connections past the keep-alive time and answer 408 to requests past their deadline."""
        assert self._loop is not None
        now = self._loop.time()
        for connection in list(self.connections):
            if connection.deadline and now > connection.deadline:
                connection.expire()
        if not (self._stopped and self._stopped.is_set()):
            self._loop.call_later(SWEEP_SECONDS, self._sweep)


    # -- connections handed off by serving/router.py ------------------------------------------------------------

    def _listen_for_handoffs(self) -> None:
        assert self._loop is not None
        try:
            os.unlink(self.handoff_path)
        except FileNotFoundError:
            pass
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        listener.bind(self.handoff_path)
        listener.listen(16)
        listener.setblocking(False)
        self._handoff = listener
        self._loop.add_reader(listener.fileno(), self._accept_router)

    def _accept_router(self) -> None:
        assert self._loop is not None and self._handoff is not None
        try:
            channel, _ = self._handoff.accept()
        except (BlockingIOError, InterruptedError):
            return
        channel.setblocking(False)
        self._loop.add_reader(channel.fileno(), self._receive_connections, channel)

    def _receive_connections(self, channel: socket.socket) -> None:
        """Each message from the router carries one accepted client socket: serve it as if accepted here."""
        assert self._loop is not None
        while True:
            try:
                data, fds, _, _ = socket.recv_fds(channel, 64, 16)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data, fds = b"", []
            if not data and not fds:  # the router closed its end
                self._loop.remove_reader(channel.fileno())
                channel.close()
                return
            for fd in fds:
                client = socket.socket(fileno=fd)
                client.setblocking(False)
                self._adopting += 1
                self._loop.create_task(self._adopt(client))

    async def _adopt(self, client: socket.socket) -> None:
        assert self._loop is not None
        try:
            await self._loop.connect_accepted_socket(lambda: Connection(self), client)
        except OSError:  # the client went away while it was being passed
            client.close()
        finally:
            self._adopting -= 1

    def _close_handoff(self) -> None:
        if self._handoff is not None and self._loop is not None:
            self._loop.remove_reader(self._handoff.fileno())
            self._handoff.close()
            self._handoff = None
            try:
                os.unlink(self.handoff_path)
            except FileNotFoundError:
                pass


def server_timing(response: Response) -> bytes:
    """`server-timing: app;dur=<ms>` for an invocation: its time in the server, the very value its latency histogram
    counted (repr keeps every digit, so a client can bucket it exactly as the server did)."""
    if response.duration_ms is None:
        return b""
    return b"server-timing: app;dur=" + repr(response.duration_ms).encode("ascii") + b"\r\n"


def _revision_header(revision: str) -> bytes:
    # A header value is visible ASCII and spaces; anything else in REVISION is left out rather than sent.
    value = "".join(c for c in revision if " " <= c <= "~").strip()
    return b"x-revision: " + value.encode("ascii") + b"\r\n" if value else b""


def bind(host: str, port: int) -> socket.socket:
    """Claim the address before the model loads, so a port in use is said at once (OSError); nothing is accepted
    until the server listens."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    infos = socket.getaddrinfo(host or None, port, family, socket.SOCK_STREAM, 0, socket.AI_PASSIVE)
    sock = socket.socket(infos[0][0], socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(infos[0][4])
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


class Connection(asyncio.Protocol):
    __slots__ = (
        "server", "app", "loop", "transport", "parser", "url", "url_size", "header_size", "content_type",
        "content_encoding", "expect_continue", "body", "body_size", "in_request", "close_after", "closed",
        "deadline", "paused", "rechoose_at",
    )

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.app = server.app
        self.loop = asyncio.get_running_loop()
        self.transport: Any = None
        self.parser = httptools.HttpRequestParser(self)
        self.url: list[bytes] = []
        self.url_size = 0
        self.header_size = 0
        self.content_type = b""
        self.content_encoding = b""
        self.expect_continue = False
        self.body: list[bytes] = []
        self.body_size = 0
        self.in_request = False
        self.close_after = False
        self.closed = False
        self.deadline = 0.0
        self.paused = False
        self.rechoose_at = self.loop.time() + server.rechoose_seconds if server.rechoose_seconds else 0.0

    # -- asyncio.Protocol ---------------------------------------------------------------------------------------

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        self.server.connections.add(self)
        if self.server.draining:
            if self.server.handoff_path:  # passed by the router before it stopped choosing us: answer it once
                self.close_after = True
                self.deadline = self.loop.time() + HANDOFF_IDLE_GRACE_SECONDS
                return
            self.transport_close()
            return
        self.deadline = self.loop.time() + self.server.keepalive_seconds

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.connections.discard(self)

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._refuse(400, "protocol upgrades are not supported")
        except httptools.HttpParserCallbackError as exc:
            if not isinstance(exc.__context__, _Abort) and not isinstance(exc.__cause__, _Abort):
                log.exception("serving a request failed")
                if not self.closed:
                    self._refuse(500, "the server failed to read the request")
        except httptools.HttpParserError as exc:
            self._refuse(400, f"malformed HTTP request: {exc}")

    def eof_received(self) -> bool | None:
        return None  # close our side too

    def pause_writing(self) -> None:
        # The client is not reading its answers: stop reading its requests until it does.
        self.paused = True
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.paused = False
        self.transport.resume_reading()

    # -- httptools callbacks ------------------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.url = []
        self.url_size = 0
        self.header_size = 0
        self.content_type = b""
        self.content_encoding = b""
        self.expect_continue = False
        self.body = []
        self.body_size = 0
        self.in_request = True
        self.deadline = self.loop.time() + self.server.request_timeout_seconds

    def on_url(self, url: bytes) -> None:
        # Pieces in a list, and a cap: an endless URL must cost neither quadratic copying nor unbounded memory.
        self.url_size += len(url)
        if self.url_size > MAX_URL_BYTES:
            self._refuse(414, f"the URL is longer than {MAX_URL_BYTES} bytes")
            raise _Abort
        self.url.append(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_size += len(name) + len(value)
        if self.header_size > MAX_HEADER_BYTES:
            self._refuse(431, f"the request's headers are larger than {MAX_HEADER_BYTES} bytes")
            raise _Abort
        name = name.lower()
        if name == b"content-type":
            self.content_type = value
        elif name == b"content-length":
            try:
                size = int(value)
            except ValueError:
                size = 0  # the parser refuses a bad Content-Length itself
            if size > self.app.max_body_bytes:
                self._refuse_large()
        elif name == b"content-encoding":
            self.content_encoding = value.strip().lower()
        elif name == b"expect" and value.lower() == b"100-continue":
            self.expect_continue = True

    def on_headers_complete(self) -> None:
        # httptools ends an upgrade (or CONNECT) request at its headers, before any body: refuse it here, or the
        # request would be answered once without its body and then once more.
        if self.parser.should_upgrade() or self.parser.get_method() == b"CONNECT":
            self._refuse(400, "protocol upgrades and CONNECT are not supported")
            raise _Abort
        if self.expect_continue and not self.closed:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self.body_size += len(body)
        if self.body_size > self.app.max_body_bytes:
            self._refuse_large()
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.in_request = False
        method = self.parser.get_method().decode("ascii", "replace")
        body = self.body[0] if len(self.body) == 1 else b"".join(self.body)
        self.body = []
        try:
            url = b"".join(self.url).decode("latin-1")
            if self.content_encoding not in (b"", b"identity"):
                encoding = self.content_encoding.decode("latin-1")[:40]
                response = error(415, f"Content-Encoding {encoding!r} is not accepted: send the body uncompressed")
            else:
                response = self.app.handle(method, url, self.content_type.decode("latin-1"), body)
        except Exception as exc:  # the app answers its own errors; this is a last resort
            log.exception("handling %s failed", method)
            response = error(500, f"the server failed: {type(exc).__name__}")
        keep_alive = self.parser.should_keep_alive() and not self.close_after and not self.server.draining
        if self.rechoose_at and keep_alive and self.loop.time() > self.rechoose_at:
            keep_alive = False
        self._write(response, keep_alive=keep_alive, head=method == "HEAD")
        if not keep_alive:
            self.transport_close()
            raise _Abort
        if self.paused and self.transport.get_write_buffer_size() > MAX_UNREAD_BYTES:
            log.warning("closing a connection that sent requests without reading %d bytes of answers",
                        self.transport.get_write_buffer_size())
            self.transport_close(abort=True)
            raise _Abort
        self.deadline = self.loop.time() + self.server.keepalive_seconds

    # -- writing ------------------------------------------------------------------------------------------------

    def _write(self, response: Response, *, keep_alive: bool, head: bool = False) -> None:
        status = response.status
        connection = b""
        if not keep_alive:
            connection = b"connection: close\r\n"
        elif self.parser.get_http_version() == "1.0":
            connection = b"connection: keep-alive\r\n"
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncontent-length: %d\r\n%s%s%s%s\r\n%s"
            % (
                status,
                _REASONS.get(status, b"Unknown"),
                response.content_type,
                len(response.body),
                self.server.clock.date(),
                self.server.revision_header,
                server_timing(response),
                connection,
                b"" if head else response.body,
            )
        )

    def _refuse(self, status: int, message: str) -> None:
        """Answer an error and close: the rest of what the client sent cannot be trusted to be a request."""
        if self.closed:
            return
        self._write(error(status, message), keep_alive=False)
        self.transport_close()

    def _refuse_large(self) -> None:
        if not self.closed:
            self._write(self.app.too_large(), keep_alive=False)
            self.transport_close()
        raise _Abort

    def expire(self) -> None:
        if self.in_request:
            self._refuse(408, f"the request did not arrive within {self.server.request_timeout_seconds:g}s")
        else:
            self.transport_close()

    def drain(self) -> None:
        """The server is stopping: close now if idle, else after the answer to the request in flight. Behind the
        router an idle connection is kept for one more request (see HANDOFF_IDLE_GRACE_SECONDS): closing it now
        could cross a request its client is sending, which would then fail."""
        if self.in_request:
            self.close_after = True
        elif self.server.handoff_path:
            self.close_after = True
            self.deadline = min(self.deadline, self.loop.time() + HANDOFF_IDLE_GRACE_SECONDS)
        else:
            self.transport_close()

    def transport_close(self, *, abort: bool = False) -> None:
        if self.closed:
            return
        self.closed = True
        if self.paused and not abort:
            abort = True  # a client that does not read would hold the drain forever
        if abort:
            self.transport.abort()
        else:
            self.transport.close()
