"""A real serving process reports to the ingest: deploy a version on the local backend (in this process, no
worker), bake it on the "metrics" objective source, send traffic, and the series count every request, with the
serving process's own histogram; the token stays off the API."""

from __future__ import annotations

import http.client
import json
import threading
import time
import urllib.request
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pytest
from celery.app.task import Task
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from controlplane import services as controlplane_services
from deployments import objectives, services
from deployments.models import Deployment, Service
from monitoring import selectors
from monitoring.histograms import bucket_bounds_ms, histogram_quantile
from monitoring.models import MetricPoint
from monitoring.services.ingest import service_ingest_token
from tests.deployments.test_deploys import approve
from tests.deployments.test_local_flow import package, register
from tests.fixtures.models import Trained
from tests.fixtures.processes import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


class Client:
    """Sequential predictions over one kept-alive connection, each answer's latency as the client saw it."""

    def __init__(self, address: str, body: bytes) -> None:
        where = urlsplit(address)
        self.connection = http.client.HTTPConnection(where.hostname or "127.0.0.1", where.port, timeout=30)
        self.body = body
        self.latencies_ms: list[float] = []
        self.statuses: list[int] = []

    def send(self, count: int) -> None:
        for _ in range(count):
            began = time.perf_counter()
            self.connection.request("POST", "/invocations", self.body, {"content-type": "application/json"})
            answer = self.connection.getresponse()
            answer.read()
            self.latencies_ms.append((time.perf_counter() - began) * 1000)
            self.statuses.append(answer.status)


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
    sent = len(client.statuses)
    assert set(client.statuses) == {200}
    revision = selectors.revision_label(deployment)
    assert revision == f"d{deployment.pk}"
    start = deployment.created_at - timezone.timedelta(minutes=1)

    def reported() -> dict[str, Any] | None:
        summary = selectors.window_summary(service=service, start=start, end=timezone.now(), revision=revision)
        return summary if summary["requests"] >= sent else None

    summary = wait_for(reported, timeout=20, what=f"{sent} requests reported")
    assert summary["requests"] == sent and summary["errors"] == 0 and summary["client_errors"] == 0
    assert summary["rows"] == 3 * sent
    series = selectors.metric_series(service=service, start=start, end=timezone.now(), by_revision=True)
    assert sum(series["series"][revision]["requests"]) == sent

    # The serving process's own histogram is the ground truth: the same counts, so the same percentiles, each in
    # the bucket the true quantile falls in; the client saw each answer no sooner than the server made it.
    address = deployment.progress["revision_address"]
    truth = server_histogram_ms(address)
    assert truth[-1][1] == sent
    for name, q in (("p50_ms", 0.5), ("p95_ms", 0.95), ("p99_ms", 0.99)):
        expected = histogram_quantile(truth, q)
        assert expected is not None and summary[name] == pytest.approx(expected)
        lower, upper = bucket_bounds_ms(expected)
        assert lower <= summary[name] <= upper
        assert float(np.percentile(client.latencies_ms, q * 100)) >= lower, (name, lower, upper)
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
    for day in served_today:
        assert day["predictions"] == 3 * day["requests"]  # three rows a request
        assert day["per_1000"] == day["amount"] * 1000 / day["predictions"]
