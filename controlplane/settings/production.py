"""Production: PostgreSQL, Redis, gunicorn behind a TLS-terminating load balancer."""

from controlplane.settings.base import *  # noqa: F403
from controlplane.settings.env import ConfigurationError, env_bool, env_int, env_list, env_str

DEBUG = env_bool("DJANGO_DEBUG", False)
if DEBUG:
    raise ConfigurationError("DJANGO_DEBUG", "true", "false: production never runs with DEBUG on")

SECRET_KEY = env_str("DJANGO_SECRET_KEY") or ""
if len(SECRET_KEY) < 50 or len(set(SECRET_KEY)) < 5 or SECRET_KEY.startswith("django-insecure-"):
    raise ConfigurationError(
        "DJANGO_SECRET_KEY",
        "<hidden>" if SECRET_KEY else "",
        "a random string of at least 50 characters (or a file named by DJANGO_SECRET_KEY_FILE)",
    )

ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", [])
if not ALLOWED_HOSTS:
    raise ConfigurationError("DJANGO_ALLOWED_HOSTS", "", "a comma-separated list of host names")

SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", True)
SECURE_HSTS_SECONDS = env_int("DJANGO_HSTS_SECONDS", 60 * 60 * 24 * 365)
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = True
# Off only for a plain-HTTP trial on localhost (docker/compose.yaml); browsers then keep the cookies.
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = env_bool("DJANGO_SECURE_COOKIES", True)
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", [])
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}
ALLOW_DEMO_DATA = env_bool("CONTROLPLANE_ALLOW_DEMO_DATA", False)
