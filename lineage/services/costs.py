"""What a finished run cost, from its measured usage."""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any

from django.conf import settings

from lineage.models import (
    Run,
)

log = logging.getLogger(__name__)


def measured_cost(
    run: Run, usage: dict[str, Any] | None, *, places: Decimal | None = Decimal("0.0001")
) -> Decimal | None:
    """Cost from measured usage: SageMaker's billable seconds × instance price; locally CPU time × the CPU-hour
    price. Rounded to `places` (Run.cost keeps four); `places=None` keeps full precision (cost estimates, where a
    short local run's fraction of a cent must not read as 0)."""
    usage = usage or {}
    if run.backend == "sagemaker":
        billable = usage.get("billable_seconds")
        price = settings.TRAINING_INSTANCE_PRICES.get(run.instance_type)
        if billable is None or price is None:
            return None
        cost = Decimal(str(billable)) / 3600 * Decimal(str(price)) * run.instance_count
    else:
        cpu = usage.get("cpu_seconds")
        if cpu is None:
            return None
        cost = Decimal(str(cpu)) / 3600 * Decimal(str(settings.LOCAL_CPU_HOUR_PRICE))
    return cost.quantize(places) if places is not None else cost
