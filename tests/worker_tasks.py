"""Tasks only the test worker loads (`--include tests.worker_tasks`), to exercise the broker's guarantees."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from celery import shared_task


@shared_task(name="tests.crash_once", acks_late=True, reject_on_worker_lost=True)
def crash_once(folder: str) -> None:
    """First delivery: the pool process dies mid-task. acks_late must bring the message back."""
    attempts = Path(folder) / "attempts"
    with attempts.open("a") as handle:
        handle.write(f"{os.getpid()}\n")
    if len(attempts.read_text().splitlines()) == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    (Path(folder) / "done").write_text("done")
