"""Each role reaches what it should and gets 403 on what it should not; anonymous users are sent to sign-in."""

from __future__ import annotations

import json

import pytest
from django.urls import reverse
from pytest_django.asserts import assertContains

from controlplane import permissions

pytestmark = pytest.mark.django_db

PAGES = [
    "home",
    "project-list",
    "project-create",
    "audit-list",
    "audit-export",
    "api-token",
    "system-status",
    "api-docs",
    "dataset-list",
    "dataset-register",
    "run-list",
    "model-list",
]
API = [
    "api-me",
    "api-project-list",
    "api-audit-list",
    "api-schema",
    "api-dataset-list",
    "api-run-list",
    "api-model-list",
    "api-recipe-list",
]
READ_PAGES = {"dataset-list", "run-list", "model-list"}

# What each role may open (home is open to every signed-in user).
ALLOWED_PAGES = {
    permissions.DATA_SCIENTIST: {
        "home",
        "project-list",
        "project-create",
        "audit-list",
        "api-token",
        "api-docs",
        "dataset-register",
        *READ_PAGES,
    },
    permissions.APPROVER: {"home", "project-list", "audit-list", "api-token", "api-docs", *READ_PAGES},
    permissions.FINANCE: {"home", "project-list", "audit-list", "api-token", "api-docs", *READ_PAGES},
    permissions.ADMIN: set(PAGES),
    None: {"home"},
}


@pytest.mark.parametrize("name", PAGES)
def test_anonymous_users_are_sent_to_sign_in(client, name: str) -> None:
    response = client.get(reverse(name))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login") + "?next=")


@pytest.mark.parametrize("name", API)
def test_anonymous_api_calls_get_a_json_error(client, name: str) -> None:
    # Token authentication comes first, so an anonymous call is told to authenticate (401), never 403.
    response = client.get(reverse(name), HTTP_ACCEPT="application/json")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"
    assert json.loads(response.content)["error"]["status"] == 401


@pytest.mark.parametrize("role", [*permissions.ROLES, None])
def test_each_role_reaches_exactly_its_pages(client, users, role: str | None) -> None:
    user = users.by_role()[role] if role else users.outsider
    client.force_login(user)
    for name in PAGES:
        status = client.get(reverse(name)).status_code
        expected = 200 if name in ALLOWED_PAGES[role] else 403
        assert status == expected, f"{role or 'outsider'} on {name}: {status}"


@pytest.mark.parametrize("role", [*permissions.ROLES, None])
def test_api_obeys_the_same_rules(api_client_for, users, role: str | None) -> None:
    user = users.by_role()[role] if role else users.outsider
    client = api_client_for(user)
    assert client.get(reverse("api-me")).json()["roles"] == ([role] if role else [])
    for name in ("api-project-list", "api-dataset-list", "api-run-list", "api-model-list", "api-schema"):
        assert client.get(reverse(name), HTTP_ACCEPT="application/json").status_code == (200 if role else 403), name
    created = client.post(reverse("api-project-list"), {"name": f"P {role}", "slug": "p-x"}, format="json").status_code
    assert created == (201 if role in (permissions.DATA_SCIENTIST, permissions.ADMIN) else 403)


def test_token_authentication(users, client) -> None:
    from rest_framework.test import APIClient

    client.force_login(users.finance)
    client.post(reverse("api-token"))
    from rest_framework.authtoken.models import Token

    key = Token.objects.get(user=users.finance).key
    api = APIClient()
    assert api.get(reverse("api-me"), HTTP_AUTHORIZATION=f"Token {key}").json()["username"] == "fran"
    assert api.get(reverse("api-me"), HTTP_AUTHORIZATION="Token nope").status_code == 401


def test_superuser_counts_as_admin(users) -> None:
    users.outsider.is_superuser = True
    users.outsider.save()
    assert permissions.has_permission(users.outsider, "audit.export")


def test_health_check_answers_without_sign_in(client) -> None:
    response = client.get(reverse("healthz"))
    assert response.status_code == 200 and response.content == b"ok\n"


@pytest.mark.parametrize(
    "path", ["/api/v1/projects/?q=%00", "/api/v1/datasets/?project=a%00b", "/api/v1/runs/?creator=%00"]
)
def test_nul_characters_are_a_400_naming_the_field(api_client_for, users, path) -> None:
    response = api_client_for(users.finance).get(path)
    assert response.status_code == 400
    assert "NUL" in " ".join(next(iter(response.json()["error"]["fields"].values())))


