"""The ECS Fargate serving backend: each deployment is a task definition revision of the serving image, rolled out
behind the environment's load balancer by ECS's own deployment strategies, with our objective check as a PAUSE
lifecycle hook that `promote` and `roll_back` resolve.

Resources
---------
- One task definition family per service, named `service.name`; each deploy registers a revision (Fargate, awsvpc,
  the serving image, container `serving` on port 8080, `RevisionSpec.environment`, CPU/memory, awslogs, a container
  health check on /ping). `RevisionSpec.reuse` names an earlier revision's ARN: nothing is registered.
- One ECS service per service (same name), created by the first deploy behind `target_group_arn` (plus, for the
  blue/green family of strategies, the alternate target group and listener rules ECS switches between); every later
  deploy is an UpdateService with the new revision and the rollout's `deploymentConfiguration`.
- The target groups check health on /ping: before the service is put behind a target group (its creation, or a
  rolling service's first traffic-shifting deploy, which adds the alternate group) DescribeTargetGroups reads each
  group's health check, and one that is not HTTP on the traffic port at /ping expecting 200 is changed to that with
  ModifyTargetGroup (an ALB target group checks `/` by default, which serving answers 404: no task would ever pass).
- Cost-allocation tags: the service and its scalable target carry `ServiceSpec.tags` (project, model, environment);
  each revision those and its `deployment` tag; the service propagates its revision's tags to the tasks it starts
  (propagateTags TASK_DEFINITION), so Cost Explorer attributes each task's cost to its deployment.
- Application Auto Scaling: scalable target `service/<cluster>/<service>` (ecs:service:DesiredCount) and one
  target-tracking policy `<service>-requests` (ALBRequestCountPerTarget) or `<service>-cpu`
  (ECSServiceAverageCPUUtilization). deploy() registers them when it creates the service, scale() applies any change
  (and removes them when `autoscaling` is None). ECS moves production between the two target groups of a
  blue/green service, so the request policy's ResourceLabel is built from the target group the production listener
  rule forwards to, and promote() points it at the new one.

Settings (`ServiceSpec.settings`, the environment's backend settings; `settings_problems` checks them)
-----------------------------------------------------------------------------------------------------
    cluster                       required  ECS cluster name or ARN
    subnets                       required  subnet ids (a list, or one comma-separated string)
    security_groups               required  security group ids (likewise)
    assign_public_ip              optional  true/false (default false): a public IP per task, for subnets without NAT
    target_group_arn              required  the production target group the service is created behind
    execution_role_arn            required  the task execution role (pulls the image, writes the logs)
    task_role_arn                 required  the role the serving process runs as (reads the model, writes capture)
    alternate_target_group_arn    non-rolling strategies: the second target group ECS deploys the new revision into
    production_listener_rule_arn  non-rolling strategies: the listener rule (ALB) or listener (NLB) ECS switches
    test_listener_rule_arn        optional  a test listener rule for ECS's test traffic
    load_balancer_role_arn        non-rolling strategies: the role ECS uses to change the listener rules
    load_balancer_arn             request-based autoscaling: the Application Load Balancer (for the ResourceLabel);
                                  also gives status() its address when `address` is not set
    alarm_names                   optional  CloudWatch alarms that make ECS fail and roll back a deployment
    log_group                     optional  awslogs group (default /controlplane/serving); it must exist
    health_check_grace_seconds    optional  healthCheckGracePeriodSeconds (default 60)
    address                       optional  the service's stable URL (e.g. http://<load balancer DNS name>)

Strategies, mapped onto ECS's deploymentConfiguration
-----------------------------------------------------
    rolling      ROLLING, maximumPercent 200 / minimumHealthyPercent 100 (new tasks start before old ones stop),
                 deploymentCircuitBreaker {enable, rollback}. No lifecycle hook: a rolling update has no point where
                 production traffic has fully moved and the previous revision still runs. The bake starts when ECS
                 reports the deployment SUCCESSFUL and is timed here; it is kept with the revision (below).
    all_at_once  BLUE_GREEN
    canary       CANARY, canaryConfiguration {canaryPercent, canaryBakeTimeInMinutes = bake_minutes}
    linear       LINEAR, linearConfiguration {stepPercent (ECS: 3.0 at least), stepBakeTimeInMinutes =
                 linear_interval_minutes}
    all          alarms {alarmNames, enable, rollback} when `alarm_names` is set.

For BLUE_GREEN, CANARY and LINEAR our verdict is a PAUSE lifecycle hook at POST_PRODUCTION_TRAFFIC_SHIFT: all
production traffic is on the new revision and the previous one still runs, so a ROLLBACK is a listener switch.
ECS's own `bakeTimeInMinutes` is 0: ECS bakes *after* that stage (BAKE_TIME), and no hook can follow BAKE_TIME, so an
ECS bake would come after our verdict. Our bake (all_at_once and linear: `bake_minutes`; canary: none, its bake is
the canary phase) runs inside the pause instead: the hook's timeout is the bake plus VERDICT_MINUTES, with timeout
action ROLLBACK, so a controller that never answers cannot leave a half-verified revision serving. The bake therefore
ends VERDICT_MINUTES before the hook's `expiresAt`, which ECS reports; nothing about it is kept here. ECS counts whole
minutes, so fractional minutes are rounded up.

What ECS reports, as base.Phase (DescribeServiceDeployments `status`, `lifecycleStage`, `lifecycleHookDetails`)
-------------------------------------------------------------------------------------------------------------
    PENDING                                                                   starting
    IN_PROGRESS at RECONCILE_SERVICE, PRE_SCALE_UP, SCALE_UP, POST_SCALE_UP,
        TEST_TRAFFIC_SHIFT, POST_TEST_TRAFFIC_SHIFT                           starting (no production traffic yet)
    IN_PROGRESS at PRODUCTION_TRAFFIC_SHIFT (or PRE_PRODUCTION_...)           shifting
    IN_PROGRESS, our PAUSE hook AWAITING_ACTION, until expiresAt - VERDICT    baking
    IN_PROGRESS, our PAUSE hook AWAITING_ACTION, after that                   paused
    IN_PROGRESS at POST_PRODUCTION_TRAFFIC_SHIFT, hook not reported yet       baking
    IN_PROGRESS after promote (hook SUCCEEDED; BAKE_TIME, CLEAN_UP)           baking: ECS drains the previous
                                                                              revision; complete waits for SUCCESSFUL
    IN_PROGRESS, ROLLING                                                      starting until a new task runs, then
                                                                              shifting (at BAKE_TIME, if any: baking)
    SUCCESSFUL, BLUE_GREEN / CANARY / LINEAR                                  complete
    SUCCESSFUL, ROLLING                                                       baking for the bake after finishedAt,
                                                                              then paused; promote(): complete
    SUCCESSFUL, then roll_back() updated the service to the previous revision shifting until that service deployment
                                                                              is SUCCESSFUL, then rolled_back
    SUCCESSFUL, no previous revision, roll_back() scaled the service to 0     shifting until no task runs, then
                                                                              rolled_back
    SUCCESSFUL, the service moved on to another revision since               complete
    STOP_REQUESTED, ROLLBACK_REQUESTED, ROLLBACK_IN_PROGRESS                  shifting (traffic going back; not final)
    ROLLBACK_SUCCESSFUL, circuit breaker or alarms TRIGGERED                  failed
    ROLLBACK_SUCCESSFUL otherwise (our ROLLBACK, our stop, the hook timed out) rolled_back
    ROLLBACK_FAILED, STOPPED                                                  failed

roll_back() acts on what it finds: paused at our hook, ContinueServiceDeployment ROLLBACK; otherwise while ECS is
still deploying, StopServiceDeployment stopType ROLLBACK; after SUCCESSFUL, UpdateService to the previous revision,
at once (BLUE_GREEN with bake 0, or ROLLING) without our hook, and with the circuit breaker's and alarms' own rollback
off, since "the last deployment that completed" would now be the revision being left.

`traffic_percent` is the target revision's `requestedProductionTrafficWeight` when ECS reports it. When it does not,
it is derived, not measured: 0 before production traffic shifts; during the shift the canary percent (canary), one
step (linear, a lower bound) or 100 (all_at_once, whose shift is a single switch); 100 from
POST_PRODUCTION_TRAFFIC_SHIFT on; for rolling, the new revision's share of running tasks (the target group spreads
requests over its registered targets). `healthy` counts the revision's RUNNING tasks whose container health check
(/ping) reports HEALTHY.

Kept with the revision
----------------------
ECS keeps the rollout; what it does not keep is kept as tags on the task definition revision:
- `deployment`: the caller's `deployment` tag, else the deployment id. A repeated deploy finds the family's latest
  revision by it, checks that image, environment, size and roles are the same, and registers nothing.
- `controlplane:replaces`: the revision it replaced, so a repeated deploy returns the same handle.
- `controlplane:bake-minutes`: the bake (timed here for rolling updates).
- `controlplane:verdict`: `promoted` (rolling), or `rolled-back` once roll_back() acted.
A reused revision gets these rewritten for its new rollout. A repeated deploy is recognised by the service already
running the revision (its `taskDefinition`) and starts no second service deployment.

Usage (for cost estimates)
--------------------------
usage() lists the service's tasks (ListTasks by serviceName, desiredStatus RUNNING then STOPPED, 100 a page,
following nextToken) and describes them (DescribeTasks, at most 100 a call): one span per task that started
(`startedAt`; a task that never did is skipped) until `stoppedAt` (none while it runs), at the task's own `cpu` and
`memory`. Its revision is the `REVISION` its container runs with (the deployment id the caller put in the
environment, what the serving process reports), else the task definition's `deployment` tag, else the task
definition ARN; each task definition is described once per call. A reused task definition runs with the
environment it was registered with, so its tasks count for the deployment that registered it. ECS forgets a
stopped task about an hour after it stopped: a caller must look more often than that, and keep what it saw (the
most seconds per day), for the time of stopped tasks to be counted. Fargate bills from the image pull
(`pullStartedAt`), with a one-minute minimum; the span starts when the task did, so it is slightly lower.
"""

from __future__ import annotations

import hashlib
import math
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from botocore.client import BaseClient
from botocore.exceptions import ClientError

from workers.aws import aws_client, aws_errors, translate_client_error
from workers.deploy.base import (
    STRATEGIES,
    Autoscaling,
    DeploymentNotFound,
    Handle,
    Phase,
    RevisionSpec,
    Rollout,
    RolloutStatus,
    ServiceSpec,
    ServiceStatus,
    ServingSpan,
)
from workers.errors import BackendError

