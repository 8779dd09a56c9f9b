"""Cost syncs of estimates, the monthly roll-up, forecasts from estimates, budgets and their crossings."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from controlplane.models import AuditEvent, Notification
from controlplane.transitions import LostLease
from lineage.models import Run
from monitoring.costs import selectors, services
from monitoring.models import Budget, BudgetCrossing, CostMonth, CostRecord, CostSync
from tests.fixtures.costs import make_run

pytestmark = pytest.mark.django_db

project = __import__("tests.deployments.conftest", fromlist=["project"]).project


def _today() -> date:
    return timezone.now().astimezone(UTC).date()


def _at(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime.combine(day, time(hour, minute), tzinfo=UTC)


def estimate_sync() -> CostSync:
    sync = services.cost_sync_request(source="estimate")
    done = services.cost_sync_run(sync_id=sync.pk)
    assert done is not None and done.status == "succeeded", done and done.status_reason
    return done


@pytest.fixture
def no_tasks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Syncs and budget checks run in-process here; nothing is sent to a broker."""
    from monitoring.costs import tasks

    monkeypatch.setattr(tasks.cost_sync_task, "delay", lambda *a, **k: None)
    monkeypatch.setattr(tasks.budgets_check_task, "delay", lambda *a, **k: None)


# --- estimates ----------------------------------------------------------------------------------------------------


def test_a_run_over_midnight_is_split_by_wall_time_and_a_second_sync_counts_it_once(project, users, no_tasks):
    yesterday = _today() - timedelta(days=1)
    run = make_run(project, users.data_scientist, started=_at(yesterday, 23), finished=_at(_today(), 1), cost="2.0000")
    estimate_sync()
    rows = CostRecord.objects.filter(run=str(run.pk), source="estimate").order_by("day")
    assert [(r.day, r.amount) for r in rows] == [(yesterday, Decimal("1.000000")), (_today(), Decimal("1.000000"))]
    assert {r.project for r in rows} == {"bc"} and {r.model for r in rows} == {"churn"}
    assert {r.backend for r in rows} == {"local"}

    estimate_sync()  # the same window again: replaced, not added
    assert CostRecord.objects.filter(run=str(run.pk)).count() == 2
    assert selectors.run_cost(run).amount == Decimal("2.000000")
    assert selectors.run_cost(run).basis == "estimate"
    # The roll-up and the dashboard hold the same spend.
    spent = sum(
        (
            selectors.month_spend(m, project="bc")[0]
            for m in {selectors.month_start(yesterday), selectors.month_start(_today())}
        ),
        Decimal(0),
    )
    assert spent == Decimal("2.000000")
    table = selectors.cost_table(start=yesterday, end=_today() + timedelta(days=1), group_by="project")
    assert table.groups == ["bc"] and table.amounts["bc"] == [Decimal("1.000000"), Decimal("1.000000")]
    assert table.estimated_total == table.total == Decimal("2.000000")


def test_a_run_whose_measured_cost_changes_is_replaced_and_a_running_local_run_waits_for_its_measure(
    project, users, no_tasks
):
    run = make_run(
        project, users.data_scientist, started=_at(_today(), 0, 5), finished=_at(_today(), 0, 10), cost="0.5"
    )
    running = make_run(project, users.data_scientist, started=_at(_today(), 0, 5), finished=None, cost=None)
    estimate_sync()
    assert CostRecord.objects.get(run=str(run.pk)).amount == Decimal("0.500000")
    assert not CostRecord.objects.filter(run=str(running.pk)).exists()
    Run.objects.filter(pk=run.pk).update(cost=Decimal("0.7"))
    estimate_sync()
    assert CostRecord.objects.get(run=str(run.pk)).amount == Decimal("0.700000")


def test_a_running_sagemaker_run_is_estimated_from_its_instances_hours_so_far(project, users, no_tasks, settings):
    started = timezone.now() - timedelta(minutes=30)
    run = make_run(
        project,
        users.data_scientist,
        started=started,
        finished=None,
        cost=None,
        backend="sagemaker",
        instance_type="ml.m5.xlarge",
        instance_count=2,
    )
    estimates = [
        e
        for e in services.run_estimates(_today() - timedelta(days=1), _today() + timedelta(days=1))
        if e.run == str(run.pk)
    ]
    total = sum((e.amount for e in estimates), Decimal(0))
    expected = Decimal(str(settings.TRAINING_INSTANCE_PRICES["ml.m5.xlarge"])) * 2 / 2  # half an hour, two instances
    assert abs(total - expected) < Decimal("0.01"), (total, expected)
    assert {e.backend for e in estimates} == {"aws"}
    assert {e.aws_service for e in estimates} == {settings.AWS_SERVICE_TRAINING}


