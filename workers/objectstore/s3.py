"""The object store on S3: conditional (If-None-Match) writes, SHA-256 in object metadata, presigned downloads
signed for the bucket's own region."""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import tempfile
from collections.abc import Iterator
from typing import IO, Any, BinaryIO, cast

from botocore.client import BaseClient
from botocore.exceptions import BotoCoreError, ClientError

from workers.aws import (
    aws_client,
    aws_errors,
    bucket_region,
    is_aws_endpoint,
    translate_botocore_error,
    translate_client_error,
)
from workers.errors import BackendError, ObjectConflict, ObjectNotFound
from workers.objectstore.base import (
    CHUNK_SIZE,
    CONTENT_ADDRESSED_PREFIX,
    MAX_KEY_BYTES,
    ReadableBytes,
    StoredObject,
    content_addressed_key,
    content_disposition,
    hash_stream,
    key_problem,
    validate_content_addressed_parts,
    validate_expires_in,
    validate_key,
    validate_prefix,
)

logger = logging.getLogger(__name__)

# Bodies up to this size stay in memory and go up in one PutObject; larger ones spill to disk and go multipart.
SPOOL_MAX_BYTES = 8 * 1024 * 1024
PART_SIZE = 8 * 1024 * 1024

# The answers S3 gives a conditional write when another writer created the key first.
_LOST_RACE_CODES = frozenset({"PreconditionFailed", "ConditionalRequestConflict"})
# HEAD responses carry no body, so botocore reports their 404 as the code "404".
_NOT_FOUND_CODES = frozenset({"404", "NoSuchKey", "NotFound"})


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _is_not_found(exc: ClientError) -> bool:
    # By code, not status: a missing bucket is also a 404 (NoSuchBucket) and must not look like a missing key.
    return _error_code(exc) in _NOT_FOUND_CODES


