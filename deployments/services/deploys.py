"""Services, deployments and rollbacks: `pending → in_progress → baking → succeeded | failed | rolled_back`, only
through DEPLOYMENT_MACHINE.

A request (a page, the API, an approval) only writes rows and enqueues: `deployment_start` (a worker) asks the
serving backend to start the revision, then a chain of short polls (`deployment_poll`) follows the rollout, judges
the objectives while it bakes and promotes or rolls back. The beat sweep (`deployments_resume`) restarts a chain
whose worker died, so a worker SIGKILLed mid-deployment leaves nothing stuck: every backend call is idempotent and
every state lives in the database or in the backend itself. The same sweep looks at each local service serving
with nothing rolling out, which starts again a serving process that crashed (`local_services_heal`).

At most one deployment of a service is active (pending, in progress or baking): the service row is locked while a
deployment is created, and a partial unique index backs that up.
"""

from __future__ import annotations

import logging
import re
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone

from controlplane import access, permissions
from controlplane.models import Project
from controlplane.services import audit_record, notify
from controlplane.transitions import LostLease, StateMachine, transitions
from deployments import objectives as objective_rules
from deployments import selectors, tasks
from deployments.models import (
    ACTIVE_DEPLOYMENT_STATUSES,
    ApprovalRequest,
    Deployment,
    DeploymentEvent,
    Environment,
    Service,
)
from deployments.services.approvals import Conflict
from lineage import selectors as lineage_selectors
from lineage.models import ModelVersion
from workers.deploy.base import Autoscaling, Handle, RevisionSpec, Rollout, RolloutStatus, ServiceSpec
from workers.errors import BackendError

log = logging.getLogger(__name__)

MIN_ROLLBACK_REASON = 5
MAX_EVENTS_KEPT = 500


def _write_deployment_event(
    deployment: Deployment, action: str, previous: str, target: str, actor: Any, reason: str, attempt: int | None
) -> None:
    DeploymentEvent.objects.create(
        deployment=deployment,
        action=action,
        from_status=previous,
        to_status=target,
        reason=reason[:4000],
        actor=actor if getattr(actor, "is_authenticated", False) else None,
        attempt=attempt,
    )
    audit_record(
        actor=actor,
        action=f"deployment.{action}",
        object_type="deployment",
        object_id=deployment.pk,
        object_repr=str(deployment),
        before={"status": previous},
        after={"status": target},
        reason=reason,
        project=service_project(deployment.service_id),
    )


def service_project(service_id: int) -> Project | None:
    """The project whose model the service serves: it owns the service, its deployments and its monitoring."""
    return Project.objects.filter(registeredmodels__services__pk=service_id).first()


DEPLOYMENT_MACHINE = StateMachine(
    model=Deployment,
    table=transitions(
        {
            "start": ({"pending"}, "in_progress"),
            "bake": ({"in_progress"}, "baking"),
            "succeed": ({"baking"}, "succeeded"),
            "fail": ({"pending", "in_progress", "baking"}, "failed"),
            # By a user (deployments.services.deployment_rollback checks deployment.rollback) or by the system.
            "roll_back": ({"pending", "in_progress", "baking"}, "rolled_back"),
        }
    ),
    terminal=frozenset({"succeeded", "failed", "rolled_back"}),
    write_event=_write_deployment_event,
    timestamps={"in_progress": "started_at", "baking": "baking_at"},
)


# --- backends and specs ----------------------------------------------------------------------------------------


def serving_backend(name: str) -> Any:
    """The serving backend a service names: `local` (processes here) or `aws` (ECS Fargate)."""
    if name == "local":
        from workers.deploy.local import LocalServingBackend

        return LocalServingBackend(settings.SERVICES_WORK_DIR)
    if name == "aws":
        from workers.deploy.fargate import FargateServingBackend

        return FargateServingBackend(region=settings.AWS_REGION)
    raise ValueError(f"unknown serving backend {name!r}")


def backend_settings_problems(environment: Environment, strategy: str) -> dict[str, list[str]]:
    """What the environment lacks for the backend that would serve it (aws: cluster, subnets, roles, …; either
    backend: a cpu or memory that is not a whole number above 0)."""
    problems = _size_problems(environment)
    if settings.CONTROLPLANE_BACKEND != "aws":
        return problems
    from workers.deploy.fargate import settings_problems

    found = settings_problems(_aws_settings(environment), strategy)
    for key, messages in problems.items():
        found.setdefault(key, []).extend(messages)
    return found


DEFAULT_TASK_SIZE = (256, 512)  # Fargate's smallest: 0.25 vCPU, 512 MiB


def task_size(environment: Environment) -> tuple[int, int]:
    """The Fargate size (CPU units, MiB) the environment's revisions run at on aws and stand for locally (their
    cost estimate): backend_settings cpu and memory, 256 and 512 when not set."""
    values = environment.backend_settings or {}
    sizes = []
    for key, default in zip(("cpu", "memory"), DEFAULT_TASK_SIZE, strict=True):
        value = values.get(key)
        sizes.append(default if value in (None, "") else int(value))
    return sizes[0], sizes[1]


def _size_problems(environment: Environment) -> dict[str, list[str]]:
    values = environment.backend_settings or {}
    problems: dict[str, list[str]] = {}
    for key in ("cpu", "memory"):
        value = values.get(key)
        if value in (None, ""):
            continue
        text = str(value).strip()
        if isinstance(value, bool) or not text.isdigit() or int(text) < 1:
            unit = "CPU units (1024 = 1 vCPU)" if key == "cpu" else "MiB"
            problems[key] = [f"must be a whole number of {unit} above 0, not {value!r}"]
    return problems


def _aws_settings(environment: Environment) -> dict[str, Any]:
    """The environment's backend settings, with the deployment-wide defaults (ECS_CLUSTER, …) filled in."""
    values = dict(environment.backend_settings or {})
    values.setdefault("cluster", settings.ECS_CLUSTER)
    if settings.ECS_SUBNETS:
        values.setdefault("subnets", list(settings.ECS_SUBNETS))
    if settings.ECS_SECURITY_GROUPS:
        values.setdefault("security_groups", list(settings.ECS_SECURITY_GROUPS))
    return {key: value for key, value in values.items() if value not in ("", None, [])}


