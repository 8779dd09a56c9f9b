"""Metric series reads over a week of minutes: window_summary and metric_series (monitoring/selectors.py) on
10,080 per-minute rows of one revision, SQLite and PostgreSQL.

Run from the repository root:

    .venv/bin/python bench/metric_series.py [--rounds 11] [--databases sqlite,postgres]

Each database runs in its own Python process (Django is configured once per process) with the embedded settings
and a temporary var/ folder. SQLite is a file there; PostgreSQL is the server at 127.0.0.1:5432 (user postgres):
the database cp_metric_bench is dropped, created, ANALYZEd after seeding, and dropped at the end. The rows are
shaped as the ingest writes them (16 histogram counts, about 100 requests a minute). Printed: median and p95 of
each call over the rounds, after one untimed warm-up.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
MINUTES = 7 * 24 * 60


def measure(rounds: int) -> list[tuple[str, str, str]]:
    import django

    django.setup()
    import random
    from datetime import UTC, datetime, timedelta

    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection

    call_command("migrate", verbosity=0)
    from controlplane.models import Project
    from deployments.models import Environment, Service
    from lineage.models import RegisteredModel
    from monitoring import selectors
    from monitoring.histograms import COUNTS_LENGTH
    from monitoring.models import MetricPoint

    user = get_user_model().objects.create_user("bench")
    project = Project.objects.create(name="Bench", slug="bench", created_by=user)
    model = RegisteredModel.objects.create(project=project, name="m", slug="m", created_by=user)
    environment = Environment.objects.create(name="bench", created_by=user)
    service = Service.objects.create(
        registered_model=model, environment=environment, name="m-bench", backend="local", created_by=user
    )
    end = datetime(2026, 12, 1, tzinfo=UTC)
    start = end - timedelta(minutes=MINUTES)
    rng = random.Random(1)
    rows = []
    for i in range(MINUTES):
        counts = [0] * COUNTS_LENGTH
        for _ in range(100):
            counts[min(int(rng.expovariate(0.5)) + 2, COUNTS_LENGTH - 1)] += 1
        rows.append(
            MetricPoint(
                service=service,
                revision="d1",
                start=start + timedelta(minutes=i),
                requests=100,
                errors=1,
                latency_counts=counts,
            )
        )
    MetricPoint.objects.bulk_create(rows, batch_size=1000)
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")
    calls = {
        "window_summary (a week)": lambda: selectors.window_summary(service=service, start=start, end=end),
        "metric_series (a week, hourly)": lambda: selectors.metric_series(service=service, start=start, end=end),
        "metric_series (a day, 5 min)": lambda: selectors.metric_series(
            service=service, start=end - timedelta(days=1), end=end
        ),
    }
    table = []
    for name, call in calls.items():
        call()
        times = []
        for _ in range(rounds):
            began = time.perf_counter()
            call()
            times.append((time.perf_counter() - began) * 1000)
        times.sort()
        p95 = times[min(len(times) - 1, int(round(0.95 * (len(times) - 1))))]
        table.append((name, f"{statistics.median(times):.0f}", f"{p95:.0f}"))
    return table


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--databases", default="sqlite,postgres")
    parser.add_argument("--child", default="")
    args = parser.parse_args()
    if args.child:
        for name, median, p95 in measure(args.rounds):
            print(f"{name}\t{median}\t{p95}")
        return
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _databases import run_children
    from _table import print_rows

    rows = [("call", *(f"{db} median ms / p95 ms" for db in args.databases.split(",")))]
    results: dict[str, list[str]] = {}
    outputs = run_children(
        __file__,
        args.databases.split(","),
        database_name="cp_metric_bench",
        args=["--rounds", str(args.rounds)],
        cwd=ROOT,
    )
    for out in outputs.values():
        for line in out.strip().splitlines():
            name, median, p95 = line.split("\t")
            results.setdefault(name, []).append(f"{median} / {p95}")
    for name, cells in results.items():
        rows.append((name, *cells))
    print(f"{MINUTES} per-minute rows of one revision; {args.rounds} rounds")
    print_rows(rows)


if __name__ == "__main__":
    main()
