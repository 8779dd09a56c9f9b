"""The OpenAPI schema generates cleanly and the docs page uses only the project's own static files."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

pytestmark = pytest.mark.django_db


def test_schema_is_openapi_3_and_lists_the_endpoints(api_client_for, users) -> None:
    response = api_client_for(users.finance).get(reverse("api-schema") + "?format=json")
    assert response.status_code == 200
    schema = response.json()
    assert schema["openapi"].startswith("3.")
    assert {"/api/v1/projects/", "/api/v1/audit-events/", "/api/v1/system-checks/"} <= set(schema["paths"])
    assert "tokenAuth" in schema["components"]["securitySchemes"]


def test_schema_generation_has_no_warnings() -> None:
    import io

    from django.core.management import call_command

    errors = io.StringIO()
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", "/dev/null", stderr=errors)
    assert errors.getvalue() == ""


def test_docs_page_loads_no_assets_from_the_internet(client, users) -> None:
    client.force_login(users.data_scientist)
    page = client.get(reverse("api-docs")).content.decode()
    sources = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert sources and all(not s.startswith(("http://", "https://", "//")) for s in sources), sources
