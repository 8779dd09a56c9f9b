"""Demo users (one per role) and a demo project, so a newcomer can walk every journey."""

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
