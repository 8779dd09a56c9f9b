"""The serving runtime's per-minute series read back from CloudWatch: the aws backend's metrics source.

On AWS every serving task writes one Embedded Metric Format line a minute (serving.metrics.EmfSink): namespace
METRICS_NAMESPACE, dimension sets [Service] and [Service, Revision], the counters Requests, Errors, ClientErrors and
CaptureDroppedRows, and Latency as Values/Counts with each value at its histogram bucket's upper edge
(serving.metrics.BUCKETS_MS). CloudWatch adds up the lines of all of a revision's tasks. `CloudWatchMetrics.minutes`
asks GetMetricData, for each (Service, Revision) at a 60-second period, for:

- `Sum` of each counter;
- `SampleCount` and `Sum` of Latency;
- the trimmed count `TC(lo:hi)` of Latency for each bucket, `lo` and `hi` halfway between the bucket's edge and its
  neighbours'. CloudWatch's statistics definitions give the bounds of trimmed statistics and of percentile rank as
  lower-exclusive, upper-inclusive (TM(150:1000) drops values <= 150 and > 1000); the bounds here lie strictly
  between edges and every value sits exactly on one, so the inclusivity never matters and each value is counted in
  its own bucket alone.
- the requests slower than the last edge: SampleCount less the buckets' counts. EmfSink reports them at the last
  edge, so today they are counted in the last bucket; a value reported above 1.5 × the last edge would land here.

It turns the answers into the ingest format's minutes (`{"minute", "requests", "errors", "client_errors", "rows",
"latency_ms_counts", "latency_ms_sum", "captured_rows", "capture_dropped_rows"}`; EMF carries no row counts, so
those are 0). Limits, from botocore's service model and the GetMetricData reference: at most 500 queries a call;
query Ids unique in the call, of letters, digits and underscores, starting with a lowercase letter; Period a multiple
of 60; StartTime inclusive and EndTime exclusive, sent on whole minutes; the answer paginates by NextToken once
MaxDatapoints (100,800 by default) data points are returned, results of the same query spread over pages; data at a
60-second period is kept 15 days.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.client import BaseClient

from serving.metrics import BUCKETS_MS
from workers.aws import aws_client, aws_errors
from workers.errors import BackendError

log = logging.getLogger("workers.metrics")

DEFAULT_NAMESPACE = "ControlPlane/Serving"
PERIOD_SECONDS = 60
MAX_QUERIES_PER_CALL = 500
# A call's answer for a day of minutes fits in a few pages; more than this means something keeps handing out tokens.
MAX_PAGES = 50
# GetMetricData keeps 60-second data this long; older minutes only exist as 5-minute or hourly aggregates.
ONE_MINUTE_RETENTION = timedelta(days=15)
DIMENSION_VALUE_MAX = 1024
# (minute field, EMF metric) for the counters, each read as Sum.
COUNTERS: tuple[tuple[str, str], ...] = (
    ("requests", "Requests"),
    ("errors", "Errors"),
    ("client_errors", "ClientErrors"),
    ("capture_dropped_rows", "CaptureDroppedRows"),
)
LATENCY = "Latency"
QUERY_ID = re.compile(r"[a-z][A-Za-z0-9_]{0,254}")


def _number(value: float) -> str:
    """A bound as CloudWatch takes it: plain decimal, at most 10 decimal places, no trailing zeros."""
    return f"{value:.10f}".rstrip("0").rstrip(".")


def bucket_bounds(edges: Sequence[float] = BUCKETS_MS) -> list[tuple[float, float]]:
    """(lo, hi) for each bucket: halfway to the edge below (0 for the first) and to the edge above (the last edge is
    taken to be followed by twice itself)."""
    bounds = []
    for i, edge in enumerate(edges):
        lo = 0.0 if i == 0 else (edges[i - 1] + edge) / 2
        above = edges[i + 1] if i + 1 < len(edges) else 2 * edge
        bounds.append((lo, (edge + above) / 2))
    return bounds


def bucket_stats(edges: Sequence[float] = BUCKETS_MS) -> list[str]:
    """The trimmed-count statistic that counts each bucket's values, e.g. `TC(0.375:0.75)` for the 0.5 ms bucket."""
    return [f"TC({_number(lo)}:{_number(hi)})" for lo, hi in bucket_bounds(edges)]


