"""A service with a known past, written straight into the tables the monitoring pages read: three deployments (a
deploy, a second deploy, a rollback of it), per-minute metric points of two revisions with latency histograms
whose merged percentiles differ from their averaged ones, drift reports with per-feature verdicts, and alerts."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

from django.utils import timezone

from controlplane import services as controlplane_services
from deployments import services as deployment_services
from deployments.models import Deployment, Service
from deployments.objectives import histogram_quantile
from lineage.models import DatasetVersion, RunInput
from lineage.services import datasets as dataset_services
from monitoring.models import Alert, DriftFeature, DriftReport, MetricPoint
from monitoring.selectors import revision_label
from serving.metrics import BUCKETS_MS
from tests.deployments.conftest import make_model_version

BUCKETS = len(BUCKETS_MS) + 1


def counts(**by_edge: int) -> list[int]:
    """A latency histogram: counts(ms_1=100, ms_250=10) puts 100 in the bucket up to 1 ms, 10 up to 250 ms."""
    histogram = [0] * BUCKETS
    for name, count in by_edge.items():
        edge = float(name.removeprefix("ms_").replace("_", "."))
        histogram[BUCKETS_MS.index(edge)] = count
    return histogram


def merged_percentile(points: list[MetricPoint], q: float) -> float | None:
    """The q-quantile of the points' histograms added together (what every chart and table must show)."""
    total = [0] * BUCKETS
    for point in points:
        total = [a + b for a, b in zip(total, point.latency_counts, strict=True)]
    cumulative, buckets = 0, []
    for edge, count in zip((*BUCKETS_MS, float("inf")), total, strict=True):
        cumulative += count
        buckets.append((edge, float(cumulative)))
    return histogram_quantile(buckets, q)


def averaged_percentile(points: list[MetricPoint], q: float) -> float:
    """What averaging each minute's own percentile gives: what the pages must never show."""
    values = [merged_percentile([p], q) for p in points]
    return sum(v for v in values if v is not None) / len(values)


@dataclass
class Seeded:
    service: Service
    now: datetime
    deployments: list[Deployment]
    points: list[MetricPoint]
    reports: list[DriftReport] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
    revisions: list[str] = field(default_factory=list)  # the metric labels of the fast first, the slow second


