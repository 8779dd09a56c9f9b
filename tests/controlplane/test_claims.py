"""A row is worked on once; a row abandoned by a dead worker is taken again after its lease."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from controlplane.claims import claim, lease_seconds
from controlplane.models import SystemCheck

pytestmark = pytest.mark.django_db


def test_claims(users) -> None:
    check = SystemCheck.objects.create(requested_by=users.admin)
    rows = SystemCheck.objects.filter(pk=check.pk)
    assert claim(rows, worker="a") is True
    assert claim(rows, worker="b") is False  # a redelivered message: the first worker has it
    # The first worker died long ago: its lease has run out, so the row can be taken again.
    rows.update(started_at=timezone.now() - timedelta(seconds=lease_seconds() + 1))
    assert claim(rows, worker="c") is True
    assert SystemCheck.objects.get(pk=check.pk).worker == "c"
    rows.update(status="passed")
    assert claim(rows, worker="d") is False