BUCKET_STATS = tuple(bucket_stats())
QUERIES_PER_REVISION = len(COUNTERS) + 2 + len(BUCKET_STATS)


@dataclass(frozen=True)
class Series:
    """What one query's results are: a counter, the latency's count or sum, or one bucket's count."""

    revision: str
    field: str  # a COUNTERS field, "latency_count", "latency_sum" or "bucket"
    bucket: int = -1


def _dimension_value(name: str, value: str) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= DIMENSION_VALUE_MAX:
        raise ValueError(f"{name} must be a CloudWatch dimension value (1-{DIMENSION_VALUE_MAX} characters): {value!r}")
    return value


def build_queries(
    *, namespace: str, service: str, revisions: Sequence[str]
) -> tuple[list[dict[str, Any]], dict[str, Series]]:
    """The GetMetricData queries for `revisions` of `service` (in order, QUERIES_PER_REVISION each), and what each
    query Id stands for. Ids are `r<index>_<what>`, so they stay short and valid whatever the revision is called."""
    _dimension_value("service", service)
    queries: list[dict[str, Any]] = []
    series: dict[str, Series] = {}

    def add(query_id: str, metric: str, stat: str, what: Series) -> None:
        assert QUERY_ID.fullmatch(query_id), query_id
        queries.append(
            {
                "Id": query_id,
                "MetricStat": {
                    "Metric": {
                        "Namespace": namespace,
                        "MetricName": metric,
                        "Dimensions": [
                            {"Name": "Service", "Value": service},
                            {"Name": "Revision", "Value": what.revision},
                        ],
                    },
                    "Period": PERIOD_SECONDS,
                    "Stat": stat,
                },
                "ReturnData": True,
            }
        )
        series[query_id] = what

    for index, revision in enumerate(dict.fromkeys(revisions)):
        _dimension_value("revision", revision)
        for field, metric in COUNTERS:
            add(f"r{index}_{field}", metric, "Sum", Series(revision, field))
        add(f"r{index}_latency_count", LATENCY, "SampleCount", Series(revision, "latency_count"))
        add(f"r{index}_latency_sum", LATENCY, "Sum", Series(revision, "latency_sum"))
        for bucket, stat in enumerate(BUCKET_STATS):
            add(f"r{index}_b{bucket:02d}", LATENCY, stat, Series(revision, "bucket", bucket))
    return queries, series


def whole_minute(moment: datetime) -> datetime:
    """`moment` in UTC, rounded down to its minute."""
    if moment.tzinfo is None:
        raise ValueError(f"{moment!r} has no time zone: pass UTC times")
    moment = moment.astimezone(UTC)
    return moment.replace(second=0, microsecond=0)


def _minute_key(timestamp: datetime) -> int:
    if timestamp.tzinfo is None:  # CloudWatch's timestamps are UTC
        timestamp = timestamp.replace(tzinfo=UTC)
    return int(timestamp.timestamp()) // PERIOD_SECONDS * PERIOD_SECONDS


