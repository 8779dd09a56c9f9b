from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from lineage.models import Dataset, DatasetProfile, DatasetRegistration, DatasetVersion, LineageEdge, Run, RunEvent


class ReadOnlyAdmin(admin.ModelAdmin):
    """Lineage records change only through the services, so they stay validated, audited and write-once."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Dataset)
class DatasetAdmin(ReadOnlyAdmin):
    list_display = ["project", "slug", "name", "created_by", "created_at"]
    search_fields = ["slug", "name"]


@admin.register(DatasetVersion)
class DatasetVersionAdmin(ReadOnlyAdmin):
    list_display = ["dataset", "number", "source", "format", "row_count", "size", "sha256", "created_at"]
    search_fields = ["sha256", "dataset__slug"]


@admin.register(DatasetProfile)
class DatasetProfileAdmin(ReadOnlyAdmin):
    list_display = ["version", "status", "progress", "finished_at"]


@admin.register(DatasetRegistration)
class DatasetRegistrationAdmin(ReadOnlyAdmin):
    list_display = ["id", "source_uri", "status", "version", "created_at"]


@admin.register(Run)
class RunAdmin(ReadOnlyAdmin):
    list_display = ["id", "project", "kind", "recipe", "status", "created_by", "created_at"]
    list_filter = ["kind", "status"]


@admin.register(RunEvent)
class RunEventAdmin(ReadOnlyAdmin):
    list_display = ["run", "from_status", "to_status", "reason", "created_at"]


@admin.register(LineageEdge)
class LineageEdgeAdmin(ReadOnlyAdmin):
    list_display = ["source", "target", "created_at"]
    search_fields = ["source", "target"]