def service_tags(service: Service) -> dict[str, str]:
    """The cost-allocation tags of everything the service runs: project, model, environment."""
    return service.registered_model.project.resource_tags(
        model=service.registered_model.slug, environment=service.environment.name
    )


def service_spec(service: Service) -> ServiceSpec:
    environment = service.environment
    autoscaling = None
    if environment.autoscaling_metric and environment.autoscaling_target:
        autoscaling = Autoscaling(
            metric=environment.autoscaling_metric,  # type: ignore[arg-type]
            target=float(environment.autoscaling_target),
            min_count=environment.min_desired_count,
            max_count=environment.max_desired_count,
        )
    return ServiceSpec(
        name=service.name,
        desired_count=service.desired_count,
        settings=_aws_settings(environment) if service.backend == "aws" else {},
        tags=service_tags(service),
        autoscaling=autoscaling,
    )


def _rollout(deployment: Deployment) -> Rollout:
    return Rollout(
        strategy=deployment.strategy,  # type: ignore[arg-type]
        bake_minutes=float(deployment.bake_minutes),
        canary_percent=float(deployment.canary_percent),
        linear_step_percent=float(deployment.linear_step_percent),
        linear_interval_minutes=float(deployment.linear_interval_minutes),
    )


def revision_spec(deployment: Deployment, *, reuse: str = "") -> RevisionSpec:
    version = deployment.model_version
    service = deployment.service
    environment = dict(lineage_selectors.model_version_serving_settings(version))
    environment.update(SERVICE_NAME=service.name, REVISION=f"d{deployment.pk}")
    environment.update(_monitoring_environment(service))
    cpu, memory = task_size(service.environment)
    image = ""
    if service.backend == "aws":
        image = lineage_selectors.model_version_serving_image(version)
    return RevisionSpec(
        deployment_id=f"d{deployment.pk}",
        environment=environment,
        rollout=_rollout(deployment),
        image=image,
        cpu=cpu,
        memory=memory,
        tags={**service_tags(service), "deployment": str(deployment.pk)},
        reuse=reuse,
    )


def _monitoring_environment(service: Service) -> dict[str, str]:
    """How a revision reports: locally its minutes to the portal's ingest endpoint with the service's token, on aws
    as EMF lines CloudWatch picks up; both sample requests into capture files in the object store (drift's input).
    The token lives in the revision's environment only (the local backend's revision.json under var/, the task
    definition on aws carries no token): pages show a model version's serving settings, never this."""
    from monitoring.services.ingest import service_ingest_token

    values = {
        "CAPTURE_URL": settings.OBJECT_STORE_URL,
        "CAPTURE_FRACTION": repr(float(service.environment.capture_fraction)),
        "CAPTURE_FLUSH_SECONDS": repr(float(settings.SERVING_CAPTURE_FLUSH_SECONDS)),
    }
    if service.backend == "aws":
        values.update(METRICS_SINK="emf", METRICS_NAMESPACE=settings.SERVING_METRICS_NAMESPACE)
    else:
        values.update(
            METRICS_SINK="portal",
            METRICS_INGEST_URL=settings.PORTAL_URL.rstrip("/") + reverse("api-ingest-metrics"),
            SERVING_TOKEN=service_ingest_token(service),
            METRICS_FLUSH_SECONDS=repr(float(settings.SERVING_METRICS_FLUSH_SECONDS)),
        )
    return values


def _handle(deployment: Deployment | None) -> Handle | None:
    if deployment is None or not deployment.backend_handle:
        return None
    return Handle.from_dict(deployment.backend_handle)


# --- creating deployments --------------------------------------------------------------------------------------


def _service_name(version: ModelVersion, environment: Environment) -> str:
    """`<model>-<environment>`, or with the project too when that is taken; at most 40 characters."""
    base = f"{version.registered_model.slug}-{environment.name}"
    candidates = [base, f"{version.registered_model.project.slug}-{base}"]
    for candidate in candidates:
        name = re.sub(r"-+", "-", candidate)[:40].strip("-")
        if not Service.objects.filter(name=name).exists():
            return name
    return f"{base[:30].strip('-')}-m{version.registered_model_id}"[:40]


def _locked_service(version: ModelVersion, environment: Environment, actor: Any) -> Service:
    """The model's service in the environment, locked; created on its first deployment."""
    found = Service.objects.select_for_update().filter(
        registered_model_id=version.registered_model_id, environment=environment
    )
    service = found.first()
    if service is not None:
        return service
    try:
        with transaction.atomic():
            service = Service.objects.create(
                registered_model_id=version.registered_model_id,
                environment=environment,
                name=_service_name(version, environment),
                backend=settings.CONTROLPLANE_BACKEND,
                desired_count=environment.min_desired_count,
                created_by=actor,
            )
            audit_record(
                actor=actor,
                action="service.create",
                object_type="service",
                object_id=service.pk,
                object_repr=service.name,
                after={"model": version.registered_model.slug, "environment": environment.name},
                project=version.registered_model.project,
            )
            return service
    except IntegrityError:
        # Another request created it first (this one waits for its lock), or took the name it was to have.
        service = found.first()
        if service is None:
            raise Conflict(
                {"environment": ["another service was being created at the same moment: try again"]}
            ) from None
        return service


def _active_message(deployment: Deployment) -> str:
    can_roll_back = deployment.kind == Deployment.Kind.DEPLOY and deployment.replaces_id is not None
    return (
        f"deployment {deployment.pk} ({deployment.kind} of {deployment.model_version}, "
        f"{deployment.get_status_display()}) is active on {deployment.service.name}: wait for it to finish"
        + (" or roll it back" if can_roll_back else "")
    )


