"""The portal serves every script it loads from installed Python packages: `make run` needs no npm."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.staticfiles import finders
from django.urls import reverse

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parents[2]


class _Scripts(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.sources: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "script" and dict(attrs).get("src"):
            self.sources.append(str(dict(attrs)["src"]))


def test_htmx_is_django_htmx_s_own_copy(client, users) -> None:
    client.force_login(users.finance)
    parser = _Scripts()
    parser.feed(client.get(reverse("home")).content.decode())
    htmx = [s for s in parser.sources if "htmx" in s]
    assert htmx == [settings.STATIC_URL + "django_htmx/htmx-2.min.js"]
    found = finders.find(htmx[0].removeprefix(settings.STATIC_URL))
    assert found and "site-packages/django_htmx/" in found


def test_nothing_needs_npm() -> None:
    assert not (ROOT / "package.json").exists()
    assert "npm" not in (ROOT / "Makefile").read_text()
    assert all("node_modules" not in str(source) for source in settings.VENDOR_STATIC_FILES.values())


def test_htmx_requests_are_recognised_by_the_middleware(client, users) -> None:
    from controlplane.models import SystemCheck

    check = SystemCheck.objects.create(requested_by=users.admin)
    client.force_login(users.admin)
    fragment = client.get(reverse("system-check-detail", args=[check.pk]), HTTP_HX_REQUEST="true")
    whole = client.get(reverse("system-check-detail", args=[check.pk]))
    assert "<html" not in fragment.content.decode() and "<html" in whole.content.decode()
