"""On PostgreSQL the database itself refuses UPDATE and DELETE of audit events, whoever asks.

SQLite gets no trigger: Django's test flush empties tables with DELETE there, while on PostgreSQL it
uses TRUNCATE, which row triggers do not see.
"""

from django.db import migrations

CREATE = """
CREATE OR REPLACE FUNCTION controlplane_audit_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'audit events are append-only: % refused', TG_OP USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS controlplane_audit_append_only ON controlplane_auditevent;
CREATE TRIGGER controlplane_audit_append_only
    BEFORE UPDATE OR DELETE ON controlplane_auditevent
    FOR EACH ROW EXECUTE FUNCTION controlplane_audit_append_only();
"""

DROP = """
DROP TRIGGER IF EXISTS controlplane_audit_append_only ON controlplane_auditevent;
DROP FUNCTION IF EXISTS controlplane_audit_append_only();
"""


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE, params=None)


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP, params=None)


class Migration(migrations.Migration):
    dependencies = [("controlplane", "0002_roles")]

    operations = [migrations.RunPython(forwards, backwards)]
