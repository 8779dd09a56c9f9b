"""REST API for datasets, dataset versions, registrations, runs, recipes and lineage."""

from __future__ import annotations

from typing import Any

from django.db.models import Prefetch, QuerySet
from django.http import Http404
from django.shortcuts import get_object_or_404
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field, inline_serializer
from rest_framework import serializers, status
from rest_framework.generics import GenericAPIView
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response

from controlplane import access, permissions
from controlplane.api_support import BodyInput, FastRepresentation, error_responses, filter_parameters
from controlplane.uploads import upload_limit_message
from lineage import selectors, services
from lineage.models import (
    Dataset,
    DatasetRegistration,
    DatasetVersion,
    ModelVersion,
    RegisteredModel,
    Run,
    RunEvent,
    RunInput,
)
from lineage.openlineage import lineage_run_events
from lineage.services import runs, uploads
from monitoring.costs import object_selectors as cost_objects
from monitoring.costs import selectors as cost_selectors


class DatasetOutput(serializers.ModelSerializer):
    project = serializers.CharField(source="project.slug")
    created_by = serializers.CharField(source="created_by.username")
    version_count = serializers.SerializerMethodField()

    class Meta:
        model = Dataset
        fields = ["project", "slug", "name", "description", "version_count", "created_by", "created_at"]

    def get_version_count(self, dataset: Dataset) -> int:
        # Annotated by selectors.dataset_list; counted here for a single dataset.
        count = getattr(dataset, "version_count", None)
        return dataset.versions.count() if count is None else count


class DatasetVersionOutput(serializers.ModelSerializer):
    def to_representation(self, instance: DatasetVersion) -> dict[str, Any]:
        data: dict[str, Any] = super().to_representation(instance)
        if selectors.producer_hidden(instance):
            data["source_uri"] = ""  # "run:<id>/<output>": the run it does not show
        return data

    project = serializers.CharField(source="dataset.project.slug")
    dataset = serializers.CharField(source="dataset.slug")
    node_id = serializers.CharField()
    created_by = serializers.CharField(source="created_by.username")
    produced_by = serializers.IntegerField(
        source="shown_producer",
        allow_null=True,
        help_text="The run that made this version; null for an upload, or a run in a project you may not see",
    )
    profile_status = serializers.CharField(source="profile.status")
    profile_progress = serializers.FloatField(source="profile.progress")

    class Meta:
        model = DatasetVersion
        fields = [
            "id",
            "node_id",
            "project",
            "dataset",
            "number",
            "sha256",
            "uri",
            "size",
            "format",
            "content_format",
            "compressed",
            "columns",
            "row_count",
            "object_count",
            "source",
            "source_uri",
            "source_etag",
            "source_version_id",
            "original_filename",
            "missing_values",
            "produced_by",
            "created_by",
            "created_at",
            "profile_status",
            "profile_progress",
        ]


class DatasetVersionUploadInput(BodyInput):
    project = serializers.CharField()
    dataset = serializers.CharField(max_length=100)
    description = serializers.CharField(required=False, allow_blank=True, default="")
    file = serializers.FileField()
    missing_values = serializers.CharField(
        required=False,
        allow_blank=True,
        default="",
        max_length=1000,
        help_text=(
            "Comma-separated strings that mean no value, e.g. `NA, "
            "n/a`; empty fields always do (the default: only they)"
        ),
    )


class DatasetRegistrationInput(BodyInput):
    project = serializers.CharField()
    dataset = serializers.CharField(max_length=100)
    uri = serializers.CharField(max_length=1024)
    description = serializers.CharField(required=False, allow_blank=True, default="")
    missing_values = serializers.CharField(
        required=False,
        allow_blank=True,
        default="",
        max_length=1000,
        help_text="Comma-separated strings that mean no value, e.g. `NA, n/a`; empty fields always do "
        "(the default: only they)",
    )


class DatasetRegistrationOutput(serializers.ModelSerializer):
    project = serializers.CharField(source="project.slug")
    version = serializers.IntegerField(source="version_id", allow_null=True)

    class Meta:
        model = DatasetRegistration
        fields = [
            "id",
            "project",
            "dataset_slug",
            "source_uri",
            "missing_values",
            "status",
            "progress",
            "error",
            "version",
            "created_new_version",
            "created_at",
            "finished_at",
        ]


def _version(pk: int, user: Any) -> DatasetVersion:
    versions = DatasetVersion.objects.select_related("dataset__project", "created_by", "profile")
    return get_object_or_404(selectors.with_shown_producer(access.scope(versions, user), user), pk=pk)