def _minute(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


def seed_service(users: Any, *, name: str = "bc-staging", slug: str = "bc") -> Seeded:
    project = controlplane_services.project_create(actor=users.admin, name=f"Project {slug}", slug=slug)
    environment = deployment_services.environment_create(
        actor=users.admin, data={"name": f"staging-{slug}", "approvals_required": 1, "gates": []}
    )
    first = make_model_version(project, users.data_scientist)
    second = make_model_version(project, users.data_scientist)
    # Both trained on version 1 of a dataset that has a version 2 by now: what "Retrain on newer data" offers.
    trained_on, _newer = (_register(users, project, f"a,b,label\n1,2,0\n3,{n},1\n") for n in (4, 5))
    for version in (first, second):
        RunInput.objects.create(run_id=version.run_id, dataset_version=trained_on, channel="train")
    service = Service.objects.create(
        registered_model=first.registered_model,
        environment=environment,
        name=name,
        backend="local",
        created_by=users.admin,
    )
    now = timezone.now()
    plan = [
        ("deploy", first, "succeeded", 55),
        ("deploy", second, "rolled_back", 35),
        ("rollback", first, "succeeded", 15),
    ]
    deployments = []
    for kind, version, status, minutes_ago in plan:
        deployment = Deployment.objects.create(
            service=service,
            kind=kind,
            model_version=version,
            status=status,
            reason=f"{kind} for the monitoring tests",
            initiated_by=users.approver,
        )
        Deployment.objects.filter(pk=deployment.pk).update(created_at=now - timedelta(minutes=minutes_ago))
        deployments.append(deployment)
    # What the local backend names the revisions (the rollback reuses the first's); metric rows carry d<deploy>.
    for deployment in deployments[:2]:
        deployment.revision = f"r-d{deployment.pk}"
    deployments[2].revision = deployments[0].revision
    deployments[2].rollback_of = deployments[1]
    for deployment in deployments:
        deployment.save(update_fields=["revision", "rollback_of"])
    service.current_deployment = deployments[2]
    service.save(update_fields=["current_deployment"])
    fast, slow = (f"d{deployment.pk}" for deployment in deployments[:2])

    # The first revision answers fast (≤ 1 ms), the second slowly (100–250 ms) and with errors, while it served.
    points = []
    for minutes_ago in range(50, 4, -5):
        start = _minute(now - timedelta(minutes=minutes_ago))
        points.append(
            MetricPoint(
                service=service,
                revision=fast,
                start=start,
                requests=100 + minutes_ago,
                errors=1,
                latency_counts=counts(ms_1=90 + minutes_ago, ms_2_5=10),
            )
        )
        if 35 >= minutes_ago >= 15:
            points.append(
                MetricPoint(
                    service=service,
                    revision=slow,
                    start=start,
                    requests=10,
                    errors=3,
                    latency_counts=counts(ms_250=10),
                )
            )
    MetricPoint.objects.bulk_create(points)
    return Seeded(service=service, now=now, deployments=deployments, points=points, revisions=[fast, slow])


def _register(users: Any, project: Any, text: str) -> DatasetVersion:
    target = dataset_services.dataset_target(project=project, dataset="bc-data")
    with TemporaryDirectory() as folder:
        path = Path(folder) / "bc.csv"
        path.write_text(text)
        version, _ = dataset_services.dataset_version_from_file(
            actor=users.data_scientist, target=target, path=path, filename=path.name, source="upload"
        )
    return version


FEATURES = ("mean radius", "mean texture", "mean area")


def seed_drift(seeded: Seeded, *, reports: int = 3) -> list[DriftReport]:
    """Hourly drift reports, the last one drifted on two of three features, with one unreadable capture file."""
    made = []
    end = _minute(seeded.now)
    for i in range(reports):
        window_end = end - timedelta(hours=reports - 1 - i)
        last = i == reports - 1
        report = DriftReport.objects.create(
            service=seeded.service,
            # Of the revision serving all traffic, as the scheduler makes them.
            revision=revision_label(seeded.service.current_deployment),
            window_start=window_end - timedelta(hours=1),
            window_end=window_end,
            status="succeeded",
            config={"share": 0.5},
            rows=500 + i,
            files_read=4,
            unreadable=[{"key": "capture/bad.parquet", "reason": "not a Parquet file"}] if last else [],
            feature_count=3,
            drifted_count=2 if last else 0,
            drifted_share=2 / 3 if last else 0.0,
            drifted=last,
        )
        for j, feature in enumerate(FEATURES):
            drifted = last and j < 2
            DriftFeature.objects.create(
                report=report,
                feature=feature,
                kind="numeric",
                method="psi" if j else "ks",
                statistic=0.1 * (i + 1) + j / 100,
                p_value=0.001 if drifted and j == 0 else (0.4 if j == 0 else None),
                # ks compares its p-value with the threshold; psi its distance.
                score=(0.001 if drifted else 0.4) if j == 0 else (0.35 if drifted else 0.05 + i / 100),
                threshold=0.05 if j == 0 else 0.2,
                drifted=drifted,
                baseline_rows=1000,
                current_rows=500 + i,
                histogram={
                    "edges": [0, 1, 2, 3],
                    "baseline": [10, 20, 10],
                    "current": [5 + i, 10, 25 if drifted else 5],
                },
            )
        made.append(report)
    seeded.reports = made
    return made


def seed_alerts(seeded: Seeded) -> list[Alert]:
    window_end = _minute(seeded.now)
    latency = Alert.objects.create(
        service=seeded.service,
        name="p99_latency_ms",
        value=248.5,
        threshold=200.0,
        window_start=window_end - timedelta(minutes=10),
        window_end=window_end,
        message="p99 latency 248.5 ms over the 200 ms objective",
    )
    drift = Alert.objects.create(
        service=seeded.service,
        name="drift",
        value=2 / 3,
        threshold=0.5,
        window_start=seeded.reports[-1].window_start if seeded.reports else None,
        window_end=seeded.reports[-1].window_end if seeded.reports else None,
        message="2 of 3 features drifted",
        drift_report=seeded.reports[-1] if seeded.reports else None,
    )
    closed = Alert.objects.create(
        service=seeded.service,
        name="error_rate",
        status="closed",
        value=0.2,
        threshold=0.01,
        message="error rate recovered",
        closed_at=seeded.now,
        close_reason="back under 1%",
    )
    seeded.alerts = [latency, drift, closed]
    return seeded.alerts
