"""The drift job: each service's captured requests, one clock-aligned window at a time, against the profile of the
data its model was trained on.

Beat calls `drift_reports_schedule` every minute: it makes one DriftReport per window that has ended since the
service's last one (the database keeps one per window, so beats that race make one) and enqueues its run. A worker
runs `drift_report_run`: it claims the report under a lease, reads the capture files outside any transaction
(renewing the lease meanwhile) with the statistics core in workers/stats, and stores the verdict under the row lock
only while it still holds the lease. A drifted verdict opens the service's "drift" alert; a later verdict that is
not drifted closes it. A window with no captured requests has no verdict and changes no alert.

Each report is of one revision (`revision`, the serving processes' label, monitoring.selectors.revision_label): the
capture files under that revision's prefix, against the training data of that revision's model. A clock-aligned
window gets a report for each revision that served in it (during a canary, the new one and the one it replaces).
The bake judges the new revision's latest report whose window ended inside the bake, which a window of an hour seldom
does; so while a deploy with a drift objective bakes, beat also makes bake reports of its revision, each from the
start of the bake to the newest of BAKE_REPORTS equal steps of it that has ended (cumulative: the newest covers the
bake so far, at most BAKE_REPORTS per deploy). Only the verdicts of the revision serving all traffic move the alert.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, is_dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Max, Q
from django.utils import timezone

from controlplane.backends import object_store
from controlplane.transitions import StateMachine, transitions
from deployments.models import Deployment, Environment, Service
from lineage.models import DatasetProfile, DatasetVersion, ModelVersion, RunInput
from lineage.services.datasets import throttled_progress
from monitoring import tasks_drift as tasks
from monitoring.models import DriftFeature, DriftReport
from workers.errors import BackendError

log = logging.getLogger(__name__)

DRIFT_MACHINE = StateMachine(
    model=DriftReport,
    table=transitions(
        {
            "run": ({"queued"}, "running"),
            "succeed": ({"running"}, "succeeded"),
            "fail": ({"queued", "running"}, "failed"),
        }
    ),
    terminal=frozenset({"succeeded", "failed"}),
    timestamps={"running": "started_at"},
)

NO_ROWS_NOTE = "no requests were captured in this window: no verdict"
DRIFT_ALERT = "drift"
# A baking deployment's bake reports: one per this share of its bake (each from the start of the bake).
BAKE_REPORTS = 5


def lease_seconds() -> float:
    return float(settings.DRIFT_LEASE_SECONDS)


# --- scheduling ---------------------------------------------------------------------------------------------------


def _floor(moment: datetime, step: timedelta) -> datetime:
    """The start of the clock-aligned step `moment` falls in (steps count from the Unix epoch, UTC)."""
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    return epoch + ((moment - epoch) // step) * step


def due_windows(*, since: datetime, now: datetime, minutes: int, limit: int) -> list[tuple[datetime, datetime]]:
    """The clock-aligned windows of `minutes` that ended after `since` and by `now`, oldest first; the newest
    `limit` of them when more are due (after an outage, old windows are not worth a job each)."""
    step = timedelta(minutes=max(int(minutes), 1))
    last_end = _floor(now, step)
    first_end = _floor(since, step) + step
    if first_end > last_end:
        return []
    count = min(int((last_end - first_end) / step) + 1, limit)
    return [(last_end - (count - i) * step, last_end - (count - i - 1) * step) for i in range(count)]


def _since(service: Service, now: datetime, step: timedelta) -> datetime:
    """Where the next window may start: the last report's end (a bake report ends before the next clock-aligned
    window does, so it moves nothing), else the current deployment's finish (its first
    window), else one window ago."""
    last = DriftReport.objects.filter(service=service).aggregate(end=Max("window_end"))["end"]
    if last is not None:
        return last  # type: ignore[no-any-return]
    deployment = service.current_deployment
    finished = getattr(deployment, "finished_at", None)
    return finished if finished is not None else now - step  # type: ignore[no-any-return]


def serving_labels(service: Service, start: datetime, end: datetime) -> list[str]:
    """The revision labels (monitoring.selectors.revision_label) that took traffic in [start, end): the current
    deployment's, and each deployment's that served some of the window (it took traffic before `end` and had not
    finished before `start`) with the one it replaced (which served beside it while it baked)."""
    from monitoring.selectors import revision_label

    labels: list[str] = []

    def add(deployment: Deployment | None) -> None:
        if deployment is not None and (label := revision_label(deployment)) not in labels:
            labels.append(label)

    add(service.current_deployment)
    overlapping = (
        Deployment.objects.filter(service=service, baking_at__isnull=False, baking_at__lt=end)
        .filter(Q(finished_at__isnull=True) | Q(finished_at__gte=start))
        .select_related("replaces")
        .order_by("baking_at", "id")
    )
    for deployment in overlapping:
        add(deployment)
        add(deployment.replaces)
    return labels


def _make_report(service_id: int, revision: str, start: datetime, end: datetime, now: datetime) -> DriftReport | None:
    """The report of (revision, window), enqueued on commit; None when a racing beat made it first."""
    try:
        with transaction.atomic():
            report = DriftReport.objects.create(
                service_id=service_id, revision=revision, window_start=start, window_end=end, enqueued_at=now
            )
            transaction.on_commit(lambda pk=report.pk: tasks.drift_report_run_task.delay(pk), robust=True)
    except IntegrityError:
        return None
    return report


def bake_window(deployment: Deployment, now: datetime) -> tuple[datetime, datetime] | None:
    """The bake report's window for a baking deployment at `now`: from the moment it started baking to the newest
    of BAKE_REPORTS equal steps of its bake (at least a minute each) that has ended, at most the whole bake; None
    before the first step ends."""
    if deployment.baking_at is None:
        return None
    step = timedelta(minutes=max(float(deployment.bake_minutes) / BAKE_REPORTS, 1.0))
    steps = min(int((now - deployment.baking_at) / step), BAKE_REPORTS)
    return None if steps < 1 else (deployment.baking_at, deployment.baking_at + steps * step)


def drift_reports_schedule(*, now: datetime | None = None) -> list[DriftReport]:
    """Beat: for every service that serves something, a report per serving revision (`serving_labels`) for each
    window that has ended since its last one; and for each deployment baking under a drift objective, a bake report
    of the new revision from the start of its bake to the newest step ended (`bake_window`), so the bake is judged
    on a report whose window ends inside it (the clock-aligned windows are too long for that). Each is run by a
    worker. Returns the reports this call made (a racing call makes the others)."""
    from monitoring.selectors import revision_label

    now = now or timezone.now()
    made: list[DriftReport] = []
    services = Service.objects.filter(current_deployment__isnull=False).select_related(
        "environment", "current_deployment"
    )
    for service in services:
        minutes = int(service.environment.drift_window_minutes)
        step = timedelta(minutes=max(minutes, 1))
        windows = due_windows(
            since=_since(service, now, step), now=now, minutes=minutes, limit=settings.DRIFT_WINDOWS_CATCH_UP
        )
        for start, end in windows:
            for label in serving_labels(service, start, end):
                if (report := _make_report(service.pk, label, start, end, now)) is not None:
                    made.append(report)
    baking = Deployment.objects.filter(status=Deployment.Status.BAKING, kind=Deployment.Kind.DEPLOY)
    for deployment in baking:
        window = bake_window(deployment, now)
        if window is None or "drift_share" not in (deployment.objectives or {}):
            continue
        if (report := _make_report(deployment.service_id, revision_label(deployment), *window, now)) is not None:
            made.append(report)
    return made


def drift_reports_requeue_stale(*, now: datetime | None = None) -> int:
    """Beat: send again a report whose message seems lost (still queued a lease after it was sent) or whose worker
    died (running, its lease expired). The task claims the report, so a duplicate does nothing."""
    now = now or timezone.now()
    lease = timedelta(seconds=lease_seconds())
    expired = Q(claimed_at__lt=now - lease) | Q(claimed_at__isnull=True)
    lost = Q(status="queued") | Q(status="running") & expired
    stale = list(
        DriftReport.objects.filter(lost)
        .filter(Q(enqueued_at__lt=now - lease) | Q(enqueued_at__isnull=True))
        .values_list("pk", flat=True)[:100]
    )
    for report_id in stale:
        DriftReport.objects.filter(pk=report_id).update(enqueued_at=now)
        tasks.drift_report_run_task.delay(report_id)
    return len(stale)


# --- the baseline and the configuration ---------------------------------------------------------------------------


def training_dataset_version(model_version: ModelVersion) -> DatasetVersion | None:
    """The dataset version the model version was trained on: its run's "train" input."""
    found = (
        RunInput.objects.filter(run_id=model_version.run_id, channel="train")
        .select_related("dataset_version__dataset__project")
        .order_by("pk")
        .first()
    )
    return found.dataset_version if found is not None else None


