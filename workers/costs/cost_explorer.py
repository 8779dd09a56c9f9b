"""The bill, from AWS Cost Explorer: daily unblended cost by cost-allocation tag, and its forecast.

daily_costs(start, end) makes one GetCostAndUsage chain per breakdown (Cost Explorer groups by at most two keys a
call), each DAILY, UnblendedCost, followed by NextPageToken until there is none:

    project   GroupBy TAG project, DIMENSION SERVICE
    model     GroupBy TAG model, TAG environment
    object    GroupBy TAG run, TAG deployment

Tag groups come back as "key$value"; "key$" is the cost of resources without the tag, kept as "". Each ResultsByTime
entry is one day, with its own Estimated flag (the day's figure may still change). Every call is billed, so a range
with no days makes none, and the pull logs how many it made.

Cost Explorer serves the current month and the 13 before it (an older Start is refused), and nothing after today:
the range is clamped to that window, and the pull's `start`/`end` say which range was asked, so a caller replaces
exactly [pull.start, pull.end) (or the days in `pull.days`).

forecast(start, end) is one GetCostForecast (UNBLENDED_COST, DAILY, PredictionIntervalLevel `level`), optionally
filtered to one `project` tag. Cost Explorer forecasts only from enough history; when it says it has too little
(DataUnavailableException, or a ValidationException saying so) the forecast is `available=False` with the reason.

Cost Explorer has one endpoint per partition (ce.us-east-1.amazonaws.com for the commercial one), signed for that
region, so the client is built for the partition's Cost Explorer region whatever AWS_REGION is.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from functools import cache
from typing import Any

from botocore.client import BaseClient
from botocore.exceptions import ClientError
from botocore.loaders import create_loader

from workers.aws import aws_client, aws_errors, check_region, translate_client_error
from workers.costs.base import CostLine, CostPull, Forecast, ForecastPoint
from workers.errors import BackendError

log = logging.getLogger("workers.costs")

METRIC = "UnblendedCost"
FORECAST_METRIC = "UNBLENDED_COST"
# botocore's model: PredictionIntervalLevel is an integer from 51 to 99.
LEVEL_MIN, LEVEL_MAX = 51, 99
# Cost Explorer keeps the current month and the 13 before it.
HISTORY_MONTHS = 14
# One breakdown's chain for a year of days is a handful of pages; more means something keeps handing out tokens.
MAX_PAGES = 200
DEFAULT_TAG_KEYS = ("project", "model", "environment", "run", "deployment")
# The partition endpoint Cost Explorer has in the commercial partition, if botocore's data were to lack it.
COMMERCIAL_REGION = "us-east-1"
# Codes Cost Explorer uses for "not now": LimitExceededException is its throttling (elsewhere in AWS it is a quota),
# DataUnavailableException on GetCostAndUsage means the data is not ready yet, and a token or request change between
# pages means the chain has to start again.
RETRYABLE_CODES = frozenset(
    {"LimitExceededException", "DataUnavailableException", "InvalidNextTokenException", "RequestChangedException"}
)
# How Cost Explorer says it cannot forecast yet (its message: "Insufficient amount of historical data").
_TOO_LITTLE_HISTORY = re.compile(r"historical data|not enough (?:historical )?data|insufficient", re.IGNORECASE)


@cache
def cost_explorer_region(region: str) -> str:
    """The region Cost Explorer's endpoint is signed for in `region`'s partition, from botocore's endpoint data
    (commercial: us-east-1; China: cn-northwest-1)."""
    check_region(region)
    endpoints = create_loader().load_data("endpoints")
    for partition in endpoints.get("partitions", []):
        if region not in partition.get("regions", {}) and not re.fullmatch(partition.get("regionRegex", "$^"), region):
            continue
        service = partition.get("services", {}).get("ce")
        if not service:
            return region  # a partition with regional Cost Explorer endpoints (GovCloud)
        endpoint = service.get("endpoints", {}).get(service.get("partitionEndpoint", ""), {})
        scoped = endpoint.get("credentialScope", {}).get("region")
        return str(scoped) if scoped else region
    return COMMERCIAL_REGION


def _utc_today() -> date:
    return datetime.now(UTC).date()


def earliest_day(today: date) -> date:
    """The first day Cost Explorer still answers for: the first of the month HISTORY_MONTHS - 1 months back."""
    months = today.year * 12 + today.month - 1 - (HISTORY_MONTHS - 1)
    return date(months // 12, months % 12 + 1, 1)


def _tag_value(key: str) -> str:
    """The value of a "tag$value" group key; "tag$" (not tagged) is ""."""
    return key.split("$", 1)[1] if "$" in key else key


def _amount(value: Any, where: str) -> Decimal:
    try:
        amount = Decimal(str(value))
    except (InvalidOperation, ValueError) as exc:
        raise BackendError(f"Cost Explorer answered {value!r} for {where}, not an amount", permanent=True) from exc
    if not amount.is_finite():
        raise BackendError(f"Cost Explorer answered {value!r} for {where}, not an amount", permanent=True)
    return amount


def _day(value: Any, where: str) -> date:
    try:
        return date.fromisoformat(str(value)[:10])
    except ValueError as exc:
        raise BackendError(f"Cost Explorer answered {value!r} for {where}, not a date", permanent=True) from exc


@contextmanager
def _ce_errors(action: str) -> Iterator[None]:
    """aws_errors, with Cost Explorer's own retryable codes marked so."""
    with aws_errors(action):
        try:
            yield
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code", "")) in RETRYABLE_CODES:
                raise BackendError(translate_client_error(exc, action=action).message, permanent=False) from exc
            raise


