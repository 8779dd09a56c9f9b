"""Run the whole system on this machine: embedded broker, migrations and demo data, Celery worker and beat, the portal.

Ctrl-C (or SIGTERM) stops every process it started, web first and the broker last. With the local backend it also
brings back, before the worker starts, each local service's current deployment on its stable address, and stops the
local services (routers and serving processes, detached from the worker that started them) once the worker is gone.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand

from controlplane import embedded_broker

QUEUES = "training,deploy,sync,default"


def web_command(host: str, port: int) -> list[str]:
    """The portal as the image runs it (controlplane/web.py): one address, pages and the API in gunicorn pools of
    their own, with threads, so a slow upload holds a thread, not the server."""
    # A graceful stop shorter than the 20 s _stop() waits, so Ctrl-C never has to kill the web process.
    return [sys.executable, "-m", "controlplane.web", "--bind", f"{host}:{port}", "--graceful-timeout", "15"]


def portal_url(host: str, port: int) -> str:
    """The address users reach the portal at: this machine's name when it listens on every interface."""
    if host in ("0.0.0.0", "::", ""):
        host = socket.getfqdn()
    elif ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}"


class Command(BaseCommand):
    help = "Run the broker (embedded default), a Celery worker, beat and the web portal until Ctrl-C."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--concurrency", type=int, default=2, help="worker processes")
        parser.add_argument("--skip-setup", action="store_true", help="do not migrate or load demo data first")
        parser.add_argument("--no-demo", action="store_true", help="demo users only: no runs, deployments or traffic")

    def handle(
        self, *args: Any, host: str, port: int, concurrency: int, skip_setup: bool, no_demo: bool, **options: Any
    ) -> None:
        self.stopping = False
        local_services = False
        started: list[tuple[str, subprocess.Popen[bytes]]] = []
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)
        run_dir = settings.VAR_DIR / "run"
        run_dir.mkdir(parents=True, exist_ok=True)
        try:
            if settings.CELERY_BROKER_IS_EMBEDDED:
                socket_path = embedded_broker.socket_from_url(settings.CELERY_BROKER_URL)
                if embedded_broker.is_running(socket_path):
                    self.stdout.write(f"broker: already running on {socket_path}")
                else:
                    started.append(("broker", embedded_broker.start(socket_path)))
                    self.stdout.write(f"broker: embedded redis-server on {socket_path}")
            # Migrations and demo data after the broker is up, so the work they queue reaches the worker.
            if not skip_setup:
                call_command("migrate", interactive=False, verbosity=0)
                call_command("seed_demo")
            local_services = settings.CONTROLPLANE_BACKEND == "local"
            if local_services:
                self._resume_local_services()
            if not skip_setup:
                # Costs from the start, not after the beat's first interval: the worker takes it when it is up.
                from monitoring.costs.services import cost_sync_request

                cost_sync_request(source="estimate")
            # Links in notification emails point where this portal listens (the worker sends them).
            os.environ.setdefault("PORTAL_URL", portal_url(host, port))
            celery = [sys.executable, "-m", "celery", "-A", "controlplane"]
            started.append(
                (
                    "worker",
                    self._spawn(
                        celery + ["worker", "-Q", QUEUES, "-c", str(concurrency), "-n", "worker@%h", "-l", "INFO"],
                        log="worker",
                    ),
                )
            )
            started.append(
                (
                    "beat",
                    self._spawn(
                        celery + ["beat", "-l", "INFO", "--schedule", settings.CELERY_BEAT_SCHEDULE_FILENAME],
                        log="beat",
                    ),
                )
            )
            started.append(("web", self._spawn(web_command(host, port), log="web")))
            self._print_welcome(host, port)
            # The demo acts through the services as the demo users, in the background: the portal is usable at once,
            # and the demo's own lines (prefixed "demo:") say what it is doing. Its end stops nothing else.
            demo = None
            if not skip_setup and not no_demo and settings.ALLOW_DEMO_DATA and local_services:
                demo = self._spawn([sys.executable, "manage.py", "demo"])
                started.append(("demo", demo))
            while not self.stopping:
                for name, process in started:
                    if process is not demo and process.poll() is not None:
                        self.stderr.write(f"{name} exited with status {process.returncode}; stopping everything")
                        self._show_log_tail(name)
                        self.stopping = True
                time.sleep(0.3)
        finally:
            for name, process in reversed(started):
                if name == "broker" and local_services:
                    self._stop_local_services()
                    local_services = False
                self._stop(name, process)
            if local_services:
                self._stop_local_services()
            self.stdout.write("stopped.")

    def _resume_local_services(self) -> None:
        """What served when the last run stopped serves again, at the same addresses (in-process: no worker needed)."""
        from deployments.services import local_services_resume

        try:
            lines = local_services_resume()
        except Exception as exc:  # a database not migrated yet (--skip-setup): the portal still starts
            self.stderr.write(f"services: could not resume the local services: {exc}")
            return
        for line in lines:
            self.stdout.write(f"services: {line}")

    def _stop_local_services(self) -> None:
        from deployments.services import local_services_stop

        try:
            lines = local_services_stop()
        except Exception as exc:  # the broker must still be stopped
            self.stderr.write(f"services: could not stop the local services: {exc}")
            return
        for line in lines:
            self.stdout.write(f"services: {line}")

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.stopping = True

    def _spawn(self, command: list[str], *, log: str = "") -> subprocess.Popen[bytes]:
        """A child in a session of its own, so Ctrl-C reaches only this supervisor, which stops children in order.
        With `log`, its output goes to var/log/<log>.log (appended), so the terminal keeps to what runall and the
        demo say; without, to the terminal."""
        output: Any = None
        if log:
            folder = settings.VAR_DIR / "log"
            folder.mkdir(parents=True, exist_ok=True)
            output = (folder / f"{log}.log").open("ab")
        try:
            return subprocess.Popen(
                command,
                cwd=settings.BASE_DIR,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT if output is not None else None,
                start_new_session=True,
            )
        finally:
            if output is not None:
                output.close()  # the child holds its own copy

    def _show_log_tail(self, name: str, lines: int = 30) -> None:
        path = settings.VAR_DIR / "log" / f"{name}.log"
        if path.is_file():
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            self.stderr.write(f"the last lines of {path}:\n" + "\n".join(tail))

    def _stop(self, name: str, process: subprocess.Popen[bytes]) -> None:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.stderr.write(f"{name} did not stop within 20s; killing it")
                process.kill()
                process.wait()

    def _print_welcome(self, host: str, port: int) -> None:
        from controlplane.management.commands.seed_demo import DEMO_USERS

        lines = [
            "",
            f"ControlPlane is starting at http://{host}:{port}/",
            f"Sign in as any of these demo users (password: {settings.DEMO_PASSWORD}):",
        ]
        lines += [f"  {username:<8} {role}" for username, role, _ in DEMO_USERS]
        logs = settings.VAR_DIR / "log"
        lines += [f"Logs: {logs}/web.log, worker.log (emails sent are printed there too), beat.log."]
        lines += ["Ctrl-C stops everything.", ""]
        self.stdout.write("\n".join(lines))
