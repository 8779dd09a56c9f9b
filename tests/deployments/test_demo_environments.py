"""`make run` seeds staging and production, so a newcomer can walk a promotion."""

from __future__ import annotations

import pytest
from django.core.management import call_command

from deployments.models import Environment

pytestmark = pytest.mark.django_db


def test_seed_demo_creates_the_environments_once(settings) -> None:
    settings.ALLOW_DEMO_DATA = True
    call_command("seed_demo")
    call_command("seed_demo")
    staging, production = Environment.objects.order_by("order")
    assert (staging.name, staging.approvals_required) == ("staging", 1)
    assert (production.name, production.approvals_required) == ("production", 2)
    assert "approved in staging" in production.gates
