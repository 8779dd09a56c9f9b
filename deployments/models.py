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
    bake_minutes = models.PositiveIntegerField(default=10)
    objective_p99_latency_ms = models.FloatField(null=True, blank=True)
    objective_error_rate = models.FloatField(null=True, blank=True, help_text="A fraction: 0.01 is 1%")
    objective_drift_share = models.FloatField(
        null=True, blank=True, help_text="The share of features allowed to drift, a fraction"
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