def deployment_create(
    *,
    actor: Any,
    model_version_id: Any,
    environment: Any,
    reason: str = "",
    approval_request: ApprovalRequest | None = None,
) -> Deployment:
    """Deploy an approved model version to its environment's service (created on first deploy), with the
    environment's strategy. `actor` None: the system, on approval (`approval_request` says which)."""
    if actor is not None:
        permissions.require(actor, "deployment.deploy")
    errors: dict[str, list[str]] = {}
    target = Environment.objects.filter(name=str(environment or "").strip()).first()
    if target is None:
        known = ", ".join(Environment.objects.values_list("name", flat=True)) or "none are configured yet"
        errors["environment"] = [f"there is no environment {environment!r} (environments: {known})"]
    version = lineage_selectors.model_version_by_id(model_version_id)
    by_someone = actor is not None and version is not None
    if version is None or (by_someone and not access.can_act(actor, version.registered_model.project)):
        # A version in a project the deployer may not see is "not there", as a missing one is.
        errors["model_version"] = [f"there is no model version {model_version_id!r}"]
    if errors:
        raise ValidationError(errors)
    assert target is not None and version is not None
    if actor is not None:
        permissions.require(actor, "deployment.deploy", project=version.registered_model.project)
    approved = (
        ApprovalRequest.objects.filter(model_version=version, environment=target, status="approved")
        .order_by("-finished_at", "-id")
        .first()
    )
    if approved is None:
        live = ApprovalRequest.objects.filter(model_version=version, environment=target).order_by("-id").first()
        where = f" (its latest request, {live.pk}, is {live.status})" if live is not None else " (it has no request)"
        raise ValidationError({"model_version": [f"{version} is not approved for {target.name}{where}"]})
    problems = backend_settings_problems(target, target.strategy)
    if problems:
        raise ValidationError(
            {
                "environment": [
                    f"{target.name}'s backend_settings.{key}: {msg}" for key, msgs in problems.items() for msg in msgs
                ]
            }
        )
    if settings.CONTROLPLANE_BACKEND == "aws":
        image = lineage_selectors.model_version_serving_image(version)
        if image.startswith(("unknown:", "none:")):
            raise ValidationError({"model_version": [f"{version} cannot be served on Fargate: {image}"]})
    reason = (reason or "").strip() or (
        f"approved in request {approved.pk}" if actor is None else f"deployed by {actor.get_username()}"
    )
    system_user = actor if actor is not None else approved.requested_by
    try:
        with transaction.atomic():
            service = _locked_service(version, target, system_user)
            active = selectors.active_deployment(service=service)
            if active is not None:
                raise Conflict({"model_version": [_active_message(active)]})
            current = service.current_deployment
            if current is not None and current.model_version_id == version.pk:
                raise Conflict(
                    {"model_version": [f"{version} already serves {service.name} (deployment {current.pk})"]}
                )
            deployment = Deployment.objects.create(
                service=service,
                kind=Deployment.Kind.DEPLOY,
                model_version=version,
                initiated_by=actor,
                reason=reason,
                approval_request=approval_request or approved,
                replaces=current,
                strategy=target.strategy,
                canary_percent=target.canary_percent,
                linear_step_percent=target.linear_step_percent,
                linear_interval_minutes=target.linear_interval_minutes,
                bake_minutes=target.bake_minutes,
                objectives=objective_rules.environment_objectives(target),
                desired_count=service.desired_count,
                enqueued_at=timezone.now(),
            )
            _created(deployment, actor, reason)
    except IntegrityError:
        # The partial unique index: another deployment became active between the check and the insert.
        service = Service.objects.get(registered_model_id=version.registered_model_id, environment=target)
        active = selectors.active_deployment(service=service)
        raise Conflict(
            {"model_version": [_active_message(active) if active else f"a deployment of {service.name} is active"]}
        ) from None
    return deployment


def _created(deployment: Deployment, actor: Any, reason: str) -> None:
    from lineage.services.edges import lineage_link

    lineage_link(source=deployment.model_version.node_id, target=deployment.node_id)
    _write_deployment_event(deployment, "create", "", "pending", actor, reason, None)
    audit_record(
        actor=actor,
        action=f"deployment.{deployment.kind}",
        object_type="service",
        object_id=deployment.service_id,
        object_repr=deployment.service.name,
        before={"deployment": deployment.replaces_id, "revision": getattr(deployment.replaces, "revision", "")},
        after={
            "deployment": deployment.pk,
            "model_version": deployment.model_version_id,
            "strategy": deployment.strategy,
        },
        reason=reason,
        project=service_project(deployment.service_id),
    )
    transaction.on_commit(lambda: tasks.deployment_start_task.delay(deployment.pk), robust=True)


def deploy_on_approval(*, request: ApprovalRequest) -> Deployment | None:
    """The `model_version_approved` receiver: deploy at once when the environment says so. Idempotent (the signal
    comes at least once): a request that has a deployment already starts no other."""
    if not request.environment.deploy_on_approval or request.deployments.exists():
        return None
    try:
        return deployment_create(
            actor=None,
            model_version_id=request.model_version_id,
            environment=request.environment.name,
            reason=f"deployed on approval (request {request.pk})",
            approval_request=request,
        )
    except ValidationError as exc:
        if request.deployments.exists():
            return None  # the same announcement, delivered twice at once: the other delivery deployed it
        # Another deployment is active, or the environment lacks settings: tell the requester, who can Deploy later.
        message = "; ".join(exc.messages)
        notify(
            users=[request.requested_by],
            title=f"{request.model_version} was approved for {request.environment.name} but not deployed",
            body=message,
            url=f"/approvals/{request.pk}/",
        )
        log.info("approval request %s: not deployed on approval: %s", request.pk, message)
        return None


# --- rollbacks ---------------------------------------------------------------------------------------------------


def rollback_target(service: Service) -> Deployment | None:
    """The deployment a finished service rolls back to: the last one that succeeded before the current one, of
    another model version (a rollback redeploys a version under a new revision: the same version is no step
    back), and was not rolled back since."""
    current = service.current_deployment
    if current is None:
        return None
    return (
        service.deployments.filter(status="succeeded", created_at__lt=current.created_at)
        .exclude(model_version_id=current.model_version_id)
        .exclude(rollbacks__status__in=["pending", "in_progress", "baking", "succeeded"])
        .select_related("model_version__registered_model")
        .order_by("-created_at", "-id")
        .first()
    )


