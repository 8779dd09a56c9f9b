"""The object store as a directory on this machine: write-once files with SHA-256 sidecars."""

from __future__ import annotations

import errno
import hashlib
import hmac
import json
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, BinaryIO
from urllib.parse import quote, urlencode

from workers.errors import BackendError, ConfigError, ObjectConflict, ObjectNotFound
from workers.objectstore.base import (
    CONTENT_ADDRESSED_PREFIX,
    StoredObject,
    content_addressed_key,
    copy_and_hash,
    hash_stream,
    validate_content_addressed_parts,
    validate_expires_in,
    validate_key,
    validate_prefix,
)

# Temporary uploads and sidecars live under this top-level folder, so no key may start with it.
RESERVED_DIR = ".objectstore"

# Running out of space or a flaky disk may pass; anything else (permissions, read-only mount) will not.
_TRANSIENT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EAGAIN, errno.EINTR})


def download_signature(signing_key: str, key: str, expires: str, filename: str = "") -> str:
    """The HMAC-SHA256 that authorises downloading `key` as `filename` until the `expires` Unix time."""
    # Keys and expiry times cannot contain a newline, so the joined message is unambiguous.
    message = f"{key}\n{expires}\n{filename}".encode()
    return hmac.new(signing_key.encode(), message, hashlib.sha256).hexdigest()


def verify_download_signature(signing_key: str, key: str, expires: str, signature: str, filename: str = "") -> bool:
    """Whether `signature` authorises this download and has not expired."""
    try:
        expires_at = int(expires)
    except ValueError:
        return False
    if expires_at < time.time():
        return False
    if len(signature) != 64 or any(ch not in "0123456789abcdef" for ch in signature):
        return False  # compare_digest only takes ASCII text
    expected = download_signature(signing_key, key, expires, filename)
    return hmac.compare_digest(expected, signature)


def _os_error(exc: OSError, action: str) -> BackendError:
    return BackendError(f"Could not {action}: {exc.strerror or exc}.", permanent=exc.errno not in _TRANSIENT_ERRNOS)


