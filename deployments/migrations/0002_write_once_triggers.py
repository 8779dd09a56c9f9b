"""On PostgreSQL the database itself refuses to change or delete gate results and approval decisions (the
function comes from lineage 0004); SQLite is left to the model layer, for the reason given there."""

from django.db import migrations

TABLES = ("deployments_gateresult", "deployments_approvaldecision")


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for table in TABLES:
        schema_editor.execute(
            f"DROP TRIGGER IF EXISTS {table}_write_once ON {table}; "
            f"CREATE TRIGGER {table}_write_once BEFORE UPDATE OR DELETE ON {table} "
            f"FOR EACH ROW EXECUTE FUNCTION controlplane_refuse_write_once_change();",
            params=None,
        )


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for table in TABLES:
        schema_editor.execute(f"DROP TRIGGER IF EXISTS {table}_write_once ON {table};", params=None)


class Migration(migrations.Migration):
    dependencies = [("deployments", "0001_initial"), ("lineage", "0004_write_once_triggers")]

    operations = [migrations.RunPython(forwards, backwards)]
