"""The CloudWatch pull: aws services' minutes land in metric points (source cloudwatch) from a Stubber-fed
CloudWatch (moto has no trimmed counts), replacing on a second pull; one pull per service; one service's failure
leaves the others' pulls alone."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.client import BaseClient
from botocore.stub import Stubber
from django.conf import settings

from deployments.models import Deployment, Service
from monitoring.models import MetricPoint, MetricPull
from monitoring.services import pull
from monitoring.services.metrics import MinuteCounts, oldest_ingest_minute, record_minutes
from tests.fixtures.cloudwatch import REGION, answer, emf_lines, get_metric_data_request, minute
from tests.monitoring.conftest import make_model_version, make_served
from workers.metrics.cloudwatch import CloudWatchMetrics, build_queries

pytestmark = pytest.mark.django_db
NOW = datetime(2026, 12, 1, 15, 0, 30, tzinfo=UTC)
# What the first pull of a service reads at NOW, with the default delay (120 s) and lookback (180 min).
END = datetime(2026, 12, 1, 14, 58, tzinfo=UTC)
START = END - timedelta(minutes=180)
ARN = "arn:aws:ecs:us-east-1:123456789012:task-definition/{name}:{n}"


def on_aws(service: Service, *, n: int = 1) -> Service:
    """The service as the aws backend leaves it: its current deployment's revision a task definition ARN (made the
    morning before the tests' NOW)."""
    Service.objects.filter(pk=service.pk).update(backend="aws")
    Deployment.objects.filter(pk=service.current_deployment_id).update(
        revision=ARN.format(name=service.name, n=n), created_at=datetime(2026, 12, 1, 9, tzinfo=UTC)
    )
    return Service.objects.get(pk=service.pk)


@pytest.fixture
def aws_service(served: Service) -> Service:
    return on_aws(served)


def source(client: BaseClient) -> CloudWatchMetrics:
    return CloudWatchMetrics(region=REGION, namespace=settings.SERVING_METRICS_NAMESPACE, client=client)


def fixed(moment: datetime) -> Callable[[], datetime]:
    return lambda: moment


class Meanwhile(CloudWatchMetrics):
    """The stubbed CloudWatch, running `meanwhile(service)` while each service's answer is on the wire."""

    def __init__(self, client: BaseClient, meanwhile: Callable[[str], None]) -> None:
        super().__init__(region=REGION, namespace=settings.SERVING_METRICS_NAMESPACE, client=client)
        self.meanwhile = meanwhile

    def minutes(self, *, service: str, **window: Any) -> dict[str, list[dict[str, Any]]]:
        found = super().minutes(service=service, **window)
        self.meanwhile(service)
        return found


def expect(
    stubber: Stubber, service: Service, revisions: list[str], lines: list[dict[str, Any]], **window: Any
) -> None:
    queries, _ = build_queries(namespace=settings.SERVING_METRICS_NAMESPACE, service=service.name, revisions=revisions)
    start, end = window.get("start", START), window.get("end", END)
    stubber.add_response(
        "get_metric_data",
        {"MetricDataResults": answer(queries, lines)},
        get_metric_data_request(queries, start, end),
    )


def test_the_settings_say_what_the_pull_does() -> None:
    from controlplane.celery import app

    assert (settings.METRICS_PULL_LOOKBACK_MINUTES, settings.METRICS_PULL_DELAY_SECONDS) == (180, 120)
    assert settings.CELERY_BEAT_SCHEDULE["monitoring-metrics-pull"] == {
        "task": "monitoring.tasks.metrics_pull",
        "schedule": 60.0,
    }
    assert "monitoring.tasks.metrics_pull" in app.tasks  # registered by monitoring.apps, beside autodiscovery
    assert app.amqp.router.route({}, "monitoring.tasks.metrics_pull")["queue"].name == "sync"


