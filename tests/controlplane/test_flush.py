"""The suite's own flush (tests/fixtures/database.py): after a transactional test every table is empty again,
the write-once ones (audit events refuse DELETE on PostgreSQL) and those other tables reference included."""

from __future__ import annotations

from typing import Any

import pytest
from django.apps import apps
from django.core.management import call_command
from django.db import connection

from controlplane import services as controlplane_services
from controlplane.models import AuditEvent


@pytest.mark.django_db(transaction=True)
def test_a_flush_empties_every_table_write_once_ones_too(users: Any) -> None:
    controlplane_services.project_create(actor=users.admin, name="Flushed", slug="flushed")
    assert AuditEvent.objects.exists()

    call_command("flush", verbosity=0, interactive=False, reset_sequences=False)

    left = {
        model._meta.db_table: model._default_manager.count()
        for model in apps.get_models(include_auto_created=True)
        if model._meta.managed and model._meta.db_table in connection.introspection.table_names()
    }
    # The flush sends post_migrate, which makes the content types and permissions again, as after TRUNCATE.
    left = {
        table: count
        for table, count in left.items()
        if count and table not in {"django_content_type", "auth_permission"}
    }
    assert left == {}
