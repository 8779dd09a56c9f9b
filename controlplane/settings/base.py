"""Settings shared by every process (web, worker, beat) and every environment."""

from __future__ import annotations

import os
import re
from datetime import timedelta
from pathlib import Path

from csp.constants import NONE, SELF

from controlplane.settings.env import (
    ConfigurationError,
    env_bool,
    env_broker,
    env_choice,
    env_database,
    env_int,
    env_list,
    env_str,
)

BASE_DIR = Path(__file__).resolve().parent.parent.parent
# Everything the embedded default writes at run time (database, objects, broker socket).
VAR_DIR = Path(env_str("CONTROLPLANE_VAR_DIR", str(BASE_DIR / "var")) or "").resolve()

SECRET_KEY = env_str("DJANGO_SECRET_KEY")
DEBUG = False
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_htmx",
    "csp",
    "axes",
    "controlplane",
    "lineage",
    "deployments",
    "monitoring",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # Before the session: a lost database met loading or saving it is a 503 too, not only one met in a view.
    "controlplane.middleware.DatabaseUnavailableMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "controlplane.nul.RejectNulMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "controlplane.middleware.LoginRequiredMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    # Last, as django-axes asks: it turns a locked-out sign-in into the lockout page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "controlplane.urls"
WSGI_APPLICATION = "controlplane.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "controlplane.navigation.navigation",
            ],
        },
    },
]

DATABASES = {"default": env_database("DATABASE_URL", VAR_DIR / "controlplane.sqlite3")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# django-axes first: it refuses a locked-out sign-in before the password is even checked.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

# --- Security (production.py adds HTTPS-only cookies and HSTS) -------------------------------
# A session lasts a working day from sign-in, then the person signs in again.
SESSION_COOKIE_AGE = env_int("SESSION_COOKIE_AGE", 12 * 60 * 60, minimum=60)
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
# Pages and htmx send the token from the page ({% csrf_token %}, hx-headers), so scripts never read the cookie.
CSRF_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
# Login rate limiting (django-axes): this many failed sign-ins for one username lock it for the cool-off, whatever
# the password tried next. By username, not address: behind the load balancer every request comes from its address.
AXES_FAILURE_LIMIT = env_int("AXES_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("AXES_COOLOFF_MINUTES", 15, minimum=1))
AXES_LOCKOUT_PARAMETERS = ["username"]
# axes.W006 asks for ip_address too; behind the load balancer that is one address for everyone (see above).
SILENCED_SYSTEM_CHECKS = ["axes.W006"]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "controlplane.lockout.locked_out"
# Content Security Policy (django-csp): scripts and styles only from our own static files. No inline <script> (a
# json_script data block is not executed, so it is allowed) and no on*= handler; htmx's and plotly.js's injected
# <style> elements are turned off and their rules live in static files (static/css/app.css, plotly.css).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        # Two inline style attributes only, by hash, both set by plotly.js (controlplane/plotly_css.style_attributes;
        # a test checks these against the bundle): an empty style="" on a colour bar's fills, and the heatmap
        # image's crisp-pixel rendering (without it the drift heatmap's cells blur). No other style= applies.
        "style-src-attr": [
            "'unsafe-hashes'",
            "'sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU='",
            "'sha256-AR/cKIZjWPcPmBUPDA6oti9XBiTbJvz0Cro2J1VzzS8='",
        ],
        "img-src": [SELF, "data:"],
        "font-src": [SELF],
        "connect-src": [SELF],
        "object-src": [NONE],
        "base-uri": [SELF],
        "frame-ancestors": [NONE],
        "form-action": [SELF],
    },
}

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATICFILES_FINDERS = [
    "django.contrib.staticfiles.finders.FileSystemFinder",
    "django.contrib.staticfiles.finders.AppDirectoriesFinder",
    "controlplane.staticfinders.VendorFinder",
]
# htmx comes from the django-htmx wheel ({% htmx_script %}), plotly.js from the plotly wheel: no internet, no npm.
VENDOR_STATIC_FILES = {
    "vendor/plotly.min.js": "plotly:package_data/plotly.min.js",
}
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

