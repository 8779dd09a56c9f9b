"""Writes and transitions for projects, the audit log, API tokens and system checks."""

from __future__ import annotations

import io
import logging
import re
import socket
import time
from datetime import timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, connection, transaction
from django.db.models import F, Q
from django.urls import reverse
from django.utils import timezone
from rest_framework.authtoken.models import Token

from controlplane import access, permissions, tasks
from controlplane.backends import object_store
from controlplane.models import AuditEvent, AwsRetryCount, Heartbeat, Notification, Project, ProjectMember, SystemCheck
from controlplane.transitions import StateMachine, default_lease_seconds, transitions

log = logging.getLogger(__name__)

# --- audit ------------------------------------------------------------------------------------


def audit_record(
    *,
    actor: Any,
    action: str,
    object_type: str,
    object_id: str | int,
    object_repr: str = "",
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    reason: str = "",
    project: Project | str | None = None,
) -> AuditEvent:
    """Append one audit event. Call it inside the transaction that makes the change. `project` (the Project or its
    slug) is the project the object belongs to: only those who may see that project read the event."""
    is_user = actor is not None and getattr(actor, "is_authenticated", False)
    slug = project.slug if isinstance(project, Project) else (project or "")
    return AuditEvent.objects.create(
        project=slug,
        actor=actor if is_user else None,
        actor_name=actor.get_username() if is_user else "system",
        action=action,
        object_type=object_type,
        object_id=str(object_id),
        object_repr=object_repr[:200],
        before=before,
        after=after,
        reason=reason,
    )


# --- notifications ----------------------------------------------------------------------------


def notify(*, users: list[Any], title: str, body: str = "", url: str = "", email: bool = True) -> list[Notification]:
    """Tell each user in the app, and (with `email`) by email once the transaction commits, if they have an
    address."""
    created = [
        Notification.objects.create(user=user, title=title[:200], body=body, url=url[:500], by_email=email)
        for user in {user.pk: user for user in users if user is not None and user.is_active}.values()
    ]
    for notification in created:
        if email and notification.user.email:
            transaction.on_commit(lambda pk=notification.pk: tasks.notification_email_task.delay(pk), robust=True)
    return created


NOTIFICATION_EMAIL_LEASE = timedelta(minutes=10)
NOTIFICATION_EMAIL_GIVE_UP = timedelta(days=2)


def notification_email_send(*, notification_id: int) -> bool:
    """Send one notification's email. The row is claimed for a lease first, so a redelivered message does not send
    it twice while a worker is sending; it is marked sent only after the mail server took it, so a worker that died
    mid-send leaves it to the sweep. Returns whether this call sent it."""
    from django.conf import settings
    from django.core.mail import send_mail

    now = timezone.now()
    claimed = (
        Notification.objects.filter(pk=notification_id, by_email=True, emailed_at__isnull=True)
        .filter(Q(email_claimed_at__isnull=True) | Q(email_claimed_at__lt=now - NOTIFICATION_EMAIL_LEASE))
        .update(email_claimed_at=now)
    )
    if not claimed:
        return False
    try:
        notification = Notification.objects.select_related("user").get(pk=notification_id)
        opened = reverse("notification-open", args=[notification.pk])
        link = f"{settings.PORTAL_URL.rstrip('/')}{opened}" if notification.url else ""
        send_mail(
            subject=f"[ControlPlane] {notification.title}",
            message="\n\n".join(part for part in (notification.body, link) if part),
            from_email=None,
            recipient_list=[notification.user.email],
        )
    except Exception:
        Notification.objects.filter(pk=notification_id, email_claimed_at=now).update(email_claimed_at=None)
        raise
    Notification.objects.filter(pk=notification_id).update(emailed_at=timezone.now())
    return True


def notification_emails_resume() -> int:
    """The periodic sweep: emails not sent yet (a lost message, a dead worker, a mail server that was down) are
    sent again, for two days; returns how many were queued."""
    now = timezone.now()
    due = (
        Notification.objects.filter(
            by_email=True, emailed_at__isnull=True, created_at__gt=now - NOTIFICATION_EMAIL_GIVE_UP
        )
        .filter(created_at__lt=now - timedelta(minutes=5))
        .exclude(user__email="")
        .filter(Q(email_claimed_at__isnull=True) | Q(email_claimed_at__lt=now - NOTIFICATION_EMAIL_LEASE))
    )
    ids = list(due.values_list("pk", flat=True)[:200])
    for pk in ids:
        tasks.notification_email_task.delay(pk)
    return len(ids)


