"""Approval requests: `open → approved | rejected | withdrawn | expired`, only through APPROVAL_MACHINE.

Decisions are recorded under the request's row lock, so two approvers deciding at once, or a decision racing a
withdrawal or the expiry sweep, end in one consistent outcome. When the last approval needed arrives, a worker checks
that the artifact in the store still hashes to the SHA-256 the request recorded, and only then approves (slow I/O
never happens under the lock, nor in a web request).
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from controlplane import access, permissions
from controlplane.models import Project
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
        project=_project(request.pk),
    )


def _project(request_id: int) -> Project:
    """The project whose model version the request promotes: it owns the request."""
    return Project.objects.get(registeredmodels__versions__approval_requests__pk=request_id)


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

# An override of a failed gate is read by the approvers: a word like "urgent" does not say why.
MIN_OVERRIDE_REASON = 20


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
    if version is None or not access.can_act(actor, version.registered_model.project):
        # A version in a project the requester may not see is "not there", as a missing one is.
        errors["model_version"] = [f"there is no model version {model_version_id!r}"]
    if errors:
        raise ValidationError(errors)
    assert target is not None and version is not None
    permissions.require(actor, "approval.request", project=version.registered_model.project)
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
        given = f"yours has {len(override_reason)}" if override_reason else "none was given"
        raise ValidationError(
            {
                "override_reason": [
                    f"{target.name}'s gates failed: {names}. {target.name} allows an override: give a reason of at "
                    f"least {MIN_OVERRIDE_REASON} characters ({given}; it is audited and shown to the approvers)"
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
    permissions.require(actor, "approval.decide", project=_project(request_id))
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
    permissions.require(actor, "approval.request", project=_project(request_id))
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
    """The requester and the project's data scientists hear the outcome, in the app and by email (on commit): those
    who may still see the project (a restricted one's members)."""
    version = request.model_version
    project = version.registered_model.project
    people = {request.requested_by_id: request.requested_by}
    for user in lineage_selectors.project_data_scientists(project):
        people.setdefault(user.pk, user)
    people = {pk: user for pk, user in people.items() if access.can_act(user, project)}
    lines = [request.status_reason or f"approval request {request.pk} is {request.status}"]
    lines += [
        f"{decision.approver.get_username()} ({decision.verdict}): {decision.comment}"
        for decision in request.decisions.select_related("approver").order_by("created_at", "id")
    ]
    lines.append(f"Requested by {request.requested_by.get_username()}: {request.justification}")
    notify(
        users=list(people.values()),
        title=f"{version} {request.status} for {request.environment.name}",
        body="\n".join(lines),
        url=selectors.approval_request_url(request),
    )


def _mirror_again(request: ApprovalRequest) -> None:
    ApprovalRequest.objects.filter(pk=request.pk).exclude(mirror_status="").update(
        mirror_status=ApprovalRequest.Mirror.PENDING, enqueued_at=timezone.now()
    )
    transaction.on_commit(lambda: tasks.approval_mirror_task.delay(request.pk), robust=True)


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