def test_nul_in_a_json_body_or_a_page_is_a_400(api_client_for, users, client) -> None:
    response = api_client_for(users.data_scientist).post(
        reverse("api-project-list"), {"name": "x\u0000", "slug": "x"}, format="json"
    )
    assert response.status_code == 400 and "NUL" in response.json()["error"]["message"]
    client.force_login(users.data_scientist)
    assert client.get("/projects/?q=%00").status_code == 400


@pytest.mark.parametrize("role", [*permissions.ROLES, None])
def test_options_on_an_api_object_answers_exactly_per_role(api_client_for, users, role: str | None) -> None:
    # OPTIONS describes the endpoint, never an object: any signed-in user may ask, even for an id that does not exist.
    user = users.by_role()[role] if role else users.outsider
    response = api_client_for(user).options("/api/v1/dataset-versions/0/")
    assert response.status_code == 200
    assert response.json()["name"] == "Dataset Version Detail Api"


def test_anonymous_options_is_a_401(api_client_for) -> None:
    response = api_client_for(None).options("/api/v1/dataset-versions/0/")
    assert response.status_code == 401 and response.json()["error"]["status"] == 401


def _forbidden_page(client, user, path: str):
    client.force_login(user)
    response = client.get(path)
    assert response.status_code == 403
    return response


def test_a_refused_page_is_shown_in_the_layout_with_the_reason_and_the_roles(client, users) -> None:
    response = _forbidden_page(client, users.finance, reverse("system-status"))
    assert response.templates[0].name == "403.html"
    # The site's navigation is there, so the user can go on from here.
    assertContains(response, '<a href="/projects/">Projects</a>', html=True, status_code=403)
    assertContains(response, "<code>system.view</code>", html=True, status_code=403)
    assertContains(response, '<span class="badge" data-testid="needed-role">admin</span>', html=True, status_code=403)
    assertContains(response, '<span class="badge">finance</span>', html=True, status_code=403)


def test_a_refused_page_lists_every_role_that_may_open_it(client, users) -> None:
    response = _forbidden_page(client, users.outsider, reverse("project-create"))
    for role in (permissions.ADMIN, permissions.DATA_SCIENTIST):
        assertContains(
            response, f'<span class="badge" data-testid="needed-role">{role}</span>', html=True, status_code=403
        )
    assertContains(response, '<span class="badge warn">no role</span>', html=True, count=2, status_code=403)


def test_an_unknown_api_path_answers_the_json_error_body(api_client_for, users) -> None:
    for client in (api_client_for(users.finance), api_client_for(None)):
        response = client.get("/api/v1/no-such-thing/", HTTP_ACCEPT="application/json")
        assert response.status_code == 404
        assert response["Content-Type"] == "application/json"
        assert response.json() == {
            "error": {"status": 404, "code": "not_found", "message": "no API endpoint at /api/v1/no-such-thing/"}
        }


def test_an_unknown_api_path_is_json_even_with_debug_on(api_client_for, users, settings) -> None:
    # `make run` runs with DEBUG on, where Django's own 404 page is HTML.
    settings.DEBUG = True
    response = api_client_for(users.finance).post("/api/v1/runs/nope/", {}, format="json")
    assert response.status_code == 404
    assert response.json()["error"] == {
        "status": 404,
        "code": "not_found",
        "message": "no API endpoint at /api/v1/runs/nope/",
    }


def test_a_missing_slash_on_an_api_path_still_redirects_or_says_so(api_client_for, users) -> None:
    client = api_client_for(users.finance)
    response = client.get("/api/v1/projects")
    assert response.status_code == 301 and response["Location"] == "/api/v1/projects/"
    response = client.post("/api/v1/projects", {"name": "x", "slug": "x"}, format="json")
    assert response.status_code == 404
    assert response.json()["error"]["message"] == "no API endpoint at /api/v1/projects: did you mean /api/v1/projects/?"


def test_an_unknown_page_answers_in_the_layout(client, users) -> None:
    client.force_login(users.finance)
    response = client.get("/no-such-page/")
    assertContains(response, "<code>/no-such-page/</code>", html=True, status_code=404)
    assert response.templates[0].name == "404.html"
