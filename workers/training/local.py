"""The local training backend: each job is a subprocess on this machine running the recipe under the SageMaker
script-mode contract, in a work dir laid out like a training container's /opt/ml.

Everything about a job lives in its work dir (job.json, usage.json, logs/output.log, output/failure), so any worker
process can describe or stop a job that another process started. job.json's own `state` records what happened to
the process (starting, started, stopping, stopped, exited); `describe` derives the job's state from all the files.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import psutil

from workers.errors import BackendError
from workers.local_state import (
    create_exclusive,
    group_members,
    locked,
    owns_group,
    process_alive,
    read_json,
    signal_group,
    started_after_boot,
    tail_lines,
    write_json,
)
from workers.recipes import SUPPORT_FILES, validate_parameters
from workers.training.base import (
    JobNotFound,
    JobSpec,
    JobState,
    JobStatus,
    LogChunk,
    encode_hyperparameters,
    parse_metrics,
    parse_progress,
)

# Runs the recipe as its child and records its exit code and resource usage (usage.json, and the exit code in
# job.json), which only a parent can measure (RUSAGE_CHILDREN). argv: work dir, max runtime (s), grace (s), command.
WRAPPER = r"""
import fcntl, json, os, resource, signal, subprocess, sys, time
work_dir, max_runtime, grace = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
began = time.monotonic()
child = subprocess.Popen(sys.argv[4:])
signal.signal(signal.SIGTERM, lambda signum, frame: child.send_signal(signum))
timed_out = False
try:
    child.wait(timeout=max_runtime if max_runtime > 0 else None)
except subprocess.TimeoutExpired:
    timed_out = True
    print("the run exceeded its maximum runtime of %g seconds; stopping it" % max_runtime, flush=True)
    os.killpg(0, signal.SIGTERM)
    try:
        child.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()
used = resource.getrusage(resource.RUSAGE_CHILDREN)
record = {
    "exit_code": child.returncode,
    "timed_out": timed_out,
    "wall_seconds": time.monotonic() - began,
    "cpu_seconds": used.ru_utime + used.ru_stime,
    "peak_memory_mb": used.ru_maxrss / (1024 * 1024 if sys.platform == "darwin" else 1024),
    "ended_at": time.time(),
}
def write(name, value):
    path = os.path.join(work_dir, name)
    with open(path + ".tmp", "w") as handle:
        json.dump(value, handle, indent=2, sort_keys=True)
    os.replace(path + ".tmp", path)
write("usage.json", record)
with open(os.path.join(work_dir, "job.lock"), "a") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    with open(os.path.join(work_dir, "job.json")) as handle:
        job = json.load(handle)
    job.update(exit_code=child.returncode, ended_at=record["ended_at"])
    if job.get("state") not in ("stopping", "stopped"):
        job["state"] = "exited"
    write("job.json", job)
