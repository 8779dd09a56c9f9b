"""Every page the URL conf serves, as an admin sees it: each POST form carries the CSRF token and a POST without it
is refused (403); each page has the Content-Security-Policy header and nothing the policy would refuse (no inline
executable <script>, no on*= handler, no javascript: link, no inline style).

Pages are found from the URL conf: every page without parameters, then the links and htmx addresses those pages
render (the history below gives each kind of object one instance). A page pattern nobody reaches fails the test, so
a new page is covered as soon as a page links to it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.conf import settings
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, resolve
from django.urls.exceptions import Resolver404

from controlplane import plotly_css
from controlplane import services as controlplane_services
from controlplane.models import SystemCheck
from deployments import services as deployment_services
from deployments.models import Deployment, Environment, Service
from lineage.models import Run
from tests.deployments.conftest import make_model_version
from tests.fixtures.history import make_history
from tests.fixtures.page_html import Element, parse

pytestmark = pytest.mark.django_db

# Page patterns that answer something other than a page, or that the history has nothing to show on.
NOT_PAGES = {
    "healthz",  # plain text for the load balancer
    "logout",  # POST only: the sign-out form on every page is checked instead
    "audit-export",  # CSV
    "object-download",  # the object's bytes
    "lineage-openlineage",  # JSON
    "cost-export",  # CSV
    "notification-open",  # a redirect to the notification's object
}
# Pages the history below has nothing for: each has its own page test (tests/monitoring/costs/, tests/lineage/).
# (A rollback form needs an earlier revision that served, a deploy form an approved request: tests/deployments/.)
UNREACHED = {"budget-delete", "dataset-registration-detail", "deployment-create", "service-rollback"}
# Executable script types: a <script> of any other type (json_script's application/json) is data, not run.
SCRIPT_TYPES = {"", "text/javascript", "module", "application/javascript"}
POLICY = {
    "default-src": "'self'",
    "script-src": "'self'",
    "style-src": "'self'",
    "img-src": "'self' data:",
    "frame-ancestors": "'none'",
    "form-action": "'self'",
}


def _patterns(resolvers: list[Any], prefix: str = "") -> list[tuple[str, URLPattern]]:
    found: list[tuple[str, URLPattern]] = []
    for entry in resolvers:
        route = prefix + str(entry.pattern)
        if isinstance(entry, URLResolver):
            found.extend(_patterns(entry.url_patterns, route))
        elif isinstance(entry, URLPattern):
            found.append((route, entry))
    return found


def page_patterns() -> dict[str, str]:
    """Page name → route, for every pattern outside the admin and the API."""
    return {
        pattern.name: route
        for route, pattern in _patterns(get_resolver().url_patterns)
        if pattern.name and not route.startswith(("admin/", "api/")) and pattern.name not in NOT_PAGES
    }


@pytest.fixture
def history(users: Any, tmp_path: Path) -> dict[str, Any]:
    history = make_history(users, tmp_path)
    admin = users.admin
    deployment_services.environment_create(actor=admin, data={"name": "staging", "order": 10, "gates": []})
    project = controlplane_services.project_create(actor=admin, name="Demo", slug="demo")
    version = make_model_version(project, users.data_scientist, model="breast-cancer-classifier")
    deployment_services.approval_request_create(
        actor=users.data_scientist, model_version_id=version.pk, environment="staging", justification="go"
    )
    # A service with two deployments (the rollback and scale forms), a running run (its stop form), a system check.
    service = Service.objects.create(
        registered_model=version.registered_model,
        environment=Environment.objects.get(name="staging"),
        name="breast-cancer-classifier-staging",
        backend="local",
        created_by=admin,
    )
    for status in ("succeeded", "succeeded"):
        deployment = Deployment.objects.create(
            service=service, model_version=version, status=status, reason="test", initiated_by=users.approver
        )
    Service.objects.filter(pk=service.pk).update(current_deployment=deployment)
    run = history["run"]
    Run.objects.create(
        project=run.project,
        kind="training",
        recipe=run.recipe,
        recipe_version=run.recipe_version,
        recipe_fingerprint=run.recipe_fingerprint,
        created_by=users.data_scientist,
        status="running",
    )
    SystemCheck.objects.create(requested_by=admin)
    return history


def _local_address(href: str) -> str | None:
    parts = urlsplit(href)
    if parts.scheme or parts.netloc or not parts.path.startswith("/"):
        return None
    return parts.path + (f"?{parts.query}" if parts.query else "")


def _name(address: str) -> str | None:
    try:
        match = resolve(urlsplit(address).path)
    except Resolver404:
        return None
    return match.url_name


def walk(client: Client, names: dict[str, str], *, per_name: int = 2) -> tuple[dict[str, Element], set[str]]:
    """Address → parsed page, for the pages without parameters and the pages they link to (a few per name); and
    the names of the forms' actions (posted to, not opened)."""
    from django.urls import reverse

    queue = [reverse(name) for name, route in names.items() if "<" not in route and "(?P" not in route]
    # A page without parameters may still need a query (which dataset version to transform): from a link it works.
    seeds = set(queue)
    seen: dict[str, int] = {}
    pages: dict[str, Element] = {}
    actions: set[str] = set()
    visited: set[str] = set()
    while queue:
        address = queue.pop(0)
        name = _name(address)
        if address in visited or name not in names or seen.get(name, 0) >= per_name:
            continue
        visited.add(address)
        response = client.get(address)
        if address in seeds and response.status_code in (302, 400, 404, 405):
            continue
        assert response.status_code == 200, f"{address} answered {response.status_code}"
        seen[name] = seen.get(name, 0) + 1
        if "text/html" not in response.get("Content-Type", ""):
            continue
        check_policy_header(address, response)
        page = parse(response.content)
        pages[address] = page
        for element in page.find_all():
            for attribute in ("href", "hx-get"):
                target = _local_address(element.attrs.get(attribute, ""))
                if target:
                    queue.append(target)
            if element.tag == "form":
                action = _local_address(element.attrs.get("action") or address)
                if action and _name(action):
                    actions.add(str(_name(action)))
    return pages, actions


