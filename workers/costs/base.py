"""The cost source interface: plain dataclasses in and out, no Django.

A source answers daily cost lines for a range of days, in the breakdowns it can give at once, and a forecast of the
rest of a month. Cost Explorer gives at most two group-bys per call, so its lines come in breakdowns that are never
added to one another (see monitoring.models.CostRecord):

    project   the `project` cost-allocation tag × the SERVICE dimension
    model     the `model` tag × the `environment` tag
    object    the `run` tag × the `deployment` tag

A dimension a line does not have (not in its breakdown, or the resource was not tagged) is "".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Protocol, runtime_checkable

BREAKDOWNS = ("project", "model", "object")


@dataclass(frozen=True)
class CostLine:
    day: date
    breakdown: str
    amount: Decimal
    currency: str = "USD"
    aws_service: str = ""
    project: str = ""
    model: str = ""
    environment: str = ""
    run: str = ""
    deployment: str = ""
    # Cost Explorer's Estimated flag: the day's figure may still change.
    estimated: bool = False


@dataclass(frozen=True)
class CostPull:
    """What one pull returned: its lines for [start, end), the days it covered (each day of the range the source
    answered, with or without spend), and how many billed calls it made."""

    start: date
    end: date
    lines: list[CostLine] = field(default_factory=list)
    days: list[date] = field(default_factory=list)
    calls: int = 0


@dataclass(frozen=True)
class ForecastPoint:
    day: date
    mean: Decimal
    low: Decimal
    high: Decimal


@dataclass(frozen=True)
class Forecast:
    """The forecast of [start, end): its total (mean, and the band at `level` percent) and each day's. When the
    source has too little history it says so: `available` False and `reason`."""

    start: date
    end: date
    available: bool
    level: int = 80
    mean: Decimal | None = None
    low: Decimal | None = None
    high: Decimal | None = None
    points: list[ForecastPoint] = field(default_factory=list)
    reason: str = ""
    calls: int = 0


@runtime_checkable
class CostSource(Protocol):
    name: str

    def daily_costs(self, start: date, end: date) -> CostPull:
        """Every line of every breakdown for the days [start, end) (end exclusive, as Cost Explorer takes it)."""
        ...

    def forecast(self, start: date, end: date, *, level: int = 80, project: str = "") -> Forecast:
        """The forecast of [start, end) (start no earlier than today), for everything or for one project tag."""
        ...