# As when a training container ends: nothing the recipe started outlives it (this ends the wrapper too).
os.killpg(0, signal.SIGKILL)
"""

DISAPPEARED = "the training process disappeared (the machine or worker restarted?)"
NEVER_STARTED = "the training process never started (the worker starting it stopped?)"
# A job with no process after this long was abandoned mid-start.
START_TIMEOUT_SECONDS = 120.0
FAILURE_LOG_LINES = 20
MAX_MESSAGE_CHARS = 4000
_JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}")
_INHERITED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR")
# One read_log call returns at most about this much of the log; the next poll reads on from its cursor.
MAX_LOG_READ_BYTES = 4 * 1024 * 1024
# A failed job's message quotes the end of its log: this much of it is read, never the whole file.
FAILURE_TAIL_BYTES = 64 * 1024


class LocalTrainingBackend:
    """Runs jobs as subprocesses in work dirs directly under `root`; the job id is the work dir's name."""

    def __init__(self, root: Path, *, grace_seconds: float = 10.0, python: str | None = None) -> None:
        self.root = Path(root).resolve()
        self.grace_seconds = grace_seconds
        self.python = python or sys.executable

    # --- the TrainingBackend interface ----------------------------------------------------------------------------

    def job_id_for(self, spec: JobSpec) -> str:
        """The job id is the work dir's name, so it is known before the job exists."""
        work_dir = spec.work_dir if spec.work_dir.is_absolute() else self.root / spec.work_dir
        return work_dir.resolve().name

    def start(self, spec: JobSpec) -> str:
        """Lay out the work dir, start the recipe; the same run id started again returns the existing job id."""
        work_dir = spec.work_dir if spec.work_dir.is_absolute() else self.root / spec.work_dir
        work_dir = work_dir.resolve()
        if work_dir.parent != self.root or not _JOB_ID.fullmatch(work_dir.name):
            raise BackendError(
                f"work dir {work_dir} must be a directory directly under {self.root} named with letters, digits, "
                "'.', '_' or '-'",
                permanent=True,
            )
        job_id = work_dir.name
        hyperparameters = self._check_spec(spec)
        work_dir.mkdir(parents=True, exist_ok=True)
        record: dict[str, Any] = {
            "job_id": job_id,
            "run_id": spec.run_id,
            "state": "starting",
            "created_at": time.time(),
            "recipe": spec.recipe.name,
            "recipe_version": spec.recipe.version,
            "script": spec.recipe.script.name,
            "hyperparameters": hyperparameters,
            "metric_definitions": list(spec.recipe.metric_definitions),
            "instance_type": spec.instance_type,
            "max_runtime_seconds": spec.max_runtime_seconds,
            "tags": dict(spec.tags),
        }
        if not create_exclusive(work_dir / "job.json", record):
            existing = read_json(work_dir / "job.json")
            if existing.get("run_id") == spec.run_id:
                return job_id
            raise BackendError(
                f"work dir {work_dir} already holds job {job_id} of run {existing.get('run_id')}", permanent=True
            )
        self._lay_out(work_dir, spec, hyperparameters)
        with locked(work_dir / "job.lock"):
            record = read_json(work_dir / "job.json")
            if record.get("stop_requested_at"):
                record.update(state="stopped", stopped_at=time.time())
                write_json(work_dir / "job.json", record)
                return job_id
            process = self._spawn(work_dir, spec, hyperparameters)
            record.update(
                state="started",
                pid=process.pid,
                pgid=process.pid,
                process_started_after_boot=started_after_boot(process.pid),
                started_at=time.time(),
            )
            write_json(work_dir / "job.json", record)
        # Reap the wrapper when it exits, so it does not linger as a zombie of a long-lived worker.
        threading.Thread(target=process.wait, name=f"reap-{job_id}", daemon=True).start()
        return job_id

    def describe(self, job_id: str) -> JobStatus:
        """Read the job's files (the log only for a failed job's message); never changes them.

        `metrics` is always empty: the series come from read_log, which reads each line once.
        """
        work_dir = self._work_dir(job_id)
        record = read_json(work_dir / "job.json")
        usage_record = read_json(work_dir / "usage.json") if (work_dir / "usage.json").exists() else None
        state, message = self._state(work_dir, record, usage_record)
        succeeded = state == "succeeded"
        return JobStatus(
            state=state,
            message=message,
            metrics={},
            model_dir=work_dir / "model" if succeeded else None,
            output_dir=work_dir / "output" / "data" if succeeded else None,
            usage=self._usage(record, usage_record),
        )

    def stop(self, job_id: str) -> None:
        """SIGTERM the job's process group, SIGKILL it after the grace period, and record the job as stopped."""
        work_dir = self._work_dir(job_id)
        with locked(work_dir / "job.lock"):
            record = read_json(work_dir / "job.json")
            if (work_dir / "usage.json").exists() or record.get("state") == "stopped":
                return
            if record.get("pid") is not None and not process_alive(record) and not owns_group(record):
                # It already ended without a trace (or its pid is another program's now): describe reports it as
                # disappeared.
                return
            record.setdefault("stop_requested_at", time.time())
            record["state"] = "stopping"
            write_json(work_dir / "job.json", record)
        if record.get("pid") is not None and owns_group(record):
            pgid = int(record["pgid"])
            signal_group(pgid, signal.SIGTERM)
            deadline = time.monotonic() + self.grace_seconds
            while group_members(pgid) and time.monotonic() < deadline:
                time.sleep(0.05)
            members = group_members(pgid)
            if members:
                # SIGKILL leaves no usage.json behind, so keep what /proc says the job used up to now.
                record["last_usage"] = _measure(members)
                signal_group(pgid, signal.SIGKILL)
                deadline = time.monotonic() + 5.0
                while group_members(pgid) and time.monotonic() < deadline:
                    time.sleep(0.05)
        with locked(work_dir / "job.lock"):
            latest = read_json(work_dir / "job.json")
            if "last_usage" in record:
                latest["last_usage"] = record["last_usage"]
            latest.update(state="stopped", stopped_at=time.time())
            write_json(work_dir / "job.json", latest)

    def read_log(
        self, job_id: str, *, cursor: Mapping[str, Any] | None, metric_definitions: Sequence[Mapping[str, str]]
    ) -> LogChunk:
        """Complete log lines after the cursor's byte offset (the unterminated last line too once the job has ended).

        The cursor is {"offset": bytes consumed}; metrics and progress are parsed from the returned lines only.
        """
        work_dir = self._work_dir(job_id)
        offset = _cursor_offset(cursor)
        record = read_json(work_dir / "job.json")
        # Decided before reading: once the job has ended nothing more is written, so a last partial line is whole.
        # A job with no pid yet may be starting: its process can be running before the pid is recorded.
        ended = record.get("pid") is not None and not process_alive(record)
        finished = (work_dir / "usage.json").exists() or ended or record.get("state") == "stopped"
        data = _read_from(work_dir / "logs" / "output.log", offset)
        end = data.rfind(b"\n") + 1
        if finished:
            end = len(data)
        raw_lines = data[:end].split(b"\n")
        if raw_lines and raw_lines[-1] == b"":
            raw_lines.pop()
        lines = [line.decode("utf-8", errors="replace").rstrip("\r") for line in raw_lines]
        return LogChunk(
            lines=lines,
            cursor={"offset": offset + end},
            metrics=parse_metrics(lines, metric_definitions),
            progress=parse_progress(lines),
        )

    # --- helpers ---------------------------------------------------------------------------------------------------

    def _check_spec(self, spec: JobSpec) -> dict[str, Any]:
        recipe = spec.recipe
        problems = []
        cleaned, errors = validate_parameters(recipe, spec.hyperparameters)
        problems += [f"hyperparameter {name}: {message}" for name, message in errors.items()]
        names: set[tuple[str, str]] = set()
        for item in spec.inputs:
            if item.channel not in recipe.channels:
                problems.append(
                    f"input {item.filename!r}: recipe {recipe.name} has no channel {item.channel!r} "
                    f"(channels: {', '.join(recipe.channels) or 'none'})"
                )
            if item.filename in ("", ".", "..") or "/" in item.filename or "\\" in item.filename:
                problems.append(f"input file name {item.filename!r} must be a plain file name")
            if (item.channel, item.filename) in names:
                problems.append(f"channel {item.channel!r} has two inputs named {item.filename!r}")
            names.add((item.channel, item.filename))
            if not item.path.is_file():
                problems.append(f"input {item.filename!r}: {item.path} is not a file")
        given = {item.channel for item in spec.inputs}
        for channel in recipe.channels:
            if channel not in recipe.optional_channels and channel not in given:
                problems.append(f"channel {channel!r} needs at least one input file")
        if spec.max_runtime_seconds <= 0:
            problems.append("max_runtime_seconds must be a positive whole number of seconds")
        if problems:
            raise BackendError(f"cannot start run {spec.run_id}: " + "; ".join(problems), permanent=True)
        return cleaned

    def _lay_out(self, work_dir: Path, spec: JobSpec, hyperparameters: dict[str, Any]) -> None:
        config = work_dir / "input" / "config"
        for directory in (
            config,
            work_dir / "model",
            work_dir / "output" / "data",
            work_dir / "code",
            work_dir / "logs",
        ):
            directory.mkdir(parents=True, exist_ok=True)
        for channel in spec.recipe.channels:
            if any(item.channel == channel for item in spec.inputs):
                (work_dir / "input" / "data" / channel).mkdir(parents=True, exist_ok=True)
        for item in spec.inputs:
            # A copy, not a link: a recipe writing to its input must not change the stored dataset version.
            shutil.copyfile(item.path, work_dir / "input" / "data" / item.channel / item.filename)
        write_json(config / "hyperparameters.json", encode_hyperparameters(hyperparameters))
        channels = sorted({item.channel for item in spec.inputs})
        write_json(config / "inputdataconfig.json", {channel: {"TrainingInputMode": "File"} for channel in channels})
        write_json(config / "resourceconfig.json", {"current_host": "algo-1", "hosts": ["algo-1"]})
        shutil.copyfile(spec.recipe.script, work_dir / "code" / spec.recipe.script.name)
        for support in SUPPORT_FILES:
            shutil.copyfile(support, work_dir / "code" / support.name)

    def _spawn(self, work_dir: Path, spec: JobSpec, hyperparameters: dict[str, Any]) -> subprocess.Popen[bytes]:
        channels = sorted({item.channel for item in spec.inputs})
        env = {name: os.environ[name] for name in _INHERITED_ENV if name in os.environ}
        env.update(
            {
                "SM_HPS": json.dumps({k: v for k, v in hyperparameters.items() if v is not None}),
                "SM_CHANNELS": json.dumps(channels),
                "SM_MODEL_DIR": str(work_dir / "model"),
                "SM_OUTPUT_DATA_DIR": str(work_dir / "output" / "data"),
                "SM_OUTPUT_DIR": str(work_dir / "output"),
                "SM_INPUT_DIR": str(work_dir / "input"),
                "SM_INPUT_CONFIG_DIR": str(work_dir / "input" / "config"),
                "SM_MODULE_DIR": str(work_dir / "code"),
                "SM_USER_ENTRY_POINT": spec.recipe.script.name,
                "SM_CURRENT_HOST": "algo-1",
                "SM_HOSTS": json.dumps(["algo-1"]),
                "SM_NUM_CPUS": str(os.cpu_count() or 1),
                # Fixed hashing so set and dict ordering, and thus results, repeat from run to run.
                "PYTHONHASHSEED": "0",
                "PYTHONUNBUFFERED": "1",
                "PYTHONDONTWRITEBYTECODE": "1",
            }
        )
        for channel in channels:
            env[f"SM_CHANNEL_{channel.upper()}"] = str(work_dir / "input" / "data" / channel)
        for name, value in hyperparameters.items():
            if value is not None:
                # As the training toolkit sets them: text as it is, anything else as compact sorted JSON.
                env[f"SM_HP_{name.upper()}"] = (
                    value if isinstance(value, str) else json.dumps(value, sort_keys=True, separators=(",", ":"))
                )
        command = [
            self.python,
            "-c",
            WRAPPER,
            str(work_dir),
            str(spec.max_runtime_seconds),
            str(self.grace_seconds),
            self.python,
            str(work_dir / "code" / spec.recipe.script.name),
        ]
        with open(work_dir / "logs" / "output.log", "ab") as log:
            try:
                return subprocess.Popen(
                    command,
                    cwd=work_dir / "code",
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    close_fds=True,
                )
            except OSError as exc:
                raise BackendError(f"cannot start {self.python}: {exc}", permanent=True) from exc

    def _work_dir(self, job_id: str) -> Path:
        work_dir = self.root / job_id
        if not _JOB_ID.fullmatch(job_id) or not (work_dir / "job.json").is_file():
            raise JobNotFound(f"no training job {job_id!r} under {self.root}")
        return work_dir

    def _state(self, work_dir: Path, record: dict[str, Any], usage: dict[str, Any] | None) -> tuple[JobState, str]:
        stop_requested = bool(record.get("stop_requested_at"))
        if record.get("state") == "stopped":
            return "stopped", "stopped on request"
        if usage is not None:
            if stop_requested:
                return "stopped", "stopped on request"
            if usage.get("timed_out"):
                limit = record.get("max_runtime_seconds")
                return "failed", f"the run exceeded its maximum runtime of {limit} seconds and was stopped"
            if usage.get("exit_code") == 0:
                return "succeeded", ""
            return "failed", _failure_message(work_dir, usage.get("exit_code"))
        if record.get("pid") is None:
            if time.time() - float(record.get("created_at", 0)) > START_TIMEOUT_SECONDS:
                return "failed", NEVER_STARTED
            return "starting", ""
        if process_alive(record):
            return ("stopping", "stopping on request") if stop_requested else ("running", "")
        if stop_requested:
            if group_members(int(record["pgid"])):
                return "stopping", "stopping on request"
            return "stopped", "stopped on request"
        return "failed", DISAPPEARED

    def _usage(self, record: dict[str, Any], usage: dict[str, Any] | None) -> dict[str, float | None]:
        if usage is not None:
            return {key: usage.get(key) for key in ("wall_seconds", "cpu_seconds", "peak_memory_mb")}
        started = record.get("started_at")
        if started is None:
            return {"wall_seconds": None, "cpu_seconds": None, "peak_memory_mb": None}
        ended = record.get("stopped_at")
        measured: dict[str, float | None] = {"cpu_seconds": None, "peak_memory_mb": None}
        if record.get("last_usage"):
            measured.update(record["last_usage"])
        elif ended is None and process_alive(record):
            measured.update(_measure(group_members(int(record["pgid"]))))
        wall = (float(ended) if ended is not None else time.time()) - float(started)
        return {"wall_seconds": wall, **measured}


