"""Environments, and the path of a model version to "approved for an environment": approval requests, their
gate results and decisions. Deployments and services follow in this app (see the deployments issue)."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from controlplane.models import WriteOnceModel
from lineage.models import ModelVersion


def default_request_ttl_days() -> int:
    return int(settings.APPROVAL_REQUEST_TTL_DAYS)


class Strategy(models.TextChoices):
    """How traffic moves to a new revision: ECS's own deployment strategies (workers/deploy/base.Rollout)."""

    ROLLING = "rolling", "rolling"
    ALL_AT_ONCE = "all_at_once", "all at once"
    CANARY = "canary", "canary"
    LINEAR = "linear", "linear"


class Environment(models.Model):
    """Where models are promoted to (staging, production, …): how many approvals it needs, its gates, and the
    objectives the deployments and monitoring issues enforce."""

    name = models.SlugField(max_length=40, unique=True, help_text="e.g. staging, production")
    order = models.PositiveIntegerField(
        default=0, help_text="Promotion order: lower comes first (staging before production)"
    )
    description = models.TextField(blank=True)
    approvals_required = models.PositiveSmallIntegerField(default=1)
    # Gate expressions, one per entry, as written (see deployments.gates): e.g. "accuracy >= 0.90".
    gates = models.JSONField(default=list, blank=True)
    allow_override = models.BooleanField(
        default=False, help_text="A request whose gates fail may still be decided, with a written reason"
    )
    request_ttl_days = models.PositiveSmallIntegerField(default=default_request_ttl_days)
    bake_minutes = models.FloatField(default=10, help_text="Minutes a new revision is watched before it is kept")
    objective_p99_latency_ms = models.FloatField(null=True, blank=True)
    objective_error_rate = models.FloatField(null=True, blank=True, help_text="A fraction: 0.01 is 1%")
    objective_drift_share = models.FloatField(
        null=True, blank=True, help_text="The share of features allowed to drift, a fraction"
    )
    # Monitoring (monitoring/): the share of requests the serving runtime captures for drift, how drift is judged.
    capture_fraction = models.FloatField(
        default=0.1, help_text="Share of requests sampled into capture files for the drift job, 0-1"
    )
    drift_window_minutes = models.PositiveIntegerField(
        default=60, help_text="Minutes of captured requests each drift report compares with the training baseline"
    )
    drift_share = models.FloatField(
        default=0.5, help_text="The service's inputs drifted when this share of its features drifted, 0-1"
    )
    # Per kind and per feature: {"numeric": {"method": "psi", "threshold": 0.2}, "categorical": {...},
    # "features": {"age": {"method": "ks", "threshold": 0.01}}}; empty keeps the defaults (monitoring.drift).
    drift_methods = models.JSONField(default=dict, blank=True)
    # How approved versions reach the environment's service: at once on approval, or with Deploy later.
    deploy_on_approval = models.BooleanField(
        default=False, help_text="Deploy a version as soon as it is approved for this environment"
    )
    strategy = models.CharField(
        max_length=20,
        choices=Strategy.choices,
        default=Strategy.ALL_AT_ONCE,
        help_text="rolling, all_at_once, canary or linear (ECS's own deployment strategies)",
    )
    canary_percent = models.FloatField(default=10.0, help_text="A canary's share of traffic while it bakes, 1-99")
    linear_step_percent = models.FloatField(default=25.0, help_text="Each linear step's share of traffic, 1-99")
    linear_interval_minutes = models.FloatField(default=1.0, help_text="Minutes between linear steps")
    autoscaling_metric = models.CharField(
        max_length=20, blank=True, help_text="Target tracking on the aws backend: requests, cpu, or empty for none"
    )
    autoscaling_target = models.FloatField(
        null=True, blank=True, help_text="Requests per task per minute, or average CPU %, to keep near"
    )
    min_desired_count = models.PositiveSmallIntegerField(default=1)
    max_desired_count = models.PositiveSmallIntegerField(default=4)
    # Backend settings (cluster, subnets, …) the deployments issue reads.
    backend_settings = models.JSONField(default=dict, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["order", "name"]

    def __str__(self) -> str:
        return self.name


class ApprovalRequest(models.Model):
    """A request to promote one model version to one environment: `open → approved | rejected | withdrawn |
    expired`, only through deployments.services.APPROVAL_MACHINE."""

    class Status(models.TextChoices):
        OPEN = "open"
        APPROVED = "approved"
        REJECTED = "rejected"
        WITHDRAWN = "withdrawn"
        EXPIRED = "expired"

    class Mirror(models.TextChoices):
        NONE = "", "not mirrored (local backend)"
        PENDING = "pending"
        SYNCED = "synced"
        FAILED = "failed"

    model_version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="approval_requests")
    environment = models.ForeignKey(Environment, on_delete=models.PROTECT, related_name="approval_requests")
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.OPEN)
    status_reason = models.TextField(blank=True)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    justification = models.TextField()
    # The exact artifact the decision is about: approval is refused if the stored bytes no longer hash to this.
    artifact_sha256 = models.CharField(max_length=64)
    # What the gates compared against: the version approved or serving in the environment when requested.
    baseline_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    approvals_required = models.PositiveSmallIntegerField(help_text="Copied from the environment when requested")
    gates_passed = models.BooleanField(default=True)
    override_reason = models.TextField(blank=True)
    overridden_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    # Set when the last approval needed arrives; a worker then checks the artifact and approves.
    quorum_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField()
    # When deployments.signals.model_version_approved was sent for it (once approved).
    announced_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # The SageMaker Model Package this request is mirrored to (aws backend).
    mirror_status = models.CharField(max_length=20, choices=Mirror.choices, default=Mirror.NONE, blank=True)
    mirror_arn = models.CharField(max_length=256, blank=True)
    mirror_approval_status = models.CharField(max_length=40, blank=True, help_text="What SageMaker last confirmed")
    mirror_error = models.TextField(blank=True)
    # Claimed work (controlplane.transitions): the artifact check and the mirror.
    attempt = models.PositiveIntegerField(default=0)
    claimed_at = models.DateTimeField(null=True, blank=True)
    enqueued_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            # Two requests for one version and environment: the database lets exactly one be open or approved.
            models.UniqueConstraint(
                fields=["model_version", "environment"],
                condition=Q(status__in=["open", "approved"]),
                name="approval_request_one_live_per_version_environment",
            )
        ]
        indexes = [
            models.Index(fields=["status", "-created_at"], name="approval_request_queue"),
            models.Index(fields=["status", "expires_at"], name="approval_request_expiry"),
        ]

    def __str__(self) -> str:
        return f"approval request {self.pk}: {self.model_version} → {self.environment}"

    @property
    def is_open(self) -> bool:
        return self.status == self.Status.OPEN