class DatasetListApi(GenericAPIView):
    serializer_class = DatasetOutput

    @extend_schema(
        operation_id="datasets_list",
        parameters=filter_parameters(selectors.DatasetFilter),
        responses=DatasetOutput(many=True),
    )
    def get(self, request: Request) -> Response:
        permissions.require(request.user, "dataset.view")
        datasets = selectors.dataset_list(filters=request.query_params, user=request.user)
        page = self.paginate_queryset(datasets)
        return self.get_paginated_response(DatasetOutput(page, many=True).data)


class DatasetDetailApi(GenericAPIView):
    serializer_class = DatasetOutput

    @extend_schema(operation_id="datasets_retrieve", responses=DatasetOutput)
    def get(self, request: Request, project: str, slug: str) -> Response:
        permissions.require(request.user, "dataset.view")
        dataset = get_object_or_404(access.scope(Dataset.objects.all(), request.user), project__slug=project, slug=slug)
        return Response(DatasetOutput(dataset).data)


class DatasetVersionListApi(GenericAPIView):
    serializer_class = DatasetVersionOutput

    @extend_schema(operation_id="dataset_versions_list", responses=DatasetVersionOutput(many=True))
    def get(self, request: Request, project: str, slug: str) -> Response:
        permissions.require(request.user, "dataset.view")
        dataset = get_object_or_404(access.scope(Dataset.objects.all(), request.user), project__slug=project, slug=slug)
        versions = dataset.versions.select_related("dataset__project", "created_by", "profile")
        page = self.paginate_queryset(selectors.with_shown_producer(versions, request.user))
        return self.get_paginated_response(DatasetVersionOutput(page, many=True).data)


