"""Roles and what each may do. Services call `require`; pages, the API and the admin obey the same table."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied

DATA_SCIENTIST = "data scientist"
APPROVER = "approver"
FINANCE = "finance"
ADMIN = "admin"
ROLES = (DATA_SCIENTIST, APPROVER, FINANCE, ADMIN)
ANY_ROLE = frozenset(ROLES)

# action -> roles allowed. An action missing here is allowed to nobody.
PERMISSIONS: dict[str, frozenset[str]] = {
    "project.view": ANY_ROLE,
    "project.create": frozenset({DATA_SCIENTIST, ADMIN}),
    "project.change": frozenset({DATA_SCIENTIST, ADMIN}),
    # Restricting a project and choosing its members: its owners and admins (controlplane.access.is_owner).
    "project.members": frozenset({DATA_SCIENTIST, ADMIN}),
    "audit.view": ANY_ROLE,
    "audit.export": frozenset({ADMIN}),
    "system.view": frozenset({ADMIN}),
    "system.check": frozenset({ADMIN}),
    "token.manage": ANY_ROLE,
    "dataset.view": ANY_ROLE,
    "dataset.register": frozenset({DATA_SCIENTIST, ADMIN}),
    "run.view": ANY_ROLE,
    "run.launch": frozenset({DATA_SCIENTIST, ADMIN}),
    "run.stop": frozenset({DATA_SCIENTIST, ADMIN}),
    "lineage.view": ANY_ROLE,
    "model.view": ANY_ROLE,
    "apidocs.view": ANY_ROLE,
    "notification.view": ANY_ROLE,
    "environment.view": ANY_ROLE,
    "environment.manage": frozenset({ADMIN}),
    "approval.view": ANY_ROLE,
    "approval.request": frozenset({DATA_SCIENTIST, ADMIN}),
    "approval.decide": frozenset({APPROVER, ADMIN}),
    "service.view": ANY_ROLE,
    "deployment.deploy": frozenset({APPROVER, ADMIN}),
    "deployment.rollback": frozenset({APPROVER, ADMIN}),
    "cost.view": ANY_ROLE,
    "cost.sync": frozenset({FINANCE, ADMIN}),
    "budget.manage": frozenset({FINANCE, ADMIN}),
}


def user_roles(user: Any) -> frozenset[str]:
    if user is None or not getattr(user, "is_authenticated", False) or not user.is_active:
        return frozenset()
    cached = getattr(user, "_controlplane_roles", None)
    if cached is None:
        names = set(user.groups.values_list("name", flat=True))
        if user.is_superuser:
            names.add(ADMIN)
        cached = frozenset(names & set(ROLES))
        user._controlplane_roles = cached
    return cached


def has_permission(user: Any, action: str) -> bool:
    allowed = PERMISSIONS.get(action)
    if allowed is None:
        raise KeyError(f"unknown action {action!r}: add it to controlplane.permissions.PERMISSIONS")
    return bool(user_roles(user) & allowed)


def require(user: Any, action: str, *, project: Any = None) -> None:
    """Raise PermissionDenied (HTTP 403 in pages and API) unless the user's roles allow `action` and, when the action
    is on something a project owns (`project`: the Project or its slug), the user may act within that project
    (`controlplane.access`: restricted projects admit their members and admins)."""
    if not has_permission(user, action):
        roles = ", ".join(sorted(PERMISSIONS[action]))
        raise PermissionDenied(f"{action} needs one of these roles: {roles}")
    if project is not None:
        from controlplane import access

        access.require_project(user, project)
