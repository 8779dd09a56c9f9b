"""Direct uploads: on the S3 backend the browser sends a file straight to S3 in parts, never through the portal.

create → part URLs → complete. The portal only signs URLs (local signing, no network call), so no web request
waits on S3 or holds a server thread while bytes arrive:
- `direct_upload_create` checks the project, dataset and size, picks the key (uploads/<random>/<file name>) and
  the part size, and returns a signed ticket with a presigned CreateMultipartUpload URL; the browser POSTs to it
  and reads the UploadId from S3's answer.
- `direct_upload_part_urls` presigns UploadPart for the ticket's key and that UploadId, plus the
  CompleteMultipartUpload URL the browser POSTs the parts' ETags to.
- `direct_upload_complete` queues a DatasetRegistration of the uploaded object: a worker reads, validates,
  hashes and stores it exactly as for any s3:// key (and fails it, saying so, if the upload never completed).
The ticket is signed with the secret key, so the part and complete calls cannot be pointed at another key,
size or dataset. Uploads abandoned half way are aborted by `direct_uploads_abort_stale` (a periodic task).
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core import signing
from django.core.exceptions import ValidationError
from django.utils import timezone

from controlplane import permissions
from controlplane.backends import object_store
from controlplane.uploads import human_bytes
from lineage.models import DatasetRegistration
from lineage.services.datasets import dataset_target
from lineage.services.registrations import dataset_registration_request
from workers.objectstore import S3ObjectStore
from workers.objectstore import s3 as s3_store

UPLOADS_PREFIX = "uploads/"
# A ticket (and the URLs signed for it) lives this long; the sweep aborts uploads older than this.
TICKET_MAX_AGE = timedelta(hours=24)
URL_EXPIRES_IN = 3600
# Part URLs are handed out in batches, so a 10,000-part upload never needs one huge answer.
MAX_PART_URLS_PER_CALL = 100
_SALT = "lineage.direct-upload"
_UNSAFE_NAME_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
_UPLOAD_ID = re.compile(r"[!-~]{1,1024}")  # printable ASCII, no spaces: S3's upload ids are opaque tokens


@dataclass(frozen=True)
class DirectUpload:
    ticket: str
    key: str
    size: int
    part_size: int
    part_count: int
    create_url: str
    expires_at: Any


@dataclass(frozen=True)
class PartUrl:
    part_number: int
    url: str
    offset: int
    size: int


def direct_uploads_enabled() -> bool:
    """Whether uploads go straight to S3: the object store is an S3 bucket."""
    return isinstance(object_store(), S3ObjectStore)


def direct_upload_origin() -> str:
    """Where the browser sends a direct upload's requests (scheme://host[:port]), for the page's connect-src."""
    url = s3_store.multipart_presign_create(_store(), "uploads/origin")
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _store() -> S3ObjectStore:
    store = object_store()
    if not isinstance(store, S3ObjectStore):
        raise ValidationError(
            {
                "non_field_errors": [
                    "direct uploads need the S3 backend (OBJECT_STORE_URL=s3://…); here, upload the file to "
                    "/api/v1/dataset-versions/ instead"
                ]
            }
        )
    return store


def safe_file_name(filename: str) -> str:
    """The file's own name, reduced to characters that need no escaping in an S3 key or a URL."""
    base = (filename or "").replace("\\", "/").rsplit("/", 1)[-1].strip()
    cleaned = _UNSAFE_NAME_CHARS.sub("_", base).strip("._")[-200:]
    return cleaned


def direct_upload_create(
    *,
    actor: Any,
    project: str,
    dataset: str,
    filename: str,
    size: int,
    description: str = "",
    missing_values: Any = None,
) -> DirectUpload:
    """Check everything that can be checked before a byte moves, and sign the start of the upload."""
    permissions.require(actor, "dataset.register")
    store = _store()
    errors: dict[str, list[str]] = {}
    try:
        target = dataset_target(
            project=project, dataset=dataset, description=description, missing_values=missing_values
        )
    except ValidationError as exc:
        errors.update(exc.message_dict)
        target = None
    name = safe_file_name(filename)
    if not name:
        errors["filename"] = ["expected the file's name, e.g. penguins.csv"]
    limit = settings.DATASET_MAX_UPLOAD_BYTES
    if size < 1:
        errors["size"] = ["the file is empty; expected a file of at least 1 byte"]
    elif size > limit:
        errors["size"] = [f"the file is {human_bytes(size)}, over the {human_bytes(limit)} limit; nothing was stored"]
    else:
        try:
            part_size = s3_store.multipart_part_size(size)
        except ValueError as exc:
            errors["size"] = [str(exc)]
    if errors:
        raise ValidationError(errors)
    assert target is not None
    permissions.require(actor, "dataset.register", project=target.project)
    key = f"{UPLOADS_PREFIX}{secrets.token_hex(16)}/{name}"
    part_count = s3_store.multipart_part_count(size, part_size)
    ticket = signing.dumps(
        {
            "key": key,
            "size": size,
            "part_size": part_size,
            "project": target.project.slug,
            "dataset": dataset.strip(),
            "description": description.strip(),
            "missing_values": list(target.missing_values),
            "user": actor.pk,
        },
        salt=_SALT,
        compress=True,
    )
    return DirectUpload(
        ticket=ticket,
        key=key,
        size=size,
        part_size=part_size,
        part_count=part_count,
        create_url=s3_store.multipart_presign_create(store, key, expires_in=URL_EXPIRES_IN),
        expires_at=timezone.now() + TICKET_MAX_AGE,
    )


