"""Every page and every API operation, as each kind of user, against the access policy (controlplane.permissions for
roles, controlplane.access for projects).

A world with an open project (penguins) and a restricted one whose every object carries the word MARK: a dataset, a
run that trained on the open project's data, a model version, an approval request, a service with deployments, a
cost record and a budget. The pages are found from the URL conf (every page without parameters, then what they link
to, as an admin sees it); the API operations from the OpenAPI schema, their path parameters filled with the restricted
project's objects (PATH_VALUES; a new path segment fails until it is declared there). Each address is asked twice,
with the project open and restricted, by each user:

- admins and the project's members get the same answers both times;
- finance gets the same answers on the cost pages, and on others the same or a refusal;
- a data scientist and an approver outside the project get either the same status without the word anywhere, or a
  refusal (403 or 404) — never the word; the pages and operations without parameters (lists, dashboards) still
  answer as before, only without the restricted project's rows;
- the forms and API writes on the restricted project's objects are refused to them and change nothing.

The open answers are the role policy alone (tests/controlplane/test_roles.py checks those); what the second pass
changes is what restricting a project does.
"""

from __future__ import annotations

import json
import re
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.test import Client
from django.urls import resolve, reverse

from controlplane import permissions
from controlplane import services as controlplane_services
from controlplane.models import AuditEvent, Project
from deployments import services as deployment_services
from deployments.models import Deployment, Environment, Service
from lineage.models import Dataset, DatasetProfile, DatasetVersion, LineageEdge, RunInput
from monitoring.models import Budget, CostRecord
from tests.controlplane.test_security_pages import _local_address, _name, page_patterns
from tests.deployments.conftest import make_model_version
from tests.fixtures.history import make_history
from tests.fixtures.page_html import parse
from tests.fixtures.roles import make_user

pytestmark = pytest.mark.django_db

MARK = "qzxsecret"
REFUSED = {403, 404}
PER_NAME = 2
# Pages whose answers finance sees across projects: costs, budgets, and the projects they are counted by.
COST_PAGES = re.compile(r"^(cost|budget|project)")
# A user's own inbox keeps what it was told while the project was open (a request to decide, sent to approvers).
PERSONAL = re.compile(r"^notification")


@pytest.fixture
def world(users: Any, tmp_path: Path) -> dict[str, Any]:
    history = make_history(users, tmp_path)
    admin, dana = users.admin, users.data_scientist
    staging = deployment_services.environment_create(
        actor=admin, data={"name": "staging", "order": 10, "approvals_required": 1, "gates": []}
    )
    secret = controlplane_services.project_create(actor=dana, name=f"{MARK} lab", slug=MARK)
    controlplane_services.project_member_set(actor=dana, project=secret, username="blair", role="member")
    dataset = Dataset.objects.create(project=secret, name=f"{MARK}-data", slug=f"{MARK}-data", created_by=dana)
    data_version = DatasetVersion.objects.create(
        dataset=dataset,
        number=1,
        sha256="ab" * 32,
        uri=f"s3://bucket/{MARK}/v1.csv",
        storage_key=f"datasets/{MARK}/v1",
        size=10,
        format="csv",
        content_format="csv",
        columns=[f"{MARK}_column"],
        row_count=1,
        source="s3",
        source_uri=f"s3://bucket/{MARK}/v1.csv",
        created_by=dana,
    )
    DatasetProfile.objects.create(
        version=data_version, status="ready", progress=1.0, profile=history["version"].profile.profile
    )
    version = make_model_version(secret, dana, model=f"{MARK}-model")
    run = version.run
    # The restricted run trained on the open project's data too: the open dataset's lineage leads into it.
    RunInput.objects.create(run=run, dataset_version=history["version"], channel="train")
    RunInput.objects.create(run=run, dataset_version=data_version, channel="validation")
    LineageEdge.objects.create(source=history["version"].node_id, target=run.node_id)
    LineageEdge.objects.create(source=data_version.node_id, target=run.node_id)
    request = deployment_services.approval_request_create(
        actor=dana, model_version_id=version.pk, environment="staging", justification=f"{MARK} ready"
    )
    service = Service.objects.create(
        registered_model=version.registered_model,
        environment=staging,
        name=f"{MARK}-svc",
        backend="local",
        created_by=admin,
    )
    deployments = [
        Deployment.objects.create(
            service=service, model_version=version, status="succeeded", reason=MARK, initiated_by=users.approver
        )
        for _ in range(2)
    ]
    Service.objects.filter(pk=service.pk).update(current_deployment=deployments[-1])
    today = date.today()
    for project in ("penguins", MARK):
        CostRecord.objects.create(
            day=today,
            source="estimate",
            breakdown="project",
            project=project,
            model=f"{project}-model",
            amount=Decimal("12.34"),
        )
    budget = Budget.objects.create(project=secret, amount=Decimal("100"), thresholds=[80, 100], created_by=admin)
    return {
        "project": secret,
        "dataset": dataset,
        "data_version": data_version,
        "run": run,
        "version": version,
        "request": request,
        "service": service,
        "deployment": deployments[-1],
        "budget": budget,
        "environment": Environment.objects.get(name="staging"),
    }


