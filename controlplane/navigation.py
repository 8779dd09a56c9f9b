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
    ("Audit log", "audit-list", "audit.view"),
    ("API", "api-docs", "apidocs.view"),
    ("Status", "system-status", "system.view"),
]


def navigation(request: HttpRequest) -> dict[str, Any]:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {"nav_items": [], "user_roles": []}
    items = []
    for label, url_name, action in NAVIGATION:
        if permissions.has_permission(user, action):
            try:
                url = reverse(url_name)
            except NoReverseMatch:
                continue
            items.append({"label": label, "url": url, "active": request.path.startswith(url)})
    if user.is_staff and permissions.has_permission(user, "system.view"):
        items.append({"label": "Django admin", "url": reverse("admin:index"), "active": False})
    return {"nav_items": items, "user_roles": sorted(permissions.user_roles(user))}
