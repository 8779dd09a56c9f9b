"""Writes of cost: syncs (the bill from Cost Explorer, estimates from measured usage), the monthly roll-up, forecasts,
budgets and their crossings.

A sync is a stateful object (SYNC_MACHINE): requested (by the beat or by finance), claimed by one worker under a
lease, slow I/O (Cost Explorer, the serving backends) outside any transaction, then its rows written in one
transaction that first checks the worker still holds the lease. Rows are replaced, never added to: a re-pull of a
day replaces that day's bill; an estimate is recomputed from what it measures (a serving estimate keeps the most
seconds ever seen for its day, since a backend forgets processes that stopped long ago).
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from statistics import NormalDist
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, connection, transaction
from django.db.models import Q, Sum
from django.urls import reverse
from django.utils import timezone

from controlplane import access, permissions
from controlplane.services import audit_record, notify
from controlplane.transitions import LostLease, StateMachine, transitions
from monitoring.costs import selectors
from monitoring.costs.money import usd
from monitoring.costs.selectors import ZERO, month_start, next_month
from monitoring.models import Budget, BudgetCrossing, CostBillDay, CostForecast, CostMonth, CostRecord, CostSync
from workers.costs.base import Forecast
from workers.errors import BackendError

log = logging.getLogger(__name__)

SYNC_MACHINE = StateMachine(
    model=CostSync,
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
AMOUNT_PLACES = Decimal("0.000001")


def lease_seconds() -> float:
    return float(settings.COST_SYNC_LEASE_SECONDS)


def cost_explorer_enabled() -> bool:
    return bool(settings.COST_EXPLORER_ENABLED)


def cost_source() -> Any:
    from workers.costs.cost_explorer import CostExplorerSource

    return CostExplorerSource(region=settings.AWS_REGION, endpoint_url=settings.AWS_ENDPOINT_URL)


def _today() -> date:
    return timezone.now().astimezone(UTC).date()


# --- requesting and running a sync ----------------------------------------------------------------------------


def cost_sync_request(
    *, source: str, actor: Any = None, start: date | None = None, end: date | None = None
) -> CostSync:
    """Ask for a sync of `source` over [start, end) (default: the trailing window the settings name). A sync of that
    source already queued or running is returned instead (one at a time per source)."""
    if actor is not None:
        permissions.require(actor, "cost.sync")
    if source not in CostSync.Source.values:
        raise ValidationError({"source": [f"must be one of {', '.join(CostSync.Source.values)}, not {source!r}"]})
    if source == CostSync.Source.COST_EXPLORER and not cost_explorer_enabled():
        raise ValidationError(
            {"source": ["Cost Explorer is not configured here (COST_EXPLORER_ENABLED): costs are estimates"]}
        )
    today = _today()
    trailing = settings.COST_EXPLORER_TRAILING_DAYS if source == "cost_explorer" else settings.COST_ESTIMATE_DAYS
    end = end or today + timedelta(days=1)
    start = start or end - timedelta(days=trailing)
    if end <= start:
        raise ValidationError({"end": [f"must be after the start ({start.isoformat()})"]})
    active = CostSync.objects.filter(source=source, status__in=["queued", "running"]).first()
    if active is not None:
        return active
    if source == CostSync.Source.COST_EXPLORER and actor is not None:
        # Each Cost Explorer call is billed, and the bill changes a few times a day at most.
        last = (
            CostSync.objects.filter(source=source, status="succeeded", finished_at__isnull=False)
            .order_by("-finished_at")
            .values_list("finished_at", flat=True)
            .first()
        )
        wait = timedelta(seconds=settings.COST_EXPLORER_MIN_INTERVAL_SECONDS)
        if last is not None and timezone.now() - last < wait:
            again = (last + wait).astimezone(UTC).strftime("%H:%M UTC")
            raise ValidationError(
                {
                    "source": [
                        f"the bill was read at {last.astimezone(UTC):%H:%M UTC}; Cost Explorer bills every call, "
                        f"so it can be read again from {again}"
                    ]
                }
            )
    try:
        with transaction.atomic():
            sync = CostSync.objects.create(
                source=source, start=start, end=end, requested_by=actor if actor is not None else None
            )
            if actor is not None:
                audit_record(
                    actor=actor,
                    action="cost.sync.request",
                    object_type="cost_sync",
                    object_id=sync.pk,
                    object_repr=f"{source} sync {start}..{end}",
                    after={"source": source, "start": start.isoformat(), "end": end.isoformat()},
                )
            _enqueue(sync.pk)
    except IntegrityError:
        found = CostSync.objects.filter(source=source, status__in=["queued", "running"]).first()
        if found is None:
            raise
        return found
    return sync


def _enqueue(sync_id: int) -> None:
    from monitoring.costs import tasks

    CostSync.objects.filter(pk=sync_id).update(enqueued_at=timezone.now())
    transaction.on_commit(lambda: tasks.cost_sync_task.delay(sync_id), robust=True)


def cost_sync_run(*, sync_id: int) -> CostSync | None:
    """Do one sync, alone; None when another worker has it or it already ended."""
    attempt = SYNC_MACHINE.claim(sync_id, "run", lease_seconds=lease_seconds(), reason="sync started")
    if attempt is None:
        return None
    sync = CostSync.objects.get(pk=sync_id)
    try:
        if sync.source == CostSync.Source.COST_EXPLORER:
            _sync_bill(sync, attempt)
        else:
            _sync_estimates(sync, attempt)
    except LostLease:
        log.info("cost sync %s: attempt %s lost its lease; the new holder finishes it", sync_id, attempt)
        return None
    except Exception as exc:
        from controlplane.transitions import INFRASTRUCTURE_ERRORS

        if isinstance(exc, INFRASTRUCTURE_ERRORS) or (isinstance(exc, BackendError) and not exc.permanent):
            SYNC_MACHINE.release(sync_id, attempt)
            raise
        log.exception("cost sync %s failed", sync_id)
        return SYNC_MACHINE.apply(
            sync_id, "fail", attempt=attempt, quiet=True, reason=str(exc)[:2000], status_reason=str(exc)[:2000]
        )
    return CostSync.objects.get(pk=sync_id)


def cost_syncs_schedule(*, source: str) -> CostSync | None:
    """The beat's periodic sync; nothing when Cost Explorer is not configured (its beat entry is then idle)."""
    if source == CostSync.Source.COST_EXPLORER and not cost_explorer_enabled():
        return None
    return cost_sync_request(source=source)


