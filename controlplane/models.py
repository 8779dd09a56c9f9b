"""Projects, the append-only audit log, and the health records of workers and beat."""

from __future__ import annotations

from typing import Any, NoReturn

from django.conf import settings
from django.db import models


class Project(models.Model):
    """The unit of ownership and cost attribution; its slug is the `project` cost-allocation tag."""

    name = models.CharField(max_length=100, unique=True)
    slug = models.SlugField(max_length=63, unique=True)
    description = models.TextField(blank=True)
    # Extra cost-allocation tags added to every AWS resource made for this project.
    cost_tags = models.JSONField(default=dict, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    # A restricted project's data, runs, models, requests, services and costs are visible and actionable only to its
    # members and admins (finance sees its costs): controlplane.access.
    restricted = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def resource_tags(self, **own: str) -> dict[str, str]:
        """The tags an AWS resource made for this project carries: `project` and `own` (model, run, environment,
        …), then the project's extra cost tags (which never override those)."""
        tags = {"project": self.slug, **own}
        for key, value in (self.cost_tags or {}).items():
            tags.setdefault(key, value)
        return tags


class ProjectMember(models.Model):
    """A user's place in a project: an owner manages its members and restriction; a member works in it. What the
    member may do there is still what their role (data scientist, approver, …) allows."""

    class Role(models.TextChoices):
        OWNER = "owner"
        MEMBER = "member"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="members")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="project_memberships")
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.MEMBER)
    added_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    added_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["project", "user__username"]
        constraints = [models.UniqueConstraint(fields=["project", "user"], name="project_member_once")]

    def __str__(self) -> str:
        return f"{self.user} ({self.role}) in {self.project}"


class WriteOnceError(Exception):
    """A write-once record (audit event, dataset version, model version) was about to be changed or deleted."""


class AuditImmutableError(WriteOnceError):
    """An audit event was about to be changed or deleted."""


class WriteOnceQuerySet(models.QuerySet[Any]):
    """Bulk changes are refused too, not just `save()` on an instance."""

    def update(self, **kwargs: Any) -> NoReturn:
        raise self.model.write_once_error(
            f"{self.model._meta.verbose_name_plural} are write-once: they cannot be updated"
        )

    def delete(self) -> NoReturn:  # type: ignore[override]
        raise self.model.write_once_error(
            f"{self.model._meta.verbose_name_plural} are write-once: they cannot be deleted"
        )

    def bulk_update(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise self.model.write_once_error(
            f"{self.model._meta.verbose_name_plural} are write-once: they cannot be updated"
        )


class WriteOnceModel(models.Model):
    """Created once, never changed or deleted by the application (a PostgreSQL trigger backs this up)."""

    write_once_error: type[WriteOnceError] = WriteOnceError

    objects = WriteOnceQuerySet.as_manager()

    class Meta:
        abstract = True

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise self.write_once_error(f"{self._meta.verbose_name} {self} is write-once: it cannot be changed")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise self.write_once_error(f"{self._meta.verbose_name} {self} is write-once: it cannot be deleted")


class AuditEvent(WriteOnceModel):
    """Who changed what, from what to what, and why. Append-only (a PostgreSQL trigger enforces it too)."""

    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    # Kept as text too, so the record reads the same even if the user is later renamed.
    actor_name = models.CharField(max_length=150)
    action = models.CharField(max_length=100)
    object_type = models.CharField(max_length=100)
    object_id = models.CharField(max_length=100)
    object_repr = models.CharField(max_length=200, blank=True)
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    reason = models.TextField(blank=True)
    # The slug of the project the object belongs to ("" for what belongs to none): who may read the event.
    project = models.CharField(max_length=63, blank=True, default="", db_index=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    write_once_error = AuditImmutableError

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["object_type", "object_id"]),
            models.Index(fields=["action"]),
            # The audit page reads a page in this order (created_at alone leaves the id tie-break to a sort).
            models.Index(fields=["-created_at", "-id"], name="audit_event_newest_first"),
        ]

    def __str__(self) -> str:
        return (
            f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.actor_name} {self.action} {self.object_type}:{self.object_id}"
        )


class Heartbeat(models.Model):
    """When a worker or beat was last seen alive; shown on the status page."""

    name = models.CharField(max_length=200, primary_key=True)
    last_seen = models.DateTimeField()
    detail = models.JSONField(default=dict, blank=True)

    def __str__(self) -> str:
        return self.name


class AwsRetryCount(models.Model):
    """How often AWS asked us to slow down or failed, per day and API call: the retries botocore made (with its
    backoff and jitter), and the calls that still failed after them. Counted by workers.aws's after-call hook; shown
    on the status page."""

    day = models.DateField()
    service = models.CharField(max_length=60)
    operation = models.CharField(max_length=100)
    retries = models.PositiveIntegerField(default=0)
    gave_up = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-day", "service", "operation"]
        constraints = [models.UniqueConstraint(fields=["day", "service", "operation"], name="aws_retry_count_once")]

    def __str__(self) -> str:
        return f"{self.day} {self.service}.{self.operation}: {self.retries} retries, {self.gave_up} gave up"


class SystemCheck(models.Model):
    """An end-to-end check an admin runs from the status page: portal → broker → worker → stores."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        PASSED = "passed"
        FAILED = "failed"

    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.QUEUED)
    results = models.JSONField(default=list, blank=True)
    worker = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # Claimed work (controlplane.transitions): which worker attempt holds it, since when, when it was last queued.
    attempt = models.PositiveIntegerField(default=0)
    claimed_at = models.DateTimeField(null=True, blank=True)
    enqueued_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"system check {self.pk} ({self.status})"

    @property
    def done(self) -> bool:
        return self.status in (self.Status.PASSED, self.Status.FAILED)


class TransitionEvent(WriteOnceModel):
    """Append-only record of a state transition of an object that has no event table of its own
    (dataset registrations and profiles, system checks): see controlplane.transitions."""

    object_type = models.CharField(max_length=100)
    object_id = models.CharField(max_length=64)
    action = models.CharField(max_length=50)
    from_status = models.CharField(max_length=20, blank=True)
    to_status = models.CharField(max_length=20)
    reason = models.TextField(blank=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    attempt = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [models.Index(fields=["object_type", "object_id"])]

    def __str__(self) -> str:
        return f"{self.object_type} {self.object_id}: {self.from_status or '—'} → {self.to_status}"


class Notification(models.Model):
    """Something a user is told in the app (and by email): an approval's outcome, later budget alerts."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notifications")
    title = models.CharField(max_length=200)
    body = models.TextField(blank=True)
    url = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    read_at = models.DateTimeField(null=True, blank=True)
    # Whether this one is also sent by email (some are for the app only, e.g. "a request waits for you").
    by_email = models.BooleanField(default=True)
    # The email: claimed by a worker (a lease, so a worker that died mid-send is retried), then marked sent.
    email_claimed_at = models.DateTimeField(null=True, blank=True)
    emailed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["user", "read_at"], name="notification_unread")]

    def __str__(self) -> str:
        return f"{self.user}: {self.title}"
