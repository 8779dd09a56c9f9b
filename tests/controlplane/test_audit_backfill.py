"""Migration 0011: audit events recorded before projects were recorded on them (0009) get their object's project, so
a restricted project's old events are no longer read by everyone; nothing else of an event changes, and on
PostgreSQL the audit log is append-only again afterwards."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from django.apps import apps
from django.db import DatabaseError, connection, transaction

from controlplane import permissions, selectors
from controlplane import services as controlplane_services
from controlplane.models import AuditEvent
from tests.fixtures.history import make_history
from tests.fixtures.roles import make_user

pytestmark = pytest.mark.django_db

backfill = importlib.import_module("controlplane.migrations.0011_audit_event_project_backfill").backfill


def _old_event(object_type: str, object_id: Any, action: str = "old.change") -> AuditEvent:
    """An event as it was written before 0009: no project."""
    return AuditEvent.objects.create(
        actor=None,
        actor_name="system",
        action=action,
        object_type=object_type,
        object_id=str(object_id),
        object_repr=f"{object_type} {object_id}",
        after={"kept": True},
        reason="before projects were recorded",
    )


def test_old_events_get_their_object_s_project_and_nothing_else_changes(users: Any, tmp_path: Path) -> None:
    history = make_history(users, tmp_path)
    run, version, model_version = history["run"], history["version"], history["model_version"]
    project = run.project
    dataset, model = version.dataset, model_version.registered_model
    old = {
        "run": _old_event("run", run.pk),
        "dataset_version": _old_event("dataset_version", version.pk),
        "model_version": _old_event("model_version", model_version.pk),
        "dataset": _old_event("dataset", f"{project.slug}/{dataset.slug}"),
        "model": _old_event("model", f"{project.slug}/{model.slug}"),
        "project": _old_event("project", project.slug),
    }
    left = {
        "deleted run": _old_event("run", 999_999),
        "environment": _old_event("environment", 1),
        "not a pk": _old_event("run", "run-7"),
        "no such dataset": _old_event("dataset", f"{project.slug}/nothing"),
    }
    recorded = controlplane_services.project_create(actor=users.admin, name="Other", slug="other")
    already = AuditEvent.objects.filter(object_type="project", object_id=recorded.slug).get()
    assert already.project == "other"
    before = {e.pk: (e.action, e.object_id, e.after, e.reason, e.created_at) for e in AuditEvent.objects.all()}

    backfill(apps, SimpleNamespace(connection=connection))

    for kind, event in old.items():
        event.refresh_from_db()
        assert event.project == project.slug, kind
    for kind, event in left.items():
        event.refresh_from_db()
        assert event.project == "", kind
    assert AuditEvent.objects.get(pk=already.pk).project == "other"
    after = {e.pk: (e.action, e.object_id, e.after, e.reason, e.created_at) for e in AuditEvent.objects.all()}
    assert after == before

    # The end of it: with the project restricted, an outsider no longer reads its old events.
    controlplane_services.project_restrict(actor=users.admin, project=project, restricted=True)
    nina = make_user("nina", permissions.DATA_SCIENTIST)
    seen = set(selectors.audit_event_list(user=nina).values_list("pk", flat=True))
    assert not seen & {e.pk for e in old.values()}
    assert {e.pk for e in left.values()} <= seen
    assert set(selectors.audit_event_list(user=users.admin).values_list("pk", flat=True)) >= set(before)


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the append-only trigger exists on PostgreSQL only")
def test_the_audit_log_is_append_only_again_afterwards(users: Any) -> None:
    project = controlplane_services.project_create(actor=users.admin, name="Some", slug="some")
    event = _old_event("project", project.slug)
    backfill(apps, SimpleNamespace(connection=connection))  # the trigger is off for its update, then on again
    event.refresh_from_db()
    assert event.project == "some"
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("UPDATE controlplane_auditevent SET reason = 'rewritten' WHERE id = %s", [event.pk])