def cost_syncs_requeue_stale() -> int:
    """Send again the syncs whose message was lost (queued, not sent for a lease) or whose worker died (running,
    lease expired): the next claim takes them over."""
    cutoff = timezone.now() - timedelta(seconds=lease_seconds())
    stale = CostSync.objects.filter(
        Q(status="queued", enqueued_at__lt=cutoff)
        | Q(status="queued", enqueued_at__isnull=True)
        | Q(status="running", claimed_at__lt=cutoff)
    )
    count = 0
    for sync_id in stale.values_list("pk", flat=True):
        with transaction.atomic():
            _enqueue(sync_id)
        count += 1
    return count


def cost_sync_fail(*, sync_id: int, reason: str) -> CostSync | None:
    """End a sync whose task gave up (retries exhausted), unless another worker holds it now (its lease is live):
    that one ends it."""
    live = timezone.now() - timedelta(seconds=lease_seconds())
    if CostSync.objects.filter(pk=sync_id, status="running", claimed_at__gte=live).exists():
        return None
    return SYNC_MACHINE.apply(sync_id, "fail", quiet=True, reason=reason, status_reason=reason)


def _step(sync: CostSync, attempt: int, message: str, **progress: Any) -> None:
    """Say what the sync is doing (the page shows it), renewing the lease; LostLease when another worker has it."""
    steps = list((sync.progress or {}).get("steps", []))
    steps.append({"at": timezone.now().isoformat(), "message": message})
    sync.progress = {**(sync.progress or {}), **progress, "steps": steps[-20:]}
    if not CostSync.objects.filter(pk=sync.pk, attempt=attempt).update(
        progress=sync.progress, claimed_at=timezone.now()
    ):
        raise LostLease(f"cost sync {sync.pk}: attempt {attempt} was taken over")


def _finish(sync: CostSync, attempt: int, *, calls: int, rows: int, message: str) -> None:
    SYNC_MACHINE.apply(sync.pk, "succeed", attempt=attempt, reason=message, calls=calls, rows=rows)


def _locked(sync: CostSync, attempt: int) -> None:
    """Inside the writing transaction: the worker still holds the sync (its row locked until commit)."""
    if not CostSync.objects.select_for_update().filter(pk=sync.pk, attempt=attempt, status="running").exists():
        raise LostLease(f"cost sync {sync.pk}: attempt {attempt} was taken over")


# --- the bill ---------------------------------------------------------------------------------------------------


# The widest a dimension column is (CostRecord): a longer tag value (AWS allows 256) is cut and told apart by a hash.
_DIMENSION_LENGTHS = {
    field.name: field.max_length
    for field in CostRecord._meta.get_fields()
    if field.name in ("aws_service", "project", "model", "environment", "run", "deployment")
}


def fit_dimension(name: str, value: str) -> str:
    """`value` as the column `name` can hold it: cut, with 8 hex of its sha256, when too long (two long values stay
    apart)."""
    limit = int(_DIMENSION_LENGTHS[name] or 0)
    if len(value) <= limit:
        return value
    import hashlib

    log.warning("cost tag %s is %s characters long; kept as its first %s and a hash", name, len(value), limit - 9)
    return f"{value[: limit - 9]}~{hashlib.sha256(value.encode()).hexdigest()[:8]}"