def test_a_serving_day_seen_again_keeps_each_process_at_the_most_seconds_seen(project, users, no_tasks):
    """A backend forgets processes (ECS tasks) that stopped long ago: a later look that no longer lists one keeps
    it, and a process still known counts its newer, longer uptime."""
    day = _today()

    def look(processes: dict[str, list[float]]) -> None:
        usage, amount = services.serving_usage(processes)
        estimate = services.Estimate(
            day=day,
            aws_service="Amazon Elastic Container Service",
            project="bc",
            model="churn",
            environment="staging",
            run="",
            deployment="7",
            backend="aws",
            amount=amount,
            usage=usage,
            keep_most=True,
        )
        services.estimates_store([estimate], start=day, end=day + timedelta(days=1))

    look({"task-a": [3600, 256, 512], "task-b": [1800, 256, 512]})
    look({"task-b": [3000, 256, 512]})  # task-a stopped and was forgotten; task-b ran on
    row = CostRecord.objects.get(deployment="7")
    assert row.usage["processes"] == {"task-a": [3600, 256, 512], "task-b": [3000, 256, 512]}
    assert row.usage["task_seconds"] == 6600
    assert row.amount == services.serving_usage({"a": [6600, 256, 512]})[1].quantize(Decimal("0.000001"))
    look({"task-b": [3600, 256, 512], "task-c": [100, 1024, 2048]})
    row.refresh_from_db()
    assert row.usage["task_seconds"] == 3600 + 3600 + 100
    assert set(row.usage["processes"]) == {"task-a", "task-b", "task-c"}


def test_the_serving_price_is_fargates_vcpu_and_gb_hours(settings):
    settings.FARGATE_VCPU_HOUR_PRICE = 0.04
    settings.FARGATE_GB_HOUR_PRICE = 0.004
    assert services.serving_price(512, 1024) == Decimal(str(0.5 * 0.04 + 1 * 0.004))


# --- the sync as a stateful object ------------------------------------------------------------------------------


def test_a_second_request_while_one_is_queued_joins_it_and_cost_explorer_is_refused_when_not_configured(
    no_tasks, users
):
    first = services.cost_sync_request(source="estimate")
    assert services.cost_sync_request(source="estimate").pk == first.pk
    with pytest.raises(ValidationError) as refused:
        services.cost_sync_request(source="cost_explorer")
    assert "source" in refused.value.message_dict
    with pytest.raises(ValidationError) as bad:
        services.cost_sync_request(source="receipts")
    assert "source" in bad.value.message_dict
    # A data scientist may not start one; finance may (and it is audited).
    from django.core.exceptions import PermissionDenied

    with pytest.raises(PermissionDenied):
        services.cost_sync_request(source="estimate", actor=users.data_scientist)
    CostSync.objects.all().delete()
    sync = services.cost_sync_request(source="estimate", actor=users.finance)
    assert AuditEvent.objects.filter(action="cost.sync.request", object_id=str(sync.pk)).exists()


def test_a_worker_whose_lease_expired_writes_nothing_and_the_new_holder_finishes(project, users, no_tasks, settings):
    make_run(project, users.data_scientist, started=_at(_today(), 0, 1), finished=_at(_today(), 0, 2), cost="0.25")
    sync = services.cost_sync_request(source="estimate")
    first = services.SYNC_MACHINE.claim(sync.pk, "run", lease_seconds=60)
    assert first is not None
    # The first worker stalls past its lease; another takes the sync over.
    CostSync.objects.filter(pk=sync.pk).update(claimed_at=timezone.now() - timedelta(seconds=120))
    assert services.SYNC_MACHINE.claim(sync.pk, "run", lease_seconds=60) == first + 1
    with pytest.raises(LostLease):
        services._sync_estimates(CostSync.objects.get(pk=sync.pk), first)
    assert not CostRecord.objects.exists()
    services._sync_estimates(CostSync.objects.get(pk=sync.pk), first + 1)
    assert CostSync.objects.get(pk=sync.pk).status == "succeeded"
    assert CostRecord.objects.get().amount == Decimal("0.250000")


# --- forecasts from estimates ------------------------------------------------------------------------------------


def test_the_estimate_forecast_needs_history_and_says_so(project, users, no_tasks):
    make_run(project, users.data_scientist, started=_at(_today(), 0, 1), finished=_at(_today(), 0, 2), cost="1")
    estimate_sync()
    forecast = selectors.forecast_for(_today())
    assert forecast is not None and not forecast.available
    assert "not enough history" in forecast.reason


