"""Pages for environments and approval requests: thin, each validates, calls a service or selector, renders."""

from __future__ import annotations

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render

from controlplane import permissions
from deployments.models import ApprovalRequest

# --- environments ----------------------------------------------------------------------------------------------


def environment_list(request: HttpRequest) -> HttpResponse:
    raise Http404("environment pages come with the pages commit")


def environment_create(request: HttpRequest) -> HttpResponse:
    raise Http404("environment pages come with the pages commit")


def environment_detail(request: HttpRequest, name: str) -> HttpResponse:
    raise Http404("environment pages come with the pages commit")


# --- promotion requests (data scientists) -----------------------------------------------------------------------


def approval_request_create(request: HttpRequest, project: str, slug: str, number: int) -> HttpResponse:
    raise Http404("the request form comes with the pages commit")


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
