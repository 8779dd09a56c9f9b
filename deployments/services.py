"""Writes and transitions for environments and approval requests.

A request moves only through APPROVAL_MACHINE. Its decisions are recorded under the request's row lock, so two
approvers deciding at once, or a decision racing a withdrawal, end in one consistent outcome. When the last approval
needed arrives, a worker checks that the artifact in the store still hashes to the SHA-256 the request recorded,
and only then approves (slow I/O never happens under the lock, nor in a web request).
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from controlplane import permissions
from controlplane.services import audit_record, notify
from controlplane.transitions import StateMachine, default_lease_seconds, transitions, write_transition_event
from deployments import gates as gate_rules
from deployments import selectors, signals, tasks
from deployments.models import ApprovalDecision, ApprovalRequest, Environment, GateResult
from lineage import selectors as lineage_selectors
from lineage.models import ModelVersion
from lineage.services import model_version_artifact_sha256

log = logging.getLogger(__name__)


class Conflict(ValidationError):
    """The request is in a state that forbids this (not open, decided already, a duplicate): HTTP 409."""

    http_status = 409  # read by controlplane.api_support.exception_handler


def _audit_request(
    request: ApprovalRequest,
    *,
    action: str,
    actor: Any,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    reason: str = "",
) -> None:
    audit_record(
        actor=actor,
        action=action,
        object_type="approval_request",
        object_id=request.pk,
        object_repr=str(request),
        before=before,
        after=after,
        reason=reason,
    )


def _write_approval_event(
    request: ApprovalRequest, action: str, previous: str, target: str, actor: Any, reason: str, attempt: int | None
) -> None:
    write_transition_event(request, action, previous, target, actor, reason, attempt)
    _audit_request(
        request,
        action=f"approval_request.{action}",
        actor=actor,
        before={"status": previous},
        after={"status": target},
        reason=reason,
    )


APPROVAL_MACHINE = StateMachine(
    model=ApprovalRequest,
    table=transitions(
        {
            # Made by the worker once the approvals are in and the artifact checked (their permission was checked
            # when each approver decided; a role revoked since must not leave the request stuck half-finished).
            "approve": ({"open"}, "approved"),
            "reject": ({"open"}, "rejected", "approval.decide"),
            # The system refuses approval: the stored artifact no longer matches the recorded SHA-256.
            "refuse": ({"open"}, "rejected"),
            "withdraw": ({"open"}, "withdrawn", "approval.request"),
            "expire": ({"open"}, "expired"),
        }
    ),
    terminal=frozenset({"approved", "rejected", "withdrawn", "expired"}),
    write_event=_write_approval_event,
)

# --- environments ---------------------------------------------------------------------------------------------

ENVIRONMENT_FIELDS = (
    "name",
    "order",
    "description",
    "approvals_required",
    "gates",
    "allow_override",
    "request_ttl_days",
    "bake_minutes",
    "objective_p99_latency_ms",
    "objective_error_rate",
    "objective_drift_share",
    "min_desired_count",
    "max_desired_count",
    "backend_settings",
)
MAX_APPROVALS = 10
# An override of a failed gate is read by the approvers: a word like "urgent" does not say why.
MIN_OVERRIDE_REASON = 20


def _environment_snapshot(environment: Environment) -> dict[str, Any]:
    return {name: getattr(environment, name) for name in ENVIRONMENT_FIELDS}


def _whole(errors: dict[str, list[str]], data: dict[str, Any], name: str, low: int, high: int) -> None:
    if name not in data:
        return
    value = data[name]
    if isinstance(value, bool) or not isinstance(value, int):
        try:
            value = int(str(value).strip())
        except ValueError:
            errors.setdefault(name, []).append(f"expected a whole number from {low} to {high}, got {data[name]!r}")
            return
    if not low <= value <= high:
        errors.setdefault(name, []).append(f"expected a whole number from {low} to {high}, got {value}")
        return
    data[name] = value


def _fraction_or_number(
    errors: dict[str, list[str]], data: dict[str, Any], name: str, *, high: float | None, what: str
) -> None:
    if name not in data:
        return
    value = data[name]
    if value in (None, ""):
        data[name] = None
        return
    try:
        number = float(value) if not isinstance(value, bool) else float("nan")
    except (TypeError, ValueError):
        number = float("nan")
    if number != number or number <= 0 or (high is not None and number > high):
        errors.setdefault(name, []).append(f"expected {what}, or empty for none; got {value!r}")
        return
    data[name] = number


def _clean_environment(data: dict[str, Any], *, instance: Environment | None) -> dict[str, Any]:
    """Validate every field given; a ValidationError names each bad field and what was expected."""
    from controlplane.services import SLUG_RE

    data = {key: value for key, value in data.items() if key in ENVIRONMENT_FIELDS}
    errors: dict[str, list[str]] = {}
    if "name" in data or instance is None:
        name = str(data.get("name") or "").strip()
        if not name:
            errors["name"] = ["required: a short lowercase name such as staging or production"]
        elif len(name) > 40 or not SLUG_RE.fullmatch(name):
            errors["name"] = ["expected lowercase letters, digits and hyphens (at most 40), e.g. production"]
        elif Environment.objects.filter(name=name).exclude(pk=getattr(instance, "pk", None)).exists():
            errors["name"] = [f"an environment named {name!r} exists already"]
        elif instance is not None and name != instance.name:
            gated = [
                other.name
                for other in Environment.objects.exclude(pk=instance.pk)
                if f"approved in {instance.name}" in other.gates
            ]
            if gated:
                errors["name"] = [
                    f"{', '.join(gated)} gate on 'approved in {instance.name}': change those gates before renaming"
                ]
        data["name"] = name
    _whole(errors, data, "order", 0, 1000)
    _whole(errors, data, "approvals_required", 1, MAX_APPROVALS)
    _whole(errors, data, "request_ttl_days", 1, 365)
    _whole(errors, data, "bake_minutes", 0, 1440)
    _whole(errors, data, "min_desired_count", 1, 100)
    _whole(errors, data, "max_desired_count", 1, 100)
    _fraction_or_number(errors, data, "objective_p99_latency_ms", high=None, what="a latency in milliseconds above 0")
    _fraction_or_number(errors, data, "objective_error_rate", high=1.0, what="a fraction above 0 and at most 1")
    _fraction_or_number(errors, data, "objective_drift_share", high=1.0, what="a fraction above 0 and at most 1")
    low = data.get("min_desired_count", getattr(instance, "min_desired_count", 1))
    high = data.get("max_desired_count", getattr(instance, "max_desired_count", 4))
    if "min_desired_count" not in errors and "max_desired_count" not in errors and low > high:
        errors["max_desired_count"] = [f"must be at least the minimum desired count ({low}), got {high}"]
    for name in ("allow_override",):
        if name in data and not isinstance(data[name], bool):
            errors[name] = [f"expected true or false, got {data[name]!r}"]
    if "description" in data:
        data["description"] = str(data["description"] or "")
    if "backend_settings" in data and not isinstance(data["backend_settings"], dict):
        errors["backend_settings"] = ['expected an object, e.g. {"cluster": "ml-prod"}']
    if "gates" in data:
        texts = data["gates"]
        if isinstance(texts, str):
            texts = [line for line in texts.splitlines() if line.strip()]
        if not isinstance(texts, list):
            errors["gates"] = ['expected a list of gate expressions, e.g. ["accuracy >= 0.90"]']
        else:
            parsed, problems = gate_rules.parse_gates(texts)
            own_name = data.get("name") or getattr(instance, "name", "")
            for gate in parsed:
                if gate.kind != "previous_environment":
                    continue
                if gate.environment == own_name:
                    problems.append(f"{gate.expression!r}: an environment cannot require approval in itself first")
                elif not Environment.objects.filter(name=gate.environment).exists():
                    known = ", ".join(Environment.objects.values_list("name", flat=True)) or "none yet"
                    problems.append(f"{gate.expression!r}: there is no environment {gate.environment!r} ({known})")
            if problems:
                errors["gates"] = problems
            else:
                data["gates"] = [gate.expression for gate in parsed]
    if errors:
        raise ValidationError(errors)
    return data


def environment_create(*, actor: Any, data: dict[str, Any]) -> Environment:
    permissions.require(actor, "environment.manage")
    cleaned = _clean_environment(dict(data), instance=None)
    try:
        with transaction.atomic():
            environment = Environment.objects.create(created_by=actor, **cleaned)
            audit_record(
                actor=actor,
                action="environment.create",
                object_type="environment",
                object_id=environment.pk,
                object_repr=environment.name,
                after=_environment_snapshot(environment),
            )
    except IntegrityError:
        raise ValidationError({"name": [f"an environment named {cleaned['name']!r} exists already"]}) from None
    return environment


def environment_update(*, actor: Any, environment_id: int, data: dict[str, Any]) -> Environment:
    """Change the fields given; audited with before and after. Open requests keep the rules they were made under."""
    permissions.require(actor, "environment.manage")
    try:
        with transaction.atomic():
            environment = Environment.objects.select_for_update().get(pk=environment_id)
            cleaned = _clean_environment(dict(data), instance=environment)
            before = _environment_snapshot(environment)
            for name, value in cleaned.items():
                setattr(environment, name, value)
            after = _environment_snapshot(environment)
            changed = [name for name in ENVIRONMENT_FIELDS if before[name] != after[name]]
            if not changed:
                return environment
            environment.save(update_fields=[*changed, "updated_at"])
            audit_record(
                actor=actor,
                action="environment.change",
                object_type="environment",
                object_id=environment.pk,
                object_repr=environment.name,
                before={name: before[name] for name in changed},
                after={name: after[name] for name in changed},
            )
    except IntegrityError:
        raise ValidationError({"name": ["an environment with that name exists already"]}) from None
    return environment


# --- approval requests ----------------------------------------------------------------------------------------


def _candidate(version: ModelVersion) -> gate_rules.Candidate:
    return gate_rules.Candidate(
        label=str(version),
        metrics=version.metrics or {},
        input_schema=version.input_schema or [],
        approved_in=frozenset(selectors.approved_environment_names(model_version=version)),
    )


def _baseline(version: ModelVersion | None) -> gate_rules.Baseline | None:
    if version is None:
        return None
    return gate_rules.Baseline(label=str(version), metrics=version.metrics or {}, input_schema=version.input_schema)


def approval_request_create(
    *,
    actor: Any,
    model_version_id: int,
    environment: str,
    justification: str,
    override_reason: str = "",
) -> ApprovalRequest:
    """Request promotion of a model version to an environment; the environment's gates run at once and their
    results are stored with the request. A failed gate refuses the request unless the environment allows an
    override and `override_reason` says why (audited)."""
    permissions.require(actor, "approval.request")
    errors: dict[str, list[str]] = {}
    justification = (justification or "").strip()
    override_reason = (override_reason or "").strip()
    if not justification:
        errors["justification"] = ["required: say why this version should be promoted"]
    target = Environment.objects.filter(name=str(environment or "").strip()).first()
    if target is None:
        known = ", ".join(Environment.objects.values_list("name", flat=True)) or "none are configured yet"
        errors["environment"] = [f"there is no environment {environment!r} (environments: {known})"]
    version = lineage_selectors.model_version_by_id(model_version_id)
    if version is None:
        errors["model_version"] = [f"there is no model version {model_version_id!r}"]
    if errors:
        raise ValidationError(errors)
    assert target is not None and version is not None
    live = ApprovalRequest.objects.filter(model_version=version, environment=target, status__in=["open", "approved"])
    if live.exists():
        raise Conflict({"model_version": [_duplicate_message(version, target, live.first())]})
    parsed = [gate_rules.parse_gate(text) for text in target.gates]
    missing = gate_rules.missing_metrics(parsed, version.metrics or {})
    if missing:
        reports = ", ".join(sorted(version.metrics or {})) or "no metrics"
        raise ValidationError(
            {
                "model_version": [
                    f"{target.name}'s gate {gate.expression!r} names {gate.metric}, which {version} does not report "
                    f"(it reports {reports})"
                    for gate in missing
                ]
            }
        )
    unusable = [
        f"{version} reports {gate.metric} as {version.metrics[gate.metric]!r}, not a number: {target.name}'s gate "
        f"{gate.expression!r} cannot be checked"
        for gate in parsed
        if gate.metric and gate_rules.as_number(version.metrics[gate.metric]) is None
    ]
    if unusable:
        raise ValidationError({"model_version": unusable})
    baseline = selectors.baseline_version(registered_model_id=version.registered_model_id, environment=target)
    if baseline is not None and baseline.pk == version.pk:
        baseline = None
    candidate = _candidate(version)
    outcomes = [(gate, gate_rules.evaluate(gate, candidate, _baseline(baseline))) for gate in parsed]
    failed = [gate for gate, outcome in outcomes if not outcome.passed]
    summaries = {gate.expression: outcome.summary for gate, outcome in outcomes}
    names = "; ".join(f"{gate.expression} ({summaries[gate.expression]})" for gate in failed)
    # The promotion order is never overridden: staging first means staging first.
    ordered = [gate.expression for gate in failed if gate.kind == "previous_environment"]
    if ordered:
        raise ValidationError(
            {
                "environment": [
                    f"{target.name}'s gates failed: {names}. {', '.join(ordered)} cannot be overridden: "
                    "have the version approved there first"
                ]
            }
        )
    if failed and not target.allow_override:
        raise ValidationError({"environment": [f"{target.name}'s gates failed: {names}"]})
    if failed and len(override_reason) < MIN_OVERRIDE_REASON:
        raise ValidationError(
            {
                "override_reason": [
                    f"gates failed: {names}. {target.name} allows an override: give a reason of at least "
                    f"{MIN_OVERRIDE_REASON} characters (it is audited and shown to the approvers)"
                ]
            }
        )
    if not failed:
        override_reason = ""
    try:
        with transaction.atomic():
            request = ApprovalRequest.objects.create(
                model_version=version,
                environment=target,
                requested_by=actor,
                justification=justification,
                artifact_sha256=version.sha256,
                baseline_version=baseline,
                approvals_required=target.approvals_required,
                gates_passed=not failed,
                override_reason=override_reason,
                overridden_by=actor if failed else None,
                expires_at=timezone.now() + timedelta(days=target.request_ttl_days),
                mirror_status=ApprovalRequest.Mirror.PENDING if selectors.mirror_enabled() else "",
                enqueued_at=timezone.now() if selectors.mirror_enabled() else None,
            )
            GateResult.objects.bulk_create(
                [
                    GateResult(
                        request=request,
                        position=position,
                        expression=gate.expression,
                        kind=gate.kind,
                        passed=outcome.passed,
                        summary=outcome.summary[:500],
                        evidence=outcome.evidence,
                    )
                    for position, (gate, outcome) in enumerate(outcomes)
                ]
            )
            write_transition_event(request, "request", "", "open", actor, justification, None)
            _audit_request(
                request,
                action="approval_request.create",
                actor=actor,
                after={
                    "model_version": version.pk,
                    "environment": target.name,
                    "sha256": version.sha256,
                    "gates_passed": not failed,
                },
                reason=justification,
            )
            if failed:
                _audit_request(
                    request,
                    action="approval_request.override",
                    actor=actor,
                    after={"failed_gates": [gate.expression for gate in failed]},
                    reason=override_reason,
                )
            if request.mirror_status:
                transaction.on_commit(lambda: tasks.approval_mirror_task.delay(request.pk), robust=True)
            notify(
                users=selectors.eligible_approvers(request=request),
                title=f"{version} waits for your decision for {target.name}",
                body=f"{actor.get_username()} asks: {justification}",
                url=selectors.approval_request_url(request),
                email=False,
            )
    except IntegrityError as exc:
        if "approval_request_one_live_per_version_environment" not in str(exc) and "UNIQUE" not in str(exc).upper():
            raise
        live = ApprovalRequest.objects.filter(
            model_version=version, environment=target, status__in=["open", "approved"]
        ).first()
        raise Conflict({"model_version": [_duplicate_message(version, target, live)]}) from None
    return request


def _duplicate_message(version: ModelVersion, environment: Environment, live: ApprovalRequest | None) -> str:
    if live is not None and live.status == "approved":
        return f"{version} is already approved for {environment.name} (request {live.pk})"
    if live is not None:
        return f"{version} already has an open request for {environment.name} (request {live.pk})"
    return f"{version} already has a request for {environment.name}"


def _request_id(value: Any) -> int:
    try:
        pk = int(value)
    except (TypeError, ValueError):
        pk = None
    if pk is None or not ApprovalRequest.objects.filter(pk=pk).exists():
        raise ValidationError({"request": [f"there is no approval request {value!r}"]})
    return pk


def _locked_open(request_id: int, action: str) -> ApprovalRequest:
    """The request under its row lock, or Conflict naming its state (an expired one is marked so on the way)."""
    request = ApprovalRequest.objects.select_for_update(of=("self",)).select_related("environment").get(pk=request_id)
    if request.status != ApprovalRequest.Status.OPEN:
        raise Conflict({"status": [f"request {request.pk} is {request.status}: only an open request can {action}"]})
    return request


def _expire_if_due(request_id: int) -> None:
    """An open request past its time is expired first (in its own transaction), so the caller's refusal sticks."""
    expired = approval_request_expire(request_id=request_id)
    if expired is not None:
        raise Conflict({"status": [f"request {request_id} expired on {expired.expires_at:%Y-%m-%d %H:%M} UTC"]})


