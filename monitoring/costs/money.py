"""How money is written for people — pages, warnings, alert messages and emails alike."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any


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