def notifications_mark_read(*, user: Any, ids: list[int] | None = None) -> int:
    """Mark the user's notifications read (all of them, or those in `ids`); returns how many changed."""
    unread = Notification.objects.filter(user=user, read_at__isnull=True)
    if ids is not None:
        unread = unread.filter(pk__in=ids)
    return unread.update(read_at=timezone.now())


# --- projects ---------------------------------------------------------------------------------

# Used with fullmatch; \A...\Z (not ^...$, whose $ also matches before a final newline) keeps .match callers safe too.
SLUG_RE = re.compile(r"\A[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z")
TAG_CHARS_RE = re.compile(r"[\w +=.:/@-]*")  # AWS tag characters: letters, digits, spaces and + = . _ : / @ -
# Tags the system sets itself on every AWS resource; a project may not redefine them.
RESERVED_TAG_KEYS = frozenset({"project", "model", "environment", "run", "deployment"})
MAX_COST_TAGS = 20


def _validate_cost_tags(cost_tags: Any) -> list[str]:
    if not isinstance(cost_tags, dict):
        return ['expected an object mapping tag keys to string values, e.g. {"team": "fraud"}']
    errors = []
    if len(cost_tags) > MAX_COST_TAGS:
        errors.append(f"at most {MAX_COST_TAGS} tags are allowed (got {len(cost_tags)})")
    for key, value in cost_tags.items():
        if not isinstance(key, str) or not 1 <= len(key) <= 128 or not TAG_CHARS_RE.fullmatch(key):
            errors.append(f"tag key {key!r}: expected 1-128 letters, digits, spaces or + - = . _ : / @")
        elif key.lower().startswith("aws:"):
            errors.append(f"tag key {key!r}: keys starting with 'aws:' are reserved by AWS")
        elif key.lower() in RESERVED_TAG_KEYS:
            errors.append(f"tag key {key!r}: set by ControlPlane itself ({', '.join(sorted(RESERVED_TAG_KEYS))})")
        if not isinstance(value, str) or len(value) > 256 or not TAG_CHARS_RE.fullmatch(value):
            errors.append(
                f"tag {key!r}: value expected to be text of at most 256 letters, digits, spaces or + - = . _ : / @"
            )
    return errors


def _project_state(project: Project) -> dict[str, Any]:
    return {
        "name": project.name,
        "slug": project.slug,
        "description": project.description,
        "cost_tags": project.cost_tags,
    }


def project_create(
    *, actor: Any, name: str, slug: str, description: str = "", cost_tags: dict[str, str] | None = None
) -> Project:
    permissions.require(actor, "project.create")
    cost_tags = {} if cost_tags is None else cost_tags
    name = (name or "").strip()
    errors: dict[str, list[str]] = {}
    if not name:
        errors["name"] = ["required: a short human-readable name"]
    elif len(name) > 100:
        errors["name"] = ["expected at most 100 characters"]
    elif Project.objects.filter(name__iexact=name).exists():
        errors["name"] = [f"a project named {name!r} already exists"]
    if not SLUG_RE.fullmatch(slug or ""):
        errors["slug"] = [
            "expected 1-63 lowercase letters, digits or hyphens, starting and ending with a letter or digit"
        ]
    elif Project.objects.filter(slug=slug).exists():
        errors["slug"] = [f"a project with slug {slug!r} already exists"]
    tag_errors = _validate_cost_tags(cost_tags)
    if tag_errors:
        errors["cost_tags"] = tag_errors
    if errors:
        raise ValidationError(errors)
    try:
        with transaction.atomic():
            project = Project.objects.create(
                name=name, slug=slug, description=description.strip(), cost_tags=cost_tags, created_by=actor
            )
            ProjectMember.objects.create(project=project, user=actor, role=ProjectMember.Role.OWNER, added_by=actor)
            audit_record(
                actor=actor,
                action="project.create",
                object_type="project",
                object_id=project.slug,
                object_repr=project.name,
                after=_project_state(project),
                project=project,
            )
    except IntegrityError:
        # Another request created the same name or slug between our check and our insert.
        raise ValidationError({"slug": [f"a project with slug {slug!r} or name {name!r} already exists"]}) from None
    return project


