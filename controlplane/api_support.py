"""What every API endpoint shares: pagination, one error body shape (and its schema), 404s and choice refusals in
the app's own words.

Errors always look like
    {"error": {"status": 400, "code": "invalid", "message": "...", "fields": {"slug": ["..."]}}}
whether they come from a serializer, a service (Django's ValidationError / PermissionDenied) or DRF itself. A
ValidationError whose class says `http_status = 409` (a state conflict) has the same body with status 409 and code
"conflict".
"""

from __future__ import annotations

import logging
import operator
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar, overload

import django_filters
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import Model, QuerySet
from django.http import Http404
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse
from rest_framework import exceptions, pagination, serializers
from rest_framework.permissions import BasePermission
from rest_framework.relations import PKOnlyObject
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from controlplane import permissions
from controlplane.middleware import (
    DATABASE_RETRY_AFTER_SECONDS,
    DATABASE_UNAVAILABLE_MESSAGE,
    close_broken_connections,
    is_database_unavailable,
    report_database_unavailable,
)
from controlplane.models import AuditImmutableError
from lineage.models import WriteOnceError
from workers.errors import BackendError

log = logging.getLogger(__name__)

M = TypeVar("M", bound=Model)


class CanReadApiDocs(BasePermission):
    """The schema follows the same rule as the docs page: signed in, with a role."""

    def has_permission(self, request: Any, view: Any) -> bool:
        return bool(request.user and request.user.is_authenticated) and permissions.has_permission(
            request.user, "apidocs.view"
        )


_SKIP = object()


def _drf_value(field: serializers.Field, instance: Any) -> Any:
    """The field's value as DRF reads it; _SKIP where DRF leaves the field out."""
    try:
        return field.get_attribute(instance)
    except serializers.SkipField:
        return _SKIP


def _null_pk(value: Any) -> bool:
    return isinstance(value, PKOnlyObject) and value.pk is None


class FastRepresentation:
    """A serializer mixin: `to_representation` as DRF's Serializer computes it, in fewer steps a field, for lists of
    hundreds of rows (a page of 500 runs: 27 ms against 8; docs/benchmarks/load.md).

    The answer is DRF's by construction: each field's value is read with one attribute lookup (DRF walks the source
    path and asks of every step whether it is a callable), and converted by the field's own `to_representation`,
    except where that is the identity or `str`/`int` (JSON, read-only, char and integer fields). A value DRF would
    find differently (a callable, a missing attribute with a default, a mapping) is read by DRF's own
    `field.get_attribute`. tests/lineage/test_api_representation.py compares both on varied rows."""

    # (name, getter, convert, field); no getter: the field reads its value its own way (DRF's lookup).
    _fast_plan: list[tuple[str, Callable[[Any], Any] | None, Callable[[Any], Any] | None, serializers.Field]]

    def _make_fast_plan(self) -> list[tuple[str, Callable[[Any], Any] | None, Callable[[Any], Any] | None, Any]]:
        plan = []
        for field in self._readable_fields:  # type: ignore[attr-defined]
            kind = type(field)
            getter: Callable[[Any], Any] | None
            if kind.get_attribute is not serializers.Field.get_attribute:  # a field that reads its value its own way
                getter = None
            elif isinstance(field, serializers.SerializerMethodField) or field.source == "*":
                getter = lambda instance: instance  # noqa: E731 - the field reads the instance
            else:
                getter = operator.attrgetter(".".join(field.source_attrs))
            convert: Callable[[Any], Any] | None
            if isinstance(field, serializers.RelatedField):
                convert = field.to_representation  # its get_attribute (a PKOnlyObject) is DRF's, above
            elif (kind is serializers.JSONField and not field.binary) or kind is serializers.ReadOnlyField:
                convert = None
            elif kind.to_representation is serializers.CharField.to_representation:
                convert = str
            elif kind.to_representation is serializers.IntegerField.to_representation:
                convert = int
            else:
                convert = field.to_representation
            plan.append((field.field_name, getter, convert, field))
        self._fast_plan = plan
        return plan

    def to_representation(self, instance: Any) -> dict[str, Any]:
        if isinstance(instance, Mapping):
            return super().to_representation(instance)  # type: ignore[misc, no-any-return]
        plan = self.__dict__.get("_fast_plan") or self._make_fast_plan()
        answer: dict[str, Any] = {}
        for name, getter, convert, field in plan:
            if getter is None:
                value = _drf_value(field, instance)
            else:
                try:
                    value = getter(instance)
                    if callable(value):
                        raise AttributeError(name)  # DRF may call it (or, a related manager, not): its own lookup
                except Exception:
                    value = _drf_value(field, instance)
            if value is _SKIP:
                continue
            if value is None or _null_pk(value):
                answer[name] = None
            else:
                answer[name] = value if convert is None else convert(value)
        return answer


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


# How long a client should wait before sending again what a transient backend error refused.
BACKEND_RETRY_AFTER_SECONDS = 60


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    backend_error: BackendError | None = None
    database_unavailable = is_database_unavailable(exc)
    if database_unavailable:
        # Met inside DRF (authenticating a token, in the view): the same 503 as controlplane.middleware answers.
        report_database_unavailable(context.get("request"), exc)
        close_broken_connections()
        unavailable = exceptions.APIException(DATABASE_UNAVAILABLE_MESSAGE, code="unavailable")
        unavailable.status_code = 503
        exc = unavailable
    elif isinstance(exc, DjangoValidationError) and getattr(exc, "http_status", None) == 409:
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
    elif isinstance(exc, BackendError):
        # The object store, a training or deploy backend, or AWS could not do it (a full disk, throttling): nothing
        # was recorded; say what failed, and when it may pass if tried again.
        backend_error = exc
        log.warning("backend error answered 503: %s", exc.message)
        unavailable_backend = exceptions.APIException(exc.message, code="backend_unavailable")
        unavailable_backend.status_code = 503
        exc = unavailable_backend
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
    if database_unavailable:
        response["Retry-After"] = str(DATABASE_RETRY_AFTER_SECONDS)
        response["Cache-Control"] = "no-store"
    if backend_error is not None and not backend_error.permanent:
        response["Retry-After"] = str(BACKEND_RETRY_AFTER_SECONDS)
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


