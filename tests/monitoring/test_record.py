"""Recording minutes: the ingest adds parts (each once), CloudWatch replaces; the ingest token."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from controlplane.models import AuditEvent
from monitoring.histograms import COUNTS_LENGTH
from monitoring.models import IngestPart, MetricPoint
from monitoring.services import ingest
from monitoring.services.metrics import MinuteCounts, record_minutes

pytestmark = pytest.mark.django_db
MINUTE = datetime(2026, 12, 1, 14, 5, tzinfo=UTC)


def counts(**at: int) -> list[int]:
    values = [0] * COUNTS_LENGTH
    for index, count in at.items():
        values[int(index[1:])] = count
    return values


def test_parts_of_a_minute_add_up_and_a_part_is_taken_once(served: Any) -> None:
    first = MinuteCounts(MINUTE, requests=3, errors=1, latency_counts=counts(b2=3), latency_sum_ms=2.5, part="a")
    second = MinuteCounts(MINUTE, requests=2, client_errors=1, latency_counts=counts(b2=1, b15=1), part="b")
    assert record_minutes(served, "d1", [first], source="portal").taken == 1
    result = record_minutes(served, "d1", [first, second], source="portal")
    assert (result.taken, result.duplicated) == (1, 1)
    row = MetricPoint.objects.get()
    assert (row.requests, row.errors, row.client_errors, row.resolution) == (5, 1, 1, 60)
    assert row.latency_counts == counts(b2=4, b15=1) and row.latency_sum_ms == pytest.approx(2.5)
    assert IngestPart.objects.count() == 2


def test_cloudwatch_replaces_a_minute(served: Any) -> None:
    record_minutes(served, "d1", [MinuteCounts(MINUTE, requests=3, latency_counts=counts(b3=3))], source="cloudwatch")
    again = MinuteCounts(MINUTE, requests=7, latency_counts=counts(b4=7))
    record_minutes(served, "d1", [again], source="cloudwatch", replace=True)
    row = MetricPoint.objects.get()
    assert row.requests == 7 and row.latency_counts == counts(b4=7) and row.source == "cloudwatch"


def test_a_minute_with_the_wrong_number_of_counts_is_refused_and_nothing_is_stored(served: Any) -> None:
    good = MinuteCounts(MINUTE, requests=1, latency_counts=counts(b1=1), part="x")
    bad = MinuteCounts(MINUTE, requests=1, latency_counts=[1], part="y")
    with pytest.raises(ValueError, match="latency_counts"):
        record_minutes(served, "d1", [good, bad], source="portal")
    assert not MetricPoint.objects.exists() and not IngestPart.objects.exists()


def test_the_ingest_token_is_derived_hashed_checked_and_rotated(served: Any, users: Any) -> None:
    token = ingest.service_ingest_token(served)
    assert len(token) == 64 and ingest.service_ingest_token(served) == token
    served.refresh_from_db()
    assert served.ingest_token_sha256 and token not in (served.ingest_token_sha256, served.ingest_token_nonce)
    assert ingest.service_for_token(served.name, token) == served
    assert ingest.service_for_token(served.name, token[:-1] + ("1" if token.endswith("0") else "0")) is None
    assert ingest.service_for_token("no-such-service", token) is None
    with pytest.raises(Exception, match="deployment.deploy"):
        ingest.service_ingest_token_rotate(service=served, actor=users.data_scientist)
    new = ingest.service_ingest_token_rotate(service=served, actor=users.approver)
    assert new != token and ingest.service_ingest_token(served) == new
    assert ingest.service_for_token(served.name, token) is None and ingest.service_for_token(served.name, new)
    assert AuditEvent.objects.filter(action="service.ingest_token_rotate", object_id=str(served.pk)).count() == 1


@pytest.mark.django_db(transaction=True)
def test_two_processes_adding_parts_of_the_same_minutes_at_once_lose_nothing(served: Any) -> None:
    """Two writers (each its own database connection), the same minutes, different parts, started together."""
    import threading

    from django.db import connection

    barrier = threading.Barrier(2)
    failures: list[BaseException] = []

    def writer(name: str) -> None:
        try:
            barrier.wait()
            for i in range(10):
                minutes = [
                    MinuteCounts(
                        MINUTE.replace(minute=m), requests=2, latency_counts=counts(b4=1, b9=1), part=f"{name}{i}-{m}"
                    )
                    for m in (5, 6)
                ]
                record_minutes(served, "d1", minutes, source="portal")
        except BaseException as exc:  # noqa: BLE001  (reported below)
            failures.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=writer, args=(name,)) for name in "ab"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert failures == []
    rows = list(MetricPoint.objects.order_by("start"))
    assert [row.requests for row in rows] == [40, 40]
    assert all(row.latency_counts == counts(b4=20, b9=20) for row in rows)
    assert IngestPart.objects.count() == 40
