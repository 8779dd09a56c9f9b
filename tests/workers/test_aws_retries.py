"""AWS throttling and 5xx, caused for real: a loopback server speaking Cost Explorer's JSON protocol answers
ThrottlingException (HTTP 400) or ServiceUnavailable (HTTP 503) as many times as the test says, then the real answer.

The project's client (workers.aws.aws_client, botocore's standard retry mode) retries with exponential backoff and
jitter; the delays botocore computes are recorded (and shortened, so the test takes no seconds), the call succeeds
once AWS does, or fails clearly after the fifth retry; and every retry and give-up is counted per day and call
(controlplane.models.AwsRetryCount) and shown on the status page.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from botocore.retries import standard
from django.urls import reverse

from controlplane.models import AwsRetryCount
from workers import aws
from workers.costs.cost_explorer import CostExplorerSource
from workers.errors import BackendError

pytestmark = pytest.mark.django_db


class FakeCostExplorer:
    """Answers the first `failures` requests with `error`, then every request with an empty page of costs."""

    def __init__(self) -> None:
        self.failures = 0
        self.error = ("ThrottlingException", 400)
        self.requests: list[str] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                fake.requests.append(self.headers.get("X-Amz-Target", ""))
                if len(fake.requests) <= fake.failures:
                    code, status = fake.error
                    body = {"__type": code, "message": "Rate exceeded" if status == 400 else "try later"}
                else:
                    status, body = 200, {"ResultsByTime": [], "DimensionValueAttributes": []}
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/x-amz-json-1.1")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeCostExplorer]:
    server = FakeCostExplorer()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    aws.clear_client_cache()
    yield server
    server.server.shutdown()
    aws.clear_client_cache()


@pytest.fixture
def delays(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The delays botocore's own backoff computes (kept), each slept a hundredth as long."""
    computed: list[float] = []
    original = standard.ExponentialBackoff.delay_amount

    def shortened(self: Any, context: Any) -> float:
        delay = original(self, context)
        computed.append(delay)
        return delay / 100

    monkeypatch.setattr(standard.ExponentialBackoff, "delay_amount", shortened)
    return computed


def pull(fake: FakeCostExplorer) -> Any:
    source = CostExplorerSource(region="us-east-1", endpoint_url=fake.url, today=lambda: date(2026, 11, 20))
    return source.daily_costs(date(2026, 11, 1), date(2026, 11, 3))


def counted() -> dict[str, tuple[int, int]]:
    return {row.operation: (row.retries, row.gave_up) for row in AwsRetryCount.objects.filter(service="ce")}


def test_throttling_is_retried_with_backoff_and_jitter_then_succeeds_and_is_counted(fake, delays) -> None:
    fake.failures = 3
    pulled = pull(fake)
    assert pulled.calls == 3  # one GetCostAndUsage per breakdown, each answered in the end
    assert len(fake.requests) == 6 and set(fake.requests) == {"AWSInsightsIndexService.GetCostAndUsage"}
    assert len(delays) == 3
    # Exponential backoff with full jitter: attempt n waits a random share of 2^(n-1) seconds.
    assert all(0 <= delay <= 2**n for n, delay in enumerate(delays))
    assert len(set(delays)) == 3
    assert counted() == {"GetCostAndUsage": (3, 0)}


def test_5xx_on_every_attempt_fails_clearly_after_five_retries_and_is_counted(fake, delays) -> None:
    fake.failures = 1000
    fake.error = ("ServiceUnavailableException", 503)
    with pytest.raises(BackendError) as failed:
        pull(fake)
    # CLIENT_CONFIG's retries={"max_attempts": 5} counts retries: six attempts in all, then botocore gives up.
    assert len(fake.requests) == 6
    assert failed.value.permanent is False  # the sync is tried again later
    assert "ServiceUnavailableException" in failed.value.message
    assert counted() == {"GetCostAndUsage": (5, 1)}


def test_the_status_page_shows_the_counts(fake, delays, client, users) -> None:
    fake.failures = 2
    pull(fake)
    client.force_login(users.admin)
    page = client.get(reverse("system-status")).content.decode()
    assert "AWS retries, last 7 days" in page
    assert "<td>ce</td><td>GetCostAndUsage</td><td>2</td><td>0</td>" in page
