"""The cost API: the dashboard's figures for a period (the same numbers the page shows and the CSV exports), budgets
set, changed and deleted by finance only (field errors in the project's error shape, nothing changed), and syncs."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from controlplane import services as controlplane_services
from controlplane.models import AuditEvent
from monitoring.costs import dashboard, selectors
from monitoring.costs import services as cost_services
from monitoring.models import Budget, CostForecast, CostSync
from tests.monitoring.cost_world import CostWorld, seed_costs

pytestmark = pytest.mark.django_db


def api(user: Any) -> APIClient:
    return APIClient(HTTP_AUTHORIZATION=f"Token {Token.objects.get_or_create(user=user)[0].key}")


@pytest.fixture
def world(users: Any) -> CostWorld:
    return seed_costs()


@pytest.fixture
def no_tasks(monkeypatch: Any) -> None:
    from monitoring.costs import tasks

    monkeypatch.setattr(tasks.cost_sync_task, "delay", lambda *a, **k: None)
    monkeypatch.setattr(tasks.budgets_check_task, "delay", lambda *a, **k: None)


def month_query(world: CostWorld, **extra: str) -> dict[str, str]:
    end = selectors.next_month(world.month) - timedelta(days=1)
    return {"start": world.month.isoformat(), "end": end.isoformat(), **extra}


@pytest.mark.parametrize("granularity", ["day", "month"])
def test_costs_are_the_tables_numbers_and_the_csvs_rows(users: Any, world: CostWorld, granularity: str) -> None:
    query = month_query(world, granularity=granularity)
    response = api(users.data_scientist).get("/api/v1/costs/", query)
    assert response.status_code == 200
    body = response.json()
    table = selectors.cost_table(
        start=world.month, end=selectors.next_month(world.month), granularity=granularity, group_by="project"
    )
    last = selectors.next_month(world.month) - timedelta(days=1)
    assert (body["start"], body["end"]) == (world.month.isoformat(), last.isoformat())
    assert (body["granularity"], body["group_by"]) == (granularity, "project")
    assert body["covered_through"] == world.first.isoformat()
    assert body["buckets"] == [dashboard.period_label(b, granularity) for b in table.buckets]
    assert body["groups"] == table.groups == ["alpha", "beta"]
    for series in body["series"]:
        assert [Decimal(a) for a in series["amounts"]] == table.amounts[series["group"]]
        assert [Decimal(e) for e in series["estimated"]] == table.estimated[series["group"]]
    assert [Decimal(t) for t in body["totals"]] == table.bucket_totals
    assert (Decimal(body["total"]), Decimal(body["estimated_total"]), Decimal(body["bill_total"])) == (
        Decimal("14.083333"),
        Decimal("4.083333"),
        Decimal("10"),
    )
    assert body["forecast"] is None
    # The same rows as the page's CSV, rounded as it rounds them.
    page_client = APIClient()
    page_client.force_login(users.data_scientist)
    exported = page_client.get("/costs/export.csv", query)
    assert exported.status_code == 200
    rows = [line.split(",") for line in exported.content.decode().splitlines()[1:]]
    from_api = [
        [body["buckets"][i], s["group"], f"{Decimal(a).quantize(Decimal('0.01'))}"]
        for i in range(len(body["buckets"]))
        for s in body["series"]
        for a in [s["amounts"][i]]
    ]
    # The CSV adds each period's and the table's total rows (sums of the rounded figures); the API's are unrounded.
    assert [r[:3] for r in rows if "Total" not in r[:2]] == from_api
    assert rows[-1][:3] == ["Total", "Total", "14.08"]


def test_costs_show_the_forecast(users: Any, world: CostWorld) -> None:
    month = dashboard.today().replace(day=1)
    CostForecast.objects.create(
        month=month,
        source="estimate",
        available=True,
        actual=Decimal("3"),
        mean=Decimal("6"),
        low=Decimal("4"),
        high=Decimal("9"),
        points=[{"day": dashboard.today().isoformat(), "mean": "1", "low": "0.5", "high": "1.5"}],
        computed_at=dashboard.timezone.now(),
    )
    forecast = api(users.finance).get("/api/v1/costs/").json()["forecast"]
    assert forecast["available"] is True and forecast["level"] == 80 and Decimal(forecast["mean"]) == 6
    assert forecast["points"] == [
        {"day": dashboard.today().isoformat(), "mean": "1.000000", "low": "0.500000", "high": "1.500000"}
    ]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"start": "2026-03-10", "end": "2026-03-01"}, "end"),
        ({"start": "2024-01-01", "end": "2025-06-30"}, "end"),
        ({"group_by": "colour"}, "group_by"),
        ({"granularity": "week"}, "granularity"),
        ({"start": "\u202e"}, "start"),
    ],
)
def test_a_bad_period_is_a_400_naming_the_field(users: Any, query: dict[str, str], field: str) -> None:
    response = api(users.finance).get("/api/v1/costs/", query)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["status"] == 400 and error["code"] == "invalid" and field in error["fields"]


def test_budgets_through_the_api(users: Any, world: CostWorld, no_tasks: None) -> None:
    alpha = controlplane_services.project_create(actor=users.admin, name="Alpha", slug="alpha")
    client = api(users.finance)
    created = client.post(
        "/api/v1/budgets/", {"project": "alpha", "amount": 120, "thresholds": [50, 100]}, format="json"
    )
    assert created.status_code == 201
    body = created.json()
    assert (body["project"], body["amount"], body["thresholds"], body["alert_on_forecast"]) == (
        "alpha",
        "120.00",
        [50, 100],
        True,
    )
    assert body["percent_used"] == 0 and body["open_crossings"] == [] and body["created_by"] == "fran"
    budget = Budget.objects.get(project=alpha)
    assert AuditEvent.objects.filter(action="budget.create", object_id=str(budget.pk)).exists()
    # Setting it again changes it: 200.
    again = client.post("/api/v1/budgets/", {"project": "alpha", "amount": "150.5"}, format="json")
    assert again.status_code == 200 and again.json()["id"] == budget.pk and again.json()["amount"] == "150.50"
    overall = client.post(
        "/api/v1/budgets/", {"project": None, "amount": 1000, "alert_on_forecast": False}, format="json"
    )
    assert overall.status_code == 201 and overall.json()["project"] is None
    listed = client.get("/api/v1/budgets/").json()
    assert listed["count"] == 2 and {b["project"] for b in listed["results"]} == {"alpha", None}
    changed = client.patch(f"/api/v1/budgets/{budget.pk}/", {"thresholds": [80]}, format="json")
    assert changed.status_code == 200 and changed.json()["thresholds"] == [80] and changed.json()["amount"] == "150.50"
    assert client.get(f"/api/v1/budgets/{budget.pk}/").json()["thresholds"] == [80]
    assert AuditEvent.objects.filter(action="budget.change", object_id=str(budget.pk)).count() == 2
    assert client.delete(f"/api/v1/budgets/{budget.pk}/").status_code == 204
    assert not Budget.objects.filter(pk=budget.pk).exists()
    assert AuditEvent.objects.filter(action="budget.delete", object_id=str(budget.pk)).exists()
    assert client.get(f"/api/v1/budgets/{budget.pk}/").status_code == 404


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"project": None, "amount": 0}, "amount"),
        ({"project": None, "amount": -5}, "amount"),
        ({"project": None, "amount": "NaN"}, "amount"),
        ({"project": None, "amount": 10, "thresholds": [0]}, "thresholds"),
        ({"project": None, "amount": 10, "thresholds": [80, 1001]}, "thresholds"),
        ({"project": None, "amount": 10, "thresholds": "80"}, "thresholds"),
        ({"amount": 10, "project": "nope"}, "project"),
        ({"project": None, "amount": 10, "treshold": [80]}, "treshold"),
        # Without `project` the overall budget is not set by accident: the field is named.
        ({"amount": 10}, "project"),
        ({}, "amount"),
    ],
)
def test_a_bad_budget_is_a_400_naming_the_field_and_changes_nothing(
    users: Any, no_tasks: None, data: dict[str, Any], field: str
) -> None:
    existing = cost_services.budget_save(actor=users.finance, project=None, amount="100", thresholds=[80])
    before = AuditEvent.objects.count()
    response = api(users.finance).post("/api/v1/budgets/", data, format="json")
    assert response.status_code == 400
    assert field in response.json()["error"]["fields"]
    patched = api(users.finance).patch(f"/api/v1/budgets/{existing.pk}/", {"amount": 0}, format="json")
    assert patched.status_code == 400 and "amount" in patched.json()["error"]["fields"]
    existing.refresh_from_db()
    assert (existing.amount, existing.thresholds) == (Decimal("100.00"), [80])
    assert AuditEvent.objects.count() == before and Budget.objects.count() == 1


def test_roles_without_budget_manage_get_403(users: Any, no_tasks: None) -> None:
    existing = cost_services.budget_save(actor=users.finance, project=None, amount="100")
    for user in (users.data_scientist, users.approver):
        client = api(user)
        assert client.get("/api/v1/budgets/").status_code == 200
        refused = client.post("/api/v1/budgets/", {"amount": 0}, format="json")
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "permission_denied"
        assert client.patch(f"/api/v1/budgets/{existing.pk}/", {"amount": 5}, format="json").status_code == 403
        assert client.delete(f"/api/v1/budgets/{existing.pk}/").status_code == 403
        assert client.post("/api/v1/cost-syncs/", {}, format="json").status_code == 403
    assert api(users.outsider).get("/api/v1/costs/").status_code == 403
    assert APIClient().get("/api/v1/costs/").status_code == 401
    existing.refresh_from_db()
    assert existing.amount == Decimal("100.00") and CostSync.objects.count() == 0


def test_cost_syncs_through_the_api(users: Any, no_tasks: None) -> None:
    client = api(users.finance)
    created = client.post("/api/v1/cost-syncs/", {}, format="json")
    assert created.status_code == 202
    body = created.json()
    assert (body["source"], body["status"], body["requested_by"], body["steps"]) == ("estimate", "queued", "fran", [])
    # Asked again while it waits: the same sync.
    assert client.post("/api/v1/cost-syncs/", {"source": "estimate"}, format="json").json()["id"] == body["id"]
    refused = client.post("/api/v1/cost-syncs/", {"source": "cost_explorer"}, format="json")
    assert (
        refused.status_code == 400
        and "Cost Explorer is not configured" in refused.json()["error"]["fields"]["source"][0]
    )
    bad = client.post("/api/v1/cost-syncs/", {"source": "bill"}, format="json")
    assert bad.status_code == 400 and "expected cost_explorer or estimate" in bad.json()["error"]["fields"]["source"][0]
    CostSync.objects.filter(pk=body["id"]).update(
        progress={"steps": [{"at": "2026-12-01T00:00:00+00:00", "message": "estimating"}]}
    )
    detail = client.get(f"/api/v1/cost-syncs/{body['id']}/").json()
    assert detail["steps"] == [{"at": "2026-12-01T00:00:00+00:00", "message": "estimating"}]
    listed = client.get("/api/v1/cost-syncs/", {"source": "estimate"}).json()
    assert [s["id"] for s in listed["results"]] == [body["id"]]
    assert client.get("/api/v1/cost-syncs/", {"source": "x"}).status_code == 400
    assert client.get("/api/v1/cost-syncs/999999/").status_code == 404


def test_the_schema_documents_the_cost_api(users: Any) -> None:
    schema = api(users.finance).get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    paths = schema["paths"]
    for path in ("/api/v1/costs/", "/api/v1/budgets/", "/api/v1/budgets/{id}/", "/api/v1/cost-syncs/"):
        assert path in paths, sorted(paths)
    assert "400" in paths["/api/v1/costs/"]["get"]["responses"]
    names = {p["name"] for p in paths["/api/v1/costs/"]["get"]["parameters"]}
    assert names == {"start", "end", "granularity", "group_by"}