# --- logs --------------------------------------------------------------------------------------------------------


def _cursor_offset(cursor: Mapping[str, Any] | None) -> int:
    if cursor is None:
        return 0
    offset = cursor.get("offset", 0)
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise BackendError(f"log cursor offset must be a whole number of bytes >= 0, got {offset!r}", permanent=True)
    return offset


def _read_from(path: Path, offset: int) -> bytes:
    """About MAX_LOG_READ_BYTES from `offset`, extended to the end of the line it stops in."""
    try:
        with open(path, "rb") as handle:
            handle.seek(offset)
            data = handle.read(MAX_LOG_READ_BYTES)
            if len(data) == MAX_LOG_READ_BYTES:
                # One very long line must still come back whole: read on to its end.
                rest = handle.readline()
                data += rest
    except FileNotFoundError:
        return b""
    return data


def _log_tail(work_dir: Path, count: int) -> list[str]:
    """The last `count` lines of the job's log, reading only its last FAILURE_TAIL_BYTES."""
    return tail_lines(work_dir / "logs" / "output.log", count, max_bytes=FAILURE_TAIL_BYTES)


def _failure_message(work_dir: Path, exit_code: int | None) -> str:
    failure = work_dir / "output" / "failure"
    if failure.is_file():
        text = failure.read_text(encoding="utf-8", errors="replace").strip()
        if text:
            return text[:MAX_MESSAGE_CHARS]
    if exit_code is not None and exit_code < 0:
        try:
            name = signal.Signals(-exit_code).name
        except ValueError:
            name = f"signal {-exit_code}"
        cause = f"the recipe was killed by {name}" + (" (out of memory?)" if name == "SIGKILL" else "")
    else:
        cause = f"the recipe exited with code {exit_code}"
    tail = "\n".join(_log_tail(work_dir, FAILURE_LOG_LINES))
    message = f"{cause}; last log lines:\n{tail}" if tail else cause
    return message[-MAX_MESSAGE_CHARS:]


# --- processes ---------------------------------------------------------------------------------------------------


def _peak_rss_kb(pid: int) -> int | None:
    # psutil reports the current resident set only; Linux keeps the peak (VmHWM) in the process's status file.
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return None


def _measure(pids: list[int]) -> dict[str, float | None]:
    """CPU seconds (summed) and peak resident memory (MB, the largest process's) of the running processes."""
    cpu = 0.0
    peak_kb = 0
    for pid in pids:
        try:
            process = psutil.Process(pid)
            with process.oneshot():
                times = process.cpu_times()
                resident_kb = process.memory_info().rss // 1024
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        cpu += times.user + times.system
        peak_kb = max(peak_kb, _peak_rss_kb(pid) or resident_kb)
    return {"cpu_seconds": cpu, "peak_memory_mb": peak_kb / 1024 if peak_kb else None}
