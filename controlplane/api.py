"""REST API: one thin view per operation; serializers shape input and output, services decide."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.generics import GenericAPIView
from rest_framework.request import Request
from rest_framework.response import Response

from controlplane import access, permissions, selectors, services
from controlplane.api_support import (
    BodyInput,
    Choice,
    Flag,
    Pagination,
    error_responses,
    filter_parameters,
    get_or_404,
)
from controlplane.models import AuditEvent, Notification, Project, ProjectMember, SystemCheck


class ProjectOutput(serializers.ModelSerializer):
    created_by = serializers.CharField(source="created_by.username")

    class Meta:
        model = Project
        fields = ["name", "slug", "description", "cost_tags", "restricted", "created_by", "created_at", "updated_at"]


class ProjectMemberOutput(serializers.ModelSerializer):
    username = serializers.CharField(source="user.username")
    added_by = serializers.CharField(source="added_by.username", default=None)

    class Meta:
        model = ProjectMember
        fields = ["username", "role", "added_by", "added_at"]


class ProjectMemberInput(BodyInput):
    username = serializers.CharField(max_length=150)
    role = Choice(choices=ProjectMember.Role.choices, required=False, default=ProjectMember.Role.MEMBER)
    reason = serializers.CharField(required=False, allow_blank=True, default="", max_length=500)


class ProjectCreateInput(BodyInput):
    name = serializers.CharField(max_length=100)
    slug = serializers.CharField(max_length=63)
    description = serializers.CharField(required=False, allow_blank=True, default="")
    cost_tags = serializers.DictField(child=serializers.CharField(allow_blank=True), required=False, default=dict)


class ProjectChangeInput(BodyInput):
    description = serializers.CharField(required=False, allow_blank=True)
    cost_tags = serializers.DictField(child=serializers.CharField(allow_blank=True), required=False)
    restricted = Flag(required=False, help_text="Restrict the project to its members (owners and admins only)")
    reason = serializers.CharField(required=False, allow_blank=True, default="", max_length=500)

    def to_internal_value(self, data: Any) -> Any:
        if hasattr(data, "keys") and "slug" in data:
            raise serializers.ValidationError(
                {"slug": ["a project's slug never changes: it is the project cost-allocation tag on AWS resources"]}
            )
        return super().to_internal_value(data)


class ProjectListApi(GenericAPIView):
    serializer_class = ProjectOutput

    @extend_schema(
        operation_id="projects_list",
        parameters=[OpenApiParameter("q", str, description="Search in name and slug")],
        responses=ProjectOutput(many=True),
    )
    def get(self, request: Request) -> Response:
        permissions.require(request.user, "project.view")
        page = self.paginate_queryset(
            selectors.project_list(user=request.user, search=request.query_params.get("q", "").strip())
        )
        return self.get_paginated_response(ProjectOutput(page, many=True).data)

    @extend_schema(operation_id="projects_create", request=ProjectCreateInput, responses={201: ProjectOutput})
    def post(self, request: Request) -> Response:
        permissions.require(request.user, "project.create")
        serializer = ProjectCreateInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        project = services.project_create(actor=request.user, **serializer.validated_data)
        return Response(ProjectOutput(project).data, status=status.HTTP_201_CREATED)


class ProjectDetailApi(GenericAPIView):
    serializer_class = ProjectOutput
    lookup_field = "slug"

    @extend_schema(operation_id="projects_retrieve", responses=ProjectOutput)
    def get(self, request: Request, slug: str) -> Response:
        permissions.require(request.user, "project.view")
        return Response(ProjectOutput(_project_or_404(request, slug)).data)

    @extend_schema(operation_id="projects_change", request=ProjectChangeInput, responses=ProjectOutput)
    def patch(self, request: Request, slug: str) -> Response:
        permissions.require(request.user, "project.change")
        project = _project_or_404(request, slug)
        serializer = ProjectChangeInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        restricted = data.pop("restricted", None)
        with transaction.atomic():  # both or neither
            if restricted is not None:
                services.project_restrict(
                    actor=request.user, project=project, restricted=restricted, reason=data["reason"]
                )
            project = services.project_update(actor=request.user, project=project, **data)
        return Response(ProjectOutput(project).data)


def _project_or_404(request: Request, slug: str) -> Project:
    """The project, if the user may see it; a restricted one answers as if it did not exist to those outside it."""
    return get_or_404(access.scope(Project.objects.all(), request.user), f"there is no project {slug!r}", slug=slug)


class ProjectMemberListApi(GenericAPIView):
    serializer_class = ProjectMemberOutput

    @extend_schema(operation_id="project_members_list", responses=ProjectMemberOutput(many=True))
    def get(self, request: Request, slug: str) -> Response:
        permissions.require(request.user, "project.view")
        page = self.paginate_queryset(selectors.project_members(project=_project_or_404(request, slug)))
        return self.get_paginated_response(ProjectMemberOutput(page, many=True).data)

    @extend_schema(
        operation_id="project_members_set",
        description="Add a user to the project, or change their role in it (owners of the project and admins).",
        request=ProjectMemberInput,
        responses={201: ProjectMemberOutput},
    )
    def post(self, request: Request, slug: str) -> Response:
        permissions.require(request.user, "project.members")
        project = _project_or_404(request, slug)
        serializer = ProjectMemberInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        member = services.project_member_set(actor=request.user, project=project, **serializer.validated_data)
        return Response(ProjectMemberOutput(member).data, status=status.HTTP_201_CREATED)


class ProjectMemberDetailApi(GenericAPIView):
    serializer_class = ProjectMemberOutput

    @extend_schema(operation_id="project_members_remove", request=None, responses={204: None})
    def delete(self, request: Request, slug: str, username: str) -> Response:
        permissions.require(request.user, "project.members")
        project = _project_or_404(request, slug)
        services.project_member_remove(actor=request.user, project=project, username=username)
        return Response(status=status.HTTP_204_NO_CONTENT)


class AuditEventOutput(serializers.ModelSerializer):
    actor = serializers.CharField(source="actor_name")

    class Meta:
        model = AuditEvent
        fields = [
            "id",
            "created_at",
            "actor",
            "action",
            "object_type",
            "object_id",
            "object_repr",
            "before",
            "after",
            "reason",
        ]


class AuditEventListApi(GenericAPIView):
    serializer_class = AuditEventOutput

    @extend_schema(
        operation_id="audit_events_list",
        parameters=filter_parameters(selectors.AuditEventFilter),
        responses=AuditEventOutput(many=True),
    )
    def get(self, request: Request) -> Response:
        permissions.require(request.user, "audit.view")
        page = self.paginate_queryset(selectors.audit_event_list(user=request.user, filters=request.query_params))
        return self.get_paginated_response(AuditEventOutput(page, many=True).data)


class SystemCheckOutput(serializers.ModelSerializer):
    requested_by = serializers.CharField(source="requested_by.username")

    class Meta:
        model = SystemCheck
        fields = ["id", "status", "results", "worker", "requested_by", "created_at", "started_at", "finished_at"]


class SystemCheckCreateApi(GenericAPIView):
    serializer_class = SystemCheckOutput

    @extend_schema(operation_id="system_checks_create", request=None, responses={202: SystemCheckOutput})
    def post(self, request: Request) -> Response:
        check = services.system_check_request(actor=request.user)
        return Response(SystemCheckOutput(check).data, status=status.HTTP_202_ACCEPTED)


class SystemCheckDetailApi(GenericAPIView):
    serializer_class = SystemCheckOutput

    @extend_schema(operation_id="system_checks_retrieve", responses=SystemCheckOutput)
    def get(self, request: Request, pk: int) -> Response:
        permissions.require(request.user, "system.view")
        return Response(SystemCheckOutput(get_or_404(SystemCheck, f"there is no system check {pk}", pk=pk)).data)


class MeApi(GenericAPIView):
    @extend_schema(
        operation_id="me_retrieve",
        responses=inline_serializer(
            "Me", {"username": serializers.CharField(), "roles": serializers.ListField(child=serializers.CharField())}
        ),
    )
    def get(self, request: Request) -> Response:
        return Response(
            {"username": request.user.get_username(), "roles": sorted(permissions.user_roles(request.user))}
        )


# --- notifications ----------------------------------------------------------------------------


class NotificationOutput(serializers.ModelSerializer):
    read = serializers.SerializerMethodField()

    class Meta:
        model = Notification
        fields = ["id", "title", "body", "url", "created_at", "read", "read_at"]

    def get_read(self, notification: Notification) -> bool:
        return notification.read_at is not None


class NotificationPagination(Pagination):
    """A page of the caller's notifications, with how many of all of them are unread."""

    unread = 0

    def get_paginated_response(self, data: Any) -> Response:
        response = super().get_paginated_response(data)
        response.data["unread"] = self.unread
        return response

    def get_paginated_response_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        paginated = super().get_paginated_response_schema(schema)
        paginated["properties"]["unread"] = {"type": "integer", "example": 2, "description": "Unread, of all"}
        paginated["required"] = [*paginated.get("required", []), "unread"]
        return paginated