def deployment_rollback(*, actor: Any, service_id: Any, reason: str, expected: Any = None) -> Deployment:
    """Roll the service back in one step, with a reason (audited). During a deployment: all traffic back to the
    revision it replaces, at once. Otherwise: redeploy the last revision that succeeded before the current one.

    `expected` is the deployment the caller saw active (or, with none active, current): when another one is by the
    time the rollback is made (the page was stale, the API call is a retry), nothing is rolled back (Conflict)."""
    permissions.require(actor, "deployment.rollback")
    reason = (reason or "").strip()
    if len(reason) < MIN_ROLLBACK_REASON:
        raise ValidationError(
            {"reason": [f"required: say why you roll back (at least {MIN_ROLLBACK_REASON} characters)"]}
        )
    key = _as_id(service_id, "service")
    if not Service.objects.filter(pk=key).exists():
        raise ValidationError({"service": [f"there is no service {service_id!r}"]})
    permissions.require(actor, "deployment.rollback", project=service_project(key))
    with transaction.atomic():
        service = Service.objects.select_for_update().filter(pk=key).first()
        if service is None:
            raise ValidationError({"service": [f"there is no service {service_id!r}"]})
        if expected not in (None, ""):
            active = selectors.active_deployment(service=service)
            seen = active.pk if active is not None else service.current_deployment_id
            if str(seen) != str(expected).strip():
                now = f"deployment {seen} is" if seen is not None else "nothing is"
                raise Conflict(
                    {"expected": [f"you rolled back deployment {expected}, but {now} now {service.name}'s: look again"]}
                )
        return _roll_back_locked(service, actor=actor, reason=reason, breach=None)


def _as_id(value: Any, field: str) -> int:
    try:
        return int(str(value))
    except (TypeError, ValueError):
        raise ValidationError({field: [f"expected a {field} id (a whole number), got {value!r}"]}) from None


def _roll_back_locked(service: Service, *, actor: Any, reason: str, breach: dict[str, Any] | None) -> Deployment:
    """Under the service's lock: end the active deployment (if any) as rolled back and create the rollback."""
    active = selectors.active_deployment(service=service)
    if active is not None:
        if active.kind == Deployment.Kind.ROLLBACK:
            raise Conflict({"service": [f"rollback {active.pk} of {service.name} is under way already"]})
        previous = active.replaces
        if previous is None:
            raise ValidationError(
                {
                    "service": [
                        f"{service.name} has no earlier good revision to roll back to: deployment {active.pk} is its "
                        "first"
                    ]
                }
            )
        DEPLOYMENT_MACHINE.apply(
            active.pk,
            "roll_back",
            actor=actor,
            reason=reason,
            status_reason=reason,
            breach=breach or {},
        )
        target, undone = previous, active
    else:
        target = rollback_target(service)
        if target is None:
            current = service.current_deployment
            what = (
                "nothing is deployed yet"
                if current is None
                else f"no deployment before {current.pk} served another model version and was not rolled back since"
            )
            raise ValidationError({"service": [f"{service.name} has no earlier good revision to roll back to: {what}"]})
        undone = service.current_deployment
    rollback = Deployment.objects.create(
        service=service,
        kind=Deployment.Kind.ROLLBACK,
        model_version=target.model_version,
        initiated_by=actor,
        reason=reason,
        replaces=service.current_deployment,
        rollback_of=undone,
        strategy=Deployment.Strategy.ALL_AT_ONCE,
        bake_minutes=0,
        objectives={},
        desired_count=service.desired_count,
        revision=target.revision,
        breach=breach or {},
        enqueued_at=timezone.now(),
    )
    _created(rollback, actor, reason)
    return rollback


# --- the worker side -------------------------------------------------------------------------------------------


def deployment_lease_seconds() -> float:
    return float(settings.DEPLOYMENT_LEASE_SECONDS)


def poll_interval(service: Service) -> float:
    return float(settings.DEPLOYMENT_POLL_SECONDS.get(service.backend, 5.0))


def _load(deployment_id: int) -> Deployment:
    return Deployment.objects.select_related(
        "service__environment",
        "service__registered_model__project",
        "service__current_deployment",
        "model_version__registered_model__project",
        "replaces",
        "rollback_of",
    ).get(pk=deployment_id)


def deployment_start(*, deployment_id: int) -> Deployment:
    """Start a pending deployment's revision, once; a duplicate message finds it claimed and returns. A worker that
    died mid-start is taken over once its lease expired; the backend's deploy is idempotent per deployment id."""
    attempt = DEPLOYMENT_MACHINE.claim(
        deployment_id,
        "start",
        lease_seconds=deployment_lease_seconds(),
        where=Q(backend_handle={}),
        reason="a worker took the deployment",
    )
    if attempt is None:
        return Deployment.objects.get(pk=deployment_id)
    try:
        return _start_claimed(deployment_id, attempt)
    except LostLease:
        return Deployment.objects.get(pk=deployment_id)
    except BackendError as exc:
        if exc.permanent:
            return _fail(deployment_id, f"the backend refused the deployment: {exc}", attempt=attempt)
        DEPLOYMENT_MACHINE.release(deployment_id, attempt)
        raise
    except BaseException:
        DEPLOYMENT_MACHINE.release(deployment_id, attempt)
        raise


