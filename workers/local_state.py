"""What the local backends (training jobs, serving revisions) share to keep all their state in files, so that any
worker process can see and act on what another one started: JSON state files written atomically, a file lock for
read-modify-write, and process identity by pid and start time, so a pid the kernel reused is not taken for ours.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil

# A process's start comes from the kernel's start time in clock ticks (1/100 s): equal within that, same process.
_START_TOLERANCE_SECONDS = 0.005


# --- files -------------------------------------------------------------------------------------------------------


def read_json(path: Path) -> dict[str, Any]:
    with open(path, encoding="utf-8") as handle:
        value = json.load(handle)
    return value if isinstance(value, dict) else {}


def _write_aside(temporary: Path, value: Any, private: bool) -> None:
    """`private`: readable by this user only (0600) from the moment the file exists, e.g. it holds a token."""
    text = json.dumps(value, indent=2, sort_keys=True) + "\n"
    if not private:
        temporary.write_text(text, encoding="utf-8")
        return
    with os.fdopen(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w", encoding="utf-8") as handle:
        os.fchmod(handle.fileno(), 0o600)  # a leftover of a crashed writer keeps its mode through O_CREAT
        handle.write(text)


def write_json(path: Path, value: Any, *, private: bool = False) -> None:
    # Written aside and renamed, so a reader in another process sees the old or the new file, never half of one.
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    _write_aside(temporary, value, private)
    os.replace(temporary, path)


def create_exclusive(path: Path, value: Any, *, private: bool = False) -> bool:
    """Write `path` only if it does not exist yet (atomically: link() fails on an existing name)."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.new")
    _write_aside(temporary, value, private)
    try:
        os.link(temporary, path)
    except FileExistsError:
        return False
    finally:
        temporary.unlink()
    return True


@contextlib.contextmanager
def locked(lock_path: Path) -> Iterator[None]:
    """Serialize read-modify-write of state files across processes (and threads: each holds its own open file)."""
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def tail_lines(path: Path, count: int, *, max_bytes: int) -> list[str]:
    """The last `count` lines of a text file, reading only its last `max_bytes`."""
    try:
        with open(path, "rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(0, size - max_bytes))
            data = handle.read()
    except FileNotFoundError:
        return []
    lines = data.decode("utf-8", errors="replace").split("\n")
    if size > max_bytes:
        lines = lines[1:]  # the first one may be cut
    if lines and lines[-1] == "":
        lines.pop()
    return [line.rstrip("\r") for line in lines[-count:]]


# --- processes ---------------------------------------------------------------------------------------------------


def started_after_boot(pid: int) -> float | None:
    """Seconds from boot to the start of process `pid`, or None when there is no such process."""
    try:
        # create_time alone follows the wall clock (an NTP step moves it); its distance from boot_time does not.
        return psutil.Process(pid).create_time() - psutil.boot_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def running(process: psutil.Process) -> bool:
    try:
        return process.status() not in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def is_recorded_process(pid: int, record: dict[str, Any]) -> bool:
    """Is `pid` still the process `record` describes (its `process_started_after_boot`), not a later one that
    reused its pid?"""
    expected = record.get("process_started_after_boot")
    if expected is None:
        return True
    started = started_after_boot(pid)
    return started is not None and abs(started - float(expected)) <= _START_TOLERANCE_SECONDS


def process_alive(record: dict[str, Any]) -> bool:
    """Is the recorded process (`pid`, `process_started_after_boot`) still running, and still the same process?"""
    pid = record.get("pid")
    if pid is None:
        return False
    try:
        process = psutil.Process(int(pid))
    except psutil.NoSuchProcess:
        return False
    return running(process) and is_recorded_process(int(pid), record)


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes in process group `pgid`."""
    members = []
    for process in psutil.process_iter():
        try:
            if os.getpgid(process.pid) == pgid and running(process):
                members.append(process.pid)
        except (ProcessLookupError, PermissionError):
            continue
    return members


def owns_group(record: dict[str, Any]) -> bool:
    """May we signal the recorded process group (`pgid`)? Not if its leader's pid now belongs to another process."""
    pgid = int(record["pgid"])
    if not group_members(pgid):
        return False
    # While any member lives the kernel does not hand the group id out again; only a reused leader pid is foreign.
    return started_after_boot(pgid) is None or is_recorded_process(pgid, record)


def signal_group(pgid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signum)
