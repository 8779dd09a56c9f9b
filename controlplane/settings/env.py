"""Typed readers for configuration taken from environment variables.

A bad value stops the process with one line naming the variable and what it accepts,
instead of a traceback from deep inside Django.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import dj_database_url


class ConfigurationError(SystemExit):
    """Raised while settings load; Python prints the message and exits with status 1."""

    def __init__(self, variable: str, value: str, expected: str) -> None:
        shown = value if len(value) <= 80 else value[:77] + "..."
        super().__init__(f"configuration error: {variable}={shown!r} is not valid; expected {expected}")
        self.variable = variable


def env_str(name: str, default: str | None = None) -> str | None:
    """The value of `name`, or of the file named by `name_FILE` (for secrets mounted as files)."""
    file_path = os.environ.get(f"{name}_FILE")
    if file_path:
        try:
            return Path(file_path).read_text().strip()
        except OSError as exc:
            raise ConfigurationError(f"{name}_FILE", file_path, f"a readable file ({exc.strerror})") from None
    value = os.environ.get(name)
    return default if value is None or value == "" else value


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    lowered = value.strip().lower()
    if lowered == "true":
        return True
    if lowered == "false":
        return False
    raise ConfigurationError(name, value, "true or false")


def env_int(name: str, default: int, *, minimum: int = 0) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise ConfigurationError(name, value, f"a whole number >= {minimum}") from None
    if number < minimum:
        raise ConfigurationError(name, value, f"a whole number >= {minimum}")
    return number


def env_list(name: str, default: list[str]) -> list[str]:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return list(default)
    return [item.strip() for item in value.split(",") if item.strip()]


def env_choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    value = (os.environ.get(name) or default).strip()
    if value not in choices:
        raise ConfigurationError(name, value, "one of " + ", ".join(choices))
    return value


DATABASE_FORMS = "postgres://user:password@host:port/name or sqlite:////absolute/path.sqlite3"


def env_database(name: str, default_sqlite_path: Path) -> dict[str, Any]:
    """Parse DATABASE_URL; with nothing set, the embedded default is SQLite under var/."""
    value = os.environ.get(name, "").strip()
    if not value:
        return sqlite_database(default_sqlite_path)
    scheme = urlsplit(value).scheme
    if scheme not in ("postgres", "postgresql", "pgsql", "sqlite"):
        raise ConfigurationError(name, value, DATABASE_FORMS)
    try:
        config = dict(dj_database_url.parse(value, conn_max_age=60, conn_health_checks=True))
    except (ValueError, KeyError) as exc:
        raise ConfigurationError(name, value, DATABASE_FORMS) from exc
    if scheme == "sqlite":
        if not config.get("NAME") or config["NAME"] == ":memory:":
            raise ConfigurationError(name, value, DATABASE_FORMS)
        return sqlite_database(Path(str(config["NAME"])))
    if not config.get("NAME"):
        raise ConfigurationError(name, value, DATABASE_FORMS)
    try:
        # A non-numeric port only fails when urlsplit is asked for it.
        _ = urlsplit(value).port
    except ValueError:
        raise ConfigurationError(name, value, DATABASE_FORMS) from None
    return config


def sqlite_database(path: Path) -> dict[str, Any]:
    path.parent.mkdir(parents=True, exist_ok=True)
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(path),
        "OPTIONS": {
            # WAL lets the web process read while a worker writes; IMMEDIATE avoids
            # lock-upgrade deadlocks between the portal and several worker processes.
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            "transaction_mode": "IMMEDIATE",
            "timeout": 30,
        },
    }


BROKER_FORMS = "redis://host:port/db, rediss://host:port/db or redis+socket:///absolute/path.sock"


def env_broker(default_socket: Path) -> tuple[str, bool]:
    """The Celery broker URL and whether it is the embedded server that `make run` starts."""
    for name in ("CELERY_BROKER_URL", "REDIS_URL"):
        value = os.environ.get(name, "").strip()
        if value:
            parts = urlsplit(value)
            if (
                parts.scheme not in ("redis", "rediss", "redis+socket")
                or (parts.scheme == "redis+socket" and not parts.path.startswith("/"))
                or (parts.scheme != "redis+socket" and not parts.hostname)
            ):
                raise ConfigurationError(name, value, BROKER_FORMS)
            return value, False
    return f"redis+socket://{default_socket}", True
