"""The drift job on real capture files: windows scheduled on the clock, one report per window however many beats
race, the statistics core's verdict stored under the lease, the drift alert opened and closed, the environment's
drift settings checked, and the retrain link."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from django.urls import reverse

from controlplane.models import AuditEvent, Notification, TransitionEvent
from controlplane.transitions import TAKEOVER_REASON
from monitoring import drift_selectors
from monitoring.models import Alert, DriftFeature, DriftReport
from monitoring.services import drift
from tests.fixtures.processes import wait_for
from tests.fixtures.races import race
from tests.monitoring.drift_world import (
    World,
    make_world,
    profiled_version,
    rows,
    training_csv,
    write_capture,
    write_corrupt_capture,
)

DAY = datetime(2026, 11, 30, tzinfo=UTC)


def at(hour: int, minute: int = 0, second: int = 0) -> datetime:
    return DAY.replace(hour=hour, minute=minute, second=second)


@pytest.fixture(autouse=True)
def no_worker_runs_them(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """The tests run each report themselves: a session worker (from an earlier test) must not take it first;
    except the one test that has the worker run them."""
    from monitoring import tasks_drift

    if "celery_worker" not in request.fixturenames:
        monkeypatch.setattr(tasks_drift.drift_report_run_task, "delay", lambda *args, **kwargs: None)


@pytest.fixture
def world(users: Any, tmp_path: Any) -> World:
    return make_world(users, tmp_path)


def report_for(world: World, start: datetime, end: datetime) -> DriftReport:
    label = f"d{world.deployment.pk}"
    return DriftReport.objects.create(service=world.service, revision=label, window_start=start, window_end=end)


def transitions_of(report: DriftReport) -> list[tuple[str, str, str]]:
    events = TransitionEvent.objects.filter(object_type="monitoring.driftreport", object_id=str(report.pk))
    return [(e.from_status, e.to_status, e.reason) for e in events.order_by("created_at", "id")]


def test_windows_are_aligned_to_the_clock_and_only_the_newest_few_are_caught_up() -> None:
    windows = drift.due_windows(since=at(9, 20), now=at(11, 0, 30), minutes=60, limit=3)
    assert windows == [(at(9), at(10)), (at(10), at(11))]
    assert drift.due_windows(since=at(11), now=at(11, 59), minutes=60, limit=3) == []
    # After an outage, the newest `limit` windows only.
    assert drift.due_windows(since=at(1), now=at(11, 5), minutes=60, limit=3) == [
        (at(8), at(9)),
        (at(9), at(10)),
        (at(10), at(11)),
    ]
    assert drift.due_windows(since=at(10, 7), now=at(10, 31), minutes=15, limit=3) == [
        (at(10), at(10, 15)),
        (at(10, 15), at(10, 30)),
    ]


def test_the_schedule_starts_at_the_deployment_and_goes_on_from_the_last_report(world: World) -> None:
    made = drift.drift_reports_schedule(now=at(11, 0, 30))
    assert [(r.window_start, r.window_end) for r in made] == [(at(9), at(10)), (at(10), at(11))]
    assert drift.drift_reports_schedule(now=at(11, 1)) == []  # a beat later: nothing new
    later = drift.drift_reports_schedule(now=at(12, 0, 1))
    assert [(r.window_start, r.window_end) for r in later] == [(at(11), at(12))]
    assert all(r.status == "queued" and r.enqueued_at is not None for r in made + later)


@pytest.mark.django_db(transaction=True)
def test_two_beats_racing_make_one_report_per_window(users: Any, tmp_path: Any) -> None:
    world = make_world(users, tmp_path)
    outcomes = race(
        lambda: drift.drift_reports_schedule(now=at(11, 0, 30)),
        lambda: drift.drift_reports_schedule(now=at(11, 0, 30)),
    )
    assert [o.error for o in outcomes] == [None, None]
    windows = sorted((r.window_start, r.window_end) for o in outcomes for r in o.value)
    assert windows == [(at(9), at(10)), (at(10), at(11))]  # each made by one of them
    assert DriftReport.objects.filter(service=world.service).count() == 2


def test_a_shifted_window_drifts_and_opens_the_alert_and_a_calm_one_closes_it(world: World, users: Any) -> None:
    # Ages 25 years older, incomes three times higher: two of three features drift (the share is 0.5).
    write_capture(world.service, at(10, 15), rows(400, seed=2, age_shift=25.0, income_scale=3.0))
    write_capture(world.service, at(10, 40), rows(400, seed=3, age_shift=25.0, income_scale=3.0))
    corrupt = write_corrupt_capture(world.service, at(10, 50))
    # Two windows later, inputs as trained (a file may hold rows up to an hour after its name's time, so the
    # corrupt one would be listed for the next window too).
    write_capture(world.service, at(12, 20), rows(600, seed=4))

    shifted = drift.drift_report_run(report_id=report_for(world, at(10), at(11)).pk)
    assert shifted is not None and shifted.status == "succeeded", shifted and shifted.status_reason
    assert shifted.rows == 800 and shifted.files_read == 2
    assert [item["key"] for item in shifted.unreadable] == [corrupt] and shifted.unreadable[0]["reason"]
    assert shifted.drifted is True and shifted.drifted_share == pytest.approx(2 / 3)
    assert shifted.baseline_id == world.train.pk and shifted.config["share"] == 0.5 and shifted.progress == 1.0
    features = {f.feature: f for f in DriftFeature.objects.filter(report=shifted)}
    assert set(features) == {"age", "income", "plan"}
    assert features["age"].drifted and features["income"].drifted and not features["plan"].drifted
    assert features["age"].current_rows == 800 and features["age"].histogram
    assert [(a, b) for a, b, _ in transitions_of(shifted)] == [("queued", "running"), ("running", "succeeded")]

    alert = Alert.objects.get(service=world.service, name="drift", status="open")
    assert alert.value == pytest.approx(2 / 3) and alert.threshold == 0.5 and alert.drift_report_id == shifted.pk
    assert (alert.window_start, alert.window_end) == (at(10), at(11))
    assert "2 of 3 features drifted" in alert.message
    assert AuditEvent.objects.filter(action="alert.open", object_id=str(alert.pk)).count() == 1
    told = Notification.objects.filter(title__contains="drift alert")
    assert {n.user for n in told} == {users.data_scientist, users.approver}

    calm = drift.drift_report_run(report_id=report_for(world, at(12), at(13)).pk)
    assert calm is not None and calm.drifted is False and calm.rows == 600 and calm.unreadable == []
    alert.refresh_from_db()
    assert alert.status == "closed" and alert.closed_at is not None and "0 of 3 features drifted" in alert.close_reason
    assert AuditEvent.objects.filter(action="alert.close", object_id=str(alert.pk)).count() == 1

    # What the pages read.
    heatmap = drift_selectors.drift_heatmap(world.service, at(9), at(13))
    assert heatmap["times"] == [at(11).isoformat(), at(13).isoformat()]
    assert heatmap["features"][:2] == ["age", "income"] and len(heatmap["thresholds"]) == 3
    age = heatmap["features"].index("age")
    assert heatmap["drifted"][age] == [True, False] and all(s is not None for s in heatmap["scores"][age])
    detail = drift_selectors.drift_report_detail(shifted)
    assert [f.feature for f in detail["features"]][:2] == ["age", "income"] and detail["unreadable"][0][
        "key"
    ] == corrupt
    assert list(drift_selectors.drift_reports(world.service, at(10, 30), at(13))) == [calm, shifted]
    assert list(drift_selectors.drift_reports(world.service, at(11), None)) == [calm]


def test_a_window_without_captured_requests_has_no_verdict_and_leaves_the_alert(world: World) -> None:
    from monitoring.services import alerts

    alerts.alert_raise(world.service, "drift", value=0.8, threshold=0.5, window=(at(8), at(9)), message="drifted")
    empty = drift.drift_report_run(report_id=report_for(world, at(12), at(13)).pk)
    assert empty is not None and empty.status == "succeeded"
    assert empty.rows == 0 and empty.drifted is None and empty.drifted_share is None
    assert "no requests were captured" in empty.status_reason
    assert Alert.objects.get(service=world.service, name="drift").status == "open"
    assert drift_selectors.drift_report_detail(empty)["no_verdict"]


def test_a_model_without_training_data_fails_its_report_with_the_reason(users: Any, world: World) -> None:
    from lineage.models import RunInput

    RunInput.objects.filter(run_id=world.version.run_id).delete()
    failed = drift.drift_report_run(report_id=report_for(world, at(10), at(11)).pk)
    assert failed is not None and failed.status == "failed"
    assert "no baseline" in failed.status_reason and "no 'train' input" in failed.status_reason
    assert transitions_of(failed)[-1][:2] == ("running", "failed")
    assert not Alert.objects.exists()


def test_a_worker_whose_lease_expired_cannot_store_its_result(world: World) -> None:
    write_capture(world.service, at(10, 15), rows(300, seed=5))
    report = report_for(world, at(10), at(11))
    first = drift.DRIFT_MACHINE.claim(report.pk, "run", lease_seconds=60)
    assert first == 1
    # Its worker stopped renewing: the lease runs out and the job runs again, taken over.
    DriftReport.objects.filter(pk=report.pk).update(claimed_at=at(0))
    done = drift.drift_report_run(report_id=report.pk)
    assert done is not None and done.status == "succeeded" and done.attempt == 2 and done.rows == 300
    assert transitions_of(done)[1] == ("running", "running", TAKEOVER_REASON)

    class Late:  # what the first worker computed, arriving after the takeover
        features: list[Any] = []
        unreadable: list[dict[str, str]] = []
        rows, files_read, share, drifted = 1, 1, 1.0, True

    assert drift._store_result(report.pk, first, Late()) is None
    done.refresh_from_db()
    assert done.rows == 300 and done.drifted is False and done.attempt == 2
    assert DriftFeature.objects.filter(report=done).count() == 3


def test_a_stale_report_is_sent_again(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    from monitoring import tasks_drift

    sent: list[int] = []
    monkeypatch.setattr(tasks_drift.drift_report_run_task, "delay", sent.append)
    lost = DriftReport.objects.create(service=world.service, window_start=at(9), window_end=at(10), enqueued_at=at(0))
    fresh = DriftReport.objects.create(
        service=world.service, window_start=at(10), window_end=at(11), enqueued_at=datetime.now(UTC)
    )
    assert drift.drift_reports_requeue_stale() == 1 and sent == [lost.pk]
    assert fresh.pk not in sent


def test_a_bad_drift_setting_is_named_on_its_field_and_changes_nothing(
    world: World, users: Any, api_client_for
) -> None:
    client = api_client_for(users.admin)
    url = reverse("api-environment-detail", args=["staging"])
    bad = client.patch(url, {"drift_methods": {"numeric": {"method": "ks", "threshold": 5}}}, format="json")
    assert bad.status_code == 400, bad.content
    fields = bad.json()["error"]["fields"]
    assert list(fields) == ["drift_methods"] and "numeric.threshold" in fields["drift_methods"][0]
    share = client.patch(url, {"drift_share": 0}, format="json")
    assert share.status_code == 400 and "drift_share" in share.json()["error"]["fields"]
    window = client.patch(url, {"drift_window_minutes": 0}, format="json")
    assert window.status_code == 400 and "drift_window_minutes" in window.json()["error"]["fields"]
    world.environment.refresh_from_db()
    assert world.environment.drift_methods == {} and world.environment.drift_share == 0.5

    # The browser form says the same on its field.
    from tests.deployments.test_environment_pages import form_data
    from tests.fixtures.page_html import parse

    browser = api_client_for(users.admin)
    page = browser.post(
        reverse("environment-detail", args=["staging"]),
        form_data(gates="", drift_methods='{"categorical": {"method": "psi", "threshold": -1}}'),
    )
    assert page.status_code == 400
    shown = [p.text() for p in parse(page.content).find_all("p", data_field="drift_methods")]
    assert len(shown) == 1 and shown[0].startswith("categorical.threshold: "), shown
    world.environment.refresh_from_db()
    assert world.environment.drift_methods == {}

    good = {"drift_methods": {"numeric": {"method": "ks", "threshold": 0.01}}, "drift_share": 0.3}
    changed = client.patch(url, good, format="json")
    assert changed.status_code == 200, changed.content
    assert changed.json()["drift_methods"] == good["drift_methods"] and changed.json()["drift_share"] == 0.3
    event = AuditEvent.objects.filter(action="environment.change").latest("id")
    assert event.after == {"drift_methods": good["drift_methods"], "drift_share": 0.3}
    shown = parse(browser.get(reverse("environment-detail", args=["staging"])).content)
    assert (
        shown.find(data_testid="environment-monitoring")
        .text()
        .startswith(
            "captures 10% of requests · drift judged every 60 min; inputs drifted when 30% of features drift · "
            "numeric: ks at 0.01"
        )
    )


def test_retrain_opens_the_launch_form_on_the_newest_data_filled_in_as_the_serving_version_was_trained(
    world: World, users: Any, client: Any, tmp_path: Any
) -> None:
    same = drift_selectors.retrain_target(world.service)
    assert same is not None and not same.newer and same.train == world.train
    assert "still the newest version" in same.message

    newer = profiled_version(users.data_scientist, world.project, training_csv(tmp_path / "newer.csv", seed=9))
    assert newer.dataset_id == world.train.dataset_id and newer.number == 2
    target = drift_selectors.retrain_target(world.service)
    assert target is not None and target.newer and target.train == newer
    assert drift_selectors.retrain_url(world.service) == target.url

    client.force_login(users.data_scientist)
    page = client.get(target.url)
    assert page.status_code == 200
    form = page.context["form"]
    assert page.context["train"] == newer
    assert form["recipe"].value() == "logistic_regression" and form["target"].value() == "churned"
    assert form["hp_C"].value() == "0.5" and form["hp_max_iter"].value() == "300"
    assert form["hp_class_weight"].value() == "balanced" and str(form["seed"].value()) == "7"
    assert form["model_name"].value() == "churn-model" and form["backend"].value() == "local"
    html = page.content.decode()
    assert '<option value="balanced" selected>' in html and '<option value="churned" selected>' in html


def test_beat_sends_the_drift_and_objective_tasks_to_a_queue_the_workers_consume(settings: Any) -> None:
    from controlplane.celery import app

    app.loader.import_default_modules()
    for entry in ("drift-reports-schedule", "drift-reports-requeue-stale", "objectives-evaluate"):
        name = settings.CELERY_BEAT_SCHEDULE[entry]["task"]
        assert name in app.tasks, name
        assert app.amqp.router.route({}, name)["queue"].name == "sync"
    assert "monitoring.tasks_drift.drift_report_run" in app.tasks


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_real_worker_runs_the_reports_beat_makes(users: Any, tmp_path: Any, celery_worker: Any) -> None:
    world = make_world(users, tmp_path)
    write_capture(world.service, at(10, 15), rows(300, seed=6, age_shift=25.0, income_scale=3.0))
    made = drift.drift_reports_schedule(now=at(11, 0, 30))
    assert len(made) == 2
    try:
        wait_for(
            lambda: DriftReport.objects.filter(service=world.service, status="succeeded").count() == 2,
            timeout=60,
            what="the worker to run both reports",
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{celery_worker.log()[-4000:]}") from None
    shifted = DriftReport.objects.get(service=world.service, window_end=at(11))
    assert shifted.drifted is True and shifted.rows == 300
    assert Alert.objects.get(service=world.service, name="drift").status == "open"


def test_the_schedule_reports_each_serving_revision_and_a_bake_report_judges_the_new_one(
    world: World, users: Any, settings: Any
) -> None:
    from deployments import objectives
    from deployments.models import Deployment
    from tests.deployments.conftest import make_model_version

    settings.DEPLOYMENT_SIGNALS = "metrics"
    # The serving version records no training data; the canary's version is the one trained on world.train.
    old = world.deployment
    bare = make_model_version(world.project, users.data_scientist, model="churn-model")
    Deployment.objects.filter(pk=old.pk).update(model_version=bare, objectives={"drift_share": 0.3})
    new = Deployment.objects.create(
        service=world.service,
        model_version=world.version,
        status=Deployment.Status.BAKING,
        reason="canary",
        initiated_by=users.approver,
        revision="r-canary",
        replaces=old,
        objectives={"drift_share": 0.3},
        bake_minutes=10,
        started_at=at(10),
        baking_at=at(10, 5),
    )
    old_label, new_label = f"d{old.pk}", f"d{new.pk}"
    write_capture(world.service, at(10, 6), rows(300, seed=7, age_shift=25.0, income_scale=3.0), revision=new_label)
    write_capture(world.service, at(10, 6), rows(300, seed=8), revision=old_label)

    # Mid-bake: the serving revision's clock-aligned window, and the canary's report over its bake so far.
    made = drift.drift_reports_schedule(now=at(10, 9, 30))
    assert [(r.revision, r.window_start, r.window_end) for r in made] == [
        (old_label, at(9), at(10)),
        (new_label, at(10, 5), at(10, 9)),
    ]
    bake = drift.drift_report_run(report_id=made[1].pk)
    assert bake is not None and bake.status == "succeeded" and bake.rows == 300 and bake.drifted is True
    assert bake.baseline_id == world.train.pk  # the canary's model's training data, not the serving one's
    status = objectives.objective_status(world.service, new.revision, (at(10, 5), at(10, 9, 30)))
    drift_share = {r.name: r for r in status.results}["drift_share"]
    assert drift_share.value == pytest.approx(2 / 3) and drift_share.breached
    assert not Alert.objects.exists()  # the canary's verdict is the bake's, not the serving revision's alert

    # The next window: both revisions served, each report reads its own captures against its own model.
    later = drift.drift_reports_schedule(now=at(11, 0, 30))
    assert {(r.revision, r.window_start, r.window_end) for r in later} == {
        (new_label, at(10), at(11)),
        (old_label, at(10), at(11)),
        (new_label, at(10, 5), at(10, 15)),  # the bake's last report: the whole bake, however long it lasts
    }
    by_label = {r.revision: drift.drift_report_run(report_id=r.pk) for r in later if r.window_start == at(10)}
    canary = by_label[new_label]
    assert canary is not None and canary.rows == 300 and canary.drifted
    served = by_label[old_label]
    assert served is not None and served.status == "failed" and "no baseline" in served.status_reason


def test_a_worker_whose_lease_expired_cannot_fail_the_report_taken_over(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    from monitoring import tasks_drift
    from workers.stats import capture

    write_capture(world.service, at(10, 15), rows(300, seed=5))
    report = report_for(world, at(10), at(11))

    def taken_over_then_crash(*args: Any, **kwargs: Any) -> Any:
        # While worker A (attempt 1) reads, its lease runs out and worker B takes the report over; then A crashes.
        DriftReport.objects.filter(pk=report.pk).update(claimed_at=at(0))
        assert drift.DRIFT_MACHINE.claim(report.pk, "run", lease_seconds=60) == 2
        raise RuntimeError("A's unexpected error")

    monkeypatch.setattr(capture, "drift_from_capture", taken_over_then_crash)
    outcome = tasks_drift.drift_report_run_task.apply(args=[report.pk])
    assert isinstance(outcome.result, RuntimeError)
    report.refresh_from_db()
    assert report.status == "running" and report.attempt == 2
    # Without an attempt (raised before any claim), only a report no worker holds is failed.
    assert drift.drift_report_fail(report_id=report.pk, error="lost", attempt=None) is None
    assert drift.drift_report_fail(report_id=report.pk, error="A again", attempt=1) is None
    monkeypatch.undo()
    assert drift._store_result(report.pk, 2, drift_result(world, report)) is not None
    report.refresh_from_db()
    assert report.status == "succeeded" and report.rows == 300
    queued = report_for(world, at(11), at(12))
    failed = drift.drift_report_fail(report_id=queued.pk, error="lost", attempt=None)
    assert failed is not None and failed.status == "failed"


def drift_result(world: World, report: DriftReport) -> Any:
    from controlplane.backends import object_store
    from workers.stats.capture import capture_keys, drift_from_capture

    profile = drift.drift_baseline(world.version)[1] or {}
    keys = capture_keys(
        object_store(), world.service.name, report.window_start, report.window_end, revision=report.revision
    )
    config = drift.drift_config(world.environment)
    return drift_from_capture(
        profile, object_store(), keys, start=report.window_start, end=report.window_end, config=config
    )


def test_a_report_whose_workers_keep_dying_fails_instead_of_being_taken_over_again(world: World, settings: Any) -> None:
    settings.DRIFT_MAX_ATTEMPTS = 2
    report = report_for(world, at(10), at(11))
    for attempt in (1, 2):  # each worker dies reading (an OOM kill): its lease runs out
        assert drift.DRIFT_MACHINE.claim(report.pk, "run", lease_seconds=60) == attempt
        DriftReport.objects.filter(pk=report.pk).update(claimed_at=at(0))
    failed = drift.drift_report_run(report_id=report.pk)
    assert failed is not None and failed.status == "failed" and failed.attempt == 3
    assert "gave up: 2 workers" in failed.status_reason
    assert drift.drift_report_run(report_id=report.pk) is None  # nothing takes it again


@pytest.mark.django_db(transaction=True)
def test_two_windows_finishing_together_leave_the_alert_as_the_newest_verdict_says(
    users: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    from monitoring.services import alerts
    from workers.stats import capture

    world = make_world(users, tmp_path)
    write_capture(world.service, at(10, 15), rows(300, seed=2, age_shift=25.0, income_scale=3.0))
    write_capture(world.service, at(12, 15), rows(300, seed=4))
    drifted, calm = report_for(world, at(10), at(11)), report_for(world, at(12), at(13))
    alerts.alert_raise(world.service, "drift", value=0.9, threshold=0.5, window=(at(8), at(9)), message="old")
    # The interleaving that loses: the older, drifted window decides to raise before the newer, calm one is
    # stored; the calm one then resolves, and the raise lands after. Under the Service lock the calm one waits.
    decided, resolved = threading.Event(), threading.Event()
    raise_alert, resolve_alert, read = alerts.alert_raise, alerts.alert_resolve, capture.drift_from_capture

    def raising(*args: Any, **kwargs: Any) -> Any:
        decided.set()
        resolved.wait(1.0)  # never set while the lock holds the calm window back
        return raise_alert(*args, **kwargs)

    def resolving(*args: Any, **kwargs: Any) -> Any:
        try:
            return resolve_alert(*args, **kwargs)
        finally:
            resolved.set()

    def reading(*args: Any, **kwargs: Any) -> Any:
        if kwargs["start"] == at(12):
            decided.wait(10.0)
        return read(*args, **kwargs)

    monkeypatch.setattr(alerts, "alert_raise", raising)
    monkeypatch.setattr(alerts, "alert_resolve", resolving)
    monkeypatch.setattr(capture, "drift_from_capture", reading)
    outcomes = race(
        lambda: drift.drift_report_run(report_id=drifted.pk),
        lambda: drift.drift_report_run(report_id=calm.pk),
    )
    assert [o.error for o in outcomes] == [None, None]
    assert [o.value.drifted for o in outcomes] == [True, False]
    assert not Alert.objects.filter(service=world.service, name="drift", status="open").exists()


def test_a_verdict_is_stored_with_its_alert_or_not_at_all(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    from monitoring.services import alerts

    write_capture(world.service, at(10, 15), rows(300, seed=2, age_shift=25.0, income_scale=3.0))
    report = report_for(world, at(10), at(11))

    def crash(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("the process died here")

    monkeypatch.setattr(alerts, "alert_raise", crash)
    with pytest.raises(RuntimeError):
        drift.drift_report_run(report_id=report.pk)
    report.refresh_from_db()
    assert report.status == "running" and report.drifted is None  # retried later, alert and all
