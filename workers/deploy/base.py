"""The serving backend interface: put a model version's revision behind a service's stable address with a rollout
strategy, report how the rollout is going, finish it or roll it back, scale the service.

A backend carries out the strategy itself, the way ECS does natively: the local backend shifts its router's weights
by the clock (`progress` moves them, so whichever worker polls next advances the rollout), the Fargate backend hands
the strategy to ECS's `deploymentConfiguration`. Either way the new revision ends its bake paused, waiting for the
caller's verdict: `promote` (the objectives held) or `roll_back` (they did not). Nothing here is kept in memory:
every call can come from a different worker process, and a call repeated after a crash does no harm.

`usage` reports what the service ran, for cost estimates: one `ServingSpan` per serving process (local) or task
(ECS) that overlaps a period, with the Fargate size it stands for. A span that is still open has no end; a caller
that keeps, per day, the most seconds it has seen never loses time to a span the backend later forgets.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol, runtime_checkable

from workers.errors import BackendError

Strategy = Literal["rolling", "all_at_once", "canary", "linear"]
STRATEGIES: tuple[str, ...] = ("rolling", "all_at_once", "canary", "linear")

# How far a revision's rollout has got, as the backend sees it:
#   starting    the new revision's processes/tasks are starting; no traffic yet
#   shifting    it is healthy and takes part of the traffic (canary share, a linear step)
#   baking      it takes all the traffic, the previous revision is still up for an instant rollback
#   paused      the bake is over: the backend waits for promote() or roll_back()
#   complete    promoted: it alone serves, the previous revision is drained and stopped
#   failed      it never became healthy (or crashed); it takes no traffic, the previous revision serves
#   rolled_back roll_back() finished: the previous revision takes all the traffic, this one is stopped
Phase = Literal["starting", "shifting", "baking", "paused", "complete", "failed", "rolled_back"]
FINAL_PHASES: frozenset[str] = frozenset({"complete", "failed", "rolled_back"})


class DeploymentNotFound(BackendError):
    """The backend knows no such service or revision."""

    def __init__(self, message: str) -> None:
        super().__init__(message, permanent=True)


@dataclass(frozen=True)
class Rollout:
    """How traffic moves to a new revision. Percentages are of production traffic; minutes are wall-clock.

    - rolling: the backend replaces the old revision as the new one becomes healthy (ECS ROLLING with the circuit
      breaker); then bakes `bake_minutes`.
    - all_at_once: all traffic moves when the new revision is healthy (ECS BLUE_GREEN); then bakes.
    - canary: `canary_percent` for `bake_minutes`, then all (ECS CANARY).
    - linear: `linear_step_percent` more every `linear_interval_minutes` until all, then bakes `bake_minutes`
      (ECS LINEAR).
    """

    strategy: Strategy = "all_at_once"
    bake_minutes: float = 0.0
    canary_percent: float = 10.0
    linear_step_percent: float = 25.0
    linear_interval_minutes: float = 1.0


@dataclass(frozen=True)
class Autoscaling:
    """Target tracking: keep `metric` (requests per target per minute, or average CPU %) near `target`."""

    metric: Literal["requests", "cpu"]
    target: float
    min_count: int
    max_count: int


@dataclass(frozen=True)
class ServiceSpec:
    """One model served in one environment: what stays the same across its deployments."""

    # Stable, unique, lowercase letters, digits and hyphens, at most 40 characters (e.g. "churn-production").
    name: str
    desired_count: int
    # The environment's backend settings (aws: cluster, subnets, security groups, target groups, roles, …).
    settings: Mapping[str, Any] = field(default_factory=dict)
    # Cost-allocation tags every resource of the service carries: project, model, environment.
    tags: Mapping[str, str] = field(default_factory=dict)
    autoscaling: Autoscaling | None = None


@dataclass(frozen=True)
class RevisionSpec:
    """One deployment's revision of a service.

    `environment` is what the serving process reads (serving.config: MODEL_URI, MODEL_SHA256, capture and metrics
    settings, SERVICE_NAME, REVISION); `reuse` names a revision the backend made before (a task definition ARN, a
    local revision name) when rolling back to it, so the backend serves exactly what it served then.
    """

    deployment_id: str  # our deployment's id, unique per service: names the revision ("d42")
    environment: Mapping[str, str]
    rollout: Rollout
    image: str = ""
    cpu: int = 256  # Fargate CPU units
    memory: int = 512  # Fargate MiB
    tags: Mapping[str, str] = field(default_factory=dict)  # besides the service's: deployment
    reuse: str = ""


@dataclass(frozen=True)
class Handle:
    """What `deploy` started, for later calls: the revision (task definition ARN or local revision name), the
    backend's own id for the rollout (an ECS service deployment ARN; empty locally) and what it replaces."""

    revision: str
    rollout_id: str = ""
    previous_revision: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"revision": self.revision, "rollout_id": self.rollout_id, "previous_revision": self.previous_revision}

    @classmethod
    def from_dict(cls, value: Mapping[str, Any]) -> Handle:
        return cls(
            revision=str(value.get("revision", "")),
            rollout_id=str(value.get("rollout_id", "")),
            previous_revision=str(value.get("previous_revision", "")),
        )