# --- REST API -------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # Token first, so that an unauthenticated call gets 401 with a WWW-Authenticate header.
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "controlplane.api_support.Pagination",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "controlplane.api_support.exception_handler",
    "DEFAULT_PARSER_CLASSES": [
        "controlplane.nul.JSONParserWithoutNul",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_RENDERER_CLASSES": [
        "controlplane.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
}
SPECTACULAR_SETTINGS = {
    "TITLE": "ControlPlane API",
    "DESCRIPTION": "Datasets, lineage, training runs, approvals, deployments, monitoring and costs.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "SERVE_PERMISSIONS": ["controlplane.api_support.CanReadApiDocs"],
    "COMPONENT_SPLIT_REQUEST": True,
    # One name per choice set, so generated clients get stable enum names.
    "ENUM_NAME_OVERRIDES": {
        "DatasetFormatEnum": "lineage.models.DatasetVersion.Format",
        "RunStatusEnum": "lineage.models.Run.Status",
        "RegistrationStatusEnum": "lineage.models.DatasetRegistration.Status",
        "SystemCheckStatusEnum": "controlplane.models.SystemCheck.Status",
        "ApprovalRequestStatusEnum": "deployments.models.ApprovalRequest.Status",
        "DeploymentStatusEnum": "deployments.models.Deployment.Status",
        "DeploymentKindEnum": "deployments.models.Deployment.Kind",
        "RunKindEnum": "lineage.models.Run.Kind",
        "DeploymentStrategyEnum": "deployments.models.Deployment.Strategy",
        # Alerts and budget crossings share open/closed (cost syncs share RegistrationStatusEnum's choices).
        "AlertStatusEnum": "monitoring.models.Alert.Status",
    },
}

# --- Backends -------------------------------------------------------------------------------
CONTROLPLANE_BACKEND = env_choice("CONTROLPLANE_BACKEND", "local", ("local", "aws"))
OBJECT_STORE_URL = env_str("OBJECT_STORE_URL", f"file://{VAR_DIR / 'objects'}") or ""


def _check_object_store_url(url: str) -> None:
    from workers.objectstore import validate_object_store_url

    try:
        validate_object_store_url(url)
    except ValueError:
        raise ConfigurationError("OBJECT_STORE_URL", url, "file:///absolute/path or s3://bucket[/prefix]") from None
    if CONTROLPLANE_BACKEND == "aws" and not url.startswith("s3://"):
        raise ConfigurationError("OBJECT_STORE_URL", url, "s3://bucket[/prefix] when CONTROLPLANE_BACKEND=aws")


_check_object_store_url(OBJECT_STORE_URL)

# The one place the region is read: workers are handed settings.AWS_REGION and never read the environment for it.
# AWS_DEFAULT_REGION (the AWS CLI's name) counts too, so this and a host's CLI configuration cannot disagree.
AWS_REGION = (env_str("AWS_REGION") or env_str("AWS_DEFAULT_REGION") or "us-east-1").strip()
if not re.fullmatch(r"[a-z]{2}(?:-[a-z]+)+-[0-9]+", AWS_REGION):
    raise ConfigurationError("AWS_REGION", AWS_REGION, "an AWS region name such as us-east-1 or eu-central-1")
