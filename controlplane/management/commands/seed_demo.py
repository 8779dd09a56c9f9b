"""Demo users (one per role), a demo project and its two environments: what the demo (controlplane/demo.py) acts in."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from controlplane import permissions, services
from controlplane.models import Project

# username, role, full name
DEMO_USERS = [
    ("dana", permissions.DATA_SCIENTIST, "Dana Scientist"),
    ("alex", permissions.APPROVER, "Alex Approver"),
    ("blair", permissions.APPROVER, "Blair Approver"),
    ("fran", permissions.FINANCE, "Fran Finance"),
    ("ada", permissions.ADMIN, "Ada Admin"),
]


class Command(BaseCommand):
    help = "Create the demo users and project (idempotent; existing users keep their passwords)."

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.ALLOW_DEMO_DATA:
            raise CommandError("demo data is off here; set CONTROLPLANE_ALLOW_DEMO_DATA=true to allow it")
        User = get_user_model()
        with transaction.atomic():
            for username, role, full_name in DEMO_USERS:
                first, last = full_name.split(" ", 1)
                user, created = User.objects.get_or_create(
                    username=username,
                    defaults={"first_name": first, "last_name": last, "email": f"{username}@example.com"},
                )
                if created:
                    user.set_password(settings.DEMO_PASSWORD)
                    user.is_staff = role == permissions.ADMIN
                    user.is_superuser = role == permissions.ADMIN
                    user.save()
                user.groups.add(Group.objects.get(name=role))
                if created:
                    self.stdout.write(f"created demo user {username} ({role})")
            dana = User.objects.get(username="dana")
            if not Project.objects.filter(slug="demo").exists():
                services.project_create(
                    actor=dana,
                    name="Demo",
                    slug="demo",
                    description="Breast-cancer classifier trained on the dataset scikit-learn ships.",
                    cost_tags={"team": "ml-platform"},
                )
                self.stdout.write("created demo project")
        self._seed_environments(User.objects.get(username="ada"))

    def _seed_environments(self, ada: Any) -> None:
        """Staging (one approval) and production (two, after staging, no regression), so promotion can be walked."""
        from deployments import services as deployment_services
        from deployments.models import Environment

        demo = [
            {
                "name": "staging",
                "order": 10,
                "approvals_required": 1,
                "gates": ["accuracy >= 0.90"],
                # An approved version goes live in staging at once and bakes a minute.
                "deploy_on_approval": True,
                "bake_minutes": 1,
                "objective_p99_latency_ms": 250,
                "objective_error_rate": 0.01,
                # Drift judged every minute on half the requests: the demo's staging traffic drifts within minutes.
                "capture_fraction": 0.5,
                "drift_window_minutes": 1,
                "drift_share": 0.15,
            },
            {
                "name": "production",
                "order": 20,
                "approvals_required": 2,
                "gates": [
                    "accuracy >= 0.90",
                    "accuracy >= serving - 0.01",
                    "schema matches serving",
                    "approved in staging",
                ],
                "allow_override": True,
                # Deployed by an approver with Deploy: a fifth of the traffic for the bake, then all.
                "strategy": "canary",
                "canary_percent": 20,
                "bake_minutes": 1,
                "objective_p99_latency_ms": 250,
                "objective_error_rate": 0.01,
                # The tumour-size features move together (a third of them): half drifting is a real change, and
                # half of the requests captured gives a bake's drift report enough rows to judge.
                "objective_drift_share": 0.5,
                "capture_fraction": 0.5,
            },
        ]
        for data in demo:
            if not Environment.objects.filter(name=data["name"]).exists():
                deployment_services.environment_create(actor=ada, data=data)
                self.stdout.write(f"created environment {data['name']}")