def test_the_estimate_forecast_is_the_mean_daily_spend_over_the_days_left(project, users, no_tasks, settings):
    settings.COST_FORECAST_MIN_DAYS = 3
    today = _today()
    for back in range(1, 11):  # ten days, alternating 1 and 3 USD: mean 2, sd ~1.05
        day = today - timedelta(days=back)
        make_run(
            project, users.data_scientist, started=_at(day, 10), finished=_at(day, 11), cost="1" if back % 2 else "3"
        )
    services.cost_sync_request(source="estimate", start=today - timedelta(days=11), end=today + timedelta(days=1))
    services.cost_sync_run(sync_id=CostSync.objects.get().pk)
    fields = services.estimate_forecast(today.replace(day=1), today=today)
    left = (selectors.next_month(today) - today).days
    assert fields["available"]
    assert Decimal(fields["mean"]) == Decimal(str(round(2.0 * left, 6)))
    assert Decimal(fields["low"]) < Decimal(fields["mean"]) < Decimal(fields["high"])
    assert len(fields["points"]) == left


# --- budgets --------------------------------------------------------------------------------------------------


def test_bad_budgets_name_the_field_and_change_nothing(project, users):
    for amount, thresholds, field_name in [
        (0, [80], "amount"),
        (-5, [80], "amount"),
        ("lots", [80], "amount"),
        (100, [0], "thresholds"),
        (100, [1001], "thresholds"),
        (100, "80, ten", "thresholds"),
    ]:
        with pytest.raises(ValidationError) as refused:
            services.budget_save(actor=users.finance, project=project, amount=amount, thresholds=thresholds)
        assert field_name in refused.value.message_dict, (amount, thresholds)
    assert not Budget.objects.exists()
    from django.core.exceptions import PermissionDenied

    with pytest.raises(PermissionDenied):
        services.budget_save(actor=users.data_scientist, project=project, amount=100)


def test_a_budget_crossing_alerts_once_per_threshold_and_closes_when_the_spend_falls_back(project, users, no_tasks):
    budget = services.budget_save(
        actor=users.finance, project=project, amount="10", thresholds="80, 100", alert_on_forecast=False
    )
    assert AuditEvent.objects.filter(action="budget.create", object_id=str(budget.pk)).exists()
    run = make_run(project, users.data_scientist, started=_at(_today(), 0, 1), finished=_at(_today(), 0, 2), cost="8.5")
    estimate_sync()
    crossings = BudgetCrossing.objects.filter(budget=budget)
    assert list(crossings.values_list("kind", "status")) == [("80", "open")]
    assert "80% of the budget of $10.00" in crossings.get().message
    told = set(Notification.objects.filter(title__startswith="Budget 80%").values_list("user__username", flat=True))
    assert told == {users.finance.username, project.created_by.username}

    estimate_sync()  # the same spend again: no second alert
    services.budgets_check()
    assert crossings.count() == 1
    assert Notification.objects.filter(title__startswith="Budget").count() == 2

    Run.objects.filter(pk=run.pk).update(cost=Decimal("11"))
    estimate_sync()
    assert sorted(crossings.values_list("kind", flat=True)) == ["100", "80"]
    assert Notification.objects.filter(title__startswith="Budget 100%").count() == 2

    Run.objects.filter(pk=run.pk).update(cost=Decimal("1"))  # e.g. a re-measured run: back under both
    estimate_sync()
    assert set(crossings.values_list("status", flat=True)) == {"closed"}
    assert Notification.objects.filter(title__startswith="Budget").count() == 4


def test_an_overall_budget_and_a_forecast_over_it(project, users, no_tasks, settings):
    settings.COST_FORECAST_MIN_DAYS = 2
    today = _today()
    for back in range(1, 6):
        day = today - timedelta(days=back)
        make_run(project, users.data_scientist, started=_at(day, 10), finished=_at(day, 11), cost="2")
    budget = services.budget_save(
        actor=users.finance, project=None, amount="20", thresholds=[500], alert_on_forecast=True
    )
    services.cost_sync_request(source="estimate", start=today - timedelta(days=6), end=today + timedelta(days=1))
    services.cost_sync_run(sync_id=CostSync.objects.get().pk)
    forecast = selectors.forecast_for(today)
    assert forecast is not None and forecast.available
    spent = selectors.month_spend(today)[0]
    if spent + forecast.mean <= 20:  # too early in the month for the forecast to go over: nothing to alert
        assert not BudgetCrossing.objects.exists()
    else:
        crossing = BudgetCrossing.objects.get(budget=budget)
        assert crossing.kind == "forecast" and "forecast" in crossing.message


