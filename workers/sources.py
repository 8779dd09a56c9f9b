"""Data that lives elsewhere and is registered as a dataset version: one object or file, or a prefix/folder.

A single object is copied (streamed) to a local file so it can be validated, hashed and stored write-once.
A prefix becomes a manifest — key, size, ETag and version id of every object, sorted — whose bytes are hashed,
so the same objects always give the same version and any change gives a new one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote, urlsplit

from botocore.exceptions import ClientError

from workers.aws import aws_client, translate_client_error
from workers.errors import BackendError

CHUNK = 1024 * 1024
MAX_MANIFEST_OBJECTS = 100_000


class SourceError(ValueError):
    """The registered location cannot be used; the message says why in plain words."""


@dataclass(frozen=True)
class ManifestEntry:
    key: str  # s3 key, or the path relative to the registered folder
    size: int
    etag: str  # S3 ETag, or sha256 of a local file
    version_id: str = ""


@dataclass(frozen=True)
class SingleObject:
    path: Path  # a local copy, or the file itself for file://
    size: int
    etag: str = ""
    version_id: str = ""


@dataclass(frozen=True)
class Manifest:
    base_uri: str  # s3://bucket/prefix/ or file:///folder/
    entries: tuple[ManifestEntry, ...]

    def to_bytes(self) -> bytes:
        # Canonical JSON: the same objects always hash to the same version.
        body = {"base_uri": self.base_uri, "objects": [asdict(entry) for entry in self.entries]}
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Manifest:
        body = json.loads(data)
        return cls(base_uri=body["base_uri"], entries=tuple(ManifestEntry(**entry) for entry in body["objects"]))

    @property
    def total_size(self) -> int:
        return sum(entry.size for entry in self.entries)


def is_prefix(uri: str) -> bool:
    return uri.endswith("/")


def check_source_uri(uri: str, *, allowed_roots: list[Path]) -> None:
    """Check the form of a location without touching it (cheap enough for a web request)."""
    if any(ord(ch) < 32 for ch in uri) or "\x00" in unquote(uri):
        raise SourceError("the location contains control characters")
    try:
        _check_source_uri(uri, allowed_roots=allowed_roots)
    except SourceError:
        raise
    except ValueError as exc:  # urlsplit and Path.resolve reject some malformed text with ValueError
        raise SourceError(
            f"not a valid location ({exc}); expected s3://bucket/key, s3://bucket/prefix/ or file:///path"
        ) from None


def _check_source_uri(uri: str, *, allowed_roots: list[Path]) -> None:
    parts = urlsplit(uri)
    if parts.scheme == "s3":
        if not parts.netloc:
            raise SourceError("expected s3://bucket/key or s3://bucket/prefix/ (the bucket is missing)")
        if not parts.path.strip("/"):
            raise SourceError("expected s3://bucket/key or s3://bucket/prefix/ (the key or prefix is missing)")
        return
    if parts.scheme == "file":
        local_path(uri, allowed_roots=allowed_roots)
        return
    raise SourceError("expected s3://bucket/key, s3://bucket/prefix/ or file:///path under an allowed folder")


def local_path(uri: str, *, allowed_roots: list[Path]) -> Path:
    parts = urlsplit(uri)
    if parts.netloc not in ("", "localhost"):
        raise SourceError("expected file:///absolute/path (no host name)")
    path = Path(unquote(parts.path))
    if not path.is_absolute():
        raise SourceError("expected file:///absolute/path")
    resolved = path.resolve()
    roots = [root.resolve() for root in allowed_roots]
    if not any(resolved == root or root in resolved.parents for root in roots):
        shown = ", ".join(str(root) for root in roots) or "none configured (DATASET_FILE_ROOTS)"
        raise SourceError(f"{path} is outside the folders data may be registered from: {shown}")
    return resolved


# --- local files ----------------------------------------------------------------------------


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _local_files(folder: Path) -> Iterator[Path]:
    for directory, subdirs, files in os.walk(folder):
        subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith("."):
                path = Path(directory) / name
                # A link could point anywhere on the machine: only real files inside the folder are data.
                if path.is_symlink() or folder not in path.resolve().parents:
                    raise SourceError(f"{path} is a symbolic link; register the real files instead")
                yield path


def snapshot_local(uri: str, *, allowed_roots: list[Path]) -> SingleObject | Manifest:
    path = local_path(uri, allowed_roots=allowed_roots)
    if path.is_file():
        return SingleObject(path=path, size=path.stat().st_size)
    if path.is_dir():
        entries = []
        for file in _local_files(path):
            entries.append(
                ManifestEntry(key=str(file.relative_to(path)), size=file.stat().st_size, etag=sha256_file(file))
            )
            if len(entries) > MAX_MANIFEST_OBJECTS:
                raise SourceError(f"{path} holds more than {MAX_MANIFEST_OBJECTS} files; register a smaller folder")
        if not entries:
            raise SourceError(f"the folder {path} holds no files")
        return Manifest(base_uri=path.as_uri().rstrip("/") + "/", entries=tuple(entries))
    raise SourceError(f"no file or folder at {path}")


# --- S3 -------------------------------------------------------------------------------------


def split_s3(uri: str) -> tuple[str, str]:
    parts = urlsplit(uri)
    return parts.netloc, unquote(parts.path.lstrip("/"))


def _s3_error(exc: ClientError, uri: str) -> Exception:
    code = exc.response.get("Error", {}).get("Code", "")
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    if code == "NoSuchBucket" or (status == 404 and exc.operation_name == "HeadBucket"):
        return SourceError(f"the bucket of {uri} does not exist")
    if code in ("404", "NoSuchKey", "NotFound") or status == 404:
        return SourceError(f"there is no object at {uri}")
    if code in ("403", "AccessDenied", "Forbidden") or status == 403:
        return SourceError(f"access to {uri} is denied for ControlPlane's AWS role")
    return translate_client_error(exc, action=f"read {uri}")


def snapshot_s3_object(
    uri: str,
    dest: Path,
    *,
    region: str,
    progress: Callable[[float], None] | None = None,
    max_bytes: int | None = None,
) -> SingleObject:
    """Copy one S3 object to `dest`, streaming, pinned to the version read by HeadObject; `region` is
    settings.AWS_REGION (botocore follows a bucket in another region by itself)."""
    bucket, key = split_s3(uri)
    client = aws_client("s3", region=region)
    try:
        try:
            head = client.head_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            # HEAD answers a bare 404 for a missing bucket too; ask the bucket to tell the two apart.
            if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                client.head_bucket(Bucket=bucket)
            raise
        request: dict[str, Any] = {"Bucket": bucket, "Key": key, "IfMatch": head["ETag"]}
        if head.get("VersionId") and head["VersionId"] != "null":
            request["VersionId"] = head["VersionId"]
        body = client.get_object(**request)["Body"]
    except ClientError as exc:
        raise _s3_error(exc, uri) from exc
    size = int(head["ContentLength"])
    if max_bytes is not None and size > max_bytes:
        body.close()
        raise SourceError(
            f"{uri} is {size / 1_000_000:.1f} MB, over the {max_bytes / 1_000_000:.1f} MB limit for one object"
        )
    copied = 0
    with dest.open("wb") as out:
        for chunk in iter(lambda: body.read(CHUNK), b""):
            out.write(chunk)
            copied += len(chunk)
            if progress and size:
                progress(min(copied / size, 1.0))
    if copied != size:
        raise BackendError(f"read {copied} bytes of {uri}, expected {size}", permanent=False)
    version = head.get("VersionId") or ""
    return SingleObject(
        path=dest, size=size, etag=head["ETag"].strip('"'), version_id="" if version == "null" else version
    )


def snapshot_s3_prefix(uri: str, *, region: str) -> Manifest:
    """The objects under an S3 prefix, each pinned by ETag (and version, in a versioned bucket)."""
    bucket, prefix = split_s3(uri)
    client = aws_client("s3", region=region)
    entries: dict[str, ManifestEntry] = {}
    try:
        versioned = client.get_bucket_versioning(Bucket=bucket).get("Status") == "Enabled"
        if versioned:
            pages = client.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix)
            for page in pages:
                for item in page.get("Versions", []):
                    if item.get("IsLatest") and not item["Key"].endswith("/"):
                        entries[item["Key"]] = ManifestEntry(
                            key=item["Key"],
                            size=int(item["Size"]),
                            etag=item["ETag"].strip('"'),
                            version_id=item["VersionId"],
                        )
                _check_count(entries, uri)
        else:
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
                for item in page.get("Contents", []):
                    if not item["Key"].endswith("/"):
                        entries[item["Key"]] = ManifestEntry(
                            key=item["Key"], size=int(item["Size"]), etag=item["ETag"].strip('"')
                        )
                _check_count(entries, uri)
    except ClientError as exc:
        raise _s3_error(exc, uri) from exc
    if not entries:
        raise SourceError(f"there are no objects under {uri}")
    return Manifest(base_uri=f"s3://{bucket}/{prefix}", entries=tuple(entries[key] for key in sorted(entries)))


def _check_count(entries: dict[str, ManifestEntry], uri: str) -> None:
    if len(entries) > MAX_MANIFEST_OBJECTS:
        raise SourceError(f"{uri} holds more than {MAX_MANIFEST_OBJECTS} objects; register a narrower prefix")


def fetch_manifest_entry(
    manifest: Manifest, entry: ManifestEntry, dest: Path, *, allowed_roots: list[Path], region: str
) -> Path:
    """A local copy of one listed object, checked against what the manifest pinned; `region` as for S3 snapshots."""
    if manifest.base_uri.startswith("file://"):
        folder = local_path(manifest.base_uri, allowed_roots=allowed_roots)
        path = folder / entry.key
        if path.is_symlink() or folder not in path.resolve().parents:
            raise SourceError(f"{path} is a symbolic link or outside {folder}; register the real files instead")
        if not path.is_file() or sha256_file(path) != entry.etag:
            raise SourceError(f"{path} changed or vanished since it was registered; register the folder again")
        return path
    bucket, _ = split_s3(manifest.base_uri)
    request: dict[str, Any] = {"Bucket": bucket, "Key": entry.key, "IfMatch": f'"{entry.etag}"'}
    if entry.version_id:
        request["VersionId"] = entry.version_id
    try:
        body = aws_client("s3", region=region).get_object(**request)["Body"]
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code == "PreconditionFailed":
            raise SourceError(
                f"s3://{bucket}/{entry.key} changed since it was registered; register the prefix again"
            ) from exc
        raise _s3_error(exc, f"s3://{bucket}/{entry.key}") from exc
    with dest.open("wb") as out:
        shutil.copyfileobj(body, out, CHUNK)
    return dest


def copy_stream(source: IO[bytes], dest: Path) -> None:
    with dest.open("wb") as out:
        shutil.copyfileobj(source, out, CHUNK)