def project_update(
    *,
    actor: Any,
    project: Project,
    description: str | None = None,
    cost_tags: dict[str, str] | None = None,
    reason: str = "",
) -> Project:
    """Change a project's description or cost tags. The slug never changes: cost history is keyed by it."""
    permissions.require(actor, "project.change")
    if cost_tags is not None:
        tag_errors = _validate_cost_tags(cost_tags)
        if tag_errors:
            raise ValidationError({"cost_tags": tag_errors})
    with transaction.atomic():
        locked = Project.objects.select_for_update().get(pk=project.pk)
        before = _project_state(locked)
        if description is not None:
            locked.description = description.strip()
        if cost_tags is not None:
            locked.cost_tags = cost_tags
        after = _project_state(locked)
        if after == before:
            return locked
        locked.save()
        audit_record(
            actor=actor,
            action="project.change",
            object_type="project",
            object_id=locked.slug,
            object_repr=locked.name,
            before=before,
            after=after,
            reason=reason,
            project=locked,
        )
    return locked


# --- project access ---------------------------------------------------------------------------


def _require_owner(actor: Any, project: Project) -> None:
    permissions.require(actor, "project.members", project=project)
    if not access.is_owner(actor, project):
        raise PermissionDenied(f"only the owners of project {project.slug!r} and admins may change who is in it")


def _members_state(project: Project) -> dict[str, Any]:
    return {
        "restricted": project.restricted,
        "members": {m.user.get_username(): m.role for m in project.members.select_related("user")},
    }


def _audit_access(actor: Any, project: Project, action: str, before: dict[str, Any], reason: str) -> None:
    audit_record(
        actor=actor,
        action=action,
        object_type="project",
        object_id=project.slug,
        object_repr=project.name,
        before=before,
        after=_members_state(project),
        reason=reason,
        project=project,
    )


def project_restrict(*, actor: Any, project: Project, restricted: bool, reason: str = "") -> Project:
    """Restrict a project to its members, or open it to everyone again."""
    _require_owner(actor, project)
    with transaction.atomic():
        locked = Project.objects.select_for_update().get(pk=project.pk)
        if locked.restricted == restricted:
            return locked
        before = _members_state(locked)
        locked.restricted = restricted
        locked.save(update_fields=["restricted", "updated_at"])
        _audit_access(actor, locked, "project.restrict" if restricted else "project.open", before, reason)
    return locked


def project_member_set(*, actor: Any, project: Project, username: str, role: str, reason: str = "") -> ProjectMember:
    """Add a user to a project, or change their role in it."""
    _require_owner(actor, project)
    if role not in ProjectMember.Role.values:
        raise ValidationError({"role": [f"expected one of: {', '.join(ProjectMember.Role.values)}"]})
    user = get_user_model().objects.filter(username=(username or "").strip(), is_active=True).first()
    if user is None:
        raise ValidationError({"username": [f"there is no active user {username!r}"]})
    with transaction.atomic():
        locked = Project.objects.select_for_update().get(pk=project.pk)
        before = _members_state(locked)
        member, created = ProjectMember.objects.get_or_create(
            project=locked, user=user, defaults={"role": role, "added_by": actor}
        )
        if not created and member.role == role:
            return member
        if not created:
            if member.role == ProjectMember.Role.OWNER and not _other_owners(locked, user):
                raise ValidationError({"role": [f"{user.get_username()} is the last owner: add another owner first"]})
            member.role = role
            member.save(update_fields=["role"])
        _audit_access(actor, locked, "project.member_set", before, reason)
        if user != actor:
            notify(
                users=[user],
                title=f"{actor.get_username()} made you {role} of project {locked.name}",
                body=reason,
                url=reverse("project-detail", args=[locked.slug]),
            )
    return member


def _other_owners(project: Project, user: Any) -> bool:
    return project.members.filter(role=ProjectMember.Role.OWNER).exclude(user=user).exists()


def project_member_remove(*, actor: Any, project: Project, username: str, reason: str = "") -> None:
    _require_owner(actor, project)
    with transaction.atomic():
        # The project's row lock serialises member changes, so two owners removing each other leave one.
        locked = Project.objects.select_for_update().get(pk=project.pk)
        member = locked.members.select_related("user").filter(user__username=username).first()
        if member is None:
            raise ValidationError({"username": [f"{username!r} is not a member of project {locked.slug!r}"]})
        if member.role == ProjectMember.Role.OWNER and not _other_owners(locked, member.user):
            raise ValidationError({"username": [f"{username} is the last owner: add another owner first"]})
        before = _members_state(locked)
        member.delete()
        _audit_access(actor, locked, "project.member_remove", before, reason)


# --- API tokens -------------------------------------------------------------------------------