# --- what each address answers ----------------------------------------------------------------------------------


def _body(response: Any) -> bytes:
    if getattr(response, "streaming", False):
        return b"".join(response.streaming_content)
    return bytes(response.content)


def answer(client: Client, address: str) -> tuple[int, bool]:
    response = client.get(address)
    return response.status_code, MARK.encode() in _body(response)


def crawl(client: Client) -> tuple[dict[str, str], dict[str, set[str]]]:
    """Address → page name for every page an admin reaches (a few per name, newest objects first, so the restricted
    project's come first), and form action → the addresses of the pages that carry the form."""
    names = page_patterns()
    queue = [reverse(name) for name, route in names.items() if "<" not in route and "(?P" not in route]
    queue = [reverse("project-detail", args=[MARK]), *queue]
    seen: dict[str, int] = {}
    found: dict[str, str] = {}
    forms: dict[str, set[str]] = {}
    while queue:
        address = queue.pop(0)
        name = _name(address)
        if address in found or name not in names or seen.get(name, 0) >= PER_NAME:
            continue
        response = client.get(address)
        if response.status_code != 200:
            continue
        seen[name] = seen.get(name, 0) + 1
        found[address] = str(name)
        if "text/html" not in response.get("Content-Type", ""):
            continue
        page = parse(response.content)
        for element in page.find_all():
            for attribute in ("href", "hx-get"):
                target = _local_address(element.attrs.get(attribute, ""))
                if target:
                    queue.append(target)
            if element.tag == "form" and (element.attrs.get("method") or "").lower() == "post":
                action = _local_address(element.attrs.get("action") or address)
                if action and _name(action):
                    forms.setdefault(action, set()).add(address)
    return found, forms


def _clients(users: Any, outsider: Any) -> dict[str, Client]:
    people = {
        "anonymous": None,
        "member data scientist": users.data_scientist,
        "member approver": users.approver2,
        "outside data scientist": outsider,
        "outside approver": users.approver,
        "finance": users.finance,
        "admin": users.admin,
    }
    clients = {}
    for who, user in people.items():
        client = Client()
        if user is not None:
            client.force_login(user)
        clients[who] = client
    return clients


def _set_restricted(users: Any, project: Project, restricted: bool) -> None:
    controlplane_services.project_restrict(actor=users.data_scientist, project=project, restricted=restricted)


def _has_parameters(address: str) -> bool:
    """Whether the address names objects: in its path, or in its query (a form preset with a dataset version)."""
    parts = urlsplit(address)
    return bool(resolve(parts.path).kwargs) or bool(parts.query)


def check(who: str, name: str, address: str, opened: tuple[int, bool], restricted: tuple[int, bool]) -> str | None:
    """What is wrong with `restricted` (the answer with the project restricted) given `opened`, or None."""
    if who in ("admin", "member data scientist", "member approver") or (who == "finance" and COST_PAGES.match(name)):
        return None if restricted == opened else f"answered {restricted}, {opened} with the project open"
    if who == "anonymous":
        signed_out = restricted[0] in (302, 401, 403) or restricted[0] == opened[0]  # the sign-in page
        return None if signed_out and not restricted[1] else "anonymous got in"
    if PERSONAL.match(name):
        return None
    status, shown = restricted
    if status in REFUSED:
        # (A refusal may repeat the name the address asked for: that tells nothing the asker did not know.)
        if opened[0] not in REFUSED and not _has_parameters(address):
            return "a list refused instead of leaving the project's rows out"
        return None
    if shown and MARK not in urlsplit(address).query:  # (a form preset from the address repeats what it was given)
        return "shows the restricted project's word"
    return None if status == opened[0] else f"answered {status}, {opened[0]} with the project open"


def test_every_page_answers_each_user_as_the_policy_says(users: Any, world: dict[str, Any]) -> None:
    outsider = make_user("nina", permissions.DATA_SCIENTIST)
    # (A member approver is the API test's; here a member's view is the data scientist's.)
    clients = {who: c for who, c in _clients(users, outsider).items() if who != "member approver"}
    addresses, forms = crawl(clients["admin"])
    opened = {who: {a: answer(c, a) for a in addresses} for who, c in clients.items()}
    _set_restricted(users, world["project"], True)
    problems = []
    refused: dict[str, str] = {}
    for who, client in clients.items():
        for address, name in addresses.items():
            now = answer(client, address)
            problem = check(who, name, address, opened[who][address], now)
            if problem:
                problems.append(f"{who} {address} ({name}): {problem}")
            if who == "outside data scientist" and now[0] in REFUSED and opened[who][address][0] not in REFUSED:
                refused[address] = name
    assert not problems, "\n".join(problems)
    # The restricted project's own pages were walked, and refused outside it.
    expected = {"project-detail", "run-detail", "model-detail", "service-detail", "approval-request-detail"}
    assert expected <= set(refused.values()), sorted(set(refused.values()))
    check_forms(clients, forms, set(refused))