CONTAINER_NAME = "serving"
# Tasks take their task definition revision's tags, so each carries its deployment's cost-allocation tag.
PROPAGATE_TAGS = "TASK_DEFINITION"
CONTAINER_PORT = 8080  # serving.config.DEFAULT_PORT
DEFAULT_LOG_GROUP = "/controlplane/serving"
DEFAULT_HEALTH_CHECK_GRACE_SECONDS = 60
# The target groups' health check: serving's /ping answers 200 once the model is loaded and its hash checked, 503
# before, and every other path but /invocations and /metrics 404 (an ALB target group checks `/` by default).
TARGET_GROUP_HEALTH_CHECK: dict[str, Any] = {
    "HealthCheckProtocol": "HTTP",
    "HealthCheckPort": "traffic-port",
    "HealthCheckPath": "/ping",
    "HealthCheckEnabled": True,
    "Matcher": {"HttpCode": "200"},
}
# How long after our bake ECS waits for promote/roll_back before it rolls back by itself.
VERDICT_MINUTES = 60
HOOK_STAGE = "POST_PRODUCTION_TRAFFIC_SHIFT"
ECS_STRATEGIES = {"rolling": "ROLLING", "all_at_once": "BLUE_GREEN", "canary": "CANARY", "linear": "LINEAR"}
MIN_LINEAR_STEP_PERCENT = 3.0  # LinearConfiguration.stepPercent: multiples of 0.1 from 3.0 to 100.0
MIN_CANARY_PERCENT = 0.1  # CanaryConfiguration.canaryPercent: multiples of 0.1 from 0.1 to 100.0
MAX_ECS_MINUTES = 1440  # canaryBakeTimeInMinutes, stepBakeTimeInMinutes: 0 to 1440
# The serving server drains for DRAIN_SECONDS (default 15) after SIGTERM; ECS waits this much longer before SIGKILL.
STOP_MARGIN_SECONDS = 15
MAX_STOP_TIMEOUT_SECONDS = 120  # Fargate's limit
SCALE_IN_COOLDOWN_SECONDS = 300
SCALE_OUT_COOLDOWN_SECONDS = 60

TAG_DEPLOYMENT = "deployment"
TAG_REPLACES = "controlplane:replaces"
TAG_BAKE = "controlplane:bake-minutes"
TAG_VERDICT = "controlplane:verdict"
PROMOTED = "promoted"
ROLLED_BACK = "rolled-back"

# Fargate's CPU units and the memory (MiB) each allows: (first, last, step).
FARGATE_SIZES: dict[int, tuple[int, int, int]] = {
    256: (512, 2048, 512),
    512: (1024, 4096, 1024),
    1024: (2048, 8192, 1024),
    2048: (4096, 16384, 1024),
    4096: (8192, 30720, 1024),
    8192: (16384, 61440, 4096),
    16384: (32768, 122880, 8192),
}

_STARTING_STAGES = frozenset(
    {"RECONCILE_SERVICE", "PRE_SCALE_UP", "SCALE_UP", "POST_SCALE_UP", "TEST_TRAFFIC_SHIFT", "POST_TEST_TRAFFIC_SHIFT"}
)
_SHIFTING_STAGES = frozenset({"PRE_PRODUCTION_TRAFFIC_SHIFT", "PRODUCTION_TRAFFIC_SHIFT"})
_DRAINING_STAGES = frozenset({HOOK_STAGE, "BAKE_TIME", "CLEAN_UP"})
_RUNNING_STATUSES = frozenset({"PENDING", "IN_PROGRESS"})
_RETREATING_STATUSES = frozenset({"STOP_REQUESTED", "ROLLBACK_REQUESTED", "ROLLBACK_IN_PROGRESS"})

_PARTITION = r"arn:aws(?:-[a-z]+)*"
_ELB = rf"{_PARTITION}:elasticloadbalancing:[a-z0-9-]+:\d{{12}}"
_TARGET_GROUP = re.compile(rf"{_ELB}:targetgroup/[A-Za-z0-9-]{{1,32}}/[0-9a-f]+")
_LISTENER_RULE = re.compile(rf"{_ELB}:listener-rule/app/[A-Za-z0-9-]{{1,32}}/[0-9a-f]+/[0-9a-f]+/[0-9a-f]+")
_NLB_LISTENER = re.compile(rf"{_ELB}:listener/net/[A-Za-z0-9-]{{1,32}}/[0-9a-f]+/[0-9a-f]+")
_LOAD_BALANCER = re.compile(rf"{_ELB}:loadbalancer/app/[A-Za-z0-9-]{{1,32}}/[0-9a-f]+")
_ROLE = re.compile(rf"{_PARTITION}:iam::\d{{12}}:role/[\w+=,.@/-]{{1,512}}")
_CLUSTER = re.compile(rf"[A-Za-z0-9_-]{{1,255}}|{_PARTITION}:ecs:[a-z0-9-]+:\d{{12}}:cluster/[A-Za-z0-9_-]{{1,255}}")
_SUBNET = re.compile(r"subnet-[0-9a-f]{8,17}")
_SECURITY_GROUP = re.compile(r"sg-[0-9a-f]{8,17}")
_LOG_GROUP = re.compile(r"[.\-_/#A-Za-z0-9]{1,512}")
_SERVICE_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?")
_TAG_TEXT = re.compile(r"[\w\s.:/=+\-@]*")
_TASK_DEFINITION_ARN = re.compile(rf"{_PARTITION}:ecs:[a-z0-9-]+:\d{{12}}:task-definition/([A-Za-z0-9_-]+):\d+")


class InvalidSpec(BackendError):
    """Settings or a spec the backend cannot deploy with; `problems` maps each field to what is wrong with it."""

    def __init__(self, subject: str, problems: Mapping[str, Sequence[str]]) -> None:
        self.problems = {field: list(messages) for field, messages in problems.items()}
        details = "; ".join(f"{field}: {' '.join(messages)}" for field, messages in self.problems.items())
        super().__init__(f"{subject}: {details}", permanent=True)


# --- checks the Django side can run before anything is queued ----------------------------------------------------


def settings_problems(
    settings: Mapping[str, Any], strategy: str, *, autoscaling_metric: str | None = None
) -> dict[str, list[str]]:
    """Every missing or invalid field of the environment's backend settings for `strategy` (and request-based
    autoscaling when `autoscaling_metric` is "requests"), as field -> messages; empty when the settings will do."""
    return _parse_settings(settings, strategy, autoscaling_metric)[1]


def rollout_problems(rollout: Rollout) -> dict[str, list[str]]:
    """What ECS would refuse in `rollout`, as field -> messages."""
    problems: dict[str, list[str]] = {}
    if rollout.strategy not in STRATEGIES:
        _add(problems, "strategy", f"must be one of {', '.join(STRATEGIES)}, not {rollout.strategy!r}")
        return problems
    _check_minutes(problems, "bake_minutes", rollout.bake_minutes)
    if rollout.strategy == "canary":
        _check_percent(problems, "canary_percent", rollout.canary_percent, MIN_CANARY_PERCENT)
    if rollout.strategy == "linear":
        _check_percent(problems, "linear_step_percent", rollout.linear_step_percent, MIN_LINEAR_STEP_PERCENT)
        _check_minutes(problems, "linear_interval_minutes", rollout.linear_interval_minutes)
    return problems


def revision_problems(revision: RevisionSpec) -> dict[str, list[str]]:
    """What is wrong with a revision for Fargate (its rollout, size, image, environment, tags), field -> messages."""
    problems = rollout_problems(revision.rollout)
    if not _DEPLOYMENT_ID.fullmatch(revision.deployment_id or ""):
        _add(problems, "deployment_id", "must be 1-128 letters, digits, '.', '_', ':', '/', '=', '+', '-' or '@'")
    if revision.reuse:
        if not _TASK_DEFINITION_ARN.fullmatch(revision.reuse):
            _add(
                problems,
                "reuse",
                f"must be a task definition ARN (…:task-definition/<family>:<n>), not {revision.reuse!r}",
            )
    else:
        if not revision.image or any(ch.isspace() for ch in revision.image) or len(revision.image) > 255:
            _add(problems, "image", "must be a container image reference of at most 255 characters, without spaces")
        allowed = FARGATE_SIZES.get(revision.cpu)
        if allowed is None:
            _add(problems, "cpu", f"must be one of Fargate's CPU sizes {', '.join(map(str, FARGATE_SIZES))}")
        else:
            first, last, step = allowed
            if not (first <= revision.memory <= last and (revision.memory - first) % step == 0):
                _add(
                    problems,
                    "memory",
                    f"{revision.memory} MiB does not fit {revision.cpu} CPU units: Fargate allows {first}-{last} MiB "
                    f"in steps of {step}",
                )
        port = revision.environment.get("PORT", str(CONTAINER_PORT)).strip()
        if port != str(CONTAINER_PORT):
            _add(problems, "environment", f"PORT must be {CONTAINER_PORT} (the container port), not {port!r}")
        for name in revision.environment:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                _add(problems, "environment", f"{name!r} is not an environment variable name")
    _check_tags(problems, "tags", revision.tags)
    return problems


def service_problems(service: ServiceSpec) -> dict[str, list[str]]:
    """What is wrong with the service's own fields for ECS (name, counts, tags, autoscaling), field -> messages."""
    problems: dict[str, list[str]] = {}
    if not _SERVICE_NAME.fullmatch(service.name or ""):
        _add(problems, "name", "must be 1-40 lowercase letters, digits and hyphens, starting and ending with one")
    if service.desired_count < 0:
        _add(problems, "desired_count", "must be 0 or more")
    _check_tags(problems, "tags", service.tags)
    scaling = service.autoscaling
    if scaling is not None:
        if scaling.metric not in ("requests", "cpu"):
            _add(problems, "autoscaling", f"metric must be requests or cpu, not {scaling.metric!r}")
        if not 0 <= scaling.min_count <= scaling.max_count:
            _add(problems, "autoscaling", "needs 0 <= min_count <= max_count")
        if not (math.isfinite(scaling.target) and scaling.target > 0):
            _add(problems, "autoscaling", "target must be a number above 0")
        elif scaling.metric == "cpu" and scaling.target > 100:
            _add(problems, "autoscaling", "a CPU target is a percentage, at most 100")
    return problems


