"""Request counts, errors and latency: totals for `GET /metrics`, per-minute aggregates for the portal or CloudWatch.

The latency histogram has fixed buckets (`BUCKETS_MS`), so minutes from many processes and many windows merge by
adding counts. Recording a request costs a bisect and a few additions on the request path; a reporter thread sends
each finished minute, off the request path.

The portal's ingest format (`METRICS_SINK=portal`, POSTed as JSON to `METRICS_INGEST_URL` with
`Authorization: Bearer <SERVING_TOKEN>`), version `controlplane.serving.metrics/1`:

    {"format": "controlplane.serving.metrics/1", "service": "…", "revision": "…", "sent_at": "2026-12-01T14:06:02Z",
     "latency_buckets_ms": [0.25, 0.5, …, 10000.0],
     "minutes": [{"minute": "2026-12-01T14:05:00Z", "part": "9f1c…", "requests": 120, "errors": 1, "client_errors": 3,
                  "latency_ms_counts": [… one per bucket, then one for slower than the last …],
                  "latency_ms_sum": 81.2, "rows": 340, "captured_rows": 34, "capture_dropped_rows": 0}]}

`requests` counts every `/invocations` answer, `errors` the 5xx ones, `client_errors` the 4xx ones; `rows` the rows
predicted. Every figure is a delta since the last send, so the portal adds what arrives for the same minute: with
the default `METRICS_FLUSH_SECONDS=60` a minute is sent once it has ended (and the part of the current one at
shutdown); a shorter interval sends the current minute in parts. A send that fails is retried with the next, up to
`MAX_PENDING_MINUTES` minutes; each part keeps its `part` id (random, made once) through every retry, so a part the
portal took but whose answer was lost is recognised when it comes again and added only once. On AWS
(`METRICS_SINK=emf`) each minute is one CloudWatch Embedded Metric Format line on stdout instead, with the
histogram as EMF's Values/Counts.
"""

from __future__ import annotations

import json
import logging
import secrets
import sys
import threading
import time
import urllib.error
import urllib.request
from bisect import bisect_left
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TextIO

log = logging.getLogger("serving")

FORMAT = "controlplane.serving.metrics/1"
BUCKETS_MS: tuple[float, ...] = (
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    25.0,
    50.0,
    100.0,
    250.0,
    500.0,
    1000.0,
    2500.0,
    5000.0,
    10000.0,
)
# Where EMF puts the requests slower than the last edge (see EmfSink.line).
OVERFLOW_MS = BUCKETS_MS[-1] * 2
MAX_PENDING_MINUTES = 60
SEND_TIMEOUT_SECONDS = 3.0


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Minute:
    start: int  # epoch seconds, a multiple of 60
    requests: int = 0
    errors: int = 0
    client_errors: int = 0
    rows: int = 0
    latency_sum_ms: float = 0.0
    counts: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS_MS) + 1))
    captured_rows: int = 0
    capture_dropped_rows: int = 0
    part: str = field(default_factory=lambda: secrets.token_hex(8))

    def as_json(self) -> dict[str, Any]:
        return {
            "minute": _iso(self.start),
            "part": self.part,
            "requests": self.requests,
            "errors": self.errors,
            "client_errors": self.client_errors,
            "rows": self.rows,
            "latency_ms_counts": list(self.counts),
            "latency_ms_sum": round(self.latency_sum_ms, 3),
            "captured_rows": self.captured_rows,
            "capture_dropped_rows": self.capture_dropped_rows,
        }


