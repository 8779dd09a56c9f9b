"""The serving runtime's metrics ingest: `POST /api/v1/ingest/metrics/` (format `controlplane.serving.metrics/1`,
serving/metrics.py).

Not a user's API: no session, no CSRF, no user token. The caller is a serving process; it sends
`Authorization: Bearer <its service's ingest token>` and the payload names the service, so the body is parsed before
the token can be checked: a body over settings.METRICS_INGEST_MAX_BYTES is refused (413) unread, and one nested too
deeply to parse is a 400 naming `body`. A payload is taken whole or not at all: any bad field is HTTP 400 naming it
(`minutes[2].latency_ms_counts`) and nothing is stored. A part sent again (its answer was lost) is recognised by its
`part` id and added once; the answer counts both.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema
from rest_framework import exceptions, serializers
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from controlplane.api_support import ApiError, BodyInput
from controlplane.nul import JSONParserWithoutNul
from monitoring.models import MetricPoint
from monitoring.services.ingest import service_for_token
from monitoring.services.metrics import MinuteCounts, oldest_ingest_minute, record_minutes
from serving.metrics import BUCKETS_MS, FORMAT

MAX_COUNT = 2**53  # beyond this a JSON number is not an exact integer in every client
_REVISION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


class Count(serializers.IntegerField):
    """A whole number ≥ 0 given as a JSON integer (not a string, a boolean or 1.0)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(min_value=0, max_value=MAX_COUNT, **kwargs)

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool) or not isinstance(data, int):
            raise serializers.ValidationError(f"expected a whole number of at least 0, got {data!r}")
        if not 0 <= data <= MAX_COUNT:
            raise serializers.ValidationError(f"expected a whole number from 0 to {MAX_COUNT}, got {data}")
        return data


class Milliseconds(serializers.FloatField):
    def to_internal_value(self, data: Any) -> float:
        if isinstance(data, bool) or not isinstance(data, (int, float)) or not math.isfinite(data) or data < 0:
            raise serializers.ValidationError(f"expected a number of milliseconds of at least 0, got {data!r}")
        return float(data)


class MinuteInput(BodyInput):
    minute = serializers.DateTimeField(help_text="UTC start of the minute, on a whole minute (…T14:05:00Z)")
    part = serializers.CharField(
        max_length=64, help_text="This part's id, the same on every retry: a part is added once"
    )
    requests = Count(help_text="Answers to POST /invocations in this part")
    errors = Count(help_text="5xx answers among them")
    client_errors = Count(help_text="4xx answers among them")
    rows = Count(required=False, default=0, help_text="Rows predicted")
    latency_ms_counts = serializers.ListField(
        child=Count(),
        help_text=f"One count per latency_buckets_ms edge, then one for slower than the last: "
        f"{len(BUCKETS_MS) + 1} counts adding up to requests",
    )
    latency_ms_sum = Milliseconds(required=False, default=0.0, help_text="Sum of the latencies, ms")
    captured_rows = Count(required=False, default=0, help_text="Rows sampled into capture files")
    capture_dropped_rows = Count(required=False, default=0, help_text="Sampled rows dropped (the queue was full)")

    def validate(self, data: dict[str, Any]) -> dict[str, Any]:
        problems: dict[str, list[str]] = {}
        counts = data["latency_ms_counts"]
        if len(counts) != len(BUCKETS_MS) + 1:
            problems["latency_ms_counts"] = [
                f"expected {len(BUCKETS_MS) + 1} counts (one per bucket, then one for slower), got {len(counts)}"
            ]
        elif sum(counts) != data["requests"]:
            problems["latency_ms_counts"] = [f"the counts add up to {sum(counts)}, not requests ({data['requests']})"]
        if data["errors"] + data["client_errors"] > data["requests"]:
            problems["errors"] = [
                f"errors ({data['errors']}) and client_errors ({data['client_errors']}) add up to more than "
                f"requests ({data['requests']})"
            ]
        minute: datetime = data["minute"]
        now = timezone.now()
        if minute.second or minute.microsecond:
            problems["minute"] = [f"expected the start of a minute (seconds :00), got {minute.isoformat()}"]
        elif minute > now + timedelta(seconds=settings.METRICS_INGEST_MAX_FUTURE_SECONDS):
            problems["minute"] = [f"{minute.isoformat()} is ahead of the portal's clock ({now:%Y-%m-%dT%H:%M:%SZ})"]
        elif minute < oldest_ingest_minute(now):
            problems["minute"] = [
                f"{minute.isoformat()} is older than the per-minute rows kept "
                f"({settings.METRICS_ROLLUP_AFTER_DAYS} days): it is not taken"
            ]
        if problems:
            raise serializers.ValidationError(problems)
        data["minute"] = minute.astimezone(UTC)
        return data


