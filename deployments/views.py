"""Pages for environments and approval requests: thin, each validates, calls a service or selector, renders."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_http_methods
from django_htmx.http import HttpResponseClientRefresh

from controlplane import access, permissions
from controlplane import selectors as audit_selectors
from controlplane.charts import change_chart, compare_chart, profile_chart
from controlplane.filters import filtered_list
from controlplane.models import TransitionEvent
from controlplane.views import apply_service_errors, paginate, word_parts
from deployments import objectives as objective_rules
from deployments import selectors, services
from deployments.forms import ApprovalRequestForm, EnvironmentForm, gate_syntax
from deployments.models import (
    ACTIVE_DEPLOYMENT_STATUSES,
    ApprovalDecision,
    ApprovalRequest,
    Deployment,
    Environment,
    Service,
)
from lineage import selectors as lineage_selectors
from lineage.graph_layout import layout_graph
from lineage.models import DatasetVersion, ModelVersion, Run, RunInput
from monitoring.costs import object_selectors as cost_objects

# --- environments ----------------------------------------------------------------------------------------------


def environment_list(request: HttpRequest) -> HttpResponse:
    permissions.require(request.user, "environment.view")
    # In promotion order; a page of them (the few a team has fit on one).
    environments = paginate(request, selectors.environment_list())
    return render(
        request,
        "deployments/environment_list.html",
        {
            "environments": environments,
            "page": environments,
            "can_manage": permissions.has_permission(request.user, "environment.manage"),
        },
    )


@require_http_methods(["GET", "POST"])
def environment_create(request: HttpRequest) -> HttpResponse:
    permissions.require(request.user, "environment.manage")
    form = EnvironmentForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            environment = services.environment_create(actor=request.user, data=form.cleaned_data)
        except ValidationError as exc:
            apply_service_errors(form, exc)
        else:
            messages.success(request, f"Environment “{environment.name}” created.")
            return redirect("environment-detail", name=environment.name)
    return render(
        request,
        "deployments/environment_form.html",
        {"form": form, "gate_syntax": gate_syntax()},
        status=400 if request.method == "POST" else 200,
    )


@require_http_methods(["GET", "POST"])
def environment_detail(request: HttpRequest, name: str) -> HttpResponse:
    permissions.require(request.user, "environment.view")
    environment = get_object_or_404(Environment, name=name)
    can_manage = permissions.has_permission(request.user, "environment.manage")
    form = EnvironmentForm(request.POST or None, initial=EnvironmentForm.initial_from(environment))
    if request.method == "POST":
        permissions.require(request.user, "environment.manage")
        if form.is_valid():
            try:
                changed = services.environment_update(
                    actor=request.user, environment_id=environment.pk, data=form.cleaned_data
                )
            except ValidationError as exc:
                apply_service_errors(form, exc)
            else:
                messages.success(request, f"Environment “{changed.name}” saved.")
                return redirect("environment-detail", name=changed.name)
    events = audit_selectors.audit_event_list(
        user=request.user, object_type="environment", object_id=str(environment.pk)
    )[:20]
    history = [
        {"event": event, "action_parts": word_parts(event.action), "changes": _environment_changes(event)}
        for event in events
    ]
    return render(
        request,
        "deployments/environment_detail.html",
        {
            "environment": environment,
            "form": form,
            "can_manage": can_manage,
            "history": history,
            "gate_syntax": gate_syntax(),
        },
        status=400 if request.method == "POST" else 200,
    )


def _setting_lines(value: Any) -> list[str]:
    """One setting's value as the lines a person reads: a list one item a line, a mapping one key=value a line."""
    if value is None or value == "":
        return ["—"]
    if isinstance(value, bool):
        return ["yes" if value else "no"]
    if isinstance(value, list):
        return [str(item) for item in value] or ["none"]
    if isinstance(value, dict):
        return [f"{key}={item}" for key, item in value.items()] or ["—"]
    if isinstance(value, float):
        return [f"{value:g}"]
    return [str(value)]


