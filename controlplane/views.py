"""Pages: home, notifications, projects, audit log, API token, system status, signed object downloads."""

from __future__ import annotations

import csv
import json
import mimetypes
import re
from collections.abc import Callable, Iterator
from functools import wraps
from typing import Any
from urllib.parse import urlencode, urlsplit

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_not_required, login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.db import DatabaseError, connection
from django.forms import Form
from django.http import (
    FileResponse,
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponsePermanentRedirect,
    JsonResponse,
    StreamingHttpResponse,
)
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import Resolver404, resolve
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods, require_POST
from rest_framework.authtoken.models import Token

from controlplane import access, permissions, selectors, services
from controlplane.backends import object_store
from controlplane.filters import filtered_list
from controlplane.forms import (
    ProjectChangeForm,
    ProjectCreateForm,
    ProjectMemberForm,
    ProjectRestrictForm,
    json_pretty,
)
from controlplane.middleware import DATABASE_RETRY_AFTER_SECONDS, close_broken_connections
from controlplane.models import AuditEvent, Notification, Project, ProjectMember, SystemCheck
from workers.errors import ObjectNotFound
from workers.objectstore.local import verify_download_signature

PAGE_SIZE = 25


def page_requires(action: str) -> Callable[[Callable[..., HttpResponse]], Callable[..., HttpResponse]]:
    """For views that are not ours (e.g. the API docs): sign-in, then the role check."""

    def decorate(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @login_required
        @wraps(view)
        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            permissions.require(request.user, action)
            return view(request, *args, **kwargs)

        return wrapped

    return decorate


# permissions.require words its refusal "<action> needs one of these roles: ..."; the page names both parts.
_NEEDS_ROLES = " needs one of these roles: "


def permission_denied(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """handler403: the refusal in the site layout, with the reason and the roles that would be allowed."""
    reason = str(exception or "") or "You may not open this page."
    action, _, _ = reason.partition(_NEEDS_ROLES)
    needed = (
        sorted(permissions.PERMISSIONS[action]) if _NEEDS_ROLES in reason and action in permissions.PERMISSIONS else []
    )
    if request.path.startswith("/api/"):
        return JsonResponse({"error": {"status": 403, "code": "permission_denied", "message": reason}}, status=403)
    context = {
        "reason": reason,
        "action": action if needed else "",
        "needed_roles": needed,
        "your_roles": sorted(permissions.user_roles(request.user)),
    }
    return render(request, "403.html", context, status=403)


def bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """handler400: a request Django could not read (a malformed multipart body, a bad Host header) — before any view
    ran. API paths answer the API's JSON error body; pages a short page."""
    detail = str(exception or "") or "the request could not be read"
    message = f"The request could not be read: {detail}."
    if request.path.startswith("/api/"):
        return JsonResponse({"error": {"status": 400, "code": "bad_request", "message": message}}, status=400)
    return HttpResponse(message, status=400, content_type="text/plain; charset=utf-8")


def server_error(request: HttpRequest) -> HttpResponse:
    """handler500: API paths answer the API's JSON error body (the traceback goes to the log, never to the client)."""
    message = "Something went wrong on our side; it has been logged. Try again, or tell an admin if it persists."
    if request.path.startswith("/api/"):
        return JsonResponse({"error": {"status": 500, "code": "server_error", "message": message}}, status=500)
    return HttpResponse(message, status=500, content_type="text/plain; charset=utf-8")


def page_not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """handler404: API paths answer the API's JSON error body; pages answer in the site layout."""
    # A Resolver404's text is the list of patterns tried: say what is missing instead.
    reason = "" if exception is None or isinstance(exception, Resolver404) else str(exception)
    if request.path.startswith("/api/"):
        message = reason or f"no API endpoint at {request.path}"
        return JsonResponse({"error": {"status": 404, "code": "not_found", "message": message}}, status=404)
    return render(request, "404.html", {"reason": reason, "path": request.path}, status=404)


@login_not_required
@csrf_exempt
def api_not_found(request: HttpRequest, path: str = "") -> HttpResponse:
    """The last /api/v1/ route: an unknown endpoint is a JSON 404 even with DEBUG on (Django's debug page is HTML)."""
    with_slash = request.path + "/"
    if not request.path.endswith("/") and _resolves(with_slash):
        # What CommonMiddleware's APPEND_SLASH did before this catch-all matched first.
        if request.method in ("GET", "HEAD"):
            return HttpResponsePermanentRedirect(with_slash)
        message = f"no API endpoint at {request.path}: did you mean {with_slash}?"
    else:
        message = f"no API endpoint at {request.path}"
    return JsonResponse({"error": {"status": 404, "code": "not_found", "message": message}}, status=404)


def _resolves(path: str) -> bool:
    try:
        match = resolve(path)
    except Resolver404:
        return False
    return match.func is not api_not_found


def apply_service_errors(
    form: Form,
    exc: ValidationError,
    field_for: Callable[[str], str] | None = None,
    *,
    about: tuple[str, ...] = (),
) -> None:
    """Show a service's field errors on the form fields they name (`field_for` maps service names to form fields).

    An error for a name the form has no field for is shown at the top, prefixed with that name, unless the name is
    one the page is `about` (e.g. the model version a promotion form is for): then it needs no name.
    """
    if not hasattr(exc, "error_dict"):
        form.add_error(None, exc.messages)
        return
    for name, errors in exc.message_dict.items():
        field = field_for(name) if field_for else name
        if field in form.fields:
            form.add_error(field, errors)
        else:
            form.add_error(None, errors if name in about else [f"{name}: {error}" for error in errors])


def paginate(request: HttpRequest, items: Any, per_page: int = PAGE_SIZE) -> Any:
    return Paginator(items, per_page).get_page(request.GET.get("page"))


@login_not_required
def healthz(request: HttpRequest) -> HttpResponse:
    """For load balancers and container health checks: the process answers and the database is reachable (503
    saying so when it is not, so a load balancer takes this instance out until it is back)."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except DatabaseError:
        close_broken_connections()
        response = HttpResponse("database unavailable\n", content_type="text/plain", status=503)
        response["Retry-After"] = str(DATABASE_RETRY_AFTER_SECONDS)
        response["Cache-Control"] = "no-store"
        return response
    return HttpResponse("ok\n", content_type="text/plain")


def word_parts(name: str) -> list[str]:
    """A dotted name cut after each dot and underscore: the page lets a narrow column wrap it there, never mid-word."""
    return [part for part in re.split(r"(?<=[._])", name) if part]


# Parts of the home page that refresh themselves while something in them is under way: part -> (template, read).
HOME_PARTS: dict[str, tuple[str, Callable[[Any], dict[str, Any]]]] = {
    "runs": ("controlplane/_home_runs.html", lambda user: selectors.home_runs(user=user)),
    "deployments": ("controlplane/_home_deployments.html", lambda user: selectors.home_deployments(user=user)),
}


def home(request: HttpRequest) -> HttpResponse:
    """Each role's starting point: a data scientist's work, an approver's queue and services, finance's month;
    open alerts for all. Admins see every section."""
    roles = permissions.user_roles(request.user)
    part = HOME_PARTS.get(request.GET.get("part", ""))
    if part is not None and roles and request.htmx:
        template, read = part
        return render(request, template, read(request.user))
    context: dict[str, Any] = {"roles": sorted(roles)}
    if roles:
        context.update(
            project_count=access.scope(Project.objects.all(), request.user).count(),
            recent_events=[
                (event, word_parts(event.action)) for event in access.scope(AuditEvent.objects.all(), request.user)[:8]
            ],
        )
    if permissions.has_permission(request.user, "run.launch"):
        context.update(my_work=True, **selectors.home_runs(user=request.user))
        context.update(selectors.home_models(user=request.user), **selectors.home_my_requests(user=request.user))
    context["can_decide"] = permissions.has_permission(request.user, "approval.decide")
    if context["can_decide"]:
        context.update(selectors.home_queue(user=request.user))
    if permissions.has_permission(request.user, "deployment.rollback"):
        context.update(
            can_roll_back=True,
            **selectors.home_rollbacks(user=request.user),
            **selectors.home_deployments(user=request.user),
        )
    context.update(_home_costs(request.user, roles))
    return render(request, "controlplane/home.html", context)


def _home_costs(user: Any, roles: frozenset[str]) -> dict[str, Any]:
    """A data scientist's month (their runs and the serving of their model versions); for finance, the month's
    spend against the overall budget and the budgets near or over their limit."""
    from monitoring.costs import object_selectors as cost_objects
    from monitoring.costs import selectors as cost_selectors

    today = cost_objects.today()
    out: dict[str, Any] = {"cost_month": cost_selectors.month_start(today)}
    if permissions.has_permission(user, "run.launch"):
        out["my_cost"] = cost_selectors.user_month_cost(user, today)
    if permissions.has_permission(user, "budget.manage"):
        out["overall_cost"] = cost_objects.overall_standing(on=today, user=user)
        out["budgets_near_limit"] = cost_objects.budgets_near_limit(on=today, user=user)
    return out


# --- notifications --------------------------------------------------------------------------


@require_http_methods(["GET", "POST"])
def notification_list(request: HttpRequest) -> HttpResponse:
    """The user's notifications, newest first; POST marks them all read."""
    permissions.require(request.user, "notification.view")
    if request.method == "POST":
        count = services.notifications_mark_read(user=request.user)
        messages.success(request, f"{count} notification{'' if count == 1 else 's'} marked read.")
        return redirect("notification-list")
    listed = filtered_list(
        request.GET,
        selectors.NotificationFilter,
        lambda filters: selectors.notification_list(user=request.user, filters=filters),
    )
    return render(
        request,
        "controlplane/notifications.html",
        {
            "page": paginate(request, listed.rows),
            "filters": listed.values,
            "errors": listed.errors,
            "query": listed.query,
            "unread": Notification.objects.filter(user=request.user, read_at__isnull=True).count(),
        },
        status=400 if listed.errors else 200,
    )


def notification_open(request: HttpRequest, pk: int) -> HttpResponse:
    """Open what a notification is about, marking it read (links in the list and in emails come through here)."""
    permissions.require(request.user, "notification.view")
    notification = get_object_or_404(Notification, pk=pk, user=request.user)
    services.notifications_mark_read(user=request.user, ids=[notification.pk])
    # Only a path on this site: a stored URL is never a way to send someone elsewhere.
    if notification.url and url_has_allowed_host_and_scheme(notification.url, allowed_hosts=None):
        return redirect(notification.url)
    return redirect("notification-list")


# --- projects -------------------------------------------------------------------------------


def project_list(request: HttpRequest) -> HttpResponse:
    permissions.require(request.user, "project.view")
    search = request.GET.get("q", "").strip()
    page = paginate(request, selectors.project_list(user=request.user, search=search))
    return render(
        request,
        "controlplane/project_list.html",
        {
            "page": page,
            "search": search,
            "query": urlencode({"q": search}) if search else "",
            "can_create": permissions.has_permission(request.user, "project.create"),
        },
    )


@require_http_methods(["GET", "POST"])
def project_create(request: HttpRequest) -> HttpResponse:
    permissions.require(request.user, "project.create")
    form = ProjectCreateForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            project = services.project_create(actor=request.user, **form.cleaned_data)
        except ValidationError as exc:
            apply_service_errors(form, exc)
        else:
            messages.success(request, f"Project “{project.name}” created.")
            return redirect("project-detail", slug=project.slug)
    status = 400 if request.method == "POST" else 200
    return render(request, "controlplane/project_form.html", {"form": form}, status=status)


def _visible_project_or_404(request: HttpRequest, slug: str) -> Project:
    """The project, if the user may see it; a restricted one is "not found" to those outside it."""
    return get_object_or_404(access.scope(Project.objects.all(), request.user), slug=slug)


def _project_page(request: HttpRequest, project: Project, status: int = 200, **forms: Form) -> HttpResponse:
    """The project page, with any form the user just sent (and its errors) in place of the blank one."""
    initial = {"description": project.description, "cost_tags": project.cost_tags}
    context: dict[str, Any] = {
        "project": project,
        "form": forms.get("form") or ProjectChangeForm(initial=initial),
        "member_form": forms.get("member_form") or ProjectMemberForm(),
        "restrict_form": forms.get("restrict_form") or ProjectRestrictForm(initial={"restricted": project.restricted}),
        "can_change": permissions.has_permission(request.user, "project.change"),
        "can_manage": permissions.has_permission(request.user, "project.members")
        and access.is_owner(request.user, project),
        "members": selectors.project_members(project=project),
        "history": selectors.audit_event_list(user=request.user, object_type="project", object_id=project.slug)[:20],
    }
    return render(request, "controlplane/project_detail.html", context, status=status)


@require_http_methods(["GET", "POST"])
def project_detail(request: HttpRequest, slug: str) -> HttpResponse:
    permissions.require(request.user, "project.view")
    project = _visible_project_or_404(request, slug)
    if request.method != "POST":
        return _project_page(request, project)
    permissions.require(request.user, "project.change", project=project)
    form = ProjectChangeForm(request.POST)
    if form.is_valid():
        try:
            services.project_update(actor=request.user, project=project, **form.cleaned_data)
        except ValidationError as exc:
            apply_service_errors(form, exc)
        else:
            messages.success(request, "Project updated.")
            return redirect("project-detail", slug=project.slug)
    return _project_page(request, project, status=400, form=form)


@require_POST
def project_restrict(request: HttpRequest, slug: str) -> HttpResponse:
    permissions.require(request.user, "project.members")
    project = _visible_project_or_404(request, slug)
    form = ProjectRestrictForm(request.POST)
    if form.is_valid():
        restricted = form.cleaned_data["restricted"]
        services.project_restrict(
            actor=request.user, project=project, restricted=restricted, reason=form.cleaned_data["reason"]
        )
        messages.success(request, "Restricted to its members." if restricted else "Open to everyone again.")
        return redirect("project-detail", slug=project.slug)
    return _project_page(request, project, status=400, restrict_form=form)


@require_POST
def project_member_set(request: HttpRequest, slug: str) -> HttpResponse:
    permissions.require(request.user, "project.members")
    project = _visible_project_or_404(request, slug)
    form = ProjectMemberForm(request.POST)
    if form.is_valid():
        try:
            member = services.project_member_set(actor=request.user, project=project, **form.cleaned_data)
        except ValidationError as exc:
            apply_service_errors(form, exc)
        else:
            messages.success(request, f"{member.user.get_username()} is now {member.role} of {project.name}.")
            return redirect("project-detail", slug=project.slug)
    return _project_page(request, project, status=400, member_form=form)


@require_POST
def project_member_remove(request: HttpRequest, slug: str, username: str) -> HttpResponse:
    permissions.require(request.user, "project.members")
    project = _visible_project_or_404(request, slug)
    try:
        services.project_member_remove(actor=request.user, project=project, username=username)
    except ValidationError as exc:
        form = ProjectMemberForm({"username": username, "role": ProjectMember.Role.OWNER})
        form.is_valid()
        apply_service_errors(form, exc)
        return _project_page(request, project, status=400, member_form=form)
    messages.success(request, f"{username} is no longer a member of {project.name}.")
    return redirect("project-detail", slug=project.slug)


# --- audit log ------------------------------------------------------------------------------


def _audit_events(request: HttpRequest) -> tuple[Form, Any]:
    """The filter form as the page draws it, and the events it selects (none while the form has errors)."""
    filterset = selectors.audit_filter(request.GET)
    try:
        return filterset.form, selectors.audit_event_list(user=request.user, filters=request.GET)
    except ValidationError:
        return filterset.form, AuditEvent.objects.none()


def audit_list(request: HttpRequest) -> HttpResponse:
    permissions.require(request.user, "audit.view")
    form, events = _audit_events(request)
    query = request.GET.copy()
    query.pop("page", None)
    return render(
        request,
        "controlplane/audit_list.html",
        {
            "form": form,
            "page": paginate(request, events, per_page=50),
            "query": query.urlencode(),
            "can_export": permissions.has_permission(request.user, "audit.export"),
            "choices": selectors.audit_filter_choices(user=request.user),
        },
        status=400 if form.errors else 200,
    )


class _Echo:
    def write(self, value: str) -> str:
        return value


def audit_export(request: HttpRequest) -> HttpResponse:
    """Stream the filtered audit log as CSV (admins only), however long it is."""
    permissions.require(request.user, "audit.export")
    form, events = _audit_events(request)
    if form.errors:
        return render(request, "controlplane/audit_list.html", {"form": form, "page": None}, status=400)
    writer = csv.writer(_Echo())
    columns = ["time", "actor", "action", "object_type", "object_id", "object", "reason", "before", "after"]

    def rows() -> Iterator[str]:
        yield writer.writerow(columns)
        for event in events.iterator(chunk_size=2000):
            yield writer.writerow(
                [
                    event.created_at.isoformat(),
                    event.actor_name,
                    event.action,
                    event.object_type,
                    event.object_id,
                    event.object_repr,
                    event.reason,
                    json.dumps(event.before, sort_keys=True, default=str) if event.before is not None else "",
                    json.dumps(event.after, sort_keys=True, default=str) if event.after is not None else "",
                ]
            )

    response = StreamingHttpResponse(rows(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = 'attachment; filename="audit-log.csv"'
    return response


# --- API token ------------------------------------------------------------------------------


@require_http_methods(["GET", "POST"])
def api_token(request: HttpRequest) -> HttpResponse:
    permissions.require(request.user, "token.manage")
    new_key = None
    if request.method == "POST":
        new_key = services.token_regenerate(actor=request.user).key
        messages.success(request, "New API token created. Copy it now: it is shown only once.")
    has_token = Token.objects.filter(user=request.user).exists()
    return render(request, "controlplane/api_token.html", {"new_key": new_key, "has_token": has_token})


# A flash message's tag for "queued" or "started": the page drops it once nothing on it follows the work any more
# (static/js/app.js), since the page itself then shows how the work ended.
PROGRESS = "progress"


# --- status ---------------------------------------------------------------------------------


def _broker_label() -> str:
    """The broker as the status page names it: the embedded one by its socket (under CONTROLPLANE_VAR_DIR), so
    ada can find it; another by its host, never with its password."""
    from controlplane.embedded_broker import socket_from_url

    if settings.CELERY_BROKER_IS_EMBEDDED:
        return f"embedded Redis ({socket_from_url(settings.CELERY_BROKER_URL)})"
    parts = urlsplit(settings.CELERY_BROKER_URL)
    where = parts.hostname or ""
    if parts.port:
        where += f":{parts.port}"
    return f"Redis ({where}{parts.path})" if where else "Redis"


def system_status(request: HttpRequest) -> HttpResponse:
    permissions.require(request.user, "system.view")
    context = selectors.system_status()
    context.update(
        backend=settings.CONTROLPLANE_BACKEND,
        object_store_url=settings.OBJECT_STORE_URL,
        broker=_broker_label(),
        database=settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1],
    )
    return render(request, "controlplane/system_status.html", context)


@require_POST
def system_check_create(request: HttpRequest) -> HttpResponse:
    check = services.system_check_request(actor=request.user)
    return redirect("system-check-detail", pk=check.pk)


def system_check_detail(request: HttpRequest, pk: int) -> HttpResponse:
    permissions.require(request.user, "system.view")
    check = get_object_or_404(SystemCheck, pk=pk)
    template = "controlplane/_system_check.html" if request.htmx else "controlplane/system_check.html"
    return render(request, template, {"check": check, "results_json": json_pretty(check.results)})


# --- object downloads (local object store) --------------------------------------------------


def object_download(request: HttpRequest, key: str) -> HttpResponse:
    """Serve an object from the local store to signed-in holders of a signed, unexpired link."""
    permissions.require(request.user, "dataset.view")
    if not settings.OBJECT_STORE_URL.startswith("file://"):
        raise Http404("downloads are served by S3 presigned URLs on this deployment")
    expires = request.GET.get("expires", "")
    signature = request.GET.get("signature", "")
    filename = request.GET.get("filename", "")
    if not verify_download_signature(settings.SECRET_KEY, key, expires, signature, filename):
        raise PermissionDenied("this download link is not valid or has expired")
    try:
        handle = object_store().open(key)
    except ObjectNotFound:
        raise Http404(f"no object {key}") from None
    content_type = mimetypes.guess_type(filename or key)[0] or "application/octet-stream"
    return FileResponse(handle, content_type=content_type, as_attachment=bool(filename), filename=filename or None)
