"""Shared fixtures: users in every role, the broker, a real Celery worker."""

from __future__ import annotations

import gc
import os
from typing import Any

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

# The suite's process holds about two million objects by its end (boto's and moto's service models, Django's, the
# schema's), and every full collection walks all of them: 60 of them took 40 s of a pass. Full collections a tenth as
# often (young objects are still collected as usual) took 10 s of the workers' tests instead of 35.
gc.set_threshold(700, 10, 100)


def pytest_collection_modifyitems(session: Any, config: Any, items: list[Any]) -> None:
    """The `make run` test goes last, and its first `make run` starts now, so its minutes of waiting for the demo
    overlap the rest of the suite (tests/test_make_run.py, Early)."""
    chosen = [item for item in items if item.nodeid.startswith("tests/test_make_run.py")]
    if not chosen or config.option.collectonly:
        return
    items[:] = [item for item in items if item not in chosen] + chosen
    from tests.test_make_run import Early

    Early.start()


def pytest_unconfigure(config: Any) -> None:
    import sys

    module = sys.modules.get("tests.test_make_run")
    if module is not None:
        module.Early.stop()