# --- the backend -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Settings:
    cluster: str
    subnets: tuple[str, ...]
    security_groups: tuple[str, ...]
    assign_public_ip: bool
    target_group_arn: str
    execution_role_arn: str
    task_role_arn: str
    alternate_target_group_arn: str
    production_listener_rule_arn: str
    test_listener_rule_arn: str
    load_balancer_role_arn: str
    load_balancer_arn: str
    alarm_names: tuple[str, ...]
    log_group: str
    health_check_grace_seconds: int
    address: str

    @property
    def cluster_name(self) -> str:
        return self.cluster.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class _Hook:
    hook_id: str
    expires_at: float | None


class FargateServingBackend:
    """Runs a service's revisions as ECS Fargate service deployments; see the module docstring."""

    def __init__(
        self,
        region: str,
        *,
        ecs_client: BaseClient | None = None,
        autoscaling_client: BaseClient | None = None,
        elbv2_client: BaseClient | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.region = region
        self.ecs = ecs_client if ecs_client is not None else aws_client("ecs", region=region)
        self.autoscaling = (
            autoscaling_client
            if autoscaling_client is not None
            else aws_client("application-autoscaling", region=region)
        )
        self.elbv2 = elbv2_client if elbv2_client is not None else aws_client("elbv2", region=region)
        self.clock = clock

    # --- the ServingBackend interface -----------------------------------------------------------------------------

    def deploy(self, service: ServiceSpec, revision: RevisionSpec) -> Handle:
        """Register the revision (or take `reuse`), then create the service with it or update the service to it."""
        strategy = revision.rollout.strategy
        metric = service.autoscaling.metric if service.autoscaling else None
        parsed, problems = _parse_settings(service.settings, strategy, metric)
        for extra in (service_problems(service), revision_problems(revision)):
            for field, messages in extra.items():
                problems.setdefault(field, []).extend(messages)
        reused = _TASK_DEFINITION_ARN.fullmatch(revision.reuse) if revision.reuse else None
        if reused is not None and reused.group(1) != service.name:
            _add(problems, "reuse", f"{revision.reuse} is not a revision of {service.name} (family {reused.group(1)})")
        if parsed is None or problems:
            raise InvalidSpec(f"cannot deploy {revision.deployment_id} of {service.name} on Fargate", problems)
        settings = parsed

        current = self._find_service(settings.cluster, service.name)
        current_revision = str(current.get("taskDefinition") or "") if current else ""
        bake = str(_ceil_minutes(revision.rollout.bake_minutes))
        if revision.reuse:
            revision_arn, tags = self._task_definition_tags(revision.reuse)
        else:
            found = self._registered(service, revision, settings)
            if found is None:
                tags = {TAG_REPLACES: current_revision, TAG_BAKE: bake}
                revision_arn = self._register(service, revision, settings, tags)
            else:
                revision_arn, tags = found

        if current is not None and current_revision == revision_arn:
            # deploy() again for this deployment: the service already runs it, so start nothing more.
            previous = tags.get(TAG_REPLACES, "")
            if not previous and service.autoscaling is not None:
                # This deployment created the service; the first attempt may have died before autoscaling.
                self._apply_autoscaling(service, settings, service.autoscaling, strategy)
            rollout_id = self._rollout_of(settings.cluster, current, revision_arn)
            return Handle(revision=revision_arn, rollout_id=rollout_id, previous_revision=previous)

        wanted = {TAG_REPLACES: current_revision, TAG_BAKE: bake}
        if any(tags.get(key) != value for key, value in wanted.items()) or TAG_VERDICT in tags:
            self._retag(revision_arn, wanted, remove=(TAG_VERDICT,))

        configuration = deployment_configuration(revision.rollout, settings.alarm_names)
        if current is None:
            self._check_health_on_ping(_target_groups(settings, strategy))
            response = self._call(
                self.ecs,
                "create_service",
                f"create ECS service {service.name} in cluster {settings.cluster}",
                **self._create_service_request(service, revision, settings, revision_arn, configuration),
            )
            if service.autoscaling is not None:
                self._apply_autoscaling(service, settings, service.autoscaling, strategy)
        else:
            request: dict[str, Any] = {
                "cluster": settings.cluster,
                "service": service.name,
                "taskDefinition": revision_arn,
                "deploymentConfiguration": configuration,
            }
            if current.get("propagateTags") != PROPAGATE_TAGS:
                # A service made when tasks took the service's tags: its new tasks carry the deployment tag too.
                request["propagateTags"] = PROPAGATE_TAGS
            if strategy != "rolling" and not _has_advanced_configuration(current):
                # The service was made for rolling updates; ECS needs the second target group to switch traffic.
                self._check_health_on_ping(_target_groups(settings, strategy))
                request["loadBalancers"] = [_load_balancer(settings, strategy)]
            response = self._call(
                self.ecs, "update_service", f"update ECS service {service.name} to {revision_arn}", **request
            )
        updated = response.get("service") or {}
        rollout_id = str(updated.get("currentServiceDeployment") or "")
        if not rollout_id:
            rollout_id = self._find_rollout(settings.cluster, service.name, revision_arn)
        return Handle(revision=revision_arn, rollout_id=rollout_id, previous_revision=current_revision)

    def progress(self, service: ServiceSpec, handle: Handle) -> RolloutStatus:
        """The rollout as ECS reports it, in base.Phase terms (see the module docstring)."""
        cluster = self._cluster(service)
        current = self._require_service(cluster, service.name)
        rollout_id = handle.rollout_id or self._rollout_of(cluster, current, handle.revision)
        events = _events(current, None)
        if not rollout_id:
            return RolloutStatus(
                phase="starting",
                traffic_percent=0.0,
                desired=int(current.get("desiredCount") or 0),
                running=0,
                healthy=0,
                message=f"ECS has not reported a service deployment of {handle.revision} yet",
                events=events,
            )
        deployment = self._service_deployment(rollout_id)
        status = str(deployment.get("status") or "")
        tags: dict[str, str] = {}
        later: dict[str, Any] | None = None
        if status == "SUCCESSFUL":
            tags = self._task_definition_tags(handle.revision)[1]
            serving = str(current.get("taskDefinition") or "")
            if serving and serving != handle.revision:
                later_id = self._rollout_of(cluster, current, serving)
                later = self._service_deployment(later_id) if later_id else {}
        ended = status in ("ROLLBACK_SUCCESSFUL", "ROLLBACK_FAILED", "STOPPED")
        healthy = 0 if ended else self._healthy_tasks(cluster, service.name, handle.revision)
        return rollout_status(
            handle,
            service=current,
            deployment=deployment,
            later=later,
            tags=tags,
            healthy=healthy,
            now=self.clock(),
        )

    def promote(self, service: ServiceSpec, handle: Handle) -> RolloutStatus:
        """CONTINUE our paused hook (blue/green family), or record the verdict (rolling, after ECS finished).
        Before the pause there is nothing to continue: ECS's canary or linear steps cannot be skipped, so the status
        is returned unchanged."""
        cluster = self._cluster(service)
        current = self._require_service(cluster, service.name)
        rollout_id = handle.rollout_id or self._rollout_of(cluster, current, handle.revision)
        if rollout_id:
            deployment = self._service_deployment(rollout_id)
            status = str(deployment.get("status") or "")
            hook = _waiting_hook(deployment)
            if status in _RUNNING_STATUSES and hook is not None:
                self._continue(rollout_id, hook, "CONTINUE")
                if service.autoscaling is not None and service.autoscaling.metric == "requests":
                    # ECS has switched production to the other target group: the request count to track is there now.
                    settings = _settings_or_fail(service, "rolling", "requests")
                    self._apply_autoscaling(service, settings, service.autoscaling, "all_at_once")
            elif (
                status == "SUCCESSFUL"
                and _strategy(deployment, current) == "ROLLING"
                and current.get("taskDefinition") == handle.revision
            ):
                tags = self._task_definition_tags(handle.revision)[1]
                if TAG_VERDICT not in tags:
                    self._retag(handle.revision, {TAG_VERDICT: PROMOTED})
        return self.progress(service, handle)

    def roll_back(self, service: ServiceSpec, handle: Handle) -> RolloutStatus:
        """ROLLBACK at our hook, StopServiceDeployment ROLLBACK mid-rollout, UpdateService to the previous revision
        after it finished; with no previous revision, scale the service to nothing."""
        cluster = self._cluster(service)
        current = self._require_service(cluster, service.name)
        rollout_id = handle.rollout_id or self._rollout_of(cluster, current, handle.revision)
        deployment = self._service_deployment(rollout_id) if rollout_id else {}
        status = str(deployment.get("status") or "")
        if not handle.previous_revision:
            stopped = int(current.get("desiredCount") or 0) == 0 and _waiting_hook(deployment) is None
            if not stopped and (status in _RUNNING_STATUSES or status == "SUCCESSFUL" or not rollout_id):
                self._stop_service(service, cluster, handle, deployment, rollout_id)
        elif status in _RUNNING_STATUSES:
            self._reverse(rollout_id, deployment, service, cluster, handle, current)
        elif (status == "SUCCESSFUL" or not rollout_id) and current.get("taskDefinition") == handle.revision:
            # Finished (or never reported by ECS): a new deployment of the previous revision.
            self._update_to_previous(cluster, service, handle, current)
        return self.progress(service, handle)

    def scale(self, service: ServiceSpec) -> None:
        """desiredCount within the autoscaling bounds; register (or remove) the scalable target and its policy."""
        metric = service.autoscaling.metric if service.autoscaling else None
        parsed, problems = _parse_settings(service.settings, "rolling", metric)
        for field, messages in service_problems(service).items():
            problems.setdefault(field, []).extend(messages)
        if parsed is None or problems:
            raise InvalidSpec(f"cannot scale {service.name} on Fargate", problems)
        settings = parsed
        current = self._require_service(settings.cluster, service.name)
        scaling = service.autoscaling
        desired = service.desired_count
        if scaling is not None:
            desired = min(max(desired, scaling.min_count), scaling.max_count)
        self._call(
            self.ecs,
            "update_service",
            f"set the desired count of ECS service {service.name} to {desired}",
            cluster=settings.cluster,
            service=service.name,
            desiredCount=desired,
        )
        if scaling is not None:
            strategy = "rolling" if _strategy({}, current) == "ROLLING" else "all_at_once"
            self._apply_autoscaling(service, settings, scaling, strategy)
        else:
            self._remove_autoscaling(service, settings)

    def status(self, service: ServiceSpec) -> ServiceStatus:
        """The address (settings `address`, else the load balancer's DNS name) and the revision serving all traffic:
        the PRIMARY deployment's once it is the only one or completed, else the one it is replacing."""
        cluster = self._cluster(service)
        current = self._require_service(cluster, service.name)
        deployments = list(current.get("deployments") or [])
        primary = next((d for d in deployments if d.get("status") == "PRIMARY"), None)
        others = sorted(
            (d for d in deployments if d.get("status") == "ACTIVE"),
            key=lambda d: _epoch(d.get("createdAt")) or 0.0,
            reverse=True,
        )
        if primary is not None and (not others or primary.get("rolloutState") == "COMPLETED"):
            serving = str(primary.get("taskDefinition") or "")
        elif others:
            serving = str(others[0].get("taskDefinition") or "")
        else:
            serving = str(current.get("taskDefinition") or "")
        address = _text(service.settings, "address")
        load_balancer = _text(service.settings, "load_balancer_arn")
        if not address and _LOAD_BALANCER.fullmatch(load_balancer):
            found = self._call(
                self.elbv2,
                "describe_load_balancers",
                f"describe load balancer {load_balancer}",
                LoadBalancerArns=[load_balancer],
            )
            names = [lb.get("DNSName") for lb in found.get("LoadBalancers", []) if lb.get("DNSName")]
            address = f"http://{names[0]}" if names else ""
        return ServiceStatus(
            address=address,
            serving_revision=serving,
            desired=int(current.get("desiredCount") or 0),
            running=int(current.get("runningCount") or 0),
        )

    def usage(self, service: ServiceSpec, *, since: datetime) -> list[ServingSpan]:
        """The service's tasks that ran at some moment since `since`, as ECS still knows them (module docstring)."""
        if since.tzinfo is None:
            raise ValueError("usage(since=...) needs a timezone-aware datetime")
        cluster = self._cluster(service)
        task_arns: dict[str, None] = {}  # a task that stops between the two listings is in both
        for desired in ("RUNNING", "STOPPED"):
            task_arns.update(dict.fromkeys(self._list_tasks(cluster, service.name, desired)))
        arns = list(task_arns)
        revisions: dict[str, tuple[str, int, int]] = {}
        spans: list[ServingSpan] = []
        for task in self._described_tasks(cluster, arns, service.name):
            started = task.get("startedAt")
            if not isinstance(started, datetime):
                continue  # never started: provisioning, or it failed before its container ran
            stopped = task.get("stoppedAt")
            ended = stopped.astimezone(UTC) if isinstance(stopped, datetime) else None
            if ended is not None and ended < since:
                continue
            definition = str(task.get("taskDefinitionArn") or "")
            if definition not in revisions:
                revisions[definition] = self._revision_of(definition)
            revision, cpu, memory = revisions[definition]
            spans.append(
                ServingSpan(
                    revision=revision,
                    process=str(task.get("taskArn") or ""),
                    started_at=started.astimezone(UTC),
                    ended_at=ended,
                    cpu=_whole(task.get("cpu"), cpu),
                    memory=_whole(task.get("memory"), memory),
                )
            )
        spans.sort(key=lambda span: (span.started_at, span.process))
        return spans

    def _list_tasks(self, cluster: str, name: str, desired: str) -> list[str]:
        """Every task ARN ListTasks gives for the service with that desired status; none for an unknown service."""
        found: list[str] = []
        request: dict[str, Any] = {"cluster": cluster, "serviceName": name, "desiredStatus": desired, "maxResults": 100}
        with aws_errors(f"list the {desired.lower()} tasks of ECS service {name} in cluster {cluster}"):
            while True:
                try:
                    page = self.ecs.list_tasks(**request)
                except ClientError as exc:
                    if _error_code(exc) == "ServiceNotFoundException":
                        return []
                    if _error_code(exc) == "ClusterNotFoundException":
                        raise BackendError(
                            f"the ECS cluster {cluster!r} (setting cluster) does not exist in {self.region}",
                            permanent=True,
                        ) from exc
                    raise
                found.extend(page.get("taskArns") or [])
                token = page.get("nextToken")
                if not token or token == request.get("nextToken"):
                    return found
                request["nextToken"] = token

    def _revision_of(self, task_definition_arn: str) -> tuple[str, int, int]:
        """(the deployment id its tasks serve, its CPU units, its MiB) from the task definition (module docstring)."""
        default = (task_definition_arn, RevisionSpec.cpu, RevisionSpec.memory)
        if not task_definition_arn:
            return default
        action = f"describe task definition {task_definition_arn}"
        with aws_errors(action):
            try:
                response = self.ecs.describe_task_definition(taskDefinition=task_definition_arn, include=["TAGS"])
            except ClientError as exc:
                if _error_code(exc) == "ClientException" and "unable to describe" in _error_message(exc):
                    return default  # deleted since: its tasks still ran
                raise
        definition = response.get("taskDefinition") or {}
        containers = definition.get("containerDefinitions") or []
        container = next(
            (c for c in containers if c.get("name") == CONTAINER_NAME), containers[0] if containers else {}
        )
        variables = {str(v.get("name")): str(v.get("value") or "") for v in container.get("environment") or []}
        revision = variables.get("REVISION") or _tags(response.get("tags")).get(TAG_DEPLOYMENT) or task_definition_arn
        return (
            revision,
            _whole(definition.get("cpu"), RevisionSpec.cpu),
            _whole(definition.get("memory"), RevisionSpec.memory),
        )

    # --- requests ---------------------------------------------------------------------------------------------

    def task_definition_request(
        self, service: ServiceSpec, revision: RevisionSpec, settings: _Settings, tags: Mapping[str, str]
    ) -> dict[str, Any]:
        """RegisterTaskDefinition's parameters for the revision."""
        environment = dict(revision.environment)
        drain = _float(environment.get("DRAIN_SECONDS"), 15.0)
        stop_timeout = min(MAX_STOP_TIMEOUT_SECONDS, math.ceil(drain) + STOP_MARGIN_SECONDS)
        all_tags = {**service.tags, **revision.tags, TAG_DEPLOYMENT: deployment_tag(revision), **tags}
        return {
            "family": service.name,
            "taskRoleArn": settings.task_role_arn,
            "executionRoleArn": settings.execution_role_arn,
            "networkMode": "awsvpc",
            "requiresCompatibilities": ["FARGATE"],
            "cpu": str(revision.cpu),
            "memory": str(revision.memory),
            "containerDefinitions": [
                {
                    "name": CONTAINER_NAME,
                    "image": revision.image,
                    "essential": True,
                    "portMappings": [{"containerPort": CONTAINER_PORT, "protocol": "tcp"}],
                    "environment": [{"name": name, "value": value} for name, value in sorted(environment.items())],
                    "logConfiguration": {
                        "logDriver": "awslogs",
                        "options": {
                            "awslogs-group": settings.log_group,
                            "awslogs-region": self.region,
                            "awslogs-stream-prefix": service.name,
                        },
                    },
                    # /ping answers 200 once the model is loaded and its hash checked (as the image's HEALTHCHECK).
                    "healthCheck": {
                        "command": [
                            "CMD",
                            "python",
                            "-c",
                            f"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{CONTAINER_PORT}/ping',"
                            " timeout=4)",
                        ],
                        "interval": 10,
                        "timeout": 5,
                        "retries": 3,
                        "startPeriod": 60,
                    },
                    "stopTimeout": stop_timeout,
                }
            ],
            "tags": _tag_list(all_tags),
        }

    def _create_service_request(
        self,
        service: ServiceSpec,
        revision: RevisionSpec,
        settings: _Settings,
        revision_arn: str,
        configuration: Mapping[str, Any],
    ) -> dict[str, Any]:
        desired = service.desired_count
        if service.autoscaling is not None:
            desired = min(max(desired, service.autoscaling.min_count), service.autoscaling.max_count)
        token = hashlib.sha256(f"{settings.cluster}\n{service.name}\n{revision.deployment_id}".encode()).hexdigest()
        request: dict[str, Any] = {
            "cluster": settings.cluster,
            "serviceName": service.name,
            "taskDefinition": revision_arn,
            "desiredCount": desired,
            "clientToken": token[:36],
            "launchType": "FARGATE",
            "schedulingStrategy": "REPLICA",
            "deploymentController": {"type": "ECS"},
            "deploymentConfiguration": dict(configuration),
            "loadBalancers": [_load_balancer(settings, revision.rollout.strategy)],
            "networkConfiguration": {
                "awsvpcConfiguration": {
                    "subnets": list(settings.subnets),
                    "securityGroups": list(settings.security_groups),
                    "assignPublicIp": "ENABLED" if settings.assign_public_ip else "DISABLED",
                }
            },
            "healthCheckGracePeriodSeconds": settings.health_check_grace_seconds,
            # Tasks are what Fargate bills: each carries its revision's tags (project, model, environment, deployment).
            "propagateTags": PROPAGATE_TAGS,
            "enableECSManagedTags": True,
        }
        if service.tags:
            request["tags"] = _tag_list(service.tags)
        return request

    # --- task definitions -------------------------------------------------------------------------------------

    def _register(
        self, service: ServiceSpec, revision: RevisionSpec, settings: _Settings, tags: Mapping[str, str]
    ) -> str:
        response = self._call(
            self.ecs,
            "register_task_definition",
            f"register a task definition revision of {service.name} for deployment {revision.deployment_id}",
            **self.task_definition_request(service, revision, settings, tags),
        )
        return str(response["taskDefinition"]["taskDefinitionArn"])

    def _registered(
        self, service: ServiceSpec, revision: RevisionSpec, settings: _Settings
    ) -> tuple[str, dict[str, str]] | None:
        """The family's latest revision when it was registered for this deployment (checked to be the same), or
        None: a deploy repeated after its RegisterTaskDefinition registers nothing more."""
        action = f"describe the latest task definition of {service.name}"
        with aws_errors(action):
            try:
                response = self.ecs.describe_task_definition(taskDefinition=service.name, include=["TAGS"])
            except ClientError as exc:
                if _error_code(exc) == "ClientException" and "unable to describe" in _error_message(exc):
                    return None
                raise
        tags = _tags(response.get("tags"))
        if tags.get(TAG_DEPLOYMENT) != deployment_tag(revision):
            return None
        found = response["taskDefinition"]
        expected = self.task_definition_request(service, revision, settings, {})
        different = _differences(found, expected)
        if different:
            raise BackendError(
                f"task definition {found.get('taskDefinitionArn')} was registered for deployment "
                f"{revision.deployment_id} with other values for {', '.join(different)}; it is not this deployment's "
                "revision (deploy it under a new deployment id)",
                permanent=True,
            )
        return str(found["taskDefinitionArn"]), tags

    def _task_definition_tags(self, revision_arn: str) -> tuple[str, dict[str, str]]:
        action = f"describe task definition {revision_arn}"
        with aws_errors(action):
            try:
                response = self.ecs.describe_task_definition(taskDefinition=revision_arn, include=["TAGS"])
            except ClientError as exc:
                if _error_code(exc) == "ClientException" and "unable to describe" in _error_message(exc):
                    raise DeploymentNotFound(f"no task definition {revision_arn}") from exc
                raise
        return str(response["taskDefinition"]["taskDefinitionArn"]), _tags(response.get("tags"))

    def _retag(self, revision_arn: str, tags: Mapping[str, str], remove: Iterable[str] = ()) -> None:
        self._call(
            self.ecs,
            "tag_resource",
            f"tag task definition {revision_arn}",
            resourceArn=revision_arn,
            tags=_tag_list(tags),
        )
        keys = [key for key in remove if key not in tags]
        if keys:
            self._call(
                self.ecs,
                "untag_resource",
                f"untag task definition {revision_arn}",
                resourceArn=revision_arn,
                tagKeys=keys,
            )

    # --- services and service deployments ---------------------------------------------------------------------

    def _find_service(self, cluster: str, name: str) -> dict[str, Any] | None:
        action = f"describe ECS service {name} in cluster {cluster}"
        with aws_errors(action):
            try:
                response = self.ecs.describe_services(cluster=cluster, services=[name])
            except ClientError as exc:
                if _error_code(exc) == "ClusterNotFoundException":
                    raise BackendError(
                        f"the ECS cluster {cluster!r} (setting cluster) does not exist in {self.region}",
                        permanent=True,
                    ) from exc
                raise
        for found in response.get("services") or []:
            state = found.get("status")
            if state == "DRAINING":
                raise BackendError(f"ECS service {name} is being deleted; try again once it is gone", permanent=False)
            if state != "INACTIVE":
                return dict(found)
        return None

    def _require_service(self, cluster: str, name: str) -> dict[str, Any]:
        found = self._find_service(cluster, name)
        if found is None:
            raise DeploymentNotFound(f"no ECS service {name} in cluster {cluster}")
        return found

    def _rollout_of(self, cluster: str, current: Mapping[str, Any], revision_arn: str) -> str:
        """The service deployment that rolls out `revision_arn`: the service's current one when the service is set
        to that revision, else looked up."""
        if current.get("taskDefinition") == revision_arn and current.get("currentServiceDeployment"):
            return str(current["currentServiceDeployment"])
        return self._find_rollout(cluster, str(current.get("serviceName") or ""), revision_arn)

    def _find_rollout(self, cluster: str, service_name: str, revision_arn: str) -> str:
        """The newest service deployment whose target service revision runs `revision_arn`, or ""."""
        briefs: list[dict[str, Any]] = []
        request: dict[str, Any] = {"service": service_name, "cluster": cluster, "maxResults": 100}
        for _ in range(3):
            page = self._call(
                self.ecs, "list_service_deployments", f"list the service deployments of {service_name}", **request
            )
            briefs.extend(page.get("serviceDeployments") or [])
            if not page.get("nextToken"):
                break
            request["nextToken"] = page["nextToken"]
        briefs.sort(key=lambda b: _epoch(b.get("createdAt")) or 0.0, reverse=True)
        briefs = [b for b in briefs if b.get("targetServiceRevisionArn")][:20]
        if not briefs:
            return ""
        wanted = sorted({str(b["targetServiceRevisionArn"]) for b in briefs})
        revisions = self._call(
            self.ecs,
            "describe_service_revisions",
            f"describe the service revisions of {service_name}",
            serviceRevisionArns=wanted,
        )
        task_definitions = {
            str(r.get("serviceRevisionArn")): str(r.get("taskDefinition") or "")
            for r in revisions.get("serviceRevisions") or []
        }
        for brief in briefs:
            if task_definitions.get(str(brief["targetServiceRevisionArn"])) == revision_arn:
                return str(brief["serviceDeploymentArn"])
        return ""

    def _service_deployment(self, arn: str) -> dict[str, Any]:
        response = self._call(
            self.ecs,
            "describe_service_deployments",
            f"describe service deployment {arn}",
            serviceDeploymentArns=[arn],
        )
        for found in response.get("serviceDeployments") or []:
            if found.get("serviceDeploymentArn") == arn:
                return dict(found)
        reasons = ", ".join(str(f.get("reason")) for f in response.get("failures") or []) or "not found"
        raise DeploymentNotFound(f"ECS does not describe service deployment {arn} ({reasons})")

    def _healthy_tasks(self, cluster: str, name: str, revision_arn: str) -> int:
        task_arns: list[str] = []
        with aws_errors(f"list the tasks of ECS service {name}"):
            pages = self.ecs.get_paginator("list_tasks").paginate(
                cluster=cluster, serviceName=name, desiredStatus="RUNNING", PaginationConfig={"MaxItems": 500}
            )
            for page in pages:
                task_arns.extend(page.get("taskArns") or [])
        return sum(
            1
            for task in self._described_tasks(cluster, task_arns, name)
            if task.get("taskDefinitionArn") == revision_arn
            and task.get("lastStatus") == "RUNNING"
            and task.get("healthStatus") == "HEALTHY"
        )

    def _described_tasks(self, cluster: str, arns: list[str], service_name: str) -> Iterator[dict[str, Any]]:
        """DescribeTasks of `arns`, 100 at a time (its limit)."""
        for offset in range(0, len(arns), 100):
            described = self._call(
                self.ecs,
                "describe_tasks",
                f"describe the tasks of ECS service {service_name}",
                cluster=cluster,
                tasks=arns[offset : offset + 100],
            )
            yield from described.get("tasks") or []

    def _continue(self, rollout_id: str, hook: _Hook, action: str) -> None:
        """ContinueServiceDeployment; a hook another call resolved first is left as it is."""
        description = f"{action.lower()} service deployment {rollout_id} at its paused hook"
        with aws_errors(description):
            try:
                self.ecs.continue_service_deployment(
                    serviceDeploymentArn=rollout_id, hookId=hook.hook_id, action=action
                )
                return
            except ClientError as exc:
                if not translate_client_error(exc, action=description).permanent:
                    raise
                refusal = exc
        now = _waiting_hook(self._service_deployment(rollout_id))
        if now is not None and now.hook_id == hook.hook_id:
            raise translate_client_error(refusal, action=description) from refusal

    def _reverse(
        self,
        rollout_id: str,
        deployment: Mapping[str, Any],
        service: ServiceSpec,
        cluster: str,
        handle: Handle,
        current: Mapping[str, Any],
    ) -> None:
        """Roll back a service deployment still in progress: at our hook, or by stopping it."""
        hook = _waiting_hook(deployment)
        if hook is not None:
            self._continue(rollout_id, hook, "ROLLBACK")
            return
        action = f"stop service deployment {rollout_id} and roll it back"
        with aws_errors(action):
            try:
                self.ecs.stop_service_deployment(serviceDeploymentArn=rollout_id, stopType="ROLLBACK")
                return
            except ClientError as exc:
                if not translate_client_error(exc, action=action).permanent:
                    raise
                refusal = exc
        # ECS refuses to stop a deployment that has just finished or paused: look again and act on what it is now.
        now = self._service_deployment(rollout_id)
        status = str(now.get("status") or "")
        if status in _RETREATING_STATUSES or status.startswith("ROLLBACK") or status == "STOPPED":
            return
        if status == "SUCCESSFUL":
            fresh = self._require_service(cluster, service.name)
            if fresh.get("taskDefinition") == handle.revision:
                self._update_to_previous(cluster, service, handle, fresh)
            return
        hook = _waiting_hook(now)
        if hook is not None:
            self._continue(rollout_id, hook, "ROLLBACK")
            return
        raise translate_client_error(refusal, action=action) from refusal

    def _update_to_previous(
        self, cluster: str, service: ServiceSpec, handle: Handle, current: Mapping[str, Any]
    ) -> None:
        """After the rollout finished: a new ECS deployment of the previous revision, at once and without our hook.
        Its circuit breaker and alarms do not roll back, or they would return to the revision being rolled back."""
        self._retag(handle.revision, {TAG_VERDICT: ROLLED_BACK})
        alarms = current.get("deploymentConfiguration", {}).get("alarms") or {}
        if _strategy({}, current) == "ROLLING":
            configuration: dict[str, Any] = {
                "strategy": "ROLLING",
                "deploymentCircuitBreaker": {"enable": True, "rollback": False},
                "maximumPercent": 200,
                "minimumHealthyPercent": 100,
                "lifecycleHooks": [],
            }
        else:
            configuration = {"strategy": "BLUE_GREEN", "bakeTimeInMinutes": 0, "lifecycleHooks": []}
        if alarms.get("alarmNames"):
            configuration["alarms"] = {"alarmNames": list(alarms["alarmNames"]), "enable": False, "rollback": False}
        self._call(
            self.ecs,
            "update_service",
            f"roll ECS service {service.name} back to {handle.previous_revision}",
            cluster=cluster,
            service=service.name,
            taskDefinition=handle.previous_revision,
            deploymentConfiguration=configuration,
        )

    def _stop_service(
        self,
        service: ServiceSpec,
        cluster: str,
        handle: Handle,
        deployment: Mapping[str, Any],
        rollout_id: str,
    ) -> None:
        """No previous revision to return to: the service serves nothing (autoscaling would bring tasks back)."""
        self._retag(handle.revision, {TAG_VERDICT: ROLLED_BACK})
        hook = _waiting_hook(deployment)
        if rollout_id and hook is not None:
            # Let ECS finish the deployment rather than time out at the hook; it finishes with no tasks.
            self._continue(rollout_id, hook, "CONTINUE")
        self._remove_autoscaling(service, _settings_or_fail(service, "rolling", None))
        self._call(
            self.ecs,
            "update_service",
            f"scale ECS service {service.name} to no tasks",
            cluster=cluster,
            service=service.name,
            desiredCount=0,
        )

    # --- autoscaling --------------------------------------------------------------------------------------------

    def _apply_autoscaling(
        self, service: ServiceSpec, settings: _Settings, scaling: Autoscaling, strategy: str
    ) -> None:
        resource_id = f"service/{settings.cluster_name}/{service.name}"
        self._call(
            self.autoscaling,
            "register_scalable_target",
            f"register {resource_id} with Application Auto Scaling",
            ServiceNamespace="ecs",
            ResourceId=resource_id,
            ScalableDimension="ecs:service:DesiredCount",
            MinCapacity=scaling.min_count,
            MaxCapacity=scaling.max_count,
            # Taken when the target is created (TagResource would change them later); it costs nothing itself.
            **({"Tags": dict(service.tags)} if service.tags else {}),
        )
        metric: dict[str, Any]
        if scaling.metric == "requests":
            target_group = self._production_target_group(settings, strategy)
            metric = {
                "PredefinedMetricType": "ALBRequestCountPerTarget",
                "ResourceLabel": resource_label(settings.load_balancer_arn, target_group),
            }
        else:
            metric = {"PredefinedMetricType": "ECSServiceAverageCPUUtilization"}
        self._call(
            self.autoscaling,
            "put_scaling_policy",
            f"put the {scaling.metric} target-tracking policy of {resource_id}",
            PolicyName=f"{service.name}-{scaling.metric}",
            ServiceNamespace="ecs",
            ResourceId=resource_id,
            ScalableDimension="ecs:service:DesiredCount",
            PolicyType="TargetTrackingScaling",
            TargetTrackingScalingPolicyConfiguration={
                "TargetValue": float(scaling.target),
                "PredefinedMetricSpecification": metric,
                "ScaleInCooldown": SCALE_IN_COOLDOWN_SECONDS,
                "ScaleOutCooldown": SCALE_OUT_COOLDOWN_SECONDS,
            },
        )
        # A policy for the other metric (autoscaling switched from requests to cpu, or back) would fight this one.
        other = "cpu" if scaling.metric == "requests" else "requests"
        self._delete_policies(resource_id, [f"{service.name}-{other}"])

    def _remove_autoscaling(self, service: ServiceSpec, settings: _Settings) -> None:
        resource_id = f"service/{settings.cluster_name}/{service.name}"
        existing = self._call(
            self.autoscaling,
            "describe_scalable_targets",
            f"describe the scalable target {resource_id}",
            ServiceNamespace="ecs",
            ResourceIds=[resource_id],
            ScalableDimension="ecs:service:DesiredCount",
        )
        if not existing.get("ScalableTargets"):
            return
        # Deregistering deletes the target's policies too, but only after them can nothing scale the service again.
        self._delete_policies(resource_id, [f"{service.name}-requests", f"{service.name}-cpu"])
        self._ignore_missing(
            self.autoscaling,
            "deregister_scalable_target",
            f"deregister {resource_id} from Application Auto Scaling",
            ServiceNamespace="ecs",
            ResourceId=resource_id,
            ScalableDimension="ecs:service:DesiredCount",
        )

    def _delete_policies(self, resource_id: str, names: Sequence[str]) -> None:
        existing = self._call(
            self.autoscaling,
            "describe_scaling_policies",
            f"describe the scaling policies of {resource_id}",
            PolicyNames=list(names),
            ServiceNamespace="ecs",
            ResourceId=resource_id,
            ScalableDimension="ecs:service:DesiredCount",
        )
        for policy in existing.get("ScalingPolicies") or []:
            if policy.get("PolicyName") not in names:
                continue
            self._ignore_missing(
                self.autoscaling,
                "delete_scaling_policy",
                f"delete scaling policy {policy['PolicyName']} of {resource_id}",
                PolicyName=policy["PolicyName"],
                ServiceNamespace="ecs",
                ResourceId=resource_id,
                ScalableDimension="ecs:service:DesiredCount",
            )

    def _check_health_on_ping(self, target_groups: Sequence[str]) -> None:
        """Before the service is put behind them: each target group checks its targets' health on /ping (HTTP, the
        traffic port, 200), as TARGET_GROUP_HEALTH_CHECK says; one that checks anything else (an ALB's default is
        `/`, which serving answers 404, so no task would ever be healthy) is changed with ModifyTargetGroup. A group
        already right is left alone; a change that is refused (no elasticloadbalancing:ModifyTargetGroup) stops the
        deploy before the service is created, saying which group."""
        response = self._call(
            self.elbv2,
            "describe_target_groups",
            f"describe target groups {', '.join(target_groups)}",
            TargetGroupArns=list(target_groups),
        )
        for group in response.get("TargetGroups") or []:
            found = {key: group.get(key) for key in TARGET_GROUP_HEALTH_CHECK}
            found["Matcher"] = {"HttpCode": str((group.get("Matcher") or {}).get("HttpCode") or "")}
            if found["HealthCheckPort"] == str(CONTAINER_PORT):
                found["HealthCheckPort"] = "traffic-port"  # the same port, named by number
            if found == TARGET_GROUP_HEALTH_CHECK:
                continue
            arn = str(group["TargetGroupArn"])
            checked = " ".join(
                str(value) for value in (found["HealthCheckProtocol"], found["HealthCheckPath"]) if value
            )
            self._call(
                self.elbv2,
                "modify_target_group",
                f"point the health check of target group {arn} at /ping (it checked {checked or 'nothing'} on port "
                f"{found['HealthCheckPort']})",
                TargetGroupArn=arn,
                **TARGET_GROUP_HEALTH_CHECK,
            )

    def _production_target_group(self, settings: _Settings, strategy: str) -> str:
        """The target group taking production traffic: ECS switches between the two of a blue/green service, so it
        is read from the production listener rule (the most weight)."""
        if strategy == "rolling" or not _LISTENER_RULE.fullmatch(settings.production_listener_rule_arn):
            return settings.target_group_arn
        response = self._call(
            self.elbv2,
            "describe_rules",
            f"describe listener rule {settings.production_listener_rule_arn}",
            RuleArns=[settings.production_listener_rule_arn],
        )
        weights: dict[str, int] = {}
        for rule in response.get("Rules") or []:
            for action in rule.get("Actions") or []:
                if action.get("Type") != "forward":
                    continue
                if action.get("TargetGroupArn"):
                    weights[str(action["TargetGroupArn"])] = weights.get(str(action["TargetGroupArn"]), 0) + 1
                for group in (action.get("ForwardConfig") or {}).get("TargetGroups") or []:
                    arn = str(group.get("TargetGroupArn") or "")
                    if arn:
                        weights[arn] = max(weights.get(arn, 0), int(group.get("Weight", 1)))
        known = {settings.target_group_arn, settings.alternate_target_group_arn}
        candidates = [
            (weight, arn == settings.target_group_arn, arn) for arn, weight in weights.items() if arn in known
        ]
        return max(candidates)[2] if candidates else settings.target_group_arn

    # --- helpers ----------------------------------------------------------------------------------------------

    def _cluster(self, service: ServiceSpec) -> str:
        cluster = _text(service.settings, "cluster")
        if not _CLUSTER.fullmatch(cluster):
            raise InvalidSpec(
                f"cannot reach {service.name} on Fargate",
                {"cluster": [_CLUSTER_MESSAGE if cluster else "is not set: the ECS cluster name or ARN"]},
            )
        return cluster

    @staticmethod
    def _call(client: BaseClient, operation: str, action: str, **params: Any) -> dict[str, Any]:
        with aws_errors(action):
            response: dict[str, Any] = getattr(client, operation)(**params)
        return response

    @staticmethod
    def _ignore_missing(client: BaseClient, operation: str, action: str, **params: Any) -> None:
        with aws_errors(action):
            try:
                getattr(client, operation)(**params)
            except ClientError as exc:
                if _error_code(exc) != "ObjectNotFoundException":
                    raise


# --- the deployment configuration and the status mapping (pure) --------------------------------------------------


def deployment_configuration(rollout: Rollout, alarm_names: Sequence[str] = ()) -> dict[str, Any]:
    """CreateService/UpdateService `deploymentConfiguration` for `rollout` (see the module docstring)."""
    configuration: dict[str, Any] = {"strategy": ECS_STRATEGIES[rollout.strategy]}
    if rollout.strategy == "rolling":
        configuration.update(
            {
                "deploymentCircuitBreaker": {"enable": True, "rollback": True},
                "maximumPercent": 200,
                "minimumHealthyPercent": 100,
                # No hook for a rolling update; clear one a blue/green rollout left on the service.
                "lifecycleHooks": [],
            }
        )
    else:
        verdict_bake = 0.0 if rollout.strategy == "canary" else rollout.bake_minutes
        configuration["bakeTimeInMinutes"] = 0
        configuration["lifecycleHooks"] = [
            {
                "targetType": "PAUSE",
                "lifecycleStages": [HOOK_STAGE],
                "timeoutConfiguration": {
                    "timeoutInMinutes": _ceil_minutes(verdict_bake) + VERDICT_MINUTES,
                    "action": "ROLLBACK",
                },
            }
        ]
        if rollout.strategy == "canary":
            configuration["canaryConfiguration"] = {
                "canaryPercent": round(float(rollout.canary_percent), 1),
                "canaryBakeTimeInMinutes": _ceil_minutes(rollout.bake_minutes),
            }
        elif rollout.strategy == "linear":
            configuration["linearConfiguration"] = {
                "stepPercent": round(float(rollout.linear_step_percent), 1),
                "stepBakeTimeInMinutes": _ceil_minutes(rollout.linear_interval_minutes),
            }
    if alarm_names:
        configuration["alarms"] = {"alarmNames": list(alarm_names), "enable": True, "rollback": True}
    return configuration


def rollout_status(
    handle: Handle,
    *,
    service: Mapping[str, Any],
    deployment: Mapping[str, Any],
    later: Mapping[str, Any] | None = None,
    tags: Mapping[str, str] | None = None,
    healthy: int = 0,
    now: float,
) -> RolloutStatus:
    """The base.RolloutStatus for what ECS reports: `service` from DescribeServices, `deployment` the handle's
    service deployment from DescribeServiceDeployments, `later` the service deployment that followed it when the
    service has moved to another revision since, `tags` the revision's task definition tags."""
    tags = tags or {}
    status = str(deployment.get("status") or "")
    stage = str(deployment.get("lifecycleStage") or "")
    strategy = _strategy(deployment, service)
    target = deployment.get("targetServiceRevision") or {}
    desired = int(target.get("requestedTaskCount", service.get("desiredCount") or 0) or 0)
    running = int(target.get("runningTaskCount") or 0)
    weight = target.get("requestedProductionTrafficWeight")
    reason = str(deployment.get("statusReason") or "").strip()
    events = _events(service, _epoch(deployment.get("createdAt")))

    def result(phase: Phase, traffic: float, message: str = "", seconds: float | None = None) -> RolloutStatus:
        return RolloutStatus(
            phase=phase,
            traffic_percent=max(0.0, min(100.0, float(traffic))),
            desired=desired,
            running=running,
            healthy=healthy,
            message=message,
            seconds_to_next_step=None if seconds is None else max(0.0, seconds),
            events=events,
        )

    if status == "PENDING":
        return result("starting", 0.0, reason)
    if status == "IN_PROGRESS":
        hook = _waiting_hook(deployment)
        if hook is not None:
            traffic = float(weight) if weight is not None else 100.0
            if hook.expires_at is None:
                return result("paused", traffic, "waiting for promote or roll back")
            bake_end = hook.expires_at - VERDICT_MINUTES * 60
            if now < bake_end:
                return result("baking", traffic, "all production traffic on the new revision; baking", bake_end - now)
            return result(
                "paused",
                traffic,
                "the bake is over: waiting for promote or roll back (ECS rolls back by itself when the hook expires)",
                hook.expires_at - now,
            )
        if strategy == "ROLLING":
            if stage == "BAKE_TIME":
                return result("baking", 100.0, reason)
            share = _running_share(service, handle.revision)
            if weight is not None:
                share = float(weight)
            return result("starting" if running == 0 else "shifting", share if running else 0.0, reason)
        if stage in _STARTING_STAGES:
            return result("starting", 0.0, reason or f"ECS stage {stage}")
        if stage in _SHIFTING_STAGES:
            return result("shifting", float(weight) if weight is not None else _derived_share(deployment, strategy))
        if stage in _DRAINING_STAGES:
            traffic = float(weight) if weight is not None else 100.0
            if stage == HOOK_STAGE and _hook_status(deployment) != "SUCCEEDED":
                return result("baking", traffic, "all production traffic on the new revision")
            return result("baking", traffic, "promoted: ECS is stopping the previous revision")
        where = f"ECS stage {stage}" if stage else "ECS reports no lifecycle stage yet"
        return result("starting" if running == 0 else "shifting", float(weight or 0.0), reason or where)
    if status in _RETREATING_STATUSES:
        rollback = deployment.get("rollback") or {}
        why = str(rollback.get("reason") or reason or "").strip()
        return result("shifting", float(weight or 0.0), f"ECS is rolling back{': ' + why if why else ''}")
    if status == "ROLLBACK_SUCCESSFUL":
        triggered = _triggered(deployment)
        why = str((deployment.get("rollback") or {}).get("reason") or reason or "").strip()
        if triggered:
            return result("failed", 0.0, f"{triggered}; ECS rolled back{': ' + why if why else ''}")
        if _hook_status(deployment) == "TIMED_OUT":
            why = "no verdict came before the hook expired; ECS rolled back" + (f" ({why})" if why else "")
        return result("rolled_back", 0.0, why or "rolled back to the previous revision")
    if status == "ROLLBACK_FAILED":
        return result("failed", 0.0, f"ECS could not roll back{': ' + reason if reason else ''}")
    if status == "STOPPED":
        return result("failed", 0.0, reason or "ECS stopped the deployment")
    if status == "SUCCESSFUL":
        verdict = tags.get(TAG_VERDICT, "")
        serving = str(service.get("taskDefinition") or "")
        if serving and serving != handle.revision:
            if serving == handle.previous_revision:
                later_status = str((later or {}).get("status") or "")
                if later_status == "SUCCESSFUL":
                    return result("rolled_back", 0.0, f"the service runs {serving} again")
                if later_status in ("ROLLBACK_FAILED", "STOPPED", "ROLLBACK_SUCCESSFUL"):
                    return result("failed", 0.0, f"the roll back to {serving} did not finish ({later_status})")
                back = ((later or {}).get("targetServiceRevision") or {}).get("requestedProductionTrafficWeight")
                return result("shifting", 100.0 - float(back or 0.0), f"rolling back to {serving}")
            if verdict == ROLLED_BACK:
                return result("rolled_back", 0.0, f"rolled back; the service now runs {serving}")
            return result("complete", 0.0, f"completed; the service now runs {serving}")
        if verdict == ROLLED_BACK:
            if handle.previous_revision:
                return result("shifting", 100.0, f"a roll back to {handle.previous_revision} was asked for")
            if int(service.get("runningCount") or 0) == 0 and int(service.get("desiredCount") or 0) == 0:
                return result("rolled_back", 0.0, "no previous revision: the service runs no tasks")
            return result("shifting", 100.0, "no previous revision: stopping the service's tasks")
        if strategy == "ROLLING":
            if verdict == PROMOTED:
                return result("complete", 100.0)
            finished = _epoch(deployment.get("finishedAt"))
            bake_end = (finished or now) + _float(tags.get(TAG_BAKE), 0.0) * 60
            if now < bake_end:
                return result("baking", 100.0, "the new revision serves alone; baking", bake_end - now)
            return result("paused", 100.0, "the bake is over: waiting for promote or roll back")
        return result("complete", 100.0)
    return result("starting", 0.0, f"ECS reports status {status or 'unknown'}")


def deployment_tag(revision: RevisionSpec) -> str:
    """The `deployment` tag of the revision's task definition: the caller's own tag when it gives one, else the
    deployment id. A repeated deploy finds its revision by it."""
    return revision.tags.get(TAG_DEPLOYMENT) or revision.deployment_id


def resource_label(load_balancer_arn: str, target_group_arn: str) -> str:
    """ALBRequestCountPerTarget's ResourceLabel: app/<lb name>/<lb id>/targetgroup/<tg name>/<tg id>."""
    return f"{load_balancer_arn.split(':loadbalancer/', 1)[-1]}/{target_group_arn.split(':', 5)[-1]}"


# --- small helpers -------------------------------------------------------------------------------------------------

_DEPLOYMENT_ID = re.compile(r"[\w.:/=+\-@]{1,128}")
_CLUSTER_MESSAGE = "must be an ECS cluster name (letters, digits, '-', '_') or a cluster ARN"


def _add(problems: dict[str, list[str]], field: str, message: str) -> None:
    problems.setdefault(field, []).append(message)


def _text(settings: Mapping[str, Any], key: str) -> str:
    value = settings.get(key)
    return value.strip() if isinstance(value, str) else ""


def _ids(settings: Mapping[str, Any], key: str) -> tuple[list[str], bool]:
    """A list of ids from a list or a comma-separated string; the flag says whether the value had that form."""
    value = settings.get(key)
    if value is None:
        return [], True
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()], True
    if isinstance(value, list | tuple) and all(isinstance(item, str) for item in value):
        return [item.strip() for item in value if item.strip()], True
    return [], False