def check_policy_header(address: str, response: Any) -> None:
    header = response.get("Content-Security-Policy", "")
    directives = dict(part.strip().partition(" ")[::2] for part in header.split(";") if part.strip())
    for directive, value in POLICY.items():
        assert directives.get(directive) == value, f"{address}: CSP {directive} is {directives.get(directive)!r}"


def inline_code(page: Element) -> list[str]:
    """What on the page the Content-Security-Policy would refuse to run or apply."""
    found = []
    for element in page.find_all():
        attrs = element.attrs
        if element.tag == "script" and not attrs.get("src") and attrs.get("type", "").lower() in SCRIPT_TYPES:
            found.append(f"inline <script>: {element.text()[:80]}")
        if element.tag == "style":
            found.append(f"inline <style>: {element.text()[:80]}")
        for name, value in attrs.items():
            if re.fullmatch(r"on[a-z]+", name):
                found.append(f"<{element.tag} {name}={value!r}>")
            if name == "style":
                found.append(f"<{element.tag} style={value!r}>")
            if name in ("href", "src", "action") and value.strip().lower().startswith("javascript:"):
                found.append(f"<{element.tag} {name}={value!r}>")
    return found


def test_every_page_has_csrf_on_its_post_forms_and_passes_the_content_security_policy(
    users: Any, history: dict[str, Any]
) -> None:
    """One walk (it renders every page) for all the checks: each POST form carries the token and is refused
    without it; no inline script, handler or style on any page or htmx part; charts bring plotly's rules."""
    walked = _walk_as_admin(users)
    check_post_forms(users, walked)
    check_no_inline_code(walked)
    check_htmx_partials(users, walked)
    check_chart_pages(walked)


def _walk_as_admin(users: Any) -> dict[str, Element]:
    client = Client(enforce_csrf_checks=True)
    client.force_login(users.admin)
    names = page_patterns()
    pages, actions = walk(client, names)
    reached = {_name(address) for address in pages} | actions
    missed = sorted(set(names) - reached - UNREACHED)
    assert not missed, f"no page links to these pages, so nothing here checks them: {missed}"
    return pages


def check_post_forms(users: Any, walked: dict[str, Element]) -> None:
    forms: dict[str, str] = {}
    for address, page in walked.items():
        for form in page.find_all("form"):
            if form.attrs.get("method", "get").lower() != "post":
                continue
            tokens = form.find_all("input", name="csrfmiddlewaretoken")
            assert tokens and tokens[0].attrs.get("value"), f"{address}: a POST form has no CSRF token"
            forms.setdefault(_local_address(form.attrs.get("action") or address) or address, address)
    assert len(forms) >= 5, forms  # sign-out, project, dataset registration, training launch, approval forms...
    client = Client(enforce_csrf_checks=True)
    client.force_login(users.admin)
    for action, page in forms.items():
        response = client.post(action, {"name": "x"})
        assert response.status_code == 403, f"{action} (a form on {page}) accepted a POST without the CSRF token"
        assert b"CSRF" in response.content


def check_no_inline_code(walked: dict[str, Element]) -> None:
    found = {address: inline_code(page) for address, page in walked.items()}
    assert not {address: items for address, items in found.items() if items}


def check_htmx_partials(users: Any, walked: dict[str, Element]) -> None:
    client = Client()
    client.force_login(users.admin)
    partials = {
        target
        for page in walked.values()
        for element in page.find_all()
        if (target := _local_address(element.attrs.get("hx-get", "")))
    }
    assert partials
    for address in sorted(partials):
        response = client.get(address, headers={"HX-Request": "true"})
        assert response.status_code == 200, address
        assert not inline_code(parse(response.content)), address


def check_chart_pages(walked: dict[str, Element]) -> None:
    with_plotly = [
        page
        for page in walked.values()
        if any(s.attrs.get("src", "").endswith("plotly.min.js") for s in page.find_all("script"))
    ]
    assert with_plotly
    for page in with_plotly:
        link = page.find("link", id="plotly.js-style-global")
        assert "no-inline-styles" in link.attrs["class"].split()


def test_the_plotly_stylesheet_is_the_one_the_bundled_plotly_would_inject() -> None:
    assert plotly_css.STYLESHEET.read_text(encoding="utf-8") == plotly_css.stylesheet(), (
        "static/css/plotly.css is out of date: run `python -m controlplane.plotly_css`"
    )
    assert len(plotly_css.rules()) > 30
    allowed = settings.CONTENT_SECURITY_POLICY["DIRECTIVES"]["style-src-attr"]
    assert sorted(allowed) == sorted(["'unsafe-hashes'", *map(plotly_css.csp_hash, plotly_css.style_attributes())])
    template = Path(__file__).resolve().parents[2] / "templates" / "_plotly.html"
    assert f'id="{plotly_css.map_style_id()}"' in template.read_text(), "templates/_plotly.html: maplibre's id changed"
