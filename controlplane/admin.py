from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from controlplane.models import AuditEvent, Heartbeat, Project, SystemCheck


class ReadOnlyAdmin(admin.ModelAdmin):
    """Records the system writes itself: shown, never edited by hand."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Project)
class ProjectAdmin(ReadOnlyAdmin):
    # Changes go through the portal's services, so they are validated and audited.
    list_display = ["name", "slug", "created_by", "created_at"]
    search_fields = ["name", "slug"]


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "actor_name", "action", "object_type", "object_id", "reason"]
    list_filter = ["action", "object_type"]
    search_fields = ["actor_name", "object_id", "object_repr", "reason"]


@admin.register(Heartbeat)
class HeartbeatAdmin(ReadOnlyAdmin):
    list_display = ["name", "last_seen"]


@admin.register(SystemCheck)
class SystemCheckAdmin(ReadOnlyAdmin):
    list_display = ["id", "status", "requested_by", "worker", "created_at", "finished_at"]
