"""The same `ServingApp` behind ASGI and RSGI servers, to measure HTTP stacks against each other
(bench/serving.py); the deployed stack is serving/http.py.

    uvicorn --factory serving.asgi:asgi_app        granian --interface asgi --factory serving.asgi:asgi_app
    granian --interface rsgi --factory serving.asgi:rsgi_app

The settings come from the environment, as for `python -m serving`.
"""

from __future__ import annotations

from typing import Any

from serving.config import ServingConfig
from serving.runtime import Runtime, build


def _runtime() -> Runtime:
    runtime = build(ServingConfig.from_env())
    runtime.start()
    return runtime


class AsgiServing:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.app = runtime.app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    self.runtime.close()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        content_type = ""
        for name, value in scope["headers"]:
            if name == b"content-type":
                content_type = value.decode("latin-1")
        chunks = []
        size = 0
        more = True
        while more:
            message = await receive()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.app.max_body_bytes:
                response = self.app.too_large()
                break
            chunks.append(chunk)
            more = message.get("more_body", False)
        else:
            response = self.app.handle(scope["method"], scope["path"], content_type, b"".join(chunks))
        headers = [(b"content-type", response.content_type), (b"content-length", b"%d" % len(response.body))]
        if response.duration_ms is not None:
            headers.append((b"server-timing", b"app;dur=%r" % response.duration_ms))
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        await send({"type": "http.response.body", "body": response.body})


class RsgiServing:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.app = runtime.app

    async def __rsgi__(self, scope: Any, protocol: Any) -> None:
        body = await protocol()
        if len(body) > self.app.max_body_bytes:
            response = self.app.too_large()
        else:
            response = self.app.handle(scope.method, scope.path, scope.headers.get("content-type", ""), body)
        headers = [("content-type", response.content_type.decode())]
        if response.duration_ms is not None:
            headers.append(("server-timing", f"app;dur={response.duration_ms!r}"))
        protocol.response_bytes(response.status, headers, response.body)

    def __rsgi_del__(self, loop: Any) -> None:
        self.runtime.close()


def asgi_app() -> AsgiServing:
    return AsgiServing(_runtime())


def rsgi_app() -> RsgiServing:
    return RsgiServing(_runtime())