def approval_decide(*, actor: Any, request_id: int, verdict: str, comment: str) -> ApprovalRequest:
    """Record one approver's verdict. One rejection rejects. The approval that completes the environment's number
    of distinct approvals hands the request to a worker, which checks the artifact and approves."""
    permissions.require(actor, "approval.decide")
    errors: dict[str, list[str]] = {}
    if verdict not in ApprovalDecision.Verdict.values:
        errors["verdict"] = [f"expected approve or reject, got {verdict!r}"]
    comment = (comment or "").strip()
    if not comment:
        errors["comment"] = ["required: say why you approve or reject"]
    if errors:
        raise ValidationError(errors)
    request_id = _request_id(request_id)
    _expire_if_due(request_id)
    with transaction.atomic():
        request = _locked_open(request_id, "be decided")
        version = request.model_version
        if request.requested_by_id == actor.pk:
            raise ValidationError(
                {"approver": ["you requested this promotion: someone other than the requester must decide it"]}
            )
        if actor.pk in lineage_selectors.model_version_run_authors(version):
            raise ValidationError(
                {"approver": [f"you authored the training run of {version}: someone else must decide its promotion"]}
            )
        if request.decisions.filter(approver=actor).exists():
            raise Conflict({"verdict": [f"you have already decided request {request.pk}"]})
        if request.quorum_at is not None:
            raise Conflict({"status": [f"request {request.pk} has its approvals; the artifact check is finishing it"]})
        decision = ApprovalDecision.objects.create(request=request, approver=actor, verdict=verdict, comment=comment)
        _audit_request(
            request,
            action=f"approval_request.decision.{verdict}",
            actor=actor,
            after={"verdict": verdict, "decision": decision.pk},
            reason=comment,
        )
        if verdict == ApprovalDecision.Verdict.REJECT:
            request = APPROVAL_MACHINE.apply(
                request.pk, "reject", actor=actor, reason=comment, status_reason=f"rejected by {actor}: {comment}"
            )
            _tell_outcome(request)
            if request.mirror_status:
                _mirror_again(request)
        else:
            approvals = request.decisions.filter(verdict=ApprovalDecision.Verdict.APPROVE).count()
            if approvals >= request.approvals_required:
                request.quorum_at = request.enqueued_at = timezone.now()
                request.save(update_fields=["quorum_at", "enqueued_at"])
                transaction.on_commit(lambda: tasks.approval_finish_task.delay(request.pk), robust=True)
    return request