class Metrics:
    """Everything counted; `record` runs on the request path (event loop), the reporter reads under the lock."""

    def __init__(self, *, service: str, revision: str, runtime: str) -> None:
        self.service = service
        self.revision = revision or "unknown"
        self.runtime = runtime
        self.started = time.time()
        self._lock = threading.Lock()
        self.by_status: dict[int, int] = {}
        self.totals = [0] * (len(BUCKETS_MS) + 1)
        self.latency_sum_ms = 0.0
        self.rows = 0
        self.captured_rows = 0
        self.capture_dropped_rows = 0
        self.capture_written_rows = 0
        self.capture_failed_rows = 0
        self.capture_files = 0
        self._minutes: dict[int, Minute] = {}

    def _minute(self, now: float) -> Minute:
        start = int(now) // 60 * 60
        minute = self._minutes.get(start)
        if minute is None:
            minute = self._minutes[start] = Minute(start)
        return minute

    def record(self, status: int, seconds: float, rows: int = 0) -> None:
        ms = seconds * 1000.0
        bucket = bisect_left(BUCKETS_MS, ms)
        with self._lock:
            self.by_status[status] = self.by_status.get(status, 0) + 1
            self.totals[bucket] += 1
            self.latency_sum_ms += ms
            self.rows += rows
            minute = self._minute(time.time())
            minute.requests += 1
            minute.counts[bucket] += 1
            minute.latency_sum_ms += ms
            minute.rows += rows
            if status >= 500:
                minute.errors += 1
            elif status >= 400:
                minute.client_errors += 1

    def capture_counted(self, *, captured: int = 0, dropped: int = 0) -> None:
        with self._lock:
            self.captured_rows += captured
            self.capture_dropped_rows += dropped
            minute = self._minute(time.time())
            minute.captured_rows += captured
            minute.capture_dropped_rows += dropped

    def capture_stored(self, *, written: int = 0, failed: int = 0) -> None:
        with self._lock:
            self.capture_written_rows += written
            self.capture_failed_rows += failed
            self.capture_files += 1 if written else 0

    def take_minutes(self, *, now: float, include_current: bool = False) -> list[Minute]:
        """The minutes that have ended (and the current one too, at shutdown), removed from the window."""
        current = int(now) // 60 * 60
        with self._lock:
            done = sorted(s for s in self._minutes if include_current or s < current)
            return [self._minutes.pop(s) for s in done]

    def prometheus(self) -> str:
        """The totals in Prometheus' text format (version 0.0.4)."""
        labels = f'service="{_label(self.service)}",revision="{_label(self.revision)}"'
        with self._lock:
            by_status = dict(self.by_status)
            totals = list(self.totals)
            total_ms = self.latency_sum_ms
            counters = {
                "serving_predicted_rows_total": self.rows,
                "serving_capture_sampled_rows_total": self.captured_rows,
                "serving_capture_dropped_rows_total": self.capture_dropped_rows,
                "serving_capture_written_rows_total": self.capture_written_rows,
                "serving_capture_failed_rows_total": self.capture_failed_rows,
                "serving_capture_files_total": self.capture_files,
            }
        lines = [
            "# HELP serving_requests_total Answers to POST /invocations, by HTTP status.",
            "# TYPE serving_requests_total counter",
        ]
        for status in sorted(by_status):
            lines.append(f'serving_requests_total{{{labels},status="{status}"}} {by_status[status]}')
        lines += [
            "# HELP serving_request_duration_seconds Time from a whole request to its answer, in the server.",
            "# TYPE serving_request_duration_seconds histogram",
        ]
        cumulative = 0
        for edge, count in zip((*BUCKETS_MS, float("inf")), totals, strict=True):
            cumulative += count
            le = "+Inf" if edge == float("inf") else repr(edge / 1000.0)
            lines.append(f'serving_request_duration_seconds_bucket{{{labels},le="{le}"}} {cumulative}')
        lines.append(f"serving_request_duration_seconds_sum{{{labels}}} {total_ms / 1000.0!r}")
        lines.append(f"serving_request_duration_seconds_count{{{labels}}} {cumulative}")
        for name, value in counters.items():
            lines += [f"# TYPE {name} counter", f"{name}{{{labels}}} {value}"]
        lines += [
            "# TYPE serving_model_info gauge",
            f'serving_model_info{{{labels},runtime="{_label(self.runtime)}"}} 1',
            "# TYPE serving_start_time_seconds gauge",
            f"serving_start_time_seconds{{{labels}}} {self.started!r}",
        ]
        return "\n".join(lines) + "\n"


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Sink:
    """Where finished minutes go."""

    def send(self, minutes: list[Minute]) -> None: ...


class NoSink(Sink):
    def send(self, minutes: list[Minute]) -> None:
        return None


