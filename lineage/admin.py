from django.contrib import admin

from controlplane.admin import ReadOnlyAdmin
from lineage.models import (
    Dataset,
    DatasetProfile,
    DatasetRegistration,
    DatasetVersion,
    LineageEdge,
    ModelVersion,
    RegisteredModel,
    Run,
    RunEvent,
)


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


@admin.register(RegisteredModel)
class RegisteredModelAdmin(ReadOnlyAdmin):
    list_display = ["project", "slug", "name", "created_at"]


@admin.register(ModelVersion)
class ModelVersionAdmin(ReadOnlyAdmin):
    list_display = ["registered_model", "number", "run", "sha256", "created_at"]
