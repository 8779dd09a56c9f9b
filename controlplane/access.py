"""Who may see and act on what a project owns: the second half of the policy, next to the role table in
`controlplane.permissions`.

An action is allowed when the user's role allows it (`permissions.PERMISSIONS`) and, for anything a project owns,
when the user may see that project: it is not restricted, or the user is one of its members, or the user's role sees
across projects for that kind of object (`ACROSS_PROJECTS`). Reads go through `scope`, which filters a queryset to
what the user may see, so an object outside it answers 404 as if it did not exist; actions on an object go through
`permissions.require(..., project=...)`, which refuses with 403 and says the project is restricted.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied
from django.db.models import Model, QuerySet

from controlplane import permissions
from controlplane.models import Project

# Model label → how that model reaches its project: a lookup to the Project ("fk:<path>") or to a project slug kept
# as text ("slug:<field>"; rows with no project have ""). A project-owned model missing here is visible to no one
# through `scope`, which raises so that the omission shows in the first test.
PROJECT_PATHS: dict[str, str] = {
    "controlplane.Project": "fk:",
    "controlplane.AuditEvent": "slug:project",
    "lineage.Dataset": "fk:project",
    "lineage.DatasetVersion": "fk:dataset__project",
    "lineage.DatasetRegistration": "fk:project",
    "lineage.Run": "fk:project",
    "lineage.RunInput": "fk:dataset_version__dataset__project",
    "lineage.RegisteredModel": "fk:project",
    "lineage.ModelVersion": "fk:registered_model__project",
    "deployments.ApprovalRequest": "fk:model_version__registered_model__project",
    "deployments.Service": "fk:registered_model__project",
    "deployments.Deployment": "fk:service__registered_model__project",
    "monitoring.MetricPoint": "fk:service__registered_model__project",
    "monitoring.DriftReport": "fk:service__registered_model__project",
    "monitoring.Alert": "fk:service__registered_model__project",
    "monitoring.CostRecord": "slug:project",
    "monitoring.CostMonth": "slug:project",
    "monitoring.CostForecast": "slug:project",
    "monitoring.Budget": "fk:project",
    "monitoring.BudgetCrossing": "fk:budget__project",
}

# Cost rows that may come from the bill's model-tag breakdown, with no project but a model slug.
BILLED_BY_MODEL = frozenset({"monitoring.CostRecord", "monitoring.CostMonth"})

# Model label → the roles that see every project's rows of it, restricted or not. Admins see everything; finance
# sees every project's costs and budgets (and the projects themselves, to name them), nothing else of theirs.
_EVERYWHERE = frozenset({permissions.ADMIN})
_COSTS = frozenset({permissions.FINANCE, permissions.ADMIN})
ACROSS_PROJECTS: dict[str, frozenset[str]] = {
    "controlplane.Project": _COSTS,
    "monitoring.CostRecord": _COSTS,
    "monitoring.CostMonth": _COSTS,
    "monitoring.CostForecast": _COSTS,
    "monitoring.Budget": _COSTS,
    "monitoring.BudgetCrossing": _COSTS,
}


def _label(model: type[Model]) -> str:
    return f"{model._meta.app_label}.{model._meta.object_name}"


def sees_across(user: Any, label: str) -> bool:
    return bool(permissions.user_roles(user) & ACROSS_PROJECTS.get(label, _EVERYWHERE))


def _hidden_projects(user: Any) -> QuerySet[Project]:
    """The projects whose objects the user may not see: restricted ones they are not a member of (every one, for
    someone with no role). The one statement of it: every other read here derives from it."""
    if not permissions.user_roles(user):
        return Project.objects.all()
    return Project.objects.filter(restricted=True).exclude(members__user=user)


def visible_projects(user: Any) -> QuerySet[Project]:
    """The projects whose objects the user may see: the open ones and those the user is a member of (all, for an
    admin)."""
    if permissions.ADMIN in permissions.user_roles(user):
        return Project.objects.all()
    return Project.objects.exclude(pk__in=_hidden_projects(user).values("pk"))


def hidden_project_slugs(user: Any) -> QuerySet[Project]:
    """The slugs of the projects whose objects the user may not see (a subquery)."""
    return _hidden_projects(user).values("slug")


def hides_some_project(user: Any) -> bool:
    """Whether some project's objects are hidden from the user (then totals over everything are not theirs to read)."""
    return _hidden_projects(user).exists()


def scope(queryset: QuerySet[Any], user: Any) -> QuerySet[Any]:
    """`queryset` narrowed to the rows the user may see."""
    label = _label(queryset.model)
    path = PROJECT_PATHS.get(label)
    if path is None:
        raise KeyError(f"{label} has no project path: add it to controlplane.access.PROJECT_PATHS")
    if not permissions.user_roles(user):
        return queryset.none()
    if sees_across(user, label):
        return queryset
    kind, _, field = path.partition(":")
    if kind == "slug":
        rows = queryset.exclude(**{f"{field}__in": hidden_project_slugs(user)})
        if label in BILLED_BY_MODEL:
            # The bill's breakdown by model tag carries no project: its rows for a hidden project's models go too
            # (a visible model of the same slug with them: the tag cannot tell them apart).
            from lineage.models import RegisteredModel

            hidden_models = RegisteredModel.objects.filter(project__in=_hidden_projects(user).values("pk"))
            rows = rows.exclude(**{field: "", "model__in": hidden_models.values("slug")})
        return rows
    hidden = _hidden_projects(user).values("pk")
    return queryset.exclude(**{f"{field}__in" if field else "pk__in": hidden})


def can_see(user: Any, project: Project | str | None, *, label: str = "controlplane.Project") -> bool:
    """Whether the user may see (and so act on, as their role allows) what `project` owns. None or "" is no
    project: everyone may."""
    if project is None or project == "":
        return True
    if not permissions.user_roles(user):
        return False
    if sees_across(user, label):
        return True
    if isinstance(project, str):
        found = Project.objects.filter(slug=project).only("pk", "restricted").first()
        if found is None:
            return True  # a project slug that names no project (an untagged or deleted one's costs)
        return _admits(found, user)
    return _admits(project, user)


def _admits(project: Project, user: Any) -> bool:
    return not project.restricted or project.members.filter(user=user).exists()


# A label in no table: across projects, only admins (the default of ACROSS_PROJECTS) may act.
_ACTING = "acting"


def can_act(user: Any, project: Project | str | None) -> bool:
    """Whether the user may work within `project` (as their role allows): a member of a restricted one, or an admin.
    Finance's view of every project's costs is no licence to act in them."""
    return can_see(user, project, label=_ACTING)


def require_project(user: Any, project: Project | str | None) -> None:
    """Raise PermissionDenied (HTTP 403) unless the user may act within `project`."""
    if not can_act(user, project):
        name = project if isinstance(project, str) else getattr(project, "slug", "")
        raise PermissionDenied(f"project {name!r} is restricted to its members")


def is_owner(user: Any, project: Project) -> bool:
    if permissions.ADMIN in permissions.user_roles(user):
        return True
    return project.members.filter(user=user, role="owner").exists()
