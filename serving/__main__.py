"""`python -m serving`: load the model the environment names and serve it until SIGTERM (see serving/config.py).

Exit codes: 0 after a graceful stop, 2 for a bad setting (a malformed variable, an address it cannot listen on), 3
for a model that cannot be served (hash or library mismatch, an unreadable artifact, no card); either refusal is one
line on stderr.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from serving.config import ConfigError, ServingConfig
from serving.http import HttpServer, bind
from serving.model import ModelError
from serving.runtime import build

log = logging.getLogger("serving")


def main() -> int:
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="serving %(levelname)s %(message)s")
    # Stopped while still loading: nothing is served or queued yet, so a plain exit 0 is the graceful stop.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        config = ServingConfig.from_env()
    except ConfigError as exc:
        print(f"serving: refusing to start: {exc}", file=sys.stderr, flush=True)
        return 2
    try:
        sock = bind(config.host, config.port)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        print(f"serving: refusing to start: cannot listen on {config.host}:{config.port} (HOST, PORT): {reason}",
              file=sys.stderr, flush=True)
        return 2
    try:
        runtime = build(config)
    except ModelError as exc:
        print(f"serving: refusing to start: {exc}", file=sys.stderr, flush=True)
        return 3
    server = HttpServer(
        runtime.app,
        host=config.host,
        port=config.port,
        keepalive_seconds=config.keepalive_seconds,
        request_timeout_seconds=config.request_timeout_seconds,
        drain_seconds=config.drain_seconds,
        handoff_path=config.handoff_socket,
        rechoose_seconds=config.handoff_rechoose_seconds,
    )
    runtime.start()

    def ready(server: HttpServer) -> None:
        log.info("ready on http://%s:%d: %s", config.host, server.port, runtime.describe())

    try:
        import uvloop

        uvloop.run(server.serve(on_ready=ready, sock=sock))
    except ImportError:
        asyncio.run(server.serve(on_ready=ready, sock=sock))
    runtime.close()
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
