"""What every API endpoint shares: pagination and one error body shape.

Errors always look like
    {"error": {"status": 400, "code": "invalid", "message": "...", "fields": {"slug": ["..."]}}}
whether they come from a serializer, a service (Django's ValidationError / PermissionDenied) or DRF itself. A
ValidationError whose class says `http_status = 409` (a state conflict) has the same body with status 409 and code
"conflict".
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from rest_framework import exceptions, pagination, serializers
from rest_framework.permissions import BasePermission
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from controlplane import permissions
from controlplane.models import AuditImmutableError
from lineage.models import WriteOnceError


class CanReadApiDocs(BasePermission):
    """The schema follows the same rule as the docs page: signed in, with a role."""

    def has_permission(self, request: Any, view: Any) -> bool:
        return bool(request.user and request.user.is_authenticated) and permissions.has_permission(
            request.user, "apidocs.view"
        )


class Pagination(pagination.PageNumberPagination):
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500


def _flatten(detail: Any) -> Any:
    if isinstance(detail, dict):
        return {str(key): _flatten(value) for key, value in detail.items()}
    if isinstance(detail, list):
        if all(not isinstance(item, (dict, list)) for item in detail):
            return [str(item) for item in detail]
        return [_flatten(item) for item in detail]
    return [str(detail)]


def _messages(fields: Any) -> list[str]:
    if isinstance(fields, dict):
        return [message for value in fields.values() for message in _messages(value)]
    if isinstance(fields, list):
        return [message for value in fields for message in _messages(value)]
    return [str(fields)]


def _django_validation_to_drf(exc: DjangoValidationError) -> exceptions.ValidationError:
    if hasattr(exc, "error_dict"):
        fields = {
            ("non_field_errors" if key == "__all__" else key): [str(m) for m in messages]
            for key, messages in exc.message_dict.items()
        }
        return exceptions.ValidationError(fields)
    return exceptions.ValidationError({"non_field_errors": [str(m) for m in exc.messages]})


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, DjangoValidationError) and getattr(exc, "http_status", None) == 409:
        # A state conflict (e.g. deployments.services.Conflict): the 400 body's shape, with 409.
        state_conflict = _django_validation_to_drf(exc)
        state_conflict.status_code = 409
        exc = state_conflict
    elif isinstance(exc, DjangoValidationError):
        exc = _django_validation_to_drf(exc)
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied(str(exc) or None)
    elif isinstance(exc, Http404):
        exc = exceptions.NotFound(str(exc) or None)
    elif isinstance(exc, (AuditImmutableError, WriteOnceError)):
        conflict = exceptions.APIException(str(exc))
        conflict.status_code = 409
        exc = conflict
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    detail = getattr(exc, "detail", None)
    body: dict[str, Any] = {"status": response.status_code}
    if isinstance(exc, exceptions.ValidationError):
        fields = _flatten(detail)
        if not isinstance(fields, dict):
            fields = {"non_field_errors": fields}
        if response.status_code == 409:
            body["code"] = "conflict"
            body["message"] = " ".join(_messages(fields))
        else:
            body["code"] = "invalid"
            body["message"] = "Some fields are not valid: " + ", ".join(sorted(fields)) + "."
        body["fields"] = fields
    else:
        codes = exc.get_codes() if isinstance(exc, exceptions.APIException) else "error"
        body["code"] = codes if isinstance(codes, str) else "error"
        body["message"] = str(detail) if detail is not None else str(exc)
    response.data = {"error": body}
    return response


class BodyInput(serializers.Serializer):
    """The input of a write: a field the API does not have is refused with HTTP 400 naming it, never ignored
    (a typo like `hyperparameter` must not launch a run with the defaults)."""

    def to_internal_value(self, data: Any) -> Any:
        if hasattr(data, "keys"):
            unknown = sorted(set(data.keys()) - set(self.fields))
            if unknown:
                known = ", ".join(sorted(self.fields))
                raise serializers.ValidationError(
                    {name: [f"unknown field; expected one of: {known}"] for name in unknown}
                )
        return super().to_internal_value(data)