def drift_baseline(model_version: ModelVersion) -> tuple[DatasetVersion | None, dict[str, Any] | None, str]:
    """(the training dataset version, its ready profile, "") or what is missing, as the report's reason."""
    version = training_dataset_version(model_version)
    if version is None:
        return (
            None,
            None,
            (
                f"no baseline: {model_version} records no training data (its run {model_version.run_id} has no "
                "'train' input), so there is nothing to compare its requests with"
            ),
        )
    profile = DatasetProfile.objects.filter(version=version).first()
    if profile is None or profile.status != DatasetProfile.Status.READY or not profile.profile:
        state = "no profile" if profile is None else f"its profile is {profile.status}"
        if profile is not None and profile.error:
            state += f" ({profile.error})"
        return version, None, f"no baseline: the training data {version} has {state}, not a ready profile"
    return version, dict(profile.profile), ""


def model_features(model_version: ModelVersion) -> list[str] | None:
    """The columns the model takes (its input schema), so the training data's target is not compared; None (every
    baseline column) when the version records no schema."""
    names = [str(column["name"]) for column in model_version.input_schema or [] if isinstance(column, dict)]
    return names or None


def drift_config(environment: Environment) -> dict[str, Any]:
    """What the environment asks of the drift job, kept with the report: its methods and thresholds (per kind, per
    feature; empty keeps the core's defaults) and the share of drifted features that makes the inputs drifted."""
    return {**dict(environment.drift_methods or {}), "share": float(environment.drift_share)}


