"""Refuse an oversized upload while it arrives, instead of spooling gigabytes to disk first."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.files.uploadhandler import FileUploadHandler, StopUpload
from django.http import HttpRequest


class UploadLimitHandler(FileUploadHandler):
    """First in FILE_UPLOAD_HANDLERS: stops the upload once it is over DATASET_MAX_UPLOAD_BYTES.

    The request then carries `upload_too_large` (bytes seen), which the page and the API turn into a field error.
    """

    def handle_raw_input(
        self, input_data: Any, META: Any, content_length: int, boundary: Any, encoding: Any = None
    ) -> None:
        # The body also holds the other form fields and multipart boundaries: allow a little over the limit.
        self.declared_too_large = bool(
            content_length and content_length > settings.DATASET_MAX_UPLOAD_BYTES + 64 * 1024
        )
        self.body_length = content_length  # not content_length: new_file() overwrites that per file

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes:
        # Raised here, inside Django's parse loop, which catches StopUpload (handle_raw_input is outside it).
        if self.declared_too_large:
            self._refuse(self.body_length)
        if start + len(raw_data) > settings.DATASET_MAX_UPLOAD_BYTES:
            self._refuse(start + len(raw_data))
        return raw_data

    def file_complete(self, file_size: int) -> None:
        return None

    def _refuse(self, size: int) -> None:
        if self.request is not None:
            self.request.upload_too_large = size  # type: ignore[attr-defined]
        # connection_reset=False: Django reads and discards the rest, so the browser still gets our answer.
        raise StopUpload(connection_reset=False)


def upload_limit_message(request: HttpRequest) -> str | None:
    size = getattr(request, "upload_too_large", None)
    if size is None:
        return None
    limit = human_bytes(settings.DATASET_MAX_UPLOAD_BYTES)
    return f"the file is over the {limit} limit ({human_bytes(size)} or more were sent); nothing was stored"


def human_bytes(size: int) -> str:
    if size < 10_000:
        return f"{size:,} bytes"
    for unit, scale in (("KB", 1e3), ("MB", 1e6), ("GB", 1e9)):
        if size < scale * 1000 or unit == "GB":
            return f"{size / scale:.1f} {unit}"
    return f"{size} bytes"
