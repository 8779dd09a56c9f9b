"""The object store chosen by OBJECT_STORE_URL: a local directory (file:///…) or an S3 bucket (s3://…)."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

from workers.errors import BackendError, ConfigError, ObjectConflict, ObjectNotFound
from workers.objectstore.base import ObjectStore, StoredObject, key_problem
from workers.objectstore.local import LocalObjectStore, verify_download_signature
from workers.objectstore.s3 import S3ObjectStore

__all__ = [
    "BackendError",
    "ConfigError",
    "LocalObjectStore",
    "ObjectConflict",
    "ObjectNotFound",
    "ObjectStore",
    "S3ObjectStore",
    "StoredObject",
    "open_object_store",
    "validate_object_store_url",
    "verify_download_signature",
]

_ACCEPTED_FORMS = "expected file:///absolute/path or s3://bucket[/prefix]"
_BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_RESERVED_BUCKET_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
_RESERVED_BUCKET_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")


def _config_error(url: str, problem: str) -> ConfigError:
    # repr() keeps the message on one line even when the value holds a newline.
    return ConfigError(f"OBJECT_STORE_URL {url!r} is invalid: {problem}; {_ACCEPTED_FORMS}.")


def _bucket_problem(bucket: str) -> str | None:
    """Why `bucket` is not a valid S3 general purpose bucket name, or None when it is."""
    if not _BUCKET_NAME.fullmatch(bucket):
        return (
            "the bucket name must be 3 to 63 lowercase letters, digits, dots or hyphens, "
            "starting and ending with a letter or digit"
        )
    if ".." in bucket or ".-" in bucket or "-." in bucket:
        return "the bucket name must not contain '..', '.-' or '-.'"
    try:
        ipaddress.IPv4Address(bucket)
    except ValueError:
        pass
    else:
        return "the bucket name must not look like an IP address"
    if bucket.startswith(_RESERVED_BUCKET_PREFIXES) or bucket.endswith(_RESERVED_BUCKET_SUFFIXES):
        return "the bucket name uses a prefix or suffix that S3 reserves"
    return None


def _parse(url: str) -> tuple[str, str, str]:
    """Split a valid OBJECT_STORE_URL into (scheme, location, prefix), or raise ConfigError."""
    if not isinstance(url, str) or not url.strip():
        raise _config_error(str(url), "it is empty")
    if url != url.strip():
        raise _config_error(url, "it has leading or trailing whitespace")
    # urlsplit silently drops tabs and newlines, so reject control characters before parsing.
    if any(ord(char) < 32 or ord(char) == 127 for char in url):
        raise _config_error(url, "it contains control characters")
    parts = urlsplit(url)
    if parts.query or parts.fragment:
        raise _config_error(url, "it must not have a query string or fragment")
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise _config_error(url, "a file URL needs an absolute path after 'file://' (three slashes)")
        path = unquote(parts.path)
        if not path.startswith("/"):
            raise _config_error(url, "the path must be absolute")
        if "\x00" in path:
            raise _config_error(url, "the path must not contain a NUL character")
        return "file", path, ""
    if parts.scheme == "s3":
        bucket = parts.netloc
        if not bucket:
            raise _config_error(url, "the bucket name is missing")
        problem = _bucket_problem(bucket)
        if problem is not None:
            raise _config_error(url, problem)
        prefix = unquote(parts.path).strip("/")
        if prefix:
            prefix_problem = key_problem(prefix)
            if prefix_problem is not None:
                raise _config_error(url, f"the prefix is not a valid key prefix ({prefix_problem})")
        return "s3", bucket, prefix
    if not parts.scheme:
        raise _config_error(url, "it has no scheme")
    raise _config_error(url, f"the scheme {parts.scheme!r} is not supported")


def validate_object_store_url(url: str) -> None:
    """Raise ConfigError (one line, naming OBJECT_STORE_URL) unless `url` is usable; creates nothing."""
    _parse(url)


def open_object_store(
    url: str,
    *,
    download_base_url: str | None = None,
    signing_key: str | None = None,
    region: str | None = None,
) -> ObjectStore:
    """The object store that OBJECT_STORE_URL names; download settings apply to the local store only, `region`
    (settings.AWS_REGION) to S3 only."""
    scheme, location, prefix = _parse(url)
    if scheme == "file":
        return LocalObjectStore(Path(location), download_base_url=download_base_url, signing_key=signing_key)
    if not region:
        raise ConfigError(f"OBJECT_STORE_URL {url} is on S3, so it needs the region (AWS_REGION)")
    return S3ObjectStore(location, prefix, region=region)
