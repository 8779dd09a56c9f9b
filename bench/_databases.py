"""Run a bench script's measuring child once per database (imported by the bench scripts, which run with bench/ on
sys.path): each in its own Python process (Django is configured once per process) with the embedded settings and a
temporary var/ folder. SQLite is a file there; PostgreSQL is the server at 127.0.0.1:5432 (user postgres), in a
database of the bench's own, dropped before and after."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path


def run_children(
    script: str, databases: list[str], *, database_name: str, args: list[str], cwd: Path
) -> dict[str, str]:
    """`script --child <database> *args` per database; each child's stdout, by database."""
    outputs = {}
    for database in databases:
        with tempfile.TemporaryDirectory() as var:
            env = dict(os.environ, DJANGO_SETTINGS_MODULE="controlplane.settings.local", CONTROLPLANE_VAR_DIR=var)
            if database == "postgres":
                _drop(database_name)
                subprocess.run(["createdb", "-h", "127.0.0.1", "-U", "postgres", database_name], check=True)
                env["DATABASE_URL"] = f"postgres://postgres@127.0.0.1:5432/{database_name}"
            else:
                env.pop("DATABASE_URL", None)
            try:
                outputs[database] = subprocess.run(
                    [sys.executable, script, "--child", database, *args],
                    env=env,
                    cwd=cwd,
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout
            finally:
                if database == "postgres":
                    _drop(database_name)
    return outputs


def _drop(database_name: str) -> None:
    subprocess.run(["dropdb", "-h", "127.0.0.1", "-U", "postgres", "--if-exists", database_name])
