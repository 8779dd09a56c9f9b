"""The serving runtime's settings, all from the environment (the Fargate task definition or the local backend sets
them). A bad value stops the server before it loads anything, with one line naming the variable."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

METRICS_SINKS = ("none", "portal", "emf")
DEFAULT_PORT = 8080  # the port SageMaker's container contract and our task definitions use
DEFAULT_MAX_BODY_BYTES = 6 * 1024 * 1024  # SageMaker's real-time payload limit


class ConfigError(Exception):
    """A setting the server cannot start with; the message is one line naming the variable."""


def _text(env: Mapping[str, str], name: str, default: str = "") -> str:
    return env.get(name, default).strip()


def _number(env: Mapping[str, str], name: str, default: float, *, minimum: float, maximum: float) -> float:
    raw = _text(env, name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None
    if not math.isfinite(value) or not minimum <= value <= maximum:
        raise ConfigError(f"{name}={raw!r} must be between {minimum:g} and {maximum:g}")
    return value


def _whole(env: Mapping[str, str], name: str, default: int, *, minimum: int, maximum: int) -> int:
    value = _number(env, name, default, minimum=minimum, maximum=maximum)
    if value != int(value):
        raise ConfigError(f"{name}={_text(env, name)!r} must be a whole number")
    return int(value)


def _sha256(env: Mapping[str, str], name: str, *, required: bool) -> str:
    value = _text(env, name).lower()
    if not value and not required:
        return ""
    if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise ConfigError(f"{name} must be the artifact's SHA-256 as 64 hex digits (got {value[:80]!r})")
    return value


def _uri(env: Mapping[str, str], name: str, *, required: bool) -> str:
    value = _text(env, name)
    if not value:
        if required:
            raise ConfigError(f"{name} is not set: it names the artifact to serve (file:///… or s3://bucket/key)")
        return ""
    if not value.startswith(("file://", "s3://")):
        raise ConfigError(f"{name}={value!r} must start with file:// or s3://")
    return value


@dataclass(frozen=True)
class ServingConfig:
    model_uri: str
    model_sha256: str
    model_card: dict[str, Any] | None = None
    compiled_uri: str = ""
    compiled_sha256: str = ""
    host: str = "0.0.0.0"
    port: int = DEFAULT_PORT
    service: str = "local"
    revision: str = "unknown"
    capture_url: str = ""
    capture_fraction: float = 0.0
    capture_batch_rows: int = 5000
    capture_flush_seconds: float = 60.0
    capture_max_queued_rows: int = 20_000
    metrics_sink: str = "none"
    metrics_ingest_url: str = ""
    token: str = field(default="", repr=False)
    metrics_flush_seconds: float = 60.0
    metrics_namespace: str = "ControlPlane/Serving"
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    drain_seconds: float = 15.0
    keepalive_seconds: float = 75.0
    request_timeout_seconds: float = 30.0
    aws_region: str = ""
    work_dir: str = ""
    handoff_socket: str = ""  # behind serving/router.py: the Unix socket the router passes connections on
    handoff_rechoose_seconds: float = 30.0  # behind the router: a connection's age at which its client must reconnect

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ServingConfig:
        env = os.environ if env is None else env
        card: dict[str, Any] | None = None
        if _text(env, "MODEL_CARD"):
            try:
                card = json.loads(env["MODEL_CARD"])
            except ValueError as exc:
                hint = "" if env["MODEL_CARD"].lstrip().startswith("{") else (
                    ' (MODEL_CARD is the JSON itself, not a path: MODEL_CARD="$(cat model.json)")'
                )
                raise ConfigError(f"MODEL_CARD is not valid JSON: {exc}{hint}") from None
            if not isinstance(card, dict):
                raise ConfigError("MODEL_CARD must be a JSON object (the model version's model.json)")
        compiled_uri = _uri(env, "COMPILED_URI", required=False)
        if compiled_uri and not _text(env, "COMPILED_SHA256"):
            raise ConfigError("COMPILED_URI is set but COMPILED_SHA256 (the compiled copy's SHA-256) is not")
        compiled_sha256 = _sha256(env, "COMPILED_SHA256", required=bool(compiled_uri))
        if compiled_sha256 and not compiled_uri:
            raise ConfigError("COMPILED_SHA256 is set but COMPILED_URI is not")
        sink = _text(env, "METRICS_SINK", "none").lower()
        if sink not in METRICS_SINKS:
            raise ConfigError(f"METRICS_SINK={sink!r} must be one of {', '.join(METRICS_SINKS)}")
        ingest = _text(env, "METRICS_INGEST_URL")
        token = _text(env, "SERVING_TOKEN")
        if sink == "portal":
            if not ingest.startswith(("http://", "https://")):
                raise ConfigError("METRICS_SINK=portal needs METRICS_INGEST_URL (http:// or https://)")
            if not token:
                raise ConfigError("METRICS_SINK=portal needs SERVING_TOKEN (the service's ingest token)")
        fraction = _number(env, "CAPTURE_FRACTION", 0.0, minimum=0.0, maximum=1.0)
        capture_url = _text(env, "CAPTURE_URL")
        if fraction > 0 and not capture_url:
            raise ConfigError("CAPTURE_FRACTION is above 0 but CAPTURE_URL (where capture files go) is not set")
        if capture_url and not capture_url.startswith(("file://", "s3://")):
            raise ConfigError(f"CAPTURE_URL={capture_url!r} must start with file:// or s3://")
        handoff = _text(env, "SERVING_HANDOFF_SOCKET")
        if len(handoff.encode()) > 100:  # sun_path holds 108 bytes with its terminator; say so rather than fail later
            raise ConfigError(f"SERVING_HANDOFF_SOCKET={handoff!r} is longer than 100 bytes: use a shorter path")
        return cls(
            model_uri=_uri(env, "MODEL_URI", required=True),
            model_sha256=_sha256(env, "MODEL_SHA256", required=True),
            model_card=card,
            compiled_uri=compiled_uri,
            compiled_sha256=compiled_sha256,
            host=_text(env, "HOST", "0.0.0.0"),
            port=_whole(env, "PORT", DEFAULT_PORT, minimum=0, maximum=65535),
            service=_text(env, "SERVICE_NAME", "local"),
            revision=_text(env, "REVISION") or "unknown",
            capture_url=capture_url,
            capture_fraction=fraction,
            capture_batch_rows=_whole(env, "CAPTURE_BATCH_ROWS", 5000, minimum=1, maximum=1_000_000),
            capture_flush_seconds=_number(env, "CAPTURE_FLUSH_SECONDS", 60.0, minimum=0.05, maximum=3600),
            capture_max_queued_rows=_whole(env, "CAPTURE_MAX_QUEUED_ROWS", 20_000, minimum=1, maximum=10_000_000),
            metrics_sink=sink,
            metrics_ingest_url=ingest,
            token=token,
            metrics_flush_seconds=_number(env, "METRICS_FLUSH_SECONDS", 60.0, minimum=0.05, maximum=3600),
            metrics_namespace=_text(env, "METRICS_NAMESPACE", "ControlPlane/Serving"),
            max_body_bytes=_whole(env, "MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES, minimum=1024, maximum=1 << 30),
            drain_seconds=_number(env, "DRAIN_SECONDS", 15.0, minimum=0, maximum=3600),
            keepalive_seconds=_number(env, "KEEPALIVE_SECONDS", 75.0, minimum=1, maximum=3600),
            request_timeout_seconds=_number(env, "REQUEST_TIMEOUT_SECONDS", 30.0, minimum=0.1, maximum=3600),
            aws_region=_text(env, "AWS_REGION") or _text(env, "AWS_DEFAULT_REGION"),
            work_dir=_text(env, "SERVING_WORK_DIR"),
            handoff_socket=handoff,
            handoff_rechoose_seconds=_number(env, "SERVING_HANDOFF_RECHOOSE_SECONDS", 30.0, minimum=0, maximum=86400),
        )
