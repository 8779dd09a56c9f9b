"""Every page requires sign-in; the API answers 401/403 itself instead of redirecting. A database that cannot be
reached is a 503 with a clear page (or the API's error body) and Retry-After, never a 500."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any

from django.contrib.auth.middleware import LoginRequiredMiddleware as DjangoLoginRequiredMiddleware
from django.core.signals import got_request_exception
from django.db import DatabaseError, InterfaceError, OperationalError, connections
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template import loader

log = logging.getLogger(__name__)

# What a client is told to wait before trying again while the database is unreachable.
DATABASE_RETRY_AFTER_SECONDS = 5
DATABASE_UNAVAILABLE_MESSAGE = (
    f"The database is unavailable; nothing can be read or saved. Try again in {DATABASE_RETRY_AFTER_SECONDS} seconds."
)
# PostgreSQL SQLSTATEs that mean "no usable connection": class 08 (connection exception), the server shutting down
# or starting up (57P01-57P03), too many connections (53300). Others (deadlocks, statement timeouts, lock timeouts)
# are errors of one statement on a working connection.
_CONNECTION_SQLSTATES = frozenset({"57P01", "57P02", "57P03", "53300"})
# The 503 page loads only app.css (and a data: icon).
_UNAVAILABLE_CSP = (
    "default-src 'none'; style-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
# SQLite: the file cannot be opened or read (extended codes such as SQLITE_IOERR_SHORT_READ included).
_SQLITE_CONNECTION_ERRORS = ("SQLITE_CANTOPEN", "SQLITE_IOERR")


def is_database_unavailable(exc: BaseException | None) -> bool:
    """Whether `exc` says the database cannot be reached (a lost or refused connection), as opposed to an error of
    one statement (integrity, programming, a deadlock or a timeout) that a retry of the request would not fix."""
    if not isinstance(exc, (OperationalError, InterfaceError)):
        return False
    cause = exc.__cause__
    if hasattr(cause, "sqlstate") or hasattr(cause, "pgcode"):  # psycopg 3, psycopg2
        # A client-side failure (refused, reset, closed) has no SQLSTATE: the server never answered.
        state = getattr(cause, "sqlstate", None) or getattr(cause, "pgcode", None)
        return state is None or state.startswith("08") or state in _CONNECTION_SQLSTATES
    name = getattr(cause, "sqlite_errorname", None)
    if name is not None:
        return isinstance(exc, OperationalError) and name.startswith(_SQLITE_CONNECTION_ERRORS)
    return False


def close_broken_connections() -> None:
    """Drop every connection that no longer works, so the next request opens a new one instead of failing on it."""
    for connection in connections.all(initialized_only=True):
        try:
            connection.close_if_unusable_or_obsolete()
        except DatabaseError:
            connection.connection = None  # closing a dead socket failed too: forget it


def database_unavailable(request: HttpRequest) -> HttpResponse:
    """The 503 answer: the API's error body on /api/ paths, a page elsewhere. Rendered without the request (no
    context processors, no session, no user), since each of those would query the database again."""
    close_broken_connections()
    response: HttpResponse
    if request.path.startswith("/api/"):
        body = {"error": {"status": 503, "code": "unavailable", "message": DATABASE_UNAVAILABLE_MESSAGE}}
        response = JsonResponse(body, status=503)
    else:
        again = request.get_full_path() if request.method in ("GET", "HEAD") else "/"
        page = loader.get_template("503_database.html").render(
            {"retry_after": DATABASE_RETRY_AFTER_SECONDS, "again": again}
        )
        response = HttpResponse(page, status=503)
    response["Retry-After"] = str(DATABASE_RETRY_AFTER_SECONDS)
    # Not kept by a cache or a proxy: the outage ends by itself.
    response["Cache-Control"] = "no-store"
    # Answered from outside the CSP and clickjacking middleware when the session failed: the page's own, stricter
    # policy (those middleware leave a header that is already set as it is).
    response["Content-Security-Policy"] = _UNAVAILABLE_CSP
    response["X-Frame-Options"] = "DENY"
    return response


def report_database_unavailable(request: Any, exc: BaseException | None) -> None:
    """One log line per request answered 503 (Django logs the traceback of one met in a middleware itself)."""
    method, path = getattr(request, "method", "?"), getattr(request, "path", "?")
    log.warning("database unavailable: %s %s answered 503 (%s)", method, path, exc or "see above")


def _note_database_unavailable(sender: Any, request: HttpRequest | None = None, **kwargs: Any) -> None:
    # Sent by Django inside its `except` for an exception it is about to answer with a 500.
    if request is not None and is_database_unavailable(sys.exc_info()[1]):
        request._database_unavailable = True  # type: ignore[attr-defined]


class DatabaseUnavailableMiddleware:
    """A lost database answers 503, wherever the request met it.

    In a view (or a template it renders), process_exception answers. In a middleware further in (the session loaded
    for LoginRequiredMiddleware, saved after the view), Django has already turned the exception into a 500 before it
    gets here: got_request_exception marks the request and the 500 is replaced on the way out. So this sits before
    SessionMiddleware. DRF views answer through controlplane.api_support.exception_handler, which does the same."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        got_request_exception.connect(_note_database_unavailable, dispatch_uid="controlplane.database_unavailable")

    def __call__(self, request: HttpRequest) -> HttpResponse:
        try:
            response = self.get_response(request)
        except (OperationalError, InterfaceError) as exc:  # the 500 handler itself met the database
            if not is_database_unavailable(exc):
                raise
            return self._unavailable(request, exc)
        if getattr(request, "_database_unavailable", False):
            return self._unavailable(request, None)
        return response

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if is_database_unavailable(exception):
            return self._unavailable(request, exception)
        return None

    def _unavailable(self, request: HttpRequest, exc: BaseException | None) -> HttpResponse:
        report_database_unavailable(request, exc)
        return database_unavailable(request)


class LoginRequiredMiddleware(DjangoLoginRequiredMiddleware):
    def process_view(self, request: HttpRequest, view_func: Any, view_args: Any, view_kwargs: Any) -> Any:
        # DRF authenticates API requests (session or token) and answers with JSON errors.
        if request.path.startswith("/api/"):
            return None
        return super().process_view(request, view_func, view_args, view_kwargs)