def token_regenerate(*, actor: Any) -> Token:
    """Replace the user's API token; the old one stops working at once."""
    permissions.require(actor, "token.manage")
    with transaction.atomic():
        had_token = Token.objects.filter(user=actor).delete()[0] > 0
        token = Token.objects.create(user=actor)
        audit_record(
            actor=actor,
            action="token.regenerate" if had_token else "token.create",
            object_type="user",
            object_id=actor.pk,
            object_repr=actor.get_username(),
        )
    return token


# --- health -----------------------------------------------------------------------------------


def aws_retries_record(service: str, operation: str, retries: int, gave_up: bool) -> None:
    """Count one AWS call's retries, and whether it failed after them, for today (workers.aws calls this)."""
    row, _ = AwsRetryCount.objects.get_or_create(day=timezone.now().date(), service=service, operation=operation)
    AwsRetryCount.objects.filter(pk=row.pk).update(
        retries=F("retries") + retries, gave_up=F("gave_up") + (1 if gave_up else 0)
    )


def heartbeat_record(*, name: str, detail: dict[str, Any] | None = None) -> None:
    Heartbeat.objects.update_or_create(name=name, defaults={"last_seen": timezone.now(), "detail": detail or {}})


SYSTEM_CHECK_MACHINE = StateMachine(
    model=SystemCheck,
    table=transitions(
        {
            "run": ({"queued"}, "running"),
            "pass": ({"running"}, "passed"),
            "fail": ({"queued", "running"}, "failed"),
        }
    ),
    terminal=frozenset({"passed", "failed"}),
    timestamps={"running": "started_at"},
)


def system_check_request(*, actor: Any) -> SystemCheck:
    """Queue an end-to-end check; a worker runs it (the request itself touches no backend)."""
    permissions.require(actor, "system.check")
    with transaction.atomic():
        check = SystemCheck.objects.create(requested_by=actor, enqueued_at=timezone.now())
        transaction.on_commit(lambda: tasks.system_check_run_task.delay(check.pk), robust=True)
    return check


def system_check_run(*, check_id: int, worker: str | None = None) -> SystemCheck | None:
    """Run a queued check. Claimed by one worker, so a redelivered message runs it once."""
    worker = worker or socket.gethostname()
    attempt = SYSTEM_CHECK_MACHINE.claim(check_id, "run", worker=worker)
    if attempt is None:
        log.info("system check %s: another worker got there first, or it is gone", check_id)
        return None
    try:
        results = [_probe("database", _probe_database), _probe("object store", _probe_object_store)]
        passed = all(result["ok"] for result in results)
        SYSTEM_CHECK_MACHINE.apply(
            check_id,
            "pass" if passed else "fail",
            attempt=attempt,
            quiet=True,
            results=results,
            reason="" if passed else "a probe failed",
        )
    except BaseException:
        SYSTEM_CHECK_MACHINE.release(check_id, attempt)  # the sweep sends it again
        raise
    heartbeat_record(name=f"worker:{worker}", detail={"via": "system check"})
    return SystemCheck.objects.get(pk=check_id)


def system_checks_requeue_stale() -> int:
    """Send again a check whose message seems lost: still queued, or claimed by a worker that died, a lease after
    it was last sent. The task claims the check, so a duplicate does nothing."""
    now = timezone.now()
    expired = now - timedelta(seconds=default_lease_seconds())
    resend = now - timedelta(seconds=60)
    lost = Q(status="queued") | Q(status="running") & (Q(claimed_at__lt=expired) | Q(claimed_at__isnull=True))
    stale = list(
        SystemCheck.objects.filter(lost)
        .filter(Q(enqueued_at__lt=resend) | Q(enqueued_at__isnull=True))
        .values_list("pk", flat=True)[:100]
    )
    for check_id in stale:
        SystemCheck.objects.filter(pk=check_id).update(enqueued_at=now)
        tasks.system_check_run_task.delay(check_id)
    return len(stale)


def _probe(name: str, fn: Any) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        detail = fn()
        ok = True
    except Exception as exc:  # a probe reports any failure instead of raising
        detail, ok = f"{type(exc).__name__}: {exc}", False
    return {"name": name, "ok": ok, "detail": detail, "ms": round((time.perf_counter() - started) * 1000, 1)}


def _probe_database() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return f"{connection.vendor} answered"


def _probe_object_store() -> str:
    store = object_store()
    payload = b"controlplane system check\n"
    stored = store.put_content_addressed(io.BytesIO(payload), prefix="system-check/", suffix=".txt")
    with store.open(stored.key) as handle:
        if handle.read() != payload:
            raise RuntimeError(f"read back different bytes from {stored.uri}")
    return f"wrote and read back {stored.uri}"