class PortalSink(Sink):
    """POSTs minutes to the portal's ingest endpoint; what could not be sent is kept and sent with the next."""

    def __init__(self, url: str, token: str, *, service: str, revision: str) -> None:
        self.url = url
        self.token = token
        self.service = service
        self.revision = revision or "unknown"
        self.pending: list[Minute] = []

    def send(self, minutes: list[Minute]) -> None:
        self.pending = (self.pending + minutes)[-MAX_PENDING_MINUTES:]
        if not self.pending:
            return
        body = json.dumps(
            {
                "format": FORMAT,
                "service": self.service,
                "revision": self.revision,
                "sent_at": _iso(time.time()),
                "latency_buckets_ms": list(BUCKETS_MS),
                "minutes": [m.as_json() for m in self.pending],
            }
        ).encode()
        request = urllib.request.Request(
            self.url,
            data=body,
            method="POST",
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {self.token}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=SEND_TIMEOUT_SECONDS) as answer:
                answer.read()
        except urllib.error.HTTPError as exc:
            if 400 <= exc.code < 500 and exc.code not in (408, 429):
                log.error("metrics ingest refused %d minute(s): HTTP %d; dropping them", len(self.pending), exc.code)
                self.pending = []
            else:
                log.warning("metrics ingest answered HTTP %d; %d minute(s) kept to retry", exc.code, len(self.pending))
            return
        except OSError as exc:
            log.warning("metrics ingest unreachable (%s); %d minute(s) kept to retry", exc, len(self.pending))
            return
        self.pending = []


class EmfSink(Sink):
    """One CloudWatch Embedded Metric Format line per minute on stdout (the awslogs driver ships it)."""

    def __init__(self, *, namespace: str, service: str, revision: str, stream: TextIO | None = None) -> None:
        self.namespace = namespace
        self.service = service
        self.revision = revision or "unknown"  # CloudWatch dimension values cannot be empty
        self.stream = stream

    def line(self, minute: Minute) -> str:
        # Each bucket's count is reported at its upper edge; the CloudWatch pull turns them back into the same
        # bucket counts, from which the portal interpolates percentiles within the bucket, as for the ingest's.
        # Requests slower than the last edge are reported at twice that edge (OVERFLOW_MS), outside every bucket,
        # so the pull counts them as slower, not as the last bucket. CloudWatch's Sum is edge × count: a mean read
        # from it is higher than the ingest's.
        values = [edge for edge, count in zip(BUCKETS_MS, minute.counts, strict=False) if count]
        counts = [count for count in minute.counts[: len(BUCKETS_MS)] if count]
        if minute.counts[-1]:
            values.append(OVERFLOW_MS)
            counts.append(minute.counts[-1])
        record: dict[str, Any] = {
            "_aws": {
                "Timestamp": minute.start * 1000,
                "CloudWatchMetrics": [
                    {
                        "Namespace": self.namespace,
                        "Dimensions": [["Service"], ["Service", "Revision"]],
                        "Metrics": [
                            {"Name": "Requests", "Unit": "Count"},
                            {"Name": "Errors", "Unit": "Count"},
                            {"Name": "ClientErrors", "Unit": "Count"},
                            {"Name": "CaptureDroppedRows", "Unit": "Count"},
                        ],
                    }
                ],
            },
            "Service": self.service,
            "Revision": self.revision,
            "Requests": minute.requests,
            "Errors": minute.errors,
            "ClientErrors": minute.client_errors,
            "CaptureDroppedRows": minute.capture_dropped_rows,
        }
        if values:  # declared only when present: a declared metric must have a value in the line
            record["_aws"]["CloudWatchMetrics"][0]["Metrics"].insert(3, {"Name": "Latency", "Unit": "Milliseconds"})
            record["Latency"] = {"Values": values, "Counts": counts}
        return json.dumps(record, separators=(",", ":"))

    def send(self, minutes: list[Minute]) -> None:
        stream = self.stream or sys.stdout
        for minute in minutes:
            stream.write(self.line(minute) + "\n")
        stream.flush()


class Reporter:
    """A thread that sends each minute once it has ended; `stop()` sends what is left, the current minute too."""

    def __init__(self, metrics: Metrics, sink: Sink, *, every: float) -> None:
        self.metrics = metrics
        self.sink = sink
        self.every = every
        self._stop = threading.Event()
        self._sending = threading.Lock()  # the thread and a stop() whose join timed out must not send at once
        self._thread = threading.Thread(target=self._run, name="metrics-reporter", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.flush(include_current=self.every < 60)

    def flush(self, *, include_current: bool = False) -> None:
        with self._sending:
            try:
                self.sink.send(self.metrics.take_minutes(now=time.time(), include_current=include_current))
            except Exception:  # a reporter must never take the server down
                log.exception("sending metrics failed")

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=SEND_TIMEOUT_SECONDS)
        self.flush(include_current=True)
        unsent = len(getattr(self.sink, "pending", []))
        if unsent:
            log.error("stopping with %d minute(s) of metrics the portal did not take: they are lost", unsent)
