"""Security settings: production's cookies and headers, sessions that expire, and sign-in rate limiting (axes)."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from axes.models import AccessAttempt
from django.conf import settings
from django.contrib.sessions.models import Session
from django.test import Client
from django.utils import timezone
from rest_framework.authtoken.models import Token

from tests.controlplane.test_security_pages import inline_code
from tests.controlplane.test_settings import GOOD_SECRET, manage
from tests.fixtures.page_html import parse
from tests.fixtures.roles import PASSWORD

PRODUCTION_VALUES = [
    "SESSION_COOKIE_SECURE",
    "CSRF_COOKIE_SECURE",
    "SESSION_COOKIE_HTTPONLY",
    "CSRF_COOKIE_HTTPONLY",
    "SESSION_COOKIE_AGE",
    "SECURE_HSTS_SECONDS",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS",
    "SECURE_HSTS_PRELOAD",
    "SECURE_SSL_REDIRECT",
    "X_FRAME_OPTIONS",
    "SECURE_CONTENT_TYPE_NOSNIFF",
    "SECURE_REFERRER_POLICY",
    "CONTENT_SECURITY_POLICY",
]


def production_settings(**env: str) -> dict[str, Any]:
    names = ", ".join(repr(name) for name in PRODUCTION_VALUES)
    code = (
        "import json; from django.conf import settings as s; "
        f"print(json.dumps({{n: getattr(s, n) for n in [{names}]}}))"
    )
    result = manage(
        "shell",
        "-c",
        code,
        settings="controlplane.settings.production",
        DJANGO_SECRET_KEY=GOOD_SECRET,
        DJANGO_ALLOWED_HOSTS="cp.example.com",
        **env,
    )
    assert result.returncode == 0, result.stderr
    values: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return values


def test_production_cookies_are_https_only_and_hidden_from_scripts_with_hsts_and_safe_headers() -> None:
    values = production_settings()
    assert values["SESSION_COOKIE_SECURE"] is True
    assert values["CSRF_COOKIE_SECURE"] is True
    assert values["SESSION_COOKIE_HTTPONLY"] is True
    assert values["CSRF_COOKIE_HTTPONLY"] is True
    assert values["SECURE_SSL_REDIRECT"] is True
    assert values["SECURE_HSTS_SECONDS"] >= 365 * 24 * 3600
    assert values["SECURE_HSTS_INCLUDE_SUBDOMAINS"] is True and values["SECURE_HSTS_PRELOAD"] is True
    assert values["X_FRAME_OPTIONS"] == "DENY"
    assert values["SECURE_CONTENT_TYPE_NOSNIFF"] is True
    assert values["SECURE_REFERRER_POLICY"] == "same-origin"
    assert values["SESSION_COOKIE_AGE"] == 12 * 3600
    directives = values["CONTENT_SECURITY_POLICY"]["DIRECTIVES"]
    assert directives["script-src"] == ["'self'"] and directives["frame-ancestors"] == ["'none'"]


@pytest.mark.django_db
def test_pages_carry_the_security_headers(client: Client, users: Any) -> None:
    client.force_login(users.data_scientist)
    response = client.get("/")
    assert response.status_code == 200
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"
    assert "script-src 'self'" in response["Content-Security-Policy"]
    assert "unsafe-inline" not in response["Content-Security-Policy"]


# --- sessions ---------------------------------------------------------------------------------------------------


def _sign_in(client: Client, username: str, password: str) -> Any:
    return client.post("/accounts/login/", {"username": username, "password": password})


@pytest.mark.django_db
def test_a_session_lasts_twelve_hours_and_then_the_person_signs_in_again(users: Any) -> None:
    assert settings.SESSION_COOKIE_AGE == 12 * 3600
    client = Client()
    response = _sign_in(client, users.data_scientist.username, PASSWORD)
    assert response.status_code == 302
    assert response.cookies["sessionid"]["max-age"] == 12 * 3600
    session = Session.objects.get(session_key=client.session.session_key)
    expected = timezone.now() + timedelta(hours=12)
    assert abs((session.expire_date - expected).total_seconds()) < 60
    assert client.get("/").status_code == 200
    # Twelve hours later (the stored expiry passed): the same cookie signs nobody in.
    Session.objects.filter(pk=session.pk).update(expire_date=timezone.now() - timedelta(seconds=1))
    response = client.get("/runs/")
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")


# --- sign-in rate limiting --------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_failed_sign_ins_lock_the_account_until_the_cool_off_even_with_the_right_password(users: Any) -> None:
    limit = settings.AXES_FAILURE_LIMIT
    username = users.data_scientist.username
    client = Client()
    for attempt in range(1, limit):
        response = _sign_in(client, username, f"wrong-{attempt}")
        assert response.status_code == 200, attempt
        assert b"did not match" in response.content
    response = _sign_in(client, username, "wrong-last")
    assert response.status_code == 429
    text = response.content.decode()
    assert "Too many failed sign-ins" in text and username in text
    assert f"after {limit} wrong passwords" in text and "for 15 minutes, even with the right password" in text
    # The lockout page is a page like the others: in the layout, under the same policy.
    assert "script-src 'self'" in response["Content-Security-Policy"]
    assert not inline_code(parse(response.content))

    # The right password now: still refused, nobody signed in.
    response = _sign_in(client, username, PASSWORD)
    assert response.status_code == 429
    assert "_auth_user_id" not in client.session
    # Another person is not locked out by it.
    assert _sign_in(Client(), users.approver.username, PASSWORD).status_code == 302

    # After the cool-off (the failures are older than it), the right password works.
    AccessAttempt.objects.filter(username=username).update(
        attempt_time=timezone.now() - settings.AXES_COOLOFF_TIME - timedelta(seconds=1)
    )
    response = _sign_in(client, username, PASSWORD)
    assert response.status_code == 302 and response["Location"] == "/"
    assert client.session["_auth_user_id"] == str(users.data_scientist.pk)


@pytest.mark.django_db
def test_a_locked_account_keeps_its_api_token_working(users: Any) -> None:
    user = users.data_scientist
    token = Token.objects.create(user=user).key
    for attempt in range(settings.AXES_FAILURE_LIMIT):
        _sign_in(Client(), user.username, f"wrong-{attempt}")
    assert _sign_in(Client(), user.username, PASSWORD).status_code == 429
    response = Client().get("/api/v1/me/", headers={"Authorization": f"Token {token}"})
    assert response.status_code == 200
    assert response.json()["username"] == user.username
    # A wrong token is still a 401, not the lockout page.
    assert Client().get("/api/v1/me/", headers={"Authorization": "Token nope"}).status_code == 401