def _sync_bill(sync: CostSync, attempt: int) -> None:
    source = cost_source()
    _step(sync, attempt, f"asking Cost Explorer for {sync.start}..{sync.end}")
    # Renew the lease while Cost Explorer answers: a takeover would pay for the same pull again.
    with SYNC_MACHINE.holding(sync.pk, attempt, every=max(lease_seconds() / 3, 1.0)):
        pull = source.daily_costs(sync.start, sync.end)
    calls = pull.calls
    _step(sync, attempt, f"{len(pull.lines)} lines over {len(pull.days)} days in {calls} calls", calls=calls)
    today = _today()
    # Only whole days count as the bill: today's figures are partial, and its aws estimates stand until tomorrow.
    days = sorted({day for day in pull.days if day < today})
    keyed: dict[tuple[Any, ...], Decimal] = defaultdict(lambda: ZERO)
    currencies: dict[tuple[Any, ...], str] = {}
    for line in pull.lines:
        if line.day >= today:
            continue
        dims = {
            name: fit_dimension(name, getattr(line, name))
            for name in ("aws_service", "project", "model", "environment", "run", "deployment")
        }
        key = (line.day, line.breakdown, *dims.values())
        keyed[key] += Decimal(line.amount)
        currencies[key] = line.currency or "USD"
    months = sorted({month_start(day) for day in days})
    now = timezone.now()
    with transaction.atomic():
        _locked(sync, attempt)
        # The trailing window is read again in full: its days' bill is replaced, never added to.
        CostRecord.objects.filter(source=CostRecord.Source.COST_EXPLORER, day__in=days).delete()
        CostRecord.objects.bulk_create(
            [
                CostRecord(
                    day=day,
                    source=CostRecord.Source.COST_EXPLORER,
                    breakdown=breakdown,
                    aws_service=aws_service,
                    project=project,
                    model=model,
                    environment=environment,
                    run=run,
                    deployment=deployment,
                    backend="aws",
                    amount=amount.quantize(AMOUNT_PLACES),
                    currency=currencies[key],
                )
                for key, amount in keyed.items()
                for (day, breakdown, aws_service, project, model, environment, run, deployment) in [key]
            ],
            batch_size=1000,
        )
        # The days the bill now holds, in the same transaction as their rows: never both a day's bill and its aws
        # estimates counted, nor neither.
        for day in days:
            CostBillDay.objects.update_or_create(day=day, defaults={"sync": sync, "synced_at": now})
        _supersede(days)
        rollup_months(months)
        _finish(sync, attempt, calls=calls, rows=len(keyed), message=f"{len(keyed)} rows over {len(days)} days")
    forecast_calls = forecasts_update(source_name=CostRecord.Source.COST_EXPLORER, source=source)
    CostSync.objects.filter(pk=sync.pk).update(calls=calls + forecast_calls)
    log.info(
        "cost explorer sync %s: %s calls (%s for usage, %s for forecasts), %s rows, %s days",
        sync.pk,
        calls + forecast_calls,
        calls,
        forecast_calls,
        len(keyed),
        len(days),
    )
    budgets_check()


def _supersede(days: list[date]) -> None:
    """Estimates of runs and deployments whose own bill arrived for that day give way to it (kept, marked)."""
    billed = CostRecord.objects.filter(
        source=CostRecord.Source.COST_EXPLORER, breakdown=CostRecord.Breakdown.OBJECT, day__in=days
    )
    runs = set(billed.exclude(run="").values_list("day", "run"))
    deployments = set(billed.exclude(deployment="").values_list("day", "deployment"))
    estimates = CostRecord.objects.filter(source=CostRecord.Source.ESTIMATE, day__in=days, backend="aws")
    flips: dict[bool, list[int]] = {True: [], False: []}
    for pk, day, run, deployment, superseded in estimates.values_list("pk", "day", "run", "deployment", "superseded"):
        replaced = (day, run) in runs or (day, deployment) in deployments
        if replaced != superseded:
            flips[replaced].append(pk)
    for replaced, pks in flips.items():
        if pks:
            CostRecord.objects.filter(pk__in=pks).update(superseded=replaced)


# --- estimates --------------------------------------------------------------------------------------------------


@dataclass
class Estimate:
    day: date
    aws_service: str
    project: str
    model: str
    environment: str
    run: str
    deployment: str
    backend: str
    amount: Decimal
    usage: dict[str, Any] = field(default_factory=dict)
    # A serving estimate keeps the most seconds ever seen for its day; a run's is recomputed from its usage.
    keep_most: bool = False

    @property
    def key(self) -> tuple[Any, ...]:
        return (self.day, self.aws_service, self.project, self.model, self.environment, self.run, self.deployment)


def _day_bounds(day: date) -> tuple[datetime, datetime]:
    start = datetime.combine(day, time(), tzinfo=UTC)
    return start, start + timedelta(days=1)


def split_by_day(start: datetime, end: datetime, lo: date, hi: date) -> list[tuple[date, float]]:
    """Seconds of [start, end) in each UTC day of [lo, hi)."""
    out = []
    day = max(lo, start.astimezone(UTC).date())
    while day < hi:
        day_start, day_end = _day_bounds(day)
        if day_start >= end:
            break
        seconds = (min(end, day_end) - max(start, day_start)).total_seconds()
        if seconds > 0:
            out.append((day, seconds))
        day += timedelta(days=1)
    return out