def test_a_pull_lands_cloudwatch_minutes_in_metric_points_and_a_second_replaces(
    aws_service: Service, stubbed: tuple[BaseClient, Stubber]
) -> None:
    client, stubber = stubbed
    revision = f"d{aws_service.current_deployment_id}"
    t56, t57 = END - timedelta(minutes=2), END - timedelta(minutes=1)
    first = [minute(t56, [0, 2, 5] + [0] * 13, errors=1), minute(t57, [0, 0, 0, 4] + [0] * 11 + [1])]
    expect(stubber, aws_service, [revision], emf_lines(aws_service.name, revision, first))

    summary = pull.metrics_pull(clock=fixed(NOW), source=source(client))

    assert (summary.services, summary.pulled, summary.failed, summary.minutes) == (1, 1, 0, 2)
    rows = list(MetricPoint.objects.filter(service=aws_service).order_by("start"))
    assert [(r.revision, r.start, r.source, r.resolution) for r in rows] == [
        (revision, t56, "cloudwatch", 60),
        (revision, t57, "cloudwatch", 60),
    ]
    assert (rows[0].requests, rows[0].errors, rows[0].latency_counts) == (7, 1, [0, 2, 5] + [0] * 13)
    assert rows[1].latency_counts == [0, 0, 0, 4] + [0] * 11 + [1]  # slower than 10 s, as EMF reports it
    progress = MetricPull.objects.get(service=aws_service)
    assert (progress.pulled_through, progress.failures, progress.claimed_until) == (END, 0, None)

    # A minute later: from 5 minutes before where it stopped (late lines), to a minute further; 14:57 grew meanwhile.
    later = [minute(t57, [0, 0, 0, 9] + [0] * 12), minute(END, [3] + [0] * 15)]
    expect(
        stubber,
        aws_service,
        [revision],
        emf_lines(aws_service.name, revision, later),
        start=END - timedelta(minutes=5),
        end=END + timedelta(minutes=1),
    )

    assert pull.metrics_pull(clock=fixed(NOW + timedelta(minutes=1)), source=source(client)).minutes == 2

    rows = list(MetricPoint.objects.filter(service=aws_service).order_by("start"))
    assert [(r.start, r.requests, r.latency_counts[3]) for r in rows] == [(t56, 7, 0), (t57, 9, 9), (END, 3, 0)]
    assert MetricPull.objects.get(service=aws_service).pulled_through == END + timedelta(minutes=1)


