"""gunicorn for the portal: used by the image (docker/Dockerfile) and by `make run` (manage.py runall).

Sized for uploads of up to DATASET_MAX_UPLOAD_BYTES on a slow link (1 GB at 16 Mbit/s takes about 9 minutes)
without one upload holding the server: each upload holds one thread, not a worker process.
Every value can be overridden from the environment (GUNICORN_*) or on the command line (--bind, …).
"""

from __future__ import annotations

import gc
import os
import socket
from typing import Any


def _positive_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip() or str(default)
    if not raw.isdigit() or int(raw) < 1:
        raise SystemExit(f"{name}={raw!r} is invalid: expected a whole number of at least 1")
    return int(raw)


wsgi_app = "controlplane.wsgi:application"
# Load Django (and, in on_starting, every URL's view) before the port opens: a bad setting fails the start with its
# message rather than a worker boot loop, and the first request does not wait seconds for imports.
preload_app = True
bind = [os.environ.get("GUNICORN_BIND", "0.0.0.0:8000")]
# Threads: a request waiting on its client (an upload arriving) holds one thread; the other threads and the
# worker's heartbeat carry on, so one slow upload never stalls the server.
worker_class = "gthread"
workers = _positive_int("WEB_CONCURRENCY", 2)
threads = _positive_int("GUNICORN_THREADS", 8)
# With gthread this is the worker's heartbeat, not a request's duration: a worker whose main loop is stuck this
# long is restarted, while a 9-minute upload on a healthy worker is not touched (the sync worker's 30 s timeout
# killed every upload slower than 30 s, answering 500).
timeout = _positive_int("GUNICORN_TIMEOUT", 30)
# A deploy lets requests in flight, uploads included, finish for this long before stopping the worker.
graceful_timeout = _positive_int("GUNICORN_GRACEFUL_TIMEOUT", 120)
# An idle kept-alive connection (between a browser's requests) is closed after this long.
keepalive = _positive_int("GUNICORN_KEEPALIVE", 5)
# A client that sends nothing at all for this long is dropped, so stalled connections cannot use up the threads;
# bytes arriving however slowly keep an upload alive. Longer than a load balancer's usual 60 s idle timeout.
read_timeout = _positive_int("GUNICORN_READ_TIMEOUT", 75)
accesslog = "-"
# gunicornc's control socket defaults to one path per user, shared by every gunicorn on the machine; nothing uses it.
control_socket_disable = True


def on_starting(server: Any) -> None:
    from django.urls import get_resolver

    get_resolver().url_patterns  # noqa: B018 - imports the URLconf and every view module, as runserver's checks did


def when_ready(server: Any) -> None:
    """Once, before the first worker is forked: the garbage the preloaded app left (its imports' cycles) collected,
    then what is left frozen (see pre_fork)."""
    gc.collect()
    gc.freeze()


def pre_fork(server: Any, worker: Any) -> None:
    """What the master loaded (Django, every view) is moved out of the garbage collector's sight before each fork:
    a worker's collections then walk only what its requests made, not the whole preloaded app each time (a full
    collection took 100-250 ms and was the tail of the 500-run API page), and they no longer write to the pages
    the workers share with the master (copy-on-write). Python's gc.freeze() documentation describes this use. No
    collection here: the master makes little garbage after when_ready, and a collection before every fork (a
    restarted worker, a reload) would free holes in pages the running workers share."""
    gc.freeze()


def pre_request(worker: Any, req: Any) -> None:
    """Bound each read of the request (body included) by read_timeout: gthread's HTTP/1 reads otherwise wait forever."""
    sock = getattr(getattr(req, "unreader", None), "sock", None)
    if isinstance(sock, socket.socket):
        sock.settimeout(read_timeout)