def _start_claimed(deployment_id: int, attempt: int) -> Deployment:
    deployment = _load(deployment_id)
    backend = serving_backend(deployment.service.backend)
    spec = service_spec(deployment.service)
    undone = deployment.rollback_of
    if deployment.kind == Deployment.Kind.ROLLBACK and undone is not None and undone.status == "rolled_back":
        # Mid-rollout: the revision it replaced is still up; send all traffic back to it at once.
        handle = _handle(undone)
        status = backend.progress(spec, handle) if handle is not None else None
        if status is not None and status.phase != "complete":
            try:
                status = backend.roll_back(spec, handle)
            except BackendError as exc:
                if not exc.permanent:
                    raise
                status = backend.progress(spec, handle)
                if status.phase != "complete":
                    raise
        if status is not None and status.phase == "complete" and deployment.revision:
            # Too late to send traffic back: the rollout had been promoted (and the old revision stopped) just
            # before this rollback was asked for. Redeploy the old revision instead, as after a finished deploy.
            return _deploy_claimed(deployment, attempt, backend, spec, reuse=deployment.revision)
        if status is not None and not status.final and handle is not None:
            # The backend is still taking the traffic back (ECS rolling back): follow it until it says so.
            Deployment.objects.filter(pk=deployment_id, attempt=attempt).update(
                claimed_at=timezone.now(), backend_handle={**handle.as_dict(), "abort": "1"}
            )
            restart_poll_chain(deployment_id, countdown=poll_interval(deployment.service))
            return Deployment.objects.get(pk=deployment_id)
        return _aborted(deployment, attempt=attempt, handle=handle)
    reuse = deployment.revision if deployment.kind == Deployment.Kind.ROLLBACK else ""
    return _deploy_claimed(deployment, attempt, backend, spec, reuse=reuse)


def _aborted(deployment: Deployment, *, attempt: int | None, handle: Handle | None) -> Deployment:
    """The rolled-back rollout is over: the revision it replaced serves all traffic again."""
    back = Handle(revision=deployment.revision or (handle.previous_revision if handle else ""))
    updated = Deployment.objects.filter(pk=deployment.pk)
    if attempt is not None:
        updated = updated.filter(attempt=attempt)
    updated.update(claimed_at=timezone.now(), backend_handle=back.as_dict())
    DEPLOYMENT_MACHINE.apply(
        deployment.pk, "bake", attempt=attempt, quiet=True, reason=f"all traffic is back on {back.revision or 'it'}"
    )
    return _succeed(deployment.pk, attempt=attempt, reason="the previous revision serves all traffic again")


def _deploy_claimed(deployment: Deployment, attempt: int, backend: Any, spec: ServiceSpec, *, reuse: str) -> Deployment:
    deployment_id = deployment.pk
    previous = deployment.service.current_deployment
    with DEPLOYMENT_MACHINE.holding(deployment_id, attempt, every=deployment_lease_seconds() / 3):
        handle = backend.deploy(spec, revision_spec(deployment, reuse=reuse))
    DEPLOYMENT_MACHINE.renew(deployment_id, attempt)
    recorded = Deployment.objects.filter(pk=deployment_id, attempt=attempt, status="in_progress").update(
        revision=handle.revision, backend_handle=handle.as_dict()
    )
    if not recorded:
        # Rolled back (by a user) while the backend was starting it: the rollback found nothing to undo, so undo
        # here what was just started.
        backend.roll_back(spec, handle)
        return Deployment.objects.get(pk=deployment_id)
    try:
        address = backend.status(spec).address
    except BackendError as exc:  # the revision is started; the address is filled in by a later deployment
        log.warning("%s: no address from the backend yet: %s", deployment.service.name, exc)
        address = ""
    if address and address != deployment.service.address:
        Service.objects.filter(pk=deployment.service_id).update(address=address)
    _event(
        deployment_id,
        "backend",
        f"revision {handle.revision} started"
        + (f", replacing {previous.revision}" if previous is not None and previous.revision else ""),
    )
    restart_poll_chain(deployment_id, countdown=min(1.0, poll_interval(deployment.service)))
    return Deployment.objects.get(pk=deployment_id)


def _event(deployment_id: int, action: str, reason: str) -> None:
    DeploymentEvent.objects.create(deployment_id=deployment_id, action=action, reason=reason[:4000])


def restart_poll_chain(deployment_id: int, *, countdown: float) -> None:
    """A new poll chain, retiring any other (chains never multiply): the generation is raised under the row lock."""
    with transaction.atomic():
        generation = DEPLOYMENT_MACHINE.new_poll_chain(deployment_id)
        # A chain just started counts as polled: the sweep gives it its full quiet time before restarting it.
        Deployment.objects.filter(pk=deployment_id).update(last_polled_at=timezone.now())
        transaction.on_commit(
            lambda: tasks.deployment_poll_task.apply_async((deployment_id, generation, 0), countdown=countdown),
            robust=True,
        )


def deployment_poll(*, deployment_id: int, generation: int | None = None, tick: int | None = None) -> Deployment:
    """Follow the rollout one step: record what the backend reports, move to baking when the revision takes
    traffic, judge the objectives while it bakes, promote when the bake is over, roll back on a breach or a failed
    health check. (`generation`, `tick`) is the chain's ticket, as a run's poll."""
    deployment = _load(deployment_id)
    if deployment.done or not deployment.backend_handle:
        return deployment
    if not DEPLOYMENT_MACHINE.take_poll_tick(deployment_id, generation, tick):
        return deployment
    service = deployment.service
    backend = serving_backend(service.backend)
    spec = service_spec(service)
    handle = Handle.from_dict(deployment.backend_handle)
    status = backend.progress(spec, handle)
    _record_progress(deployment, status)
    deployment = _follow(deployment, status, backend, spec, handle)
    if not deployment.done and generation is not None:
        tasks.deployment_poll_task.apply_async(
            (deployment_id, generation, (tick or 0) + 1), countdown=poll_interval(service)
        )
    return deployment


def _record_progress(deployment: Deployment, status: RolloutStatus) -> None:
    progress = {
        "phase": status.phase,
        "traffic_percent": status.traffic_percent,
        "desired": status.desired,
        "running": status.running,
        "healthy": status.healthy,
        "message": status.message,
        "seconds_to_next_step": status.seconds_to_next_step,
        "revision_address": status.revision_address,
        "at": timezone.now().isoformat(),
    }
    with transaction.atomic():
        locked = Deployment.objects.select_for_update().only("pk", "seen_events", "status").get(pk=deployment.pk)
        if locked.done:
            return
        kept = _backend_events(locked, status)
        Deployment.objects.filter(pk=deployment.pk).update(progress=progress, seen_events=kept)
    deployment.progress = progress


