"""How runs read on a page: durations to the second, log times as clock times instead of epoch seconds; how long
something has left (an approval request's expiry) in one unit."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from django import template
from django.utils import timezone
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

register = template.Library()

# Recipes stamp metric lines with `time=<epoch seconds>` (see workers/recipes/_contract.format_metric).
_EPOCH = re.compile(r"\btime=(\d{9,11}(?:\.\d+)?)\b")


def duration_text(seconds: float) -> str:
    """'42 s', '1 min 5 s', '2 h 3 min', '3 d 4 h': the two largest units, never '0 minutes'."""
    total = max(int(round(seconds)), 0)
    if total < 60:
        return f"{total} s"
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [(days, "d"), (hours, "h"), (minutes, "min"), (secs, "s")]
    while parts and parts[0][0] == 0:
        parts.pop(0)
    return " ".join(f"{value} {unit}" for value, unit in parts[:2] if value)


@register.filter
def duration_until(start: datetime | None, end: datetime | None = None) -> str:
    """`{{ run.started_at|duration_until:run.finished_at }}`; without an end, until now."""
    if start is None:
        return ""
    finish = end or timezone.now()
    return duration_text((finish - start) / timedelta(seconds=1))


def time_left_text(seconds: float) -> str:
    """One unit, rounded: '14 days' (not '1 week, 6 days'), '5 hours', '12 minutes', 'less than a minute'."""
    for size, unit in ((86400, "day"), (3600, "hour"), (60, "minute")):
        if seconds >= 2 * size or (unit == "minute" and seconds >= size):
            count = round(seconds / size)
            return f"{count} {unit}{'' if count == 1 else 's'}"
    return "less than a minute"


@register.filter
def time_left(moment: datetime | None) -> str:
    """`in {{ request.expires_at|time_left }}`: from now until `moment`."""
    if moment is None:
        return ""
    return time_left_text((moment - timezone.now()) / timedelta(seconds=1))


@register.filter
def log_line(line: str) -> SafeString:
    """One log line, HTML-escaped, its epoch times shown as UTC clock times (the full instant on hover)."""

    def clock(match: re.Match[str]) -> str:
        instant = datetime.fromtimestamp(float(match.group(1)), tz=UTC)
        iso = instant.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        full = iso.replace("T", " ").replace("Z", " UTC")
        return f'time=<time datetime="{iso}" title="{full}">{instant:%H:%M:%S}</time>'

    return mark_safe(_EPOCH.sub(clock, escape(line)))
