"""Alerts: one open per service and name however many evaluations raise it at once, refreshed while it lasts,
closed on recovery, audited; and the objectives judged continuously open and close them."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from controlplane.models import AuditEvent, Notification
from deployments import objectives as objective_rules
from deployments import services as deployment_services
from monitoring.models import Alert
from monitoring.services import alerts, objectives
from tests.fixtures.races import race
from tests.monitoring.drift_world import World, make_world

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
WINDOW = (NOW - timedelta(minutes=15), NOW)


@pytest.fixture
def world(users: Any, tmp_path: Path) -> World:
    return make_world(users, tmp_path, objective_p99_latency_ms=100, objective_error_rate=0.02)


def test_raising_opens_one_alert_refreshes_it_and_resolving_closes_it(world: World, users: Any) -> None:
    first = alerts.alert_raise(
        world.service, "error_rate", value=0.05, threshold=0.02, window=WINDOW, message="error rate 5.00%"
    )
    again = alerts.alert_raise(
        world.service, "error_rate", value=0.07, threshold=0.02, window=WINDOW, message="error rate 7.00%"
    )
    assert again.pk == first.pk and again.value == 0.07 and again.message == "error rate 7.00%"
    assert again.last_seen_at is not None and again.last_seen_at >= first.last_seen_at
    assert Alert.objects.filter(service=world.service).count() == 1
    opened = AuditEvent.objects.get(action="alert.open")
    assert opened.object_id == str(first.pk) and opened.after["value"] == 0.05 and opened.actor_name == "system"
    # The version's author and the approver who deployed it are told, once.
    told = Notification.objects.filter(title=f"{world.service.name}: error rate alert")
    assert sorted(n.user.username for n in told) == ["alex", "dana"] and told[0].body == "error rate 5.00%"

    closed = alerts.alert_resolve(world.service, "error_rate", reason="error rate 0.10% within its objective")
    assert closed is not None and closed.status == "closed" and closed.close_reason.startswith("error rate 0.10%")
    assert alerts.alert_resolve(world.service, "error_rate", reason="again") is None
    assert AuditEvent.objects.filter(action="alert.close").count() == 1
    # Raised after it closed: a new alert.
    reopened = alerts.alert_raise(world.service, "error_rate", value=0.09, threshold=0.02, window=WINDOW, message="x")
    assert reopened.pk != first.pk and Alert.objects.filter(status="open").count() == 1


@pytest.mark.django_db(transaction=True)
def test_evaluations_raising_one_alert_at_once_open_one_and_resolving_at_once_closes_it_once(
    users: Any, tmp_path: Path
) -> None:
    world = make_world(users, tmp_path)

    def raise_it(value: float) -> Any:
        return lambda: alerts.alert_raise(
            world.service, "p99_latency_ms", value=value, threshold=100.0, window=WINDOW, message=f"p99 {value} ms"
        )

    outcomes = race(raise_it(150.0), raise_it(160.0), raise_it(170.0))
    assert [o.error for o in outcomes] == [None, None, None]
    assert len({o.value.pk for o in outcomes}) == 1
    alert = Alert.objects.get(service=world.service, name="p99_latency_ms")
    assert alert.status == "open" and alert.value in (150.0, 160.0, 170.0)
    assert AuditEvent.objects.filter(action="alert.open").count() == 1

    closes = race(*(lambda: alerts.alert_resolve(world.service, "p99_latency_ms", reason="recovered"),) * 2)
    assert [o.error for o in closes] == [None, None]
    assert sum(o.value is not None for o in closes) == 1
    assert AuditEvent.objects.filter(action="alert.close").count() == 1


def record(path: Path, world: World, **signals: Any) -> None:
    path.write_text(json.dumps({f"{world.service.name}/{world.deployment.revision}": signals}))


def test_objectives_are_judged_continuously_open_and_close_alerts(world: World, settings: Any, tmp_path: Path) -> None:
    recorded = tmp_path / "signals.json"
    settings.DEPLOYMENT_SIGNALS = "recorded"
    settings.DEPLOYMENT_RECORDED_SIGNALS = str(recorded)
    settings.OBJECTIVE_MIN_REQUESTS = 20
    settings.OBJECTIVE_WINDOW_MINUTES = 15

    record(recorded, world, requests=200, errors=20, p99_latency_ms=40.0)
    assert objectives.objectives_evaluate(now=NOW) == 1
    alert = Alert.objects.get(service=world.service, status="open")
    assert alert.name == "error_rate" and alert.value == pytest.approx(0.1) and alert.threshold == 0.02
    assert (alert.window_start, alert.window_end) == WINDOW
    assert "error rate 10.00% above its objective 2.00% over the last 15 min (11:45–12:00 UTC)" in alert.message

    # Too few requests to judge: the alert stays as it is.
    record(recorded, world, requests=3, errors=0, p99_latency_ms=900.0)
    outcome = objectives.service_objectives_evaluate(world.service, now=NOW + timedelta(minutes=1))
    assert outcome["error_rate"] == "not judged" and outcome["p99_latency_ms"] == "not judged"
    assert Alert.objects.get(pk=alert.pk).status == "open"

    record(recorded, world, requests=200, errors=0, p99_latency_ms=250.0)
    objectives.objectives_evaluate(now=NOW + timedelta(minutes=2))
    alert.refresh_from_db()
    assert alert.status == "closed" and "within its objective" in alert.close_reason
    slow = Alert.objects.get(service=world.service, status="open")
    assert slow.name == "p99_latency_ms" and slow.value == 250.0 and slow.threshold == 100.0

    # The environment stops setting the objective: its alert closes, saying so.
    from django.contrib.auth import get_user_model

    admin = get_user_model().objects.get(username="ada")
    deployment_services.environment_update(
        actor=admin, environment_id=world.environment.pk, data={"objective_p99_latency_ms": None}
    )
    objectives.objectives_evaluate(now=NOW + timedelta(minutes=3))
    slow.refresh_from_db()
    assert slow.status == "closed" and "no longer sets this objective" in slow.close_reason
    assert not Alert.objects.filter(status="open").exists()


def test_a_tightened_objective_applies_to_what_serves_without_a_new_deployment(
    world: World, settings: Any, tmp_path: Path, users: Any
) -> None:
    recorded = tmp_path / "signals.json"
    settings.DEPLOYMENT_SIGNALS = "recorded"
    settings.DEPLOYMENT_RECORDED_SIGNALS = str(recorded)
    settings.OBJECTIVE_MIN_REQUESTS = 20
    record(recorded, world, requests=200, errors=0, p99_latency_ms=40.0)
    objectives.objectives_evaluate(now=NOW)
    assert not Alert.objects.filter(status="open").exists()  # 40 ms within 100 ms

    # The deployment was made under 100 ms; the admin tightens it to 10 ms: the next evaluation judges by 10 ms.
    deployment_services.environment_update(
        actor=users.admin, environment_id=world.environment.pk, data={"objective_p99_latency_ms": 10}
    )
    objectives.objectives_evaluate(now=NOW + timedelta(minutes=1))
    alert = Alert.objects.get(service=world.service, status="open")
    assert (alert.name, alert.value, alert.threshold) == ("p99_latency_ms", 40.0, 10.0)

    # Above the objective on too few requests: not judged, and never described as "within".
    record(recorded, world, requests=3, errors=0, p99_latency_ms=40.0)
    status = objective_rules.objective_status(
        world.service, world.deployment.revision, WINDOW, objectives={"p99_latency_ms": 10.0}
    )
    (result,) = status.results
    assert not result.breached and "within" not in result.describe() and "not judged" in result.describe()