def _backend_events(locked: Deployment, status: RolloutStatus) -> list[str]:
    """Under the deployment's row lock: write the backend's events it has not seen as `backend` events; returns
    the event ids seen now."""
    seen = set(locked.seen_events or [])
    new = [(event_id, text) for event_id, _, text in status.events if event_id not in seen]
    for _, text in new:
        _event(locked.pk, "backend", text)
    return [*(locked.seen_events or []), *(event_id for event_id, _ in new)][-MAX_EVENTS_KEPT:]


def _follow(
    deployment: Deployment, status: RolloutStatus, backend: Any, spec: ServiceSpec, handle: Handle
) -> Deployment:
    pk = deployment.pk
    if deployment.backend_handle.get("abort"):
        # A rollback following the backend as it takes the traffic back (module docstring).
        if status.phase == "rolled_back":
            return _aborted(deployment, attempt=None, handle=handle)
        if status.phase == "failed":
            return _fail(pk, f"the backend could not take the traffic back: {status.message or 'it failed'}")
        return deployment
    if status.phase == "failed" or status.phase == "rolled_back":
        why = status.message or "the new revision failed its health checks"
        return _system_roll_back(
            deployment, f"rolled back: {why}", breach={}, backend=backend, spec=spec, handle=handle
        )
    if deployment.status == Deployment.Status.IN_PROGRESS and status.phase in (
        "shifting",
        "baking",
        "paused",
        "complete",
    ):
        share = f"{status.traffic_percent:g}%"
        DEPLOYMENT_MACHINE.apply(pk, "bake", quiet=True, reason=f"healthy; it takes {share} of traffic and bakes")
        deployment = _load(pk)
    if deployment.status == Deployment.Status.IN_PROGRESS and deployment.started_at is not None:
        waited = (timezone.now() - deployment.started_at).total_seconds()
        if waited > settings.DEPLOYMENT_START_TIMEOUT_SECONDS:
            why = f"rolled back: the new revision did not take traffic within {waited / 60:.0f} min"
            return _system_roll_back(deployment, why, breach={}, backend=backend, spec=spec, handle=handle)
    if deployment.status != Deployment.Status.BAKING:
        return deployment
    if deployment.kind == Deployment.Kind.DEPLOY and deployment.objectives:
        window = (deployment.baking_at or timezone.now(), timezone.now())
        verdict = objective_rules.objective_status(deployment.service, deployment.revision, window)
        Deployment.objects.filter(pk=pk).update(objective_status=verdict.as_dict())
        breached = verdict.breached
        if breached is not None:
            breach = {
                "objective": breached.name,
                "label": breached.label,
                "value": breached.value,
                "threshold": breached.threshold,
                "requests": verdict.requests,
                "source": verdict.source,
            }
            return _system_roll_back(
                deployment,
                f"rolled back: {breached.describe()}",
                breach=breach,
                backend=backend,
                spec=spec,
                handle=handle,
            )
    if status.phase in ("paused", "complete"):
        final = backend.promote(spec, handle) if status.phase == "paused" else status
        if final.phase == "complete":
            _record_progress(deployment, final)
            return _succeed(pk, attempt=None, reason=_bake_summary(deployment))
    return deployment


def _bake_summary(deployment: Deployment) -> str:
    if deployment.kind == Deployment.Kind.ROLLBACK:
        return "the rolled-back-to revision serves all traffic"
    verdict = Deployment.objects.values_list("objective_status", flat=True).get(pk=deployment.pk) or {}
    results = verdict.get("results") or []
    if not results:
        return f"baked {deployment.bake_minutes:g} min; no objectives set"
    fields = ("name", "label", "threshold", "value", "breached", "unit")
    held = "; ".join(
        objective_rules.ObjectiveResult(**{key: result[key] for key in fields if key in result}).describe()
        for result in results
    )
    if not verdict.get("judged"):
        requests = verdict.get("requests", 0)
        return (
            f"baked {deployment.bake_minutes:g} min, objectives not judged: it answered {requests} requests, "
            f"{settings.OBJECTIVE_MIN_REQUESTS} are needed ({held})"
        )
    return f"baked {deployment.bake_minutes:g} min: {held}"


def _succeed(deployment_id: int, *, attempt: int | None, reason: str) -> Deployment:
    service_id = Deployment.objects.values_list("service_id", flat=True).get(pk=deployment_id)
    with transaction.atomic():
        # The service first, then the deployment: the order rollbacks lock them in, so the two cannot deadlock.
        service = Service.objects.select_for_update().get(pk=service_id)
        done = DEPLOYMENT_MACHINE.apply(deployment_id, "succeed", attempt=attempt, quiet=True, reason=reason)
        if done is None:
            return Deployment.objects.get(pk=deployment_id)
        before = service.current_deployment_id
        service.current_deployment = done
        service.save(update_fields=["current_deployment"])
        audit_record(
            actor=None,
            action="service.serve",
            object_type="service",
            object_id=service.pk,
            object_repr=service.name,
            before={"deployment": before},
            after={"deployment": done.pk, "revision": done.revision, "model_version": done.model_version_id},
            reason=reason,
            project=service_project(service.pk),
        )
        _tell(done, f"{done.service.name}: {done.kind} {done.pk} succeeded ({done.model_version})", reason)
        if service.desired_count != done.desired_count:
            # Scaled while it rolled out (the scale went to the revision serving then): apply it to this one too.
            Service.objects.filter(pk=service.pk).update(scale_pending=True)
            transaction.on_commit(lambda: tasks.service_scale_task.delay(service.pk), robust=True)
    return done


def _fail(
    deployment_id: int, reason: str, *, attempt: int | None = None, breach: dict[str, Any] | None = None
) -> Deployment:
    fields: dict[str, Any] = {"status_reason": reason}
    if breach:
        fields["breach"] = breach
    with transaction.atomic():
        done = DEPLOYMENT_MACHINE.apply(deployment_id, "fail", attempt=attempt, quiet=True, reason=reason, **fields)
        if done is None:
            return Deployment.objects.get(pk=deployment_id)
        _tell(done, f"{done.service.name}: {done.kind} {done.pk} failed", reason)
    return done