@dataclass(frozen=True)
class RolloutStatus:
    """A rollout now. Counts are of the new revision's processes (local) or tasks (ECS)."""

    phase: Phase
    traffic_percent: float  # the new revision's share of production traffic, 0–100
    desired: int
    running: int
    healthy: int
    message: str = ""
    # Seconds until the backend moves on by itself (next linear step, end of canary or bake), if it will.
    seconds_to_next_step: float | None = None
    # What the backend reported since the rollout began, oldest first: (id, time as epoch seconds, text). Ids are
    # stable, so a caller keeps the ones it has seen and records each event once.
    events: tuple[tuple[str, float, str], ...] = ()
    # Where the new revision answers on its own (local: its serving process, for /metrics); empty on AWS.
    revision_address: str = ""

    @property
    def final(self) -> bool:
        return self.phase in FINAL_PHASES


@dataclass(frozen=True)
class ServiceStatus:
    """A service now: its stable address, the revision serving all traffic, and the counts."""

    address: str
    serving_revision: str
    desired: int
    running: int


@dataclass(frozen=True)
class ServingSpan:
    """One serving process (local) or task (ECS) of a revision, from when it started to when it stopped."""

    revision: str  # the RevisionSpec.deployment_id it serves ("d42")
    process: str  # the local process and its attempt ("r-d42-0#2"), or the ECS task ARN
    started_at: datetime  # tz-aware UTC: the process start, the task's startedAt
    ended_at: datetime | None  # tz-aware UTC: its exit, the task's stoppedAt; None while it runs
    cpu: int  # the Fargate CPU units it stands for (1024 = 1 vCPU)
    memory: int  # MiB

    def seconds(self, now: datetime) -> float:
        """How long it has served, up to `now` while it still runs."""
        return max(0.0, ((self.ended_at or now) - self.started_at).total_seconds())


@runtime_checkable
class ServingBackend(Protocol):
    """Runs revisions of services; any worker process may call any method for any service."""

    def deploy(self, service: ServiceSpec, revision: RevisionSpec) -> Handle:
        """Create the service on its first deploy, then start `revision` under its rollout. Calling it again for
        the same deployment id returns the same handle and starts nothing more."""
        ...

    def progress(self, service: ServiceSpec, handle: Handle) -> RolloutStatus:
        """How the rollout is going (and, locally, move it on by the clock)."""
        ...

    def promote(self, service: ServiceSpec, handle: Handle) -> RolloutStatus:
        """The bake is over and the objectives held: the new revision takes all traffic, the previous one is
        drained and stopped. Idempotent."""
        ...

    def roll_back(self, service: ServiceSpec, handle: Handle) -> RolloutStatus:
        """Send all traffic back to the previous revision at once, then stop the new one. Idempotent; with no
        previous revision the new one is stopped and the service serves nothing."""
        ...

    def scale(self, service: ServiceSpec) -> None:
        """Apply `service.desired_count` (and its autoscaling bounds) to the serving revision."""
        ...

    def status(self, service: ServiceSpec) -> ServiceStatus:
        """The service's stable address and what serves there now."""
        ...

    def usage(self, service: ServiceSpec, *, since: datetime) -> list[ServingSpan]:
        """Every serving process or task of the service that ran at some moment from `since` (tz-aware) until now,
        oldest start first, each with the size it stands for. A service the backend never ran has none."""
        ...
