"""Putting the server together from its settings: the model, metrics and their reporter, capture, the app.

`python -m serving` (serving/__main__.py) and the ASGI/RSGI adapters (serving/asgi.py) build through here, so every
HTTP stack serves exactly the same app.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from serving.app import ServingApp
from serving.capture import Capture
from serving.config import ServingConfig
from serving.metrics import EmfSink, Metrics, NoSink, PortalSink, Reporter, Sink
from serving.model import LoadedModel, ModelError, load

log = logging.getLogger("serving")


@dataclass
class Runtime:
    config: ServingConfig
    model: LoadedModel
    app: ServingApp
    metrics: Metrics
    reporter: Reporter
    capture: Capture | None

    def start(self) -> None:
        self.reporter.start()
        if self.capture is not None:
            self.capture.start()

    def close(self) -> None:
        """Flush capture, then metrics (so the last minute counts the last captures)."""
        if self.capture is not None:
            self.capture.close()
        self.reporter.stop()

    def describe(self) -> str:
        c = self.config
        capture = f"{c.capture_fraction:.0%} of requests to {c.capture_url}" if self.capture else "off"
        sink = {"portal": f"to {c.metrics_ingest_url}", "emf": "as EMF lines on stdout", "none": "off"}[c.metrics_sink]
        return (
            f"service {c.service!r} revision {c.revision or '-'}: model sha256 {c.model_sha256[:12]}… on "
            f"{self.model.predictor.runtime}; capture {capture}; metrics {sink}"
        )


def sink_for(config: ServingConfig) -> Sink:
    if config.metrics_sink == "portal":
        return PortalSink(config.metrics_ingest_url, config.token, service=config.service, revision=config.revision)
    if config.metrics_sink == "emf":
        return EmfSink(namespace=config.metrics_namespace, service=config.service, revision=config.revision)
    return NoSink()


def build(config: ServingConfig) -> Runtime:
    """Everything the server needs, loaded and checked; raises ModelError (one line) when the model cannot serve."""
    model = load(config)
    metrics = Metrics(service=config.service, revision=config.revision, runtime=model.predictor.runtime)
    capture = None
    if config.capture_fraction > 0:
        from workers.errors import ConfigError as StoreConfigError
        from workers.objectstore import open_object_store

        try:
            store = open_object_store(config.capture_url, region=config.aws_region or None)
        except StoreConfigError as exc:
            raise ModelError(f"CAPTURE_URL: {exc}") from None
        capture = Capture(
            store,
            fraction=config.capture_fraction,
            feature_names=[f.name for f in model.features],
            service=config.service,
            revision=config.revision,
            metrics=metrics,
            batch_rows=config.capture_batch_rows,
            flush_seconds=config.capture_flush_seconds,
            max_queued_rows=config.capture_max_queued_rows,
        )
    app = ServingApp(
        model,
        metrics=metrics,
        capture=capture,
        max_body_bytes=config.max_body_bytes,
        service=config.service,
        revision=config.revision,
    )
    reporter = Reporter(metrics, sink_for(config), every=config.metrics_flush_seconds)
    return Runtime(config=config, model=model, app=app, metrics=metrics, reporter=reporter, capture=capture)