def test_a_failing_service_is_counted_and_logged_and_the_others_are_still_pulled(
    aws_service: Service,
    stubbed: tuple[BaseClient, Stubber],
    project: Any,
    staging: Any,
    users: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client, stubber = stubbed
    other = on_aws(
        make_served(make_model_version(project, users.data_scientist, model="churn"), staging, users, monkeypatch)
    )
    local = make_served(
        make_model_version(project, users.data_scientist, model="local-one"), staging, users, monkeypatch
    )
    stubber.add_client_error("get_metric_data", "Throttling", "Rate exceeded", http_status_code=400)
    revision = f"d{other.current_deployment_id}"
    expect(stubber, other, [revision], emf_lines(other.name, revision, [minute(END - timedelta(minutes=1), [1] * 16)]))

    with caplog.at_level(logging.WARNING, logger="monitoring.pull"):
        summary = pull.metrics_pull(clock=fixed(NOW), source=source(client))

    assert (summary.services, summary.pulled, summary.failed, summary.minutes) == (2, 1, 1, 1)
    failed = MetricPull.objects.get(service=aws_service)
    assert (failed.failures, failed.pulled_through, failed.claimed_until, failed.last_error_at) == (1, None, None, NOW)
    assert "Throttling (Rate exceeded)" in failed.last_error
    assert f"metrics pull of {aws_service.name} failed; the next pull tries again" in caplog.text
    assert MetricPoint.objects.filter(service=other, source="cloudwatch").count() == 1
    assert not MetricPull.objects.filter(service=local).exists()  # the local backend's services are not pulled


def test_a_service_another_pull_holds_is_skipped_until_its_lease_ends(
    aws_service: Service, stubbed: tuple[BaseClient, Stubber]
) -> None:
    client, stubber = stubbed
    MetricPull.objects.create(service=aws_service, attempt=3, claimed_until=NOW + timedelta(seconds=1))

    # No response is queued: a call to CloudWatch would fail the test.
    summary = pull.metrics_pull(clock=fixed(NOW), source=source(client))

    assert (summary.busy, summary.pulled) == (1, 0)
    held = MetricPull.objects.get(service=aws_service)
    assert (held.attempt, held.pulled_through) == (3, None)

    minute_on = {"start": START + timedelta(minutes=1), "end": END + timedelta(minutes=1)}
    expect(stubber, aws_service, [f"d{aws_service.current_deployment_id}"], [], **minute_on)
    later = NOW + timedelta(minutes=1)
    assert pull.metrics_pull(clock=fixed(later), source=source(client)).pulled == 1
    taken = MetricPull.objects.get(service=aws_service)
    assert (taken.attempt, taken.pulled_through, taken.last_pulled_at) == (4, END + timedelta(minutes=1), later)


def test_a_claim_is_exclusive(aws_service: Service) -> None:
    mine = pull._claim(aws_service.pk, NOW)
    assert mine == 1
    assert pull._claim(aws_service.pk, NOW + timedelta(seconds=10)) is None
    lease = timedelta(seconds=settings.METRICS_PULL_LEASE_SECONDS)
    assert pull._renewed(aws_service.pk, 1, NOW + timedelta(seconds=20))  # held: renewed to NOW + 20 s + lease
    assert not pull._renewed(aws_service.pk, 1, NOW + timedelta(seconds=20) + lease)  # ran out: not renewed
    assert pull._claim(aws_service.pk, NOW + timedelta(seconds=20) + lease) == 2  # the holder died: taken over
    assert not pull._renewed(aws_service.pk, 1, NOW + timedelta(seconds=21) + lease)  # the old holder's is gone


def test_a_pull_whose_claim_was_taken_over_while_it_read_cloudwatch_writes_nothing(
    aws_service: Service, stubbed: tuple[BaseClient, Stubber]
) -> None:
    client, stubber = stubbed
    revision = f"d{aws_service.current_deployment_id}"
    t57 = END - timedelta(minutes=1)
    expect(stubber, aws_service, [revision], emf_lines(aws_service.name, revision, [minute(t57, [1] * 16)]))
    lease = timedelta(seconds=settings.METRICS_PULL_LEASE_SECONDS)

    def newer_pull_takes_over(service: str) -> None:
        # The read outlasted the lease: the next beat's pull claims the service and writes fuller minutes first.
        assert pull._claim(aws_service.pk, NOW + lease) == 2
        fuller = MinuteCounts(start=t57, requests=30, latency_counts=[30] + [0] * 15)
        record_minutes(aws_service, revision, [fuller], source=MetricPoint.Source.CLOUDWATCH, replace=True)

    summary = pull.metrics_pull(clock=fixed(NOW), source=Meanwhile(client, newer_pull_takes_over))

    assert (summary.pulled, summary.busy, summary.minutes) == (0, 1, 0)
    row = MetricPoint.objects.get(service=aws_service)
    assert (row.start, row.requests, row.latency_counts[0]) == (t57, 30, 30)  # the older read overwrote nothing
    progress = MetricPull.objects.get(service=aws_service)
    assert (progress.attempt, progress.claimed_until, progress.pulled_through) == (2, NOW + 2 * lease, None)


def test_each_service_is_claimed_and_pulled_on_the_clock_of_its_turn(
    aws_service: Service,
    stubbed: tuple[BaseClient, Stubber],
    project: Any,
    staging: Any,
    users: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client, stubber = stubbed
    other = on_aws(
        make_served(make_model_version(project, users.data_scientist, model="churn"), staging, users, monkeypatch)
    )
    mine, theirs = f"d{aws_service.current_deployment_id}", f"d{other.current_deployment_id}"
    late = timedelta(minutes=4)  # the first service's calls are slow, though within its lease
    expect(
        stubber, aws_service, [mine], emf_lines(aws_service.name, mine, [minute(END - timedelta(minutes=1), [1] * 16)])
    )
    expect(stubber, other, [theirs], [], start=START + late, end=END + late)
    clock = {"now": NOW}
    claims: dict[str, datetime | None] = {}

    def slow_first(service: str) -> None:
        claims[service] = MetricPull.objects.get(service__name=service).claimed_until
        clock["now"] = NOW + late

    summary = pull.metrics_pull(clock=lambda: clock["now"], source=Meanwhile(client, slow_first))

    assert (summary.pulled, summary.minutes) == (2, 1)  # the first still held its lease when it wrote
    lease = timedelta(seconds=settings.METRICS_PULL_LEASE_SECONDS)
    assert claims == {aws_service.name: NOW + lease, other.name: NOW + late + lease}
    assert MetricPull.objects.get(service=other).last_pulled_at == NOW + late


def test_the_window_starts_where_the_last_pull_stopped_and_never_reads_past_what_cloudwatch_keeps() -> None:
    assert pull.pull_window(None, NOW) == (START, END)
    assert pull.pull_window(END - timedelta(minutes=1), NOW) == (END - timedelta(minutes=6), END)
    week = END - timedelta(days=7)
    assert pull.pull_window(week, NOW) == (week - timedelta(minutes=5), week - timedelta(minutes=5) + timedelta(days=1))
    start, _ = pull.pull_window(END - timedelta(days=30), NOW)
    assert start == oldest_ingest_minute(NOW) == datetime(2026, 11, 17, 16, tzinfo=UTC)  # kept 14 days


def test_the_pull_never_rewrites_minutes_the_rollup_may_have_taken(settings: Any) -> None:
    settings.METRICS_ROLLUP_AFTER_DAYS = 1  # shorter than CloudWatch keeps minutes: its floor is the stricter one
    floor = oldest_ingest_minute(NOW)
    assert floor == datetime(2026, 11, 30, 16, tzinfo=UTC)
    assert pull.pull_window(END - timedelta(days=3), NOW) == (floor, END)
    assert pull.pull_window(floor + timedelta(minutes=2), NOW) == (floor, END)  # the overlap stops at it too


def test_the_revisions_asked_for_are_those_whose_tasks_may_have_run_in_the_window(aws_service: Service) -> None:
    day = datetime(2026, 12, 1, tzinfo=UTC)

    def at(hour: int, minute: int = 0) -> datetime:
        return day + timedelta(hours=hour, minutes=minute)

    first = Deployment.objects.get(pk=aws_service.current_deployment_id)
    arn1, arn2, arn3 = (ARN.format(name=aws_service.name, n=n) for n in (1, 2, 3))
    Deployment.objects.filter(pk=first.pk).update(revision=arn1, created_at=at(10), finished_at=at(10, 5))

    def add(created: datetime, finished: datetime, revision: str, status: str, **fields: Any) -> Deployment:
        made = Deployment.objects.create(
            service=aws_service,
            model_version=first.model_version,
            reason="test",
            status=status,
            revision=revision,
            finished_at=finished,
            **fields,
        )
        Deployment.objects.filter(pk=made.pk).update(created_at=created)
        return made

    second = add(at(11), at(11, 5), arn2, "succeeded", replaces=first)
    # The rollback to the first revision reuses its task definition, whose tasks report REVISION=d<first>.
    rollback = add(at(12), at(12, 2), arn1, "succeeded", replaces=second, kind="rollback", rollback_of=second)
    failed = add(at(13), at(13, 3), arn3, "failed", replaces=rollback)
    Service.objects.filter(pk=aws_service.pk).update(current_deployment=rollback)
    service = Service.objects.get(pk=aws_service.pk)

    def asked(start: datetime, end: datetime) -> list[str]:
        return pull.revisions_between(service, start, end)

    assert asked(at(10, 30), at(10, 40)) == [f"d{first.pk}"]
    assert asked(at(11, 30), at(11, 40)) == [f"d{second.pk}"]  # the first's tasks stopped at 11:05
    assert asked(at(11, 58), at(12, 8)) == [f"d{second.pk}", f"d{first.pk}"]
    assert asked(at(12, 30), at(12, 40)) == [f"d{first.pk}"]
    assert asked(at(13, 0), at(13, 10)) == [f"d{first.pk}", f"d{failed.pk}"]
    assert asked(at(14, 0), at(14, 10)) == [f"d{first.pk}"]
    assert asked(at(9, 0), at(9, 30)) == []
