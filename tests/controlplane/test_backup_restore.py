"""A backup taken and restored exactly as docs/operations.md says brings back every record and every object.

The test makes real records (a project, an uploaded dataset version, a model version with an artifact and a compiled
copy, their audit events), backs up the database (pg_dump -Fc on PostgreSQL, the SQLite backup API on the embedded
default) and then the object store (rsync, without the store's temporary folder), restores both into an empty
database and a new folder, and runs `manage.py migrate` and `manage.py verify_store` against the copies in
subprocesses, as an operator would. The commands it runs are the guide's own lines (checked by the last test), so
the guide and this test cannot drift apart.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from django.db import connection

from controlplane import backends
from controlplane import services as controlplane_services
from controlplane.management.commands.verify_store import record_counts
from controlplane.models import AuditEvent
from lineage.models import DatasetVersion
from tests.deployments.conftest import make_model_version
from tests.fixtures.processes import database_url
from tests.lineage.conftest import upload

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "operations.md"

# The guide's commands, word for word; the variables are those the guide names.
PG_BACKUP = 'pg_dump -Fc --file="$BACKUP/controlplane.dump" "$DATABASE_URL"'
PG_CREATE = 'createdb --maintenance-db="$SERVER_URL" --template=template0 "$RESTORED_DB"'
PG_RESTORE = (
    'pg_restore --no-owner --no-privileges --single-transaction --dbname="$RESTORED_URL" "$BACKUP/controlplane.dump"'
)
SQLITE_BACKUP = (
    "python -c 'import sqlite3, sys; sqlite3.connect(sys.argv[1]).backup(sqlite3.connect(sys.argv[2]))' "
    '"$DATABASE_FILE" "$BACKUP/controlplane.sqlite3"'
)
SQLITE_CLEAR = 'rm -f "$CONTROLPLANE_VAR_DIR/controlplane.sqlite3-wal" "$CONTROLPLANE_VAR_DIR/controlplane.sqlite3-shm"'
SQLITE_RESTORE = 'cp "$BACKUP/controlplane.sqlite3" "$CONTROLPLANE_VAR_DIR/controlplane.sqlite3"'
STORE_BACKUP = 'rsync -a --exclude=/.objectstore/tmp/ "$OBJECTS/" "$BACKUP/objects/"'
STORE_RESTORE = 'rsync -a "$BACKUP/objects/" "$OBJECTS/"'
MIGRATE = "python manage.py migrate --noinput"
VERIFY = "python manage.py verify_store"

# Variables the subprocesses must not inherit from the test run: each names the copies explicitly.
INHERITED_CONFIG = (
    "DATABASE_URL",
    "REDIS_URL",
    "CELERY_BROKER_URL",
    "CONTROLPLANE_VAR_DIR",
    "OBJECT_STORE_URL",
    "DJANGO_ALLOW_ASYNC_UNSAFE",
    "DJANGO_SETTINGS_MODULE",
)


def run(line: str, **variables: str) -> subprocess.CompletedProcess[str]:
    """One of the guide's lines in a shell, with `python` the interpreter running the tests."""
    env = {name: value for name, value in os.environ.items() if name not in INHERITED_CONFIG}
    env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        DJANGO_SETTINGS_MODULE="controlplane.settings.local",
        **variables,
    )
    return subprocess.run(
        ["/bin/sh", "-c", line], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )


