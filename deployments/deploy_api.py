"""REST API for services, deployments and rollbacks: list and read them, deploy, roll back, scale.

Thin views: the input serializer checks shapes, deployments.services decides (ValidationError → 400, Conflict →
409, PermissionDenied → 403) and enqueues; the answer is 202 with the deployment, which a worker then carries out.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.generics import GenericAPIView
from rest_framework.request import Request
from rest_framework.response import Response

from controlplane import access, permissions
from controlplane.api_support import BodyInput, Choice, error_responses, filter_parameters, get_or_404
from deployments import selectors, services
from deployments.models import Deployment, DeploymentEvent, Service

MAX_ID = 2**63 - 1


class DeploymentEventOutput(serializers.ModelSerializer):
    actor = serializers.CharField(source="actor.username", allow_null=True, default=None)

    class Meta:
        model = DeploymentEvent
        fields = ["action", "from_status", "to_status", "reason", "actor", "created_at"]


class DeploymentOutput(serializers.ModelSerializer):
    service = serializers.CharField(source="service.name")
    service_id = serializers.IntegerField()
    environment = serializers.CharField(source="service.environment.name")
    project = serializers.CharField(source="model_version.registered_model.project.slug")
    model = serializers.CharField(source="model_version.registered_model.slug")
    version_number = serializers.IntegerField(source="model_version.number")
    initiated_by = serializers.CharField(source="initiated_by.username", allow_null=True, default=None)
    rollback_of = serializers.IntegerField(source="rollback_of_id", allow_null=True)
    replaces = serializers.IntegerField(source="replaces_id", allow_null=True)
    approval_request = serializers.IntegerField(source="approval_request_id", allow_null=True)
    progress = serializers.DictField(help_text="The backend's latest word: phase, traffic_percent, counts")
    objective_status = serializers.DictField(help_text="The objectives' latest values while it bakes")
    breach = serializers.DictField(help_text="The objective breached when the system rolled it back")
    undone_by = serializers.IntegerField(
        allow_null=True, default=None, help_text="The rollback that undid it (after it succeeded, or mid-rollout)"
    )

    class Meta:
        model = Deployment
        fields = [
            "id",
            "kind",
            "service",
            "service_id",
            "environment",
            "project",
            "model",
            "model_version",
            "version_number",
            "status",
            "status_reason",
            "initiated_by",
            "reason",
            "approval_request",
            "replaces",
            "rollback_of",
            "strategy",
            "canary_percent",
            "linear_step_percent",
            "linear_interval_minutes",
            "bake_minutes",
            "desired_count",
            "revision",
            "progress",
            "objective_status",
            "breach",
            "undone_by",
            "created_at",
            "started_at",
            "baking_at",
            "finished_at",
        ]


class DeploymentDetailOutput(DeploymentOutput):
    events = DeploymentEventOutput(many=True)

    class Meta(DeploymentOutput.Meta):
        fields = [*DeploymentOutput.Meta.fields, "events"]


class ServiceOutput(serializers.ModelSerializer):
    project = serializers.CharField(source="registered_model.project.slug")
    model = serializers.CharField(source="registered_model.slug")
    environment = serializers.CharField(source="environment.name")
    current_deployment = serializers.IntegerField(source="current_deployment_id", allow_null=True)
    serving_version = serializers.IntegerField(
        source="current_deployment.model_version_id", allow_null=True, default=None, help_text="Model version id"
    )
    active_deployment = serializers.SerializerMethodField(help_text="The deployment under way, if one is")

    class Meta:
        model = Service
        fields = [
            "id",
            "name",
            "project",
            "model",
            "environment",
            "backend",
            "address",
            "desired_count",
            "scale_pending",
            "current_deployment",
            "serving_version",
            "active_deployment",
            "created_at",
        ]

    def get_active_deployment(self, service: Service) -> int | None:
        if hasattr(service, "active_id"):  # annotated by selectors.service_list
            return service.active_id  # type: ignore[no-any-return]
        active = selectors.active_deployment(service=service)
        return active.pk if active is not None else None


class DeploymentFilterInput(serializers.Serializer):
    service = serializers.CharField(required=False, max_length=40, help_text="Service id or name")
    status = Choice(choices=Deployment.Status.choices, required=False)


class DeploymentCreateInput(BodyInput):
    model_version = serializers.IntegerField(min_value=1, max_value=MAX_ID, help_text="Model version id")
    environment = serializers.CharField(max_length=40, help_text="Environment name, e.g. staging")
    reason = serializers.CharField(required=False, allow_blank=True, default="", max_length=2000)


class RollbackInput(BodyInput):
    reason = serializers.CharField(allow_blank=True, max_length=2000, help_text="Why (required, audited)")
    expected_deployment = serializers.IntegerField(
        required=False,
        min_value=1,
        max_value=MAX_ID,
        help_text="The deployment you saw active (or current): if another one is by now, nothing is rolled back (409)",
    )


class ScaleInput(BodyInput):
    desired_count = serializers.IntegerField(help_text="Within the environment's min and max desired count")


def _service(user: Any, pk: int) -> Service:
    """The service, when the user may see its project; else 404, as if there were none."""
    return get_or_404(access.scope(selectors.service_list(), user), f"there is no service {pk}", pk=pk)


def _deployment(user: Any, pk: int) -> Deployment:
    deployments = access.scope(selectors.deployment_list(), user).prefetch_related("events__actor")
    return get_or_404(deployments, f"there is no deployment {pk}", pk=pk)


class ServiceListApi(GenericAPIView):
    serializer_class = ServiceOutput

    @extend_schema(
        operation_id="services_list",
        parameters=filter_parameters(selectors.ServiceFilter),
        responses={200: ServiceOutput(many=True), **error_responses(400, 403)},
    )
    def get(self, request: Request) -> Response:
        permissions.require(request.user, "service.view")
        page = self.paginate_queryset(
            access.scope(selectors.service_list(filters=request.query_params, user=request.user), request.user)
        )
        return self.get_paginated_response(ServiceOutput(page, many=True).data)


class ServiceDetailApi(GenericAPIView):
    serializer_class = ServiceOutput

    @extend_schema(
        operation_id="services_retrieve",
        responses={200: ServiceOutput, **error_responses(403, 404, e404="There is no service with that id.")},
    )
    def get(self, request: Request, pk: int) -> Response:
        permissions.require(request.user, "service.view")
        return Response(ServiceOutput(_service(request.user, pk)).data)


class ServiceRollbackApi(GenericAPIView):
    serializer_class = DeploymentDetailOutput

    @extend_schema(
        operation_id="services_rollback",
        request=RollbackInput,
        responses={
            202: DeploymentDetailOutput,
            **error_responses(
                400,
                403,
                404,
                409,
                e400="No reason, or no earlier good revision to roll back to.",
                e409="A rollback is under way already, or `expected_deployment` is no longer the one to roll back.",
            ),
        },
        description="Approvers and admins. During a deployment, all traffic goes back to the revision it "
        "replaces at once; otherwise the last revision that succeeded before the current one is redeployed. "
        "Answers with the rollback deployment, which a worker carries out.",
    )
    def post(self, request: Request, pk: int) -> Response:
        permissions.require(request.user, "deployment.rollback")
        service = _service(request.user, pk)
        serializer = RollbackInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        rollback = services.deployment_rollback(
            actor=request.user,
            service_id=service.pk,
            reason=serializer.validated_data["reason"],
            expected=serializer.validated_data.get("expected_deployment"),
        )
        return Response(
            DeploymentDetailOutput(_deployment(request.user, rollback.pk)).data, status=status.HTTP_202_ACCEPTED
        )


class ServiceScaleApi(GenericAPIView):
    serializer_class = ServiceOutput

    @extend_schema(
        operation_id="services_scale",
        request=ScaleInput,
        responses={202: ServiceOutput, **error_responses(400, 403, 404, e400="Outside the environment's limits.")},
        description="Approvers and admins. Audited; a worker applies it to the serving revision.",
    )
    def post(self, request: Request, pk: int) -> Response:
        permissions.require(request.user, "deployment.deploy")
        service = _service(request.user, pk)
        serializer = ScaleInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        services.service_scale(
            actor=request.user, service_id=service.pk, desired_count=serializer.validated_data["desired_count"]
        )
        return Response(ServiceOutput(_service(request.user, pk)).data, status=status.HTTP_202_ACCEPTED)


class RotatedOutput(serializers.Serializer):
    service = ServiceOutput()
    message = serializers.CharField()


class ServiceIngestTokenRotateApi(GenericAPIView):
    serializer_class = RotatedOutput

    @extend_schema(
        operation_id="services_rotate_ingest_token",
        request=None,
        responses={200: RotatedOutput, **error_responses(403, 404)},
        description="Approvers and admins. Audited. Makes a new ingest token for the service's serving runtime; the "
        "token itself is never returned. Running revisions get it on their next deployment.",
    )
    def post(self, request: Request, pk: int) -> Response:
        from monitoring.services.ingest import ROTATION_EFFECT, service_ingest_token_rotate

        permissions.require(request.user, "deployment.deploy")
        service = _service(request.user, pk)
        service_ingest_token_rotate(service=service, actor=request.user)
        return Response({"service": ServiceOutput(service).data, "message": "Ingest token rotated. " + ROTATION_EFFECT})


class DeploymentListApi(GenericAPIView):
    serializer_class = DeploymentOutput

    @extend_schema(
        operation_id="deployments_list",
        parameters=[DeploymentFilterInput],
        responses={200: DeploymentOutput(many=True), **error_responses(400, 403)},
        description="Newest first.",
    )
    def get(self, request: Request) -> Response:
        permissions.require(request.user, "service.view")
        filters = DeploymentFilterInput(data=request.query_params)
        filters.is_valid(raise_exception=True)
        data = filters.validated_data
        service = None
        if "service" in data:
            visible = access.scope(Service.objects.all(), request.user)
            service = (
                selectors.service_by_id(data["service"], user=request.user)
                or visible.filter(name=data["service"]).first()
            )
            if service is None:
                raise ValidationError({"service": [f"there is no service {data['service']}"]})
        deployments = selectors.deployment_list(service=service, status=data.get("status", ""))
        page = self.paginate_queryset(access.scope(deployments, request.user))
        return self.get_paginated_response(DeploymentOutput(page, many=True).data)

    @extend_schema(
        operation_id="deployments_create",
        request=DeploymentCreateInput,
        responses={
            202: DeploymentDetailOutput,
            **error_responses(
                400,
                403,
                409,
                e400="Not approved for that environment, or the environment lacks backend settings: `fields` says.",
                e409="A deployment of the service is active, or the version serves it already.",
            ),
        },
        description="Approvers and admins. Deploys an approved version to its environment's service (created on "
        "first deploy) with the environment's strategy; a worker carries it out.",
    )
    def post(self, request: Request) -> Response:
        permissions.require(request.user, "deployment.deploy")
        serializer = DeploymentCreateInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        deployment = services.deployment_create(
            actor=request.user,
            model_version_id=serializer.validated_data["model_version"],
            environment=serializer.validated_data["environment"],
            reason=serializer.validated_data["reason"],
        )
        return Response(
            DeploymentDetailOutput(_deployment(request.user, deployment.pk)).data, status=status.HTTP_202_ACCEPTED
        )


class DeploymentDetailApi(GenericAPIView):
    serializer_class = DeploymentDetailOutput

    @extend_schema(
        operation_id="deployments_retrieve",
        responses={
            200: DeploymentDetailOutput,
            **error_responses(403, 404, e404="There is no deployment with that id."),
        },
    )
    def get(self, request: Request, pk: int) -> Response:
        permissions.require(request.user, "service.view")
        return Response(DeploymentDetailOutput(_deployment(request.user, pk)).data)
