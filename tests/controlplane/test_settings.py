"""Bad configuration stops the process with one line naming the variable; production refuses unsafe settings."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GOOD_SECRET = "k" * 20 + "Z9x!q" + "m" * 30


def manage(*args: str, settings: str = "controlplane.settings.local", **env: str) -> subprocess.CompletedProcess[str]:
    environment = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "DJANGO_ALLOW_ASYNC_UNSAFE")
    }
    environment.update(DJANGO_SETTINGS_MODULE=settings, **env)
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=environment, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("CONTROLPLANE_BACKEND", "kubernetes", "one of local, aws"),
        ("DATABASE_URL", "mysql://root@localhost/x", "postgres://"),
        ("DATABASE_URL", "postgres://user@host:notaport/db", "postgres://"),
        ("DATABASE_URL", "not a url", "sqlite:////"),
        ("OBJECT_STORE_URL", "relative/objects", "file:///absolute/path or s3://bucket[/prefix]"),
        ("OBJECT_STORE_URL", "s3://", "s3://bucket"),
        ("OBJECT_STORE_URL", "ftp://host/x", "file:///absolute/path"),
        ("CELERY_BROKER_URL", "amqp://guest@localhost//", "redis://"),
        ("DJANGO_DEBUG", "yes", "true or false"),
    ],
)
def test_bad_configuration_exits_with_one_line_naming_the_variable(variable: str, value: str, expected: str) -> None:
    result = manage("check", **{variable: value})
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"configuration error: {variable}=")
    assert expected in lines[0]


def test_aws_backend_needs_an_s3_object_store() -> None:
    result = manage("check", CONTROLPLANE_BACKEND="aws", OBJECT_STORE_URL="file:///tmp/objects")
    assert result.returncode == 1
    assert "OBJECT_STORE_URL" in result.stderr and "CONTROLPLANE_BACKEND=aws" in result.stderr


def test_production_refuses_to_start_without_a_secret_key() -> None:
    result = manage("check", settings="controlplane.settings.production", DJANGO_ALLOWED_HOSTS="cp.example.com")
    assert result.returncode == 1
    assert result.stderr.strip().startswith("configuration error: DJANGO_SECRET_KEY=")


def test_production_refuses_debug() -> None:
    result = manage(
        "check",
        settings="controlplane.settings.production",
        DJANGO_SECRET_KEY=GOOD_SECRET,
        DJANGO_ALLOWED_HOSTS="cp.example.com",
        DJANGO_DEBUG="true",
    )
    assert result.returncode == 1
    assert "DJANGO_DEBUG" in result.stderr


def test_production_secret_may_come_from_a_file(tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text(GOOD_SECRET + "\n")
    result = manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        settings="controlplane.settings.production",
        DJANGO_SECRET_KEY_FILE=str(secret_file),
        DJANGO_ALLOWED_HOSTS="cp.example.com",
    )
    assert result.returncode == 0, result.stderr


def test_check_deploy_is_clean_with_production_settings() -> None:
    result = manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        settings="controlplane.settings.production",
        DJANGO_SECRET_KEY=GOOD_SECRET,
        DJANGO_ALLOWED_HOSTS="cp.example.com",
        DATABASE_URL="postgres://cp@db.internal:5432/controlplane",
        REDIS_URL="redis://redis.internal:6379/0",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_redis_url_selects_redis_and_nothing_selects_the_embedded_broker() -> None:
    code = "from django.conf import settings; print(settings.CELERY_BROKER_URL, settings.CELERY_BROKER_IS_EMBEDDED)"
    embedded = manage("shell", "-c", code)
    assert embedded.returncode == 0, embedded.stderr
    last_line = embedded.stdout.strip().splitlines()[-1]
    assert last_line.startswith("redis+socket:///") and last_line.endswith("True")
    external = manage("shell", "-c", code, REDIS_URL="redis://127.0.0.1:6379/3")
    assert external.stdout.strip().splitlines()[-1] == "redis://127.0.0.1:6379/3 False"