def _spool_and_hash(source: ReadableBytes, spool: tempfile.SpooledTemporaryFile[bytes]) -> tuple[str, int]:
    """Copy `source` into `spool` in CHUNK_SIZE pieces, returning the SHA-256 hex digest and the byte count."""
    digest = hashlib.sha256()
    size = 0
    while chunk := source.read(CHUNK_SIZE):
        digest.update(chunk)
        # Moving to disk before the in-memory buffer outgrows the limit keeps peak memory at the limit.
        if size + len(chunk) > SPOOL_MAX_BYTES:
            spool.rollover()
        spool.write(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


def _b64_sha256(sha256_hex: str) -> str:
    return base64.b64encode(bytes.fromhex(sha256_hex)).decode("ascii")


class S3ObjectStore:
    """Objects under `prefix` in one S3 bucket; S3 itself refuses to overwrite a key (If-None-Match: *).

    `region` is settings.AWS_REGION; presigned URLs are signed for the bucket's own region, wherever that is.
    """

    def __init__(self, bucket: str, prefix: str = "", *, region: str, client: BaseClient | None = None) -> None:
        self.bucket = bucket
        self.prefix = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        self.url = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self.region = region
        self._client: Any = client if client is not None else aws_client("s3", region=region)

    def put(self, key: str, stream: BinaryIO, *, content_type: str = "application/octet-stream") -> StoredObject:
        self._validate_key(key)
        with tempfile.SpooledTemporaryFile(max_size=SPOOL_MAX_BYTES) as spool:
            sha256, size = _spool_and_hash(stream, spool)
            return self._store(key, spool, sha256, size, content_type)

    def put_content_addressed(
        self,
        stream: BinaryIO,
        *,
        prefix: str = CONTENT_ADDRESSED_PREFIX,
        suffix: str = "",
        content_type: str = "application/octet-stream",
    ) -> StoredObject:
        validate_content_addressed_parts(prefix, suffix)
        self._validate_key(content_addressed_key("0" * 64, prefix=prefix, suffix=suffix))
        with tempfile.SpooledTemporaryFile(max_size=SPOOL_MAX_BYTES) as spool:
            sha256, size = _spool_and_hash(stream, spool)
            key = content_addressed_key(sha256, prefix=prefix, suffix=suffix)
            return self._store(key, spool, sha256, size, content_type)

    def stat(self, key: str) -> StoredObject:
        self._validate_key(key)
        head = self._head(key)
        if head is None:
            raise ObjectNotFound(f"No object is stored under {key!r} in {self.url}.", key=key)
        return self._describe(key, head)

    def exists(self, key: str) -> bool:
        self._validate_key(key)
        return self._head(key) is not None

    def download_url(self, key: str, *, expires_in: int = 3600, filename: str | None = None) -> str:
        self._validate_key(key)
        validate_expires_in(expires_in)
        params = {"Bucket": self.bucket, "Key": self._full_key(key)}
        if filename:
            params["ResponseContentDisposition"] = content_disposition(filename)
        with aws_errors(f"create a download link for {self._uri(key)}"):
            return str(self._signing_client().generate_presigned_url("get_object", Params=params, ExpiresIn=expires_in))

    def open(self, key: str) -> BinaryIO:
        self._validate_key(key)
        try:
            response = self._client.get_object(Bucket=self.bucket, Key=self._full_key(key))
        except ClientError as exc:
            if _is_not_found(exc):
                raise ObjectNotFound(f"No object is stored under {key!r} in {self.url}.", key=key) from exc
            raise translate_client_error(exc, action=f"read {self._uri(key)}") from exc
        except BotoCoreError as exc:
            raise translate_botocore_error(exc, action=f"read {self._uri(key)}") from exc
        raw = _TranslatingReader(response["Body"], action=f"read {self._uri(key)}")
        return cast(BinaryIO, io.BufferedReader(raw, buffer_size=CHUNK_SIZE))

    def list(self, prefix: str) -> Iterator[StoredObject]:
        validate_prefix(prefix)
        paginator = self._client.get_paginator("list_objects_v2")
        with aws_errors(f"list {self.url} under {prefix!r}"):
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self._full_key(prefix)):
                for item in page.get("Contents", []):
                    key = str(item["Key"])[len(self.prefix) :]
                    # Keys written by other tools (e.g. console folder markers) cannot name our objects.
                    if key_problem(key) is not None:
                        continue
                    head = self._head(key)
                    if head is not None:
                        yield self._describe(key, head)

    def _signing_client(self) -> Any:
        """A client of the bucket's own region: a URL signed for another region is refused by S3."""
        region = bucket_region(self._client, self.bucket, fallback=self.region)
        if region == self._client.meta.region_name:
            return self._client
        endpoint = self._client.meta.endpoint_url
        # AWS's own endpoint is the region's; an S3-compatible store keeps its one endpoint.
        return aws_client("s3", region=region, endpoint_url=None if is_aws_endpoint(endpoint) else endpoint)

    def _validate_key(self, key: str) -> None:
        validate_key(key)
        if len(self._full_key(key).encode("utf-8")) > MAX_KEY_BYTES:
            raise ValueError(
                f"Invalid object key {key!r}: with the store prefix {self.prefix!r} it is longer than "
                f"{MAX_KEY_BYTES} bytes."
            )

    def _full_key(self, key: str) -> str:
        return f"{self.prefix}{key}"

    def _uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._full_key(key)}"

    def _head(self, key: str) -> dict[str, Any] | None:
        try:
            return cast(dict[str, Any], self._client.head_object(Bucket=self.bucket, Key=self._full_key(key)))
        except ClientError as exc:
            if _is_not_found(exc):
                return None
            raise translate_client_error(exc, action=f"look up {self._uri(key)}") from exc
        except BotoCoreError as exc:
            raise translate_botocore_error(exc, action=f"look up {self._uri(key)}") from exc

    def _describe(self, key: str, head: dict[str, Any]) -> StoredObject:
        sha256 = head.get("Metadata", {}).get("sha256")
        size = int(head["ContentLength"])
        if not sha256:
            # Objects written by other tools carry no hash, so read them once to learn it.
            with self.open(key) as body:
                sha256, size = hash_stream(body)
        return StoredObject(key=key, sha256=str(sha256), size=size, uri=self._uri(key), created=False)

    def _store(self, key: str, spool: IO[bytes], sha256: str, size: int, content_type: str) -> StoredObject:
        head = self._head(key)
        if head is not None:
            return self._compare_existing(key, head, sha256)
        return self._write_new(key, spool, sha256, size, content_type)

    def _write_new(self, key: str, spool: IO[bytes], sha256: str, size: int, content_type: str) -> StoredObject:
        """Upload with If-None-Match: *, so S3 refuses if another writer created the key since we looked."""
        try:
            if size <= PART_SIZE:
                spool.seek(0)
                self._client.put_object(
                    Bucket=self.bucket,
                    Key=self._full_key(key),
                    Body=spool,
                    ContentLength=size,
                    ContentType=content_type,
                    Metadata={"sha256": sha256},
                    ChecksumSHA256=_b64_sha256(sha256),
                    IfNoneMatch="*",
                )
            else:
                self._multipart_upload(key, spool, sha256, size, content_type)
        except ClientError as exc:
            if _error_code(exc) in _LOST_RACE_CODES:
                return self._after_lost_race(key, sha256, exc)
            raise translate_client_error(exc, action=f"upload {self._uri(key)}") from exc
        except BotoCoreError as exc:
            raise translate_botocore_error(exc, action=f"upload {self._uri(key)}") from exc
        return StoredObject(key=key, sha256=sha256, size=size, uri=self._uri(key), created=True)

    def _multipart_upload(self, key: str, spool: IO[bytes], sha256: str, size: int, content_type: str) -> None:
        full_key = self._full_key(key)
        upload = self._client.create_multipart_upload(
            Bucket=self.bucket,
            Key=full_key,
            ContentType=content_type,
            Metadata={"sha256": sha256},
            ChecksumAlgorithm="SHA256",
        )
        upload_id = upload["UploadId"]
        try:
            parts = []
            for number, offset in enumerate(range(0, size, PART_SIZE), start=1):
                part = _FileSlice(spool, offset, min(PART_SIZE, size - offset))
                part_sha256, _ = hash_stream(part)
                part.seek(0)
                response = self._client.upload_part(
                    Bucket=self.bucket,
                    Key=full_key,
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=part,
                    ContentLength=part.length,
                    ChecksumSHA256=_b64_sha256(part_sha256),
                )
                parts.append(
                    {"PartNumber": number, "ETag": response["ETag"], "ChecksumSHA256": _b64_sha256(part_sha256)}
                )
            self._client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=full_key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
                IfNoneMatch="*",
            )
        except BaseException:
            self._abort_multipart_upload(full_key, upload_id)
            raise

    def _abort_multipart_upload(self, full_key: str, upload_id: str) -> None:
        """Discard the parts of a failed upload; if even that fails, a bucket lifecycle rule must clean up."""
        try:
            self._client.abort_multipart_upload(Bucket=self.bucket, Key=full_key, UploadId=upload_id)
        except (ClientError, BotoCoreError):
            logger.warning("Could not abort multipart upload %s of s3://%s/%s", upload_id, self.bucket, full_key)

    def _after_lost_race(self, key: str, sha256: str, exc: ClientError) -> StoredObject:
        head = self._head(key)
        if head is None:
            # ConditionalRequestConflict: the other upload has not finished, so its outcome is still unknown.
            raise BackendError(
                f"Could not upload {self._uri(key)}: another upload to the same key is in progress; try again.",
                permanent=False,
            ) from exc
        return self._compare_existing(key, head, sha256)

    def _compare_existing(self, key: str, head: dict[str, Any], sha256: str) -> StoredObject:
        existing = self._describe(key, head)
        if existing.sha256 != sha256:
            raise ObjectConflict(
                f"Object {key!r} already exists in {self.url} with different content; objects are write-once, "
                "so store the new content under a new key.",
                key=key,
            )
        return existing