def approval_finish(*, request_id: int) -> ApprovalRequest | None:
    """The worker's step once a request has its approvals: hash the stored artifact (outside any lock), then
    approve if it still matches the recorded SHA-256, or refuse if it does not. Quiet when another worker or a
    withdrawal got there first."""
    request = ApprovalRequest.objects.select_related("model_version").get(pk=request_id)
    if request.status != ApprovalRequest.Status.OPEN or request.quorum_at is None:
        return None
    actual = model_version_artifact_sha256(request.model_version)
    last = request.decisions.filter(verdict=ApprovalDecision.Verdict.APPROVE).select_related("approver").last()
    approver = last.approver if last is not None else None
    with transaction.atomic():
        if actual == request.artifact_sha256:
            names = ", ".join(request.decisions.filter(verdict="approve").values_list("approver__username", flat=True))
            done = APPROVAL_MACHINE.apply(
                request_id,
                "approve",
                actor=approver,
                reason=f"approved by {names}; artifact sha256 {actual[:12]} checked",
                quiet=True,
                status_reason=f"approved by {names}",
            )
        else:
            done = APPROVAL_MACHINE.apply(
                request_id,
                "refuse",
                reason=f"the stored artifact's sha256 is {actual}, not {request.artifact_sha256} as requested",
                quiet=True,
                status_reason=(
                    "approval refused: the artifact in the store no longer matches the SHA-256 recorded when "
                    f"promotion was requested ({request.artifact_sha256[:12]}…, found {actual[:12]}…)"
                ),
            )
        if done is None:
            return None
        _tell_outcome(done)
        if done.status == ApprovalRequest.Status.APPROVED:
            transaction.on_commit(lambda: tasks.approval_announce_task.delay(done.pk), robust=True)
        if done.mirror_status:
            _mirror_again(done)
    return done


