"""The OpenAPI schema generates cleanly and the docs page uses only the project's own static files."""

from __future__ import annotations

from html.parser import HTMLParser
from urllib.parse import urlsplit

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


class _Sources(HTMLParser):
    """Every address the page makes the browser load: script and image sources, stylesheet and icon links."""

    def __init__(self) -> None:
        super().__init__()
        self.sources: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag in ("script", "img") and values.get("src"):
            self.sources.append(str(values["src"]))
        if tag == "link" and values.get("href"):
            self.sources.append(str(values["href"]))


def test_docs_page_loads_no_assets_from_the_internet(client, users) -> None:
    client.force_login(users.data_scientist)
    parser = _Sources()
    parser.feed(client.get(reverse("api-docs")).content.decode())
    assert parser.sources and all(urlsplit(s).netloc == "" for s in parser.sources), parser.sources
    # The sidecar's files are served from the portal's own static files.
    assert any(s.startswith("/static/drf_spectacular_sidecar/") for s in parser.sources), parser.sources