class _FileSlice(io.RawIOBase):
    """A read-only window onto part of a file, so a multipart part streams from disk instead of memory."""

    def __init__(self, file: IO[bytes], offset: int, length: int) -> None:
        super().__init__()
        self._file = file
        self._offset = offset
        self.length = length
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self.length}[whence]
        self._position = min(max(base + offset, 0), self.length)
        return self._position

    def read(self, size: int | None = -1) -> bytes:
        remaining = self.length - self._position
        if size is None or size < 0 or size > remaining:
            size = remaining
        if size == 0:
            return b""
        # The spool file is shared by every slice, so position it on each read.
        self._file.seek(self._offset + self._position)
        data = self._file.read(size)
        self._position += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


class _TranslatingReader(io.RawIOBase):
    """An S3 response body whose read errors surface as BackendError, like every other AWS failure."""

    def __init__(self, body: Any, *, action: str) -> None:
        super().__init__()
        self._body = body
        self._action = action

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        with aws_errors(self._action):
            data = self._body.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._body.close()
        super().close()


# --- direct multipart uploads from a browser --------------------------------------------------
# S3's limits for one multipart upload (AWS "Amazon S3 multipart upload limits").
MULTIPART_MIN_PART_BYTES = 5 * 1024 * 1024
MULTIPART_MAX_PART_BYTES = 5 * 1024 * 1024 * 1024
MULTIPART_MAX_PARTS = 10_000
# Big enough that a 1 GB file is 60 requests, small enough that a lost part on a slow link costs seconds.
DIRECT_UPLOAD_PART_BYTES = 16 * 1024 * 1024
_MIB = 1024 * 1024


