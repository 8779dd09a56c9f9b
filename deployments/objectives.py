"""The objectives a new revision is held to while it bakes: p99 latency, error rate, drift.

`objective_status(service, revision, window)` is the one question the deployment poll asks. Its signals come from
a source chosen by settings.DEPLOYMENT_SIGNALS:

- `metrics` (the default): the monitoring tables over the bake window for that revision
  (monitoring.selectors.window_summary: requests, 5xx, p99 from the merged latency histograms), filled by the
  serving runtime's ingest on the local backend and by the CloudWatch pull on aws; plus the drifting share of the
  latest succeeded drift report of that revision whose window ended inside the bake window, if any;
- `revision`: the local revision's own `GET /metrics` (its latency histogram and answers by status, counted since
  its processes started, which is the bake window: a revision takes no traffic before it bakes);
- `recorded`: a JSON file of signals per revision (tests and replays), so a breach can be caused on purpose;
- `none`: nothing is judged.
"""

from __future__ import annotations

import json
import logging
import re
import urllib.request
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from django.conf import settings

# The one histogram_quantile (tests and callers may still reach it as deployments.objectives.histogram_quantile).
from monitoring.histograms import histogram_quantile

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Signals:
    """What a revision did in a window: answers, server errors among them, p99 latency and drifting share."""

    requests: int
    errors: int
    p99_latency_ms: float | None = None
    drift_share: float | None = None

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None


@dataclass(frozen=True)
class ObjectiveResult:
    name: str  # p99_latency_ms, error_rate, drift_share
    label: str
    threshold: float
    value: float | None
    breached: bool
    unit: str = ""

    def describe(self) -> str:
        if self.value is None:
            return f"{self.label}: no data yet (objective {format_value(self.threshold, self.unit)})"
        if not self.breached and self.value > self.threshold:
            # Above the threshold but not judged (too few requests): never say "within".
            return (
                f"{self.label} {format_value(self.value, self.unit)} above its objective "
                f"{format_value(self.threshold, self.unit)}, not judged: too few requests"
            )
        verdict = "above" if self.breached else "within"
        return (
            f"{self.label} {format_value(self.value, self.unit)} {verdict} its objective "
            f"{format_value(self.threshold, self.unit)}"
        )


@dataclass(frozen=True)
class ObjectiveStatus:
    results: list[ObjectiveResult] = field(default_factory=list)
    requests: int = 0
    # Whether enough traffic was seen to judge (settings.OBJECTIVE_MIN_REQUESTS).
    judged: bool = False
    source: str = ""

    @property
    def breached(self) -> ObjectiveResult | None:
        return next((result for result in self.results if result.breached), None)

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "judged": self.judged,
            "source": self.source,
            "results": [
                {
                    **asdict(result),
                    "value_text": "" if result.value is None else format_value(result.value, result.unit),
                    "threshold_text": format_value(result.threshold, result.unit),
                }
                for result in self.results
            ],
        }


def format_value(value: float, unit: str) -> str:
    if unit == "%":
        return f"{value * 100:.2f}%"
    if unit == "ms":
        return f"{value:.1f} ms"
    return f"{value:g}"


# name, label, unit, Environment field
OBJECTIVES: tuple[tuple[str, str, str], ...] = (
    ("p99_latency_ms", "p99 latency", "ms"),
    ("error_rate", "error rate", "%"),
    ("drift_share", "drifting features", "%"),
)


def environment_objectives(environment: Any) -> dict[str, float]:
    """The thresholds an environment sets (a deployment copies them when it is created)."""
    values = {
        "p99_latency_ms": environment.objective_p99_latency_ms,
        "error_rate": environment.objective_error_rate,
        "drift_share": environment.objective_drift_share,
    }
    return {name: float(value) for name, value in values.items() if value is not None}


def judge(objectives: dict[str, float], signals: Signals | None, *, source: str) -> ObjectiveStatus:
    """Each objective against the signals; nothing is breached until enough requests were seen."""
    if signals is None:
        signals = Signals(requests=0, errors=0)
    judged = signals.requests >= settings.OBJECTIVE_MIN_REQUESTS
    values = {
        "p99_latency_ms": signals.p99_latency_ms,
        "error_rate": signals.error_rate,
        "drift_share": signals.drift_share,
    }
    results = []
    for name, label, unit in OBJECTIVES:
        if name not in objectives:
            continue
        value = values[name]
        threshold = objectives[name]
        # Drift is judged on its own reports, not on this window's request count.
        counted = judged or (name == "drift_share" and value is not None)
        results.append(
            ObjectiveResult(
                name=name,
                label=label,
                threshold=threshold,
                value=value,
                breached=bool(counted and value is not None and value > threshold),
                unit=unit,
            )
        )
    return ObjectiveStatus(results=results, requests=signals.requests, judged=judged, source=source)