def _parse_settings(
    settings: Mapping[str, Any], strategy: str, metric: str | None
) -> tuple[_Settings | None, dict[str, list[str]]]:
    problems: dict[str, list[str]] = {}
    if strategy not in STRATEGIES:
        _add(problems, "strategy", f"must be one of {', '.join(STRATEGIES)}, not {strategy!r}")

    cluster = _text(settings, "cluster")
    if not cluster:
        _add(problems, "cluster", "is not set: the ECS cluster name or ARN")
    elif not _CLUSTER.fullmatch(cluster):
        _add(problems, "cluster", _CLUSTER_MESSAGE)

    id_lists: dict[str, list[str]] = {}
    for key, pattern, example in (
        ("subnets", _SUBNET, "subnet-0123456789abcdef0"),
        ("security_groups", _SECURITY_GROUP, "sg-0123456789abcdef0"),
    ):
        ids, well_formed = _ids(settings, key)
        id_lists[key] = ids
        if not well_formed:
            _add(problems, key, "must be a list of ids or one comma-separated string")
        elif not ids:
            _add(problems, key, f"is not set: at least one id like {example}")
        else:
            bad = [item for item in ids if not pattern.fullmatch(item)]
            if bad:
                _add(problems, key, f"{', '.join(map(repr, bad))} not ids like {example}")
            limit = 16 if key == "subnets" else 5
            if len(ids) > limit:
                _add(problems, key, f"ECS takes at most {limit}")

    public = settings.get("assign_public_ip", False)
    if isinstance(public, str) and public.strip().lower() in ("true", "false", "enabled", "disabled", ""):
        public = public.strip().lower() in ("true", "enabled")
    if not isinstance(public, bool):
        _add(problems, "assign_public_ip", "must be true or false")
        public = False

    def arn(key: str, pattern: re.Pattern[str], what: str, *, required: bool) -> str:
        value = _text(settings, key)
        if not value:
            if required:
                _add(problems, key, f"is not set: {what}")
        elif not pattern.fullmatch(value):
            _add(problems, key, f"{value!r} is not {what}")
        return value

    blue_green = strategy in STRATEGIES and strategy != "rolling"
    target_group = arn("target_group_arn", _TARGET_GROUP, "an Elastic Load Balancing target group ARN", required=True)
    execution_role = arn("execution_role_arn", _ROLE, "an IAM role ARN (the task execution role)", required=True)
    task_role = arn("task_role_arn", _ROLE, "an IAM role ARN (the role the serving process runs as)", required=True)
    why = f"the {strategy} strategy needs it" if blue_green else ""
    alternate = arn(
        "alternate_target_group_arn",
        _TARGET_GROUP,
        f"a second target group ARN ({why or 'for blue/green, canary and linear rollouts'})",
        required=blue_green,
    )
    production_rule = _text(settings, "production_listener_rule_arn")
    if not production_rule:
        if blue_green:
            _add(problems, "production_listener_rule_arn", f"is not set: the production listener rule ARN ({why})")
    elif not (_LISTENER_RULE.fullmatch(production_rule) or _NLB_LISTENER.fullmatch(production_rule)):
        _add(
            problems,
            "production_listener_rule_arn",
            f"{production_rule!r} is not an ALB listener rule ARN or an NLB listener ARN",
        )
    test_rule = _text(settings, "test_listener_rule_arn")
    if test_rule and not (_LISTENER_RULE.fullmatch(test_rule) or _NLB_LISTENER.fullmatch(test_rule)):
        _add(
            problems, "test_listener_rule_arn", f"{test_rule!r} is not an ALB listener rule ARN or an NLB listener ARN"
        )
    lb_role = arn(
        "load_balancer_role_arn",
        _ROLE,
        f"an IAM role ARN ECS uses to switch the listener rules ({why or 'blue/green, canary and linear'})",
        required=blue_green,
    )
    if target_group and alternate and target_group == alternate:
        _add(problems, "alternate_target_group_arn", "must be another target group than target_group_arn")
    load_balancer = arn(
        "load_balancer_arn",
        _LOAD_BALANCER,
        "an Application Load Balancer ARN (request-based autoscaling tracks requests per target on it)",
        required=metric == "requests",
    )
    if metric == "requests" and production_rule and blue_green and not _LISTENER_RULE.fullmatch(production_rule):
        _add(problems, "production_listener_rule_arn", "request-based autoscaling needs an ALB listener rule")

    alarms, well_formed = _ids(settings, "alarm_names")
    if not well_formed or any(len(name) > 255 for name in alarms):
        _add(problems, "alarm_names", "must be a list of CloudWatch alarm names (each at most 255 characters)")

    log_group = _text(settings, "log_group") or DEFAULT_LOG_GROUP
    if not _LOG_GROUP.fullmatch(log_group):
        _add(problems, "log_group", f"{log_group!r} is not a CloudWatch Logs group name")

    grace_value = settings.get("health_check_grace_seconds", DEFAULT_HEALTH_CHECK_GRACE_SECONDS)
    grace = DEFAULT_HEALTH_CHECK_GRACE_SECONDS
    if isinstance(grace_value, str) and grace_value.strip().isdigit():
        grace_value = int(grace_value.strip())
    if isinstance(grace_value, bool) or not isinstance(grace_value, int) or not 0 <= grace_value <= 2_147_483_647:
        _add(problems, "health_check_grace_seconds", "must be a whole number of seconds, 0 or more")
    else:
        grace = grace_value

    address = _text(settings, "address")
    if address and not address.startswith(("http://", "https://")):
        _add(problems, "address", f"{address!r} must be an http:// or https:// URL")

    if problems:
        return None, problems
    return (
        _Settings(
            cluster=cluster,
            subnets=tuple(id_lists["subnets"]),
            security_groups=tuple(id_lists["security_groups"]),
            assign_public_ip=public,
            target_group_arn=target_group,
            execution_role_arn=execution_role,
            task_role_arn=task_role,
            alternate_target_group_arn=alternate,
            production_listener_rule_arn=production_rule,
            test_listener_rule_arn=test_rule,
            load_balancer_role_arn=lb_role,
            load_balancer_arn=load_balancer,
            alarm_names=tuple(alarms),
            log_group=log_group,
            health_check_grace_seconds=grace,
            address=address,
        ),
        problems,
    )