def multipart_part_size(total_bytes: int, *, preferred: int | None = None) -> int:
    """The part size for `total_bytes` within S3's limits: `preferred` (default DIRECT_UPLOAD_PART_BYTES), grown in
    whole MiB to stay within 10,000 parts."""
    if total_bytes < 1:
        raise ValueError(f"expected at least 1 byte, got {total_bytes}")
    needed = -(-total_bytes // MULTIPART_MAX_PARTS)  # ceiling division
    wanted = DIRECT_UPLOAD_PART_BYTES if preferred is None else preferred
    size = max(wanted, MULTIPART_MIN_PART_BYTES, -(-needed // _MIB) * _MIB)
    if size > MULTIPART_MAX_PART_BYTES:
        raise ValueError(
            f"{total_bytes} bytes need parts over S3's {MULTIPART_MAX_PART_BYTES} byte limit "
            f"at {MULTIPART_MAX_PARTS} parts"
        )
    return size


def multipart_part_count(total_bytes: int, part_size: int) -> int:
    return max(1, -(-total_bytes // part_size))


def multipart_presign_create(store: S3ObjectStore, key: str, *, expires_in: int = 3600) -> str:
    """A URL the browser POSTs to (CreateMultipartUpload) for `key`; presigning is local signing, no request."""
    store._validate_key(key)
    validate_expires_in(expires_in)
    params = {"Bucket": store.bucket, "Key": store._full_key(key)}
    with aws_errors(f"sign the start of an upload to {store._uri(key)}"):
        return str(store._client.generate_presigned_url("create_multipart_upload", Params=params, ExpiresIn=expires_in))


def multipart_presign_part(
    store: S3ObjectStore, key: str, *, upload_id: str, part_number: int, expires_in: int = 3600
) -> str:
    """A URL the browser PUTs one part to (UploadPart); local signing, no request."""
    store._validate_key(key)
    validate_expires_in(expires_in)
    if not 1 <= part_number <= MULTIPART_MAX_PARTS:
        raise ValueError(f"part numbers run from 1 to {MULTIPART_MAX_PARTS}, got {part_number}")
    params = {"Bucket": store.bucket, "Key": store._full_key(key), "UploadId": upload_id, "PartNumber": part_number}
    with aws_errors(f"sign part {part_number} of an upload to {store._uri(key)}"):
        return str(store._client.generate_presigned_url("upload_part", Params=params, ExpiresIn=expires_in))


def multipart_presign_complete(store: S3ObjectStore, key: str, *, upload_id: str, expires_in: int = 3600) -> str:
    """A URL the browser POSTs the CompleteMultipartUpload XML (parts and ETags) to; local signing, no request."""
    store._validate_key(key)
    validate_expires_in(expires_in)
    params = {"Bucket": store.bucket, "Key": store._full_key(key), "UploadId": upload_id}
    with aws_errors(f"sign the completion of an upload to {store._uri(key)}"):
        return str(
            store._client.generate_presigned_url("complete_multipart_upload", Params=params, ExpiresIn=expires_in)
        )


def multipart_abort_stale(store: S3ObjectStore, prefix: str, *, initiated_before: Any) -> list[str]:
    """Abort every multipart upload under `prefix` started before `initiated_before` (an aware datetime).

    Returns the keys whose parts were discarded. S3 bills the parts of an unfinished upload until it is aborted.
    """
    validate_prefix(prefix)
    aborted = []
    paginator = store._client.get_paginator("list_multipart_uploads")
    with aws_errors(f"list unfinished uploads in {store.url} under {prefix!r}"):
        for page in paginator.paginate(Bucket=store.bucket, Prefix=store._full_key(prefix)):
            for upload in page.get("Uploads", []):
                if upload["Initiated"] >= initiated_before:
                    continue
                try:
                    store._client.abort_multipart_upload(
                        Bucket=store.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                    )
                except ClientError as exc:
                    # NoSuchUpload: it completed or was aborted since the listing, which is the outcome we want.
                    if _error_code(exc) != "NoSuchUpload":
                        raise
                aborted.append(str(upload["Key"])[len(store.prefix) :])
    return aborted