@overload
def get_or_404(queryset: type[M], missing: str, **lookup: Any) -> M: ...
@overload
def get_or_404(queryset: QuerySet[Any], missing: str, **lookup: Any) -> Any: ...
def get_or_404(queryset: Any, missing: str, **lookup: Any) -> Any:
    """The object, or HTTP 404 saying in the app's words what is missing (e.g. "there is no approval request 9"),
    not Django's "No ApprovalRequest matches the given query."."""
    try:
        return get_object_or_404(queryset, **lookup)
    except Http404:
        raise Http404(missing) from None


def _one_of(values: Iterable[Any]) -> str:
    names = [str(value) for value in values]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


class Choice(serializers.ChoiceField):
    """A choice whose refusal names the choices, in the services' words: "expected approve or reject, got 'maybe'"
    (DRF's own says only '"maybe" is not a valid choice.')."""

    def to_internal_value(self, data: Any) -> Any:
        try:
            return super().to_internal_value(data)
        except serializers.ValidationError:
            raise serializers.ValidationError(
                f"expected {_one_of(self.choices)}, got {data!r}", code="invalid_choice"
            ) from None


class Flag(serializers.BooleanField):
    """true or false; a refusal says so in the services' words ("expected true or false, got 'yes'")."""

    def to_internal_value(self, data: Any) -> Any:
        try:
            return super().to_internal_value(data)
        except serializers.ValidationError:
            raise serializers.ValidationError(f"expected true or false, got {data!r}", code="invalid") from None


class ServiceCheckedInteger(serializers.IntegerField):
    """A whole number whose range the schema shows (`minimum`, `maximum`) but the service checks, so the API and
    the pages refuse a bad value in the same words ("expected a whole number from 1 to 10, got 0"). The value goes
    to the service as given."""

    def __init__(self, *, min_value: int, max_value: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # Set after DRF's __init__, so that no Min/MaxValueValidator with DRF's wording is attached.
        self.min_value, self.max_value = min_value, max_value

    def validate_empty_values(self, data: Any) -> tuple[bool, Any]:
        if data is None:
            return False, data  # null too is the service's to refuse, in its words
        return super().validate_empty_values(data)

    def to_internal_value(self, data: Any) -> Any:
        return data


class ServiceCheckedNumber(serializers.FloatField):
    """A number (fractions allowed) whose range the schema shows but the service checks, as ServiceCheckedInteger."""

    def __init__(self, *, min_value: float, max_value: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.min_value, self.max_value = min_value, max_value

    def validate_empty_values(self, data: Any) -> tuple[bool, Any]:
        if data is None:
            return False, data
        return super().validate_empty_values(data)

    def to_internal_value(self, data: Any) -> Any:
        return data


def filter_parameters(filterset_class: type[django_filters.FilterSet]) -> list[OpenApiParameter]:
    """The query parameters of a list endpoint, described from the FilterSet the selector applies."""
    parameters = []
    for name, declared in filterset_class.base_filters.items():
        if isinstance(declared, django_filters.ModelChoiceFilter):
            noun = getattr(declared, "extra", {}).get("noun", name)
            key = declared.extra.get("to_field_name") or "id"
            parameters.append(OpenApiParameter(name, str, description=f"The {noun}'s {key}; one that is not is a 400"))
        elif isinstance(declared, django_filters.ChoiceFilter):
            parameters.append(OpenApiParameter(name, str, enum=[value for value, _ in declared.extra["choices"]]))
        elif isinstance(declared, django_filters.DateFilter):
            parameters.append(OpenApiParameter(name, OpenApiTypes.DATE))
        else:
            parameters.append(OpenApiParameter(name, str))
    return parameters


# --- errors in the schema -------------------------------------------------------------------------------------


class ApiErrorDetail(serializers.Serializer):
    status = serializers.IntegerField(help_text="The HTTP status again")
    code = serializers.CharField(help_text="invalid, conflict, not_found, permission_denied, not_authenticated, …")
    message = serializers.CharField(help_text="What went wrong, in a sentence")
    fields = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField()),
        required=False,
        help_text="400 and 409 from a field check: each refused field with what was expected",
    )


class ApiError(serializers.Serializer):
    """The one error body every endpoint answers with (see exception_handler)."""

    error = ApiErrorDetail()


ERROR_DESCRIPTIONS = {
    400: "A field is not valid: `fields` names each one and what was expected.",
    401: "Not signed in: send `Authorization: Token <key>` or a session cookie.",
    403: "Signed in, but your role or the project's membership does not allow this.",
    404: "What the path names does not exist.",
    409: "The object's state does not allow this (`code` is `conflict`; `fields` names why).",
}


def error_responses(*statuses: int, **described: str) -> dict[int, OpenApiResponse]:
    """Schema responses for the given error statuses, each with the one error body. 401 is always included; a
    keyword `e400="…"` (`e` + status) replaces the generic description with what this endpoint means by it."""
    responses = {}
    for code in sorted({401, *statuses}):
        description = described.get(f"e{code}", ERROR_DESCRIPTIONS[code])
        responses[code] = OpenApiResponse(response=ApiError, description=description)
    return responses