AWS_ENDPOINT_URL = env_str("AWS_ENDPOINT_URL")
SAGEMAKER_ROLE_ARN = env_str("SAGEMAKER_ROLE_ARN")
ECS_CLUSTER = env_str("ECS_CLUSTER")
ECS_SUBNETS = env_list("ECS_SUBNETS", [])
ECS_SECURITY_GROUPS = env_list("ECS_SECURITY_GROUPS", [])
SERVING_IMAGE = env_str("SERVING_IMAGE")
# The CloudWatch pull (monitoring.services.pull, every minute): each aws service's series are read from where the
# last pull stopped (or this far back, for a service never pulled), up to this long ago (CloudWatch's lag in
# extracting EMF lines), re-reading the last few minutes each time so that late data replaces what was read early.
METRICS_PULL_LOOKBACK_MINUTES = env_int("METRICS_PULL_LOOKBACK_MINUTES", 180, minimum=1)
METRICS_PULL_DELAY_SECONDS = env_int("METRICS_PULL_DELAY_SECONDS", 120, minimum=0)
METRICS_PULL_OVERLAP_MINUTES = env_int("METRICS_PULL_OVERLAP_MINUTES", 5, minimum=0)
# A pull holds its service this long; a pull that died is taken over after it.
METRICS_PULL_LEASE_SECONDS = env_int("METRICS_PULL_LEASE_SECONDS", 300, minimum=30)

# --- Deployments ----------------------------------------------------------------------------
# The local serving backend keeps each service's router and revisions (state files, logs) here.
SERVICES_WORK_DIR = VAR_DIR / "services"
# How often an active deployment is polled, by backend (seconds): a breach is acted on within one poll.
DEPLOYMENT_POLL_SECONDS = {"local": 1.0, "aws": 10.0}
# A worker starting a deployment holds it this long; after it, another worker may take the start over.
DEPLOYMENT_LEASE_SECONDS = env_int("DEPLOYMENT_LEASE_SECONDS", 300, minimum=30)
# A deployment whose poll chain has been quiet this long gets a new chain from the sweep (its worker died).
DEPLOYMENT_POLL_STALE_SECONDS = env_int("DEPLOYMENT_POLL_STALE_SECONDS", 30, minimum=2)
# A rollout whose backend cannot be read this many polls in a row is rolled back (saying why).
DEPLOYMENT_POLL_ERROR_LIMIT = env_int("DEPLOYMENT_POLL_ERROR_LIMIT", 10, minimum=1)
# A new revision that has not taken traffic this long after its start is rolled back.
DEPLOYMENT_START_TIMEOUT_SECONDS = env_int("DEPLOYMENT_START_TIMEOUT_SECONDS", 1800, minimum=60)
# Where the objectives' live signals come from while a revision bakes (deployments.objectives): "metrics" reads the
# monitoring tables (filled by the serving runtime's ingest locally, by the CloudWatch pull on aws); "revision" reads
# each local revision's own /metrics; "recorded" reads DEPLOYMENT_RECORDED_SIGNALS (a JSON file, for tests and
# replays); "none" judges nothing.
DEPLOYMENT_SIGNALS = env_choice("DEPLOYMENT_SIGNALS", "metrics", ("metrics", "revision", "recorded", "none"))
DEPLOYMENT_RECORDED_SIGNALS = env_str("DEPLOYMENT_RECORDED_SIGNALS") or str(VAR_DIR / "recorded-signals.json")
# Objectives are judged once a revision has answered at least this many requests in the window.
OBJECTIVE_MIN_REQUESTS = env_int("OBJECTIVE_MIN_REQUESTS", 20, minimum=1)
# Serving services are held to their environment's objectives continuously (monitoring.services.objectives), over
# the last this many minutes.
OBJECTIVE_WINDOW_MINUTES = env_int("OBJECTIVE_WINDOW_MINUTES", 15, minimum=1)
# The drift job (monitoring.services.drift): a worker holds a report this long, renewed while it reads capture
# files; after it another worker may take the report over. After an outage, at most this many missed windows per
# service are reported (the newest ones).
# Cost: Cost Explorer is the bill on aws (each call is billed: the sync runs daily over a trailing window, since a
# day's figures keep changing for a while); estimates from measured usage are made every few minutes everywhere.
COST_EXPLORER_ENABLED = env_bool("COST_EXPLORER_ENABLED", CONTROLPLANE_BACKEND == "aws")
COST_EXPLORER_TRAILING_DAYS = env_int("COST_EXPLORER_TRAILING_DAYS", 14, minimum=1)
# A bill sync asked for by a person waits this long after the last one (each Cost Explorer call is billed).
COST_EXPLORER_MIN_INTERVAL_SECONDS = env_int("COST_EXPLORER_MIN_INTERVAL_SECONDS", 3600, minimum=0)
COST_EXPLORER_SYNC_SECONDS = float(env_int("COST_EXPLORER_SYNC_SECONDS", 24 * 3600, minimum=60))
COST_ESTIMATE_DAYS = env_int("COST_ESTIMATE_DAYS", 3, minimum=1)
COST_ESTIMATE_SYNC_SECONDS = float(env_int("COST_ESTIMATE_SYNC_SECONDS", 300, minimum=10))
COST_SYNC_LEASE_SECONDS = env_int("COST_SYNC_LEASE_SECONDS", 600, minimum=10)
# The forecast's band (percent, 51-99 as Cost Explorer takes it), and the history an estimate's forecast needs.
COST_FORECAST_LEVEL = env_int("COST_FORECAST_LEVEL", 80, minimum=51)
if COST_FORECAST_LEVEL > 99:
    raise ConfigurationError("COST_FORECAST_LEVEL", str(COST_FORECAST_LEVEL), "a percent from 51 to 99")