class IngestInput(BodyInput):
    format = serializers.CharField(help_text=f"`{FORMAT}`")
    service = serializers.CharField(max_length=40, help_text="The service whose ingest token is sent")
    revision = serializers.CharField(max_length=100, help_text="The serving processes' REVISION (`d<deployment>`)")
    sent_at = serializers.DateTimeField(required=False, help_text="When the process sent it (informational)")
    latency_buckets_ms = serializers.ListField(
        child=serializers.FloatField(), help_text=f"The histogram's upper edges, exactly {list(BUCKETS_MS)}"
    )
    minutes = MinuteInput(many=True, help_text="The minutes (or parts of minutes) since the last send")

    def validate_format(self, value: str) -> str:
        if value != FORMAT:
            raise serializers.ValidationError(f"expected {FORMAT!r}, got {value!r}")
        return value

    def validate_revision(self, value: str) -> str:
        if not _REVISION.fullmatch(value):
            raise serializers.ValidationError(f"expected letters, digits, '.', '_' or '-' (e.g. d12), got {value!r}")
        return value

    def validate_latency_buckets_ms(self, value: list[float]) -> list[float]:
        if [float(edge) for edge in value] != list(BUCKETS_MS):
            raise serializers.ValidationError(f"expected exactly {list(BUCKETS_MS)} (this portal's buckets)")
        return value

    def validate_minutes(self, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        limit = settings.METRICS_INGEST_MAX_MINUTES
        if len(value) > limit:
            raise serializers.ValidationError(f"at most {limit} minutes per payload, got {len(value)}")
        parts = [minute["part"] for minute in value]
        repeated = sorted({part for part in parts if parts.count(part) > 1})
        if repeated:
            raise serializers.ValidationError(f"each part id once per payload; repeated: {', '.join(repeated)}")
        return value


class IngestOutput(serializers.Serializer):
    service = serializers.CharField()
    revision = serializers.CharField()
    minutes = serializers.IntegerField(help_text="Minutes (parts) in the payload")
    taken = serializers.IntegerField(help_text="Parts added now")
    duplicated = serializers.IntegerField(help_text="Parts added before (a resend): not added again")


def _named(errors: Any, prefix: str = "") -> dict[str, list[str]]:
    """DRF's nested errors as one field name each: {"minutes": [{}, {"requests": [...]}]} (or {1: {...}}) →
    "minutes[1].requests"; a list item's own error → "minutes[1]"."""
    named: dict[str, list[str]] = {}
    if isinstance(errors, dict):
        for key, value in errors.items():
            if isinstance(key, int) or str(key).isdigit():  # a list's item (ListField, many=True)
                name = f"{prefix}[{key}]"
            elif key == serializers.api_settings.NON_FIELD_ERRORS_KEY:
                name = prefix
            else:
                name = f"{prefix}.{key}" if prefix else str(key)
            named.update(_named(value, name))
    elif isinstance(errors, list) and errors and all(isinstance(item, dict) for item in errors):
        for index, item in enumerate(errors):
            named.update(_named(item, f"{prefix}[{index}]"))
    elif isinstance(errors, list):
        named.setdefault(prefix or "non_field_errors", []).extend(str(item) for item in errors)
    else:
        named.setdefault(prefix or "non_field_errors", []).append(str(errors))
    return {key: value for key, value in named.items() if value}


class PayloadTooLarge(exceptions.APIException):
    status_code = 413
    default_code = "too_large"


def _body(request: Request) -> Any:
    """The parsed body, read only when its Content-Length is within settings.METRICS_INGEST_MAX_BYTES (Django reads
    no more than Content-Length says, and nothing without it)."""
    limit = settings.METRICS_INGEST_MAX_BYTES
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    if length > limit:
        raise PayloadTooLarge(f"the body is {length} bytes, over the ingest's limit of {limit}: send fewer minutes")
    try:
        return request.data
    except RecursionError:  # the JSON parser (or the NUL check) gave up on a deeply nested body
        raise exceptions.ValidationError(
            {"body": ["nested too deeply: expected the ingest format's JSON object"]}
        ) from None


def _bearer(request: Request) -> str:
    header = request.META.get("HTTP_AUTHORIZATION", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise exceptions.NotAuthenticated("send Authorization: Bearer <the service's ingest token>")
    return token.strip()


class IngestMetricsApi(APIView):
    """The serving runtime reports its per-minute aggregates here (serving.metrics.PortalSink)."""

    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]
    parser_classes = [JSONParserWithoutNul]

    def get_authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="ingest"'

    @extend_schema(
        operation_id="ingest_metrics",
        summary="Report a serving process's per-minute metrics",
        description=(
            f"Format `{FORMAT}` (serving/metrics.py). `Authorization: Bearer <ingest token>`: the token of the "
            "service the payload names (the portal gives it to each revision it starts as SERVING_TOKEN). All or "
            "nothing: a bad field is 400 naming it (e.g. `minutes[2].latency_ms_counts`) and nothing is stored. "
            "Each part is added once: a resend answers 200 and counts it as duplicated. Minutes must be on a whole "
            f"minute, at most METRICS_INGEST_MAX_FUTURE_SECONDS ahead and not older than the per-minute rows kept "
            "(METRICS_ROLLUP_AFTER_DAYS); at most METRICS_INGEST_MAX_MINUTES minutes per payload."
        ),
        tags=["monitoring"],
        auth=[],
        request=IngestInput,
        responses={
            200: IngestOutput,
            400: OpenApiResponse(ApiError, description="A field is not valid: `fields` names each one; nothing stored"),
            401: OpenApiResponse(ApiError, description="No bearer token, an unknown service or the wrong token"),
            413: OpenApiResponse(ApiError, description="The body is over METRICS_INGEST_MAX_BYTES: not read"),
        },
        examples=[
            OpenApiExample(
                "one minute",
                request_only=True,
                value={
                    "format": FORMAT,
                    "service": "bc-staging",
                    "revision": "d12",
                    "sent_at": "2026-12-01T14:06:02Z",
                    "latency_buckets_ms": list(BUCKETS_MS),
                    "minutes": [
                        {
                            "minute": "2026-12-01T14:05:00Z",
                            "part": "9f1c2a7be0d34c55",
                            "requests": 3,
                            "errors": 0,
                            "client_errors": 1,
                            "rows": 9,
                            "latency_ms_counts": [0, 0, 1, 2] + [0] * (len(BUCKETS_MS) - 3),
                            "latency_ms_sum": 4.8,
                            "captured_rows": 1,
                            "capture_dropped_rows": 0,
                        }
                    ],
                },
            )
        ],
    )
    def post(self, request: Request) -> Response:
        token = _bearer(request)
        data = _body(request)
        name = data.get("service") if isinstance(data, dict) else None
        if not isinstance(name, str) or not name:
            raise exceptions.ValidationError({"service": ["required: the name of the service reporting"]})
        service = service_for_token(name, token)
        if service is None:
            raise exceptions.AuthenticationFailed("unknown service, or not its ingest token")
        given = IngestInput(data=data)
        if not given.is_valid():
            raise exceptions.ValidationError(_named(given.errors))
        valid = given.validated_data
        minutes = [
            MinuteCounts(
                start=m["minute"],
                requests=m["requests"],
                errors=m["errors"],
                client_errors=m["client_errors"],
                rows=m["rows"],
                latency_counts=m["latency_ms_counts"],
                latency_sum_ms=m["latency_ms_sum"],
                captured_rows=m["captured_rows"],
                capture_dropped_rows=m["capture_dropped_rows"],
                part=m["part"],
            )
            for m in valid["minutes"]
        ]
        recorded = record_minutes(service, valid["revision"], minutes, source=MetricPoint.Source.PORTAL)
        answer = {
            "service": service.name,
            "revision": valid["revision"],
            "minutes": len(minutes),
            "taken": recorded.taken,
            "duplicated": recorded.duplicated,
        }
        return Response(IngestOutput(answer).data)