def _read_ticket(actor: Any, ticket: str) -> dict[str, Any]:
    try:
        body = signing.loads(ticket or "", salt=_SALT, max_age=TICKET_MAX_AGE)
    except signing.SignatureExpired:
        raise ValidationError({"upload": ["this upload is older than 24 hours; start it again"]}) from None
    except signing.BadSignature:
        raise ValidationError({"upload": ["not an upload ticket this portal issued; start the upload again"]}) from None
    if body.get("user") != actor.pk:
        raise ValidationError({"upload": ["this upload was started by another user"]})
    return dict(body)


def _check_upload_id(upload_id: str) -> str:
    upload_id = (upload_id or "").strip()
    if not _UPLOAD_ID.fullmatch(upload_id):
        raise ValidationError({"upload_id": ["expected the UploadId S3 returned when the upload was started"]})
    return upload_id


def direct_upload_part_urls(
    *, actor: Any, ticket: str, upload_id: str, part_numbers: list[int] | None = None
) -> tuple[list[PartUrl], str]:
    """Presigned UploadPart URLs for some parts (default: the first 100), and the CompleteMultipartUpload URL."""
    permissions.require(actor, "dataset.register")
    store = _store()
    body = _read_ticket(actor, ticket)
    # Checked again on each call: the user may have been taken off the project since the upload started.
    permissions.require(actor, "dataset.register", project=body["project"])
    upload_id = _check_upload_id(upload_id)
    size, part_size = body["size"], body["part_size"]
    count = s3_store.multipart_part_count(size, part_size)
    numbers = list(part_numbers) if part_numbers else list(range(1, min(count, MAX_PART_URLS_PER_CALL) + 1))
    if len(numbers) > MAX_PART_URLS_PER_CALL:
        raise ValidationError({"part_numbers": [f"expected at most {MAX_PART_URLS_PER_CALL} part numbers per call"]})
    wrong = [n for n in numbers if not 1 <= n <= count]
    if wrong:
        raise ValidationError({"part_numbers": [f"this upload has parts 1 to {count}; {wrong[0]} is not one of them"]})
    parts = [
        PartUrl(
            part_number=n,
            offset=(n - 1) * part_size,
            size=min(part_size, size - (n - 1) * part_size),
            url=s3_store.multipart_presign_part(
                store, body["key"], upload_id=upload_id, part_number=n, expires_in=URL_EXPIRES_IN
            ),
        )
        for n in numbers
    ]
    complete_url = s3_store.multipart_presign_complete(
        store, body["key"], upload_id=upload_id, expires_in=URL_EXPIRES_IN
    )
    return parts, complete_url


def direct_upload_complete(*, actor: Any, ticket: str) -> DatasetRegistration:
    """The browser completed the upload: register the object as any s3:// key is registered, in a worker."""
    permissions.require(actor, "dataset.register")
    store = _store()
    body = _read_ticket(actor, ticket)
    return dataset_registration_request(
        actor=actor,
        project=body["project"],
        dataset=body["dataset"],
        description=body["description"],
        uri=f"s3://{store.bucket}/{store.prefix}{body['key']}",
        missing_values=body.get("missing_values"),
    )


def direct_uploads_abort_stale(*, older_than: timedelta = TICKET_MAX_AGE) -> list[str]:
    """Abort the multipart uploads under uploads/ that were started before their ticket expired (periodic)."""
    store = object_store()
    if not isinstance(store, S3ObjectStore):
        return []
    return s3_store.multipart_abort_stale(store, UPLOADS_PREFIX, initiated_before=timezone.now() - older_than)
