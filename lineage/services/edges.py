"""Lineage edges: which artifact or activity was made from which."""

from __future__ import annotations

import logging

from lineage.models import (
    LineageEdge,
)

log = logging.getLogger(__name__)


def lineage_link(*, source: str, target: str) -> None:
    LineageEdge.objects.get_or_create(source=source, target=target)