def _settings_or_fail(service: ServiceSpec, strategy: str, metric: str | None) -> _Settings:
    parsed, problems = _parse_settings(service.settings, strategy, metric)
    if parsed is None:
        raise InvalidSpec(f"the Fargate settings of {service.name} are incomplete", problems)
    return parsed


def _target_groups(settings: _Settings, strategy: str) -> list[str]:
    """The target groups the service is put behind: the production one, and for traffic shifting the alternate."""
    if strategy == "rolling":
        return [settings.target_group_arn]
    return [settings.target_group_arn, settings.alternate_target_group_arn]


def _load_balancer(settings: _Settings, strategy: str) -> dict[str, Any]:
    load_balancer: dict[str, Any] = {
        "targetGroupArn": settings.target_group_arn,
        "containerName": CONTAINER_NAME,
        "containerPort": CONTAINER_PORT,
    }
    if strategy != "rolling":
        advanced = {
            "alternateTargetGroupArn": settings.alternate_target_group_arn,
            "productionListenerRule": settings.production_listener_rule_arn,
            "roleArn": settings.load_balancer_role_arn,
        }
        if settings.test_listener_rule_arn:
            advanced["testListenerRule"] = settings.test_listener_rule_arn
        load_balancer["advancedConfiguration"] = advanced
    return load_balancer