def approval_announce(*, request_id: int) -> bool:
    """Send `model_version_approved` for an approved request, then mark it sent: at least once (a worker that dies
    in between sends it again from the sweep), so receivers must be idempotent. Returns whether it was sent now."""
    request = (
        ApprovalRequest.objects.select_related("model_version__registered_model__project", "environment")
        .filter(pk=request_id, status="approved", announced_at__isnull=True)
        .first()
    )
    if request is None:
        return False
    for receiver, result in signals.model_version_approved.send_robust(sender=ApprovalRequest, request=request):
        if isinstance(result, Exception):
            log.error("a model_version_approved receiver %r failed for %s", receiver, request, exc_info=result)
    ApprovalRequest.objects.filter(pk=request_id, announced_at__isnull=True).update(announced_at=timezone.now())
    return True


def approval_finish_fail(*, request_id: int, error: str) -> ApprovalRequest | None:
    """The artifact could not be read at all (gone from the store): approval is refused, saying why."""
    reason = f"approval refused: the artifact could not be read to check its SHA-256 ({error})"[:2000]
    with transaction.atomic():
        done = APPROVAL_MACHINE.apply(request_id, "refuse", reason=reason, quiet=True, status_reason=reason)
        if done is not None:
            _tell_outcome(done)
            if done.mirror_status:
                _mirror_again(done)
    return done