def _environment_changes(event: Any) -> list[dict[str, Any]]:
    """An environment's audit event as field label → before → after, in the form's order. A creation lists only
    the settings it set; a change only what changed."""
    before = event.before if isinstance(event.before, dict) else {}
    after = event.after if isinstance(event.after, dict) else {}
    order = list(EnvironmentForm.base_fields)
    names = sorted(
        set(before) | set(after), key=lambda name: (order.index(name) if name in order else len(order), name)
    )
    created = event.before is None
    changes = []
    for name in names:
        if created and after.get(name) in (None, "", [], {}):
            continue
        changes.append(
            {
                "name": name,
                "label": EnvironmentForm.field_label(name),
                "before": None if created else _setting_lines(before.get(name)),
                "after": _setting_lines(after.get(name)),
            }
        )
    return changes


# --- promotion requests (data scientists) -----------------------------------------------------------------------


@require_http_methods(["GET", "POST"])
def approval_request_create(request: HttpRequest, project: str, slug: str, number: int) -> HttpResponse:
    permissions.require(request.user, "approval.request")
    version = get_object_or_404(
        access.scope(ModelVersion.objects.select_related("registered_model__project"), request.user),
        registered_model__project__slug=project,
        registered_model__slug=slug,
        number=number,
    )
    environments = list(selectors.environment_list())
    initial = {"environment": request.GET["environment"]} if request.GET.get("environment") else {}
    form = ApprovalRequestForm(request.POST or None, environments=environments, initial=initial)
    status = 200
    live = None
    if request.method == "POST":
        status = 400
        if form.is_valid():
            try:
                approval = services.approval_request_create(
                    actor=request.user,
                    model_version_id=version.pk,
                    environment=form.cleaned_data["environment"].name,
                    justification=form.cleaned_data["justification"],
                    override_reason=form.cleaned_data.get("override_reason", ""),
                )
            except services.Conflict as exc:
                apply_service_errors(form, exc, about=("model_version",))
                status = 409
                live = selectors.live_request(model_version=version, environment=form.cleaned_data["environment"])
            except ValidationError as exc:
                apply_service_errors(form, exc, about=("model_version",))
            else:
                messages.success(request, f"Promotion of {version} to {approval.environment.name} requested.")
                return redirect("approval-request-detail", pk=approval.pk)
    return render(
        request,
        "deployments/approval_request_form.html",
        {"form": form, "version": version, "environments": environments, "live": live},
        status=status,
    )


# --- the approval queue and the evidence page (approvers) -------------------------------------------------------

QUEUE_TABS = {"mine": "Waiting for me", "requested": "My requests", "all": "All requests"}


def _queue_tabs(user: Any) -> list[str]:
    """The lists this user has: approvers one waiting for them, those who request promotions their own."""
    return [
        name
        for name, needs in (("mine", "approval.decide"), ("requested", "approval.request"), ("all", ""))
        if not needs or permissions.has_permission(user, needs)
    ]


def _queue_filters(request: HttpRequest, *, tabs: list[str]) -> tuple[dict[str, str], dict[str, list[str]]]:
    """The queue's filters as typed, and a message naming each bad one."""
    names = ("tab", "project", "environment", "status", "older_than")
    filters = {name: str(request.GET.get(name, "")).strip() for name in names}
    # A shared link naming a status other than open (?status=withdrawn) means the whole list, not one's own queue.
    wants_all = bool(filters["status"]) and filters["status"] != "open"
    filters["tab"] = filters["tab"] or ("mine" if "mine" in tabs and not wants_all else "all")
    errors: dict[str, list[str]] = {}
    if filters["tab"] not in QUEUE_TABS:
        errors["tab"] = [f"expected mine, requested or all, got {filters['tab']!r}"]
    elif filters["tab"] == "mine" and "mine" not in tabs:
        errors["tab"] = ["only approvers have requests waiting for them: choose All requests"]
    elif filters["tab"] == "requested" and "requested" not in tabs:
        errors["tab"] = ["only those who request promotions have requests of their own: choose All requests"]
    errors.update(
        selectors.approval_filter_problems(
            user=request.user,
            project=filters["project"],
            environment=filters["environment"],
            status=filters["status"],
            older_than=filters["older_than"],
        )
    )
    status = filters["status"]
    if "status" not in errors and status and status != "open" and filters["tab"] == "mine":
        errors["status"] = ["the requests waiting for you are all open: choose All requests to see other states"]
    return filters, errors