def run_estimates(start: date, end: date, *, now: datetime | None = None) -> list[Estimate]:
    """Each run's cost over the days [start, end): a finished run's measured cost (lineage.services.costs), spread
    over its wall time by day; a SageMaker run still running, its instances' hours so far."""
    from lineage.models import Run

    now = now or timezone.now()
    lo, hi = _day_bounds(start)[0], _day_bounds(end - timedelta(days=1))[1]
    runs = (
        Run.objects.filter(started_at__isnull=False, started_at__lt=hi)
        .filter(Q(finished_at__isnull=True) | Q(finished_at__gte=lo))
        .select_related("project")
    )
    out = []
    for run in runs:
        assert run.started_at is not None
        finished = run.finished_at or now
        aws = run.backend == "sagemaker"
        if run.finished_at is not None:
            measured = _measured_total(run)
            if measured is None:
                continue
            total = measured
        elif aws:
            price = settings.TRAINING_INSTANCE_PRICES.get(run.instance_type)
            if price is None:
                continue
            hours = Decimal(str((now - run.started_at).total_seconds() / 3600))
            total = hours * Decimal(str(price)) * run.instance_count
        else:
            continue  # a local run's CPU time is measured when it ends
        wall = max((finished - run.started_at).total_seconds(), 1.0)
        for day, seconds in split_by_day(
            run.started_at, max(finished, run.started_at + timedelta(seconds=1)), start, end
        ):
            share = Decimal(str(seconds / wall))
            out.append(
                Estimate(
                    day=day,
                    aws_service=settings.AWS_SERVICE_TRAINING if aws else settings.LOCAL_SERVICE_TRAINING,
                    project=run.project.slug,
                    model=run.output_name if run.kind == Run.Kind.TRAINING else "",
                    environment="",
                    run=str(run.pk),
                    deployment="",
                    backend="aws" if aws else "local",
                    amount=total * share,
                    usage={
                        "kind": "run",
                        "seconds": round(seconds, 3),
                        "instance_type": run.instance_type,
                        "instance_count": run.instance_count,
                        "usage": {k: v for k, v in (run.usage or {}).items() if isinstance(v, int | float)},
                        "finished": run.finished_at is not None,
                    },
                )
            )
    return out


def _measured_total(run: Any) -> Decimal | None:
    """A finished run's cost from its measured usage at full precision, else Run.cost."""
    from lineage.services.costs import measured_cost

    measured = measured_cost(run, run.usage, places=None)
    if measured is not None:
        return measured
    return Decimal(run.cost) if run.cost is not None else None


def serving_price(cpu: int, memory: int) -> Decimal:
    """What one task (or the local process standing for it) costs per hour: vCPUs and GB at Fargate's prices."""
    return Decimal(str(cpu / 1024 * settings.FARGATE_VCPU_HOUR_PRICE + memory / 1024 * settings.FARGATE_GB_HOUR_PRICE))


def serving_estimates(start: date, end: date, *, now: datetime | None = None) -> tuple[list[Estimate], list[str]]:
    """Each deployment's serving cost per day over [start, end), from the uptime of its processes or tasks as the
    service's backend reports them; and the services whose backend could not be asked (said, not fatal)."""
    from deployments.models import Deployment, Service
    from deployments.services.deploys import service_spec, serving_backend
    from workers.errors import BackendError

    now = now or timezone.now()
    since = _day_bounds(start)[0]
    services = (
        Service.objects.filter(deployments__started_at__isnull=False)
        .distinct()
        .select_related("registered_model__project", "environment")
    )
    # (day, deployment) -> process -> [seconds that day, cpu units, MiB]
    seen: dict[tuple[date, int], dict[str, list[float]]] = defaultdict(dict)
    problems = []
    owners: dict[int, Service] = {}
    for service in services:
        try:
            spans = serving_backend(service.backend).usage(service_spec(service), since=since)
        except (BackendError, OSError) as exc:
            problems.append(f"{service.name}: {exc}")
            continue
        for span in spans:
            label = span.revision
            if not (label.startswith("d") and label[1:].isdigit()):
                continue
            deployment_id = int(label[1:])
            owners[deployment_id] = service
            ended = min(span.ended_at or now, now)
            for day, secs in split_by_day(span.started_at, ended, start, end):
                process = seen[(day, deployment_id)].setdefault(span.process, [0.0, span.cpu, span.memory])
                process[0] += secs
    known = set(Deployment.objects.filter(pk__in=owners).values_list("pk", flat=True))
    out = []
    for (day, deployment_id), processes in seen.items():
        if deployment_id not in known:
            continue
        service = owners[deployment_id]
        usage, amount = serving_usage(processes)
        out.append(
            Estimate(
                day=day,
                aws_service=settings.AWS_SERVICE_SERVING
                if service.backend == "aws"
                else settings.LOCAL_SERVICE_SERVING,
                project=service.registered_model.project.slug,
                model=service.registered_model.slug,
                environment=service.environment.name,
                run="",
                deployment=str(deployment_id),
                backend="aws" if service.backend == "aws" else "local",
                amount=amount,
                usage=usage,
                keep_most=True,
            )
        )
    return out, problems