def _has_advanced_configuration(service: Mapping[str, Any]) -> bool:
    return any(lb.get("advancedConfiguration") for lb in service.get("loadBalancers") or [])


def _check_minutes(problems: dict[str, list[str]], field: str, value: float) -> None:
    if not (isinstance(value, int | float) and math.isfinite(value) and 0 <= value <= MAX_ECS_MINUTES):
        _add(problems, field, f"must be between 0 and {MAX_ECS_MINUTES} minutes (ECS's limit), not {value!r}")


def _check_percent(problems: dict[str, list[str]], field: str, value: float, minimum: float) -> None:
    if not (isinstance(value, int | float) and math.isfinite(value)):
        _add(problems, field, f"must be a number, not {value!r}")
    elif not minimum <= value <= 100:
        extra = " (ECS's minimum step for LINEAR)" if field == "linear_step_percent" else ""
        _add(problems, field, f"must be between {minimum:g} and 100{extra}, not {value:g}")
    elif abs(round(value, 1) - value) > 1e-9:
        _add(problems, field, f"must be a multiple of 0.1 (ECS takes tenths of a percent), not {value!r}")


def _check_tags(problems: dict[str, list[str]], field: str, tags: Mapping[str, str]) -> None:
    for key, value in tags.items():
        if not key or len(key) > 128 or not _TAG_TEXT.fullmatch(key) or key.lower().startswith("aws:"):
            _add(problems, field, f"tag key {key!r} must be 1-128 letters, digits, spaces or _.:/=+-@, not aws:…")
        if not isinstance(value, str) or len(value) > 256 or not _TAG_TEXT.fullmatch(value):
            _add(problems, field, f"tag {key!r} value must be at most 256 letters, digits, spaces or _.:/=+-@")