COST_FORECAST_HISTORY_DAYS = env_int("COST_FORECAST_HISTORY_DAYS", 28, minimum=2)
COST_FORECAST_MIN_DAYS = env_int("COST_FORECAST_MIN_DAYS", 7, minimum=1)
DRIFT_LEASE_SECONDS = env_int("DRIFT_LEASE_SECONDS", 300, minimum=10)
DRIFT_WINDOWS_CATCH_UP = env_int("DRIFT_WINDOWS_CATCH_UP", 3, minimum=1)
# A report whose worker died (lease expired, taken over) this many times fails instead of being taken over again.
DRIFT_MAX_ATTEMPTS = env_int("DRIFT_MAX_ATTEMPTS", 3, minimum=1)

# --- Monitoring -----------------------------------------------------------------------------
# Per-minute metric points older than this are rolled up into hourly ones; hourly ones are kept this long.
METRICS_ROLLUP_AFTER_DAYS = env_int("METRICS_ROLLUP_AFTER_DAYS", 14, minimum=1)
METRICS_RETENTION_DAYS = env_int("METRICS_RETENTION_DAYS", 400, minimum=2)
if METRICS_RETENTION_DAYS <= METRICS_ROLLUP_AFTER_DAYS:
    raise ConfigurationError(
        "METRICS_RETENTION_DAYS", str(METRICS_RETENTION_DAYS), "more days than METRICS_ROLLUP_AFTER_DAYS"
    )
# The ingest endpoint takes at most this many minutes per payload (the serving runtime keeps at most 60 unsent),
# and no minute further ahead of the portal's clock than this.
METRICS_INGEST_MAX_MINUTES = env_int("METRICS_INGEST_MAX_MINUTES", 120, minimum=1)
METRICS_INGEST_MAX_FUTURE_SECONDS = env_int("METRICS_INGEST_MAX_FUTURE_SECONDS", 300, minimum=0)
# A larger body is refused (413) before it is read: anyone who sends a bearer header reaches the ingest, and a
# payload of METRICS_INGEST_MAX_MINUTES minutes is under 100 KB.
METRICS_INGEST_MAX_BYTES = env_int("METRICS_INGEST_MAX_BYTES", 1024 * 1024, minimum=64 * 1024)
# What every revision is started with: how often it reports its minutes (every 10 s: the current minute in parts,
# so a bake of a minute is judged on what it served, not on the minute before) and writes its capture files, and
# (aws) the CloudWatch namespace of its EMF lines.
SERVING_METRICS_FLUSH_SECONDS = float(env_int("SERVING_METRICS_FLUSH_SECONDS", 10, minimum=1))
SERVING_CAPTURE_FLUSH_SECONDS = float(env_int("SERVING_CAPTURE_FLUSH_SECONDS", 60, minimum=1))
SERVING_METRICS_NAMESPACE = env_str("SERVING_METRICS_NAMESPACE", "ControlPlane/Serving") or "ControlPlane/Serving"

