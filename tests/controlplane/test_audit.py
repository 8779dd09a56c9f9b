"""The audit log is append-only (ORM and, on PostgreSQL, SQL), filterable, and exportable by admins."""

from __future__ import annotations

import csv
import io

import pytest
from django.db import connection, transaction
from django.db.utils import DatabaseError
from django.urls import reverse

from controlplane import services
from controlplane.models import AuditEvent, AuditImmutableError

pytestmark = pytest.mark.django_db


@pytest.fixture
def event(users) -> AuditEvent:
    return services.audit_record(
        actor=users.data_scientist, action="project.create", object_type="project", object_id="x", after={"a": 1}
    )


def test_orm_refuses_update_and_delete(event: AuditEvent) -> None:
    event.reason = "rewritten"
    with pytest.raises(AuditImmutableError):
        event.save()
    with pytest.raises(AuditImmutableError):
        event.delete()
    with pytest.raises(AuditImmutableError):
        AuditEvent.objects.filter(pk=event.pk).update(reason="rewritten")
    with pytest.raises(AuditImmutableError):
        AuditEvent.objects.all().delete()
    with pytest.raises(AuditImmutableError):
        AuditEvent.objects.bulk_update([event], ["reason"])
    assert AuditEvent.objects.get(pk=event.pk).reason == ""


@pytest.mark.skipif(
    connection.vendor != "postgresql", reason="the trigger exists on PostgreSQL only (see migration 0003)"
)
def test_postgresql_refuses_update_and_delete_in_sql(event: AuditEvent) -> None:
    for statement in (
        "UPDATE controlplane_auditevent SET reason = 'rewritten'",
        "DELETE FROM controlplane_auditevent",
    ):
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(statement)
    assert AuditEvent.objects.get(pk=event.pk).reason == ""


def test_audit_page_filters(client, users) -> None:
    for slug in ("alpha", "beta"):
        services.project_create(actor=users.data_scientist, name=slug.title(), slug=slug)
    services.token_regenerate(actor=users.finance)
    client.force_login(users.approver)
    page = client.get(reverse("audit-list"), {"action": "project.", "object_id": "beta"}).content.decode()
    assert "Beta" in page and "Alpha" not in page and "token.create" not in page.split("<table")[1]
    by_actor = client.get(reverse("audit-list"), {"actor": "fran"}).content.decode()
    assert "token.create" in by_actor.split("<table")[1] and "Alpha" not in by_actor
    bad = client.get(reverse("audit-list"), {"since": "2026-13-01"})
    assert bad.status_code == 400 and 'data-field="since"' in bad.content.decode()


def test_csv_export_is_for_admins_and_contains_the_filtered_events(client, users) -> None:
    services.project_create(actor=users.data_scientist, name="Alpha", slug="alpha")
    services.project_create(actor=users.admin, name="Beta", slug="beta")
    client.force_login(users.approver)
    assert client.get(reverse("audit-export")).status_code == 403
    client.force_login(users.admin)
    response = client.get(reverse("audit-export"), {"actor": "dana"})
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert [(r["actor"], r["action"], r["object_id"]) for r in rows] == [("dana", "project.create", "alpha")]
    assert '"slug": "alpha"' in rows[0]["after"]


def test_api_lists_and_filters_events(api_client_for, users) -> None:
    services.project_create(actor=users.data_scientist, name="Alpha", slug="alpha")
    services.token_regenerate(actor=users.data_scientist)
    client = api_client_for(users.finance)
    body = client.get(reverse("api-audit-list"), {"action": "token."}).json()
    assert body["count"] == 1 and body["results"][0]["action"] == "token.create"
    bad = client.get(reverse("api-audit-list"), {"since": "2026-11-30", "until": "2026-11-01"})
    assert bad.status_code == 400 and "until" in bad.json()["error"]["fields"]
