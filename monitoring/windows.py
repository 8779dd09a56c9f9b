"""The time window a monitoring page or the read API shows, from its query: `window` is 1h, 24h or 7d (ending now),
or custom with `start` and `end` (ISO 8601; without an offset, UTC). A bad one is refused with a message per field,
and nothing is drawn."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from monitoring.selectors import metric_window_problems

WINDOWS = {"1h": timedelta(hours=1), "24h": timedelta(hours=24), "7d": timedelta(days=7)}
WINDOW_LABELS = {"1h": "Last hour", "24h": "Last day", "7d": "Last week", "custom": "Custom"}
DEFAULT_WINDOW = "24h"
# The years a custom window's start and end may fall in.
YEARS = (2000, 2100)


@dataclass(frozen=True)
class Window:
    name: str
    start: datetime
    end: datetime

    def as_query(self) -> dict[str, str]:
        if self.name != "custom":
            return {"window": self.name}
        return {"window": "custom", "start": _text(self.start), "end": _text(self.end)}


def _text(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M")


def _moment(value: str, example: str) -> datetime:
    """The moment `value` names, in UTC; ValueError saying what was expected. Years outside YEARS are refused, so
    no later step (UTC conversion, SQL, a series' last step) can overflow datetime's range."""
    try:
        parsed = parse_datetime(value.strip())
    except ValueError:
        parsed = None
    if parsed is None:
        raise ValueError(f"expected a date and time like {example} (UTC), got {value!r}")
    try:
        moment = (parsed.replace(tzinfo=UTC) if timezone.is_naive(parsed) else parsed).astimezone(UTC)
    except (OverflowError, ValueError):  # a moment near year 1 or 9999 whose offset takes it out of range
        moment = None
    if moment is None or not YEARS[0] <= moment.year <= YEARS[1]:
        raise ValueError(f"expected a date and time from the years {YEARS[0]} to {YEARS[1]}, got {value!r}")
    return moment


def parse_window(query: Any, *, default: str = DEFAULT_WINDOW, now: datetime | None = None) -> Window:
    """The window `query` (a QueryDict or a dict) asks for; ValidationError naming each bad field otherwise. Its
    bounds are checked by the metric selectors' own rule (end after start, within METRICS_RETENTION_DAYS)."""
    now = now or timezone.now()
    name = str(query.get("window") or default).strip()
    if name in WINDOWS:
        window = Window(name, now - WINDOWS[name], now)
    elif name == "custom":
        errors: dict[str, list[str]] = {}
        moments: dict[str, datetime] = {}
        for field in ("start", "end"):
            value = str(query.get(field) or "")
            if not value:
                errors[field] = [f"required with a custom window: a date and time like {_text(now)} (UTC)"]
                continue
            try:
                moments[field] = _moment(value, _text(now))
            except ValueError as exc:
                errors[field] = [str(exc)]
        if errors:
            raise ValidationError(errors)
        window = Window("custom", moments["start"], moments["end"])
    else:
        raise ValidationError({"window": [f"expected 1h, 24h, 7d or custom, got {name!r}"]})
    problems = metric_window_problems(start=window.start, end=window.end, now=now)
    if problems:
        raise ValidationError(problems)
    return window
