"""The CloudWatch metrics source against botocore's Stubber (moto has no trimmed-count statistics): every request and
answer is checked against the real GetMetricData model, and the answers are what CloudWatch would compute from the
serving runtime's own EMF lines."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.client import BaseClient
from botocore.stub import Stubber

from serving.metrics import BUCKETS_MS, OVERFLOW_MS, Minute
from tests.fixtures.cloudwatch import NAMESPACE, REGION, answer, emf_lines, get_metric_data_request, minute
from workers.errors import BackendError
from workers.metrics import cloudwatch
from workers.metrics.cloudwatch import (
    BUCKET_STATS,
    MAX_QUERIES_PER_CALL,
    QUERIES_PER_REVISION,
    CloudWatchMetrics,
    bucket_bounds,
    build_queries,
)

START = datetime(2026, 12, 1, 14, 0, tzinfo=UTC)
END = datetime(2026, 12, 1, 14, 10, tzinfo=UTC)


def request(queries: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return get_metric_data_request(queries, START, END, **extra)


# The statistics asked for


def test_every_bucket_bound_lies_strictly_between_edges_so_inclusivity_never_matters() -> None:
    bounds = bucket_bounds()
    assert len(bounds) == len(BUCKETS_MS) == len(BUCKET_STATS)
    for i, (edge, (lo, hi)) in enumerate(zip(BUCKETS_MS, bounds, strict=True)):
        assert lo < edge < hi
        if i > 0:
            assert BUCKETS_MS[i - 1] < lo and bounds[i - 1][1] == lo  # the buckets tile the line, no gaps
        if i + 1 < len(BUCKETS_MS):
            assert hi < BUCKETS_MS[i + 1]
    for stat in BUCKET_STATS:  # CloudWatch takes bounds with up to 10 decimal places
        assert re.fullmatch(r"TC\(\d+(\.\d{1,10})?:\d+(\.\d{1,10})?\)", stat), stat
    assert BUCKET_STATS[0] == "TC(0:0.375)" and BUCKET_STATS[-1] == "TC(7500:15000)"


def test_a_full_call_of_queries_fits_the_limits() -> None:
    per_call = MAX_QUERIES_PER_CALL // QUERIES_PER_REVISION
    revisions = [f"d{n}" for n in range(per_call)]
    queries, series = build_queries(namespace=NAMESPACE, service="bc-production", revisions=revisions)

    assert QUERIES_PER_REVISION == 4 + 2 + len(BUCKETS_MS)
    assert len(queries) == per_call * QUERIES_PER_REVISION <= 500
    ids = [q["Id"] for q in queries]
    assert len(set(ids)) == len(ids) == len(series)
    assert all(re.fullmatch(r"[a-z][A-Za-z0-9_]*", i) for i in ids)
    stats = {q["MetricStat"]["Stat"] for q in queries}
    assert stats == {"Sum", "SampleCount", *BUCKET_STATS}
    assert {q["MetricStat"]["Period"] for q in queries} == {60}
    first = queries[0]["MetricStat"]["Metric"]
    assert first["Dimensions"] == [{"Name": "Service", "Value": "bc-production"}, {"Name": "Revision", "Value": "d0"}]


@pytest.mark.parametrize("bad", ["", "x" * 1025])
def test_a_revision_that_cannot_be_a_dimension_value_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="revision"):
        build_queries(namespace=NAMESPACE, service="svc", revisions=["d1", bad])


# Reading the minutes back


def test_the_histogram_comes_back_from_trimmed_counts(stubbed: tuple[BaseClient, Stubber]) -> None:
    client, stubber = stubbed
    t5, t6 = START + timedelta(minutes=5), START + timedelta(minutes=6)
    # Two tasks of d7 in the same minutes (CloudWatch adds them up), one of d9; some requests slower than 10 s.
    task_a = [
        minute(t5, [0, 3, 10, 4, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2, 1], errors=1, client_errors=2),
        minute(t6, [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], capture_dropped_rows=5),
    ]
    task_b = [minute(t5, [0, 0, 1, 0, 0, 7, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0], errors=2)]
    other = [minute(t6, [0, 0, 0, 0, 0, 0, 0, 0, 50, 0, 0, 0, 0, 0, 0, 0], client_errors=1)]
    idle = Minute(start=int((START + timedelta(minutes=7)).timestamp()))  # a line with no requests: no Latency
    lines = (
        emf_lines("bc-production", "d7", [*task_a, idle])
        + emf_lines("bc-production", "d7", task_b)
        + emf_lines("bc-production", "d9", other)
        + emf_lines("other-service", "d7", task_b)
    )
    queries, _ = build_queries(namespace=NAMESPACE, service="bc-production", revisions=["d7", "d9"])
    stubber.add_response("get_metric_data", {"MetricDataResults": answer(queries, lines)}, request(queries))

    got = CloudWatchMetrics(region=REGION, client=client).minutes(
        service="bc-production", revisions=["d7", "d9"], start=START, end=END
    )

    def expected_counts(*minutes: Minute) -> list[int]:
        # EmfSink reports the slower-than-10-s requests beyond every bucket: they come back as slower, as sent.
        return [sum(m.counts[i] for m in minutes) for i in range(len(BUCKETS_MS) + 1)]

    d7 = got["d7"]
    assert [m["minute"] for m in d7] == ["2026-12-01T14:05:00Z", "2026-12-01T14:06:00Z", "2026-12-01T14:07:00Z"]
    assert d7[0]["latency_ms_counts"] == expected_counts(task_a[0], task_b[0])
    assert d7[0]["requests"] == task_a[0].requests + task_b[0].requests == sum(d7[0]["latency_ms_counts"])
    assert (d7[0]["errors"], d7[0]["client_errors"]) == (3, 2)
    # Each value at its bucket's upper edge: the sum CloudWatch holds is the edges' sum, not the measured one.
    edges = (*BUCKETS_MS, OVERFLOW_MS)
    edge_sum = sum(c * edges[i] for i, c in enumerate(expected_counts(task_a[0], task_b[0])))
    assert d7[0]["latency_ms_sum"] == pytest.approx(edge_sum)
    assert d7[1]["latency_ms_counts"] == expected_counts(task_a[1])
    assert d7[1]["capture_dropped_rows"] == 5
    assert d7[2] == {
        "minute": "2026-12-01T14:07:00Z",
        "requests": 0,
        "errors": 0,
        "client_errors": 0,
        "rows": 0,
        "latency_ms_counts": [0] * 16,
        "latency_ms_sum": 0.0,
        "captured_rows": 0,
        "capture_dropped_rows": 0,
    }
    assert [(m["minute"], m["requests"], m["client_errors"]) for m in got["d9"]] == [("2026-12-01T14:06:00Z", 50, 1)]
    assert got["d9"][0]["latency_ms_counts"] == expected_counts(other[0])


def test_a_value_above_the_last_bucket_counts_as_slower(stubbed: tuple[BaseClient, Stubber]) -> None:
    client, stubber = stubbed
    queries, _ = build_queries(namespace=NAMESPACE, service="svc", revisions=["d1"])
    at = [START + timedelta(minutes=1)]
    values = {"r0_requests": 4.0, "r0_latency_count": 4.0, "r0_latency_sum": 60_001.0, "r0_b00": 1.0}
    results = [
        {"Id": q["Id"], "Timestamps": at, "Values": [values.get(q["Id"], 0.0)], "StatusCode": "Complete"}
        for q in queries
    ]
    stubber.add_response("get_metric_data", {"MetricDataResults": results}, request(queries))

    (only,) = CloudWatchMetrics(region=REGION, client=client).minutes(
        service="svc", revisions=["d1"], start=START, end=END
    )["d1"]

    assert only["latency_ms_counts"] == [1] + [0] * 14 + [3]


def test_results_spread_over_pages_are_put_back_together(stubbed: tuple[BaseClient, Stubber]) -> None:
    client, stubber = stubbed
    lines = emf_lines("svc", "d3", [minute(START + timedelta(minutes=m), [0, 0, 2 + m] + [0] * 13) for m in range(4)])
    queries, _ = build_queries(namespace=NAMESPACE, service="svc", revisions=["d3"])
    full = answer(queries, lines)
    # CloudWatch paginates by data points: the first page holds the oldest two minutes of every query.
    first = [
        {**r, "Timestamps": r["Timestamps"][:2], "Values": r["Values"][:2], "StatusCode": "PartialData"} for r in full
    ]
    second = [{**r, "Timestamps": r["Timestamps"][2:], "Values": r["Values"][2:]} for r in full]
    stubber.add_response("get_metric_data", {"MetricDataResults": first, "NextToken": "page-2"}, request(queries))
    stubber.add_response("get_metric_data", {"MetricDataResults": second}, request(queries, NextToken="page-2"))

    got = CloudWatchMetrics(region=REGION, client=client).minutes(service="svc", revisions=["d3"], start=START, end=END)

    assert [(m["minute"][11:16], m["requests"], m["latency_ms_counts"][2]) for m in got["d3"]] == [
        ("14:00", 2, 2),
        ("14:01", 3, 3),
        ("14:02", 4, 4),
        ("14:03", 5, 5),
    ]


def test_more_revisions_than_one_call_holds_take_two_calls(stubbed: tuple[BaseClient, Stubber]) -> None:
    client, stubber = stubbed
    per_call = MAX_QUERIES_PER_CALL // QUERIES_PER_REVISION
    revisions = [f"d{n}" for n in range(1, per_call + 2)]
    for chunk in (revisions[:per_call], revisions[per_call:]):
        queries, _ = build_queries(namespace="Team/Serving", service="svc", revisions=chunk)
        stubber.add_response("get_metric_data", {"MetricDataResults": []}, request(queries))

    got = CloudWatchMetrics(region=REGION, namespace="Team/Serving", client=client).minutes(
        service="svc", revisions=revisions, start=START + timedelta(seconds=42), end=END + timedelta(seconds=59)
    )

    assert got == {revision: [] for revision in revisions}


def test_an_empty_window_asks_nothing(stubbed: tuple[BaseClient, Stubber]) -> None:
    client, _ = stubbed
    source = CloudWatchMetrics(region=REGION, client=client)
    assert source.minutes(service="svc", revisions=["d1"], start=END, end=END + timedelta(seconds=30)) == {"d1": []}
    with pytest.raises(ValueError, match="time zone"):
        source.minutes(service="svc", revisions=["d1"], start=datetime(2026, 1, 1), end=END)


# Errors


def test_throttling_is_a_retryable_error(stubbed: tuple[BaseClient, Stubber]) -> None:
    client, stubber = stubbed
    stubber.add_client_error("get_metric_data", "Throttling", "Rate exceeded", http_status_code=400)

    with pytest.raises(BackendError) as caught:
        CloudWatchMetrics(region=REGION, client=client).minutes(service="svc", revisions=["d1"], start=START, end=END)

    assert caught.value.permanent is False
    assert "Could not read the metrics of service svc from CloudWatch" in str(caught.value)
    assert "Throttling (Rate exceeded)" in str(caught.value)


def test_missing_permission_is_a_permanent_error(stubbed: tuple[BaseClient, Stubber]) -> None:
    client, stubber = stubbed
    stubber.add_client_error(
        "get_metric_data", "AccessDenied", "not authorized to perform: cloudwatch:GetMetricData", http_status_code=403
    )

    with pytest.raises(BackendError, match="cloudwatch:GetMetricData") as caught:
        CloudWatchMetrics(region=REGION, client=client).minutes(service="svc", revisions=["d1"], start=START, end=END)

    assert caught.value.permanent is True


@pytest.mark.parametrize(("status", "permanent"), [("Forbidden", True), ("InternalError", False)])
def test_a_query_that_failed_fails_the_read(stubbed: tuple[BaseClient, Stubber], status: str, permanent: bool) -> None:
    client, stubber = stubbed
    queries, _ = build_queries(namespace=NAMESPACE, service="svc", revisions=["d1"])
    results = [{"Id": q["Id"], "Timestamps": [], "Values": [], "StatusCode": "Complete"} for q in queries]
    results[5] = {**results[5], "StatusCode": status, "Messages": [{"Code": status, "Value": "no"}]}
    stubber.add_response("get_metric_data", {"MetricDataResults": results}, request(queries))

    with pytest.raises(BackendError, match=f"r0_latency_sum answered {status}") as caught:
        CloudWatchMetrics(region=REGION, client=client).minutes(service="svc", revisions=["d1"], start=START, end=END)

    assert caught.value.permanent is permanent


def test_partial_data_without_a_token_is_retried_later_not_taken(stubbed: tuple[BaseClient, Stubber]) -> None:
    client, stubber = stubbed
    queries, _ = build_queries(namespace=NAMESPACE, service="svc", revisions=["d1"])
    results = [{"Id": q["Id"], "Timestamps": [START], "Values": [1.0], "StatusCode": "PartialData"} for q in queries]
    stubber.add_response("get_metric_data", {"MetricDataResults": results}, request(queries))

    with pytest.raises(BackendError, match="PartialData") as caught:
        CloudWatchMetrics(region=REGION, client=client).minutes(service="svc", revisions=["d1"], start=START, end=END)

    assert caught.value.permanent is False


def test_endless_pagination_stops(stubbed: tuple[BaseClient, Stubber], monkeypatch: pytest.MonkeyPatch) -> None:
    client, stubber = stubbed
    monkeypatch.setattr(cloudwatch, "MAX_PAGES", 2)
    queries, _ = build_queries(namespace=NAMESPACE, service="svc", revisions=["d1"])
    stubber.add_response("get_metric_data", {"MetricDataResults": [], "NextToken": "a"}, request(queries))
    stubber.add_response(
        "get_metric_data", {"MetricDataResults": [], "NextToken": "b"}, request(queries, NextToken="a")
    )

    with pytest.raises(BackendError, match="still paginating after 2 pages") as caught:
        CloudWatchMetrics(region=REGION, client=client).minutes(service="svc", revisions=["d1"], start=START, end=END)

    assert caught.value.permanent is False