def approval_withdraw(*, actor: Any, request_id: int, reason: str = "") -> ApprovalRequest:
    """The requester (or an admin) takes an open request back."""
    permissions.require(actor, "approval.request")
    request_id = _request_id(request_id)
    _expire_if_due(request_id)
    with transaction.atomic():
        request = _locked_open(request_id, "be withdrawn")
        if request.requested_by_id != actor.pk and permissions.ADMIN not in permissions.user_roles(actor):
            raise PermissionDenied("only the requester (or an admin) can withdraw a request")
        reason = (reason or "").strip() or "withdrawn by the requester"
        request = APPROVAL_MACHINE.apply(request.pk, "withdraw", actor=actor, reason=reason, status_reason=reason)
        if request.mirror_status:
            _mirror_again(request)
    return request


def approval_request_expire(*, request_id: int) -> ApprovalRequest | None:
    """Expire one open request whose time is up; None when it is not due (or no longer open)."""
    with transaction.atomic():
        try:
            request = APPROVAL_MACHINE.apply(
                request_id,
                "expire",
                quiet=True,
                under_lock=_refuse_unless_due,
                reason="nobody decided it in time",
            )
        except _NotDue:
            return None
        if request is None:
            return None
        _tell_outcome(request)
        if request.mirror_status:
            _mirror_again(request)
    return request