def drift_config_problems(config: dict[str, Any]) -> dict[str, str]:
    """The core's own check of a configuration: {field: message}, empty when it is valid."""
    from workers.stats.drift import validate_drift_config

    return dict(validate_drift_config(config))


# --- running a report ---------------------------------------------------------------------------------------------


def _plain(item: Any) -> dict[str, Any]:
    if is_dataclass(item) and not isinstance(item, type):
        return asdict(item)
    return dict(item)


def _finite(value: Any) -> float | None:
    """A number the database and JSON both take: NaN and infinities become None."""
    if value is None or isinstance(value, bool):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _json_safe(value: Any) -> Any:
    if isinstance(value, float):
        return _finite(value)
    if isinstance(value, dict):
        return {str(key): _json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(item) for item in value]
    if hasattr(value, "tolist"):  # a NumPy array or scalar
        return _json_safe(value.tolist())
    return value


def _feature_rows(report_id: int, features: list[Any]) -> list[DriftFeature]:
    rows = []
    for item in features:
        values = _plain(item)
        rows.append(
            DriftFeature(
                report_id=report_id,
                feature=str(values["feature"])[:300],
                kind=str(values.get("kind") or "")[:20],
                method=str(values.get("method") or "")[:30],
                statistic=_finite(values.get("statistic")),
                p_value=_finite(values.get("p_value")),
                score=_finite(values.get("score")),
                # No verdict (a feature not in the baseline): no method, so no threshold either.
                threshold=_finite(values.get("threshold")) or 0.0,
                drifted=bool(values.get("drifted")),
                baseline_rows=int(values.get("baseline_rows") or 0),
                current_rows=int(values.get("current_rows") or 0),
                histogram=_json_safe(values.get("histogram") or {}),
                note=str(values.get("note") or ""),
            )
        )
    return rows


def _fail(report_id: int, reason: str, *, attempt: int | None, **fields: Any) -> DriftReport | None:
    return DRIFT_MACHINE.apply(
        report_id, "fail", attempt=attempt, quiet=True, reason=reason, status_reason=reason, **fields
    )