def approval_queue(request: HttpRequest) -> HttpResponse:
    permissions.require(request.user, "approval.view")
    tabs = _queue_tabs(request.user)
    filters, errors = _queue_filters(request, tabs=tabs)
    requests: QuerySet[ApprovalRequest] = ApprovalRequest.objects.none()
    if not errors:
        if filters["tab"] == "mine":
            requests = selectors.approval_queue(user=request.user)
            if filters["project"]:
                requests = requests.filter(model_version__registered_model__project__slug=filters["project"])
            if filters["environment"]:
                requests = requests.filter(environment__name=filters["environment"])
        else:
            requests = access.scope(
                selectors.approval_request_list(
                    status=filters["status"] or None,
                    project=filters["project"] or None,
                    environment=filters["environment"] or None,
                    requested_by=request.user if filters["tab"] == "requested" else None,
                ),
                request.user,
            )
        if filters["older_than"]:
            requests = requests.filter(created_at__lte=timezone.now() - timedelta(days=int(filters["older_than"])))
        requests = selectors.with_counts(requests)
        # Oldest first in one's own queue (first come, first decided); newest first in the other lists.
        requests = requests.order_by(*(("created_at", "id") if filters["tab"] == "mine" else ("-created_at", "-id")))
    return render(
        request,
        "deployments/approval_queue.html",
        {
            "page": paginate(request, requests),
            "filters": filters,
            "errors": errors,
            "tabs": [
                # Switching tabs keeps the filters, except a status: everything waiting for you is open.
                {
                    "name": name,
                    "label": QUEUE_TABS[name],
                    "query": urlencode({**_kept(filters, drop_status=name == "mine"), "tab": name}),
                }
                for name in tabs
            ],
            "waiting_count": selectors.approval_queue_count(user=request.user),
            "query": urlencode(_kept(filters)),
            "statuses": ApprovalRequest.Status.values,
            "projects": access.visible_projects(request.user).only("slug", "name"),
            "environments": selectors.environment_list(),
            "now": timezone.now(),
        },
        status=400 if errors else 200,
    )


def _kept(filters: dict[str, str], *, drop_status: bool = False) -> dict[str, str]:
    return {name: value for name, value in filters.items() if value and not (drop_status and name == "status")}


def _approval_or_404(request: HttpRequest, pk: int) -> ApprovalRequest:
    """The request, when the user may see its project; else 404, as if there were none."""
    requests = access.scope(ApprovalRequest.objects.all(), request.user)
    return get_object_or_404(
        requests.select_related(
            "model_version__registered_model__project",
            "model_version__run__created_by",
            "model_version__run__project",
            "baseline_version__registered_model__project",
            "environment",
            "requested_by",
            "overridden_by",
        ),
        pk=pk,
    )


