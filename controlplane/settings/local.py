"""The embedded default: SQLite, the embedded Redis broker, the local backend, DEBUG on."""

from controlplane.settings.base import *  # noqa: F403
from controlplane.settings.base import VAR_DIR
from controlplane.settings.env import env_bool, env_list, env_str

DEBUG = env_bool("DJANGO_DEBUG", True)
# A fixed key is fine on a developer's machine; production.py refuses to start without a real one.
SECRET_KEY = env_str("DJANGO_SECRET_KEY", "local-development-only-key-do-not-use-in-production-0123456789")
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]", "testserver"])

# Development serves static files straight from the finders; collectstatic is for production images.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG
STATIC_ROOT = VAR_DIR / "static"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
