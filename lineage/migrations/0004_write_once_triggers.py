"""On PostgreSQL the database itself refuses to change or delete dataset and model versions, whoever asks.

Same reasoning as controlplane 0003: SQLite is left to the model layer, because Django's test flush deletes
rows there, while on PostgreSQL it truncates, which row triggers do not see.
"""

from django.db import migrations

TABLES = ("lineage_datasetversion", "lineage_modelversion")

CREATE_FUNCTION = """
CREATE OR REPLACE FUNCTION controlplane_refuse_write_once_change() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION '% rows are write-once: % refused', TG_TABLE_NAME, TG_OP USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;
"""


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(CREATE_FUNCTION, params=None)
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
    schema_editor.execute("DROP FUNCTION IF EXISTS controlplane_refuse_write_once_change();", params=None)


class Migration(migrations.Migration):
    dependencies = [("lineage", "0003_registration_started_at")]

    operations = [migrations.RunPython(forwards, backwards)]
