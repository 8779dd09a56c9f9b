"""Loaded by the workers of tests/controlplane/test_broker_restart.py (`--include tests.controlplane.broker_tasks`)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from celery import shared_task


@shared_task(name="tests.hold_until_killed", acks_late=True, reject_on_worker_lost=True)
def hold_until_killed(folder: str) -> None:
    """First delivery: notes its pid and waits to be SIGKILLed with its worker. The next one finishes."""
    attempts = Path(folder) / "attempts"
    with attempts.open("a") as handle:
        handle.write(f"{os.getpid()}\n")
    if len(attempts.read_text().splitlines()) == 1:
        while True:
            time.sleep(1)
    with (Path(folder) / "done").open("a") as handle:
        handle.write(f"{os.getpid()}\n")
