"""The bill: a Cost Explorer sync through moto's server (GetCostAndUsage, results queued in the order the source asks:
project, model, object) and, for the forecast moto lacks, botocore's Stubber. Re-pulls replace, estimates give way to
the bill, the dashboard counts each dollar once."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import pytest
from botocore.stub import Stubber
from django.utils import timezone

from lineage.models import Run
from monitoring.costs import selectors, services
from monitoring.models import BudgetCrossing, CostForecast, CostRecord, CostSync
from tests.fixtures.costs import make_run
from tests.fixtures.costs import queue_cost_and_usage as queue
from tests.monitoring import test_cost_sync
from workers import aws
from workers.costs.cost_explorer import CostExplorerSource

pytestmark = pytest.mark.django_db
project = test_cost_sync.project
no_tasks = test_cost_sync.no_tasks


def _today() -> date:
    return timezone.now().astimezone(UTC).date()


def _day(day: date, groups: list[tuple[list[str], str]], estimated: bool = False) -> dict[str, Any]:
    return {
        "TimePeriod": {"Start": day.isoformat(), "End": (day + timedelta(days=1)).isoformat()},
        "Total": {},
        "Groups": [
            {"Keys": keys, "Metrics": {"UnblendedCost": {"Amount": amount, "Unit": "USD"}}} for keys, amount in groups
        ],
        "Estimated": estimated,
    }


def bill_for(days: dict[date, tuple[str, str]], run_pk: int) -> list[dict[str, Any]]:
    """The three breakdowns' answers for `days` (day -> (the run's SageMaker cost, an untagged cost))."""
    project = {
        "ResultsByTime": [
            _day(d, [(["project$bc", "Amazon SageMaker"], run), (["project$", "AWS Lambda"], untagged)])
            for d, (run, untagged) in days.items()
        ]
    }
    model = {
        "ResultsByTime": [
            _day(d, [(["model$churn", "environment$"], run), (["model$", "environment$"], untagged)])
            for d, (run, untagged) in days.items()
        ]
    }
    objects = {
        "ResultsByTime": [
            _day(d, [([f"run${run_pk}", "deployment$"], run), (["run$", "deployment$"], untagged)])
            for d, (run, untagged) in days.items()
        ]
    }
    return [project, model, objects]


@pytest.fixture
def bill(aws_env: str, settings: Any) -> str:
    settings.COST_EXPLORER_ENABLED = True
    settings.AWS_ENDPOINT_URL = aws_env
    return aws_env


def bill_sync(start: date, end: date) -> CostSync:
    sync = services.cost_sync_request(source="cost_explorer", start=start, end=end)
    done = services.cost_sync_run(sync_id=sync.pk)
    assert done is not None and done.status == "succeeded", done and done.status_reason
    return done


def test_the_bill_replaces_a_sagemaker_runs_estimate_and_the_dashboard_counts_it_once(bill, project, users, no_tasks):
    today = _today()
    day = today - timedelta(days=2)
    run = make_run(
        project,
        users.data_scientist,
        started=datetime.combine(day, time(9), tzinfo=UTC),
        finished=datetime.combine(day, time(11), tzinfo=UTC),
        cost="0.46",
        backend="sagemaker",
        instance_type="ml.m5.xlarge",
    )
    sync = services.cost_sync_request(source="estimate")
    services.cost_sync_run(sync_id=sync.pk)
    assert selectors.run_cost(run).basis == "estimate"
    before = selectors.cost_table(start=day, end=today + timedelta(days=1), group_by="project")
    assert before.total == Decimal("0.460000") and before.estimated_total == before.total

    queue(bill, *bill_for({day: ("0.52", "0.10")}, run.pk))
    done = bill_sync(day, day + timedelta(days=1))
    assert done.calls >= 3  # three usage chains (and the forecasts, which moto cannot answer)
    # The estimate stays, marked: the bill's figure is the run's now.
    estimate = CostRecord.objects.get(source="estimate", run=str(run.pk))
    assert estimate.superseded
    cost = selectors.run_cost(run)
    assert (cost.amount, cost.basis) == (Decimal("0.520000"), "bill")
    # The day is covered by the bill: its aws estimate no longer counts; the untagged spend shows as untagged.
    after = selectors.cost_table(start=day, end=today + timedelta(days=1), group_by="project")
    assert after.group_totals == {"bc": Decimal("0.520000"), selectors.UNTAGGED: Decimal("0.100000")}
    assert after.estimated_total == 0
    by_model = selectors.cost_table(start=day, end=today + timedelta(days=1), group_by="model")
    assert by_model.total == after.total == Decimal("0.620000")
    by_service = selectors.cost_table(start=day, end=today + timedelta(days=1), group_by="aws_service")
    assert by_service.group_totals == {"Amazon SageMaker": Decimal("0.520000"), "AWS Lambda": Decimal("0.100000")}
    # The month's roll-up agrees with the days.
    assert selectors.month_spend(day)[0] == Decimal("0.620000") or day.month != today.month


def test_a_trailing_re_pull_replaces_the_days_it_reads_again(bill, project, users, no_tasks):
    today = _today()
    d1, d2, d3 = today - timedelta(days=3), today - timedelta(days=2), today - timedelta(days=1)
    run = make_run(
        project,
        users.data_scientist,
        started=datetime.combine(d1, time(9), tzinfo=UTC),
        finished=datetime.combine(d1, time(10), tzinfo=UTC),
        cost="0.2",
    )
    services.cost_sync_run(
        sync_id=services.cost_sync_request(source="estimate", start=d1, end=today + timedelta(days=1)).pk
    )
    queue(bill, *bill_for({d1: ("1.00", "0.00"), d2: ("2.00", "0.50")}, run.pk))
    bill_sync(d1, d3)
    # The next day's sync reads d2 again (its figure kept changing) and d3 for the first time.
    queue(bill, *bill_for({d2: ("2.40", "0.50"), d3: ("3.00", "0.00")}, run.pk))
    bill_sync(d2, today)
    rows = CostRecord.objects.filter(source="cost_explorer", breakdown="project", project="bc").order_by("day")
    assert [(r.day, r.amount) for r in rows] == [
        (d1, Decimal("1.000000")),
        (d2, Decimal("2.400000")),
        (d3, Decimal("3.000000")),
    ]
    table = selectors.cost_table(start=d1, end=today, group_by="project")
    # The bill's 6.40, and the local run, which is on no bill: its estimate still counts beside it.
    assert table.group_totals["bc"] == Decimal("6.600000")
    assert table.estimated_total == Decimal("0.200000")
    assert selectors.bill_covered_through() == d3


def test_the_bills_forecast_is_kept_for_the_pages_and_a_forecast_over_budget_alerts(
    bill, project, users, no_tasks, monkeypatch, settings
):
    """GetCostForecast through the Stubber (moto does not model it), on the same source the sync uses."""
    today = _today()
    end = selectors.next_month(today)
    client = aws.aws_client("ce", region="us-east-1", endpoint_url="https://ce.us-east-1.amazonaws.com")
    source = CostExplorerSource(region="us-east-1", client=client)
    services.budget_save(actor=users.finance, project=None, amount="100", thresholds=[1000], alert_on_forecast=True)
    empty = {"ResultsByTime": [], "DimensionValueAttributes": []}
    start = today - timedelta(days=1)
    with Stubber(client) as stubber:
        for breakdown in ("project", "model", "object"):
            stubber.add_response(
                "get_cost_and_usage", empty, source.usage_request(breakdown, start, today + timedelta(days=1))
            )
        stubber.add_response(
            "get_cost_forecast",
            {
                "Total": {"Amount": "150.0", "Unit": "USD"},
                "ForecastResultsByTime": [
                    {
                        "TimePeriod": {"Start": today.isoformat(), "End": end.isoformat()},
                        "MeanValue": "150.0",
                        "PredictionIntervalLowerBound": "120.0",
                        "PredictionIntervalUpperBound": "180.0",
                    }
                ],
            },
            source.forecast_request(today, end, level=settings.COST_FORECAST_LEVEL),
        )
        monkeypatch.setattr(services, "cost_source", lambda: source)
        bill_sync(start, today + timedelta(days=1))
        stubber.assert_no_pending_responses()
    forecast = CostForecast.objects.get(source="cost_explorer", project="")
    assert forecast.available and forecast.mean == Decimal("150.000000")
    assert (forecast.low, forecast.high) == (Decimal("120.000000"), Decimal("180.000000"))
    assert selectors.forecast_for(today) == forecast
    crossing = BudgetCrossing.objects.get()
    assert crossing.kind == "forecast" and "$150.00" in crossing.message


def test_the_bill_is_refused_where_cost_explorer_is_not_configured(project, users, no_tasks):
    assert not services.cost_explorer_enabled()
    assert services.cost_syncs_schedule(source="cost_explorer") is None
    assert not CostSync.objects.exists()
    assert Run.objects.count() == 0


def aws_estimate(day: date, amount: str = "1", project: str = "bc") -> CostRecord:
    return CostRecord.objects.create(
        day=day,
        source="estimate",
        breakdown="full",
        project=project,
        model="churn",
        aws_service="Amazon SageMaker",
        run="99",
        backend="aws",
        amount=Decimal(amount),
        usage={"kind": "run"},
    )


def test_a_first_bill_sync_of_a_trailing_window_leaves_older_days_to_their_estimates(bill, no_tasks):
    """The bill holds the days Cost Explorer answered, not every day before the last one: older days keep their
    estimates, and the daily and monthly views agree."""
    today = _today()
    first = today - timedelta(days=40)
    for back in range(41):
        aws_estimate(first + timedelta(days=back))
    services.rollup_months(selectors.months_of(CostRecord.objects.all()))
    window = [today - timedelta(days=i) for i in range(14, 0, -1)]  # the 14 whole days before today
    queue(bill, *bill_for({day: ("1.00", "0.00") for day in window}, 99))
    bill_sync(window[0], today)
    assert selectors.bill_covered_through() == today - timedelta(days=1)
    end = today + timedelta(days=1)
    daily = selectors.cost_table(start=first, end=end, group_by="project")
    monthly = selectors.cost_table(start=first, end=end, granularity="month", group_by="project")
    assert daily.total == monthly.total == Decimal(41)
    assert daily.estimated_total == Decimal(41 - 14)  # 26 older days and today are still estimates


def test_today_stays_an_estimate_after_a_bill_sync_that_answered_it(bill, no_tasks):
    """Cost Explorer answers today too, with a partial figure: the bill holds whole days only."""
    today = _today()
    yesterday = today - timedelta(days=1)
    aws_estimate(today, "5")
    aws_estimate(yesterday, "4")
    queue(bill, *bill_for({yesterday: ("3.00", "0.00"), today: ("0.50", "0.00")}, 99))
    bill_sync(yesterday, today + timedelta(days=1))
    assert selectors.bill_covered_through() == yesterday
    assert not CostRecord.objects.filter(source="cost_explorer", day=today).exists()
    table = selectors.cost_table(start=yesterday, end=today + timedelta(days=1), group_by="project")
    assert table.amounts["bc"] == [Decimal("3.000000"), Decimal("5")]
    assert selectors.month_spend(today)[0] == (Decimal("8") if yesterday.month == today.month else Decimal("5"))


def test_a_tag_value_longer_than_its_column_is_kept_apart_and_the_sync_succeeds(bill, no_tasks):
    day = _today() - timedelta(days=1)
    long_a, long_b = "a" * 250 + "1", "a" * 250 + "2"
    pages = bill_for({day: ("1.00", "0.00")}, 99)
    pages[0]["ResultsByTime"][0]["Groups"] = [
        {
            "Keys": [f"project${long_a}", "Amazon SageMaker"],
            "Metrics": {"UnblendedCost": {"Amount": "1", "Unit": "USD"}},
        },
        {
            "Keys": [f"project${long_b}", "Amazon SageMaker"],
            "Metrics": {"UnblendedCost": {"Amount": "2", "Unit": "USD"}},
        },
    ]
    queue(bill, *pages)
    bill_sync(day, day + timedelta(days=1))
    stored = sorted(CostRecord.objects.filter(breakdown="project").values_list("project", "amount"))
    assert len(stored) == 2 and all(len(p) <= 63 for p, _ in stored) and stored[0][0] != stored[1][0]
    assert [a for _, a in stored] == [Decimal("1.000000"), Decimal("2.000000")]


def test_a_person_asking_for_the_bill_again_within_the_hour_is_told_when_they_may(bill, users, no_tasks):
    day = _today() - timedelta(days=1)
    queue(bill, *bill_for({day: ("1.00", "0.00")}, 99))
    bill_sync(day, day + timedelta(days=1))
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError) as refused:
        services.cost_sync_request(source="cost_explorer", actor=users.finance)
    assert "can be read again from" in refused.value.message_dict["source"][0]
    assert CostSync.objects.count() == 1