class _NotDue(Exception):
    pass


def _refuse_unless_due(request: ApprovalRequest) -> dict[str, Any]:
    # A request whose approvals are all in is being finished by the artifact check: it does not expire.
    if request.expires_at > timezone.now() or request.quorum_at is not None:
        raise _NotDue
    return {
        "status_reason": f"expired on {request.expires_at:%Y-%m-%d %H:%M} UTC: nobody decided it within "
        f"{request.environment.request_ttl_days} days"
    }


def approval_requests_expire() -> int:
    """The periodic sweep: expire every open request past its time. Returns how many expired."""
    due = ApprovalRequest.objects.filter(
        status="open", quorum_at__isnull=True, expires_at__lte=timezone.now()
    ).values_list("pk", flat=True)
    count = 0
    for pk in list(due[:500]):
        if approval_request_expire(request_id=pk) is not None:
            count += 1
    return count


def _tell_outcome(request: ApprovalRequest) -> None:
    """The requester and the project's data scientists hear the outcome, in the app and by email (on commit)."""
    version = request.model_version
    project = version.registered_model.project
    people = {request.requested_by_id: request.requested_by}
    for user in lineage_selectors.project_data_scientists(project):
        people.setdefault(user.pk, user)
    notify(
        users=list(people.values()),
        title=f"{version} {request.status} for {request.environment.name}",
        body=request.status_reason or f"approval request {request.pk} is {request.status}",
        url=selectors.approval_request_url(request),
    )


