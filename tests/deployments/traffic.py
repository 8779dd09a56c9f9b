"""Client threads sending predictions through a service's stable address until stopped, every answer counted."""

from __future__ import annotations

import http.client
import threading
from collections import Counter
from typing import Any
from urllib.parse import urlsplit


class Traffic:
    """A new connection per request (the local router splits by connection, so each request may reach any
    revision), every answer counted by the revision that gave it (`x-revision`) and its status; an answer that is
    not 200, or a request that got no answer, is also listed in `failures`."""

    def __init__(self, address: str, body: bytes, *, threads: int = 4, mixed: bool = False) -> None:
        """`mixed`: half the threads keep one connection alive instead, so both kinds of client cross every
        switch (a kept-alive connection stays on the revision it reached until the router or the revision closes
        it)."""
        self.where = urlsplit(address)
        self.body = body
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.answers: Counter[tuple[str, int]] = Counter()
        self.failures: list[str] = []
        self.threads = [
            threading.Thread(target=self._send, args=(mixed and i % 2 == 0,), daemon=True) for i in range(threads)
        ]

    def __enter__(self) -> Traffic:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)

    def _send(self, keep_alive: bool) -> None:
        connection: http.client.HTTPConnection | None = None
        while not self.stop.is_set():
            if connection is None:
                connection = http.client.HTTPConnection(self.where.hostname, self.where.port, timeout=30)
            try:
                connection.request("POST", "/invocations", self.body, {"content-type": "application/json"})
                answer = connection.getresponse()
                answer.read()
                with self.lock:
                    self.answers[(answer.getheader("x-revision", "?"), answer.status)] += 1
                    if answer.status != 200:
                        self.failures.append(f"HTTP {answer.status} from {answer.getheader('x-revision', '?')}")
                if not keep_alive or answer.getheader("connection", "").lower() == "close":
                    connection.close()
                    connection = None
            except (OSError, http.client.HTTPException) as exc:
                with self.lock:
                    self.failures.append(f"{type(exc).__name__}: {exc}")
                connection.close()
                connection = None
        if connection is not None:
            connection.close()

    def counts(self) -> Counter[tuple[str, int]]:
        """(revision, status) → answers so far."""
        with self.lock:
            return Counter(self.answers)

    def by_revision(self) -> Counter[str]:
        found: Counter[str] = Counter()
        for (revision, _), count in self.counts().items():
            found[revision] += count
        return found

    @property
    def total(self) -> int:
        return sum(self.counts().values())