def serving_usage(processes: dict[str, list[float]]) -> tuple[dict[str, Any], Decimal]:
    """One day of a deployment's processes or tasks (name -> [seconds, cpu units, MiB]): its usage record and its
    cost at Fargate's vCPU-hour and GB-hour prices."""
    vcpu = sum(secs * cpu / 1024 for secs, cpu, _ in processes.values())
    gb = sum(secs * memory / 1024 for secs, _, memory in processes.values())
    usage = {
        "kind": "serving",
        "task_seconds": round(sum(secs for secs, _, _ in processes.values()), 3),
        "vcpu_seconds": round(vcpu, 3),
        "gb_seconds": round(gb, 3),
        "processes": {name: [round(secs, 3), cpu, memory] for name, (secs, cpu, memory) in processes.items()},
    }
    amount = Decimal(str(vcpu / 3600 * settings.FARGATE_VCPU_HOUR_PRICE + gb / 3600 * settings.FARGATE_GB_HOUR_PRICE))
    return usage, amount


def _merged_serving(row: CostRecord, estimate: Estimate) -> tuple[dict[str, Any], Decimal]:
    """A serving day seen again: each process keeps the most seconds either look saw (a backend forgets processes
    that stopped long ago; a process it still knows has only grown)."""
    processes = {name: list(values) for name, values in (row.usage or {}).get("processes", {}).items()}
    for name, values in estimate.usage.get("processes", {}).items():
        if name not in processes or values[0] > processes[name][0]:
            processes[name] = list(values)
    return serving_usage(processes)


def _sync_estimates(sync: CostSync, attempt: int) -> None:
    _step(sync, attempt, f"estimating runs over {sync.start}..{sync.end}")
    estimates = run_estimates(sync.start, sync.end)
    _step(sync, attempt, f"{len(estimates)} run-days; asking the serving backends for uptime")
    serving, problems = serving_estimates(sync.start, sync.end)
    estimates += serving
    if problems:
        _step(sync, attempt, "some services could not be asked: " + "; ".join(problems)[:1500])
    message = f"{len(estimates)} estimate rows ({len(serving)} serving-days)"
    if problems:
        message += f"; {len(problems)} service(s) not asked"
    window = selectors.days_between(sync.start, sync.end)
    months = {month_start(e.day) for e in estimates} | {month_start(day) for day in window}
    # The rows, what the bill already replaced among them, the roll-up and the outcome: one transaction.
    with transaction.atomic():
        written = estimates_store(estimates, start=sync.start, end=sync.end, holder=(sync, attempt), all_runs=True)
        _supersede(window)
        rollup_months(months)
        _finish(sync, attempt, calls=0, rows=written, message=message)
    forecasts_update(source_name=CostRecord.Source.ESTIMATE)
    budgets_check()


def estimates_store(
    estimates: Iterable[Estimate],
    *,
    start: date,
    end: date,
    holder: tuple[CostSync, int] | None = None,
    all_runs: bool = False,
) -> int:
    """Upsert the estimates of [start, end): a run's replaces its row; a serving one keeps the most seconds seen.
    With `all_runs` (the estimates hold every run of the window, as a sync makes them), run estimates of the window
    that no longer apply (a run whose cost is gone) are removed."""
    wanted = {e.key: e for e in estimates}
    with transaction.atomic():
        if holder is not None:
            _locked(*holder)
        existing = {
            (r.day, r.aws_service, r.project, r.model, r.environment, r.run, r.deployment): r
            for r in CostRecord.objects.select_for_update().filter(
                source=CostRecord.Source.ESTIMATE, day__gte=start, day__lt=end
            )
        }
        create = []
        for key, estimate in wanted.items():
            amount = estimate.amount.quantize(AMOUNT_PLACES)
            row = existing.get(key)
            if row is None:
                create.append(
                    CostRecord(
                        day=estimate.day,
                        source=CostRecord.Source.ESTIMATE,
                        breakdown=CostRecord.Breakdown.FULL,
                        aws_service=estimate.aws_service,
                        project=estimate.project,
                        model=estimate.model,
                        environment=estimate.environment,
                        run=estimate.run,
                        deployment=estimate.deployment,
                        backend=estimate.backend,
                        amount=amount,
                        usage=estimate.usage,
                    )
                )
                continue
            usage = estimate.usage
            if estimate.keep_most:
                usage, merged = _merged_serving(row, estimate)
                amount = merged.quantize(AMOUNT_PLACES)
            if row.amount != amount or row.usage != usage:
                CostRecord.objects.filter(pk=row.pk).update(amount=amount, usage=usage, backend=estimate.backend)
        stale = [
            row.pk
            for key, row in existing.items()
            if all_runs and key not in wanted and row.run and row.usage.get("kind") == "run"
        ]
        if stale:
            CostRecord.objects.filter(pk__in=stale).delete()
        CostRecord.objects.bulk_create(create, batch_size=1000)
    return len(wanted)


# --- the monthly roll-up ----------------------------------------------------------------------------------------


