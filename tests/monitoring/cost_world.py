"""Cost rows as the system writes them: local estimates through estimates_store, a bill as a Cost Explorer sync
leaves it (its two breakdowns and a finished sync saying which days it covers), then the monthly roll-up."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal

from django.utils import timezone

from monitoring.costs import services
from monitoring.costs.selectors import month_start, next_month
from monitoring.models import CostBillDay, CostRecord, CostSync


@dataclass
class CostWorld:
    month: date  # the month seeded: last month, so a test never depends on today's date
    first: date
    second: date


def last_month() -> date:
    return month_start(month_start(timezone.now().date()) - timedelta(days=1))


def estimate(day: date, project: str, model: str, environment: str, service: str, amount: str) -> services.Estimate:
    return services.Estimate(
        day=day,
        aws_service=service,
        project=project,
        model=model,
        environment=environment,
        run="",
        deployment="",
        backend="local",
        amount=Decimal(amount),
    )


def seed_costs(month: date | None = None) -> CostWorld:
    """Last month: day 1 has a bill for alpha (10.00) and an estimate (1.25); day 2 only estimates (beta 2.50,
    alpha 0.333333). The bill covers day 1."""
    month = month or last_month()
    first, second = month, month + timedelta(days=1)
    services.estimates_store(
        [
            estimate(first, "alpha", "churn", "staging", "AmazonSageMaker", "1.25"),
            estimate(second, "beta", "fraud", "production", "AmazonECS", "2.5"),
            estimate(second, "alpha", "churn", "staging", "AmazonSageMaker", "0.333333"),
        ],
        start=month,
        end=next_month(month),
    )
    CostRecord.objects.create(
        day=first,
        source="cost_explorer",
        breakdown="project",
        project="alpha",
        aws_service="AmazonSageMaker",
        backend="aws",
        amount=Decimal("10"),
    )
    CostRecord.objects.create(
        day=first,
        source="cost_explorer",
        breakdown="model",
        model="churn",
        environment="staging",
        backend="aws",
        amount=Decimal("10"),
    )
    now = timezone.now()
    sync = CostSync.objects.create(
        source="cost_explorer", status="succeeded", start=first, end=second, started_at=now, finished_at=now
    )
    CostBillDay.objects.create(day=first, sync=sync, synced_at=now)
    services.rollup_months([month])
    return CostWorld(month=month, first=first, second=second)