# --- Datasets and runs ----------------------------------------------------------------------
# Uploads over this size are refused before they are stored.
DATASET_MAX_UPLOAD_BYTES = env_int("DATASET_MAX_UPLOAD_BYTES", 1024 * 1024 * 1024, minimum=1)
# file:// registrations must point inside one of these folders.
DATASET_FILE_ROOTS = [Path(p).resolve() for p in env_list("DATASET_FILE_ROOTS", [str(VAR_DIR / "data")])]
# Uploads larger than this are spooled to disk by Django, never held in memory.
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
FILE_UPLOAD_HANDLERS = [
    "controlplane.uploads.UploadLimitHandler",
    "django.core.files.uploadhandler.MemoryFileUploadHandler",
    "django.core.files.uploadhandler.TemporaryFileUploadHandler",
]
FILE_UPLOAD_TEMP_DIR = str(VAR_DIR / "tmp")
Path(FILE_UPLOAD_TEMP_DIR).mkdir(parents=True, exist_ok=True)
RUNS_WORK_DIR = VAR_DIR / "runs"
# What things cost: the price table (controlplane/settings/prices.py).
from controlplane.settings.prices import *  # noqa: E402, F403

TRAINING_MAX_INSTANCES = env_int("TRAINING_MAX_INSTANCES", 4, minimum=1)
# SageMaker allows at most 28 days (MaxRuntimeInSeconds).
TRAINING_MAX_RUNTIME_SECONDS = min(env_int("TRAINING_MAX_RUNTIME_SECONDS", 24 * 3600, minimum=60), 28 * 24 * 3600)
LOCAL_TRAINING_CPUS = env_int("LOCAL_TRAINING_CPUS", os.cpu_count() or 1, minimum=1)
# How often a running job is polled, by backend (seconds).
RUN_POLL_SECONDS = {"local": 1.0, "sagemaker": 30.0}
# A worker that claimed a run's start or finish holds it this long (renewed before each slow step); after it, the
# worker is presumed dead and another may take the work over. Claimed work that is still queued after this long is
# queued again by the sweep.
RUN_LEASE_SECONDS = env_int("RUN_LEASE_SECONDS", 600, minimum=30)
# A run whose start was taken over this many times (each worker died while starting it) fails with the reason.
RUN_START_ATTEMPTS = env_int("RUN_START_ATTEMPTS", 3, minimum=1)
# Where SageMaker reads inputs and writes models: the S3 object store, unless set apart.
SAGEMAKER_S3_URL = env_str("SAGEMAKER_S3_URL") or (OBJECT_STORE_URL if OBJECT_STORE_URL.startswith("s3://") else "")
# Approval requests nobody decides expire after this many days (each environment may set its own).
APPROVAL_REQUEST_TTL_DAYS = env_int("APPROVAL_REQUEST_TTL_DAYS", 14, minimum=1)
# Notification emails: printed to the worker's log (console backend) unless an SMTP server is named.
EMAIL_HOST = env_str("EMAIL_HOST")
EMAIL_BACKEND = (
    "django.core.mail.backends.smtp.EmailBackend" if EMAIL_HOST else "django.core.mail.backends.console.EmailBackend"
)
EMAIL_PORT = env_int("EMAIL_PORT", 587, minimum=1)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", True)
EMAIL_TIMEOUT = 20
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "controlplane@localhost")
# The portal's address as users reach it, for links in emails.
PORTAL_URL = env_str("PORTAL_URL", "http://127.0.0.1:8000")
# OpenLineage events are also sent here when set (e.g. http://marquez:5000).
OPENLINEAGE_URL = env_str("OPENLINEAGE_URL")
OPENLINEAGE_NAMESPACE = env_str("OPENLINEAGE_NAMESPACE", "controlplane")

