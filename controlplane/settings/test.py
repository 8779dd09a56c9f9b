"""The test suite: the embedded default unless DATABASE_URL / REDIS_URL point at real servers."""

import os
from pathlib import Path

# Its own var/ folder, so a `make run` on the same checkout never shares a broker socket or files with tests.
os.environ.setdefault("CONTROLPLANE_VAR_DIR", str(Path(__file__).resolve().parents[2] / "var" / "test"))

from controlplane.settings.env import env_choice  # noqa: E402
from controlplane.settings.local import *  # noqa: E402, F403
from controlplane.settings.local import DATABASES, VAR_DIR  # noqa: E402

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# A file, not ":memory:", so that worker processes started by the tests share the test database.
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test.sqlite3")}
else:
    # A commit does not wait for its WAL record to reach the disk (as SQLite's synchronous=NORMAL in WAL mode): the
    # test database need not survive a crash of the machine, and the tests and their workers commit thousands of times.
    DATABASES["default"].setdefault("OPTIONS", {})["options"] = "-c synchronous_commit=off"
# Redelivery of a lost acks_late task is tested; do not wait two hours for it.
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 30}
# A dead worker's deployment is taken over and its poll chain restarted without waiting minutes.
DEPLOYMENT_LEASE_SECONDS = 30
DEPLOYMENT_POLL_STALE_SECONDS = 5
# Serving processes the tests start report their minutes and write capture files every second, not every minute.
SERVING_METRICS_FLUSH_SECONDS = 1.0
SERVING_CAPTURE_FLUSH_SECONDS = 1.0
# The session's Celery worker starts revisions whose reports have no portal to go to (PORTAL_URL is not served in
# tests), so the deployments' journeys judge each revision's own /metrics, as they did before monitoring; the
# tests of the "metrics" source (tests/monitoring/) set it, with a live server the revisions report to.
DEPLOYMENT_SIGNALS = env_choice("DEPLOYMENT_SIGNALS", "revision", ("metrics", "revision", "recorded", "none"))