def report_deployment(report: DriftReport) -> Deployment | None:
    """The deployment whose model served the report's revision (its label names it: `d<id>`, the deploy that first
    started that backend revision), so a report compares the captures with the training data of the model that
    answered them, whatever serves when it runs. A report without a revision: the current deployment."""
    label = report.revision
    if label.startswith("d") and label[1:].isdigit():
        return (
            Deployment.objects.filter(service_id=report.service_id, pk=int(label[1:]))
            .select_related("model_version")
            .first()
        )
    return report.service.current_deployment


def _takeovers(report_id: int) -> int:
    from controlplane.models import TransitionEvent
    from controlplane.transitions import TAKEOVER_REASON

    return TransitionEvent.objects.filter(
        object_type="monitoring.driftreport", object_id=str(report_id), reason=TAKEOVER_REASON
    ).count()


def drift_report_run(*, report_id: int) -> DriftReport | None:
    """Worker side: run one report. Claimed by one worker (a duplicate message returns quietly, None); a worker whose
    lease expired meanwhile cannot store its result over the one that took the report over. A report whose workers
    died DRIFT_MAX_ATTEMPTS times (taken over that often: a capture file that kills the worker) fails instead of
    running again. An exception raised after the claim carries `drift_attempt`, the attempt it was raised in, so the
    task fails only that attempt."""
    attempt = DRIFT_MACHINE.claim(report_id, "run", lease_seconds=lease_seconds(), progress=0.0)
    if attempt is None:
        log.info("drift report %s: another worker got there first, or it is done", report_id)
        return None
    try:
        return _run(report_id, attempt)
    except BaseException as exc:
        exc.drift_attempt = attempt  # type: ignore[attr-defined]
        raise


def _run(report_id: int, attempt: int) -> DriftReport | None:
    from workers.stats.capture import capture_keys, drift_from_capture

    lost = _takeovers(report_id)
    if lost >= int(settings.DRIFT_MAX_ATTEMPTS):
        return _fail(
            report_id,
            f"gave up: {lost} workers running this report stopped without finishing (lease expired, taken over); "
            "a capture file in its window may make the worker crash",
            attempt=attempt,
        )
    report = DriftReport.objects.select_related("service__environment", "service__current_deployment").get(pk=report_id)
    service = report.service
    deployment = report_deployment(report)
    if deployment is None:
        return _fail(report_id, "the service serves no model: nothing to compare with", attempt=attempt)
    baseline, profile, problem = drift_baseline(deployment.model_version)
    config = drift_config(service.environment)
    if problem:
        return _fail(report_id, problem, attempt=attempt, baseline=baseline, config=config)
    problems = drift_config_problems(config)
    if problems:
        reason = "the environment's drift settings are not valid: " + "; ".join(
            f"{name}: {message}" for name, message in sorted(problems.items())
        )
        return _fail(report_id, reason, attempt=attempt, baseline=baseline, config=config)
    DriftReport.objects.filter(pk=report_id, attempt=attempt).update(baseline=baseline, config=config)

    def progress(fraction: float) -> None:
        DriftReport.objects.filter(pk=report_id, attempt=attempt).update(progress=round(min(fraction, 1.0), 3))

    store = object_store()
    try:
        # Slow I/O, outside any transaction and lock; the lease is renewed meanwhile.
        with DRIFT_MACHINE.holding(report_id, attempt, every=max(lease_seconds() / 3, 1.0)):
            keys = capture_keys(
                store, service.name, report.window_start, report.window_end, revision=report.revision or None
            )
            result = drift_from_capture(
                profile or {},
                store,
                list(keys),
                start=report.window_start,
                end=report.window_end,
                config=config,
                progress=throttled_progress(progress),
                features=model_features(deployment.model_version),
            )
    except BackendError as exc:
        if not exc.permanent:
            DRIFT_MACHINE.release(report_id, attempt)  # the task retries and takes it again at once
            raise
        return _fail(report_id, f"reading the capture files failed: {exc}", attempt=attempt)
    except BaseException:
        DRIFT_MACHINE.release(report_id, attempt)
        raise
    return _store_result(report_id, attempt, result)