def test_last_months_crossings_close_when_the_month_ends(project, users, no_tasks):
    budget = services.budget_save(actor=users.finance, project=project, amount="10", thresholds=[50])
    last_month = selectors.month_start(selectors.month_start(_today()) - timedelta(days=1))
    BudgetCrossing.objects.create(budget=budget, month=last_month, kind="50", spend=6, budget_amount=10, message="m")
    services.budgets_check()
    assert BudgetCrossing.objects.get().status == "closed"


def test_the_roll_up_holds_what_the_daily_records_count(project, users, no_tasks):
    today = _today()
    make_run(project, users.data_scientist, started=_at(today, 0, 1), finished=_at(today, 0, 2), cost="0.4")
    make_run(
        project,
        users.data_scientist,
        started=_at(today, 0, 3),
        finished=_at(today, 0, 4),
        cost="0.6",
        output_name="other",
    )
    estimate_sync()
    monthly = selectors.cost_table(
        start=today.replace(day=1), end=today + timedelta(days=1), granularity="month", group_by="model"
    )
    daily = selectors.cost_table(
        start=today.replace(day=1), end=today + timedelta(days=1), granularity="day", group_by="model"
    )
    assert monthly.group_totals == daily.group_totals == {"other": Decimal("0.600000"), "churn": Decimal("0.400000")}
    assert CostMonth.objects.filter(family="model").count() == 2


def test_the_dashboard_asks_the_database_a_fixed_number_of_queries_however_many_models(project, users, no_tasks):
    from django.db import connection as db
    from django.test.utils import CaptureQueriesContext

    today = _today()
    start = today - timedelta(days=9)

    def seed(models: range) -> None:
        services.estimates_store(
            [
                services.Estimate(
                    day=start + timedelta(days=d),
                    aws_service="Amazon Elastic Container Service",
                    project="bc",
                    model=f"m{m:03d}",
                    environment="staging",
                    run="",
                    deployment=str(m),
                    backend="local",
                    amount=Decimal("0.5"),
                )
                for m in models
                for d in range(10)
            ],
            start=start,
            end=today + timedelta(days=1),
        )
        services.rollup_months([start, today])

    counts = []
    for models in (range(20), range(20, 300)):
        seed(models)
        for granularity in ("day", "month"):
            with CaptureQueriesContext(db) as queries:
                table = selectors.cost_table(
                    start=start, end=today + timedelta(days=1), granularity=granularity, group_by="model"
                )
            counts.append(len(queries))
            assert len(table.groups) == selectors.TOP_GROUPS + 1 and table.groups[-1] == selectors.OTHER
    assert counts[:2] == counts[2:] and max(counts) <= 4, counts
    assert table.total == Decimal("0.5") * 300 * 10


def test_a_crossing_that_closed_opens_again_when_the_spend_goes_back_over_without_telling_twice(
    project, users, no_tasks
):
    budget = services.budget_save(
        actor=users.finance, project=project, amount="10", thresholds=[50], alert_on_forecast=False
    )
    run = make_run(project, users.data_scientist, started=_at(_today(), 0, 1), finished=_at(_today(), 0, 2), cost="6")
    estimate_sync()
    assert BudgetCrossing.objects.get(budget=budget).status == "open"
    Run.objects.filter(pk=run.pk).update(cost=Decimal("1"))
    estimate_sync()
    assert BudgetCrossing.objects.get(budget=budget).status == "closed"
    Run.objects.filter(pk=run.pk).update(cost=Decimal("7"))
    estimate_sync()
    crossing = BudgetCrossing.objects.get(budget=budget)
    assert crossing.status == "open" and "$7.00 spent" in crossing.message
    assert Notification.objects.filter(title__startswith="Budget").count() == 2  # finance and the owner, once
    assert AuditEvent.objects.filter(action="budget.cross.reopen").count() == 1


def test_a_tag_value_that_reads_like_a_label_is_its_own_group(project, users, no_tasks):
    day = _today()
    rows = [("", "1"), ("(other)", "2"), ("(none)", "4")] + [(f"p{i:02d}", "10") for i in range(13)]
    services.estimates_store(
        [
            services.Estimate(
                day=day,
                aws_service="x",
                project=name,
                model="",
                environment="",
                run=f"r{i}",
                deployment="",
                backend="local",
                amount=Decimal(amount),
                usage={"kind": "run"},
            )
            for i, (name, amount) in enumerate(rows)
        ],
        start=day,
        end=day + timedelta(days=1),
    )
    table = selectors.cost_table(start=day, end=day + timedelta(days=1), group_by="project")
    assert len(table.groups) == len(set(table.groups)) == selectors.TOP_GROUPS + 1
    assert table.total == Decimal(1 + 2 + 4 + 130)
    small = selectors.cost_table(start=day, end=day + timedelta(days=1), group_by="project", top=20)
    assert {"(none)", "(other) (tag value)", "(none) (tag value)"} <= set(small.groups)
