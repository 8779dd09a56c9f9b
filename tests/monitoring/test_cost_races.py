"""Races on costs, for real on PostgreSQL (each contender a thread with its own connection): one sync done once by
two workers, parallel requests making one sync, concurrent budget checks telling each person once, concurrent
roll-ups of one month taking turns."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection

from controlplane.models import AuditEvent, Notification
from monitoring.costs import selectors, services
from monitoring.models import BudgetCrossing, CostMonth, CostRecord, CostSync
from tests.fixtures.costs import make_run
from tests.fixtures.races import race
from tests.monitoring import test_cost_sync
from tests.monitoring.test_cost_sync import _at, _today

pytestmark = pytest.mark.django_db
project = test_cost_sync.project
no_tasks = test_cost_sync.no_tasks


@pytest.mark.django_db(transaction=True)
def test_two_workers_given_the_same_sync_do_it_once(project, users, no_tasks):
    if connection.vendor != "postgresql":
        pytest.skip("races need PostgreSQL's row locks (the PostgreSQL pass runs it)")
    make_run(project, users.data_scientist, started=_at(_today(), 0, 1), finished=_at(_today(), 0, 2), cost="0.25")
    sync = services.cost_sync_request(source="estimate")
    outcomes = race(lambda: services.cost_sync_run(sync_id=sync.pk), lambda: services.cost_sync_run(sync_id=sync.pk))
    assert [o.error for o in outcomes] == [None, None]
    assert sorted(o.value is None for o in outcomes) == [False, True]  # one did it, the other found it taken
    assert CostRecord.objects.count() == 1
    from controlplane.models import TransitionEvent

    assert TransitionEvent.objects.filter(object_id=str(sync.pk), action="run").count() == 1


@pytest.mark.django_db(transaction=True)
def test_two_parallel_requests_make_one_sync(no_tasks):
    if connection.vendor != "postgresql":
        pytest.skip("races need PostgreSQL (the PostgreSQL pass runs it)")
    outcomes = race(*[lambda: services.cost_sync_request(source="estimate") for _ in range(4)])
    assert [o.error for o in outcomes] == [None] * 4
    assert len({o.value.pk for o in outcomes}) == 1
    assert CostSync.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_two_budget_checks_at_once_open_one_crossing_and_tell_each_person_once(project, users, no_tasks):
    if connection.vendor != "postgresql":
        pytest.skip("races need PostgreSQL (the PostgreSQL pass runs it)")
    services.budget_save(actor=users.finance, project=project, amount="1", thresholds=[50], alert_on_forecast=False)
    make_run(project, users.data_scientist, started=_at(_today(), 0, 1), finished=_at(_today(), 0, 2), cost="2")
    services.estimates_store(
        services.run_estimates(_today(), _today() + timedelta(days=1)), start=_today(), end=_today() + timedelta(days=1)
    )
    services.rollup_months([_today()])
    outcomes = race(services.budgets_check, services.budgets_check, services.budgets_check)
    assert [o.error for o in outcomes] == [None] * 3
    assert sum(len(o.value) for o in outcomes) == 1
    assert BudgetCrossing.objects.count() == 1
    assert Notification.objects.filter(title__startswith="Budget").count() == 2
    assert AuditEvent.objects.filter(action="budget.cross").count() == 1


@pytest.mark.django_db(transaction=True)
def test_two_roll_ups_of_one_month_at_once_take_turns(project, users, no_tasks):
    if connection.vendor != "postgresql":
        pytest.skip("races need PostgreSQL (the PostgreSQL pass runs it)")
    today = _today()
    for i in range(30):
        make_run(
            project,
            users.data_scientist,
            started=_at(today, 0, i),
            finished=_at(today, 0, i + 1),
            cost="0.1",
            output_name=f"m{i}",
        )
    services.estimates_store(
        services.run_estimates(today, today + timedelta(days=1)), start=today, end=today + timedelta(days=1)
    )
    outcomes = race(*[lambda: services.rollup_months([today]) for _ in range(4)])
    assert [o.error for o in outcomes] == [None] * 4
    assert selectors.month_spend(today)[0] == Decimal("3.000000")
    assert CostMonth.objects.filter(family="model").count() == 30
