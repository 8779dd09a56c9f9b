"""The home page by role: a data scientist's runs (refreshing while any is under way), models and where each version
stands, and open requests; an approver's queue, the services they can roll back and the deployments under way
(refreshing while any is); finance's month; no role, no sections. Each list is short, links to its full list, and
costs the same number of queries however long the list behind it is."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from controlplane import services as controlplane_services
from controlplane.selectors import HOME_ROWS, HOME_VERSIONS_EACH
from deployments import services
from deployments.models import ApprovalRequest, Deployment, Service
from deployments.services.deploys import rollback_target
from lineage.models import Run
from tests.deployments.conftest import make_model_version
from tests.fixtures.page_html import Element, parse

pytestmark = pytest.mark.django_db

SECTIONS = ("my-runs", "my-models", "my-requests", "home-queue", "rollback-services", "deployments-in-progress")


@pytest.fixture
def project(users: Any) -> Any:
    return controlplane_services.project_create(actor=users.admin, name="Breast cancer", slug="bc")


@pytest.fixture
def staging(users: Any) -> Any:
    return services.environment_create(actor=users.admin, data={"name": "staging", "order": 10})


@pytest.fixture
def production(users: Any, staging: Any) -> Any:
    return services.environment_create(
        actor=users.admin, data={"name": "production", "order": 20, "approvals_required": 2}
    )


def home(client: Any, user: Any) -> Element:
    client.force_login(user)
    response = client.get(reverse("home"))
    assert response.status_code == 200
    return parse(response.content)


def part(client: Any, name: str) -> Element:
    response = client.get(reverse("home"), {"part": name}, HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    page = parse(response.content)
    assert not page.has("main"), "a part is the section alone, not the page"
    return page


def make_run(project: Any, author: Any, status: str, minutes_ago: int) -> Run:
    run = Run.objects.create(
        project=project,
        kind="training",
        recipe="logistic_regression",
        recipe_version="2",
        recipe_fingerprint=hashlib.sha256(b"recipe").hexdigest(),
        created_by=author,
        status=status,
    )
    Run.objects.filter(pk=run.pk).update(created_at=timezone.now() - timedelta(minutes=minutes_ago))
    return run


def deploy(service: Service, version: Any, status: str, minutes_ago: int, users: Any, **fields: Any) -> Deployment:
    deployment = Deployment.objects.create(
        service=service, model_version=version, status=status, reason="test", initiated_by=users.approver, **fields
    )
    Deployment.objects.filter(pk=deployment.pk).update(created_at=timezone.now() - timedelta(minutes=minutes_ago))
    deployment.refresh_from_db()
    return deployment


def make_service(name: str, environment: Any, first: Any, users: Any) -> Service:
    return Service.objects.create(
        registered_model=first.registered_model,
        environment=environment,
        name=name,
        backend="local",
        created_by=users.admin,
    )


def serve(service: Service, deployment: Deployment) -> None:
    Service.objects.filter(pk=service.pk).update(current_deployment=deployment)
    service.refresh_from_db()


def request_for(users: Any, version: Any, environment: str, author: Any = None) -> ApprovalRequest:
    return services.approval_request_create(
        actor=author or users.data_scientist, model_version_id=version.pk, environment=environment, justification="go"
    )


# --- a data scientist ---------------------------------------------------------------------------------------------


def test_a_data_scientist_sees_their_newest_runs_and_none_of_anyone_elses(client, users, project) -> None:
    mine = [make_run(project, users.data_scientist, "succeeded", minutes_ago=60 - n) for n in range(7)]
    make_run(project, users.admin, "running", minutes_ago=0)  # newer, not theirs
    section = home(client, users.data_scientist).find("section", data_testid="my-runs")
    shown = [row.attrs["data-run"] for row in section.find_all("tr", data_testid="my-run")]
    assert shown == [str(run.pk) for run in reversed(mine)][:HOME_ROWS]
    assert section.links()["All your runs (7)"] == reverse("run-list") + "?creator=dana"
    # Nothing under way: the rows stay as they are.
    assert section.attrs["data-active"] == "false" and "hx-trigger" not in section.attrs


def test_the_runs_refresh_while_one_is_under_way_and_stop_once_it_ends(client, users, project) -> None:
    make_run(project, users.data_scientist, "succeeded", minutes_ago=10)
    running = make_run(project, users.data_scientist, "running", minutes_ago=1)
    section = home(client, users.data_scientist).find("section", data_testid="my-runs")
    assert section.attrs["data-active"] == "true"
    assert section.attrs["hx-get"] == reverse("home") + "?part=runs" and section.attrs["hx-trigger"] == "every 2s"
    assert section.find("tr", data_run=str(running.pk)).attrs["data-status"] == "running"

    Run.objects.filter(pk=running.pk).update(status="succeeded")
    polled = part(client, "runs").find("section", data_testid="my-runs")
    assert polled.find("tr", data_run=str(running.pk)).attrs["data-status"] == "succeeded"
    assert polled.attrs["data-active"] == "false" and "hx-get" not in polled.attrs


@pytest.mark.parametrize("status", ["queued", "starting", "stopping"])
def test_each_unfinished_state_keeps_the_runs_refreshing(client, users, project, status: str) -> None:
    make_run(project, users.data_scientist, status, minutes_ago=1)
    assert "hx-trigger" in home(client, users.data_scientist).find("section", data_testid="my-runs").attrs


def test_a_data_scientist_sees_where_each_of_their_model_versions_stands(
    client, users, project, staging, production
) -> None:
    versions = [make_model_version(project, users.data_scientist) for _ in range(4)]
    make_model_version(project, users.admin, model="someone-elses")
    # v4 waits in staging; v3 serves in staging (approved there first); v2 was approved for production; v1 nothing.
    waiting = request_for(users, versions[3], "staging")
    approved = request_for(users, versions[2], "staging")
    for_production = request_for(users, versions[1], "production")
    ApprovalRequest.objects.filter(pk__in=[approved.pk, for_production.pk]).update(status="approved")
    service = make_service("bc-staging", staging, versions[2], users)
    serve(service, deploy(service, versions[2], "succeeded", 5, users))

    section = home(client, users.data_scientist).find("section", data_testid="my-models")
    rows = section.find_all("tr", data_testid="my-model-version")
    assert [(row.attrs["data-model"], row.attrs["data-version"]) for row in rows] == [
        ("bc-classifier", "4"),
        ("bc-classifier", "3"),
        ("bc-classifier", "2"),
    ][:HOME_VERSIONS_EACH]

    def standing(row: Element) -> list[tuple[str, str]]:
        return [(s.attrs["data-environment"], s.attrs["data-state"]) for s in row.find_all(data_testid="standing")]

    assert standing(rows[0]) == [("staging", "open")]
    assert rows[0].links()["requested for staging"] == reverse("approval-request-detail", args=[waiting.pk])
    assert standing(rows[1]) == [("staging", "serving")]
    assert rows[1].links()["serving in staging"] == reverse("service-detail", args=[service.pk])
    assert standing(rows[2]) == [("production", "approved")]
    assert rows[0].links()["all 4 versions"] == reverse("model-detail", args=[project.slug, "bc-classifier"])
    assert section.links()["All models"] == reverse("model-list")
    assert "someone-elses" not in section.text()


def test_a_data_scientist_sees_their_open_requests_and_not_anyone_elses(client, users, project, staging) -> None:
    mine = [request_for(users, make_model_version(project, users.data_scientist), "staging") for _ in range(3)]
    services.approval_withdraw(actor=users.data_scientist, request_id=mine[0].pk, reason="not this one")
    request_for(users, make_model_version(project, users.admin), "staging", author=users.admin)
    page = home(client, users.data_scientist)
    section = page.find("section", data_testid="my-requests")
    shown = [row.attrs["data-request"] for row in section.find_all("tr", data_testid="my-request")]
    assert shown == [str(mine[2].pk), str(mine[1].pk)]  # newest first; the withdrawn one is no longer open
    assert "0 of 1" in section.find("tr", data_request=str(mine[2].pk)).text()
    assert "2 promotion requests are open." in page.find("section", data_testid="my-requests-count").text()
    assert not page.has("section", data_testid="home-queue")
    assert not page.has("section", data_testid="rollback-services")


# --- an approver --------------------------------------------------------------------------------------------------


def test_an_approver_sees_the_requests_they_may_decide_oldest_first(client, users, project, staging) -> None:
    requests = [request_for(users, make_model_version(project, users.data_scientist), "staging") for _ in range(7)]
    ApprovalRequest.objects.filter(pk=requests[0].pk).update(created_at=timezone.now() + timedelta(hours=1))
    theirs = request_for(users, make_model_version(project, users.approver), "staging", author=users.admin)
    page = home(client, users.approver)
    section = page.find("section", data_testid="home-queue")
    shown = [row.attrs["data-request"] for row in section.find_all("tr", data_testid="queue-request")]
    assert shown == [str(r.pk) for r in requests[1:]][:HOME_ROWS]
    assert str(theirs.pk) not in shown  # a version of their own making is never theirs to decide
    assert section.links()["The whole queue (7), oldest first"] == reverse("approval-queue")
    assert "7 requests wait for your decision." in page.find("section", data_testid="approvals-waiting").text()
    assert not page.has("section", data_testid="my-runs")


def test_an_approver_sees_the_services_they_can_roll_back_and_where_to(client, users, project, staging) -> None:
    first, second = (make_model_version(project, users.data_scientist) for _ in range(2))
    steady = make_service("bc-steady", staging, first, users)
    back_to = deploy(steady, first, "succeeded", 30, users)
    serve(steady, deploy(steady, second, "succeeded", 20, users))
    lone = make_service("bc-lone", staging, make_model_version(project, users.data_scientist, model="lone"), users)
    serve(lone, deploy(lone, lone.registered_model.versions.get(), "succeeded", 25, users))
    rolling = make_service("bc-rolling", staging, make_model_version(project, users.data_scientist, model="rl"), users)
    rl_first = rolling.registered_model.versions.get()
    rl_current = deploy(rolling, rl_first, "succeeded", 40, users)
    serve(rolling, rl_current)
    rl_second = make_model_version(project, users.data_scientist, model="rl")
    active = deploy(rolling, rl_second, "baking", 1, users, replaces=rl_current)

    page = home(client, users.approver)
    section = page.find("section", data_testid="rollback-services")
    rows = {row.attrs["data-service"]: row for row in section.find_all("tr", data_testid="rollback-service")}
    assert set(rows) == {"bc-steady", "bc-rolling"}  # bc-lone has nothing earlier to go back to
    assert rollback_target(steady) == back_to
    assert rows["bc-steady"].attrs["data-target"] == str(back_to.pk)
    assert f"v{first.number}" in rows["bc-steady"].text() and f"deployment {back_to.pk}" in rows["bc-steady"].text()
    assert "stops the rollout" in rows["bc-rolling"].text()
    assert section.links()["bc-steady"] == reverse("service-detail", args=[steady.pk])

    in_progress = page.find("section", data_testid="deployments-in-progress")
    assert [r.attrs["data-deployment"] for r in in_progress.find_all("tr")[1:]] == [str(active.pk)]
    assert in_progress.attrs["hx-get"] == reverse("home") + "?part=deployments"
    assert in_progress.attrs["data-active"] == "true"

    Deployment.objects.filter(pk=active.pk).update(status="succeeded")
    polled = part(client, "deployments").find("section", data_testid="deployments-in-progress")
    assert polled.attrs["data-active"] == "false" and "hx-trigger" not in polled.attrs
    assert "No deployment is under way." in polled.text()


# --- finance, admins, no role -------------------------------------------------------------------------------------


def test_finance_sees_the_month_and_a_way_to_the_cost_dashboard_and_no_one_elses_sections(client, users) -> None:
    page = home(client, users.finance)
    assert page.find("section", data_testid="month-spend").links()["Cost dashboard"] == reverse("cost-dashboard")
    assert page.has("section", data_testid="budgets-near-limit")
    assert [name for name in SECTIONS if page.has("section", data_testid=name)] == []


def test_an_admin_sees_every_section(client, users) -> None:
    page = home(client, users.admin)
    assert [name for name in SECTIONS if not page.has("section", data_testid=name)] == []
    assert page.has("section", data_testid="month-spend") and page.has("section", data_testid="my-cost")


def test_without_a_role_the_page_says_to_ask_for_one_and_shows_nothing_else(client, users) -> None:
    page = home(client, users.outsider)
    assert "Ask an admin" in page.find(data_testid="no-role").text()
    assert not page.has("section")
    # Nor do the parts answer with anyone's work.
    response = client.get(reverse("home"), {"part": "deployments"}, HTTP_HX_REQUEST="true")
    assert not parse(response.content).has("section", data_testid="deployments-in-progress")


# --- what it costs ------------------------------------------------------------------------------------------------


def _queries(client: Any) -> int:
    with CaptureQueriesContext(connection) as captured:
        assert client.get(reverse("home")).status_code == 200
    return len(captured)


def _more_work(users: Any, project: Any, staging: Any, n: int) -> None:
    """n more of everything: runs, model versions and open requests of the data scientist's and the admin's (the
    admin's home shows their own), and deployments that give every service something to roll back to."""
    for number in range(n):
        for author in (users.data_scientist, users.admin):
            make_run(project, author, "running" if number % 2 else "succeeded", minutes_ago=number)
            version = make_model_version(project, author, model=f"{author.username}-model-{number % 7}")
            request_for(users, version, "staging", author=author)
        service, _ = Service.objects.get_or_create(
            registered_model=version.registered_model,
            environment=staging,
            defaults={"name": f"svc-{number % 7}", "backend": "local", "created_by": users.admin},
        )
        earlier = make_model_version(project, users.admin, model=version.registered_model.slug)
        deploy(service, earlier, "succeeded", 200 - number, users)
        serve(service, deploy(service, version, "succeeded", 100 - number, users))


def test_the_home_page_costs_the_same_queries_with_2_or_20_of_everything(client, users, project, staging) -> None:
    _more_work(users, project, staging, 2)
    before = {}
    for user in (users.admin, users.data_scientist, users.approver):  # the admin sees every section
        client.force_login(user)
        before[user.username] = _queries(client)
    _more_work(users, project, staging, 18)
    # 20 launched and the 20 that made their model versions.
    assert Run.objects.filter(created_by=users.data_scientist).count() == 40
    after = {}
    for user in (users.admin, users.data_scientist, users.approver):
        client.force_login(user)
        after[user.username] = _queries(client)
    assert after == before


def _budgets_with_spend(users: Any, first: int, n: int) -> None:
    """n more projects, each with a budget and this month's spend (half of them near their limit)."""
    from decimal import Decimal

    from monitoring.costs import services as cost_services
    from monitoring.costs.selectors import month_start
    from monitoring.models import CostMonth

    for number in range(first, first + n):
        project = controlplane_services.project_create(actor=users.admin, name=f"P {number}", slug=f"p-{number}")
        cost_services.budget_save(actor=users.finance, project=project, amount="10")
        for source in ("estimate", "cost_explorer"):
            CostMonth.objects.create(
                month=month_start(timezone.now().date()),
                family=CostMonth.Family.PROJECT,
                source=source,
                aws_service="AmazonSageMaker",
                project=project.slug,
                amount=Decimal("4.5") if number % 2 else Decimal("0.5"),
            )


def test_finances_home_costs_the_same_queries_with_2_or_20_budgets(client, users) -> None:
    from monitoring.costs import services as cost_services

    cost_services.budget_save(actor=users.finance, project=None, amount="500")
    _budgets_with_spend(users, 0, 2)
    client.force_login(users.finance)
    before = _queries(client)
    _budgets_with_spend(users, 2, 18)
    with CaptureQueriesContext(connection) as captured:
        page = parse(client.get(reverse("home")).content)
    # The odd ones spent 9 of 10 (90%): every one of them is listed, with its spend.
    near = page.find_all(data_testid="budget-near-limit")
    assert len(near) == 10 and all("$9.00 of $10.00 (90%)" in item.text() for item in near)
    assert len(captured) == before