def rollup_months(months: Iterable[date]) -> None:
    """Rebuild the roll-up of each month from the records the dashboard counts (selectors.counted), one month at a
    time under that month's lock, reading inside it: two syncs rebuilding one month take turns, each from what is
    committed (or written in the caller's transaction) when its turn comes."""
    for month in sorted({month_start(m) for m in months}):
        end = next_month(month)
        with transaction.atomic():
            _lock_month(month)
            CostMonth.objects.filter(month=month).delete()
            rows = []
            # The model family keeps the project too (an estimate knows it; the bill's model breakdown has ""), so
            # a monthly view by model or environment leaves out a project the reader may not see.
            families = (("project", ("aws_service", "project")), ("model", ("model", "environment", "project")))
            for family, columns in families:
                grouped = (
                    selectors.counted_records(family, start=month, end=end)
                    .values("source", *columns)
                    .annotate(total=Sum("amount"))
                    .order_by()
                )
                for row in grouped:
                    rows.append(
                        CostMonth(
                            month=month,
                            family=family,
                            source=row["source"],
                            amount=row["total"],
                            **{column: row[column] for column in columns},
                        )
                    )
            CostMonth.objects.bulk_create(rows, batch_size=1000)


def _lock_month(month: date) -> None:
    """Hold the month's roll-up until the transaction ends: a PostgreSQL advisory lock; SQLite lets one writer in at
    a time, and the DELETE that follows makes this transaction that writer before it reads."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [_ROLLUP_LOCK, month.toordinal()])


_ROLLUP_LOCK = 0x636F7374  # "cost": the first key of the month locks, apart from any other advisory lock


# --- forecasts --------------------------------------------------------------------------------------------------


def forecasts_update(*, source_name: str, source: Any = None, month: date | None = None) -> int:
    """The forecast of the rest of the month, for everything and each project with a budget; returns the billed
    calls made (the bill's forecast costs a Cost Explorer call each)."""
    today = _today()
    month = month_start(month or today)
    scopes = [""] + sorted(Budget.objects.filter(project__isnull=False).values_list("project__slug", flat=True))
    calls = 0
    for project in scopes:
        # Spend of the month's whole days before today; the forecast covers today on (today is not over yet, and
        # counting its spend so far and forecasting it too would count it twice).
        before = selectors.counted_records("project", start=month, end=max(today, month))
        if project:
            before = before.filter(project=project)
        actual = before.aggregate(total=Sum("amount"))["total"] or ZERO
        if source_name == CostRecord.Source.COST_EXPLORER:
            try:
                result = source.forecast(today, next_month(month), level=settings.COST_FORECAST_LEVEL, project=project)
            except BackendError as exc:
                # The bill is in; only its forecast failed: the page says why, the next sync tries again.
                log.warning("cost explorer forecast of %s failed: %s", project or "everything", exc)
                calls += 1
                result = Forecast(start=today, end=next_month(month), available=False, reason=f"Cost Explorer: {exc}")
            calls += result.calls
            fields = {
                "available": result.available,
                "reason": result.reason,
                "mean": result.mean,
                "low": result.low,
                "high": result.high,
                "level": result.level,
                "points": [
                    {"day": p.day.isoformat(), "mean": str(p.mean), "low": str(p.low), "high": str(p.high)}
                    for p in result.points
                ],
            }
        else:
            fields = estimate_forecast(month, project=project, today=today)
        CostForecast.objects.update_or_create(
            month=month,
            project=project,
            source=source_name,
            defaults={**fields, "actual": actual, "computed_at": timezone.now()},
        )
    return calls


def estimate_forecast(month: date, *, project: str = "", today: date | None = None) -> dict[str, Any]:
    """The rest of the month from the daily spend of the last COST_FORECAST_HISTORY_DAYS days: each remaining day
    the mean daily spend, the band ± z·σ·√n at COST_FORECAST_LEVEL. Too few days with data: no forecast, and why."""
    today = today or _today()
    level = int(settings.COST_FORECAST_LEVEL)
    history_start = today - timedelta(days=settings.COST_FORECAST_HISTORY_DAYS)
    rows = selectors.counted_records("project", start=history_start, end=today)
    if project:
        rows = rows.filter(project=project)
    daily = {day: total for day, total in rows.values("day").annotate(total=Sum("amount")).values_list("day", "total")}
    needed = int(settings.COST_FORECAST_MIN_DAYS)
    first = min(daily) if daily else None
    if first is None or (today - first).days < needed:
        seen = (today - first).days if first else 0
        return {
            "available": False,
            "reason": f"not enough history yet: {seen} day(s) of spend before today, {needed} needed",
            "mean": None,
            "low": None,
            "high": None,
            "level": level,
            "points": [],
        }
    span = (today - first).days
    values = [float(daily.get(first + timedelta(days=i), 0)) for i in range(span)]
    mean = sum(values) / span
    sigma = math.sqrt(sum((v - mean) ** 2 for v in values) / max(span - 1, 1))
    z = NormalDist().inv_cdf((1 + level / 100) / 2)
    points = []
    remaining = 0
    day = today
    end = next_month(month)
    while day < end:
        remaining += 1
        points.append(
            {
                "day": day.isoformat(),
                "mean": str(round(mean, 6)),
                "low": str(round(max(mean - z * sigma, 0.0), 6)),
                "high": str(round(mean + z * sigma, 6)),
            }
        )
        day += timedelta(days=1)
    total = mean * remaining
    band = z * sigma * math.sqrt(remaining)
    return {
        "available": True,
        "reason": "",
        "mean": Decimal(str(round(total, 6))),
        "low": Decimal(str(round(max(total - band, 0.0), 6))),
        "high": Decimal(str(round(total + band, 6))),
        "level": level,
        "points": points,
    }


# --- budgets ----------------------------------------------------------------------------------------------------

MAX_THRESHOLDS = 10


def _budget_state(budget: Budget) -> dict[str, Any]:
    return {
        "project": budget.project.slug if budget.project else None,
        "amount": str(budget.amount),
        "thresholds": list(budget.thresholds),
        "alert_on_forecast": budget.alert_on_forecast,
    }


def budget_problems(amount: Any, thresholds: Any) -> tuple[dict[str, list[str]], Decimal | None, list[int]]:
    problems: dict[str, list[str]] = {}
    value: Decimal | None = None
    try:
        value = Decimal(str(amount))
        if not value.is_finite():
            raise InvalidOperation
    except (InvalidOperation, ValueError, TypeError):
        problems["amount"] = [f"must be a number of USD per month, not {amount!r}"]
        value = None
    if value is not None:
        if value <= 0:
            problems["amount"] = ["must be more than 0 (USD per month)"]
        elif value >= Decimal("1e12"):
            problems["amount"] = ["must be less than 1,000,000,000,000 USD"]
        elif value < Decimal("0.01"):
            problems["amount"] = ["must be at least 0.01 USD: budgets are kept in cents"]
        elif value != value.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP):
            # Kept in cents: say so rather than round what the user typed.
            problems["amount"] = [f"must be in whole cents (at most 2 decimals), not {amount}"]
        else:
            value = value.quantize(Decimal("0.01"))
    cleaned: list[int] = []
    if isinstance(thresholds, str):
        thresholds = [part for part in thresholds.replace(" ", "").split(",") if part]
    if not isinstance(thresholds, list | tuple):
        problems["thresholds"] = ["must be a list of percents, e.g. 80, 100"]
        return problems, value, cleaned
    for item in thresholds:
        try:
            percent = int(str(item).rstrip("%"))
        except ValueError:
            problems.setdefault("thresholds", []).append(f"{item!r} is not a whole percent")
            continue
        if not 1 <= percent <= 1000:
            problems.setdefault("thresholds", []).append(f"{percent}% is outside 1-1000%")
            continue
        cleaned.append(percent)
    if len(thresholds) > MAX_THRESHOLDS:
        problems.setdefault("thresholds", []).append(f"at most {MAX_THRESHOLDS} thresholds")
    return problems, value, sorted(set(cleaned))


