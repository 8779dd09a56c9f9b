"""One measured child process at a time (imported by the bench scripts, which run with bench/ on sys.path).

Each child runs in its own session, so an interrupt can stop it with everything it started, and is measured with
`os.wait4`, which reports that child's resources alone: its peak RSS is `ru_maxrss` (`getrusage(RUSAGE_CHILDREN)`
would report the largest child so far). The child writes one JSON object on stdout.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any


class Children:
    def __init__(self, work: Path, *, cwd: Path) -> None:
        self.work = work
        self.cwd = cwd
        self.current: subprocess.Popen[bytes] | None = None

    def run(self, argv: list[str], *, env: dict[str, str], timeout: float, what: str) -> tuple[dict[str, Any], int]:
        """The child's JSON report and its peak RSS in bytes; SystemExit naming `what` if it fails or overruns."""
        out, err = self.work / "child.out", self.work / "child.err"
        with open(out, "wb") as stdout, open(err, "wb") as stderr:
            proc = subprocess.Popen(argv, stdout=stdout, stderr=stderr, cwd=self.cwd, env=env, start_new_session=True)
        self.current = proc
        deadline = time.monotonic() + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                self.stop()
                raise SystemExit(f"{what} took longer than {timeout:.0f} s")
            time.sleep(0.02)
        self.current = None
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            raise SystemExit(f"{what} failed ({proc.returncode}):\n{err.read_text()[-3000:]}")
        report: dict[str, Any] = json.loads(out.read_text())
        return report, usage.ru_maxrss * 1024  # Linux reports KiB

    def stop(self) -> None:
        proc = self.current
        if proc is None or proc.returncode is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGKILL)
            os.waitpid(proc.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        proc.returncode = -signal.SIGKILL
