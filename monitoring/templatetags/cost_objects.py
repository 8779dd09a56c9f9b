"""How pages show a cost: an amount in USD, where it comes from (bill or estimate), and the open budget crossings."""

from __future__ import annotations

from typing import Any

from django import template

from controlplane import permissions
from monitoring.costs.money import usd

register = template.Library()

BANNER_SHOWN = 5


register.filter("usd", usd)


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
    crossings = open_budget_crossings(user=user)
    return {"crossings": list(crossings[:shown]), "count": crossings.count()}
