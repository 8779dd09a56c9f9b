"""PostgreSQL lost under the running portal and given back: meanwhile every page answers 503 with a clear page, the
API its error body, /healthz says the database is down, all with Retry-After, never a 500 or a traceback; once it
is back the same portal answers 200 again with nothing restarted.

The portal is the real one (the web process and its gunicorn pools, as runall starts them), reaching PostgreSQL
through a loopback proxy the test cuts: every open connection closed at once and new ones refused, as when the
server or the network goes away.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from django.db import connection
from rest_framework.authtoken.models import Token

from controlplane import services as controlplane_services
from controlplane.management.commands.runall import web_command
from controlplane.middleware import DATABASE_RETRY_AFTER_SECONDS
from tests.fixtures.processes import child_env, wait_for
from tests.fixtures.roles import PASSWORD
from tests.fixtures.tcp_proxy import CuttableProxy
from tests.test_web_server import free_port

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parents[2]
THREADS = 4
UNAVAILABLE = {
    "error": {
        "status": 503,
        "code": "unavailable",
        "message": f"The database is unavailable; nothing can be read or saved. Try again in "
        f"{DATABASE_RETRY_AFTER_SECONDS} seconds.",
    }
}


@pytest.fixture
def proxy() -> Iterator[CuttableProxy]:
    if connection.vendor != "postgresql":
        pytest.skip(
            "PostgreSQL only: SQLite is a file opened by each process, there is no connection to drop "
            "(run with DATABASE_URL=postgres://…)"
        )
    settings_dict = connection.settings_dict
    with CuttableProxy((settings_dict.get("HOST") or "127.0.0.1", int(settings_dict.get("PORT") or 5432))) as proxy:
        yield proxy


@pytest.fixture
def portal(proxy: CuttableProxy, tmp_path: Path) -> Iterator[str]:
    """The portal as runall starts it (DEBUG off, as in production), its database reached through the proxy."""
    port = free_port()
    env = child_env(
        {"HOST": "127.0.0.1", "PORT": proxy.port},
        DJANGO_DEBUG="false",
        WEB_CONCURRENCY="1",
        GUNICORN_THREADS=str(THREADS),
    )
    log_path = tmp_path / "web.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            web_command("127.0.0.1", port),
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"the portal exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            return requests.get(f"{base}/healthz", timeout=15).status_code == 200
        except requests.RequestException:
            return False

    try:
        wait_for(answers, timeout=60, what="the portal to answer")
        yield base
    finally:
        # Nothing is in flight any more and nothing of it is kept: the whole group at once, not gunicorn's
        # shutdown, which takes seconds here.
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


def signed_in(base: str, username: str) -> requests.Session:
    browser = requests.Session()
    browser.get(f"{base}/accounts/login/", timeout=10).raise_for_status()
    answer = browser.post(
        f"{base}/accounts/login/",
        data={"username": username, "password": PASSWORD, "csrfmiddlewaretoken": browser.cookies["csrftoken"]},
        headers={"Referer": f"{base}/accounts/login/"},
        allow_redirects=False,
        timeout=10,
    )
    assert answer.status_code == 302, answer.text[:2000]
    return browser


def assert_unavailable_page(answer: requests.Response) -> None:
    assert answer.status_code == 503, (answer.status_code, answer.text[:3000])
    assert answer.headers["Retry-After"] == str(DATABASE_RETRY_AFTER_SECONDS)
    assert answer.headers["Content-Type"].startswith("text/html")
    assert "The database is unavailable" in answer.text and 'data-testid="database-unavailable"' in answer.text
    assert "Traceback" not in answer.text and "OperationalError" not in answer.text
    assert "default-src 'none'" in answer.headers["Content-Security-Policy"]
    assert answer.headers["X-Frame-Options"] == "DENY"


def assert_unavailable_api(answer: requests.Response) -> None:
    assert answer.status_code == 503, (answer.status_code, answer.text[:3000])
    assert answer.headers["Retry-After"] == str(DATABASE_RETRY_AFTER_SECONDS)
    assert answer.json() == UNAVAILABLE


def test_the_portal_answers_503_while_postgresql_is_cut_off_and_recovers_by_itself(
    users: Any, proxy: CuttableProxy, portal: str
) -> None:
    controlplane_services.project_create(actor=users.admin, name="Cancer", slug="cancer")
    token = Token.objects.create(user=users.data_scientist).key
    api = requests.Session()
    api.headers["Authorization"] = f"Token {token}"
    browser = signed_in(portal, "dana")

    def all_well() -> None:
        # More requests than the portal has threads, so every thread's connection is used (and, later, renewed).
        for _ in range(THREADS):
            assert browser.get(f"{portal}/", timeout=10).status_code == 200
            projects = api.get(f"{portal}/api/v1/projects/", timeout=10)
            assert projects.status_code == 200 and projects.json()["results"][0]["slug"] == "cancer"
        assert browser.get(f"{portal}/api/v1/projects/", timeout=10).status_code == 200
        assert requests.get(f"{portal}/healthz", timeout=10).text == "ok\n"

    all_well()
    assert proxy.connections >= 1, "the portal's connections go through the proxy"

    proxy.cut()
    for _ in range(THREADS):
        # A page: the session cannot be loaded (LoginRequiredMiddleware asks for the user first).
        assert_unavailable_page(browser.get(f"{portal}/projects/", timeout=10))
        # The API with a token (DRF looks the token up) and with the session (DRF loads it).
        for answer in (
            api.get(f"{portal}/api/v1/projects/", timeout=10),
            browser.get(f"{portal}/api/v1/projects/", timeout=10),
        ):
            assert_unavailable_api(answer)
            assert "GET" in answer.headers["Allow"], "answered inside DRF, by its exception handler"
    # A sign-in: the database is first needed inside the view (django-axes, then the password check).
    anonymous = requests.Session()
    anonymous.get(f"{portal}/accounts/login/", timeout=10)
    sign_in = anonymous.post(
        f"{portal}/accounts/login/",
        data={"username": "alex", "password": PASSWORD, "csrfmiddlewaretoken": anonymous.cookies["csrftoken"]},
        headers={"Referer": f"{portal}/accounts/login/"},
        allow_redirects=False,
        timeout=10,
    )
    assert_unavailable_page(sign_in)
    health = requests.get(f"{portal}/healthz", timeout=10)
    assert (health.status_code, health.text) == (503, "database unavailable\n")
    assert health.headers["Retry-After"] == str(DATABASE_RETRY_AFTER_SECONDS)

    proxy.restore()
    all_well()
    # Still signed in: the session outlived the outage.
    assert "dana" in browser.get(f"{portal}/", timeout=10).text
    for client in (api, browser, anonymous):
        client.close()  # no kept-alive connection for the server's graceful stop to wait on


def database_error(run: Any) -> BaseException:
    try:
        run()
    except Exception as exc:
        return exc
    raise AssertionError("expected a database error")


def test_only_a_lost_or_refused_connection_counts_as_the_database_unavailable(users: Any) -> None:
    """Real errors from the database in use: a refused connection is an outage; a statement's own error (integrity,
    a missing table, a timeout on PostgreSQL) is not, and stays the 500 (or the 400/409) it was."""
    from django.db import connections, transaction

    from controlplane.middleware import is_database_unavailable

    where = {"NAME": "/nonexistent/folder/db.sqlite3"} if connection.vendor == "sqlite" else {"PORT": free_port()}
    unreachable = type(connections["default"])({**connection.settings_dict, **where}, alias="unreachable")
    try:
        assert is_database_unavailable(database_error(unreachable.ensure_connection))
    finally:
        unreachable.close()

    def duplicate() -> None:
        with transaction.atomic():
            users.admin.__class__.objects.create(username=users.admin.username)

    def missing_table() -> None:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SELECT * FROM no_such_table")

    statement_errors = [database_error(duplicate), database_error(missing_table)]
    if connection.vendor == "postgresql":

        def too_slow() -> None:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute("SET LOCAL statement_timeout = 1")
                cursor.execute("SELECT pg_sleep(1)")

        statement_errors.append(database_error(too_slow))
    # SQLite reports a missing table as an OperationalError: the same class as a lost connection, yet not one.
    expected = ["IntegrityError", "OperationalError" if connection.vendor == "sqlite" else "ProgrammingError"]
    assert [type(exc).__name__ for exc in statement_errors[:2]] == expected
    assert not any(is_database_unavailable(exc) for exc in statement_errors), statement_errors
    # The connection that met them still works: nothing was closed.
    assert users.admin.__class__.objects.filter(pk=users.admin.pk).exists()
