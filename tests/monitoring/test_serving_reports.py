"""A real serving process reports to the ingest: deploy a version on the local backend (in this process, no
worker), bake it on the "metrics" objective source, send traffic, and what the service page's charts draw — requests/s,
5xx and 4xx shares, p50/p95/p99, per minute, for the service and its revision — is what the raw per-request latencies
give (each answer's Server-Timing, the time the server counted): the same counts, and each percentile the one of the
raw latencies bucketed as the server buckets them, in the bucket the raw latencies' own percentile falls in. The
token stays off the API."""

from __future__ import annotations

import http.client
import itertools
import json
import math
import threading
import time
import urllib.request
from bisect import bisect_left
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import pytest
from celery.app.task import Task
from django.test import Client as DjangoClient
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from controlplane import services as controlplane_services
from deployments import objectives, services
from deployments.models import Deployment, Service
from monitoring import selectors
from monitoring.histograms import bucket_bounds_ms, counts_quantile_ms, histogram_quantile
from monitoring.models import MetricPoint
from monitoring.services.ingest import service_ingest_token
from serving.metrics import BUCKETS_MS
from tests.deployments.test_deploys import approve
from tests.deployments.test_local_flow import package, register
from tests.fixtures.models import Trained
from tests.fixtures.page_html import json_scripts
from tests.fixtures.processes import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


# The client sends no request this close to a minute's end: the server counts a request in the minute it answers it,
# which the client knows only to within the request's round trip (one that straddles anyway is resolved below).
MINUTE_GUARD_SECONDS = 0.5
# Refused by the schema (2 values for 30 features): a 400, counted with its latency like any answer.
BAD_BODY = b'{"instances": [[1, 2]]}'
PERCENTILES = (("p50", 0.50), ("p95", 0.95), ("p99", 0.99))