def _iso(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _count(value: float | None) -> int:
    if value is None or not math.isfinite(value) or value <= 0:
        return 0
    return int(round(value))


def minutes_from_values(
    series: dict[str, Series], values: dict[str, dict[int, float]], revisions: Sequence[str]
) -> dict[str, list[dict[str, Any]]]:
    """Each revision's minutes (in time order) from the queries' values by minute; a minute is there when any of its
    series has a data point in it."""
    by_revision: dict[str, dict[int, dict[str, Any]]] = {revision: {} for revision in dict.fromkeys(revisions)}
    for query_id, points in values.items():
        what = series.get(query_id)
        if what is None:
            continue
        minutes = by_revision.setdefault(what.revision, {})
        for epoch, value in points.items():
            minute = minutes.setdefault(epoch, {"buckets": [0] * len(BUCKET_STATS)})
            if what.field == "bucket":
                minute["buckets"][what.bucket] = _count(value)
            else:
                minute[what.field] = value
    result: dict[str, list[dict[str, Any]]] = {}
    for revision, minutes in by_revision.items():
        rows = []
        for epoch in sorted(minutes):
            found = minutes[epoch]
            buckets: list[int] = found["buckets"]
            sample_count = _count(found.get("latency_count"))
            slower = max(0, sample_count - sum(buckets))
            latency_sum = found.get("latency_sum") or 0.0
            requests = _count(found["requests"]) if "requests" in found else sample_count
            rows.append(
                {
                    "minute": _iso(epoch),
                    "requests": requests,
                    "errors": _count(found.get("errors")),
                    "client_errors": _count(found.get("client_errors")),
                    "rows": 0,
                    "latency_ms_counts": [*buckets, slower],
                    "latency_ms_sum": round(float(latency_sum), 3) if math.isfinite(latency_sum) else 0.0,
                    "captured_rows": 0,
                    "capture_dropped_rows": _count(found.get("capture_dropped_rows")),
                }
            )
        result[revision] = rows
    return result


class CloudWatchMetrics:
    """Reads a service's revisions' minutes from CloudWatch through the project's one client factory."""

    def __init__(
        self,
        *,
        region: str,
        namespace: str = DEFAULT_NAMESPACE,
        endpoint_url: str | None = None,
        client: BaseClient | None = None,
    ) -> None:
        if not namespace or namespace.startswith(":") or len(namespace) > 255:
            raise ValueError(f"METRICS_NAMESPACE must be a CloudWatch namespace (1-255 characters): {namespace!r}")
        self.namespace = namespace
        self.client = client or aws_client("cloudwatch", region=region, endpoint_url=endpoint_url)

    def minutes(
        self, *, service: str, revisions: Sequence[str], start: datetime, end: datetime
    ) -> dict[str, list[dict[str, Any]]]:
        """The minutes in [start, end) (rounded down to whole minutes) of each of `revisions` of `service` that
        CloudWatch has data for, by revision. Raises BackendError (retryable for throttling, timeouts, CloudWatch's
        own InternalError or an incomplete answer; permanent for a refusal such as missing permissions)."""
        start, end = whole_minute(start), whole_minute(end)
        wanted = list(dict.fromkeys(revisions))
        if end <= start or not wanted:
            return {revision: [] for revision in wanted}
        per_call = MAX_QUERIES_PER_CALL // QUERIES_PER_REVISION
        result: dict[str, list[dict[str, Any]]] = {}
        for first in range(0, len(wanted), per_call):
            chunk = wanted[first : first + per_call]
            queries, series = build_queries(namespace=self.namespace, service=service, revisions=chunk)
            values = self._get_metric_data(service, queries, start, end)
            result.update(minutes_from_values(series, values, chunk))
        return result

    def _get_metric_data(
        self, service: str, queries: list[dict[str, Any]], start: datetime, end: datetime
    ) -> dict[str, dict[int, float]]:
        """Every query's values by minute, following NextToken to the last page."""
        assert len(queries) <= MAX_QUERIES_PER_CALL
        action = f"read the metrics of service {service} from CloudWatch (namespace {self.namespace})"
        values: dict[str, dict[int, float]] = {query["Id"]: {} for query in queries}
        token: str | None = None
        for _page in range(MAX_PAGES):
            params: dict[str, Any] = {
                "MetricDataQueries": queries,
                "StartTime": start,
                "EndTime": end,
                "ScanBy": "TimestampAscending",
            }
            if token:
                params["NextToken"] = token
            with aws_errors(action):
                answer = self.client.get_metric_data(**params)
            for message in answer.get("Messages") or []:
                log.warning("CloudWatch on %s: %s %s", service, message.get("Code"), message.get("Value"))
            token = answer.get("NextToken") or None
            for result in answer.get("MetricDataResults") or []:
                query_id = str(result.get("Id"))
                status = result.get("StatusCode", "Complete")
                if status in ("Forbidden", "InternalError"):
                    detail = "; ".join(f"{m.get('Code')}: {m.get('Value')}" for m in result.get("Messages") or [])
                    raise BackendError(
                        f"Could not {action}: query {query_id} answered {status}" + (f" ({detail})" if detail else ""),
                        permanent=status == "Forbidden",
                    )
                if status == "PartialData" and token is None:
                    raise BackendError(
                        f"Could not {action}: query {query_id} answered PartialData with no NextToken to read on",
                        permanent=False,
                    )
                points = values.setdefault(query_id, {})
                for timestamp, value in zip(result.get("Timestamps") or [], result.get("Values") or [], strict=False):
                    points[_minute_key(timestamp)] = float(value)
            if token is None:
                return values
        raise BackendError(f"Could not {action}: still paginating after {MAX_PAGES} pages", permanent=False)
