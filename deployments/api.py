"""REST API for environments and approval requests: list and filter, request, decide, withdraw.

Thin views: the input serializer checks shapes, the services decide (and raise ValidationError → 400, Conflict →
409, PermissionDenied → 403), the output serializer shapes the answer.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.generics import GenericAPIView
from rest_framework.request import Request
from rest_framework.response import Response

from controlplane import access, permissions
from controlplane.api_support import (
    BodyInput,
    Choice,
    Flag,
    ServiceCheckedInteger,
    ServiceCheckedNumber,
    error_responses,
    get_or_404,
)
from deployments import selectors, services
from deployments.models import ApprovalDecision, ApprovalRequest, Deployment, Environment, GateResult
from lineage.models import ModelVersion

MAX_ID = 2**63 - 1

# The ranges the service checks (and names when it refuses a value), shown in the schema; the service alone refuses.
ENVIRONMENT_RANGES = services.WHOLE_NUMBER_RANGES


def _ranged(name: str, help_text: str) -> ServiceCheckedInteger:
    low, high = ENVIRONMENT_RANGES[name]
    return ServiceCheckedInteger(required=False, min_value=low, max_value=high, help_text=f"{help_text} ({low}-{high})")


def _number(name: str, help_text: str) -> ServiceCheckedNumber:
    low, high, what = services.NUMBER_RANGES[name]
    return ServiceCheckedNumber(required=False, min_value=low, max_value=high, help_text=f"{help_text}: {what}")


# --- environments ---------------------------------------------------------------------------------------------


class EnvironmentOutput(serializers.ModelSerializer):
    gates = serializers.ListField(child=serializers.CharField())
    backend_settings = serializers.DictField()
    created_by = serializers.CharField(source="created_by.username")

    class Meta:
        model = Environment
        fields = ["id", *services.ENVIRONMENT_FIELDS, "created_by", "created_at", "updated_at"]
        extra_kwargs = {
            **{name: {"min_value": low, "max_value": high} for name, (low, high) in ENVIRONMENT_RANGES.items()},
            **{name: {"min_value": low, "max_value": high} for name, (low, high, _) in services.NUMBER_RANGES.items()},
        }


class EnvironmentChangeInput(BodyInput):
    """Every field optional: a PATCH changes only the fields given. The service checks ranges and gates and names
    the field it refuses."""

    name = serializers.CharField(required=False, max_length=40)
    order = _ranged("order", "Promotion order: lower comes first")
    description = serializers.CharField(required=False, allow_blank=True, max_length=5000)
    approvals_required = _ranged("approvals_required", "Distinct approvals needed")
    gates = serializers.ListField(
        child=serializers.CharField(allow_blank=True, trim_whitespace=False),
        required=False,
        help_text="One expression each, e.g. `accuracy >= 0.90`, `accuracy >= serving - 0.01`, "
        "`schema matches serving`, `approved in staging`",
    )
    allow_override = Flag(required=False, help_text="A request whose gates fail may still be decided, with a reason")
    request_ttl_days = _ranged("request_ttl_days", "Days an open request stays open")
    bake_minutes = _number("bake_minutes", "Minutes a new revision bakes (watched) before it is kept")
    deploy_on_approval = Flag(required=False, help_text="Deploy a version as soon as it is approved here")
    strategy = Choice(
        choices=Deployment.Strategy.choices, required=False, help_text="How traffic moves to a new revision"
    )
    canary_percent = _number("canary_percent", "A canary's share of traffic while it bakes")
    linear_step_percent = _number("linear_step_percent", "Each linear step's share of traffic")
    linear_interval_minutes = _number("linear_interval_minutes", "Minutes between linear steps")
    autoscaling_metric = Choice(
        choices=["", *services.AUTOSCALING_METRICS],
        required=False,
        allow_blank=True,
        help_text="Target tracking on the aws backend: requests or cpu; empty for none",
    )
    autoscaling_target = serializers.FloatField(
        required=False, allow_null=True, help_text="Requests per task per minute, or average CPU %"
    )
    objective_p99_latency_ms = serializers.FloatField(required=False, allow_null=True)
    objective_error_rate = serializers.FloatField(required=False, allow_null=True, help_text="A fraction")
    objective_drift_share = serializers.FloatField(required=False, allow_null=True, help_text="A fraction")
    min_desired_count = _ranged("min_desired_count", "Fewest serving tasks")
    max_desired_count = _ranged("max_desired_count", "Most serving tasks, at least the fewest")
    backend_settings = serializers.DictField(required=False)
    capture_fraction = _number("capture_fraction", "Share of requests sampled into capture files for drift")
    drift_window_minutes = _ranged("drift_window_minutes", "Minutes of captured requests in each drift report")
    drift_share = serializers.FloatField(
        required=False, help_text="The inputs drifted when this share of features drifted: above 0, at most 1"
    )
    drift_methods = serializers.DictField(
        required=False,
        help_text='How each feature is judged, per kind and per feature, e.g. {"numeric": {"method": "psi", '
        '"threshold": 0.2}, "features": {"age": {"method": "ks", "threshold": 0.01}}}; empty for the defaults',
    )


class EnvironmentCreateInput(EnvironmentChangeInput):
    name = serializers.CharField(max_length=40, help_text="e.g. staging, production")


def _environment(name: str) -> Environment:
    return get_or_404(Environment.objects.select_related("created_by"), f"there is no environment {name!r}", name=name)


class EnvironmentListApi(GenericAPIView):
    serializer_class = EnvironmentOutput

    @extend_schema(
        operation_id="environments_list", responses={200: EnvironmentOutput(many=True), **error_responses(403)}
    )
    def get(self, request: Request) -> Response:
        permissions.require(request.user, "environment.view")
        page = self.paginate_queryset(selectors.environment_list().select_related("created_by"))
        return self.get_paginated_response(EnvironmentOutput(page, many=True).data)

    @extend_schema(
        operation_id="environments_create",
        request=EnvironmentCreateInput,
        responses={
            201: EnvironmentOutput,
            **error_responses(
                400, 403, e400="A field is not valid (a range, a gate, a name taken): `fields` names each one."
            ),
        },
        description="Admins only. Audited with the environment's settings.",
    )
    def post(self, request: Request) -> Response:
        permissions.require(request.user, "environment.manage")
        serializer = EnvironmentCreateInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        environment = services.environment_create(actor=request.user, data=serializer.validated_data)
        return Response(EnvironmentOutput(_environment(environment.name)).data, status=status.HTTP_201_CREATED)


class EnvironmentDetailApi(GenericAPIView):
    serializer_class = EnvironmentOutput

    @extend_schema(
        operation_id="environments_retrieve",
        responses={200: EnvironmentOutput, **error_responses(403, 404, e404="There is no environment of that name.")},
    )
    def get(self, request: Request, name: str) -> Response:
        permissions.require(request.user, "environment.view")
        return Response(EnvironmentOutput(_environment(name)).data)

    @extend_schema(
        operation_id="environments_change",
        request=EnvironmentChangeInput,
        responses={
            200: EnvironmentOutput,
            **error_responses(400, 403, 404, e404="There is no environment of that name."),
        },
        description="Admins only. Changes the fields given; audited with before and after. Open requests keep "
        "the rules they were made under.",
    )
    def patch(self, request: Request, name: str) -> Response:
        permissions.require(request.user, "environment.manage")
        environment = _environment(name)
        serializer = EnvironmentChangeInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        changed = services.environment_update(
            actor=request.user, environment_id=environment.pk, data=serializer.validated_data
        )
        return Response(EnvironmentOutput(_environment(changed.name)).data)


# --- approval requests ----------------------------------------------------------------------------------------


class GateResultOutput(serializers.ModelSerializer):
    evidence = serializers.DictField()

    class Meta:
        model = GateResult
        fields = ["expression", "kind", "passed", "summary", "evidence"]


class DecisionOutput(serializers.ModelSerializer):
    approver = serializers.CharField(source="approver.username")

    class Meta:
        model = ApprovalDecision
        fields = ["approver", "verdict", "comment", "created_at"]


class ApprovalRequestOutput(serializers.ModelSerializer):
    project = serializers.CharField(source="model_version.registered_model.project.slug")
    model = serializers.CharField(source="model_version.registered_model.slug")
    version_number = serializers.IntegerField(source="model_version.number")
    environment = serializers.CharField(source="environment.name")
    requested_by = serializers.CharField(source="requested_by.username")
    approvals = serializers.SerializerMethodField(help_text="Approvals recorded so far")

    class Meta:
        model = ApprovalRequest
        fields = [
            "id",
            "model_version",
            "project",
            "model",
            "version_number",
            "environment",
            "status",
            "status_reason",
            "requested_by",
            "justification",
            "gates_passed",
            "approvals_required",
            "approvals",
            "created_at",
            "expires_at",
            "finished_at",
        ]
        extra_kwargs = {"approvals_required": {"min_value": 1, "max_value": services.MAX_APPROVALS}}

    def get_approvals(self, request: ApprovalRequest) -> int:
        # Annotated by _requests(); counted here for a request that was not loaded through it.
        count = getattr(request, "approval_count", None)
        if count is None:
            return request.decisions.filter(verdict=ApprovalDecision.Verdict.APPROVE).count()
        return int(count)


class ApprovalRequestDetailOutput(ApprovalRequestOutput):
    artifact_sha256 = serializers.CharField()
    baseline_version = serializers.IntegerField(source="baseline_version_id", allow_null=True)
    overridden_by = serializers.CharField(source="overridden_by.username", allow_null=True, default=None)
    quorum_reached = serializers.SerializerMethodField(
        help_text="The approvals needed are in; a worker is checking the artifact before approving"
    )
    gate_results = GateResultOutput(many=True)
    decisions = DecisionOutput(many=True)

    class Meta(ApprovalRequestOutput.Meta):
        fields = [
            *ApprovalRequestOutput.Meta.fields,
            "artifact_sha256",
            "baseline_version",
            "override_reason",
            "overridden_by",
            "quorum_reached",
            "quorum_at",
            "gate_results",
            "decisions",
            "mirror_status",
            "mirror_arn",
            "mirror_approval_status",
            "mirror_error",
        ]

    def get_quorum_reached(self, request: ApprovalRequest) -> bool:
        return request.quorum_at is not None


class StandingOutput(ApprovalRequestOutput):
    current = serializers.SerializerMethodField(
        help_text="This request says where the version stands in its environment (the live one, else the newest)"
    )
    decisions = DecisionOutput(many=True)

    class Meta(ApprovalRequestOutput.Meta):
        fields = [*ApprovalRequestOutput.Meta.fields, "current", "decisions"]

    def get_current(self, request: ApprovalRequest) -> bool:
        return request.pk in self.context.get("current", ())


def _counted(requests: QuerySet[ApprovalRequest]) -> QuerySet[ApprovalRequest]:
    return selectors.with_counts(requests)


def _detail(user: Any, pk: int) -> ApprovalRequest:
    """The request, when the user may see its project; else 404, as if there were none."""
    requests = (
        access.scope(ApprovalRequest.objects.all(), user)
        .select_related("model_version__registered_model__project", "environment", "requested_by", "overridden_by")
        .prefetch_related("gate_results", "decisions__approver")
    )
    return get_or_404(_counted(requests), f"there is no approval request {pk}", pk=pk)


class ApprovalRequestFilterInput(serializers.Serializer):
    status = Choice(choices=ApprovalRequest.Status.choices, required=False)
    project = serializers.CharField(required=False, max_length=63, help_text="Project slug")
    environment = serializers.CharField(required=False, max_length=40, help_text="Environment name")
    mine = Flag(
        required=False,
        default=False,
        help_text="Only the open requests you may decide (not yours, not for a run you authored, not decided "
        "by you yet), oldest first",
    )
    requested_by_me = Flag(
        required=False,
        default=False,
        help_text="Only the requests you made, in every state (the page's My requests), newest first",
    )
    older_than_days = serializers.IntegerField(
        required=False, min_value=0, max_value=3650, help_text="Only requests made at least this many days ago"
    )

    def validate(self, data: dict[str, Any]) -> dict[str, Any]:
        if data.get("mine") and data.get("requested_by_me"):
            raise serializers.ValidationError(
                {"requested_by_me": ["not with mine=true: the requests waiting for you are never your own"]}
            )
        return data


class ApprovalRequestCreateInput(BodyInput):
    model_version = serializers.IntegerField(min_value=1, max_value=MAX_ID, help_text="Model version id")
    environment = serializers.CharField(max_length=40, help_text="Environment name, e.g. staging")
    justification = serializers.CharField(allow_blank=True, max_length=5000)
    override_reason = serializers.CharField(
        required=False,
        allow_blank=True,
        default="",
        max_length=5000,
        help_text="Required when a gate fails and the environment allows an override (audited)",
    )


class ApprovalRequestListApi(GenericAPIView):
    serializer_class = ApprovalRequestOutput

    @extend_schema(
        operation_id="approval_requests_list",
        parameters=[ApprovalRequestFilterInput],
        responses={200: ApprovalRequestOutput(many=True), **error_responses(400, 403)},
        description="Newest first; with `mine=true`, your approval queue, oldest first; with "
        "`requested_by_me=true`, the requests you made.",
    )
    def get(self, request: Request) -> Response:
        permissions.require(request.user, "approval.view")
        problems = selectors.approval_filter_problems(
            user=request.user,
            project=request.query_params.get("project", ""),
            environment=request.query_params.get("environment", ""),
            older_than=request.query_params.get("older_than_days", ""),
        )
        filters = ApprovalRequestFilterInput(data=request.query_params)
        # Both kinds of problem at once, in the page's words where the page checks the same filter.
        shapes = {} if filters.is_valid() else dict(filters.errors)
        problems = {"older_than_days" if k == "older_than" else k: v for k, v in problems.items()}
        if shapes or problems:
            raise ValidationError({**shapes, **problems})
        data = filters.validated_data
        if data["mine"]:
            requests = selectors.approval_queue(user=request.user)
            if not permissions.has_permission(request.user, "approval.decide"):
                requests = requests.none()
            if data.get("status"):
                requests = requests.filter(status=data["status"])
            if data.get("project"):
                requests = requests.filter(model_version__registered_model__project__slug=data["project"])
            if data.get("environment"):
                requests = requests.filter(environment__name=data["environment"])
        else:
            requests = access.scope(
                selectors.approval_request_list(
                    status=data.get("status"),
                    project=data.get("project"),
                    environment=data.get("environment"),
                    requested_by=request.user if data["requested_by_me"] else None,
                ),
                request.user,
            )
        if data.get("older_than_days") is not None:
            requests = requests.filter(created_at__lte=timezone.now() - timedelta(days=data["older_than_days"]))
        page = self.paginate_queryset(_counted(requests))
        return self.get_paginated_response(ApprovalRequestOutput(page, many=True).data)

    @extend_schema(
        operation_id="approval_requests_create",
        request=ApprovalRequestCreateInput,
        responses={
            201: ApprovalRequestDetailOutput,
            **error_responses(
                400,
                403,
                409,
                e400="A field is not valid: an unknown model version or environment, a gate naming a metric the "
                "version lacks (`model_version`), a failed gate without an allowed override.",
                e409="The version already has an open or approved request for the environment.",
            ),
        },
        description="Request promotion of a model version to an environment. Its gates run at once; the results "
        "are in the answer.",
    )
    def post(self, request: Request) -> Response:
        permissions.require(request.user, "approval.request")
        serializer = ApprovalRequestCreateInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        created = services.approval_request_create(
            actor=request.user,
            model_version_id=data["model_version"],
            environment=data["environment"],
            justification=data["justification"],
            override_reason=data["override_reason"],
        )
        return Response(
            ApprovalRequestDetailOutput(_detail(request.user, created.pk)).data, status=status.HTTP_201_CREATED
        )


class ApprovalRequestDetailApi(GenericAPIView):
    serializer_class = ApprovalRequestDetailOutput

    @extend_schema(
        operation_id="approval_requests_retrieve",
        responses={
            200: ApprovalRequestDetailOutput,
            **error_responses(403, 404, e404="There is no approval request with that id."),
        },
    )
    def get(self, request: Request, pk: int) -> Response:
        permissions.require(request.user, "approval.view")
        return Response(ApprovalRequestDetailOutput(_detail(request.user, pk)).data)


class DecisionInput(BodyInput):
    verdict = Choice(choices=ApprovalDecision.Verdict.choices)
    comment = serializers.CharField(allow_blank=True, max_length=5000, help_text="Why: required")


class ApprovalDecisionCreateApi(GenericAPIView):
    serializer_class = ApprovalRequestDetailOutput

    @extend_schema(
        operation_id="approval_requests_decide",
        request=DecisionInput,
        responses={
            200: ApprovalRequestDetailOutput,
            **error_responses(
                400,
                403,
                404,
                409,
                e400="A field is not valid: `verdict` is not approve or reject, `comment` is empty, or `approver`: "
                "you made the request or trained the model, and nobody approves their own work.",
                e404="There is no approval request with that id.",
                e409="The request is not open (approved, rejected, withdrawn or expired), or you decided it already.",
            ),
        },
        description="Approve or reject, with a comment. One rejection rejects; the approval that completes the "
        "environment's number hands the request to a worker, which checks the artifact and approves "
        "(`quorum_reached`). Neither the requester nor the author of the training run may decide a request.",
    )
    def post(self, request: Request, pk: int) -> Response:
        permissions.require(request.user, "approval.decide")
        target = get_or_404(
            access.scope(ApprovalRequest.objects.all(), request.user), f"there is no approval request {pk}", pk=pk
        )
        serializer = DecisionInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        services.approval_decide(actor=request.user, request_id=target.pk, **serializer.validated_data)
        return Response(ApprovalRequestDetailOutput(_detail(request.user, target.pk)).data)


class WithdrawInput(BodyInput):
    reason = serializers.CharField(required=False, allow_blank=True, default="", max_length=2000)


class ApprovalRequestWithdrawApi(GenericAPIView):
    serializer_class = ApprovalRequestDetailOutput

    @extend_schema(
        operation_id="approval_requests_withdraw",
        request=WithdrawInput,
        responses={
            200: ApprovalRequestDetailOutput,
            **error_responses(
                400,
                403,
                404,
                409,
                e403="Only the requester (with a role that may request) or an admin may withdraw a request.",
                e404="There is no approval request with that id.",
                e409="The request is not open.",
            ),
        },
        description="The requester (or an admin) takes an open request back.",
    )
    def post(self, request: Request, pk: int) -> Response:
        permissions.require(request.user, "approval.request")
        target = get_or_404(
            access.scope(ApprovalRequest.objects.all(), request.user), f"there is no approval request {pk}", pk=pk
        )
        serializer = WithdrawInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        services.approval_withdraw(actor=request.user, request_id=target.pk, reason=serializer.validated_data["reason"])
        return Response(ApprovalRequestDetailOutput(_detail(request.user, target.pk)).data)


class ModelVersionApprovalsApi(GenericAPIView):
    serializer_class = StandingOutput

    @extend_schema(
        operation_id="model_version_approvals_list",
        responses={
            200: StandingOutput(many=True),
            **error_responses(403, 404, e404="There is no model version with that id."),
        },
        description="Where a model version stands: its approval requests by environment (in promotion order), "
        "newest first within each; `current` marks the one that says where it stands there.",
    )
    def get(self, request: Request, pk: int) -> Response:
        permissions.require(request.user, "approval.view")
        version = get_or_404(
            access.scope(ModelVersion.objects.all(), request.user), f"there is no model version {pk}", pk=pk
        )
        current = {
            standing.pk for standing in selectors.approval_matrix(versions=[version]).get(version.pk, {}).values()
        }
        requests = selectors.model_version_approvals(model_version=version).select_related(
            "model_version__registered_model__project"
        )
        page = self.paginate_queryset(_counted(requests))
        return self.get_paginated_response(StandingOutput(page, many=True, context={"current": current}).data)
