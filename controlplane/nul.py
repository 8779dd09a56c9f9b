"""PostgreSQL text cannot hold NUL characters: refuse them at the door as bad input, not as a 500 later."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

MESSAGE = "text may not contain NUL characters (\\u0000)"


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(item) for item in value)
    return False


class RejectNulMiddleware:
    """Query strings and form fields (not uploaded files) with a NUL get a 400 naming the field."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        fields = [name for name, values in request.GET.lists() if _has_nul(name) or _has_nul(values)]
        if request.method == "POST" and request.content_type in (
            "application/x-www-form-urlencoded",
            "multipart/form-data",
        ):
            fields += [name for name, values in request.POST.lists() if _has_nul(name) or _has_nul(values)]
        if not fields:
            return self.get_response(request)
        shown = [json.dumps(name)[1:-1] for name in fields]
        if request.path.startswith("/api/"):
            body = {"status": 400, "code": "invalid", "message": MESSAGE, "fields": {name: [MESSAGE] for name in shown}}
            return JsonResponse({"error": body}, status=400)
        return HttpResponseBadRequest(f"{', '.join(shown)}: {MESSAGE}", content_type="text/plain")


class JSONParserWithoutNul(JSONParser):
    def parse(self, stream: Any, media_type: Any = None, parser_context: Any = None) -> Any:
        data = super().parse(stream, media_type, parser_context)
        if _has_nul(data):
            raise ParseError(MESSAGE)
        return data
