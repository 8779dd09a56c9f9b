"""The one transition mechanism: tables, leases, append-only events, and races between real database sessions."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.exceptions import PermissionDenied
from django.db import OperationalError
from django.utils import timezone

from controlplane import services
from controlplane.models import SystemCheck, TransitionEvent, WriteOnceError
from controlplane.services import SYSTEM_CHECK_MACHINE
from controlplane.transitions import IllegalTransition, LostLease
from lineage.services.runs import RUN_MACHINE
from tests.fixtures.races import race


@pytest.fixture
def project(users):
    return services.project_create(actor=users.admin, name="Races", slug="races")


@pytest.fixture
def check(users):
    return SystemCheck.objects.create(requested_by=users.admin)


@pytest.mark.django_db
def test_an_illegal_transition_says_what_is_allowed_and_changes_nothing(check) -> None:
    with pytest.raises(IllegalTransition) as raised:
        SYSTEM_CHECK_MACHINE.apply(check.pk, "pass")
    assert "a queued system check cannot pass (allowed from: running)" in str(raised.value)
    assert SystemCheck.objects.get(pk=check.pk).status == "queued"
    assert not TransitionEvent.objects.exists()
    assert SYSTEM_CHECK_MACHINE.apply(check.pk, "pass", quiet=True) is None


@pytest.mark.django_db
def test_a_claim_bumps_the_attempt_and_a_stale_attempt_cannot_write_the_outcome(check) -> None:
    first = SYSTEM_CHECK_MACHINE.claim(check.pk, "run")
    assert first == 1
    assert SYSTEM_CHECK_MACHINE.claim(check.pk, "run") is None  # held: another worker got there first
    SystemCheck.objects.filter(pk=check.pk).update(claimed_at=timezone.now() - timedelta(days=1))
    second = SYSTEM_CHECK_MACHINE.claim(check.pk, "run")
    assert second == 2
    with pytest.raises(LostLease):
        SYSTEM_CHECK_MACHINE.apply(check.pk, "fail", attempt=first)
    with pytest.raises(LostLease):
        SYSTEM_CHECK_MACHINE.renew(check.pk, first)
    SYSTEM_CHECK_MACHINE.apply(check.pk, "pass", attempt=second)
    events = list(TransitionEvent.objects.filter(object_id=str(check.pk)).values_list("action", "to_status", "attempt"))
    assert events == [("run", "running", 1), ("run", "running", 2), ("pass", "passed", 2)]
    assert "lease expired" in TransitionEvent.objects.filter(attempt=2, action="run").get().reason


@pytest.mark.django_db
def test_transition_events_are_append_only(check) -> None:
    SYSTEM_CHECK_MACHINE.claim(check.pk, "run")
    event = TransitionEvent.objects.get()
    event.reason = "rewritten"
    with pytest.raises(WriteOnceError):
        event.save()
    with pytest.raises(WriteOnceError):
        TransitionEvent.objects.all().delete()


@pytest.mark.django_db
def test_a_transition_with_a_permission_checks_the_actor(users, project) -> None:
    from lineage.models import Run

    run = Run.objects.create(
        project=project,
        kind="training",
        recipe="logistic_regression",
        recipe_version="1",
        recipe_fingerprint="f" * 64,
        created_by=users.data_scientist,
        status="running",
    )
    with pytest.raises(PermissionDenied):
        RUN_MACHINE.apply(run.pk, "stop", actor=users.finance)
    assert RUN_MACHINE.apply(run.pk, "stop", actor=users.data_scientist).status == "stopping"


@pytest.mark.django_db(transaction=True)
def test_two_workers_racing_for_one_system_check_run_it_once(users) -> None:
    check = SystemCheck.objects.create(requested_by=users.admin)
    outcomes = race(*[lambda: services.system_check_run(check_id=check.pk, worker="w")] * 3)
    assert [o.error for o in outcomes] == [None, None, None]
    assert sorted(o.value is None for o in outcomes) == [False, True, True]
    assert SystemCheck.objects.get(pk=check.pk).status == "passed"
    assert TransitionEvent.objects.filter(object_id=str(check.pk), action="run").count() == 1


@pytest.mark.django_db(transaction=True)
def test_two_users_stopping_one_run_stop_it_once(users, project) -> None:
    from lineage import services as lineage_services
    from lineage.models import Run

    run = Run.objects.create(
        project=project,
        kind="training",
        recipe="logistic_regression",
        recipe_version="1",
        recipe_fingerprint="f" * 64,
        created_by=users.data_scientist,
        status="queued",
    )
    outcomes = race(*[lambda: lineage_services.run_stop(actor=users.data_scientist, run=run)] * 2)
    errors = [o.error for o in outcomes if o.error is not None]
    # One stop wins; the other is told plainly why it changed nothing (HTTP 400 in the API), never a 500.
    assert len(errors) == 1 and isinstance(errors[0], IllegalTransition), errors
    assert Run.objects.get(pk=run.pk).status == "stopped"
    assert run.events.filter(to_status="stopped").count() == 1


def test_infrastructure_errors_are_retried_not_recorded_as_the_outcome() -> None:
    from celery.exceptions import Retry

    from lineage import tasks

    class FakeTask:  # the bound task's retry bookkeeping, as Celery passes it
        max_retries = 3

        class request:
            retries = 0

        def retry(self, exc, countdown):
            return Retry(exc=exc, when=countdown)

    with pytest.raises(Retry):
        with tasks._retry_or_fail_run(FakeTask(), 0, "doing", max_countdown=10):
            raise OperationalError("server closed the connection unexpectedly")


@pytest.mark.django_db
def test_a_check_whose_worker_died_is_sent_again(check) -> None:
    SYSTEM_CHECK_MACHINE.claim(check.pk, "run")
    assert services.system_checks_requeue_stale() == 0  # its worker holds a live lease
    SystemCheck.objects.filter(pk=check.pk).update(claimed_at=timezone.now() - timedelta(days=1), enqueued_at=None)
    assert services.system_checks_requeue_stale() == 1
    assert services.system_checks_requeue_stale() == 0  # just sent: wait before sending again
