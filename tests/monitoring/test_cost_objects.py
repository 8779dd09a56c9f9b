"""What one thing cost, on its own page: a run (and the run API), a model version, a service; the launch form's
budget warning; the home pages' month; open budget crossings among the alerts. Every figure shown is checked
against the selector that computes it (monitoring.costs.selectors), with data made the way the syncs make it."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.urls import reverse
from django.utils import timezone

from lineage.models import Run
from monitoring.costs import object_selectors, selectors, services
from monitoring.costs.services import Estimate
from monitoring.models import BudgetCrossing, CostRecord, MetricPoint
from monitoring.templatetags.cost_objects import usd
from tests.fixtures.costs import make_run
from tests.lineage.conftest import cancer_csv, upload

pytestmark = pytest.mark.django_db
__all__ = ["cancer_csv"]


def _today() -> date:
    return timezone.now().astimezone(UTC).date()


def _at(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime.combine(day, time(hour, minute), tzinfo=UTC)


def estimate_runs(start: date, end: date, *, now: datetime | None = None, serving: Sequence[Estimate] = ()) -> None:
    """What an estimate sync does over [start, end): estimate the runs, store them with the serving estimates (one
    store: it removes the window's run estimates it was not given), roll the months up."""
    estimates = services.run_estimates(start, end, now=now) + list(serving)
    services.estimates_store(estimates, start=start, end=end)
    services.rollup_months({e.day for e in estimates} | {start})


def serving_estimate(deployment: Any, day: date, amount: str) -> Estimate:
    service = deployment.service
    return Estimate(
        day=day,
        aws_service=django_settings.AWS_SERVICE_SERVING,
        project=service.registered_model.project.slug,
        model=service.registered_model.slug,
        environment=service.environment.name,
        run="",
        deployment=str(deployment.pk),
        backend="local",
        amount=Decimal(amount),
        usage={"kind": "serving", "task_seconds": 3600.0},
        keep_most=True,
    )


def element(html: str, testid: str) -> str:
    """The element with `testid` and what follows it, up to the end of its paragraph, row or item."""
    match = re.search(rf'<[^>]*data-testid="{testid}"[^>]*>.*?(</p>|</dd>|</li>|</tr>|</section>)', html, re.S)
    assert match, f"no {testid} in the page"
    return match.group(0)


def amount_of(html: str, testid: str) -> Decimal:
    match = re.search(rf'data-testid="{testid}"[^>]*data-amount="([^"]*)"', html) or re.search(
        rf'data-amount="([^"]*)"[^>]*data-testid="{testid}"', html
    )
    assert match, f"no amount on {testid}"
    return Decimal(match.group(1))


# --- the run page and the run API -----------------------------------------------------------------------------


def test_a_run_over_midnight_shows_the_cost_records_figure_per_day_and_in_the_api(
    client, api_client_for, project, users
) -> None:
    day = _today() - timedelta(days=3)
    run = make_run(
        project, users.data_scientist, started=_at(day, 23), finished=_at(day + timedelta(days=1), 1), cost="0.0120"
    )
    estimate_runs(day, day + timedelta(days=2))
    cost = selectors.run_cost(run)
    assert cost.amount == Decimal("0.012") and cost.days == 2 and cost.basis == "estimate"

    client.force_login(users.finance)
    page = client.get(reverse("run-detail", args=[run.pk])).content.decode()
    assert amount_of(page, "run-cost-record") == cost.amount
    record = element(page, "run-cost-record")
    assert 'data-basis="estimate"' in record and f"<strong>{usd(cost.amount)}</strong>" in record
    assert usd(cost.amount) == "$0.012"
    assert ">estimate</span>" in page and "over 2 days" in page and " so far" not in page
    # Measured at the end, and the records hold that measurement: the same figure, to the digit the run keeps.
    assert 'measured <strong data-testid="run-cost">$0.0120</strong>' in page
    table = page.split('data-testid="run-cost-days"')[1].split("</table>")[0]
    days = re.findall(r'<tr data-day="([^"]+)" data-amount="([^"]+)">', table)
    assert [(d, Decimal(a)) for d, a in days] == [
        (d.isoformat(), selectors.run_cost(run, start=d, end=d + timedelta(days=1)).amount)
        for d in (day, day + timedelta(days=1))
    ]
    assert sum(Decimal(a) for _, a in days) == cost.amount

    body = api_client_for(users.finance).get(reverse("api-run-detail", args=[run.pk])).json()
    assert body["recorded_cost"] == {
        "amount": str(cost.amount),
        "billed": "0",
        "estimated": str(cost.estimated),
        "basis": "estimate",
    }
    assert body["cost"] == "0.0120"  # the run's own measurement keeps its place and type


def test_a_running_sagemaker_run_shows_its_cost_so_far_and_the_bill_replaces_it(
    client, project, users, settings
) -> None:
    now = timezone.now()
    run = make_run(
        project,
        users.data_scientist,
        started=now - timedelta(minutes=90),
        finished=None,
        cost=None,
        backend="sagemaker",
        instance_type="ml.m5.xlarge",
        backend_job_id="cp-run-1",
    )
    estimate_runs(_today() - timedelta(days=1), _today() + timedelta(days=1), now=now)
    cost = selectors.run_cost(run)
    assert cost.basis == "estimate" and cost.amount > 0
    client.force_login(users.data_scientist)
    page = client.get(reverse("run-detail", args=[run.pk])).content.decode()
    record = element(page, "run-cost-record")
    assert amount_of(page, "run-cost-record") == cost.amount
    assert f"<strong>{usd(cost.amount)}</strong> so far" in record

    # The bill for the run's first day arrives (Cost Explorer's run-tag rows) and its estimate gives way.
    first = min(CostRecord.objects.filter(run=str(run.pk)).values_list("day", flat=True))
    CostRecord.objects.create(
        day=first,
        source=CostRecord.Source.COST_EXPLORER,
        breakdown=CostRecord.Breakdown.OBJECT,
        run=str(run.pk),
        backend="aws",
        amount=Decimal("0.310000"),
    )
    services._supersede([first])
    cost = selectors.run_cost(run)
    page = client.get(reverse("run-detail", args=[run.pk])).content.decode()
    assert amount_of(page, "run-cost-record") == cost.amount
    assert f'data-basis="{cost.basis}"' in element(page, "run-cost-record")
    if cost.days == 1:  # the run started today: only the bill is left
        assert cost.basis == "bill" and ">from the bill</span>" in page
    else:
        assert cost.basis == "bill + estimate" and "$0.31 from the bill" in page


def test_a_local_run_that_cost_nothing_measurable_is_never_said_to_be_from_the_bill(client, project, users) -> None:
    day = _today() - timedelta(days=1)
    run = make_run(project, users.data_scientist, started=_at(day, 9), finished=_at(day, 9, 1), cost="0.0000")
    estimate_runs(day, day + timedelta(days=1))
    assert selectors.run_cost(run).known and selectors.run_cost(run).amount == 0
    client.force_login(users.data_scientist)
    page = client.get(reverse("run-detail", args=[run.pk])).content.decode()
    record = element(page, "run-cost-record")
    assert "<strong>$0.00</strong>" in record and "from the bill" not in record


def test_a_local_run_still_running_says_its_cost_comes_when_it_ends(client, project, users) -> None:
    run = make_run(project, users.data_scientist, started=timezone.now(), finished=None, cost=None)
    client.force_login(users.data_scientist)
    page = client.get(reverse("run-detail", args=[run.pk])).content.decode()
    assert "measured when the run ends" in element(page, "run-cost-record")


# --- the model version page -------------------------------------------------------------------------------------


def test_a_model_version_never_deployed_says_so_rather_than_waiting_for_figures(client, users, served) -> None:
    from tests.deployments.conftest import make_model_version

    version = make_model_version(served.registered_model.project, users.data_scientist, model="never-served")
    client.force_login(users.approver)
    url = reverse(
        "model-version-detail",
        args=[version.registered_model.project.slug, version.registered_model.slug, version.number],
    )
    assert "never deployed" in element(client.get(url).content.decode(), "serving-cost")


def test_the_model_version_page_shows_training_and_serving_cost(client, users, served) -> None:
    from deployments.models import Deployment

    deployment = Deployment.objects.select_related(
        "service__registered_model__project", "service__environment", "model_version__run"
    ).get(pk=served.current_deployment_id)
    version = deployment.model_version
    day = _today() - timedelta(days=2)
    Run.objects.filter(pk=version.run_id).update(
        started_at=_at(day, 10), finished_at=_at(day, 11), cost=Decimal("0.0450")
    )
    estimate_runs(
        day,
        day + timedelta(days=2),
        serving=[
            serving_estimate(deployment, day, "0.25"),
            serving_estimate(deployment, day + timedelta(days=1), "0.5"),
        ],
    )
    costs = selectors.model_version_cost(version)
    assert costs["training"].amount == Decimal("0.045") and costs["serving"].amount == Decimal("0.75")

    client.force_login(users.approver)
    url = reverse(
        "model-version-detail",
        args=[version.registered_model.project.slug, version.registered_model.slug, version.number],
    )
    page = client.get(url).content.decode()
    assert amount_of(page, "training-cost") == costs["training"].amount
    assert amount_of(page, "serving-cost") == costs["serving"].amount
    assert "<strong>$0.045</strong>" in element(page, "training-cost")
    assert "<strong>$0.75</strong>" in element(page, "serving-cost") and "over 2 days" in page
    assert (
        'data-testid="training-cost-basis">estimate<' in page and 'data-testid="serving-cost-basis">estimate<' in page
    )


# --- the service page ---------------------------------------------------------------------------------------------


def test_the_service_page_shows_cost_per_day_per_1000_predictions_and_the_month(client, users, served) -> None:
    from deployments.models import Deployment

    deployment = Deployment.objects.select_related("service__registered_model__project", "service__environment").get(
        pk=served.current_deployment_id
    )
    today = _today()
    estimate_runs(
        today - timedelta(days=20),
        today + timedelta(days=1),
        serving=[serving_estimate(deployment, today - timedelta(days=back), str(back + 1)) for back in (0, 1, 5, 20)],
    )
    MetricPoint.objects.bulk_create(
        [
            MetricPoint(
                service=served,
                revision=f"d{deployment.pk}",
                start=_at(today - timedelta(days=1), 12, m),
                requests=250,
                rows=500,
            )
            for m in range(4)
        ]
    )
    summary = object_selectors.service_cost_summary(served)
    rows = selectors.service_daily_cost(served, start=today - timedelta(days=13), end=today + timedelta(days=1))
    assert summary["days"] == rows and len(rows) == 14
    # 1 + 2 + 6 dollars over the 14 days (20 days ago is outside), for 1,000 requests of 2 rows each (2,000
    # predictions), all the day before: per 1,000 predictions, not requests.
    assert summary["amount"] == Decimal("9") and summary["requests"] == 1000 and summary["predictions"] == 2000
    assert summary["per_1000"] == Decimal("4.5") and summary["per_1000_of"] == "predictions"
    month = selectors.service_daily_cost(served, start=today.replace(day=1), end=today + timedelta(days=1))
    assert summary["month_amount"] == sum((r["amount"] for r in month), Decimal(0))

    client.force_login(users.data_scientist)
    page = client.get(reverse("service-detail", args=[served.pk])).content.decode()
    shown = dict(re.findall(r'<tr data-day="([^"]+)" data-amount="([^"]+)"', page))
    assert {d: Decimal(a) for d, a in shown.items()} == {r["day"].isoformat(): r["amount"] for r in rows}
    assert amount_of(page, "service-period-cost") == summary["amount"]
    assert amount_of(page, "service-per-1000") == summary["per_1000"]
    assert "<strong>$4.50</strong> per 1,000 predictions" in page and "2000 predictions in 1000 requests" in page
    assert amount_of(page, "service-month-cost") == summary["month_amount"]
    assert 'data-testid="service-month-basis">estimate<' in page
    yesterday = re.search(rf'<tr data-day="{(today - timedelta(days=1)).isoformat()}".*?</tr>', page, re.S).group(0)
    assert "$2.00" in yesterday and "estimate" in yesterday and "$1.00</td></tr>" in yesterday  # 2 $ / 2,000 rows
    # Where the metrics carry no row counts (CloudWatch's EMF), the page says it is per 1,000 requests.
    MetricPoint.objects.filter(service=served).update(rows=0)
    assert object_selectors.service_cost_summary(served)["per_1000_of"] == "requests"
    page = client.get(reverse("service-detail", args=[served.pk])).content.decode()
    assert "<strong>$9.00</strong> per 1,000 requests" in page


def test_a_service_without_requests_says_so(client, users, served) -> None:
    client.force_login(users.data_scientist)
    page = client.get(reverse("service-detail", args=[served.pk])).content.decode()
    assert "no requests yet" in element(page, "service-per-1000")
    assert amount_of(page, "service-month-cost") == Decimal("0")


# --- the launch form's budget warning ----------------------------------------------------------------------------


@pytest.fixture
def train(api_client_for, users, project, cancer_csv) -> dict[str, Any]:
    return upload(
        api_client_for(users.data_scientist), project=project.slug, dataset="bc", name="bc.csv", content=cancer_csv
    ).json()


def spend_today(project: Any, users: Any, amount: str) -> None:
    """A run of the project that cost `amount` today, estimated and rolled up as a sync does."""
    today = _today()
    make_run(project, users.data_scientist, started=_at(today, 0, 1), finished=_at(today, 0, 2), cost=amount)
    estimate_runs(today, today + timedelta(days=1))


def estimate_page(client: Any, train: dict[str, Any], **query: Any) -> str:
    params = {"train": train["id"], "backend": "local", "instance_type": "local", "instance_count": 1, **query}
    return client.get(reverse("run-estimate"), params).content.decode()


def test_the_launch_form_warns_only_when_the_run_would_go_over_its_projects_budget(
    client, project, users, train, settings
) -> None:
    settings.LOCAL_CPU_HOUR_PRICE = 0.05
    settings.LOCAL_TRAINING_CPUS = 2
    services.budget_save(actor=users.finance, project=project, amount="10", thresholds=[80, 100])
    spend_today(project, users, "9.5")
    assert selectors.month_spend(_today(), project=project.slug)[0] == Decimal("9.5")
    client.force_login(users.data_scientist)

    # 2 CPU × 1 h × $0.05 = $0.10: $9.60 of $10.00, no warning.
    page = estimate_page(client, train, max_runtime_minutes=60)
    assert 'data-cost="0.10"' in page and "budget-warning" not in page
    # 2 CPU × 10 h × $0.05 = $1.00: $10.50 of $10.00.
    page = estimate_page(client, train, max_runtime_minutes=600)
    # Each warning's text, before the link to the cost dashboard.
    warnings = [w.strip() for w in re.findall(r'data-testid="budget-warning">(.*?)<', page)]
    assert warnings == [
        f"This run (at most $1.00) would take project {project.name} to $10.50 of its $10.00 monthly budget (105%)."
    ]
    assert warnings == object_selectors.launch_budget_warnings(project=project, estimate=Decimal("1.00"))

    spend_today(project, users, "1")  # now $10.50: over already
    page = estimate_page(client, train, max_runtime_minutes=60)
    assert [w.strip() for w in re.findall(r'data-testid="budget-warning">(.*?)<', page)] == [
        f"Project {project.name} is already over its $10.00 monthly budget: $10.50 spent this month (105%). "
        "This run (at most $0.10) would take it to $10.60 (106%)."
    ]


def test_the_overall_budget_warns_too_and_the_api_launch_carries_the_warning(
    api_client_for, project, users, train, settings
) -> None:
    settings.LOCAL_CPU_HOUR_PRICE = 0.05
    settings.LOCAL_TRAINING_CPUS = 2
    services.budget_save(actor=users.finance, project=None, amount="5")
    spend_today(project, users, "4.95")
    api = api_client_for(users.data_scientist)
    response = api.post(
        reverse("api-run-training-create"),
        {"recipe": "logistic_regression", "train": train["id"], "target": "target", "max_runtime_seconds": 3600},
        format="json",
    )
    assert response.status_code == 201, response.content
    assert response.json()["warnings"] == [
        "This run (at most $0.10) would take spending to $5.05 of the overall $5.00 monthly budget (101%)."
    ]
    assert response.json()["status"] == "queued"  # warned, not refused

    services.budget_save(actor=users.finance, project=None, amount="100")
    again = api.post(
        reverse("api-run-training-create"),
        {"recipe": "logistic_regression", "train": train["id"], "target": "target", "max_runtime_seconds": 3600},
        format="json",
    )
    assert again.status_code == 201 and again.json()["warnings"] == []


def test_the_launch_form_posts_the_warning_as_a_message_and_launches(client, project, users, train, settings) -> None:
    settings.LOCAL_CPU_HOUR_PRICE = 0.05
    settings.LOCAL_TRAINING_CPUS = 2
    services.budget_save(actor=users.finance, project=project, amount="1")
    spend_today(project, users, "0.95")
    client.force_login(users.data_scientist)
    url = reverse("training-create") + f"?train={train['id']}"
    form = {
        "recipe": "logistic_regression",
        "target": "target",
        "seed": 1,
        "backend": "local",
        "instance_type": "local",
        "instance_count": 1,
        "max_runtime_minutes": 60,
        "hp_C": 1.0,
        "hp_max_iter": 200,
    }
    response = client.post(url, form, follow=True)
    assert response.redirect_chain, response.content.decode()[:2000]
    page = response.content.decode()
    assert (
        f"This run (at most $0.10) would take project {project.name} to $1.05 of its $1.00 monthly budget (105%)."
        in page
    )
    assert Run.objects.filter(project=project, status="queued").count() == 1


# --- home pages and alerts ----------------------------------------------------------------------------------------


def test_a_data_scientists_home_shows_what_their_runs_and_services_cost_this_month(client, users, served) -> None:
    from deployments.models import Deployment

    deployment = Deployment.objects.select_related("service__registered_model__project", "service__environment").get(
        pk=served.current_deployment_id
    )
    today = _today()
    project = served.registered_model.project
    make_run(project, users.data_scientist, started=_at(today, 0, 1), finished=_at(today, 0, 2), cost="0.4")
    make_run(project, users.approver, started=_at(today, 0, 1), finished=_at(today, 0, 2), cost="7")  # not theirs
    estimate_runs(today, today + timedelta(days=1), serving=[serving_estimate(deployment, today, "1.25")])
    mine = selectors.user_month_cost(users.data_scientist, today)
    assert mine == {"training": Decimal("0.4"), "serving": Decimal("1.25"), "total": Decimal("1.65")}

    client.force_login(users.data_scientist)
    page = client.get(reverse("home")).content.decode()
    assert amount_of(page, "my-cost-total") == mine["total"]
    assert amount_of(page, "my-cost-training") == mine["training"]
    assert amount_of(page, "my-cost-serving") == mine["serving"]
    assert ">$1.65</p>" in page
    assert 'data-testid="month-spend"' not in page  # finance's cards are finance's

    client.force_login(users.finance)
    assert 'data-testid="my-cost"' not in client.get(reverse("home")).content.decode()


def test_finances_home_shows_the_months_spend_and_the_budgets_near_their_limit(client, users, project) -> None:
    from controlplane import services as controlplane_services

    other = controlplane_services.project_create(actor=users.admin, name="Churn", slug="churn")
    quiet = controlplane_services.project_create(actor=users.admin, name="Quiet", slug="quiet")
    near = services.budget_save(actor=users.finance, project=project, amount="10")
    over = services.budget_save(actor=users.finance, project=other, amount="2")
    services.budget_save(actor=users.finance, project=quiet, amount="100")
    overall = services.budget_save(actor=users.finance, project=None, amount="50")
    spend_today(project, users, "8.5")  # 85%
    spend_today(other, users, "3")  # 150%
    spend_today(quiet, users, "1")  # 1%
    standings = {s.budget.pk: s for s in object_selectors.budget_standings()}
    assert [s.budget.pk for s in object_selectors.budgets_near_limit()] == [over.pk, near.pk]
    spend, estimated = selectors.month_spend(_today())
    assert spend == Decimal("12.5") == estimated

    client.force_login(users.finance)
    page = client.get(reverse("home")).content.decode()
    assert amount_of(page, "month-spend-total") == spend
    assert amount_of(page, "overall-budget") == overall.amount
    assert element(page, "overall-budget-percent").startswith('<span data-testid="overall-budget-percent">25%')
    listed = re.findall(r'data-testid="budget-near-limit" data-budget="(\d+)" data-percent="(\d+)"', page)
    assert listed == [(str(over.pk), "150"), (str(near.pk), "85")]
    assert f"{standings[over.pk].spend:.2f}" == "3.00"
    assert (
        "Project Churn</strong>: $3.00 of $2.00 (150%)" in page
        and "Project Breast cancer</strong>: $8.50 of $10.00 (85%)" in page
    )
    assert "Quiet" not in page.split('data-testid="budgets-near-limit"')[1].split("</section>")[0]


def test_open_budget_crossings_show_on_every_home_page_and_in_their_own_section_of_the_alert_list(
    client, users, project
) -> None:
    budget = services.budget_save(actor=users.finance, project=project, amount="10")
    # Made as budgets_check makes them (it also notifies, linking to the cost dashboard).
    month = selectors.month_start(_today())
    crossing = BudgetCrossing.objects.create(
        budget=budget,
        month=month,
        kind="100",
        spend=Decimal("10.5"),
        budget_amount=budget.amount,
        message=f"Project {project.name}: 10.50 USD spent this month, over 100% of the budget of 10.00 USD "
        "(105% used).",
    )
    BudgetCrossing.objects.create(
        budget=budget,
        month=month,
        kind="80",
        status="closed",
        spend=Decimal("8"),
        budget_amount=budget.amount,
        message="old",
    )
    for user in (users.data_scientist, users.approver, users.finance):
        client.force_login(user)
        page = client.get(reverse("home")).content.decode()
        assert re.findall(r'data-testid="budget-crossing" data-crossing="(\d+)"', page) == [str(crossing.pk)]
        assert "1 open budget crossing" in page and crossing.message in page

    page = client.get(reverse("alert-list")).content.decode()
    section = page.split('data-testid="budget-crossing-list"')[1].split("</ul>")[0]
    assert re.findall(r'data-crossing="(\d+)"', section) == [str(crossing.pk)]
    assert "100% crossed" in section
    # The service alerts' list is unchanged by it.
    assert "data-crossing" not in page.split('data-testid="alert-list"')[1].split("</ul>")[0]

    BudgetCrossing.objects.filter(pk=crossing.pk).update(status="closed")
    page = client.get(reverse("alert-list")).content.decode()
    assert "No open budget crossings." in page
    assert 'data-testid="budget-crossings-banner"' not in client.get(reverse("home")).content.decode()


# --- a real run ----------------------------------------------------------------------------------------------------


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_real_local_run_then_an_estimate_sync_shows_its_measured_cost_on_its_page(
    celery_worker, api_client_for, users, project, cancer_csv
) -> None:
    from monitoring.models import CostSync
    from tests.fixtures.processes import wait_for

    api = api_client_for(users.data_scientist)
    data = upload(api, project=project.slug, dataset="bc", name="bc.csv", content=cancer_csv).json()
    launched = api.post(
        reverse("api-run-training-create"),
        {"recipe": "logistic_regression", "train": data["id"], "target": "target", "seed": 3},
        format="json",
    )
    assert launched.status_code == 201, launched.content
    run = wait_for(
        lambda: Run.objects.filter(pk=launched.json()["id"], status__in=["succeeded", "failed"]).first(),
        timeout=240,
        what="the run to finish",
    )
    assert run.status == "succeeded", run.status_reason
    assert run.cost is not None
    before = api.get(reverse("api-run-detail", args=[run.pk])).json()["recorded_cost"]
    assert before["basis"] == "none"
    client = api_client_for(users.finance)
    page = client.get(reverse("run-detail", args=[run.pk])).content.decode()
    assert "not in the cost records yet" in element(page, "run-cost-record")

    # No services here: the sync estimates runs only (serving estimates ask each service's backend).
    sync = services.cost_sync_request(source="estimate")
    # The session's worker takes syncs too: whichever of it and this call claims the sync does it, once.
    if services.cost_sync_run(sync_id=sync.pk) is None:
        wait_for(lambda: CostSync.objects.filter(pk=sync.pk, status="succeeded").exists(), what="the sync")
    assert CostSync.objects.get(pk=sync.pk).status == "succeeded"

    cost = selectors.run_cost(run)
    assert cost.days >= 1
    records = CostRecord.objects.filter(run=str(run.pk))
    assert {r.source for r in records} == {"estimate"} and {r.backend for r in records} == {"local"}
    # Made from what the run measured (its CPU seconds at the local price: Run.cost).
    assert {r.usage["usage"]["cpu_seconds"] for r in records} == {run.usage["cpu_seconds"]}
    # Split by day over midnight, each day's share is kept to six places: the whole is the measured cost, at full
    # precision (Run.cost keeps four places, so a short run's reads 0.0000 there).
    measured = Decimal(str(run.usage["cpu_seconds"])) / 3600 * Decimal(str(django_settings.LOCAL_CPU_HOUR_PRICE))
    assert abs(cost.amount - measured) <= Decimal("0.000001") * cost.days
    assert abs(cost.amount - run.cost) <= Decimal("0.00005") * cost.days
    page = client.get(reverse("run-detail", args=[run.pk])).content.decode()
    assert amount_of(page, "run-cost-record") == cost.amount
    assert f"<strong>{usd(cost.amount)}</strong>" in element(page, "run-cost-record")
    body = client.get(reverse("api-run-detail", args=[run.pk])).json()
    assert body["recorded_cost"] == object_selectors.cost_output(cost)
    assert Decimal(body["recorded_cost"]["amount"]) == cost.amount


def test_usd_shows_cents_and_fractions_of_a_cent() -> None:
    assert [usd(v) for v in ("0", "0.000004", "0.0123", "0.46", "0.4600", "0.012", "1234.5", None)] == [
        "$0.00",
        "under $0.0001",
        "$0.0123",
        "$0.46",
        "$0.46",
        "$0.012",
        "$1,234.50",
        "—",
    ]