def _ceil_minutes(value: float) -> int:
    return max(0, math.ceil(round(float(value), 6)))


def _float(value: Any, default: float) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return default
    return number if math.isfinite(number) and number >= 0 else default


def _tag_list(tags: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"key": key, "value": value} for key, value in sorted(tags.items())]


def _tags(tags: Iterable[Mapping[str, Any]] | None) -> dict[str, str]:
    return {str(tag.get("key")): str(tag.get("value") or "") for tag in tags or [] if tag.get("key")}


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _error_message(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Message", "")).lower()


def _whole(value: Any, default: int) -> int:
    """A size ECS gives as a string ("512"), or `default` when it gives none."""
    try:
        return int(str(value).strip())
    except ValueError:
        return default


def _epoch(value: Any) -> float | None:
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, int | float):
        return float(value)
    return None


def _strategy(deployment: Mapping[str, Any], service: Mapping[str, Any]) -> str:
    for source in (deployment, service):
        strategy = (source.get("deploymentConfiguration") or {}).get("strategy")
        if strategy:
            return str(strategy)
    return "ROLLING"  # ECS's default


def _waiting_hook(deployment: Mapping[str, Any]) -> _Hook | None:
    for detail in deployment.get("lifecycleHookDetails") or []:
        if detail.get("targetType") == "PAUSE" and detail.get("status") == "AWAITING_ACTION" and detail.get("hookId"):
            return _Hook(hook_id=str(detail["hookId"]), expires_at=_epoch(detail.get("expiresAt")))
    return None


