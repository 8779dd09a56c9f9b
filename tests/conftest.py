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


# Fixtures that reach the database: a test using none of them (and not marked django_db) cannot touch it, since
# pytest-django refuses database access to such a test.
_DATABASE_FIXTURES = {
    "db",
    "transactional_db",
    "django_db_reset_sequences",
    "django_db_serialized_rollback",
    "live_server",
}
# Folders whose tests, when they touch no database, do not depend on which database and broker the pass uses.
_BACKEND_FREE_FOLDERS = ("tests/serving/", "tests/workers/")


def touches_database(item: Any) -> bool:
    return item.get_closest_marker("django_db") is not None or bool(_DATABASE_FIXTURES & set(item.fixturenames))


def _database_pass_runs_only_what_depends_on_the_database(config: Any, items: list[Any]) -> None:
    """CI runs the suite twice, on PostgreSQL + Redis and on the embedded default (.ci/run). The PostgreSQL pass
    (CONTROLPLANE_DATABASE_PASS=1, set by .ci/run alone) leaves out the serving runtime's and the backends' tests
    that touch no database: the embedded pass runs them, and they do the same there. `make test` by itself runs
    everything."""
    if os.environ.get("CONTROLPLANE_DATABASE_PASS") != "1":
        return
    same = [item for item in items if item.nodeid.startswith(_BACKEND_FREE_FOLDERS) and not touches_database(item)]
    if same:
        config.hook.pytest_deselected(items=same)
        items[:] = [item for item in items if item not in same]


def pytest_collection_modifyitems(session: Any, config: Any, items: list[Any]) -> None:
    """CI's PostgreSQL pass leaves out what the embedded pass runs the same (above). The `make run` test goes last,
    and its first `make run` starts now, so its minutes of waiting for the demo overlap the rest of the suite
    (tests/test_make_run.py, Early)."""
    _database_pass_runs_only_what_depends_on_the_database(config, items)
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