def check_forms(clients: dict[str, Client], forms: dict[str, set[str]], restricted_pages: set[str]) -> None:
    """Each form on a page of the restricted project's objects (not one that pages without parameters carry too,
    like signing out), posted empty from outside: refused, and nothing recorded."""
    everywhere = {action for action, pages in forms.items() if any(not _has_parameters(p) for p in pages)}
    targets = sorted(a for a, pages in forms.items() if a not in everywhere and pages & restricted_pages)
    assert targets, "no form of the restricted project's pages was found"
    before = AuditEvent.objects.count()
    problems = []
    for who in ("outside data scientist", "outside approver"):
        for action in targets:
            response = clients[who].post(action, {})
            if response.status_code not in REFUSED:
                problems.append(f"{who} POST {action}: {response.status_code}")
    assert not problems, "\n".join(problems)
    assert AuditEvent.objects.count() == before


# --- the API, from its schema -----------------------------------------------------------------------------------


def path_values(world: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The first path segment after /api/v1/ → the value of each path parameter naming the restricted project's
    object of that kind."""
    return {
        "projects": {"slug": MARK, "username": "blair"},
        "datasets": {"project": MARK, "slug": world["dataset"].slug},
        "dataset-versions": {"id": world["data_version"].pk},
        "runs": {"id": world["run"].pk},
        "models": {"project": MARK, "slug": world["version"].registered_model.slug},
        "model-versions": {"id": world["version"].pk},
        "lineage": {"node_id": world["run"].node_id},
        "approval-requests": {"id": world["request"].pk},
        "services": {"id": world["service"].pk},
        "deployments": {"id": world["deployment"].pk},
        "budgets": {"id": world["budget"].pk},
    }


# Segments whose objects belong to no project: their parameters name shared things, not the restricted project's.
SHARED = {"environments", "cost-syncs", "dataset-registrations", "dataset-uploads", "notifications", "system-checks"}


def operations(admin: Client) -> list[tuple[str, str]]:
    schema = json.loads(admin.get("/api/v1/schema/?format=json").content)
    return [
        (method.upper(), path)
        for path, item in schema["paths"].items()
        for method in item
        if method in ("get", "post", "put", "patch", "delete")
    ]


def fill(path: str, values: dict[str, dict[str, Any]]) -> str | None:
    parameters = re.findall(r"\{(\w+)\}", path)
    if not parameters:
        return path
    segment = path.removeprefix("/api/v1/").split("/")[0]
    if segment in SHARED:
        return None
    assert segment in values, f"{path}: declare the restricted project's values for /{segment}/ in path_values"
    return re.sub(r"\{(\w+)\}", lambda m: str(values[segment][m.group(1)]), path)


def test_every_api_operation_answers_each_user_as_the_policy_says(users: Any, world: dict[str, Any]) -> None:
    outsider = make_user("nina", permissions.DATA_SCIENTIST)
    clients = _clients(users, outsider)
    ops = operations(clients["admin"])
    values = path_values(world)
    reads = sorted({filled for method, path in ops if method == "GET" and (filled := fill(path, values))})
    writes = sorted(
        {(method, filled) for method, path in ops if method != "GET" and "{" in path and (filled := fill(path, values))}
    )
    assert len(reads) > 20 and writes
    opened = {who: {a: answer(c, a) for a in reads} for who, c in clients.items()}
    _set_restricted(users, world["project"], True)
    problems = []
    for who, client in clients.items():
        for address in reads:
            name = address
            if re.match(r"/api/v1/(costs|budgets|cost-|projects)", address):
                name = "cost"
            elif address.startswith("/api/v1/notifications"):
                name = "notifications"
            problem = check(who, name, address, opened[who][address], answer(client, address))
            if problem:
                problems.append(f"{who} GET {address}: {problem}")
    before = AuditEvent.objects.count()
    for who in ("outside data scientist", "outside approver"):
        for method, address in writes:
            response = getattr(clients[who], method.lower())(address, data="{}", content_type="application/json")
            if response.status_code not in REFUSED:
                problems.append(f"{who} {method} {address}: {response.status_code}")
    assert not problems, "\n".join(problems)
    assert AuditEvent.objects.count() == before