def budget_save(
    *,
    actor: Any,
    project: Any = None,
    amount: Any,
    thresholds: Any = (80, 100),
    alert_on_forecast: bool = True,
) -> Budget:
    """Set the monthly budget of `project` (None: overall), creating or changing it; audited."""
    permissions.require(actor, "budget.manage")
    _require_costs_of(actor, project)
    problems, value, cleaned = budget_problems(amount, thresholds)
    if problems:
        raise ValidationError(problems)
    assert value is not None
    with transaction.atomic():
        # Only the budget's row: Budget's ordering (and the project beside it) join the nullable project, which
        # PostgreSQL will not lock ("FOR UPDATE cannot be applied to the nullable side of an outer join").
        budget = Budget.objects.select_for_update(of=("self",)).filter(project=project).first()
        before = _budget_state(budget) if budget else None
        if budget is None:
            try:
                with transaction.atomic():
                    budget = Budget.objects.create(
                        project=project,
                        amount=value,
                        thresholds=cleaned,
                        alert_on_forecast=alert_on_forecast,
                        created_by=actor,
                    )
            except IntegrityError:
                budget = Budget.objects.select_for_update(of=("self",)).get(project=project)
                before = _budget_state(budget)
        if before is not None:
            budget.amount = value
            budget.thresholds = cleaned
            budget.alert_on_forecast = alert_on_forecast
            budget.save(update_fields=["amount", "thresholds", "alert_on_forecast", "updated_at"])
        audit_record(
            actor=actor,
            action="budget.create" if before is None else "budget.change",
            object_type="budget",
            object_id=budget.pk,
            object_repr=f"budget of {project or 'everything'}",
            before=before,
            after=_budget_state(budget),
            project=project,
        )
    transaction.on_commit(lambda: _check_later(), robust=True)
    return budget


def _require_costs_of(actor: Any, project: Any) -> None:
    """A restricted project's budget is managed by whoever sees its costs (its members, finance, admins): not by
    `permissions.require(project=)`, which admits only members and admins, and would shut finance out."""
    if not access.can_see(actor, project, label="monitoring.Budget"):
        raise PermissionDenied(f"project {getattr(project, 'slug', project)!r} is restricted to its members")


def _check_later() -> None:
    from monitoring.costs import tasks

    tasks.budgets_check_task.delay()


def budget_delete(*, actor: Any, budget_id: Any) -> str:
    """Delete a budget (audited); returns what it was, e.g. "the budget of Churn (100.00 USD a month)"."""
    permissions.require(actor, "budget.manage")
    with transaction.atomic():
        budget = Budget.objects.select_for_update(of=("self",)).select_related("project").filter(pk=budget_id).first()
        if budget is None:
            raise ValidationError({"budget": [f"no budget {budget_id}"]})
        _require_costs_of(actor, budget.project)
        before = _budget_state(budget)
        pk = budget.pk
        budget.delete()
        audit_record(
            actor=actor,
            action="budget.delete",
            object_type="budget",
            object_id=pk,
            object_repr=f"budget of {budget.project or 'everything'}",
            before=before,
            project=budget.project,
        )
    return f"the budget of {budget.project or 'everything'} ({budget.amount:.2f} USD a month)"