def _hook_status(deployment: Mapping[str, Any]) -> str:
    for detail in deployment.get("lifecycleHookDetails") or []:
        if detail.get("targetType") == "PAUSE":
            return str(detail.get("status") or "")
    return ""


def _triggered(deployment: Mapping[str, Any]) -> str:
    """What made ECS fail the deployment, if its circuit breaker or alarms did."""
    found = []
    breaker = deployment.get("deploymentCircuitBreaker") or {}
    if breaker.get("status") == "TRIGGERED":
        found.append(f"the circuit breaker counted {breaker.get('failureCount', '?')} failed tasks")
    alarms = deployment.get("alarms") or {}
    if alarms.get("status") == "TRIGGERED":
        names = ", ".join(alarms.get("triggeredAlarmNames") or []) or "an alarm"
        found.append(f"{names} went into ALARM")
    return "; ".join(found)


def _derived_share(deployment: Mapping[str, Any], strategy: str) -> float:
    """The new revision's production share mid-shift when ECS does not report it (see the module docstring)."""
    configuration = deployment.get("deploymentConfiguration") or {}
    if strategy == "CANARY":
        return float((configuration.get("canaryConfiguration") or {}).get("canaryPercent", 5.0))
    if strategy == "LINEAR":
        return float((configuration.get("linearConfiguration") or {}).get("stepPercent", 10.0))
    return 100.0


def _running_share(service: Mapping[str, Any], revision_arn: str) -> float:
    mine = total = 0
    for deployment in service.get("deployments") or []:
        count = int(deployment.get("runningCount") or 0)
        total += count
        if deployment.get("taskDefinition") == revision_arn:
            mine += count
    return 100.0 * mine / total if total else 0.0


def _events(service: Mapping[str, Any], since: float | None) -> tuple[tuple[str, float, str], ...]:
    found = []
    for event in service.get("events") or []:
        at = _epoch(event.get("createdAt"))
        if at is None or (since is not None and at < since) or not event.get("id"):
            continue
        found.append((str(event["id"]), at, str(event.get("message") or "")))
    return tuple(sorted(found, key=lambda e: (e[1], e[0])))


def _differences(found: Mapping[str, Any], expected: Mapping[str, Any]) -> list[str]:
    """Which of the values a deployment fixes differ between a registered task definition and the request."""
    different = []
    for key in ("cpu", "memory", "taskRoleArn", "executionRoleArn"):
        if str(found.get(key) or "") != str(expected.get(key) or ""):
            different.append(key)
    have = (found.get("containerDefinitions") or [{}])[0]
    want = expected["containerDefinitions"][0]
    if have.get("image") != want["image"]:
        different.append("image")
    if {e.get("name"): e.get("value") for e in have.get("environment") or []} != {
        e["name"]: e["value"] for e in want["environment"]
    }:
        different.append("environment")
    return different


__all__ = [
    "CONTAINER_NAME",
    "CONTAINER_PORT",
    "DEFAULT_LOG_GROUP",
    "ECS_STRATEGIES",
    "HOOK_STAGE",
    "VERDICT_MINUTES",
    "FargateServingBackend",
    "InvalidSpec",
    "deployment_configuration",
    "deployment_tag",
    "resource_label",
    "revision_problems",
    "rollout_problems",
    "rollout_status",
    "service_problems",
    "settings_problems",
]