# --- the SageMaker Model Registry mirror ------------------------------------------------------------------------


def _mirror_again(request: ApprovalRequest) -> None:
    ApprovalRequest.objects.filter(pk=request.pk).exclude(mirror_status="").update(
        mirror_status=ApprovalRequest.Mirror.PENDING, enqueued_at=timezone.now()
    )
    transaction.on_commit(lambda: tasks.approval_mirror_task.delay(request.pk), robust=True)


# Where a request's state puts its Model Package.
MIRROR_APPROVAL_STATUS = {
    "open": "PendingManualApproval",
    "approved": "Approved",
    "rejected": "Rejected",
    "withdrawn": "Rejected",
    "expired": "Rejected",
}
# A request leaves `open` once, so two passes always converge; a third is for good measure.
MIRROR_PASSES = 3


def _mirror_description(request: ApprovalRequest) -> str:
    """ApprovalDescription: who approved and what they said, or why the request ended otherwise."""
    if request.status == ApprovalRequest.Status.OPEN:
        return ""
    if request.status == ApprovalRequest.Status.APPROVED:
        decisions = list(request.decisions.filter(verdict=ApprovalDecision.Verdict.APPROVE).select_related("approver"))
        names = ", ".join(decision.approver.get_username() for decision in decisions)
        comments = "; ".join(f"{decision.comment} ({decision.approver.get_username()})" for decision in decisions)
        return f"approved by {names}: {comments}"
    reason = request.status_reason or f"approval request {request.pk} is {request.status}"
    return reason if reason.lower().startswith(request.status) else f"{request.status}: {reason}"


def _mirror_package_spec(request: ApprovalRequest) -> Any:
    """What the request's Model Package is made of; a permanent BackendError when the settings or the artifact
    cannot make one (no SERVING_IMAGE, an artifact outside S3)."""
    import uuid

    from django.conf import settings

    from workers.errors import BackendError
    from workers.registry import PackageSpec, group_name_for

    version = request.model_version
    model = version.registered_model
    project = model.project
    image = (settings.SERVING_IMAGE or "").strip()
    if not image:
        raise BackendError(
            "SERVING_IMAGE is not set: the SageMaker model package needs the serving container image "
            "(e.g. ACCOUNT.dkr.ecr.REGION.amazonaws.com/controlplane-serving:TAG)",
            permanent=True,
        )
    if not version.artifact_uri.startswith("s3://"):
        raise BackendError(
            f"{version}'s artifact is at {version.artifact_uri!r}, not in S3: a SageMaker model package needs an "
            "s3:// ModelDataUrl (store models under an s3:// OBJECT_STORE_URL)",
            permanent=True,
        )
    system_tags = {"project": project.slug, "model": model.slug}
    return PackageSpec(
        group_name=group_name_for(project.slug, model.slug),
        group_description=f"ControlPlane model {project.slug}/{model.slug} ({model.name}). {model.description}",
        description=(
            f"{version} for {request.environment.name}, requested by {request.requested_by.get_username()}: "
            f"{request.justification}"
        ),
        image=image,
        model_data_url=version.artifact_uri,
        approval_request_id=str(request.pk),
        customer_metadata={
            "model_version_id": str(version.pk),
            "sha256": request.artifact_sha256,
            "environment": request.environment.name,
        },
        tags={**(project.cost_tags or {}), **system_tags, "environment": request.environment.name},
        group_tags={**(project.cost_tags or {}), **system_tags},
        # The same request always sends the same token, so SageMaker answers a repeated create with the same package.
        client_token=str(
            uuid.uuid5(
                uuid.NAMESPACE_URL,
                f"controlplane:approval-request:{request.pk}:{request.artifact_sha256}:{request.created_at.isoformat()}",
            )
        ),
        requested_at=request.created_at,
    )


def _mirror_write(request_id: int, lease: int, **fields: Any) -> bool:
    """Write under this worker's lease: False when another worker has taken the mirror over."""
    return ApprovalRequest.objects.filter(pk=request_id, attempt=lease).update(**fields) == 1


