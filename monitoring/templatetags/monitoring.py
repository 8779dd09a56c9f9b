"""The open alerts banner (home page, service pages) and the few number formats the monitoring pages share."""

from __future__ import annotations

from typing import Any

from django import template

from controlplane import permissions

register = template.Library()

BANNER_SHOWN = 5


@register.filter
def alert_label(name: str) -> str:
    from monitoring.views import alert_label as label

    return label(name)


@register.filter
def share(value: Any) -> str:
    """0.0123 → "1.23%"; no value → "—"."""
    if value is None or value == "":
        return "—"
    return f"{float(value) * 100:.3g}%"


@register.filter
def ms(value: Any) -> str:
    if value is None or value == "":
        return "—"
    return f"{float(value):.4g} ms"


@register.filter
def per_second(value: Any) -> str:
    """A rate for people, never in scientific notation: 0 → "0", 0.004 → "<0.01", 0.1234 → "0.12", 12.34 → "12.3",
    1234.5 → "1,235"; no value → "—"."""
    if value is None or value == "":
        return "—"
    rate = float(value)
    if rate == 0:
        return "0"
    if rate < 0.01:
        return "<0.01"
    if rate < 10:
        return f"{rate:.2f}"
    if rate < 100:
        return f"{rate:.1f}"
    return f"{rate:,.0f}"


@register.inclusion_tag("monitoring/_alert_banner.html", takes_context=True)
def alert_banner(context: Any, service: Any = None) -> dict[str, Any]:
    """The open alerts (of one service, or of all): the newest few, and how many there are."""
    from monitoring.drift_selectors import open_alerts

    request = context.get("request")
    user = getattr(request, "user", None)
    if user is None or not permissions.has_permission(user, "service.view"):
        return {"alerts": [], "count": 0}
    alerts = open_alerts(user=user, service=service)
    return {"alerts": list(alerts[:BANNER_SHOWN]), "count": alerts.count(), "service": service}


@register.filter
def alert_amount(value: Any, name: str) -> str:
    """An alert's value or threshold in its objective's unit: milliseconds for latency, a share otherwise."""
    return ms(value) if str(name).endswith("_ms") else share(value)


@register.filter
def number(value: Any) -> str:
    """A statistic, p-value or score to four significant digits (1e-12 stays readable); none → "—"."""
    if value is None or value == "":
        return "—"
    return f"{float(value):.4g}"