def _system_roll_back(
    deployment: Deployment, reason: str, *, breach: dict[str, Any], backend: Any, spec: ServiceSpec, handle: Handle
) -> Deployment:
    """The system ends the deployment: with a revision to go back to, a rollback (all traffic back at once);
    without one (a first deploy, or a rollback that failed), the deployment fails and its revision is stopped."""
    with transaction.atomic():
        service = Service.objects.select_for_update().get(pk=deployment.service_id)
        current = Deployment.objects.get(pk=deployment.pk)
        if current.done:
            return current
        if deployment.kind == Deployment.Kind.DEPLOY and deployment.replaces_id is not None:
            rollback = _roll_back_locked(service, actor=None, reason=reason, breach=breach)
            _tell(deployment, f"{service.name} rolled back by the system", reason)
            log.warning("%s: %s (rollback %s)", service.name, reason, rollback.pk)
            return Deployment.objects.get(pk=deployment.pk)
    try:
        backend.roll_back(spec, handle)  # stop what it started first (idempotent); nothing was serving before it
    except BackendError as exc:
        if not exc.permanent:
            raise  # the next poll tries again: the deployment is still active
        log.warning("%s: stopping deployment %s failed: %s", deployment.service.name, deployment.pk, exc)
    if reason.startswith("rolled back: "):
        reason = "failed: " + reason.removeprefix("rolled back: ")
    return _fail(deployment.pk, reason, breach=breach)


def _tell(deployment: Deployment, title: str, body: str) -> None:
    """Who started it and who asked for the version; for a rollback, also those of the deployment it undid."""
    from django.urls import reverse

    told = [deployment]
    if deployment.kind == Deployment.Kind.ROLLBACK and deployment.rollback_of is not None:
        told.append(deployment.rollback_of)
        body = f"{body}. Why: {deployment.reason}"
    project = service_project(deployment.service_id)
    users = [
        user
        for each in told
        for user in (each.initiated_by, getattr(each.approval_request, "requested_by", None))
        if user and access.can_act(user, project)
    ]
    if users:
        notify(users=users, title=title, body=body, url=reverse("service-detail", kwargs={"pk": deployment.service_id}))


# --- the sweep ---------------------------------------------------------------------------------------------------


def deployments_resume() -> int:
    """Beat: restart what a dead worker left. A pending deployment whose start message is lost (or whose worker
    died) is sent again; an active one whose poll chain stopped gets a new chain; a local service serving with
    nothing rolling out has its crashed processes started again (local_services_heal). Returns how many deployments
    were resumed."""
    now = timezone.now()
    resumed = 0
    stale_start = now - timedelta(seconds=deployment_lease_seconds())
    for deployment in Deployment.objects.filter(status="pending", enqueued_at__lt=now - timedelta(seconds=60)):
        Deployment.objects.filter(pk=deployment.pk).update(enqueued_at=now)
        tasks.deployment_start_task.delay(deployment.pk)
        resumed += 1
    stuck_start = Deployment.objects.filter(status="in_progress", backend_handle={}).filter(
        Q(claimed_at__lt=stale_start) | Q(claimed_at__isnull=True, enqueued_at__lt=now - timedelta(seconds=60))
    )
    for deployment in stuck_start:
        Deployment.objects.filter(pk=deployment.pk).update(enqueued_at=now)
        tasks.deployment_start_task.delay(deployment.pk)
        resumed += 1
    active = Deployment.objects.filter(status__in=["in_progress", "baking"]).exclude(backend_handle={})
    for deployment in active.select_related("service"):
        interval = poll_interval(deployment.service)
        quiet_since = now - timedelta(seconds=max(float(settings.DEPLOYMENT_POLL_STALE_SECONDS), interval * 6))
        if deployment.last_polled_at is None or deployment.last_polled_at < quiet_since:
            # Claimed by moving last_polled_at on, only if no other sweep (or poll) moved it since it was read: two
            # sweeps at once restart one chain and write one resume event.
            claimed = Deployment.objects.filter(pk=deployment.pk, last_polled_at=deployment.last_polled_at)
            if deployment.last_polled_at is None:
                claimed = Deployment.objects.filter(pk=deployment.pk, last_polled_at__isnull=True)
            if not claimed.update(last_polled_at=now):
                continue
            # The timeline says why the rollout went quiet and came back (its worker died, or lost the message);
            # written before the new chain's first poll can write its own events.
            quiet = (
                "never polled"
                if deployment.last_polled_at is None
                else f"no poll for {(now - deployment.last_polled_at).total_seconds():.0f}s"
            )
            _event(deployment.pk, "resume", f"{quiet}: the sweep restarted its poll chain")
            restart_poll_chain(deployment.pk, countdown=0)
            resumed += 1
    local_services_heal()
    return resumed


def local_services_heal() -> None:
    """The sweep also looks at every local service that serves with nothing rolling out: the backend re-ensures a
    service at every call (a serving process that crashed is started again behind the same address, see
    workers/deploy/local.py), and with no rollout under way nothing else calls it. What the backend did (a process
    started again, and why) goes on the current deployment's timeline, as a poll puts a rollout's events there."""
    backend = serving_backend("local")
    serving = (
        Service.objects.filter(backend="local", current_deployment__isnull=False)
        .exclude(deployments__status__in=ACTIVE_DEPLOYMENT_STATUSES)
        .select_related("environment", "registered_model__project", "current_deployment")
    )
    for service in serving.order_by("name"):
        current = service.current_deployment
        handle = _handle(current)
        if current is None or handle is None or not handle.revision:
            continue
        try:
            status = backend.progress(service_spec(service), handle)
        except Exception as exc:  # one service's trouble must not keep the others from being looked at
            log.warning("%s: not looked at by the sweep: %s", service.name, exc)
            continue
        with transaction.atomic():
            locked = Deployment.objects.select_for_update().only("pk", "seen_events").get(pk=current.pk)
            kept = _backend_events(locked, status)
            if kept != (locked.seen_events or []):
                Deployment.objects.filter(pk=current.pk).update(seen_events=kept)


