"""The navigation bar, by role: one list, filtered by the same permission table the services use."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from django.urls import NoReverseMatch, reverse

from controlplane import permissions

# (label, url name, action that must be allowed). Later features add their entries here.
NAVIGATION: list[tuple[str, str, str]] = [
    ("Projects", "project-list", "project.view"),
    ("Datasets", "dataset-list", "dataset.view"),
    ("Runs", "run-list", "run.view"),
    ("Models", "model-list", "model.view"),
    ("Environments", "environment-list", "environment.view"),
    ("Approvals", "approval-queue", "approval.view"),
    ("Services", "service-list", "service.view"),
    ("Monitoring", "monitoring-overview", "service.view"),
    ("Costs", "cost-dashboard", "cost.view"),
    ("Audit log", "audit-list", "audit.view"),
    ("API", "api-docs", "apidocs.view"),
    ("Status", "system-status", "system.view"),
]


def _counts(user: Any) -> dict[str, int]:
    """The numbers beside entries: one COUNT query each, and none for an entry the user does not see."""
    # Imported here: deployments imports controlplane, and this module loads with the settings' context processors.
    from controlplane.models import Notification
    from deployments import selectors as deployment_selectors

    counts: dict[str, int] = {}
    # Everyone who may see requests has the entry; the number waiting only for those who may decide them.
    if permissions.has_permission(user, "approval.decide"):
        counts["approval-queue"] = deployment_selectors.approval_queue_count(user=user)
    if permissions.has_permission(user, "notification.view"):
        counts["notification-list"] = Notification.objects.filter(user=user, read_at__isnull=True).count()
    return counts


def navigation(request: HttpRequest) -> dict[str, Any]:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {"nav_items": [], "user_roles": [], "nav_unread": 0, "nav_notifications": False}
    counts = _counts(user)
    items = []
    for label, url_name, action in NAVIGATION:
        if permissions.has_permission(user, action):
            try:
                url = reverse(url_name)
            except NoReverseMatch:
                continue
            items.append(
                {"label": label, "url": url, "active": request.path.startswith(url), "count": counts.get(url_name, 0)}
            )
    if user.is_staff and permissions.has_permission(user, "system.view"):
        items.append({"label": "Django admin", "url": reverse("admin:index"), "active": False, "count": 0})
    return {
        "nav_items": items,
        "user_roles": sorted(permissions.user_roles(user)),
        # Beside the user's name, not in the main list: notifications are the user's own.
        "nav_notifications": "notification-list" in counts,
        "nav_unread": counts.get("notification-list", 0),
    }
