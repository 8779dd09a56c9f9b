"""Deployment events are append-only: on PostgreSQL the database refuses to change or delete one (as 0002)."""

from django.db import migrations

TABLE = "deployments_deploymentevent"


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(
        f"DROP TRIGGER IF EXISTS {TABLE}_write_once ON {TABLE}; "
        f"CREATE TRIGGER {TABLE}_write_once BEFORE UPDATE OR DELETE ON {TABLE} "
        f"FOR EACH ROW EXECUTE FUNCTION controlplane_refuse_write_once_change();",
        params=None,
    )


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(f"DROP TRIGGER IF EXISTS {TABLE}_write_once ON {TABLE};", params=None)


class Migration(migrations.Migration):
    dependencies = [("deployments", "0004_services_deployments")]

    operations = [migrations.RunPython(forwards, backwards)]