class LocalObjectStore:
    """A directory holding one read-only file per key, plus SHA-256 sidecars under `.objectstore/meta`."""

    def __init__(self, root: Path, *, download_base_url: str | None = None, signing_key: str | None = None) -> None:
        self.root = Path(root).resolve()
        self.url = self.root.as_uri()
        self.download_base_url = download_base_url.rstrip("/") if download_base_url else None
        self.signing_key = signing_key or None
        self._meta_root = self.root / RESERVED_DIR / "meta"
        self._tmp_root = self.root / RESERVED_DIR / "tmp"
        try:
            self._meta_root.mkdir(parents=True, exist_ok=True)
            self._tmp_root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _os_error(exc, f"create the object store folder {self.root}") from exc

    def put(self, key: str, stream: BinaryIO, *, content_type: str = "application/octet-stream") -> StoredObject:
        self._validate_key(key)
        with self._temp_file() as (tmp, tmp_path):
            sha256, size = self._write_durably(stream, tmp, f"write object {key!r}")
            return self._commit(key, tmp_path, sha256, size, content_type)

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
        with self._temp_file() as (tmp, tmp_path):
            sha256, size = self._write_durably(stream, tmp, "write a content-addressed object")
            key = content_addressed_key(sha256, prefix=prefix, suffix=suffix)
            return self._commit(key, tmp_path, sha256, size, content_type)

    def stat(self, key: str) -> StoredObject:
        self._validate_key(key)
        path = self._path(key)
        if not path.is_file():
            raise ObjectNotFound(f"No object is stored under {key!r}.", key=key)
        return self._describe(key, path)

    def exists(self, key: str) -> bool:
        self._validate_key(key)
        return self._path(key).is_file()

    def download_url(self, key: str, *, expires_in: int = 3600, filename: str | None = None) -> str:
        self._validate_key(key)
        validate_expires_in(expires_in)
        if not self.download_base_url or not self.signing_key:
            raise ConfigError(
                "Download URLs from the local object store need both a download base URL and a signing key."
            )
        expires = str(int(time.time()) + expires_in)
        query = {"expires": expires, "signature": download_signature(self.signing_key, key, expires, filename or "")}
        if filename:
            query["filename"] = filename
        return f"{self.download_base_url}/{quote(key)}?{urlencode(query)}"

    def path_for(self, key: str) -> Path:
        """The file that holds (or would hold) `key`, for callers that serve it directly."""
        self._validate_key(key)
        return self._path(key)

    def open(self, key: str) -> BinaryIO:
        self._validate_key(key)
        try:
            return open(self._path(key), "rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise ObjectNotFound(f"No object is stored under {key!r}.", key=key) from exc
        except OSError as exc:
            raise _os_error(exc, f"read object {key!r}") from exc

    def list(self, prefix: str) -> Iterator[StoredObject]:
        validate_prefix(prefix)
        # Walk only the deepest folder the prefix names; the rest of the prefix filters file names.
        start = self.root / prefix.rpartition("/")[0] if "/" in prefix else self.root
        keys = [key for key in self._walk(start) if key.startswith(prefix)]
        # S3 lists keys in UTF-8 byte order; doing the same keeps both stores interchangeable.
        for key in sorted(keys, key=lambda item: item.encode("utf-8")):
            path = self._path(key)
            if path.is_file():
                yield self._describe(key, path)

    def _validate_key(self, key: str) -> None:
        validate_key(key)
        if key.split("/", 1)[0] == RESERVED_DIR:
            raise ValueError(f"Invalid object key {key!r}: {RESERVED_DIR!r} is reserved by the local object store.")

    def _path(self, key: str) -> Path:
        path = self.root / key
        # Valid keys have no '.' or '..' segments, so the path resolves to itself unless a part is a symlink;
        # refusing every symlink keeps reads and writes inside the root whatever a link points at.
        if path.resolve() != path:
            raise BackendError(
                f"Refusing object {key!r}: part of its path in the local store is a symlink.", permanent=True
            )
        return path

    def _meta_path(self, key: str) -> Path:
        # The sidecar tree mirrors the object tree exactly, so it has the same (valid) shape.
        return self._meta_root / key

    def _uri(self, path: Path) -> str:
        return path.as_uri()

    @contextmanager
    def _temp_file(self) -> Iterator[tuple[IO[bytes], str]]:
        try:
            fd, name = tempfile.mkstemp(dir=self._tmp_root, prefix="upload-")
        except OSError as exc:
            raise _os_error(exc, f"create a temporary file under {self._tmp_root}") from exc
        try:
            with os.fdopen(fd, "wb") as tmp:
                yield tmp, name
        finally:
            Path(name).unlink(missing_ok=True)

    def _write_durably(self, stream: BinaryIO, tmp: IO[bytes], action: str) -> tuple[str, int]:
        """Copy and hash the stream into the temporary file and flush it to disk before it is published."""
        try:
            sha256, size = copy_and_hash(stream, tmp)
            tmp.flush()
            os.fsync(tmp.fileno())
        except OSError as exc:
            raise _os_error(exc, action) from exc
        return sha256, size

    def _commit(self, key: str, tmp_path: str, sha256: str, size: int, content_type: str) -> StoredObject:
        """Publish the finished temporary file under `key` unless the key is taken, atomically."""
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError) as exc:
            raise ObjectConflict(
                f"Cannot store {key!r}: part of its path is already an object in the local store.", key=key
            ) from exc
        except OSError as exc:
            raise _os_error(exc, f"create the folder for {key!r}") from exc
        try:
            os.chmod(tmp_path, 0o444)
            # link() fails if the name exists, so of two concurrent writers exactly one publishes its file.
            os.link(tmp_path, path)
        except FileExistsError:
            return self._compare_existing(key, path, sha256)
        except OSError as exc:
            raise _os_error(exc, f"store object {key!r}") from exc
        self._write_meta(key, sha256, size, content_type)
        _fsync_dir(path.parent)
        return StoredObject(key=key, sha256=sha256, size=size, uri=self._uri(path), created=True)

    def _compare_existing(self, key: str, path: Path, sha256: str) -> StoredObject:
        if not path.is_file():
            raise ObjectConflict(
                f"Cannot store {key!r}: it is already a folder of other objects in the local store.", key=key
            )
        existing = self._describe(key, path)
        if existing.sha256 != sha256:
            raise ObjectConflict(
                f"Object {key!r} already exists with different content; objects are write-once, "
                "so store the new content under a new key.",
                key=key,
            )
        return existing

    def _describe(self, key: str, path: Path) -> StoredObject:
        size = path.stat().st_size
        sha256 = self._read_meta_sha256(key, size)
        if sha256 is None:
            with open(path, "rb") as stored:
                sha256, size = hash_stream(stored)
            self._write_meta(key, sha256, size, None)
        return StoredObject(key=key, sha256=sha256, size=size, uri=self._uri(path), created=False)

    def _read_meta_sha256(self, key: str, size: int) -> str | None:
        try:
            meta = json.loads(self._meta_path(key).read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(meta, dict) or meta.get("size") != size or not isinstance(meta.get("sha256"), str):
            return None
        return str(meta["sha256"])

    def _write_meta(self, key: str, sha256: str, size: int, content_type: str | None) -> None:
        """Record the hash beside the object; losing it only costs a rehash, so failures are not fatal."""
        meta_path = self._meta_path(key)
        try:
            meta_path.parent.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(dir=self._tmp_root, prefix="meta-")
        except OSError:
            return
        try:
            with os.fdopen(fd, "w") as meta_file:
                json.dump({"sha256": sha256, "size": size, "content_type": content_type}, meta_file)
            os.replace(name, meta_path)
        except OSError:
            Path(name).unlink(missing_ok=True)

    def _walk(self, folder: Path) -> Iterator[str]:
        try:
            entries = list(os.scandir(folder))
        except (FileNotFoundError, NotADirectoryError):
            return
        for entry in entries:
            entry_path = Path(entry.path)
            if entry_path.relative_to(self.root).parts[0] == RESERVED_DIR:
                continue
            if entry.is_dir(follow_symlinks=False):
                yield from self._walk(entry_path)
            elif entry.is_file(follow_symlinks=False):
                yield entry_path.relative_to(self.root).as_posix()


def _fsync_dir(folder: Path) -> None:
    """Make a new directory entry durable; some filesystems cannot, which only weakens crash safety."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
