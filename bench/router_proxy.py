"""Design A for the service router, measured against serving/router.py by bench/router.py: a reverse proxy on the
serving stack (httptools + uvloop, an asyncio protocol), with a keep-alive connection pool per revision and a weighted
choice per request.

It is the cheapest proxy of that design, so its figures bound the design from below: it forwards each request's
bytes as they came and each answer's bytes as they come back, rewrites no header (a real one would at least add
X-Forwarded-For and drop hop-by-hop headers), and assumes clients do not pipeline (wrk does not).

    python bench/router_proxy.py --port 8080 --upstream 127.0.0.1:8081=90 --upstream 127.0.0.1:8082=10
"""

from __future__ import annotations

import argparse
import asyncio
import random
import socket
from collections import deque
from typing import Any

import httptools

_BAD_GATEWAY = b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


def _nodelay(transport: Any) -> None:
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class Pool:
    def __init__(self, host: str, port: int, weight: float) -> None:
        self.host, self.port, self.weight = host, port, weight
        self.idle: deque[Upstream] = deque()


class Upstream(asyncio.Protocol):
    """One keep-alive connection to a revision, carrying one request at a time."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.transport: Any = None
        self.parser = httptools.HttpResponseParser(self)
        self.chunks: list[bytes] = []
        self.client: Client | None = None
        self.reusable = True

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        _nodelay(transport)

    def data_received(self, data: bytes) -> None:
        self.chunks.append(data)
        self.parser.feed_data(data)

    def on_message_complete(self) -> None:
        client, self.client = self.client, None
        answer, self.chunks = b"".join(self.chunks), []
        self.reusable = self.parser.should_keep_alive()
        if self.reusable:
            self.pool.idle.append(self)
        else:
            self.transport.close()
        if client is not None:
            client.answered(answer)

    def connection_lost(self, exc: Exception | None) -> None:
        self.reusable = False
        try:
            self.pool.idle.remove(self)
        except ValueError:
            pass
        if self.client is not None:
            self.client.failed()


class Client(asyncio.Protocol):
    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy
        self.transport: Any = None
        self.parser = httptools.HttpRequestParser(self)
        self.chunks: list[bytes] = []
        self.keep_alive = True

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        _nodelay(transport)

    def data_received(self, data: bytes) -> None:
        self.chunks.append(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.write(_BAD_GATEWAY)
            self.transport.close()

    def on_message_complete(self) -> None:
        request, self.chunks = b"".join(self.chunks), []
        self.keep_alive = self.parser.should_keep_alive()
        if not self.keep_alive:  # the client's connection ends here, the pooled one to the revision does not
            request = request.replace(b"\r\nConnection: close\r\n", b"\r\n", 1)
        pool = self.proxy.choose()
        if pool.idle:
            upstream = pool.idle.popleft()
            upstream.client = self
            upstream.transport.write(request)
        else:
            asyncio.get_running_loop().create_task(self._open(pool, request))

    async def _open(self, pool: Pool, request: bytes) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, upstream = await loop.create_connection(lambda: Upstream(pool), pool.host, pool.port)
        except OSError:
            self.failed()
            return
        upstream.client = self
        upstream.transport.write(request)

    def answered(self, answer: bytes) -> None:
        if not self.transport.is_closing():
            if self.keep_alive:
                self.transport.write(answer)
            else:
                self.transport.write(answer.replace(b"\r\n", b"\r\nconnection: close\r\n", 1))
                self.transport.close()

    def failed(self) -> None:
        if not self.transport.is_closing():
            self.transport.write(_BAD_GATEWAY)
            self.transport.close()


class Proxy:
    def __init__(self, pools: list[Pool]) -> None:
        self.pools = pools
        self.total = sum(p.weight for p in pools)

    def choose(self) -> Pool:
        if len(self.pools) == 1:
            return self.pools[0]
        pick = random.random() * self.total
        for pool in self.pools:
            pick -= pool.weight
            if pick < 0:
                return pool
        return self.pools[-1]


async def serve(host: str, port: int, pools: list[Pool]) -> None:
    proxy = Proxy(pools)
    server = await asyncio.get_running_loop().create_server(lambda: Client(proxy), host, port, backlog=2048)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", action="append", required=True, help="host:port[=weight]")
    args = parser.parse_args()
    pools = []
    for item in args.upstream:
        address, _, weight = item.partition("=")
        host, _, port = address.rpartition(":")
        pools.append(Pool(host, int(port), float(weight or 1)))
    import uvloop

    uvloop.run(serve(args.host, args.port, pools))


if __name__ == "__main__":
    main()
