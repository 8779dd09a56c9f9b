"""POST /api/v1/ingest/metrics/: the serving runtime's reports, taken whole or not at all, each part once."""

from __future__ import annotations

import copy
import json
import threading
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from monitoring.histograms import COUNTS_LENGTH
from monitoring.models import IngestPart, MetricPoint
from monitoring.services.ingest import service_ingest_token
from serving.metrics import BUCKETS_MS, FORMAT

pytestmark = pytest.mark.django_db
URL = "/api/v1/ingest/metrics/"


def this_minute() -> datetime:
    return timezone.now().astimezone(UTC).replace(second=0, microsecond=0)


def minute(at: datetime, part: str, *, requests: int = 4, slow: int = 1) -> dict[str, Any]:
    counts = [0] * COUNTS_LENGTH
    counts[3] = requests - slow
    counts[9] = slow
    return {
        "minute": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "part": part,
        "requests": requests,
        "errors": 1,
        "client_errors": 1,
        "rows": requests * 2,
        "latency_ms_counts": counts,
        "latency_ms_sum": 12.5,
        "captured_rows": 1,
        "capture_dropped_rows": 0,
    }


def payload(service: Any, *minutes: dict[str, Any]) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "service": service.name,
        "revision": "d1",
        "sent_at": "2026-12-01T14:06:02Z",
        "latency_buckets_ms": list(BUCKETS_MS),
        "minutes": list(minutes),
    }


def client_for(service: Any) -> APIClient:
    return APIClient(HTTP_AUTHORIZATION=f"Bearer {service_ingest_token(service)}")


def test_a_report_is_taken_and_a_resend_adds_nothing(served: Any) -> None:
    client = client_for(served)
    now = this_minute()
    body = payload(served, minute(now - timedelta(minutes=1), "p1"), minute(now, "p2", requests=2, slow=0))
    answer = client.post(URL, body, format="json")
    assert answer.status_code == 200, answer.json()
    assert answer.json() == {"service": served.name, "revision": "d1", "minutes": 2, "taken": 2, "duplicated": 0}
    again = client.post(URL, body, format="json")
    assert again.status_code == 200 and again.json()["taken"] == 0 and again.json()["duplicated"] == 2
    # A third part of the current minute adds to it.
    more = client.post(URL, payload(served, minute(now, "p3", requests=3, slow=3)), format="json")
    assert more.json()["taken"] == 1
    rows = {row.start: row for row in MetricPoint.objects.all()}
    assert rows[now - timedelta(minutes=1)].requests == 4
    current = rows[now]
    assert (current.requests, current.errors, current.client_errors, current.rows) == (5, 2, 2, 10)
    assert current.latency_counts[3] == 2 and current.latency_counts[9] == 3 and sum(current.latency_counts) == 5
    assert current.latency_sum_ms == pytest.approx(25.0) and current.source == "portal"