def _decide_refusal(user: Any, approval: ApprovalRequest, decisions: list[ApprovalDecision]) -> str:
    """Why this user may not decide the request now, in a sentence; empty when they may."""
    if not permissions.has_permission(user, "approval.decide"):
        return "Deciding a promotion needs the approver (or admin) role."
    if not approval.is_open:
        return f"This request is {approval.status}: nothing is left to decide."
    if approval.quorum_at is not None:
        return "All approvals are in; checking the artifact…"
    if approval.expires_at <= timezone.now():
        return f"This request expired on {approval.expires_at:%Y-%m-%d %H:%M} UTC: nobody decided it in time."
    if approval.requested_by_id == user.pk:
        return "You requested this promotion; someone else must decide it."
    # The service's own rule: the training run's author, or the author of a reproduction that made the same bytes.
    if user.pk in lineage_selectors.model_version_run_authors(approval.model_version):
        return f"You authored the training run of {approval.model_version}; someone else must decide its promotion."
    mine = next((d for d in decisions if d.approver_id == user.pk), None)
    if mine is not None:
        return f"You have already decided this request: you chose {mine.verdict} on {mine.created_at:%Y-%m-%d %H:%M}."
    return ""


# Charts the evidence page draws at most: each plotly chart costs the browser 50–100 ms, and drawing all 31 columns
# of a wide dataset kept the page busy for 3 s. The metrics charts come first; histograms fill the rest (at most 6).
CHARTS_SHOWN = 7
HISTOGRAMS_SHOWN = 6


def _profile_charts(
    profile: dict[str, Any] | None, *, model_inputs: list[str], limit: int = HISTOGRAMS_SHOWN
) -> list[dict[str, Any]]:
    """Histograms of at most `limit` columns: those the model reads first (in its input schema's order), then the
    others in the profile's order."""
    columns: dict[str, Any] = (profile or {}).get("columns", {})
    order = [name for name in model_inputs if name in columns] + [name for name in columns if name not in model_inputs]
    charts: list[dict[str, Any]] = []
    for name in order:
        if len(charts) >= limit:
            break
        chart = profile_chart(name, columns[name], row_count=(profile or {}).get("row_count") or 0)
        if chart is not None:
            charts.append({"id": f"chart-{len(charts)}", "column": name, "figure": chart})
    return charts


def _model_inputs(version: ModelVersion) -> list[str]:
    return [str(c["name"]) for c in version.input_schema or [] if isinstance(c, dict) and c.get("name")]


def _profile_context(
    approval: ApprovalRequest, dataset_version: DatasetVersion | None, profile: Any, *, limit: int
) -> dict[str, Any]:
    columns = (profile.profile or {}).get("columns", {}) if profile is not None else {}
    charts = _profile_charts(
        profile.profile if profile is not None else None,
        model_inputs=_model_inputs(approval.model_version),
        limit=limit,
    )
    return {
        "approval": approval,
        "dataset_version": dataset_version,
        "profile": profile,
        "profile_columns": columns,
        "charts": charts,
        "charted": {c["column"] for c in charts},
    }


def _training_data(approval: ApprovalRequest) -> tuple[list[RunInput], DatasetVersion | None, Any]:
    """The run's inputs, the dataset version it trained on (the `train` channel, else the first) and its profile."""
    inputs = list(approval.model_version.run.inputs.select_related("dataset_version__dataset__project"))
    chosen = next((i for i in inputs if i.channel == "train"), inputs[0] if inputs else None)
    dataset_version = chosen.dataset_version if chosen is not None else None
    profile = getattr(dataset_version, "profile", None) if dataset_version is not None else None
    return inputs, dataset_version, profile