class GateResult(WriteOnceModel):
    """One gate's outcome for a request, with the evidence it was decided on. Write-once."""

    request = models.ForeignKey(ApprovalRequest, on_delete=models.PROTECT, related_name="gate_results")
    position = models.PositiveSmallIntegerField()
    expression = models.CharField(max_length=200)
    kind = models.CharField(max_length=30)
    passed = models.BooleanField()
    summary = models.CharField(max_length=500)
    evidence = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["request", "position"]

    def __str__(self) -> str:
        return f"{self.expression}: {'passed' if self.passed else 'failed'}"


class ApprovalDecision(WriteOnceModel):
    """One approver's verdict on a request, with their comment. One per approver per request; write-once."""

    class Verdict(models.TextChoices):
        APPROVE = "approve"
        REJECT = "reject"

    request = models.ForeignKey(ApprovalRequest, on_delete=models.PROTECT, related_name="decisions")
    approver = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    verdict = models.CharField(max_length=10, choices=Verdict.choices)
    comment = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["request", "created_at", "id"]
        constraints = [
            models.UniqueConstraint(fields=["request", "approver"], name="approval_decision_one_per_approver")
        ]

    def __str__(self) -> str:
        return f"{self.approver} {self.verdict}s request {self.request_id}"


class Service(models.Model):
    """One registered model served in one environment, created on its first deployment. Its stable address stays
    the same across deployments and rollbacks; `current_deployment` is the one whose revision serves all traffic."""

    registered_model = models.ForeignKey("lineage.RegisteredModel", on_delete=models.PROTECT, related_name="services")
    environment = models.ForeignKey(Environment, on_delete=models.PROTECT, related_name="services")
    # The backend's name for it (the ECS service and task definition family, the local router's folder).
    name = models.SlugField(max_length=40, unique=True)
    backend = models.CharField(max_length=20, help_text="local or aws, fixed when the service is created")
    desired_count = models.PositiveSmallIntegerField(default=1)
    address = models.CharField(max_length=300, blank=True, help_text="The stable address, once the backend has one")
    current_deployment = models.ForeignKey(
        "Deployment", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    # Scaling asked for and not applied yet (a worker applies it): the desired count it asked for.
    scale_pending = models.BooleanField(default=False)
    # The serving runtime's ingest token: derived from SECRET_KEY and this nonce (so every revision can be given it
    # again), stored only as its SHA-256; a new nonce rotates it (monitoring.services.ingest).
    ingest_token_nonce = models.CharField(max_length=64, blank=True)
    ingest_token_sha256 = models.CharField(max_length=64, blank=True)

    class Meta:
        ordering = ["environment__order", "registered_model__slug"]
        constraints = [
            models.UniqueConstraint(
                fields=["registered_model", "environment"], name="service_one_per_model_environment"
            )
        ]

    def __str__(self) -> str:
        return self.name


ACTIVE_DEPLOYMENT_STATUSES = ("pending", "in_progress", "baking")


class Deployment(models.Model):
    """A revision of a service put in place: `pending → in_progress → baking → succeeded | failed | rolled_back`,
    only through deployments.services.DEPLOYMENT_MACHINE. A rollback is a deployment too (kind `rollback`): of the
    revision that last succeeded before the current one."""

    class Kind(models.TextChoices):
        DEPLOY = "deploy", "deploy"
        ROLLBACK = "rollback", "rollback"

    class Status(models.TextChoices):
        PENDING = "pending", "pending"
        IN_PROGRESS = "in_progress", "in progress"
        BAKING = "baking", "baking"
        SUCCEEDED = "succeeded", "succeeded"
        FAILED = "failed", "failed"
        ROLLED_BACK = "rolled_back", "rolled back"

    Strategy = Strategy

    service = models.ForeignKey(Service, on_delete=models.PROTECT, related_name="deployments")
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.DEPLOY)
    model_version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="deployments")
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PENDING)
    status_reason = models.TextField(blank=True)
    # Who asked (None: the system, on approval or on a breached objective) and why.
    initiated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    reason = models.TextField()
    approval_request = models.ForeignKey(
        ApprovalRequest, null=True, blank=True, on_delete=models.PROTECT, related_name="deployments"
    )
    # The deployment whose revision served when this one began: traffic goes back to it on a rollback.
    replaces = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    # For a rollback: the deployment rolled back (stopped mid-bake, or finished and undone).
    rollback_of = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="rollbacks")
    # The rollout, copied from the environment when created.
    strategy = models.CharField(max_length=20, choices=Strategy.choices, default=Strategy.ALL_AT_ONCE)
    canary_percent = models.FloatField(default=10.0)
    linear_step_percent = models.FloatField(default=25.0)
    linear_interval_minutes = models.FloatField(default=1.0)
    bake_minutes = models.FloatField(default=0.0)
    objectives = models.JSONField(default=dict, blank=True)
    desired_count = models.PositiveSmallIntegerField(default=1)
    # What the backend made: the revision (an ECS task definition ARN, a local revision name) and its rollout id.
    revision = models.CharField(max_length=300, blank=True)
    backend_handle = models.JSONField(default=dict, blank=True)
    # The backend's latest word on the rollout (phase, traffic share, counts, time to next step), and the
    # objectives' latest values while it bakes.
    progress = models.JSONField(default=dict, blank=True)
    objective_status = models.JSONField(default=dict, blank=True)
    # The objective that was breached, with its value and threshold, when the system rolled it back.
    breach = models.JSONField(default=dict, blank=True)
    seen_events = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    baking_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Claimed work (controlplane.transitions) and the poll chain (as a run's).
    attempt = models.PositiveIntegerField(default=0)
    claimed_at = models.DateTimeField(null=True, blank=True)
    enqueued_at = models.DateTimeField(null=True, blank=True)
    poll_generation = models.PositiveIntegerField(default=0)
    poll_tick = models.PositiveIntegerField(default=0)
    last_polled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            # A second deployment of a service while one is active: the database lets exactly one in.
            models.UniqueConstraint(
                fields=["service"],
                condition=Q(status__in=list(ACTIVE_DEPLOYMENT_STATUSES)),
                name="deployment_one_active_per_service",
            )
        ]
        indexes = [
            models.Index(fields=["service", "-created_at"], name="deployment_timeline"),
            models.Index(fields=["status", "last_polled_at"], name="deployment_active_poll"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.pk} of {self.model_version} to {self.service}"

    @property
    def node_id(self) -> str:
        return f"deployment:{self.pk}"

    @property
    def active(self) -> bool:
        return self.status in ACTIVE_DEPLOYMENT_STATUSES

    @property
    def done(self) -> bool:
        return not self.active


class DeploymentEvent(WriteOnceModel):
    """A deployment's transition or a backend event it reported (tasks starting, health checks, traffic moves).
    Append-only."""

    deployment = models.ForeignKey(Deployment, on_delete=models.PROTECT, related_name="events")
    action = models.CharField(max_length=40)
    from_status = models.CharField(max_length=20, blank=True)
    to_status = models.CharField(max_length=20, blank=True)
    reason = models.TextField(blank=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    attempt = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["deployment", "created_at", "id"]

    def __str__(self) -> str:
        return f"{self.deployment_id}: {self.action}"
