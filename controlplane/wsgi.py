"""WSGI entry point for gunicorn (production) and runserver."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings.production")

application = get_wsgi_application()