@dataclass(frozen=True)
class Sent:
    began: float  # wall clock before the request was written
    ended: float  # wall clock once its answer was read
    status: int
    server_ms: float  # its Server-Timing: the time the server's histogram counted for it

    def minutes(self) -> list[int]:
        """The minutes (epoch seconds) the server may have counted it in: it answered between began and ended."""
        return sorted({int(self.began // 60 * 60), int(self.ended // 60 * 60)})


class Client:
    """Predictions over one kept-alive connection, every fifth refused; each answer's status and the time the server
    says it took (Server-Timing)."""

    def __init__(self, address: str, body: bytes) -> None:
        where = urlsplit(address)
        self.connection = http.client.HTTPConnection(where.hostname or "127.0.0.1", where.port, timeout=30)
        self.body = body
        self.sent: list[Sent] = []

    @property
    def statuses(self) -> list[int]:
        return [sent.status for sent in self.sent]

    def send(self, count: int) -> None:
        for _ in range(count):
            to_next_minute = 60 - time.time() % 60
            if to_next_minute < MINUTE_GUARD_SECONDS:
                time.sleep(to_next_minute + 0.01)
            body = BAD_BODY if len(self.sent) % 5 == 4 else self.body
            began = time.time()
            self.connection.request("POST", "/invocations", body, {"content-type": "application/json"})
            answer = self.connection.getresponse()
            answer.read()
            ended = time.time()
            timing = answer.getheader("server-timing") or ""
            name, _, duration = timing.partition(";dur=")
            assert name == "app" and duration, f"no Server-Timing on an answer: {timing!r}"
            self.sent.append(Sent(began, ended, answer.status, float(duration)))


def bucketed(latencies_ms: list[float]) -> list[int]:
    """Counts per bucket of serving.metrics.BUCKETS_MS, as the server counts (Metrics.record)."""
    counts = [0] * (len(BUCKETS_MS) + 1)
    for ms in latencies_ms:
        counts[bisect_left(BUCKETS_MS, ms)] += 1
    return counts


def raw_quantile(latencies_ms: list[float], q: float) -> float:
    """The raw latencies' q-quantile, the smallest latency with at least q of them at or below it (the inverted
    CDF: the order statistic a histogram's rank q × count falls on)."""
    ordered = sorted(latencies_ms)
    return ordered[max(math.ceil(q * len(ordered)), 1) - 1]


def trace(figure: dict[str, Any], name: str) -> list[Any]:
    found = [t["y"] for t in figure["traces"] if t["name"] == name]
    assert len(found) == 1, (name, [t["name"] for t in figure["traces"]])
    return found[0]


def chart_problems(figures: dict[str, Any], by_minute: dict[int, list[Sent]], groups: list[str]) -> list[str]:
    """What the service page's charts draw that the raw requests, counted in these minutes, do not give."""
    throughput, errors, latency = figures["chart-throughput"], figures["chart-errors"], figures["chart-latency"]
    times = [int(datetime.fromisoformat(t).timestamp()) for t in latency["x"]]
    step = times[1] - times[0]
    problems = []
    for group in groups:  # the service, then its revision: one revision served, so both are every request
        rates, shares, client_shares = trace(throughput, group), trace(errors, group), trace(errors, f"{group} 4xx")
        drawn = {label: trace(latency, f"{group} {label}") for label, _ in PERCENTILES}
        for i, start in enumerate(times):
            inside = [sent for minute in range(start, start + step, 60) for sent in by_minute.get(minute, [])]
            at = f"{group} at {latency['x'][i]}"
            if not inside:
                if rates[i] or shares[i] is not None or any(drawn[label][i] is not None for label, _ in PERCENTILES):
                    problems.append(f"{at}: drawn without requests")
                continue
            if rates[i] is None or rates[i] * step != pytest.approx(len(inside)):
                problems.append(f"{at}: {rates[i]} requests/s for {len(inside)} requests in {step} s")
            for name, value, count in (
                ("5xx share", shares[i], sum(sent.status >= 500 for sent in inside)),
                ("4xx share", client_shares[i], sum(400 <= sent.status < 500 for sent in inside)),
            ):
                if value is None or value != pytest.approx(count / len(inside)):
                    problems.append(f"{at}: {name} {value} for {count} of {len(inside)}")
            latencies = [sent.server_ms for sent in inside]
            counts = bucketed(latencies)
            for label, q in PERCENTILES:
                value, truth = drawn[label][i], raw_quantile(latencies, q)
                lower, upper = bucket_bounds_ms(truth)
                if value is None or value != pytest.approx(counts_quantile_ms(counts, q)):
                    problems.append(f"{at}: {label} {value}, the raw latencies' histogram gives {counts}")
                elif not lower < value <= upper:
                    problems.append(
                        f"{at}: {label} {value} outside ({lower}, {upper}], the raw {label} {truth}'s bucket"
                    )
    return problems


def server_histogram_ms(address: str) -> list[tuple[float, float]]:
    """The serving process's own cumulative latency histogram (GET /metrics), in ms."""
    with urllib.request.urlopen(address.rstrip("/") + "/metrics", timeout=5) as answer:
        text = answer.read().decode()
    buckets = []
    for name, labels, value in objectives.parse_prometheus(text):
        if name == "serving_request_duration_seconds_bucket":
            le = labels["le"]
            buckets.append((float("inf") if le == "+Inf" else float(le) * 1000, value))
    return buckets


def test_a_served_revision_reports_every_request_and_its_latency_histogram(
    users: Any,
    logistic: Trained,
    live_server: Any,
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
    stop_local_services: Any,
    no_session_worker: None,
) -> None:
    settings.PORTAL_URL = live_server.url
    settings.DEPLOYMENT_SIGNALS = "metrics"
    settings.OBJECTIVE_MIN_REQUESTS = 10
    monkeypatch.setattr(Task, "apply_async", lambda self, *a, **k: None)  # nothing queued: this test runs it all
    project = controlplane_services.project_create(actor=users.admin, name="Cancer", slug="cancer")
    staging = services.environment_create(
        actor=users.admin,
        data={
            "name": "staging",
            "approvals_required": 1,
            "strategy": "all_at_once",
            "bake_minutes": 0.05,
            "objective_p99_latency_ms": 5000,
            "objective_error_rate": 0.5,
        },
    )
    version = register(project, users.data_scientist, logistic, package(logistic, None, note="v1"))
    assert approve(version, staging, users).status == "approved"
    deployment = services.deployment_create(actor=users.approver, model_version_id=version.pk, environment="staging")
    services.deployment_start(deployment_id=deployment.pk)
    service = Service.objects.get(pk=deployment.service_id)
    body = json.dumps({"instances": logistic.rows.head(3).to_numpy().tolist()}).encode()

    # Traffic once it takes it (before, the router has nothing to send it to), judged from the ingested minutes.
    while (deployment := services.deployment_poll(deployment_id=deployment.pk)).status == "in_progress":
        time.sleep(0.2)
    assert deployment.status == "baking", deployment.status_reason
    client = Client(service.address, body)
    stop = threading.Event()

    def traffic() -> None:
        while not stop.is_set():
            client.send(5)

    sender = threading.Thread(target=traffic, daemon=True)
    sender.start()
    try:
        while not (deployment := services.deployment_poll(deployment_id=deployment.pk)).done:
            time.sleep(0.3)
    finally:
        stop.set()
        sender.join(timeout=30)
    assert deployment.status == "succeeded", deployment.status_reason
    verdict = Deployment.objects.get(pk=deployment.pk).objective_status
    assert verdict["source"] == "metrics" and verdict["judged"] and verdict["requests"] >= 10, verdict

    client.send(100)  # and some more, after the bake
    sent = len(client.sent)
    ok = client.statuses.count(200)
    assert set(client.statuses) == {200, 400} and client.statuses.count(400) == sent // 5
    revision = selectors.revision_label(deployment)
    assert revision == f"d{deployment.pk}"
    start = deployment.created_at - timezone.timedelta(minutes=1)

    def reported() -> dict[str, Any] | None:
        summary = selectors.window_summary(service=service, start=start, end=timezone.now(), revision=revision)
        return summary if summary["requests"] >= sent else None

    summary = wait_for(reported, timeout=20, what=f"{sent} requests reported")
    assert summary["requests"] == sent and summary["errors"] == 0 and summary["client_errors"] == sent - ok
    assert summary["rows"] == 3 * ok

    # The latencies the answers carried are the server's own: bucketed, they are its /metrics histogram, count for
    # count.
    latencies = [s.server_ms for s in client.sent]
    truth = server_histogram_ms(deployment.progress["revision_address"])
    assert [count for _, count in truth] == list(itertools.accumulate(bucketed(latencies)))
    for name, q in (("p50_ms", 0.5), ("p95_ms", 0.95), ("p99_ms", 0.99)):
        expected = histogram_quantile(truth, q)
        assert expected is not None and summary[name] == pytest.approx(expected)
        lower, upper = bucket_bounds_ms(raw_quantile(latencies, q))
        assert lower < summary[name] <= upper, (name, summary[name], lower, upper)

    # What the service page's charts draw, once every minute with traffic is complete (until then its requests/s is a
    # gap): per minute, what the raw requests counted in it give. The server counted each request in the minute it
    # answered it; a request that straddled a minute's end (despite MINUTE_GUARD_SECONDS) could be in either, and
    # the charts must match one way of counting them.
    viewer = DjangoClient()
    viewer.force_login(users.finance)
    url = f"/services/{service.pk}/monitoring/"
    minutes = {minute for s in client.sent for minute in s.minutes()}

    def charted() -> dict[str, Any] | None:
        answer = viewer.get(url, {"window": "1h"})
        assert answer.status_code == 200
        figures = json_scripts(answer.content)
        times = [int(datetime.fromisoformat(t).timestamp()) for t in figures["chart-throughput"]["x"]]
        rates = trace(figures["chart-throughput"], "all revisions")
        complete = all(rates[times.index(minute)] is not None for minute in minutes)
        return figures if complete else None

    figures = wait_for(charted, timeout=120, interval=1.0, what="the minutes with traffic complete on the charts")
    x = [datetime.fromisoformat(t).timestamp() for t in figures["chart-latency"]["x"]]
    assert x[1] - x[0] == 60  # the last hour, a point a minute
    label = f"v{version.number} (deploy {deployment.pk})"
    fixed: dict[int, list[Sent]] = {}
    straddling = []
    for one in client.sent:
        if len(one.minutes()) == 1:
            fixed.setdefault(one.minutes()[0], []).append(one)
        else:
            straddling.append(one)
    assert len(straddling) <= 8, f"{len(straddling)} requests straddled a minute's end: each took over half a second"
    problems: list[str] = []
    for choice in itertools.product(*(one.minutes() for one in straddling)):
        by_minute = {minute: list(requests) for minute, requests in fixed.items()}
        for one, minute in zip(straddling, choice, strict=True):
            by_minute.setdefault(minute, []).append(one)
        found = chart_problems(figures, by_minute, ["all revisions", label])
        if not found:
            break
        problems = problems or found
    else:
        raise AssertionError("the charts do not draw what the raw requests give:\n" + "\n".join(problems))
    drawn = sum(r * 60 for r in trace(figures["chart-throughput"], "all revisions") if r)
    assert drawn == pytest.approx(sent)  # every request sent is drawn, none twice
    assert MetricPoint.objects.filter(service=service, revision=revision, source="portal").exists()

    # The token went to the revision only: not in the API's model version, service or deployment answers.
    token = service_ingest_token(service)
    api = APIClient()
    api.force_authenticate(users.admin)
    for path in (
        f"/api/v1/model-versions/{version.pk}/",
        f"/api/v1/services/{service.pk}/",
        f"/api/v1/deployments/{deployment.pk}/",
    ):
        answer = api.get(path)
        assert answer.status_code == 200 and token not in answer.content.decode(), path
    api.force_login(users.admin)
    page = api.get(
        reverse(
            "model-version-detail",
            kwargs={"project": project.slug, "slug": version.registered_model.slug, "number": version.number},
        )
    )
    assert page.status_code == 200 and "MODEL_SHA256" in page.content.decode()  # it shows the serving settings…
    assert token not in page.content.decode()  # …but never the token

    # What serving it cost: the estimate sync asks the local backend for its processes' uptime and prices it as the
    # Fargate task the revision stands for; per 1,000 predictions from the same reported requests.
    from datetime import timedelta as _td
    from decimal import Decimal

    from monitoring.costs import selectors as cost_selectors
    from monitoring.costs import services as cost_services
    from monitoring.models import CostRecord

    sync = cost_services.cost_sync_request(source="estimate")
    before = timezone.now()
    assert cost_services.cost_sync_run(sync_id=sync.pk).status == "succeeded"
    records = CostRecord.objects.filter(source="estimate", deployment=str(deployment.pk))
    assert records.exists()
    used = {key: sum(r.usage[key] for r in records) for key in ("task_seconds", "vcpu_seconds", "gb_seconds")}
    alive = (before - deployment.started_at).total_seconds()
    # One process of 256 CPU units and 512 MiB, up since the deploy started it (and not before).
    assert 0 < used["task_seconds"] <= alive + 5, (used, alive)
    assert used["vcpu_seconds"] == pytest.approx(used["task_seconds"] / 4, rel=1e-3)
    assert used["gb_seconds"] == pytest.approx(used["task_seconds"] / 2, rel=1e-3)
    cost = cost_selectors.deployment_cost(deployment)
    expected = (
        used["vcpu_seconds"] / 3600 * settings.FARGATE_VCPU_HOUR_PRICE
        + used["gb_seconds"] / 3600 * settings.FARGATE_GB_HOUR_PRICE
    )
    assert cost.basis == "estimate" and float(cost.amount) == pytest.approx(expected, abs=1e-6)
    today = timezone.now().date()
    days = cost_selectors.service_daily_cost(service, start=today - _td(days=1), end=today + _td(days=1))
    served_today = [d for d in days if d["requests"]]
    assert sum(d["requests"] for d in days) >= sent
    assert sum((d["amount"] for d in days), Decimal(0)) == cost.amount
    assert sum(d["predictions"] for d in days) == 3 * ok  # three rows an answered request; none for a refused one
    for day in served_today:
        assert day["per_1000"] == day["amount"] * 1000 / day["predictions"]