def _mirror_converge(request_id: int, lease: int) -> ApprovalRequest | None:
    from controlplane.backends import model_registry

    registry = model_registry()
    for _ in range(MIRROR_PASSES):
        request = ApprovalRequest.objects.select_related(
            "model_version__registered_model__project", "environment", "requested_by"
        ).get(pk=request_id)
        if request.attempt != lease:
            return None
        arn, confirmed = request.mirror_arn, request.mirror_approval_status
        if not arn:
            spec = _mirror_package_spec(request)
            registry.ensure_group(name=spec.group_name, description=spec.group_description, tags=spec.group_tags)
            # A retry after a create whose response was lost finds the package instead of making a second one.
            found = registry.find_package(spec)
            if found is not None:
                arn, confirmed = found.arn, found.approval_status
            else:
                arn, confirmed = registry.create_package(spec), "PendingManualApproval"
            if not _mirror_write(request_id, lease, mirror_arn=arn, mirror_approval_status=confirmed):
                return None
        desired = MIRROR_APPROVAL_STATUS[request.status]
        if desired != confirmed:
            registry.set_approval(arn, status=desired, description=_mirror_description(request))
            if not _mirror_write(request_id, lease, mirror_approval_status=desired):
                return None
        # Synced only if the request is still in the state just mirrored; a transition meanwhile means another pass.
        # The lease ends in the same statement, so the task a later transition queues can take the work at once.
        synced = ApprovalRequest.objects.filter(pk=request_id, attempt=lease, status=request.status).update(
            mirror_status=ApprovalRequest.Mirror.SYNCED, mirror_error="", claimed_at=None
        )
        if synced:
            return ApprovalRequest.objects.get(pk=request_id)
    return None


def approval_mirror_sync(*, request_id: int) -> ApprovalRequest | None:
    """Bring the request's SageMaker Model Package in line with the request: create it (and its group) when
    missing, then set its ModelApprovalStatus from the request's state. Idempotent; the task retries throttling.
    Quiet (None) when another worker holds the mirror, or took it over."""
    lease = APPROVAL_MACHINE.lease(request_id, where=~Q(mirror_status=""))
    if lease is None:
        return None
    try:
        return _mirror_converge(request_id, lease)
    except BaseException:
        # A retry is on its way (or the task records the failure): give the lease back at once.
        APPROVAL_MACHINE.release(request_id, lease)
        raise
    finally:
        ApprovalRequest.objects.filter(pk=request_id, attempt=lease).update(claimed_at=None)


def approval_mirror_fail(*, request_id: int, error: str) -> None:
    """The mirror gave up (a permanent error, or retries exhausted). A mirror another worker has synced since stays
    synced."""
    ApprovalRequest.objects.filter(
        pk=request_id, mirror_status__in=[ApprovalRequest.Mirror.PENDING, ApprovalRequest.Mirror.FAILED]
    ).update(mirror_status=ApprovalRequest.Mirror.FAILED, mirror_error=error[:2000])


def approval_requests_resume() -> int:
    """The periodic sweep: requests whose artifact check or mirror did not finish (a lost message, a dead
    worker) are queued again once their lease is over."""
    stale = timezone.now() - timedelta(seconds=default_lease_seconds())
    quiet = Q(claimed_at__isnull=True) | Q(claimed_at__lt=stale)
    waiting = Q(enqueued_at__isnull=True) | Q(enqueued_at__lt=stale)
    count = 0
    finish = ApprovalRequest.objects.filter(quiet & waiting, status="open", quorum_at__lt=stale)
    for pk in list(finish.values_list("pk", flat=True)[:200]):
        ApprovalRequest.objects.filter(pk=pk).update(enqueued_at=timezone.now())
        tasks.approval_finish_task.delay(pk)
        count += 1
    unannounced = ApprovalRequest.objects.filter(status="approved", announced_at__isnull=True, finished_at__lt=stale)
    for pk in list(unannounced.values_list("pk", flat=True)[:200]):
        tasks.approval_announce_task.delay(pk)
        count += 1
    mirrors = ApprovalRequest.objects.filter(quiet & waiting, mirror_status=ApprovalRequest.Mirror.PENDING)
    for pk in list(mirrors.values_list("pk", flat=True)[:200]):
        ApprovalRequest.objects.filter(pk=pk).update(enqueued_at=timezone.now())
        tasks.approval_mirror_task.delay(pk)
        count += 1
    return count