def _store_result(report_id: int, attempt: int, result: Any) -> DriftReport | None:
    features = list(result.features)
    rows = int(result.rows)
    verdict = None if rows == 0 else result.drifted
    share = None if rows == 0 else result.share
    unreadable = [_plain(item) for item in (result.unreadable or [])]
    note = NO_ROWS_NOTE if rows == 0 else ""
    if unreadable:
        note = "; ".join(filter(None, [note, f"{len(unreadable)} capture file(s) could not be read and were skipped"]))

    def write_features(report: DriftReport) -> dict[str, Any]:
        DriftFeature.objects.filter(report_id=report_id).delete()  # none, unless an earlier store was cut short
        DriftFeature.objects.bulk_create(_feature_rows(report_id, features))
        return {}

    service_id = DriftReport.objects.values_list("service_id", flat=True).get(pk=report_id)
    with transaction.atomic():
        # The verdict and its alert follow-up commit together (a crash between them loses neither), one report of
        # the service at a time: under the Service row's lock, the newest verdict is the one the alert shows.
        Service.objects.select_for_update().filter(pk=service_id).values_list("pk", flat=True).get()
        done = DRIFT_MACHINE.apply(
            report_id,
            "succeed",
            attempt=attempt,
            quiet=True,
            under_lock=write_features,
            reason=note or ("drifted" if verdict else "not drifted"),
            status_reason=note,
            rows=rows,
            files_read=int(result.files_read),
            unreadable=unreadable,
            feature_count=len(features),
            drifted_count=sum(1 for item in features if _plain(item).get("drifted")),
            drifted_share=None if share is None else float(share),
            drifted=None if verdict is None else bool(verdict),
            progress=1.0,
        )
        if done is not None and done.drifted is not None:
            drift_alert_follow(done)
    if done is None:
        log.info("drift report %s: attempt %s lost its lease; the result is the other worker's", report_id, attempt)
    return done  # type: ignore[no-any-return]


def drift_alert_follow(report: DriftReport) -> None:
    """Open (or refresh) the service's drift alert on a drifted verdict; close it on one that is not drifted. Call it
    in the transaction that stored the verdict, with the Service row locked. Only the newest verdict of the revision
    serving all traffic counts: a report of an older window finishing late, or of another revision (the one a
    canary replaces, a bake's), changes nothing."""
    from monitoring.selectors import revision_label
    from monitoring.services import alerts

    current = Service.objects.select_related("current_deployment").get(pk=report.service_id).current_deployment
    if report.revision and (current is None or revision_label(current) != report.revision):
        return
    newer = (
        DriftReport.objects.filter(
            service_id=report.service_id, revision=report.revision, status="succeeded", drifted__isnull=False
        )
        .filter(Q(window_end__gt=report.window_end) | Q(window_end=report.window_end, pk__gt=report.pk))
        .exists()
    )
    if newer:
        return
    window = (report.window_start, report.window_end)
    span = f"{report.window_start:%Y-%m-%d %H:%M}–{report.window_end:%H:%M} UTC"
    share = report.drifted_share or 0.0
    threshold = float(report.config.get("share", 0.0))
    if report.drifted:
        alerts.alert_raise(
            report.service,
            DRIFT_ALERT,
            value=share,
            threshold=threshold,
            window=window,
            message=(
                f"{report.drifted_count} of {report.feature_count} features drifted ({share:.0%}, at least "
                f"{threshold:.0%} counts) in {span}, against the training data"
            ),
            drift_report=report,
        )
    else:
        alerts.alert_resolve(
            report.service,
            DRIFT_ALERT,
            reason=f"{report.drifted_count} of {report.feature_count} features drifted ({share:.0%}) in {span}",
        )


class _NotQueued(Exception):
    pass


def drift_report_fail(*, report_id: int, error: str, attempt: int | None) -> DriftReport | None:
    """The task gave up on the report (an unexpected error): fail the attempt that raised it, if it still holds the
    report; with no attempt (raised before any claim), only a report no worker has taken yet."""
    if attempt is not None:
        return _fail(report_id, error, attempt=attempt)

    def queued(report: DriftReport) -> dict[str, Any]:
        if report.status != DriftReport.Status.QUEUED:
            raise _NotQueued
        return {}

    try:
        return _fail(report_id, error, attempt=None, under_lock=queued)
    except _NotQueued:
        return None