# Signed local download links stay valid this long (seconds).
OBJECT_DOWNLOAD_EXPIRES = env_int("OBJECT_DOWNLOAD_EXPIRES", 3600, minimum=60)

# --- Celery ---------------------------------------------------------------------------------
CELERY_BROKER_URL, CELERY_BROKER_IS_EMBEDDED = env_broker(VAR_DIR / "run" / "redis.sock")
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_IGNORE_RESULT = True  # tasks write their results to the database
CELERY_TASK_TIME_LIMIT = 60 * 60
CELERY_TASK_SOFT_TIME_LIMIT = 55 * 60
CELERY_WORKER_PREFETCH_MULTIPLIER = 1  # long tasks: one at a time per process
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# An unacknowledged (acks_late) message goes back to the queue after this long if its worker vanished.
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", 2 * 60 * 60, minimum=10)}
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_QUEUES_NAMES = ("training", "deploy", "sync", "default")
CELERY_TASK_ROUTES = {
    "lineage.tasks.training_*": {"queue": "training"},
    "deployments.tasks.*": {"queue": "deploy"},
    "monitoring.tasks.*": {"queue": "sync"},
    "monitoring.tasks_drift.*": {"queue": "sync"},
    "monitoring.costs.tasks.*": {"queue": "sync"},
}
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "run" / "celerybeat-schedule")
# The one place periodic work is declared.
CELERY_BEAT_SCHEDULE = {
    "heartbeat": {"task": "controlplane.tasks.heartbeat_record", "schedule": 30.0},
    "monitoring-metrics-pull": {"task": "monitoring.tasks.metrics_pull", "schedule": 60.0},
    "lineage-requeue-stale": {"task": "lineage.tasks.requeue_stale", "schedule": 300.0},
    "training-runs-poll-stale": {"task": "lineage.tasks.training_runs_poll_stale", "schedule": 60.0},
    "system-checks-requeue-stale": {"task": "controlplane.tasks.system_checks_requeue_stale", "schedule": 60.0},
    "lineage-direct-uploads-abort-stale": {"task": "lineage.tasks.direct_uploads_abort_stale", "schedule": 3600.0},
    "notification-emails-resume": {"task": "controlplane.tasks.notification_emails_resume", "schedule": 300.0},
    "approval-requests-expire": {"task": "deployments.tasks.approval_requests_expire", "schedule": 300.0},
    "approval-requests-resume": {"task": "deployments.tasks.approval_requests_resume", "schedule": 120.0},
    "deployments-resume": {"task": "deployments.tasks.deployments_resume", "schedule": 30.0},
    "metrics-rollup": {"task": "monitoring.tasks.metrics_rollup", "schedule": 3600.0},
    "drift-reports-schedule": {"task": "monitoring.tasks_drift.drift_reports_schedule", "schedule": 60.0},
    "drift-reports-requeue-stale": {"task": "monitoring.tasks_drift.drift_reports_requeue_stale", "schedule": 120.0},
    "objectives-evaluate": {"task": "monitoring.tasks_drift.objectives_evaluate", "schedule": 60.0},
    "cost-estimates-sync": {
        "task": "monitoring.costs.tasks.cost_syncs_schedule",
        "schedule": COST_ESTIMATE_SYNC_SECONDS,
        "args": ("estimate",),
    },
    "cost-explorer-sync": {
        "task": "monitoring.costs.tasks.cost_syncs_schedule",
        "schedule": COST_EXPLORER_SYNC_SECONDS,
        "args": ("cost_explorer",),
    },
    "cost-syncs-requeue-stale": {"task": "monitoring.costs.tasks.cost_syncs_requeue_stale", "schedule": 300.0},
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": "INFO"},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

DEMO_PASSWORD = env_str("CONTROLPLANE_DEMO_PASSWORD", "controlplane-demo")
ALLOW_DEMO_DATA = env_bool("CONTROLPLANE_ALLOW_DEMO_DATA", True)