class CostExplorerSource:
    """The cost source on aws: what the bill says, per day, in the three breakdowns (workers.costs.base)."""

    name = "cost_explorer"

    def __init__(
        self,
        *,
        region: str,
        endpoint_url: str | None = None,
        tag_keys: Sequence[str] = DEFAULT_TAG_KEYS,
        client: BaseClient | None = None,
        today: Callable[[], date] = _utc_today,
    ) -> None:
        keys = tuple(tag_keys)
        if len(keys) != len(DEFAULT_TAG_KEYS) or not all(isinstance(k, str) and k.strip() for k in keys):
            raise ValueError(f"tag_keys must name the {', '.join(DEFAULT_TAG_KEYS)} tags, in that order, not {keys!r}")
        self.region = cost_explorer_region(region)
        self.tag_keys = dict(zip(DEFAULT_TAG_KEYS, keys, strict=True))
        self.client = client if client is not None else aws_client("ce", region=self.region, endpoint_url=endpoint_url)
        self.today = today

    # --- requests ----------------------------------------------------------------------------------------------

    def group_by(self, breakdown: str) -> list[dict[str, str]]:
        """GetCostAndUsage's GroupBy for `breakdown`."""
        keys = self.tag_keys
        if breakdown == "project":
            return [{"Type": "TAG", "Key": keys["project"]}, {"Type": "DIMENSION", "Key": "SERVICE"}]
        if breakdown == "model":
            return [{"Type": "TAG", "Key": keys["model"]}, {"Type": "TAG", "Key": keys["environment"]}]
        if breakdown == "object":
            return [{"Type": "TAG", "Key": keys["run"]}, {"Type": "TAG", "Key": keys["deployment"]}]
        raise ValueError(f"breakdown must be project, model or object, not {breakdown!r}")

    def usage_request(self, breakdown: str, start: date, end: date, token: str = "") -> dict[str, Any]:
        """GetCostAndUsage's parameters for one page of `breakdown` over [start, end)."""
        request: dict[str, Any] = {
            "TimePeriod": {"Start": start.isoformat(), "End": end.isoformat()},
            "Granularity": "DAILY",
            "Metrics": [METRIC],
            "GroupBy": self.group_by(breakdown),
        }
        if token:
            request["NextPageToken"] = token
        return request

    def forecast_request(self, start: date, end: date, *, level: int, project: str = "") -> dict[str, Any]:
        """GetCostForecast's parameters for [start, end), for everything or one project tag."""
        request: dict[str, Any] = {
            "TimePeriod": {"Start": start.isoformat(), "End": end.isoformat()},
            "Metric": FORECAST_METRIC,
            "Granularity": "DAILY",
            "PredictionIntervalLevel": level,
        }
        if project:
            request["Filter"] = {
                "Tags": {"Key": self.tag_keys["project"], "Values": [project], "MatchOptions": ["EQUALS"]}
            }
        return request

    # --- the CostSource interface ------------------------------------------------------------------------------

    def window(self, start: date, end: date) -> tuple[date, date]:
        """[start, end) clamped to what Cost Explorer answers: no earlier than earliest_day, no later than today."""
        if end < start:
            raise ValueError(f"end ({end}) is before start ({start})")
        today = self.today()
        first = earliest_day(today)
        if start < first:
            log.warning("Cost Explorer keeps %d months: costs before %s are not asked for", HISTORY_MONTHS, first)
        clamped_start = max(start, first)
        clamped_end = min(end, today + timedelta(days=1))
        return clamped_start, max(clamped_start, clamped_end)

    def daily_costs(self, start: date, end: date) -> CostPull:
        start, end = self.window(start, end)
        lines: list[CostLine] = []
        days: set[date] = set()
        calls = 0
        if start < end:
            for breakdown in ("project", "model", "object"):
                made, found, seen = self._pull(breakdown, start, end)
                calls += made
                lines.extend(found)
                days.update(seen)
        log.info(
            "Cost Explorer: %d GetCostAndUsage calls for %s..%s gave %d lines over %d days",
            calls,
            start,
            end,
            len(lines),
            len(days),
        )
        return CostPull(start=start, end=end, lines=lines, days=sorted(days), calls=calls)

    def _pull(self, breakdown: str, start: date, end: date) -> tuple[int, list[CostLine], set[date]]:
        lines: list[CostLine] = []
        days: set[date] = set()
        token = ""
        calls = 0
        action = f"get the {breakdown} costs for {start}..{end} from Cost Explorer"
        while True:
            if calls >= MAX_PAGES:
                raise BackendError(f"Could not {action}: more than {MAX_PAGES} pages", permanent=True)
            with _ce_errors(action):
                response = self.client.get_cost_and_usage(**self.usage_request(breakdown, start, end, token))
            calls += 1
            for result in response.get("ResultsByTime") or []:
                day = _day((result.get("TimePeriod") or {}).get("Start"), f"a {breakdown} day")
                days.add(day)
                estimated = bool(result.get("Estimated", False))
                for group in result.get("Groups") or []:
                    lines.append(self._line(breakdown, day, estimated, group))
            token = str(response.get("NextPageToken") or "")
            if not token:
                return calls, lines, days

    @staticmethod
    def _line(breakdown: str, day: date, estimated: bool, group: dict[str, Any]) -> CostLine:
        keys = [str(k) for k in group.get("Keys") or []]
        if len(keys) != 2:
            raise BackendError(
                f"Cost Explorer answered a {breakdown} group of {day} with keys {keys!r}, not two", permanent=True
            )
        metric = (group.get("Metrics") or {}).get(METRIC) or {}
        amount = _amount(metric.get("Amount", "0"), f"the {breakdown} cost of {day}")
        currency = str(metric.get("Unit") or "USD")
        first, second = _tag_value(keys[0]), keys[1]
        dimensions: dict[str, str]
        if breakdown == "project":
            dimensions = {"project": first, "aws_service": second}
        elif breakdown == "model":
            dimensions = {"model": first, "environment": _tag_value(second)}
        else:
            dimensions = {"run": first, "deployment": _tag_value(second)}
        return CostLine(
            day=day, breakdown=breakdown, amount=amount, currency=currency, estimated=estimated, **dimensions
        )

    def forecast(self, start: date, end: date, *, level: int = 80, project: str = "") -> Forecast:
        if isinstance(level, bool) or not isinstance(level, int) or not LEVEL_MIN <= level <= LEVEL_MAX:
            raise ValueError(f"level must be a whole percentage from {LEVEL_MIN} to {LEVEL_MAX}, not {level!r}")
        if end < start:
            raise ValueError(f"end ({end}) is before start ({start})")
        # Cost Explorer forecasts from today on; the days before are the bill's.
        start = max(start, self.today())
        if end <= start:
            return Forecast(start=start, end=start, available=False, level=level, reason="no days left to forecast")
        what = f"the {project} project" if project else "all costs"
        action = f"get the Cost Explorer forecast of {what} for {start}..{end}"
        log.info("Cost Explorer: 1 GetCostForecast call for %s, %s..%s", what, start, end)
        with _ce_errors(action):
            try:
                request = self.forecast_request(start, end, level=level, project=project)
                response = self.client.get_cost_forecast(**request)
            except ClientError as exc:
                reason = _no_forecast_reason(exc)
                if reason is None:
                    raise
                log.info("Cost Explorer has no forecast of %s for %s..%s: %s", what, start, end, reason)
                return Forecast(start=start, end=end, available=False, level=level, reason=reason, calls=1)
        points = []
        for result in response.get("ForecastResultsByTime") or []:
            day = _day((result.get("TimePeriod") or {}).get("Start"), "a forecast day")
            mean = _amount(result.get("MeanValue", "0"), f"the forecast of {day}")
            points.append(
                ForecastPoint(
                    day=day,
                    mean=mean,
                    low=_amount(result.get("PredictionIntervalLowerBound", mean), f"the forecast of {day}"),
                    high=_amount(result.get("PredictionIntervalUpperBound", mean), f"the forecast of {day}"),
                )
            )
        total = response.get("Total") or {}
        mean_total = _amount(total.get("Amount", sum((p.mean for p in points), Decimal(0))), "the forecast total")
        return Forecast(
            start=start,
            end=end,
            available=True,
            level=level,
            mean=mean_total,
            # Cost Explorer gives the band per day only; their sums bound the period's band from outside.
            low=sum((p.low for p in points), Decimal(0)),
            high=sum((p.high for p in points), Decimal(0)),
            points=sorted(points, key=lambda p: p.day),
            calls=1,
        )


def _no_forecast_reason(exc: ClientError) -> str | None:
    """Why Cost Explorer cannot forecast, when that is what it answered (too little history), else None."""
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    message = str(error.get("Message") or "").strip()
    if code == "DataUnavailableException" or (code == "ValidationException" and _TOO_LITTLE_HISTORY.search(message)):
        detail = f" ({message})" if message else ""
        return f"Cost Explorer has too little cost history to forecast yet{detail}"
    return None