# --- local services across restarts ------------------------------------------------------------------------------


def local_services_resume() -> list[str]:
    """Bring back every local service that has a current deployment (stopped with the app, or by a machine that went
    down): its router on its stable port, the current deployment's revision behind it. One line per service, what
    was resumed or why not; a failure is logged, never raised. Active deployments are left to the beat sweep: the
    stop ended their rollouts (rolled back, "the service was stopped"), which their next poll records."""
    lines = []
    backend = serving_backend("local")
    services = Service.objects.filter(backend="local", current_deployment__isnull=False).select_related(
        "environment", "registered_model__project", "current_deployment"
    )
    for service in services.order_by("name"):
        current = service.current_deployment
        handle = _handle(current)
        if current is None or handle is None or not handle.revision:
            lines.append(f"{service.name}: not resumed: deployment {service.current_deployment_id} has no revision")
            continue
        try:
            status = backend.resume(service_spec(service), handle)
        except Exception as exc:  # one service's trouble must not keep the others (or the app) down
            log.warning("%s: not resumed: %s", service.name, exc)
            lines.append(f"{service.name}: not resumed: {exc}")
            continue
        if status.address and status.address != service.address:
            Service.objects.filter(pk=service.pk).update(address=status.address)
        lines.append(f"resumed {service.name} at {status.address} ({handle.revision}, deployment {current.pk})")
    return lines


def local_services_stop() -> list[str]:
    """Stop every local service's router and serving processes; their files stay for local_services_resume."""
    from workers.deploy.local import LocalServingBackend
    from workers.local_state import process_alive, read_json

    backend = LocalServingBackend(settings.SERVICES_WORK_DIR)
    running = []
    for path in sorted(backend.root.glob("*/service.json")):
        state = read_json(path)
        router = state.get("router")
        if state.get("active") or (router and process_alive(router)):
            running.append(f"stopped {path.parent.name} (port {state.get('port')})")
    backend.shutdown_all()
    return running


# --- scaling -----------------------------------------------------------------------------------------------------


def service_scale(*, actor: Any, service_id: Any, desired_count: Any) -> Service:
    """Set how many processes (local) or tasks (ECS) serve the service, within its environment's limits."""
    permissions.require(actor, "deployment.deploy")
    key = _as_id(service_id, "service")
    if not Service.objects.filter(pk=key).exists():
        raise ValidationError({"service": [f"there is no service {service_id!r}"]})
    permissions.require(actor, "deployment.deploy", project=service_project(key))
    with transaction.atomic():
        service = Service.objects.select_for_update().select_related("environment").filter(pk=key).first()
        if service is None:
            raise ValidationError({"service": [f"there is no service {service_id!r}"]})
        low, high = service.environment.min_desired_count, service.environment.max_desired_count
        try:
            count = int(str(desired_count).strip())
        except ValueError:
            count = None
        if count is None or isinstance(desired_count, bool) or not low <= count <= high:
            raise ValidationError(
                {
                    "desired_count": [
                        f"expected a whole number from {low} to {high} ({service.environment.name}'s limits), got "
                        f"{desired_count!r}"
                    ]
                }
            )
        if count == service.desired_count:
            return service
        before = service.desired_count
        service.desired_count = count
        service.scale_pending = True
        service.save(update_fields=["desired_count", "scale_pending"])
        audit_record(
            actor=actor,
            action="service.scale",
            object_type="service",
            object_id=service.pk,
            object_repr=service.name,
            before={"desired_count": before},
            after={"desired_count": count},
            project=service_project(service.pk),
        )
        transaction.on_commit(lambda: tasks.service_scale_task.delay(service.pk), robust=True)
    return service


def service_scale_apply(*, service_id: int) -> None:
    service = Service.objects.select_related("environment", "registered_model__project").get(pk=service_id)
    if not service.scale_pending:
        return
    if service.current_deployment_id is not None:
        serving_backend(service.backend).scale(service_spec(service))
    Service.objects.filter(pk=service_id, desired_count=service.desired_count).update(scale_pending=False)


def deployment_fail(*, deployment_id: int, reason: str) -> Deployment:
    return _fail(deployment_id, reason)


def deployment_poll_again(*, deployment_id: int, generation: int, tick: int, error: BaseException) -> None:
    """A poll step failed: a permanent backend error ends the deployment (saying why); anything else is tried again
    at the chain's next tick."""
    log.warning("deployment %s: poll failed: %s", deployment_id, error)
    deployment = _load(deployment_id)
    if not deployment.active:
        return
    failures = int((deployment.progress or {}).get("poll_errors", 0)) + 1
    Deployment.objects.filter(pk=deployment_id).update(
        progress={**(deployment.progress or {}), "poll_errors": failures, "last_error": str(error)[:500]}
    )
    permanent = isinstance(error, BackendError) and error.permanent
    if (permanent or failures >= settings.DEPLOYMENT_POLL_ERROR_LIMIT) and deployment.backend_handle:
        why = "the backend cannot follow the rollout" if permanent else f"the backend failed {failures} polls in a row"
        service = deployment.service
        _system_roll_back(
            deployment,
            f"rolled back: {why}: {error}",
            breach={},
            backend=serving_backend(service.backend),
            spec=service_spec(service),
            handle=Handle.from_dict(deployment.backend_handle),
        )
        return
    found = Deployment.objects.filter(
        pk=deployment_id, status__in=ACTIVE_DEPLOYMENT_STATUSES, poll_generation=generation
    ).select_related("service")
    deployment = found.first()
    if deployment is not None:
        tasks.deployment_poll_task.apply_async(
            (deployment_id, generation, tick), countdown=max(2.0, poll_interval(deployment.service))
        )


def deployment_is_rollback(*, deployment_id: int) -> bool:
    return Deployment.objects.filter(pk=deployment_id, kind=Deployment.Kind.ROLLBACK).exists()
