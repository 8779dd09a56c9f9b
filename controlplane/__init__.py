"""ControlPlane: the Django project (settings, URLs, Celery app, roles, audit log, home pages)."""

from controlplane.celery import app as celery_app

__all__ = ["celery_app"]