class NotificationListApi(GenericAPIView):
    serializer_class = NotificationOutput
    pagination_class = NotificationPagination

    @extend_schema(
        operation_id="notifications_list",
        parameters=filter_parameters(selectors.NotificationFilter),
        responses={200: NotificationOutput(many=True), **error_responses(400, 403)},
        description="Your notifications, newest first: `status=unread` or `read`, `q` a word of the title or text, "
        "`since`/`until` the day; `unread` counts all your unread ones.",
    )
    def get(self, request: Request) -> Response:
        permissions.require(request.user, "notification.view")
        listed = selectors.notification_list(user=request.user, filters=request.query_params)
        paginator = self.paginator
        assert isinstance(paginator, NotificationPagination)
        paginator.unread = Notification.objects.filter(user=request.user, read_at__isnull=True).count()
        page = self.paginate_queryset(listed)
        return self.get_paginated_response(NotificationOutput(page, many=True).data)


class NotificationsReadInput(BodyInput):
    ids = serializers.ListField(
        child=serializers.IntegerField(min_value=1, max_value=2**63 - 1),
        required=False,
        max_length=1000,
        help_text="The notifications to mark read; all of yours when left out",
    )


class NotificationsReadApi(GenericAPIView):
    serializer_class = NotificationsReadInput  # what OPTIONS describes

    @extend_schema(
        operation_id="notifications_read",
        request=NotificationsReadInput,
        responses={
            200: inline_serializer("NotificationsRead", {"marked": serializers.IntegerField()}),
            **error_responses(400, 403),
        },
        description="Mark your notifications read (those listed, or all); `marked` counts the ones that were unread.",
    )
    def post(self, request: Request) -> Response:
        permissions.require(request.user, "notification.view")
        serializer = NotificationsReadInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        marked = services.notifications_mark_read(user=request.user, ids=serializer.validated_data.get("ids"))
        return Response({"marked": marked})
