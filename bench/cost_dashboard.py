"""The cost dashboard on a long history: a year of daily estimates for 1,000 models (365,000 cost records), grouped
by model, daily and monthly (monitoring/costs/selectors.py `cost_table`), against the baseline a dashboard without
grouping in the database would be: every counted row read into Python and summed there. Both answer the same table
(checked); printed: median time of each over the rounds and the queries each made.

Run from the repository root:

    .venv/bin/python bench/cost_dashboard.py [--models 1000] [--days 365] [--rounds 5] [--databases sqlite,postgres]

Each database runs in its own Python process with the embedded settings and a temporary var/ folder; PostgreSQL is
the server at 127.0.0.1:5432 (database cp_cost_bench, dropped at the end). The rows are written as the estimate
sync writes them (monitoring.costs.services.estimates_store's shape), then the monthly roll-up is built by the
sync's own `rollup_months`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def measure(models: int, days: int, rounds: int) -> list[tuple[str, str, str]]:
    import django

    django.setup()
    import random
    from collections import defaultdict
    from datetime import date, timedelta
    from decimal import Decimal

    from django.core.management import call_command
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    call_command("migrate", verbosity=0)
    from monitoring.costs import selectors, services
    from monitoring.models import CostRecord

    end = date(2026, 12, 1)
    start = end - timedelta(days=days)
    rng = random.Random(7)
    batch = []
    for m in range(models):
        for d in range(days):
            batch.append(
                CostRecord(
                    day=start + timedelta(days=d),
                    source="estimate",
                    breakdown="full",
                    aws_service="Amazon Elastic Container Service",
                    project=f"p{m % 40}",
                    model=f"model-{m:04d}",
                    environment="production" if m % 2 else "staging",
                    deployment=str(m + 1),
                    backend="local",
                    amount=Decimal(str(round(rng.uniform(0.01, 3.0), 6))),
                )
            )
            if len(batch) >= 5000:
                CostRecord.objects.bulk_create(batch)
                batch = []
    CostRecord.objects.bulk_create(batch)
    month = selectors.month_start(start)
    months = []
    while month < end:
        months.append(month)
        month = selectors.next_month(month)
    services.rollup_months(months)
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")

    def naive(granularity: str) -> dict[tuple[date, str], Decimal]:
        """Every counted row into Python, summed there (the baseline)."""
        totals: dict[tuple[date, str], Decimal] = defaultdict(Decimal)
        for day, model, amount in selectors.counted_records("model", start=start, end=end).values_list(
            "day", "model", "amount"
        ):
            bucket = day if granularity == "day" else day.replace(day=1)
            totals[(bucket, model)] += amount
        return totals

    def grouped(granularity: str) -> selectors.CostTable:
        return selectors.cost_table(start=start, end=end, granularity=granularity, group_by="model")

    table = []
    for granularity in ("month", "day"):
        answer = grouped(granularity)
        baseline = naive(granularity)
        # The same spend either way: the total and the largest model's.
        assert abs(answer.total - sum(baseline.values(), Decimal(0))) < Decimal("0.01")
        top = answer.groups[0]
        top_total = sum((v for (_, model), v in baseline.items() if model == top), Decimal(0))
        assert abs(answer.group_totals[top] - top_total) < Decimal("0.01")
        label = {"day": "daily", "month": "monthly"}[granularity]
        for name, call in (
            (f"cost_table, {label}", grouped),
            (f"baseline: rows into Python, {label}", naive),
        ):
            with CaptureQueriesContext(connection) as queries:
                call(granularity)
            times = []
            for _ in range(rounds):
                began = time.perf_counter()
                call(granularity)
                times.append((time.perf_counter() - began) * 1000)
            table.append((name, f"{statistics.median(times):.0f}", str(len(queries))))
    return table


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", type=int, default=1000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--databases", default="sqlite,postgres")
    parser.add_argument("--child", default="")
    args = parser.parse_args()
    if args.child:
        for name, median, queries in measure(args.models, args.days, args.rounds):
            print(f"{name}\t{median}\t{queries}")
        return
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _databases import run_children
    from _table import print_rows

    databases = args.databases.split(",")
    results: dict[str, list[str]] = {}
    outputs = run_children(
        __file__,
        databases,
        database_name="cp_cost_bench",
        args=["--models", str(args.models), "--days", str(args.days), "--rounds", str(args.rounds)],
        cwd=ROOT,
    )
    for out in outputs.values():
        for line in out.strip().splitlines():
            name, median, queries = line.split("\t")
            results.setdefault(name, []).append(f"{median} ms, {queries} q")
    rows = [("call", *(f"{db} median, queries" for db in databases))]
    for name, cells in results.items():
        rows.append((name, *cells))
    print(f"{args.models} models × {args.days} days = {args.models * args.days:,} cost records; {args.rounds} rounds")
    print_rows(rows)
    # Ratios: the baseline's time over cost_table's, per granularity and database.
    for granularity in ("monthly", "daily"):
        ours = results.get(f"cost_table, {granularity}")
        base = results.get(f"baseline: rows into Python, {granularity}")
        if ours and base:
            ratios = [
                f"{db}: {float(b.split()[0]) / max(float(o.split()[0]), 1):.1f}×"
                for db, o, b in zip(databases, ours, base, strict=True)
            ]
            print(f"{granularity}: cost_table is faster than the baseline by " + ", ".join(ratios))


if __name__ == "__main__":
    main()
