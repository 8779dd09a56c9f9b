"""Drive the demo (controlplane/demo.py) as the demo users, then keep its traffic flowing until stopped."""

from __future__ import annotations

import signal
import threading
import traceback
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from controlplane.demo import Demo, DemoFailed, DemoStopped

REPORT_SECONDS = 60.0


class Command(BaseCommand):
    help = "Make the demo's runs, promotions and deployments (once), then send its traffic until Ctrl-C."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--no-traffic", action="store_true", help="stop once the demo is set up")

    def handle(self, *args: Any, no_traffic: bool, **options: Any) -> None:
        if not settings.ALLOW_DEMO_DATA:
            raise CommandError("demo data is off here; set CONTROLPLANE_ALLOW_DEMO_DATA=true to allow it")
        stop = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stop.set())

        def say(line: str) -> None:
            self.stdout.write(f"demo: {line}")
            self.stdout.flush()

        demo = Demo(say, stop)
        try:
            if demo.in_place():
                say("an earlier `make run` set the demo up; nothing to make again")
            else:
                demo.run()
            say(
                "ready: staging and production serve breast-cancer-classifier; sign in as alex for the waiting "
                "request, dana for runs and models, fran for costs"
            )
        except DemoStopped:
            say("stopped before it was set up; the next `make run` goes on from here")
            return
        except DemoFailed as exc:
            say(f"stopped: {exc}")
        except Exception:  # the portal stays up; the trace says where the demo broke
            say("stopped by an unexpected error:\n" + traceback.format_exc())
        if no_traffic:
            stop.set()
        else:
            try:
                demo.resume_traffic()
            except (DemoFailed, DemoStopped) as exc:
                say(f"traffic: {exc or 'stopped'}")
        while not stop.wait(REPORT_SECONDS):
            if demo.traffic:
                say(f"traffic so far: {demo.report()}")
        for traffic in demo.traffic.values():
            if traffic.thread is not None:
                traffic.thread.join(timeout=15)
        if demo.traffic:
            say(f"stopped sending traffic ({demo.report()})")
