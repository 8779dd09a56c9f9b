"""Audit events recorded before 0009 carry no project, so a restricted project's old events were read by everyone who
reads the audit log. Each such event of a project-owned object gets that object's project, which never changes.

Only the `project` column of events whose project is empty is written, and only where the object still exists; the
event's who, what, when and why are untouched. On PostgreSQL the append-only trigger (0003) is disabled for this
one statement per object type, inside the migration's transaction, so no other writer can pass while it is off.
Events of objects since deleted, and of objects with no project (environments, users, cost syncs), stay as they were.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from django.db import migrations

BATCH = 1000

# object_type → (app label, model, the path from that model to its project's slug). The object id is the pk.
BY_PK = {
    "run": ("lineage", "Run", "project__slug"),
    "dataset_version": ("lineage", "DatasetVersion", "dataset__project__slug"),
    "model_version": ("lineage", "ModelVersion", "registered_model__project__slug"),
    "approval_request": ("deployments", "ApprovalRequest", "model_version__registered_model__project__slug"),
    "service": ("deployments", "Service", "registered_model__project__slug"),
    "deployment": ("deployments", "Deployment", "service__registered_model__project__slug"),
    "alert": ("monitoring", "Alert", "service__registered_model__project__slug"),
    "budget": ("monitoring", "Budget", "project__slug"),
}
# object_type → the model whose `str()` the object id is: "<project slug>/<slug>".
BY_PATH = {"dataset": ("lineage", "Dataset"), "model": ("lineage", "RegisteredModel")}


def _batches(values: Iterable[str]) -> Iterable[list[str]]:
    batch: list[str] = []
    for value in values:
        batch.append(value)
        if len(batch) == BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def _resolvers(apps: Any) -> dict[str, Callable[[list[str]], dict[str, str]]]:
    """object_type → a function from object ids to {object id: project slug}, for the ids whose object exists."""
    Project = apps.get_model("controlplane", "Project")

    def by_pk(label: str, name: str, path: str) -> Callable[[list[str]], dict[str, str]]:
        def resolve(ids: list[str]) -> dict[str, str]:
            pks = [int(i) for i in ids if i.isdigit()]
            rows = apps.get_model(label, name).objects.filter(pk__in=pks).values_list("pk", path)
            return {str(pk): slug for pk, slug in rows if slug}

        return resolve

    def by_path(label: str, name: str) -> Callable[[list[str]], dict[str, str]]:
        def resolve(ids: list[str]) -> dict[str, str]:
            pairs = {i: tuple(i.split("/", 1)) for i in ids if i.count("/") == 1}
            found = set(
                apps.get_model(label, name)
                .objects.filter(project__slug__in={p for p, _ in pairs.values()})
                .values_list("project__slug", "slug")
            )
            return {i: pair[0] for i, pair in pairs.items() if pair in found}

        return resolve

    def projects(ids: list[str]) -> dict[str, str]:
        return {slug: slug for slug in Project.objects.filter(slug__in=ids).values_list("slug", flat=True)}

    return {
        "project": projects,
        **{kind: by_pk(*where) for kind, where in BY_PK.items()},
        **{kind: by_path(*where) for kind, where in BY_PATH.items()},
    }


def backfill(apps: Any, schema_editor: Any) -> None:
    AuditEvent = apps.get_model("controlplane", "AuditEvent")
    connection = schema_editor.connection
    table = connection.ops.quote_name(AuditEvent._meta.db_table)
    postgres = connection.vendor == "postgresql"
    for kind, resolve in _resolvers(apps).items():
        ids = AuditEvent.objects.filter(project="", object_type=kind).values_list("object_id", flat=True).distinct()
        for batch in _batches(ids.iterator()):
            by_project: dict[str, list[str]] = {}
            for object_id, slug in resolve(batch).items():
                by_project.setdefault(slug, []).append(object_id)
            if not by_project:
                continue
            with connection.cursor() as cursor:
                if postgres:
                    # A table with deferred constraint checks still pending in this transaction cannot be altered:
                    # they are made now.
                    cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
                    cursor.execute(f"ALTER TABLE {table} DISABLE TRIGGER controlplane_audit_append_only")
                for slug, object_ids in by_project.items():
                    marks = ", ".join(["%s"] * len(object_ids))
                    cursor.execute(
                        f"UPDATE {table} SET project = %s WHERE project = '' AND object_type = %s "  # noqa: S608
                        f"AND object_id IN ({marks})",
                        [slug, kind, *object_ids],
                    )
                if postgres:
                    cursor.execute(f"ALTER TABLE {table} ENABLE TRIGGER controlplane_audit_append_only")


class Migration(migrations.Migration):
    dependencies = [
        ("controlplane", "0010_aws_retry_count"),
        ("lineage", "0011_model_version_compiled"),
        ("deployments", "0006_monitoring_settings"),
        ("monitoring", "0004_cost_bill_days"),
    ]

    # Forward only: which events had no project before cannot be told apart afterwards, and they lose nothing.
    operations = [migrations.RunPython(backfill, migrations.RunPython.noop)]