class DatasetVersionUploadApi(GenericAPIView):
    serializer_class = DatasetVersionOutput
    parser_classes = [MultiPartParser, FormParser]

    @extend_schema(
        operation_id="dataset_versions_upload",
        request={"multipart/form-data": DatasetVersionUploadInput},
        responses={201: DatasetVersionOutput, 200: DatasetVersionOutput},
        description="Upload a CSV, Parquet or JSON Lines file. 201: a new version; "
        "200: these bytes already were a version.",
    )
    def post(self, request: Request) -> Response:
        permissions.require(request.user, "dataset.register")
        data = request.data  # parses the body; an oversized file stops early and is flagged
        too_large = upload_limit_message(request._request)
        if too_large:
            raise serializers.ValidationError({"file": [too_large]})
        serializer = DatasetVersionUploadInput(data=data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        version, created = services.dataset_version_upload(
            actor=request.user,
            project=data["project"],
            dataset=data["dataset"],
            upload=data["file"],
            description=data["description"],
            missing_values=data["missing_values"],
        )
        return Response(
            DatasetVersionOutput(_version(version.pk, request.user)).data,
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )


class DatasetVersionDetailApi(GenericAPIView):
    serializer_class = DatasetVersionOutput
    # DRF's OPTIONS handler looks the object up to describe PUT; there is nothing else it may do with it.
    queryset = DatasetVersion.objects.select_related("dataset__project", "created_by", "profile")

    def get_queryset(self) -> QuerySet[DatasetVersion]:
        return access.scope(super().get_queryset(), self.request.user)

    @extend_schema(operation_id="dataset_versions_retrieve", responses=DatasetVersionOutput)
    def get(self, request: Request, pk: int) -> Response:
        permissions.require(request.user, "dataset.view")
        return Response(DatasetVersionOutput(_version(pk, request.user)).data)

    def _refuse(self, request: Request, pk: int) -> Response:
        permissions.require(request.user, "dataset.view")
        version = _version(pk, request.user)
        # Only the method and the field names: the audit log must not take arbitrary payloads.
        fields = sorted(str(key)[:50] for key in request.data.keys())[:20] if hasattr(request.data, "keys") else []
        services.dataset_version_change_refused(
            actor=request.user, version=version, attempted={"method": request.method, "fields": fields}
        )
        raise AssertionError("unreachable")  # the service always raises

    @extend_schema(
        operation_id="dataset_versions_change",
        request=OpenApiTypes.OBJECT,
        responses={409: OpenApiTypes.OBJECT},
        description="Always refused (409): dataset versions are write-once. The attempt is audited.",
    )
    def patch(self, request: Request, pk: int) -> Response:
        return self._refuse(request, pk)

    @extend_schema(
        operation_id="dataset_versions_replace",
        request=OpenApiTypes.OBJECT,
        responses={409: OpenApiTypes.OBJECT},
        description="Always refused (409): dataset versions are write-once. The attempt is audited.",
    )
    def put(self, request: Request, pk: int) -> Response:
        return self._refuse(request, pk)

    @extend_schema(
        operation_id="dataset_versions_delete",
        responses={409: OpenApiTypes.OBJECT},
        description="Always refused (409): dataset versions are never deleted. The attempt is audited.",
    )
    def delete(self, request: Request, pk: int) -> Response:
        return self._refuse(request, pk)


class DatasetVersionProfileApi(GenericAPIView):
    @extend_schema(
        operation_id="dataset_versions_profile",
        responses=inline_serializer(
            "DatasetProfile",
            {
                "status": serializers.CharField(),
                "progress": serializers.FloatField(),
                "error": serializers.CharField(),
                "profile": serializers.JSONField(allow_null=True),
            },
        ),
    )
    def get(self, request: Request, pk: int) -> Response:
        permissions.require(request.user, "dataset.view")
        profile = _version(pk, request.user).profile
        return Response(
            {"status": profile.status, "progress": profile.progress, "error": profile.error, "profile": profile.profile}
        )


class DatasetVersionDownloadApi(GenericAPIView):
    @extend_schema(
        operation_id="dataset_versions_download",
        responses=inline_serializer("DownloadUrl", {"url": serializers.CharField()}),
    )
    def get(self, request: Request, pk: int) -> Response:
        permissions.require(request.user, "dataset.view")
        url = selectors.dataset_version_download_url(_version(pk, request.user))
        return Response({"url": request.build_absolute_uri(url) if url.startswith("/") else url})


class DatasetRegistrationCreateApi(GenericAPIView):
    serializer_class = DatasetRegistrationOutput

    @extend_schema(
        operation_id="dataset_registrations_create",
        request=DatasetRegistrationInput,
        responses={202: DatasetRegistrationOutput},
    )
    def post(self, request: Request) -> Response:
        permissions.require(request.user, "dataset.register")
        serializer = DatasetRegistrationInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        registration = services.dataset_registration_request(actor=request.user, **serializer.validated_data)
        return Response(DatasetRegistrationOutput(registration).data, status=status.HTTP_202_ACCEPTED)


class DatasetRegistrationDetailApi(GenericAPIView):
    serializer_class = DatasetRegistrationOutput

    @extend_schema(operation_id="dataset_registrations_retrieve", responses=DatasetRegistrationOutput)
    def get(self, request: Request, pk: int) -> Response:
        permissions.require(request.user, "dataset.view")
        return Response(
            DatasetRegistrationOutput(
                get_object_or_404(
                    access.scope(DatasetRegistration.objects.select_related("project"), request.user), pk=pk
                )
            ).data
        )


# --- runs -----------------------------------------------------------------------------------


class RunEventOutput(serializers.ModelSerializer):
    actor = serializers.CharField(source="actor.username", allow_null=True, default=None)

    class Meta:
        model = RunEvent
        fields = ["from_status", "to_status", "reason", "actor", "created_at"]


class RunOutput(FastRepresentation, serializers.ModelSerializer):
    project = serializers.CharField(source="project.slug")
    created_by = serializers.CharField(source="created_by.username")
    node_id = serializers.CharField()
    inputs = serializers.SerializerMethodField()
    outputs = serializers.SerializerMethodField()
    model_version = serializers.SerializerMethodField()
    reproduced_from = serializers.IntegerField(source="reproduced_from_id", allow_null=True)

    class Meta:
        model = Run
        fields = [
            "id",
            "uuid",
            "node_id",
            "project",
            "kind",
            "recipe",
            "recipe_version",
            "recipe_fingerprint",
            "parameters",
            "seed",
            "backend",
            "backend_job_id",
            "instance_type",
            "instance_count",
            "max_runtime_seconds",
            "image",
            "status",
            "status_reason",
            "metrics",
            "usage",
            "estimated_cost",
            "cost",
            "inputs",
            "outputs",
            "model_version",
            "reproduced_from",
            "created_by",
            "created_at",
            "started_at",
            "finished_at",
        ]

    def get_inputs(self, run: Run) -> list[dict[str, Any]]:
        inputs = getattr(run, "input_links", None)  # prefetched by _with_links
        return [
            {"channel": i.channel, "dataset_version": i.dataset_version_id}
            for i in (inputs if inputs is not None else run.inputs.all())
        ]

    def get_outputs(self, run: Run) -> list[int]:
        outputs = getattr(run, "output_links", None)  # prefetched by _with_links
        return [v.pk for v in (outputs if outputs is not None else run.output_versions.all())]

    def get_model_version(self, run: Run) -> int | None:
        # Annotated by `_runs()` and selectors.run_list, so a page of runs is not one query per run; for a run whose
        # model had the same bytes as an existing version, that version.
        return run.model_version_pk  # type: ignore[attr-defined, no-any-return]


class ObjectCostOutput(serializers.Serializer):
    amount = serializers.DecimalField(max_digits=18, decimal_places=6, help_text="USD: billed + estimated")
    billed = serializers.DecimalField(max_digits=18, decimal_places=6, help_text="USD from the bill (Cost Explorer)")
    estimated = serializers.DecimalField(max_digits=18, decimal_places=6, help_text="USD estimated (no bill yet)")
    basis = serializers.ChoiceField(choices=["none", "bill", "estimate", "bill + estimate"])


class RunDetailOutput(RunOutput):
    events = RunEventOutput(many=True)
    # `cost` is the run's own measurement (set when it ends); this is the cost records' figure, the dashboard's.
    recorded_cost = serializers.SerializerMethodField(
        help_text="What the run cost as the cost records have it (the cost dashboard's figure), and whether it "
        "comes from the bill or is an estimate; for a SageMaker run still running, its cost so far"
    )

    class Meta(RunOutput.Meta):
        fields = [*RunOutput.Meta.fields, "events", "recorded_cost"]

    @extend_schema_field(ObjectCostOutput)
    def get_recorded_cost(self, run: Run) -> dict[str, Any]:
        return cost_objects.cost_output(cost_selectors.run_cost(run))


class TransformRunInput(BodyInput):
    inputs = serializers.ListField(
        child=serializers.IntegerField(min_value=1, max_value=2**63 - 1), min_length=1, max_length=100
    )

    def validate_inputs(self, value: list[int]) -> list[int]:
        if len(set(value)) != len(value):
            raise serializers.ValidationError("each dataset version may be listed once")
        return value

    recipe = serializers.CharField(max_length=100)
    parameters = serializers.DictField(required=False, default=dict)
    output_name = serializers.CharField(required=False, allow_blank=True, default="", max_length=50)


def _with_links(runs: QuerySet[Run], user: Any) -> QuerySet[Run]:
    """What RunOutput shows: inputs and outputs in two queries a page (lists, not managers, which cost a queryset
    per run), loading only their ids; and not the log tail, its cursor or the progress, which it does not show.
    An input or output in a project the user may not see (lineage that crossed projects) is not listed, as on the
    run's page."""
    return runs.defer("log_tail", "log_cursor", "progress").prefetch_related(
        Prefetch(
            "inputs",
            queryset=access.scope(RunInput.objects.only("run", "channel", "dataset_version"), user).order_by("id"),
            to_attr="input_links",
        ),
        Prefetch(
            "output_versions",
            queryset=access.scope(DatasetVersion.objects.only("produced_by"), user).order_by("id"),
            to_attr="output_links",
        ),
    )


def _runs(user: Any) -> QuerySet[Run]:
    return _with_links(selectors.run_list(user=user), user)


# A list page shows only these of a run's project and creator: the rest of their rows is not loaded (on a page of
# 500 runs, the project's and user's other columns and JSON were a quarter of the time to load the page).
_LIST_RELATED = ("project__slug", "created_by__username")


def _list_page(runs: QuerySet[Run], user: Any) -> QuerySet[Run]:
    shown = [f.name for f in Run._meta.concrete_fields if f.name not in ("log_tail", "log_cursor", "progress")]
    return _with_links(runs, user).only(*shown, *_LIST_RELATED)


class RunListApi(GenericAPIView):
    serializer_class = RunOutput

    @extend_schema(
        operation_id="runs_list",
        parameters=filter_parameters(selectors.RunFilter),
        responses=RunOutput(many=True),
    )
    def get(self, request: Request) -> Response:
        permissions.require(request.user, "run.view")
        runs = selectors.run_list(filters=request.query_params, user=request.user)
        page = self.paginate_queryset(_list_page(runs, request.user))
        return self.get_paginated_response(RunOutput(page, many=True).data)


class TransformRunCreateApi(GenericAPIView):
    serializer_class = RunOutput

    @extend_schema(operation_id="runs_transform_create", request=TransformRunInput, responses={201: RunDetailOutput})
    def post(self, request: Request) -> Response:
        permissions.require(request.user, "run.launch")
        serializer = TransformRunInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        versions = {
            v.pk: v
            for v in access.scope(DatasetVersion.objects.select_related("dataset__project"), request.user).filter(
                pk__in=data["inputs"]
            )
        }
        missing = [pk for pk in data["inputs"] if pk not in versions]
        if missing:
            raise serializers.ValidationError({"inputs": [f"no dataset version with id {pk}" for pk in missing]})
        run = services.transform_run_launch(
            actor=request.user,
            inputs=[versions[pk] for pk in data["inputs"]],
            recipe=data["recipe"],
            parameters=data["parameters"],
            output_name=data["output_name"],
        )
        return Response(RunDetailOutput(_runs(request.user).get(pk=run.pk)).data, status=status.HTTP_201_CREATED)


class RunDetailApi(GenericAPIView):
    serializer_class = RunDetailOutput

    @extend_schema(operation_id="runs_retrieve", responses=RunDetailOutput)
    def get(self, request: Request, pk: int) -> Response:
        permissions.require(request.user, "run.view")
        return Response(RunDetailOutput(get_object_or_404(_runs(request.user), pk=pk)).data)


class RunStopApi(GenericAPIView):
    serializer_class = RunDetailOutput

    @extend_schema(
        operation_id="runs_stop",
        request=inline_serializer("RunStop", {"reason": serializers.CharField(required=False)}),
        responses={
            200: RunDetailOutput,
            **error_responses(403, 404, 409, e409="The run has ended already (or is stopping): nothing to stop."),
        },
    )
    def post(self, request: Request, pk: int) -> Response:
        run = get_object_or_404(access.scope(Run.objects.all(), request.user), pk=pk)
        reason = str(request.data.get("reason", "")) if hasattr(request.data, "get") else ""
        services.run_stop(actor=request.user, run=run, reason=reason[:500])
        return Response(RunDetailOutput(_runs(request.user).get(pk=pk)).data)


class RunLogsApi(GenericAPIView):
    @extend_schema(
        operation_id="runs_logs",
        parameters=[
            OpenApiParameter("lines", int, description="How many of the last lines (default 200, at most 5000)")
        ],
        responses=inline_serializer("RunLogs", {"lines": serializers.ListField(child=serializers.CharField())}),
    )
    def get(self, request: Request, pk: int) -> Response:
        permissions.require(request.user, "run.view")
        try:
            count = max(1, min(int(request.query_params.get("lines", 200)), 5000))
        except ValueError:
            raise serializers.ValidationError({"lines": ["expected a whole number between 1 and 5000"]}) from None
        return Response(
            {
                "lines": selectors.run_log_tail(
                    run=get_object_or_404(access.scope(Run.objects.all(), request.user), pk=pk), lines=count
                )
            }
        )


class RecipeListApi(GenericAPIView):
    @extend_schema(
        operation_id="recipes_list",
        parameters=[OpenApiParameter("kind", str, enum=list(Run.Kind.values))],
        responses={200: OpenApiTypes.OBJECT, **error_responses(400)},
        description="Every recipe (a short fixed list, not paginated), or those of one `kind`.",
    )
    def get(self, request: Request) -> Response:
        from workers import recipes as recipe_registry

        permissions.require(request.user, "run.view")
        kind = request.query_params.get("kind", "").strip()
        if kind and kind not in Run.Kind.values:
            raise serializers.ValidationError({"kind": [f"expected transform or training, got {kind[:40]!r}"]})
        return Response(
            [
                {
                    "name": r.name,
                    "kind": r.kind,
                    "version": r.version,
                    "description": r.description,
                    "channels": list(r.channels),
                    "outputs": list(r.outputs),
                    "parameters": [
                        {
                            "name": p.name,
                            "type": p.type,
                            "default": p.default,
                            "minimum": p.minimum,
                            "maximum": p.maximum,
                            "choices": list(p.choices) if p.choices else None,
                            "required": p.required,
                            "help": p.help,
                        }
                        for p in r.parameters
                    ],
                }
                for r in recipe_registry.RECIPES.values()
                if not kind or r.kind == kind
            ]
        )


# --- lineage --------------------------------------------------------------------------------


def _node(node_id: str, user: Any) -> str:
    try:
        exists = selectors.node_exists(node_id, user=user)
    except ValueError as exc:
        raise serializers.ValidationError({"node_id": [str(exc)]}) from None
    if not exists:
        raise Http404(f"no node {node_id}")
    return node_id


class LineageApi(GenericAPIView):
    @extend_schema(
        operation_id="lineage_retrieve",
        parameters=[OpenApiParameter("depth", int, description="Hops each way (1-50, default 4)")],
        description=f"At most {selectors.PER_COLUMN} nodes are listed per distance; "
        "`more` counts the rest of each such "
        "column, and edges to them name the column's box (`more:<distance>`). `restricted` counts the nodes "
        "within the depth that belong to projects you cannot see: they are not listed and the walk stops at them.",
        responses=OpenApiTypes.OBJECT,
    )
    def get(self, request: Request, node_id: str) -> Response:
        permissions.require(request.user, "lineage.view")
        node_id = _node(node_id, request.user)
        try:
            depth = int(request.query_params.get("depth", 4))
        except ValueError:
            depth = -1
        if not 1 <= depth <= 50:
            raise serializers.ValidationError({"depth": ["expected a whole number between 1 and 50"]})
        graph = selectors.lineage_graph(node_id, depth=depth, user=request.user)
        return Response(
            {
                "focus": graph.focus,
                "nodes": [
                    {
                        "id": n.id,
                        "kind": n.kind,
                        "label": n.label,
                        "detail": n.detail,
                        "status": n.status,
                        "distance": n.distance,
                        "url": request.build_absolute_uri(n.url) if n.url else None,
                    }
                    for n in graph.nodes.values()
                    if n.kind != "more"
                ],
                # Edges into a column's left-out nodes name its box, more:<distance>.
                "edges": [{"source": s, "target": t} for s, t in graph.edges],
                "more": [{"id": f"more:{d}", "distance": d, "count": count} for d, count in sorted(graph.more.items())],
                "hidden_upstream": graph.hidden_upstream,
                "hidden_downstream": graph.hidden_downstream,
                "restricted": graph.restricted,
            }
        )


class LineageOpenLineageApi(GenericAPIView):
    @extend_schema(
        operation_id="lineage_openlineage",
        responses=OpenApiTypes.OBJECT,
        description="OpenLineage RunEvents of every run in the node's lineage that you may see; inputs and outputs "
        "in projects you cannot see are left out (the run's `controlplane_hidden` facet counts them).",
    )
    def get(self, request: Request, node_id: str) -> Response:
        permissions.require(request.user, "lineage.view")
        return Response(lineage_run_events(_node(node_id, request.user), user=request.user))


# --- training and models --------------------------------------------------------------------


class TrainingRunInput(BodyInput):
    recipe = serializers.CharField(max_length=100)
    train = serializers.IntegerField(
        min_value=1, max_value=2**63 - 1, help_text="Dataset version id of the training data"
    )
    validation = serializers.IntegerField(
        min_value=1, max_value=2**63 - 1, required=False, allow_null=True, default=None
    )
    target = serializers.CharField(max_length=200)
    hyperparameters = serializers.DictField(required=False, default=dict)
    seed = serializers.IntegerField(min_value=0, max_value=2**31 - 1, required=False, default=runs.DEFAULT_SEED)
    backend = serializers.ChoiceField(choices=runs.backend_names(), default="local")
    instance_type = serializers.CharField(max_length=50, required=False, allow_blank=True, default="")
    instance_count = serializers.IntegerField(min_value=1, max_value=100, default=1)
    # The limits are the service's (runs.training_resource_errors): it names the field and the range in seconds.
    max_runtime_seconds = serializers.IntegerField(default=3600)
    model_name = serializers.CharField(max_length=63, required=False, allow_blank=True, default="")


def _dataset_version_or_400(pk: int | None, field: str, user: Any) -> DatasetVersion | None:
    if pk is None:
        return None
    versions = DatasetVersion.objects.select_related("dataset__project", "profile")
    version = access.scope(versions, user).filter(pk=pk).first()
    if version is None:
        raise serializers.ValidationError({field: [f"no dataset version with id {pk}"]})
    return version


class TrainingRunLaunchOutput(RunDetailOutput):
    warnings = serializers.ListField(
        child=serializers.CharField(),
        help_text="What the launch warns of without refusing it: the run's estimate would take its project (or "
        "everything) over this month's budget, or it is over already",
    )

    class Meta(RunDetailOutput.Meta):
        fields = [*RunDetailOutput.Meta.fields, "warnings"]


class TrainingRunCreateApi(GenericAPIView):
    serializer_class = RunDetailOutput

    @extend_schema(
        operation_id="runs_training_create", request=TrainingRunInput, responses={201: TrainingRunLaunchOutput}
    )
    def post(self, request: Request) -> Response:
        permissions.require(request.user, "run.launch")
        serializer = TrainingRunInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        train = _dataset_version_or_400(data["train"], "train", request.user)
        assert train is not None
        run = services.training_run_launch(
            actor=request.user,
            recipe=data["recipe"],
            train=train,
            validation=_dataset_version_or_400(data["validation"], "validation", request.user),
            target=data["target"],
            hyperparameters=data["hyperparameters"],
            seed=data["seed"],
            backend=data["backend"],
            instance_type=data["instance_type"],
            instance_count=data["instance_count"],
            max_runtime_seconds=data["max_runtime_seconds"],
            model_name=data["model_name"],
        )
        body = RunDetailOutput(_runs(request.user).get(pk=run.pk)).data
        body["warnings"] = (
            cost_objects.launch_budget_warnings(project=run.project, estimate=run.estimated_cost, user=request.user)
            if run.estimated_cost is not None
            else []
        )
        return Response(body, status=status.HTTP_201_CREATED)


class RunReproduceApi(GenericAPIView):
    serializer_class = RunDetailOutput

    @extend_schema(operation_id="runs_reproduce", request=None, responses={201: RunDetailOutput})
    def post(self, request: Request, pk: int) -> Response:
        run = get_object_or_404(access.scope(Run.objects.all(), request.user), pk=pk)
        new = services.run_reproduce(actor=request.user, run=run)
        return Response(RunDetailOutput(_runs(request.user).get(pk=new.pk)).data, status=status.HTTP_201_CREATED)


class RunMetricsApi(GenericAPIView):
    @extend_schema(
        operation_id="runs_metrics",
        responses=OpenApiTypes.OBJECT,
        description="Every metric series of the run (value, step or fold, time), its final values, and for a "
        "reproduction whether they match the original's.",
    )
    def get(self, request: Request, pk: int) -> Response:
        permissions.require(request.user, "run.view")
        run = get_object_or_404(access.scope(Run.objects.select_related("reproduced_from"), request.user), pk=pk)
        check = selectors.reproduction_check(run)
        return Response(
            {
                "series": run.metrics,
                "final": selectors.final_metrics(run),
                "reproduction": None
                if check is None
                else {
                    "original": check["original"].pk,
                    "match": check["match"],
                    "outcome": check["outcome"],
                    "summary": check["summary"],
                    "metrics": check["rows"],
                },
            }
        )


class RunEstimateInput(serializers.Serializer):
    backend = serializers.ChoiceField(choices=runs.backend_names(), default="local")
    instance_type = serializers.CharField(required=False, default="local")
    instance_count = serializers.IntegerField(default=1)
    max_runtime_seconds = serializers.IntegerField(default=3600)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        # The launch's own rules: an estimate is never given for a run that would be refused.
        errors = runs.training_resource_errors(**attrs)
        if errors:
            raise serializers.ValidationError(errors)
        return attrs


class RunEstimateApi(GenericAPIView):
    @extend_schema(
        operation_id="runs_estimate",
        parameters=[RunEstimateInput],
        responses=inline_serializer(
            "RunEstimate",
            {
                "estimated_cost": serializers.DecimalField(max_digits=12, decimal_places=2),
                "currency": serializers.CharField(),
                "explanation": serializers.CharField(),
            },
        ),
    )
    def get(self, request: Request) -> Response:
        permissions.require(request.user, "run.view")
        serializer = RunEstimateInput(data=request.query_params)
        serializer.is_valid(raise_exception=True)
        cost, explanation = selectors.run_cost_estimate(**serializer.validated_data)
        return Response({"estimated_cost": str(cost), "currency": "USD", "explanation": explanation})


class ModelVersionOutput(serializers.ModelSerializer):
    project = serializers.CharField(source="registered_model.project.slug")
    model = serializers.CharField(source="registered_model.slug")
    node_id = serializers.CharField()
    run = serializers.IntegerField(source="run_id")
    card = serializers.JSONField(source="metadata", help_text="model.json as the recipe wrote it (MODEL_CARD)")
    serving_settings = serializers.SerializerMethodField(
        help_text="the environment `python -m serving` needs to serve this version (README, Serving a model)"
    )

    @extend_schema_field(serializers.DictField(child=serializers.CharField()))
    def get_serving_settings(self, version: ModelVersion) -> dict[str, str]:
        return selectors.model_version_serving_settings(version)

    class Meta:
        model = ModelVersion
        fields = [
            "id",
            "node_id",
            "project",
            "model",
            "number",
            "run",
            "artifact_uri",
            "sha256",
            "size",
            "framework",
            "framework_version",
            "compiled_runtime",
            "compiled_uri",
            "compiled_sha256",
            "compiled_check",
            "serving_settings",
            "card",
            "task",
            "target",
            "input_schema",
            "classes",
            "metrics",
            "created_at",
        ]
        # The compiled copy is made and checked at registration; nothing here changes it.
        read_only_fields = fields


class RegisteredModelOutput(serializers.ModelSerializer):
    project = serializers.CharField(source="project.slug")
    # Annotated by selectors.model_list.
    latest_version = serializers.IntegerField(source="latest_version_number", allow_null=True)

    class Meta:
        model = RegisteredModel
        fields = ["project", "slug", "name", "description", "latest_version", "created_at"]


class ModelListApi(GenericAPIView):
    serializer_class = RegisteredModelOutput

    @extend_schema(
        operation_id="models_list",
        parameters=filter_parameters(selectors.ModelFilter),
        responses=RegisteredModelOutput(many=True),
    )
    def get(self, request: Request) -> Response:
        permissions.require(request.user, "model.view")
        models = selectors.model_list(filters=request.query_params, user=request.user)
        return self.get_paginated_response(RegisteredModelOutput(self.paginate_queryset(models), many=True).data)


class ModelVersionListApi(GenericAPIView):
    serializer_class = ModelVersionOutput

    @extend_schema(operation_id="model_versions_list", responses=ModelVersionOutput(many=True))
    def get(self, request: Request, project: str, slug: str) -> Response:
        permissions.require(request.user, "model.view")
        model = get_object_or_404(
            access.scope(RegisteredModel.objects.all(), request.user), project__slug=project, slug=slug
        )
        versions = model.versions.select_related("registered_model__project")
        return self.get_paginated_response(ModelVersionOutput(self.paginate_queryset(versions), many=True).data)


class ModelVersionDetailApi(GenericAPIView):
    serializer_class = ModelVersionOutput

    @extend_schema(operation_id="model_versions_retrieve", responses=ModelVersionOutput)
    def get(self, request: Request, pk: int) -> Response:
        permissions.require(request.user, "model.view")
        return Response(
            ModelVersionOutput(
                get_object_or_404(
                    access.scope(ModelVersion.objects.select_related("registered_model__project"), request.user), pk=pk
                )
            ).data
        )


# --- direct uploads to S3 -------------------------------------------------------------------


class DirectUploadCreateInput(BodyInput):
    project = serializers.CharField()
    dataset = serializers.CharField(max_length=100)
    description = serializers.CharField(required=False, allow_blank=True, default="", max_length=2000)
    filename = serializers.CharField(max_length=1024)
    size = serializers.IntegerField(min_value=1, help_text="The file's size in bytes")
    missing_values = serializers.CharField(
        required=False,
        allow_blank=True,
        default="",
        max_length=1000,
        help_text="Comma-separated strings that mean no value, e.g. `NA, n/a`; empty fields always do",
    )


class DirectUploadCreateOutput(serializers.Serializer):
    upload = serializers.CharField(source="ticket", help_text="Pass back to the part-URL and complete calls")
    key = serializers.CharField()
    size = serializers.IntegerField()
    part_size = serializers.IntegerField()
    part_count = serializers.IntegerField()
    create_url = serializers.CharField(help_text="POST here (no body) to start the upload; S3 answers the UploadId")
    expires_at = serializers.DateTimeField()


class DirectUploadPartsInput(BodyInput):
    upload = serializers.CharField(max_length=4096)
    upload_id = serializers.CharField(max_length=1024)
    part_numbers = serializers.ListField(
        child=serializers.IntegerField(min_value=1, max_value=10_000),
        required=False,
        max_length=uploads.MAX_PART_URLS_PER_CALL,
        default=list,
    )


class DirectUploadPartOutput(serializers.Serializer):
    part_number = serializers.IntegerField()
    url = serializers.CharField(help_text="PUT the part's bytes here; keep the ETag header S3 answers")
    offset = serializers.IntegerField()
    size = serializers.IntegerField()


class DirectUploadPartsOutput(serializers.Serializer):
    parts = DirectUploadPartOutput(many=True)
    complete_url = serializers.CharField(help_text="POST the CompleteMultipartUpload XML (parts and ETags) here")


class DirectUploadCompleteInput(BodyInput):
    upload = serializers.CharField(max_length=4096)


class DirectUploadCreateApi(GenericAPIView):
    serializer_class = DirectUploadCreateOutput

    @extend_schema(
        operation_id="dataset_uploads_create",
        request=DirectUploadCreateInput,
        responses={201: DirectUploadCreateOutput},
        description="S3 backend only: start a direct upload of a file from the caller to S3, in parts. 400 with "
        "field errors for a bad project, dataset name or size (at most DATASET_MAX_UPLOAD_BYTES).",
    )
    def post(self, request: Request) -> Response:
        permissions.require(request.user, "dataset.register")
        serializer = DirectUploadCreateInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        upload = uploads.direct_upload_create(actor=request.user, **serializer.validated_data)
        return Response(DirectUploadCreateOutput(upload).data, status=status.HTTP_201_CREATED)


class DirectUploadPartsApi(GenericAPIView):
    serializer_class = DirectUploadPartsOutput

    @extend_schema(
        operation_id="dataset_uploads_parts",
        request=DirectUploadPartsInput,
        responses=DirectUploadPartsOutput,
        description="Presigned UploadPart URLs for the listed parts (default: the first 100) of a started upload.",
    )
    def post(self, request: Request) -> Response:
        permissions.require(request.user, "dataset.register")
        serializer = DirectUploadPartsInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        parts, complete_url = uploads.direct_upload_part_urls(
            actor=request.user, ticket=data["upload"], upload_id=data["upload_id"], part_numbers=data["part_numbers"]
        )
        return Response(DirectUploadPartsOutput({"parts": parts, "complete_url": complete_url}).data)


class DirectUploadCompleteApi(GenericAPIView):
    serializer_class = DatasetRegistrationOutput

    @extend_schema(
        operation_id="dataset_uploads_complete",
        request=DirectUploadCompleteInput,
        responses={202: DatasetRegistrationOutput},
        description="After S3 accepted CompleteMultipartUpload: register the object. A worker validates and stores it; "
        "poll the registration for the dataset version.",
    )
    def post(self, request: Request) -> Response:
        permissions.require(request.user, "dataset.register")
        serializer = DirectUploadCompleteInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        registration = uploads.direct_upload_complete(actor=request.user, ticket=serializer.validated_data["upload"])
        body = DatasetRegistrationOutput(registration).data
        body["url"] = reverse("dataset-registration-detail", args=[registration.pk])
        return Response(body, status=status.HTTP_202_ACCEPTED)