def _bad_cases(now: datetime) -> list[tuple[str, Any]]:
    """(the field the answer must name, how the good payload is spoiled)."""

    def at(path: str, value: Any) -> Any:
        def spoil(body: dict[str, Any]) -> None:
            target: Any = body
            keys = path.split(".")
            for key in keys[:-1]:
                target = target[int(key)] if key.isdigit() else target[key]
            target[keys[-1]] = value

        return spoil

    def drop(path: str) -> Any:
        def spoil(body: dict[str, Any]) -> None:
            body["minutes"][0].pop(path)

        return spoil

    too_many = [minute(now, f"x{i}") for i in range(121)]
    return [
        ("format", at("format", "controlplane.serving.metrics/2")),
        ("revision", at("revision", "d1; drop table")),
        ("latency_buckets_ms", at("latency_buckets_ms", [1.0, 2.0])),
        ("minutes", at("minutes", too_many)),
        ("minutes", at("minutes", [minute(now, "same"), minute(now, "same")])),
        ("minutes[0].minute", at("minutes.0.minute", (now + timedelta(seconds=30)).strftime("%Y-%m-%dT%H:%M:%SZ"))),
        ("minutes[0].minute", at("minutes.0.minute", (now + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ"))),
        ("minutes[0].minute", at("minutes.0.minute", (now - timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ"))),
        ("minutes[0].minute", at("minutes.0.minute", "yesterday")),
        ("minutes[0].requests", at("minutes.0.requests", -1)),
        ("minutes[0].requests", at("minutes.0.requests", "4")),
        ("minutes[0].requests", at("minutes.0.requests", True)),
        ("minutes[0].requests", drop("requests")),
        ("minutes[0].part", drop("part")),
        ("minutes[0].latency_ms_counts", at("minutes.0.latency_ms_counts", [4])),
        ("minutes[0].latency_ms_counts", at("minutes.0.latency_ms_counts", [1] * COUNTS_LENGTH)),
        ("minutes[0].latency_ms_counts[2]", at("minutes.0.latency_ms_counts", [0, 0, 5.5] + [0] * (COUNTS_LENGTH - 3))),
        ("minutes[0].errors", at("minutes.0.errors", 4)),
        ("minutes[0].latency_ms_sum", at("minutes.0.latency_ms_sum", -1)),
        ("minutes[0].surprise", at("minutes.0.surprise", 1)),
        ("minutes[0]", at("minutes", ["not a minute"])),
    ]


def test_each_bad_field_is_named_and_nothing_is_stored(served: Any) -> None:
    client = client_for(served)
    now = this_minute()
    good = payload(served, minute(now, "good"), minute(now - timedelta(minutes=1), "also-good"))
    for field, spoil in _bad_cases(now):
        body = copy.deepcopy(good)
        spoil(body)
        answer = client.post(URL, body, format="json")
        error = answer.json().get("error", {})
        assert answer.status_code == 400 and error.get("code") == "invalid", (field, answer.json())
        assert field in error["fields"], (field, error["fields"])
    assert not MetricPoint.objects.exists() and not IngestPart.objects.exists()
    malformed = client.post(URL, "{not json", content_type="application/json")
    assert malformed.status_code == 400 and malformed.json()["error"]["code"] == "parse_error"


def test_no_token_a_wrong_token_or_an_unknown_service_is_refused(served: Any) -> None:
    now = this_minute()
    body = payload(served, minute(now, "p1"))
    token = service_ingest_token(served)
    cases = [
        (APIClient(), body, 401),
        (APIClient(HTTP_AUTHORIZATION=f"Token {token}"), body, 401),
        (APIClient(HTTP_AUTHORIZATION="Bearer " + "0" * 64), body, 401),
        (APIClient(HTTP_AUTHORIZATION=f"Bearer {token}"), {**body, "service": "someone-else"}, 401),
    ]
    for client, sent, status in cases:
        answer = client.post(URL, sent, format="json")
        assert answer.status_code == status, answer.json()
        assert set(answer.json()["error"]) >= {"status", "code", "message"}
    assert 'Bearer realm="ingest"' in APIClient().post(URL, body, format="json")["WWW-Authenticate"]
    assert not MetricPoint.objects.exists()


def test_the_schema_documents_the_ingest(users: Any) -> None:
    client = APIClient()
    client.force_authenticate(users.data_scientist)
    schema = client.get("/api/v1/schema/", HTTP_ACCEPT="application/json").json()
    operation = schema["paths"]["/api/v1/ingest/metrics/"]["post"]
    assert operation["operationId"] == "ingest_metrics" and {"200", "400", "401", "413"} <= set(operation["responses"])


@pytest.mark.django_db(transaction=True)
def test_two_processes_posting_parts_of_the_same_minute_at_once_add_up_exactly(served: Any, live_server: Any) -> None:
    token = service_ingest_token(served)
    now = this_minute()
    barrier = threading.Barrier(2)
    failures: list[str] = []

    def send(name: str) -> None:
        barrier.wait()
        for i in range(8):
            body = json.dumps(payload(served, minute(now, f"{name}-{i}", requests=3, slow=1))).encode()
            request = urllib.request.Request(
                live_server.url + URL,
                data=body,
                method="POST",
                headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
            )
            try:
                with urllib.request.urlopen(request, timeout=30) as answer:
                    if json.loads(answer.read())["taken"] != 1:
                        failures.append(f"{name}-{i} not taken")
            except urllib.error.HTTPError as exc:
                failures.append(f"{name}-{i}: HTTP {exc.code} {exc.read()[:300]!r}")

    threads = [threading.Thread(target=send, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert failures == []
    row = MetricPoint.objects.get()
    assert (row.requests, row.errors, row.client_errors) == (48, 16, 16)
    assert row.latency_counts[3] == 32 and row.latency_counts[9] == 16
    assert IngestPart.objects.count() == 16


def test_a_body_over_the_limit_is_refused_unread_and_one_nested_too_deeply_is_a_400_naming_it(served: Any) -> None:
    from django.conf import settings

    assert settings.METRICS_INGEST_MAX_BYTES == 1024 * 1024
    anyone = APIClient(HTTP_AUTHORIZATION="Bearer x")  # the payload names the service: parsed before the token check
    good = json.dumps(payload(served, minute(this_minute(), "p1")))
    huge = good[:-1] + " " * settings.METRICS_INGEST_MAX_BYTES + "}"  # valid JSON, over the limit
    for sender in (anyone, client_for(served)):
        answer = sender.post(URL, huge, content_type="application/json")
        assert answer.status_code == 413, answer.content[:300]
        limit = settings.METRICS_INGEST_MAX_BYTES
        message = f"the body is {len(huge)} bytes, over the ingest's limit of {limit}: send fewer minutes"
        assert answer.json() == {"error": {"status": 413, "code": "too_large", "message": message}}

        deep = "[" * 100_000 + "]" * 100_000  # 200 KB, within the limit
        answer = sender.post(URL, deep, content_type="application/json")
        assert answer.status_code == 400, answer.content[:300]
        assert answer.json()["error"]["fields"] == {
            "body": ["nested too deeply: expected the ingest format's JSON object"]
        }

    # Nested just deep enough to parse, inside the fields, under the service's own token: each a 400, never a 500.
    for depth in (300, 450, 600, 800, 990):
        nested = "[" * depth + "]" * depth
        for field in ("minutes", "latency_buckets_ms", "revision", "service"):
            body = json.dumps({**payload(served, minute(this_minute(), "p1")), field: "?"})
            body = body.replace(f'"{field}": "?"', f'"{field}": {nested}')
            assert nested in body
            answer = client_for(served).post(URL, body, content_type="application/json")
            assert answer.status_code == 400, (depth, field, answer.content[:300])
    assert not MetricPoint.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_first_uses_of_a_token_racing_agree_on_one_token(served: Any) -> None:
    """Two deployments' revisions asking for a new service's token at once (each thread its own connection): one
    nonce wins, every caller gets the token of the hash stored, and that token is accepted."""
    from deployments.models import Service
    from monitoring.services.ingest import service_for_token, service_ingest_token
    from tests.fixtures.races import race

    Service.objects.filter(pk=served.pk).update(ingest_token_nonce="", ingest_token_sha256="")
    outcomes = race(*[lambda: service_ingest_token(Service.objects.get(pk=served.pk)) for _ in range(4)])
    tokens = {outcome.value for outcome in outcomes}
    assert all(outcome.error is None for outcome in outcomes), [o.error for o in outcomes]
    assert len(tokens) == 1, tokens
    (token,) = tokens
    found = service_for_token(served.name, token)
    assert found is not None and found.pk == served.pk