def objective_status(
    service: Any,
    revision: str,
    window: tuple[datetime, datetime],
    *,
    objectives: dict[str, float] | None = None,
    drift_lookback: timedelta | None = None,
) -> ObjectiveStatus:
    """How `revision` of `service` holds up over `window` against the objectives of the deployment that made it
    (a bake), or against `objectives` when given (monitoring judges what serves by the environment's current ones)."""
    from deployments.models import Deployment

    deployment = Deployment.objects.filter(service=service, revision=revision).order_by("-created_at", "-id").first()
    if objectives is None:
        objectives = dict(deployment.objectives) if deployment is not None else {}
    source = settings.DEPLOYMENT_SIGNALS
    if not objectives or source == "none":
        return ObjectiveStatus(source=source)
    signals: Signals | None
    if source == "metrics" and deployment is not None:
        signals = metrics_signals(deployment, window, drift_lookback=drift_lookback)
    elif source == "recorded":
        signals = recorded_signals(service.name, revision)
    else:
        address = str((deployment.progress or {}).get("revision_address", "")) if deployment is not None else ""
        signals = revision_signals(address) if address else None
    return judge(objectives, signals, source=source)


# --- sources ---------------------------------------------------------------------------------------------------


def metrics_signals(
    deployment: Any, window: tuple[datetime, datetime], *, drift_lookback: timedelta | None = None
) -> Signals:
    """The deployment's revision's figures over the window from the monitoring tables (rows are labelled with the
    serving processes' REVISION, monitoring.selectors.revision_label), and the drifting share of its latest
    succeeded drift report whose window ended inside this one — or up to `drift_lookback` before it (what serves
    is judged over minutes, its drift reports come every drift window)."""
    from monitoring.models import DriftReport
    from monitoring.selectors import revision_label, window_summary

    start, end = window
    revision = revision_label(deployment)
    summary = window_summary(service=deployment.service_id, start=start, end=end, revision=revision)
    report = (
        DriftReport.objects.filter(
            service_id=deployment.service_id,
            revision=revision,
            status=DriftReport.Status.SUCCEEDED,
            window_end__gt=start - (drift_lookback or timedelta(0)),
            window_end__lte=end,
            drifted_share__isnull=False,
        )
        .order_by("-window_end", "-id")
        .first()
    )
    return Signals(
        requests=int(summary["requests"]),
        errors=int(summary["errors"]),
        p99_latency_ms=summary["p99_ms"],
        drift_share=report.drifted_share if report is not None else None,
    )


def recorded_signals(service_name: str, revision: str) -> Signals | None:
    """Signals from settings.DEPLOYMENT_RECORDED_SIGNALS: `{"<service>/<revision>": {"requests": …, "errors": …,
    "p99_latency_ms": …, "drift_share": …}}`, read on every call, so a test or a replay can change them live."""
    path = Path(settings.DEPLOYMENT_RECORDED_SIGNALS)
    try:
        recorded = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError:
        log.warning("%s is not JSON: no recorded signals", path)
        return None
    entry = recorded.get(f"{service_name}/{revision}") if isinstance(recorded, dict) else None
    if not isinstance(entry, dict):
        return None
    return Signals(
        requests=int(entry.get("requests", 0)),
        errors=int(entry.get("errors", 0)),
        p99_latency_ms=_number(entry.get("p99_latency_ms")),
        drift_share=_number(entry.get("drift_share")),
    )


def _number(value: Any) -> float | None:
    return None if value is None else float(value)


_SAMPLE = re.compile(r"^(?P<name>[a-z_]+)(?:\{(?P<labels>[^}]*)\})?\s+(?P<value>\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse_prometheus(text: str) -> list[tuple[str, dict[str, str], float]]:
    samples = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line.strip())
        if match is None:
            continue
        labels = dict(_LABEL.findall(match.group("labels") or ""))
        try:
            samples.append((match.group("name"), labels, float(match.group("value"))))
        except ValueError:
            continue
    return samples


def revision_signals(address: str, *, timeout: float = 2.0) -> Signals | None:
    """A local revision's counters from its `GET /metrics`: requests, 5xx answers, p99 from its histogram."""
    try:
        with urllib.request.urlopen(address.rstrip("/") + "/metrics", timeout=timeout) as answer:  # noqa: S310
            text = answer.read().decode("utf-8", "replace")
    except OSError as exc:
        log.info("reading %s/metrics failed: %s", address, exc)
        return None
    requests = errors = 0
    buckets: dict[float, float] = {}
    for name, labels, value in parse_prometheus(text):
        if name == "serving_requests_total":
            requests += int(value)
            if labels.get("status", "").startswith("5"):
                errors += int(value)
        elif name == "serving_request_duration_seconds_bucket":
            bound = float("inf") if labels.get("le") == "+Inf" else float(labels.get("le", "inf"))
            buckets[bound] = buckets.get(bound, 0.0) + value
    # The histogram's bounds are in seconds; the objective is in milliseconds.
    p99 = histogram_quantile(list(buckets.items()), 0.99)
    return Signals(requests=requests, errors=errors, p99_latency_ms=None if p99 is None else p99 * 1000.0)
