"""Unpacking model archives (SageMaker's model.tar.gz, a serving package) without trusting what is inside.

No Django and nothing heavy: the serving image imports it too.
"""

from __future__ import annotations

import posixpath
import re
import tarfile
from pathlib import Path, PurePosixPath

from workers.errors import BackendError


def extract_model_tar(path: Path, dest_dir: Path) -> Path:
    """Extract the tar at `path` (gzipped or not) into `dest_dir`; returns `dest_dir`.

    Every member is checked before anything is written: absolute paths, `..` components, links that point outside
    `dest_dir` and device or FIFO members make the whole archive refused.
    """
    dest = Path(dest_dir).resolve()
    try:
        with tarfile.open(path, mode="r:*") as archive:
            members = archive.getmembers()
            for member in members:
                problem = _member_problem(member)
                if problem is not None:
                    raise BackendError(f"refusing to extract {path}: member {member.name!r} {problem}", permanent=True)
            dest.mkdir(parents=True, exist_ok=True)
            # The data filter checks again as it writes (and drops set-uid bits and ownership).
            archive.extractall(dest, members=members, filter="data")
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise BackendError(f"cannot extract {path}: {exc}", permanent=True) from exc
    return dest


def _member_problem(member: tarfile.TarInfo) -> str | None:
    name = PurePosixPath(member.name)
    if name.is_absolute() or re.match(r"[A-Za-z]:", member.name):
        return "has an absolute path"
    if ".." in name.parts:
        return "has a '..' component"
    if member.isdev() or not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
        return "is not a regular file, directory or link"
    if member.issym() or member.islnk():
        if posixpath.isabs(member.linkname):
            return f"links to the absolute path {member.linkname!r}"
        # A symlink is relative to its own directory, a hard link to the archive's root.
        base = posixpath.dirname(member.name) if member.issym() else ""
        target = posixpath.normpath(posixpath.join(base, member.linkname))
        if target == ".." or target.startswith("../"):
            return f"links outside the target directory ({member.linkname!r})"
    return None
