"""Shared fixtures: users in every role, the broker, a real Celery worker."""

from __future__ import annotations

import os

# Playwright's sync API runs an event loop in the test thread; the ORM calls the tests make are still synchronous.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

pytest_plugins = [
    "tests.fixtures.aws",
    "tests.fixtures.cloudwatch",
    "tests.fixtures.database",
    "tests.fixtures.models",
    "tests.fixtures.roles",
    "tests.fixtures.processes",
]
