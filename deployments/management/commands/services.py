"""`manage.py services stop` ends every local service's router and serving processes (their files stay);
`manage.py services resume` brings back each local service's current deployment on its stable address."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from deployments import services


class Command(BaseCommand):
    help = "Stop the local services, or resume what served (each one's current deployment, on its own port)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("action", choices=["stop", "resume"])

    def handle(self, *args: Any, action: str, **options: Any) -> None:
        lines = services.local_services_stop() if action == "stop" else services.local_services_resume()
        for line in lines:
            self.stdout.write(f"services: {line}")
        if not lines:
            self.stdout.write(f"services: nothing to {action}")