def _run_cost(run: Run) -> dict[str, Any]:
    """What the training run cost (measured), and the most it could have cost, with the arithmetic."""
    estimated, explanation = run.estimated_cost, ""
    try:
        maximum, explanation = lineage_selectors.run_cost_estimate(
            backend=run.backend,
            instance_type=run.instance_type,
            instance_count=run.instance_count,
            max_runtime_seconds=run.max_runtime_seconds,
        )
    except KeyError:
        maximum = None  # an instance type no longer in the price table: the recorded estimate stands alone
    return {
        "measured": run.cost,
        "estimated": estimated if estimated is not None else maximum,
        "explanation": explanation,
    }


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _metric_rows(candidate: dict[str, Any], baseline: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Each metric side by side; `better` says whether the change is an improvement (None: no change to judge)."""
    rows = []
    for name in sorted(set(candidate) | set(baseline or {})):
        mine, theirs = candidate.get(name), (baseline or {}).get(name)
        change = mine - theirs if _is_number(mine) and _is_number(theirs) else None  # type: ignore[operator]
        better = None
        if change:
            better = (change > 0) == selectors.metric_higher_is_better(name)
        rows.append({"name": name, "candidate": mine, "baseline": theirs, "change": change, "better": better})
    return rows


def _metrics(approval: ApprovalRequest) -> dict[str, Any]:
    """The metrics table, the chart of both versions' metrics and the chart of the changes (with a baseline)."""
    version, baseline = approval.model_version, approval.baseline_version
    series = {f"v{version.number} (candidate)": version.metrics or {}}
    if baseline is not None:
        series[f"v{baseline.number} (baseline)"] = baseline.metrics or {}
    numeric = sorted({name for values in series.values() for name, value in values.items() if _is_number(value)})
    rows = _metric_rows(version.metrics or {}, baseline.metrics if baseline is not None else None)
    changes = [row for row in rows if row["change"] is not None]
    return {
        "metric_rows": rows,
        "metrics_chart": {"id": "metrics-chart", "figure": compare_chart(series, numeric)} if numeric else None,
        "change_chart": {"id": "change-chart", "figure": change_chart(changes)} if changes else None,
    }


def _histogram_budget(metrics: dict[str, Any]) -> int:
    drawn = (metrics["metrics_chart"] is not None) + (metrics["change_chart"] is not None)
    return min(HISTOGRAMS_SHOWN, CHARTS_SHOWN - drawn)


def _timeline(approval: ApprovalRequest, decisions: list[ApprovalDecision]) -> list[dict[str, Any]]:
    """Status changes, each decision and the gate override, oldest first."""
    entries: list[dict[str, Any]] = [
        {
            "kind": "status",
            "when": e.created_at,
            "action": e.action,
            "change": f"{e.from_status or '—'} → {e.to_status}",
            "by": e.actor or "system",
            "detail": e.reason,
            "order": 0,
        }
        for e in TransitionEvent.objects.filter(
            object_type=ApprovalRequest._meta.label_lower, object_id=str(approval.pk)
        ).select_related("actor")
    ]
    if not approval.gates_passed:
        # The override is made with the request itself, so it goes with (just after) the request's own entry.
        made = next((e["when"] for e in entries if e["action"] == "request"), approval.created_at)
        entries.append(
            {
                "kind": "override",
                "when": made,
                "action": "gate override",
                "change": "",
                "by": approval.overridden_by or approval.requested_by,
                "detail": approval.override_reason,
                "order": 1,
            }
        )
    entries.extend(
        {
            "kind": "decision",
            "when": d.created_at,
            "action": d.verdict,
            "change": "",
            "by": d.approver,
            "detail": d.comment,
            "order": 2,
        }
        for d in decisions
    )
    return sorted(entries, key=lambda entry: (entry["when"], entry["order"]))


def _status_context(approval: ApprovalRequest) -> dict[str, Any]:
    """What the status section shows and whether it keeps polling: while the worker checks the artifact, then
    (an environment that deploys on approval) until the deployment made on approval has shown and ended, or it
    is clear none will come (the approval was announced and nothing was deployed: the requester was told why)."""
    deployments = list(
        approval.deployments.select_related("service", "model_version__registered_model").order_by("created_at", "id")
    )
    deploys = approval.status == ApprovalRequest.Status.APPROVED and approval.environment.deploy_on_approval
    waiting_for_deployment = deploys and not deployments and approval.announced_at is None
    deployment_active = any(d.status in ACTIVE_DEPLOYMENT_STATUSES for d in deployments)
    return {
        "approval": approval,
        "deployments": deployments,
        "waiting_for_check": approval.is_open and approval.quorum_at is not None,
        "waiting_for_deployment": waiting_for_deployment,
        "deployment_active": deployment_active,
        "following_deployment": waiting_for_deployment or deployment_active,
        "not_deployed": deploys and not deployments and approval.announced_at is not None,
    }


def _evidence_context(
    request: HttpRequest,
    approval: ApprovalRequest,
    *,
    errors: dict[str, list[str]] | None = None,
    comment: str = "",
    conflict: str = "",
) -> dict[str, Any]:
    version, baseline = approval.model_version, approval.baseline_version
    decisions = list(approval.decisions.select_related("approver"))
    refusal = _decide_refusal(request.user, approval, decisions)
    inputs, dataset_version, profile = _training_data(approval)
    metrics = _metrics(approval)
    status = _status_context(approval)
    return {
        **status,
        "version": version,
        "baseline": baseline,
        "gate_results": approval.gate_results.all(),
        "decisions": decisions,
        "approval_count": sum(1 for d in decisions if d.verdict == ApprovalDecision.Verdict.APPROVE),
        "can_decide": not refusal,
        "decide_refusal": refusal,
        "expired": approval.status == "expired" or (approval.is_open and approval.expires_at <= timezone.now()),
        "can_withdraw": approval.is_open
        and permissions.has_permission(request.user, "approval.request")
        and (approval.requested_by_id == request.user.pk or permissions.ADMIN in permissions.user_roles(request.user)),
        **metrics,
        "graph": layout_graph(lineage_selectors.lineage_graph(version.node_id, depth=4, user=request.user)),
        "inputs": inputs,
        **_profile_context(approval, dataset_version, profile, limit=_histogram_budget(metrics)),
        "run": version.run,
        "cost": _run_cost(version.run),
        "timeline": _timeline(approval, decisions),
        "errors": errors or {},
        "comment": comment,
        "conflict": conflict,
    }


def approval_request_detail(request: HttpRequest, pk: int) -> HttpResponse:
    permissions.require(request.user, "approval.view")
    approval = _approval_or_404(request, pk)
    part = request.GET.get("part") if request.htmx else None
    if part == "status":
        # The page polls while the worker checks the artifact; once it has finished, the whole page is drawn again
        # (decisions, expiry, the timeline changed). After that it follows the deployment made on approval alone.
        status = _status_context(approval)
        if status["waiting_for_check"] or request.GET.get("following") == "deployment":
            return render(request, "deployments/_approval_status.html", status)
        return HttpResponseClientRefresh()
    if part == "profile":
        # The profile polls while it is computed; the page it lands in already holds the metrics charts.
        _, dataset_version, profile = _training_data(approval)
        if profile is None:
            raise Http404("the training data has no profile")
        context = _profile_context(approval, dataset_version, profile, limit=_histogram_budget(_metrics(approval)))
        return render(request, "deployments/_approval_profile.html", context)
    return render(request, "deployments/approval_request_detail.html", _evidence_context(request, approval))


def _refused(request: HttpRequest, pk: int, exc: ValidationError, *, comment: str = "") -> HttpResponse:
    """The evidence page again, with what was refused: 409 for a state conflict, 400 for bad input."""
    approval = _approval_or_404(request, pk)
    if isinstance(exc, services.Conflict):
        context = _evidence_context(request, approval, conflict=" ".join(exc.messages), comment=comment)
        return render(request, "deployments/approval_request_detail.html", context, status=409)
    errors = exc.message_dict if hasattr(exc, "error_dict") else {"request": exc.messages}
    context = _evidence_context(request, approval, errors=errors, comment=comment)
    return render(request, "deployments/approval_request_detail.html", context, status=400)


@require_http_methods(["GET", "POST"])
def approval_decide(request: HttpRequest, pk: int) -> HttpResponse:
    get_object_or_404(access.scope(ApprovalRequest.objects.only("pk"), request.user), pk=pk)
    if request.method == "GET":
        return redirect("approval-request-detail", pk=pk)  # a bookmarked or reloaded form URL: show the request
    verdict, comment = request.POST.get("verdict", ""), request.POST.get("comment", "")
    try:
        approval = services.approval_decide(actor=request.user, request_id=pk, verdict=verdict, comment=comment)
    except ValidationError as exc:
        return _refused(request, pk, exc, comment=comment)
    if approval.status == ApprovalRequest.Status.REJECTED:
        messages.success(request, f"You rejected request {pk}; the requester has been told.")
    elif approval.quorum_at is not None:
        messages.success(
            request, f"Your approval completes request {pk}: it is approved once a worker has checked the artifact."
        )
    else:
        messages.success(request, f"Your approval of request {pk} is recorded; it needs more approvals.")
    return redirect("approval-request-detail", pk=pk)


@require_http_methods(["GET", "POST"])
def approval_withdraw(request: HttpRequest, pk: int) -> HttpResponse:
    get_object_or_404(access.scope(ApprovalRequest.objects.only("pk"), request.user), pk=pk)
    if request.method == "GET":
        return redirect("approval-request-detail", pk=pk)
    try:
        services.approval_withdraw(actor=request.user, request_id=pk, reason=request.POST.get("reason", ""))
    except ValidationError as exc:
        return _refused(request, pk, exc)
    messages.success(request, f"Request {pk} withdrawn.")
    return redirect("approval-request-detail", pk=pk)


# --- services, deployments and rollbacks -----------------------------------------------------------------------


def service_list(request: HttpRequest) -> HttpResponse:
    permissions.require(request.user, "service.view")
    listed = filtered_list(
        request.GET,
        selectors.ServiceFilter,
        lambda filters: access.scope(selectors.service_list(filters=filters, user=request.user), request.user),
    )
    return render(
        request,
        "deployments/service_list.html",
        {
            "page": paginate(request, listed.rows),
            "filters": listed.values,
            "errors": listed.errors,
            "projects": access.visible_projects(request.user).order_by("slug"),
            "environments": selectors.environment_list(),
            "query": listed.query,
        },
        status=400 if listed.errors else 200,
    )


def _objective_rows(active: Any) -> list[dict[str, Any]]:
    """The active deployment's objectives as last judged; before its first judgement, each with no data yet (not
    "no objectives are set")."""
    if active is None:
        return []
    results = (active.objective_status or {}).get("results") or []
    if results or not active.objectives:
        return list(results)
    return objective_rules.judge(active.objectives, None, source="").as_dict()["results"]


def _service_context(request: HttpRequest, service: Any) -> dict[str, Any]:
    active = selectors.active_deployment(service=service)
    target = None if active is not None else services.rollback_target(service)
    can_roll_back = permissions.has_permission(request.user, "deployment.rollback") and (
        (active is not None and active.kind == "deploy" and active.replaces_id is not None) or target is not None
    )
    progress = dict(active.progress or {}) if active is not None else {}
    return {
        "service": service,
        "active": active,
        "progress": progress,
        "objectives": _objective_rows(active),
        "objective_requests": (active.objective_status or {}).get("requests") if active is not None else None,
        "objective_judged": bool((active.objective_status or {}).get("judged")) if active is not None else False,
        "objective_min_requests": settings.OBJECTIVE_MIN_REQUESTS,
        "active_events": list(active.events.select_related("actor").order_by("-created_at", "-id")[:15])
        if active is not None
        else [],
        "rollback_target": target if active is None else active.replaces,
        "rollback_during_rollout": active is not None,
        "can_roll_back": can_roll_back,
        "can_scale": permissions.has_permission(request.user, "deployment.deploy"),
        "min_rollback_reason": services.MIN_ROLLBACK_REASON,
        "strategy_label": Deployment.Strategy(service.environment.strategy).label
        if service.environment.strategy in Deployment.Strategy.values
        else service.environment.strategy,
    }


def service_detail(request: HttpRequest, pk: int) -> HttpResponse:
    permissions.require(request.user, "service.view")
    service = _service_or_404(request, pk)
    context = _service_context(request, service)
    if request.htmx and request.GET.get("part") == "rollout":
        # The section polls on its own; once the deployment it showed has ended (or another has begun), the
        # address, what serves and the timeline changed too, so the whole page is drawn again.
        active = context["active"]
        if request.GET.get("showing", "") != (str(active.pk) if active is not None else ""):
            return HttpResponseClientRefresh()
        return render(request, "deployments/_service_rollout.html", {**context, "polled": True})
    timeline = paginate(request, selectors.deployment_timeline(service=service))
    context.update(timeline=timeline, page=timeline, cost=cost_objects.service_cost_summary(service))
    return render(request, "deployments/service_detail.html", context)


def _service_or_404(request: HttpRequest, pk: int) -> Service:
    """The service, when the user may see its project; else 404, as if there were none."""
    service = selectors.service_by_id(pk, user=request.user)
    if service is None:
        raise Http404(f"there is no service {pk}")
    return service


@require_http_methods(["POST"])
def service_rollback(request: HttpRequest, pk: int) -> HttpResponse:
    permissions.require(request.user, "deployment.rollback")
    service = _service_or_404(request, pk)
    try:
        rollback = services.deployment_rollback(
            actor=request.user,
            service_id=service.pk,
            reason=request.POST.get("reason", ""),
            expected=request.POST.get("expected", ""),
        )
    except ValidationError as exc:
        messages.error(request, "Not rolled back: " + " ".join(exc.messages))
    else:
        messages.success(
            request, f"Rolling back to {rollback.model_version} (rollback {rollback.pk}): traffic moves within seconds."
        )
    return redirect("service-detail", pk=service.pk)


@require_http_methods(["POST"])
def service_scale(request: HttpRequest, pk: int) -> HttpResponse:
    permissions.require(request.user, "deployment.deploy")
    service = _service_or_404(request, pk)
    try:
        scaled = services.service_scale(
            actor=request.user, service_id=service.pk, desired_count=request.POST.get("desired_count", "")
        )
    except ValidationError as exc:
        messages.error(request, "Not scaled: " + " ".join(exc.messages))
    else:
        messages.success(request, f"{scaled.name} is scaling to {scaled.desired_count}.")
    return redirect("service-detail", pk=service.pk)


@require_http_methods(["POST"])
def service_rotate_ingest_token(request: HttpRequest, pk: int) -> HttpResponse:
    from monitoring.services.ingest import ROTATION_EFFECT, service_ingest_token_rotate

    permissions.require(request.user, "deployment.deploy")
    service = _service_or_404(request, pk)
    service_ingest_token_rotate(service=service, actor=request.user)
    messages.success(request, f"{service.name}'s ingest token is rotated. {ROTATION_EFFECT}")
    return redirect("service-detail", pk=service.pk)


@require_http_methods(["POST"])
def deployment_create(request: HttpRequest) -> HttpResponse:
    permissions.require(request.user, "deployment.deploy")
    back = request.POST.get("next", "")
    try:
        deployment = services.deployment_create(
            actor=request.user,
            model_version_id=request.POST.get("model_version", ""),
            environment=request.POST.get("environment", ""),
            reason=request.POST.get("reason", ""),
        )
    except ValidationError as exc:
        messages.error(request, "Not deployed: " + " ".join(exc.messages))
        safe = url_has_allowed_host_and_scheme(back, allowed_hosts={request.get_host()}, require_https=False)
        return redirect(back if back and safe else "service-list")
    messages.success(request, f"Deploying {deployment.model_version} to {deployment.service.name}.")
    return redirect("service-detail", pk=deployment.service_id)