def succeeded(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, f"{result.args[-1]} failed:\n{result.stdout}\n{result.stderr}"
    return result


def counts_shown(stdout: str) -> dict[str, int]:
    """verify_store's "records:" lines, as (app_label.Model, rows)."""
    return {match[1]: int(match[2]) for match in re.finditer(r"^  ([a-z]+\.[A-Za-z]+) (\d+)$", stdout, re.M)}


@pytest.fixture
def live_store(settings: Any, tmp_path: Path) -> Any:
    """This test's own object store, so the backup holds its objects only and the copy stays small."""
    settings.OBJECT_STORE_URL = (tmp_path / "live" / "objects").as_uri()
    backends.object_store.cache_clear()
    yield backends.object_store()
    backends.object_store.cache_clear()


@pytest.mark.django_db(transaction=True)
def test_a_backup_restored_into_an_empty_database_and_folder_has_every_record_and_object(
    users: Any, api_client_for: Any, live_store: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The upload's profiling is not queued: a session worker taking it would add rows between the backup and the
    # counts it is compared with.
    from lineage import tasks as lineage_tasks

    monkeypatch.setattr(lineage_tasks.dataset_profile_task, "delay", lambda *args, **kwargs: None)
    project = controlplane_services.project_create(actor=users.admin, name="Cancer", slug="cancer")
    content = b"radius,texture,target\n" + b"".join(f"{i}.5,{i % 7}.25,{i % 2}\n".encode() for i in range(400))
    response = upload(
        api_client_for(users.data_scientist), project="cancer", dataset="bc", name="bc.csv", content=content
    )
    assert response.status_code == 201, response.content
    dataset_version = DatasetVersion.objects.get(pk=response.json()["id"])
    compiled = live_store.put_content_addressed(io.BytesIO(uuid.uuid4().bytes * 64), prefix="models/", suffix=".onnx")
    model_version = make_model_version(
        project,
        users.data_scientist,
        compiled_runtime="onnxruntime test",
        compiled_uri=compiled.uri,
        compiled_key=compiled.key,
        compiled_sha256=compiled.sha256,
    )
    assert AuditEvent.objects.filter(action__in=["project.create", "dataset_version.create"]).count() == 2
    before = dict(record_counts())
    # An upload still being written when the backup runs: its temporary file must not be copied.
    in_flight = Path(live_store.root) / ".objectstore" / "tmp" / "upload-in-flight"
    in_flight.write_bytes(b"half an upload")

    backup = tmp_path / "backup"
    backup.mkdir()
    restored_var = tmp_path / "restored-var"
    restored_var.mkdir()
    restored_objects = restored_var / "objects"
    store_env = {"BACKUP": str(backup), "OBJECTS": str(live_store.root), "CONTROLPLANE_VAR_DIR": str(restored_var)}
    # The database first, then the store: every object a record names was written before the record.
    restored_db = ""
    if connection.vendor == "postgresql":
        source_url = database_url(connection.settings_dict)
        succeeded(run(PG_BACKUP, BACKUP=str(backup), DATABASE_URL=source_url))
        succeeded(run(STORE_BACKUP, **store_env))
        restored_db = f"{connection.settings_dict['NAME']}_restored_{uuid.uuid4().hex[:8]}"
        restored_url = database_url({**connection.settings_dict, "NAME": restored_db})
        server_url = database_url({**connection.settings_dict, "NAME": "postgres"})
        app_env = {"DATABASE_URL": restored_url}
    else:
        succeeded(run(SQLITE_BACKUP, BACKUP=str(backup), DATABASE_FILE=str(connection.settings_dict["NAME"])))
        succeeded(run(STORE_BACKUP, **store_env))
        app_env = {}  # the embedded default: controlplane.sqlite3 in CONTROLPLANE_VAR_DIR
    app_env.update(CONTROLPLANE_VAR_DIR=str(restored_var), OBJECT_STORE_URL=restored_objects.as_uri())
    try:
        if restored_db:
            succeeded(run(PG_CREATE, SERVER_URL=server_url, RESTORED_DB=restored_db))
            succeeded(run(PG_RESTORE, BACKUP=str(backup), RESTORED_URL=restored_url))
        else:
            # A WAL file left by the database being replaced would be replayed onto the restored one.
            (restored_var / "controlplane.sqlite3-wal").write_bytes(b"not this database's log")
            succeeded(run(SQLITE_CLEAR, CONTROLPLANE_VAR_DIR=str(restored_var)))
            assert not (restored_var / "controlplane.sqlite3-wal").exists()
            succeeded(run(SQLITE_RESTORE, BACKUP=str(backup), CONTROLPLANE_VAR_DIR=str(restored_var)))
        succeeded(run(STORE_RESTORE, BACKUP=str(backup), OBJECTS=str(restored_objects)))
        assert not (backup / "objects" / ".objectstore" / "tmp" / in_flight.name).exists()

        migrated = succeeded(run(MIGRATE, **app_env))
        assert "No migrations to apply" in migrated.stdout
        verified = succeeded(run(VERIFY, **app_env))
        assert counts_shown(verified.stdout) == before
        assert before["lineage.DatasetVersion"] == before["lineage.ModelVersion"] == 1
        assert before["controlplane.AuditEvent"] >= 2 and before["auth.User"] == 6
        assert f"objects in {restored_objects.as_uri()}:" in verified.stdout
        assert "checked 3 (" in verified.stdout
        assert "missing 0, mismatched 0, unreadable 0, not checked 0" in verified.stdout

        # Damage the restored copy: one object's bytes changed, another gone.
        damaged = restored_objects / dataset_version.storage_key
        damaged.chmod(0o644)
        damaged.write_bytes(content.replace(b"0.5,", b"9.5,", 1))
        (restored_objects / model_version.compiled_key).unlink()
        failed = run(VERIFY, **app_env)
        assert failed.returncode == 1, failed.stdout + failed.stderr
        changed = hashlib.sha256(damaged.read_bytes()).hexdigest()
        assert (
            f"mismatched: dataset version cancer/bc v1 (id {dataset_version.pk}): {dataset_version.storage_key}: "
            f"recorded sha256 {dataset_version.sha256}, the store holds {changed}"
        ) in failed.stderr
        assert (
            f"missing: model version cancer/bc-classifier v1 (id {model_version.pk}) compiled copy: "
            f"{model_version.compiled_key}: not in {restored_objects.as_uri()}"
        ) in failed.stderr
        assert f"(id {model_version.pk}) artifact" not in failed.stderr  # its artifact is intact
        assert "2 of 3 objects failed verification (1 missing, 1 mismatched)" in failed.stderr
        # The live store is untouched by all this.
        with live_store.open(dataset_version.storage_key) as handle:
            assert handle.read() == content
    finally:
        if restored_db:
            with connection.cursor() as cursor:
                cursor.execute(f'DROP DATABASE IF EXISTS "{restored_db}" WITH (FORCE)')
        shutil.rmtree(restored_var, ignore_errors=True)


@pytest.mark.django_db
def test_a_model_version_whose_artifact_sagemaker_keeps_is_listed_as_not_checked(users: Any, live_store: Any) -> None:
    from django.core.management import call_command

    from lineage.models import ModelVersion, RegisteredModel, Run

    project = controlplane_services.project_create(actor=users.admin, name="Cancer", slug="cancer")
    registered = RegisteredModel.objects.create(project=project, slug="bc", name="bc", created_by=users.admin)
    run = Run.objects.create(project=project, kind="training", recipe="logistic_regression", created_by=users.admin)
    version = ModelVersion.objects.create(
        registered_model=registered,
        number=1,
        run=run,
        artifact_uri="s3://training/runs/1/output/model.tar.gz",
        artifact_key="",
        sha256="0" * 64,
        size=1,
        created_by=users.admin,
    )
    out = io.StringIO()
    call_command("verify_store", stdout=out)
    shown = out.getvalue()
    assert (
        f"not in the object store, not checked: model version cancer/bc v1 (id {version.pk}) artifact at "
        "s3://training/runs/1/output/model.tar.gz"
    ) in shown
    assert "checked 0 (0 bytes read), missing 0, mismatched 0, unreadable 0, not checked 1" in shown
    assert counts_shown(shown)["lineage.ModelVersion"] == 1


def guide_section(heading: str) -> str:
    text = GUIDE.read_text(encoding="utf-8")
    start = text.index(f"\n{heading}\n")
    end = text.find("\n## ", start + len(heading) + 2)
    return text[start : end if end != -1 else len(text)]


def test_the_guide_gives_the_commands_this_test_runs() -> None:
    backups = guide_section("## Backups")
    commands = (
        PG_BACKUP,
        PG_CREATE,
        PG_RESTORE,
        SQLITE_BACKUP,
        SQLITE_CLEAR,
        SQLITE_RESTORE,
        STORE_BACKUP,
        STORE_RESTORE,
    )
    for line in commands:
        assert line in backups, line
    assert f'DATABASE_URL="$RESTORED_URL" {MIGRATE}' in backups
    assert f'DATABASE_URL="$RESTORED_URL" {VERIFY}' in backups
    assert backups.index(PG_BACKUP) < backups.index(STORE_BACKUP)  # the database first, then the store
    upgrades = guide_section("## Upgrades")
    assert MIGRATE in upgrades and VERIFY in upgrades


def test_the_guide_explains_every_alert_the_code_raises() -> None:
    from monitoring.services.drift import DRIFT_ALERT
    from monitoring.services.objectives import OBJECTIVE_NAMES

    alerts = guide_section("## Alerts")
    for name in (*OBJECTIVE_NAMES, DRIFT_ALERT):
        assert f"| `{name}` |" in alerts, name
    assert "| `forecast` |" in alerts and "budget.cross" in alerts  # budget crossings
    assert "rolled back by the system" in alerts
