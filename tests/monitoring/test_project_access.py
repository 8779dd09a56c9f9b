"""Access by project for monitoring and costs: a restricted project's metrics, drift and alerts are seen by its
members and admins only (404 for anyone else, left out of every list); its costs and budgets by its members, admins
and finance. A data scientist outside it gets a dashboard, an API answer and a CSV without its amounts, totals
included, and no forecast for everything (which counts it); a service's ingest token reads nothing."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from controlplane import access, permissions
from controlplane import services as controlplane_services
from controlplane.models import AuditEvent
from deployments import tasks
from deployments.models import Service
from monitoring.costs import selectors
from monitoring.costs import services as cost_services
from monitoring.models import Alert, CostForecast, CostRecord, DriftReport
from monitoring.services.alerts import alert_raise
from monitoring.services.ingest import service_ingest_token
from tests.deployments.conftest import make_model_version
from tests.deployments.test_project_access import _served, api, page
from tests.fixtures.roles import make_user
from tests.monitoring.cost_world import estimate, last_month

pytestmark = pytest.mark.django_db

SLUG = "hush-ops"
MODEL = "quiet-model"


@dataclass
class Hidden:
    service: Service
    alert: Alert
    budget: Any
    outsider_scientist: Any
    month: Any


@pytest.fixture
def no_cost_tasks(monkeypatch: pytest.MonkeyPatch) -> None:
    from monitoring.costs import tasks as cost_tasks

    monkeypatch.setattr(cost_tasks.budgets_check_task, "delay", lambda *a, **k: None)


@pytest.fixture
def hidden(users: Any, project: Any, staging: Any, monkeypatch: pytest.MonkeyPatch, no_cost_tasks: None) -> Hidden:
    """hush-ops, restricted to dana and blair, serves quiet-model (an open alert, a drift report) and spent 5.00 last
    month beside bc's 1.00; finance set its budget and the overall one; this month's forecast for everything is
    made."""
    monkeypatch.setattr(tasks.deployment_start_task, "delay", lambda *a, **k: None)
    restricted = controlplane_services.project_create(actor=users.admin, name="Hush ops", slug=SLUG)
    for user in (users.data_scientist, users.approver2):
        controlplane_services.project_member_set(
            actor=users.admin, project=restricted, username=user.username, role="member"
        )
    restricted = controlplane_services.project_restrict(actor=users.admin, project=restricted, restricted=True)
    version = make_model_version(restricted, users.data_scientist, model=MODEL)
    service = _served(version, staging, users.data_scientist, users.approver2).service
    alert = alert_raise(service, "error_rate", value=0.2, threshold=0.05, window=None, message="errors are up")
    now = timezone.now()
    DriftReport.objects.create(
        service=service, window_start=now - timedelta(hours=1), window_end=now, status=DriftReport.Status.SUCCEEDED
    )
    month = last_month()
    cost_services.estimates_store(
        [
            estimate(month, "bc", "bc-classifier", "staging", "AmazonSageMaker", "1.00"),
            estimate(month, SLUG, MODEL, "staging", "AmazonSageMaker", "5.00"),
        ],
        start=month,
        end=selectors.next_month(month),
    )
    cost_services.rollup_months([month])
    budget = cost_services.budget_save(actor=users.finance, project=restricted, amount="50")
    cost_services.budget_save(actor=users.finance, project=None, amount="100")
    CostForecast.objects.create(
        month=selectors.month_start(now.date()),
        project="",
        source="estimate",
        available=True,
        actual=Decimal("6"),
        mean=Decimal("3"),
        low=Decimal("2"),
        high=Decimal("4"),
        computed_at=now,
    )
    return Hidden(
        service=service,
        alert=alert,
        budget=budget,
        outsider_scientist=make_user("olga", permissions.DATA_SCIENTIST),
        month=month,
    )


def test_an_approver_outside_the_project_finds_none_of_its_monitoring(users, hidden) -> None:
    alex, pk = users.approver, hidden.service.pk
    for path in (f"/services/{pk}/monitoring/", f"/services/{pk}/drift/"):
        assert page(alex).get(path).status_code == 404, path
    for path in (f"/api/v1/services/{pk}/metrics/", f"/api/v1/services/{pk}/drift/"):
        assert api(alex).get(path).status_code == 404, path
    alerts = api(alex).get("/api/v1/alerts/?status=all")
    assert alerts.status_code == 200 and alerts.json()["results"] == []
    # Its service named in the filter is refused as a service that does not exist.
    named = api(alex).get(f"/api/v1/alerts/?status=all&service={pk}")
    assert named.status_code == 400 and named.json()["error"]["fields"] == {"service": [f"there is no service '{pk}'"]}
    for path in ("/monitoring/", "/monitoring/alerts/?status=all"):
        html = page(alex).get(path).content.decode()
        assert hidden.service.name not in html and "errors are up" not in html, path


@pytest.mark.parametrize("who", ["approver2", "admin"])
def test_members_and_admins_see_its_monitoring(users, hidden, who: str) -> None:
    user, pk = getattr(users, who), hidden.service.pk
    for path in (f"/services/{pk}/monitoring/", f"/services/{pk}/drift/"):
        assert page(user).get(path).status_code == 200, path
    assert api(user).get(f"/api/v1/services/{pk}/drift/").json()["count"] == 1
    assert [a["id"] for a in api(user).get("/api/v1/alerts/").json()["results"]] == [hidden.alert.pk]
    assert hidden.service.name in page(user).get("/monitoring/alerts/").content.decode()


def test_the_alerts_audit_names_the_project(hidden) -> None:
    event = AuditEvent.objects.get(action="alert.open", object_id=str(hidden.alert.pk))
    assert event.project == SLUG


def _costs(user: Any, month: Any, **extra: str) -> dict[str, Any]:
    end = selectors.next_month(month) - timedelta(days=1)
    response = api(user).get("/api/v1/costs/", {"start": month.isoformat(), "end": end.isoformat(), **extra})
    assert response.status_code == 200, response.content[:300]
    return response.json()


@pytest.mark.parametrize("granularity", ["day", "month"])
def test_a_data_scientist_outside_the_project_gets_costs_without_it(users, hidden, granularity: str) -> None:
    olga, month = hidden.outsider_scientist, hidden.month
    mine = _costs(olga, month, granularity=granularity)
    assert mine["groups"] == ["bc"] and Decimal(mine["total"]) == Decimal("1")
    by_model = _costs(olga, month, granularity=granularity, group_by="model")
    assert by_model["groups"] == ["bc-classifier"] and Decimal(by_model["total"]) == Decimal("1")
    for user in (users.finance, users.admin, users.data_scientist):
        everything = _costs(user, month, granularity=granularity)
        assert set(everything["groups"]) == {"bc", SLUG} and Decimal(everything["total"]) == Decimal("6"), user
    query = {"start": month.isoformat(), "end": month.isoformat(), "granularity": granularity}
    csv = page(olga).get("/costs/export.csv", query).content.decode()
    assert SLUG not in csv and "Total,Total,1.00," in csv
    assert SLUG in page(users.finance).get("/costs/export.csv", query).content.decode()
    html = page(olga).get("/costs/", query).content.decode()
    assert SLUG not in html and "Hush ops" not in html


def test_the_forecast_for_everything_is_not_shown_to_whom_a_project_is_hidden(users, hidden) -> None:
    assert _costs(hidden.outsider_scientist, hidden.month)["forecast"] is None
    assert _costs(users.finance, hidden.month)["forecast"]["available"] is True
    assert _costs(users.data_scientist, hidden.month)["forecast"]["available"] is True


def test_its_budget_is_seen_by_members_finance_and_admins_only(users, hidden) -> None:
    olga, pk = hidden.outsider_scientist, hidden.budget.pk
    listed = api(olga).get("/api/v1/budgets/").json()["results"]
    assert [b["project"] for b in listed] == [None]
    assert api(olga).get(f"/api/v1/budgets/{pk}/").status_code == 404
    assert "Hush ops" not in page(olga).get("/costs/budgets/").content.decode()
    for user in (users.finance, users.admin, users.data_scientist):
        assert {b["project"] for b in api(user).get("/api/v1/budgets/").json()["results"]} == {None, SLUG}, user
        assert api(user).get(f"/api/v1/budgets/{pk}/").status_code == 200, user
    assert "Hush ops" in page(users.finance).get("/costs/budgets/").content.decode()
    # Finance changes it (the project's costs are finance's to watch); the audit names the project.
    changed = api(users.finance).patch(f"/api/v1/budgets/{pk}/", {"amount": 60}, format="json")
    assert changed.status_code == 200, changed.content
    assert set(AuditEvent.objects.filter(object_type="budget").values_list("project", flat=True)) == {"", SLUG}


def test_a_service_ingest_token_reads_nothing(hidden) -> None:
    token = service_ingest_token(hidden.service)
    client = APIClient(HTTP_AUTHORIZATION=f"Bearer {token}")
    for path in (f"/api/v1/services/{hidden.service.pk}/metrics/", "/api/v1/alerts/", "/api/v1/costs/"):
        assert client.get(path).status_code in (401, 403), path


def test_the_overall_budgets_crossings_are_not_shown_to_whom_a_project_is_hidden(users, hidden) -> None:
    from monitoring.models import Budget, BudgetCrossing

    overall = Budget.objects.get(project=None)
    month = selectors.month_start(timezone.now().date())
    BudgetCrossing.objects.create(
        budget=overall, month=month, kind="forecast", spend=6, budget_amount=5, message="everything is over"
    )
    BudgetCrossing.objects.create(
        budget=hidden.budget, month=month, kind="80", spend=45, budget_amount=50, message="hush ops is at 90%"
    )

    def crossings(user: Any) -> dict[Any, int]:
        budgets = api(user).get("/api/v1/budgets/").json()["results"]
        return {b["project"]: len(b["open_crossings"]) for b in budgets}

    assert crossings(hidden.outsider_scientist) == {None: 0}
    assert crossings(users.finance) == crossings(users.data_scientist) == {None: 1, SLUG: 1}
    html = page(hidden.outsider_scientist).get("/monitoring/alerts/").content.decode()
    assert "everything is over" not in html and "hush ops is at 90%" not in html
    assert "hush ops is at 90%" in page(users.finance).get("/monitoring/alerts/").content.decode()


def test_a_service_of_a_model_named_as_the_hidden_one_does_not_count_its_spend(users, hidden, project, staging):
    namesake = _served(
        make_model_version(project, users.data_scientist, model=MODEL), staging, users.data_scientist, users.approver
    ).service
    days = selectors.service_daily_cost(namesake, start=hidden.month, end=selectors.next_month(hidden.month))
    assert sum(day["amount"] for day in days) == 0
    theirs = selectors.service_daily_cost(hidden.service, start=hidden.month, end=selectors.next_month(hidden.month))
    assert sum(day["amount"] for day in theirs) == Decimal("5")


def test_the_bills_rows_for_a_hidden_projects_model_are_left_out_for_those_outside(users, hidden) -> None:
    # Cost Explorer's breakdown by model tag carries no project, only the model's slug.
    slug = hidden.service.registered_model.slug
    CostRecord.objects.create(
        day=timezone.now().date(),
        source="cost_explorer",
        breakdown="model",
        project="",
        model=slug,
        amount=Decimal("7.77"),
    )
    billed = CostRecord.objects.filter(project="", model=slug)
    assert not access.scope(billed, hidden.outsider_scientist).exists()
    assert not access.scope(billed, users.approver).exists()
    assert access.scope(billed, users.finance).exists() and access.scope(billed, users.admin).exists()
