"""How pages show a cost: an amount in USD, where it comes from (bill or estimate), and the open budget crossings."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from django import template

from controlplane import permissions

register = template.Library()

BANNER_SHOWN = 5


@register.filter
def usd(value: Any) -> str:
    """1234.5 → "$1,234.50"; under a dollar to four places, trailing zeros dropped to the cent (0.46, 0.0123), so a
    local run's fraction of a cent still shows; no value → "—"."""
    if value is None or value == "":
        return "—"
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        return "—"
    sign = "-" if amount < 0 else ""
    amount = abs(amount)
    if amount == 0:
        return "$0.00"
    if amount < Decimal("0.0001"):
        return f"{sign}under $0.0001"
    if amount < 1:
        text = f"{amount:.4f}".rstrip("0")
        if len(text.split(".")[1]) < 2:
            text = f"{amount:.2f}"
        return f"{sign}${text}"
    return f"{sign}${amount:,.2f}"


@register.filter
def cost_basis(cost: Any) -> str:
    from monitoring.costs.object_selectors import basis_label

    return basis_label(cost)


@register.inclusion_tag("monitoring/_budget_crossings.html", takes_context=True)
def budget_crossings_banner(context: Any, shown: int = BANNER_SHOWN) -> dict[str, Any]:
    """The open budget crossings (a month's spend over a threshold or its forecast over the budget), newest first."""
    from monitoring.costs.object_selectors import open_budget_crossings

    request = context.get("request")
    user = getattr(request, "user", None)
    if user is None or not permissions.has_permission(user, "cost.view"):
        return {"crossings": [], "count": 0}
    crossings = open_budget_crossings()
    return {"crossings": list(crossings[:shown]), "count": crossings.count()}
