"""The object store interface: write-once, SHA-256 checked storage of named byte streams."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, BinaryIO, Protocol, runtime_checkable
from urllib.parse import quote

CHUNK_SIZE = 1024 * 1024
MAX_KEY_BYTES = 1024
MAX_DOWNLOAD_URL_SECONDS = 7 * 24 * 3600
CONTENT_ADDRESSED_PREFIX = "objects/"


@dataclass(frozen=True)
class StoredObject:
    """An object in the store; `created` is False when it was already there (deduplicated, or read by stat/list)."""

    key: str
    sha256: str
    size: int
    uri: str
    created: bool = True


class ReadableBytes(Protocol):
    """Anything with read(n) -> bytes; the only method the store calls on an input stream."""

    def read(self, size: int = -1, /) -> bytes: ...


@runtime_checkable
class ObjectStore(Protocol):
    """Write-once storage: a key, once written, always holds the same bytes."""

    url: str

    def put(self, key: str, stream: BinaryIO, *, content_type: str = "application/octet-stream") -> StoredObject:
        """Store the stream under `key`; same bytes again gives created=False, different bytes ObjectConflict."""
        ...

    def put_content_addressed(
        self,
        stream: BinaryIO,
        *,
        prefix: str = CONTENT_ADDRESSED_PREFIX,
        suffix: str = "",
        content_type: str = "application/octet-stream",
    ) -> StoredObject:
        """Store the stream at `{prefix}sha256/{hex[:2]}/{hex}{suffix}`, so identical bytes share one object."""
        ...

    def stat(self, key: str) -> StoredObject:
        """Describe the object under `key`, or raise ObjectNotFound."""
        ...

    def exists(self, key: str) -> bool:
        """Whether an object is stored under `key`."""
        ...

    def download_url(self, key: str, *, expires_in: int = 3600, filename: str | None = None) -> str:
        """A URL from which a browser can download the object until it expires."""
        ...

    def open(self, key: str) -> BinaryIO:
        """A stream of the object's bytes (close it when done), or raise ObjectNotFound."""
        ...

    def list(self, prefix: str) -> Iterator[StoredObject]:
        """Every object whose key starts with `prefix`, in key order."""
        ...


def key_problem(key: str) -> str | None:
    """Why `key` cannot name an object, or None when it can."""
    if not key:
        return "it is empty"
    if key.startswith("/"):
        return "it must not start with '/'"
    if "\\" in key:
        return "it must not contain a backslash"
    if any(ord(char) < 32 or ord(char) == 127 for char in key):
        return "it must not contain control characters"
    if len(key.encode("utf-8")) > MAX_KEY_BYTES:
        return f"it is longer than {MAX_KEY_BYTES} bytes"
    for segment in key.split("/"):
        if segment == "":
            return "it must not contain empty path segments ('//' or a trailing '/')"
        if segment in (".", ".."):
            return "it must not contain '.' or '..' path segments"
    return None


def validate_key(key: str) -> None:
    """Raise ValueError naming the key when it cannot name an object."""
    problem = key_problem(key)
    if problem is not None:
        raise ValueError(f"Invalid object key {key!r}: {problem}.")


def validate_prefix(prefix: str) -> None:
    """Raise ValueError naming the prefix unless some valid key could start with it."""
    if prefix == "":
        return
    # Any character completes the last, partial segment; the prefix is valid if that makes a valid key.
    problem = key_problem(f"{prefix}x")
    if problem is not None:
        raise ValueError(f"Invalid key prefix {prefix!r}: {problem}.")


def content_addressed_key(sha256_hex: str, *, prefix: str, suffix: str) -> str:
    """The key under which bytes with this SHA-256 are stored."""
    return f"{prefix}sha256/{sha256_hex[:2]}/{sha256_hex}{suffix}"


def validate_content_addressed_parts(prefix: str, suffix: str) -> None:
    """Raise ValueError before any bytes are read if `prefix` and `suffix` cannot form a valid key."""
    if "/" in suffix:
        raise ValueError(f"Invalid key suffix {suffix!r}: it must not contain '/'.")
    sample = content_addressed_key("0" * 64, prefix=prefix, suffix=suffix)
    problem = key_problem(sample)
    if problem is not None:
        raise ValueError(f"Invalid key prefix {prefix!r} or suffix {suffix!r}: {problem}.")


def validate_expires_in(expires_in: int) -> None:
    """Raise ValueError unless the lifetime fits S3's presigned URL limit of seven days."""
    if not 0 < expires_in <= MAX_DOWNLOAD_URL_SECONDS:
        raise ValueError(
            f"Invalid download URL lifetime {expires_in!r}: expected 1 to {MAX_DOWNLOAD_URL_SECONDS} seconds."
        )


def copy_and_hash(source: ReadableBytes, target: IO[bytes]) -> tuple[str, int]:
    """Copy `source` to `target` in CHUNK_SIZE pieces, returning the SHA-256 hex digest and the byte count."""
    digest = hashlib.sha256()
    size = 0
    while True:
        chunk = source.read(CHUNK_SIZE)
        if not chunk:
            break
        digest.update(chunk)
        target.write(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


def hash_stream(source: ReadableBytes) -> tuple[str, int]:
    """The SHA-256 hex digest and byte count of everything left in `source`, read in CHUNK_SIZE pieces."""
    digest = hashlib.sha256()
    size = 0
    while True:
        chunk = source.read(CHUNK_SIZE)
        if not chunk:
            break
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


def content_disposition(filename: str) -> str:
    """A Content-Disposition header that downloads as `filename`, with an ASCII fallback for old clients."""
    fallback = "".join(char if 32 <= ord(char) < 127 and char not in '"\\/' else "_" for char in filename)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"