def _crossing_kinds(budget: Budget, spend: Decimal, forecast_total: Decimal | None) -> list[str]:
    kinds = [str(t) for t in budget.thresholds if spend >= budget.amount * Decimal(t) / 100]
    if budget.alert_on_forecast and forecast_total is not None and forecast_total > budget.amount:
        kinds.append("forecast")
    return kinds


def budgets_check(*, month: date | None = None) -> list[BudgetCrossing]:
    """Open a crossing for each threshold a budget's month has gone over (once: the crossing row is unique per
    budget, month and threshold), telling the project's owner and finance; close the month's crossings the spend
    fell back under, and last months' ones. Returns the crossings opened."""
    from controlplane.models import Project  # noqa: F401  (the budget's project, loaded with it)

    month = month_start(month or _today())
    opened = []
    for budget in Budget.objects.select_related("project", "project__created_by"):
        slug = budget.project.slug if budget.project else None
        spend, _ = selectors.month_spend(month, project=slug)
        forecast = selectors.forecast_for(month, project=slug or "")
        forecast_total = (
            Decimal(forecast.actual) + Decimal(forecast.mean)
            if forecast is not None and forecast.available and forecast.mean is not None
            else None
        )
        kinds = _crossing_kinds(budget, spend, forecast_total)
        for kind in kinds:
            crossing = _open_crossing(budget, month, kind, spend, forecast_total)
            if crossing is not None:
                opened.append(crossing)
        fell_back = BudgetCrossing.objects.filter(budget=budget, month=month, status="open").exclude(kind__in=kinds)
        for crossing in fell_back:
            _close_crossing(crossing, f"the month's spend is back under it ({usd(spend)})")
    for crossing in BudgetCrossing.objects.filter(status="open", month__lt=month):
        _close_crossing(crossing, "the month ended")
    return opened


def _crossing_message(budget: Budget, kind: str, spend: Decimal, forecast_total: Decimal | None) -> str:
    scope = f"Project {budget.project.name}" if budget.project else "Everything (the overall budget)"
    if kind == "forecast":
        return (
            f"{scope}: this month's forecast is {usd(forecast_total)}, over the budget of {usd(budget.amount)} "
            f"(spent so far: {usd(spend)})."
        )
    return (
        f"{scope}: {usd(spend)} spent this month, over {kind}% of the budget of {usd(budget.amount)} "
        f"({spend / budget.amount * 100:.0f}% used)."
    )


def _open_crossing(
    budget: Budget, month: date, kind: str, spend: Decimal, forecast_total: Decimal | None
) -> BudgetCrossing | None:
    message = _crossing_message(budget, kind, spend, forecast_total)
    try:
        with transaction.atomic():
            crossing = BudgetCrossing.objects.create(
                budget=budget,
                month=month,
                kind=kind,
                spend=spend,
                forecast=forecast_total,
                budget_amount=budget.amount,
                message=message,
            )
            audit_record(
                actor=None,
                action="budget.cross",
                object_type="budget",
                object_id=budget.pk,
                object_repr=f"budget of {budget.project or 'everything'}",
                after={"month": month.isoformat(), "kind": kind, "spend": str(spend)},
                reason=message,
                project=budget.project,
            )
            notify(
                users=_budget_audience(budget),
                title=f"Budget {'forecast' if kind == 'forecast' else kind + '%'}: "
                f"{budget.project.name if budget.project else 'everything'}",
                body=message,
                url=reverse("cost-dashboard"),
            )
    except IntegrityError:
        # Crossed before this month: told then, not again. If it closed since (the spend fell back under it), it is
        # open again, so the home pages show it while the spend is over.
        with transaction.atomic():
            reopened = BudgetCrossing.objects.filter(budget=budget, month=month, kind=kind, status="closed").update(
                status="open", closed_at=None, spend=spend, forecast=forecast_total, message=message
            )
            if reopened:
                audit_record(
                    actor=None,
                    action="budget.cross.reopen",
                    object_type="budget",
                    object_id=budget.pk,
                    object_repr=f"budget of {budget.project or 'everything'}",
                    after={"month": month.isoformat(), "kind": kind, "spend": str(spend)},
                    reason=message,
                    project=budget.project,
                )
        return None
    return crossing


def _close_crossing(crossing: BudgetCrossing, reason: str) -> None:
    BudgetCrossing.objects.filter(pk=crossing.pk, status="open").update(
        status="closed", closed_at=timezone.now(), message=f"{crossing.message} Closed: {reason}."
    )


def _budget_audience(budget: Budget) -> list[Any]:
    from django.contrib.auth import get_user_model

    users = list(get_user_model().objects.filter(groups__name=permissions.FINANCE, is_active=True))
    if budget.project is not None and access.can_see(
        budget.project.created_by, budget.project, label="monitoring.Budget"
    ):
        users.append(budget.project.created_by)
    return users
