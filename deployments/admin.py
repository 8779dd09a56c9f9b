"""Read-only in the admin: environments and requests change only through the services (portal pages and API),
so the permission checks, the gates and the audit trail apply to every change."""

from django.contrib import admin

from controlplane.admin import ReadOnlyAdmin
from deployments.models import ApprovalDecision, ApprovalRequest, Environment, GateResult


@admin.register(Environment)
class EnvironmentAdmin(ReadOnlyAdmin):
    list_display = ["name", "order", "approvals_required", "allow_override", "request_ttl_days", "updated_at"]


@admin.register(ApprovalRequest)
class ApprovalRequestAdmin(ReadOnlyAdmin):
    list_display = ["id", "model_version", "environment", "status", "requested_by", "created_at", "mirror_status"]
    list_filter = ["status", "environment"]


@admin.register(ApprovalDecision)
class ApprovalDecisionAdmin(ReadOnlyAdmin):
    list_display = ["request", "approver", "verdict", "created_at"]


@admin.register(GateResult)
class GateResultAdmin(ReadOnlyAdmin):
    list_display = ["request", "expression", "passed", "summary"]
