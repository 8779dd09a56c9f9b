"""Pages for environments and approval requests: thin, each validates, calls a service or selector, renders."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods

from controlplane import permissions
from controlplane import selectors as audit_selectors
from controlplane.views import apply_service_errors
from deployments import selectors, services
from deployments.forms import ApprovalRequestForm, EnvironmentForm, gate_syntax
from deployments.models import ApprovalRequest, Environment
from lineage.models import ModelVersion

# --- environments ----------------------------------------------------------------------------------------------


def environment_list(request: HttpRequest) -> HttpResponse:
    permissions.require(request.user, "environment.view")
    return render(
        request,
        "deployments/environment_list.html",
        {
            "environments": selectors.environment_list(),
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
    history = audit_selectors.audit_event_list(object_type="environment", object_id=str(environment.pk))[:20]
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


# --- promotion requests (data scientists) -----------------------------------------------------------------------


@require_http_methods(["GET", "POST"])
def approval_request_create(request: HttpRequest, project: str, slug: str, number: int) -> HttpResponse:
    permissions.require(request.user, "approval.request")
    version = get_object_or_404(
        ModelVersion.objects.select_related("registered_model__project"),
        registered_model__project__slug=project,
        registered_model__slug=slug,
        number=number,
    )
    environments = list(selectors.environment_list())
    initial = {"environment": request.GET["environment"]} if request.GET.get("environment") else {}
    form = ApprovalRequestForm(request.POST or None, environments=environments, initial=initial)
    status = 200
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
                apply_service_errors(form, exc)
                status = 409
            except ValidationError as exc:
                apply_service_errors(form, exc)
            else:
                messages.success(request, f"Promotion of {version} to {approval.environment.name} requested.")
                return redirect("approval-request-detail", pk=approval.pk)
    return render(
        request,
        "deployments/approval_request_form.html",
        {"form": form, "version": version, "environments": environments},
        status=status,
    )


# --- the approval queue and the evidence page (approvers) -------------------------------------------------------


def approval_queue(request: HttpRequest) -> HttpResponse:
    raise Http404("the queue comes with the pages commit")


def approval_request_detail(request: HttpRequest, pk: int) -> HttpResponse:
    permissions.require(request.user, "approval.view")
    approval = get_object_or_404(ApprovalRequest, pk=pk)
    return render(request, "deployments/approval_request_detail.html", {"approval": approval})


def approval_decide(request: HttpRequest, pk: int) -> HttpResponse:
    raise Http404("deciding comes with the pages commit")


def approval_withdraw(request: HttpRequest, pk: int) -> HttpResponse:
    raise Http404("withdrawing comes with the pages commit")
