"""What monitoring records: latency and error series per service and revision, drift reports against the training
baseline, and the alerts both open.

- `MetricPoint`: one row per (service, revision, resolution, start). Per-minute rows come from the serving
  runtime's ingest (local) or from CloudWatch (aws); after settings.METRICS_ROLLUP_AFTER_DAYS they are rolled up
  into hourly rows (resolution 3600). Latency is a histogram on the serving runtime's fixed buckets
  (serving.metrics.BUCKETS_MS, then one count for slower than the last edge), so rows of any resolution merge by
  adding counts and percentiles over any window come from the merged histogram.
- `IngestPart`: the part ids the ingest endpoint has taken, so a part sent again is added once.
- `DriftReport`: one drift job over one window of a service's capture files, moved through
  monitoring.services.drift.DRIFT_MACHINE; `DriftFeature` holds its per-feature verdicts.
- `Alert`: an objective breach or a drift verdict, open until it recovers.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q


class MetricPoint(models.Model):
    class Source(models.TextChoices):
        PORTAL = "portal"  # the serving runtime's ingest (local backend)
        CLOUDWATCH = "cloudwatch"  # GetMetricData (aws backend)
        ROLLUP = "rollup"  # hourly, summed from per-minute rows

    service = models.ForeignKey("deployments.Service", on_delete=models.CASCADE, related_name="metric_points")
    revision = models.CharField(max_length=100)
    # Seconds the row covers: 60 (a minute) or 3600 (an hour, rolled up).
    resolution = models.PositiveIntegerField(default=60)
    start = models.DateTimeField(help_text="UTC start of the minute (or hour) the row covers")
    requests = models.PositiveBigIntegerField(default=0)
    errors = models.PositiveBigIntegerField(default=0, help_text="5xx answers")
    client_errors = models.PositiveBigIntegerField(default=0, help_text="4xx answers")
    rows = models.PositiveBigIntegerField(default=0, help_text="rows predicted")
    # One count per serving.metrics.BUCKETS_MS edge (values <= that edge, above the one before), then one for slower.
    latency_counts = models.JSONField(default=list)
    latency_sum_ms = models.FloatField(default=0.0)
    captured_rows = models.PositiveBigIntegerField(default=0)
    capture_dropped_rows = models.PositiveBigIntegerField(default=0)
    source = models.CharField(max_length=20, choices=Source.choices, default=Source.PORTAL)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["service", "start", "revision"]
        constraints = [
            models.UniqueConstraint(
                fields=["service", "revision", "resolution", "start"], name="metricpoint_one_per_window"
            )
        ]
        indexes = [models.Index(fields=["service", "start"]), models.Index(fields=["resolution", "start"])]

    def __str__(self) -> str:
        return f"{self.service_id}/{self.revision} {self.start:%Y-%m-%d %H:%M} ({self.resolution}s)"


class IngestPart(models.Model):
    """A part of a minute the ingest endpoint added: (service, revision, part) is unique, so a resend is a no-op."""

    service = models.ForeignKey("deployments.Service", on_delete=models.CASCADE, related_name="+")
    revision = models.CharField(max_length=100)
    part = models.CharField(max_length=64)
    minute = models.DateTimeField()
    received_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["service", "revision", "part"], name="ingestpart_once"),
        ]
        indexes = [models.Index(fields=["received_at"])]

    def __str__(self) -> str:
        return f"{self.service_id}/{self.revision} part {self.part}"


class DriftReport(models.Model):
    """One drift job: the capture files of a service in [window_start, window_end) against the training dataset
    version's profile. `queued → running → succeeded | failed`, only through DRIFT_MACHINE."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"

    service = models.ForeignKey("deployments.Service", on_delete=models.CASCADE, related_name="drift_reports")
    # The revisions whose captures were read (empty: all of the service's in the window).
    revision = models.CharField(max_length=100, blank=True)
    window_start = models.DateTimeField()
    window_end = models.DateTimeField()
    baseline = models.ForeignKey(
        "lineage.DatasetVersion", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.QUEUED)
    status_reason = models.TextField(blank=True)
    # What the environment asked for when the job was made (methods, thresholds, share), kept with the result.
    config = models.JSONField(default=dict, blank=True)
    rows = models.PositiveBigIntegerField(default=0)
    files_read = models.PositiveIntegerField(default=0)
    # [{"key": …, "reason": …}] for capture files that could not be read (corrupt, other schema): skipped.
    unreadable = models.JSONField(default=list, blank=True)
    feature_count = models.PositiveIntegerField(default=0)
    drifted_count = models.PositiveIntegerField(default=0)
    drifted_share = models.FloatField(null=True, blank=True)
    drifted = models.BooleanField(null=True, blank=True, help_text="drifted_share reached the configured share")
    progress = models.FloatField(default=0.0)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    # Claimed work (controlplane.transitions): which worker attempt holds it, since when, when it was last queued.
    attempt = models.PositiveIntegerField(default=0)
    claimed_at = models.DateTimeField(null=True, blank=True)
    enqueued_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-window_end", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["service", "revision", "window_start", "window_end"], name="driftreport_one_per_window"
            )
        ]
        indexes = [models.Index(fields=["service", "window_end"])]

    def __str__(self) -> str:
        return f"drift of {self.service_id} {self.window_start:%Y-%m-%d %H:%M}–{self.window_end:%H:%M} ({self.status})"


class DriftFeature(models.Model):
    """One feature's verdict in a drift report."""

    report = models.ForeignKey(DriftReport, on_delete=models.CASCADE, related_name="features")
    feature = models.CharField(max_length=300)
    kind = models.CharField(max_length=20, help_text="numeric or categorical")
    method = models.CharField(max_length=30, help_text="ks, wasserstein, chisquare, jensenshannon or psi")
    statistic = models.FloatField(null=True, blank=True)
    p_value = models.FloatField(null=True, blank=True)
    # The number compared with the threshold: the p-value for ks and chisquare (drift below it), else the distance.
    score = models.FloatField(null=True, blank=True)
    threshold = models.FloatField()
    drifted = models.BooleanField(default=False)
    baseline_rows = models.PositiveBigIntegerField(default=0)
    current_rows = models.PositiveBigIntegerField(default=0)
    # For the page: {"edges": [...], "baseline": [...], "current": [...]} (numeric) or {"values": [...], ...}.
    histogram = models.JSONField(default=dict, blank=True)
    note = models.TextField(blank=True, help_text="why there is no verdict, when there is none")

    class Meta:
        ordering = ["report", "feature"]
        constraints = [models.UniqueConstraint(fields=["report", "feature"], name="driftfeature_once")]

    def __str__(self) -> str:
        return f"{self.feature}: {self.method} {self.score} ({'drifted' if self.drifted else 'ok'})"


class Alert(models.Model):
    """An objective breached (p99 latency, error rate, drift share) or a service's inputs drifted: open until the
    value recovers, then closed. One open alert per (service, name)."""

    class Status(models.TextChoices):
        OPEN = "open"
        CLOSED = "closed"

    service = models.ForeignKey("deployments.Service", on_delete=models.CASCADE, related_name="alerts")
    # p99_latency_ms, error_rate, drift_share (objectives) or drift (the drift report's own verdict)
    name = models.CharField(max_length=40)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.OPEN)
    value = models.FloatField(null=True, blank=True)
    threshold = models.FloatField(null=True, blank=True)
    window_start = models.DateTimeField(null=True, blank=True)
    window_end = models.DateTimeField(null=True, blank=True)
    message = models.TextField()
    drift_report = models.ForeignKey(DriftReport, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    opened_at = models.DateTimeField(auto_now_add=True)
    # The last evaluation that found it still breached, and its value then.
    last_seen_at = models.DateTimeField(null=True, blank=True)
    closed_at = models.DateTimeField(null=True, blank=True)
    close_reason = models.TextField(blank=True)

    class Meta:
        ordering = ["-opened_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["service", "name"], condition=Q(status="open"), name="alert_one_open_per_service_name"
            )
        ]
        indexes = [models.Index(fields=["status", "opened_at"])]

    def __str__(self) -> str:
        return f"{self.service_id} {self.name} ({self.status})"


class MetricPull(models.Model):
    """How far the CloudWatch pull (monitoring.services.pull) has read one aws service's series, and who is reading
    it now: a pull claims the row with a conditional update (claimed_until in the past), so two beats never pull the
    same service at once, and only the claim's holder (its attempt) moves pulled_through on."""

    service = models.OneToOneField("deployments.Service", on_delete=models.CASCADE, related_name="metric_pull")
    # The end (exclusive, a whole minute) of the last window read in full.
    pulled_through = models.DateTimeField(null=True, blank=True)
    attempt = models.PositiveIntegerField(default=0)
    claimed_until = models.DateTimeField(null=True, blank=True)
    last_pulled_at = models.DateTimeField(null=True, blank=True)
    # Pulls that failed in a row since the last one that did not, and why the last one failed.
    failures = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    last_error_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"metrics pull of {self.service_id} through {self.pulled_through}"


# --- cost -----------------------------------------------------------------------------------------------------------
#
# - `CostRecord`: one row per (day, source, breakdown, dimensions), upserted, so a re-sync never double counts.
#   Estimates (source `estimate`) know every dimension at once (breakdown `full`). Cost Explorer answers at most two
#   group-bys per call, so its rows come in three breakdowns that are never added to one another: `project`
#   (project tag × SERVICE), `model` (model tag × environment tag) and `object` (run tag × deployment tag).
# - `CostMonth`: the monthly roll-up of what the dashboard counts (monitoring.costs.selectors), per family `project`
#   (project × AWS service) or `model` (model × environment), rebuilt for every month a sync touches.
# - `CostSync`: one sync of one source, moved through monitoring.costs.services.SYNC_MACHINE.
# - `CostForecast`: the forecast to the end of a month, kept by the sync so pages never call Cost Explorer.
# - `Budget` per project (or overall) per month, and `BudgetCrossing`: one per (budget, month, threshold), so a
#   crossing alerts once, not on every sync.


class CostRecord(models.Model):
    class Source(models.TextChoices):
        COST_EXPLORER = "cost_explorer"
        ESTIMATE = "estimate"

    class Breakdown(models.TextChoices):
        FULL = "full"  # an estimate: every dimension known
        PROJECT = "project"  # Cost Explorer: project tag × SERVICE
        MODEL = "model"  # Cost Explorer: model tag × environment tag
        OBJECT = "object"  # Cost Explorer: run tag × deployment tag

    day = models.DateField()
    source = models.CharField(max_length=20, choices=Source.choices)
    breakdown = models.CharField(max_length=10, choices=Breakdown.choices)
    # Dimensions as the bill names them (tag values, not foreign keys: the bill may name what no longer exists);
    # "" is "not tagged" (or, in a breakdown, not one of its dimensions).
    aws_service = models.CharField(max_length=100, blank=True, default="")
    project = models.CharField(max_length=63, blank=True, default="")
    model = models.CharField(max_length=100, blank=True, default="")
    environment = models.CharField(max_length=40, blank=True, default="")
    run = models.CharField(max_length=40, blank=True, default="")
    deployment = models.CharField(max_length=40, blank=True, default="")
    # Where the estimated resource ran: local estimates are never on a bill; aws ones give way to it.
    backend = models.CharField(max_length=10, blank=True, default="")
    amount = models.DecimalField(max_digits=16, decimal_places=6)
    currency = models.CharField(max_length=3, default="USD")
    # What an estimate was made from (seconds, size, price), for the page that explains it.
    usage = models.JSONField(default=dict, blank=True)
    # An estimate the bill has replaced (a Cost Explorer row for the same run or deployment and day arrived).
    superseded = models.BooleanField(default=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["day", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=[
                    "day",
                    "source",
                    "breakdown",
                    "aws_service",
                    "project",
                    "model",
                    "environment",
                    "run",
                    "deployment",
                ],
                name="cost_record_one_per_day_source_dimensions",
            )
        ]
        indexes = [
            models.Index(fields=["breakdown", "day"], name="cost_record_breakdown_day"),
            models.Index(fields=["run", "day"], name="cost_record_run"),
            models.Index(fields=["deployment", "day"], name="cost_record_deployment"),
            models.Index(fields=["project", "day"], name="cost_record_project"),
            models.Index(fields=["model", "environment", "day"], name="cost_record_model"),
        ]

    def __str__(self) -> str:
        return f"{self.day} {self.source} {self.breakdown} {self.amount}"


class CostMonth(models.Model):
    class Family(models.TextChoices):
        PROJECT = "project"  # project × AWS service
        MODEL = "model"  # model × environment

    month = models.DateField(help_text="The first day of the month")
    family = models.CharField(max_length=10, choices=Family.choices)
    source = models.CharField(max_length=20, choices=CostRecord.Source.choices)
    aws_service = models.CharField(max_length=100, blank=True, default="")
    project = models.CharField(max_length=63, blank=True, default="")
    model = models.CharField(max_length=100, blank=True, default="")
    environment = models.CharField(max_length=40, blank=True, default="")
    amount = models.DecimalField(max_digits=18, decimal_places=6)
    currency = models.CharField(max_length=3, default="USD")

    class Meta:
        ordering = ["month", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["month", "family", "source", "aws_service", "project", "model", "environment"],
                name="cost_month_one_per_dimensions",
            )
        ]
        indexes = [models.Index(fields=["family", "month"], name="cost_month_family_month")]

    def __str__(self) -> str:
        return f"{self.month:%Y-%m} {self.family} {self.amount}"


class CostSync(models.Model):
    class Source(models.TextChoices):
        COST_EXPLORER = "cost_explorer"
        ESTIMATE = "estimate"

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"

    source = models.CharField(max_length=20, choices=Source.choices)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.QUEUED)
    status_reason = models.TextField(blank=True)
    # The days it pulls or estimates: [start, end).
    start = models.DateField()
    end = models.DateField()
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    # Cost Explorer calls made (each one is billed), rows written, and what it did, step by step.
    calls = models.PositiveIntegerField(default=0)
    rows = models.PositiveIntegerField(default=0)
    progress = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    attempt = models.PositiveIntegerField(default=0)
    claimed_at = models.DateTimeField(null=True, blank=True)
    enqueued_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            # One sync of a source at a time: a second request while one is queued or running joins it.
            models.UniqueConstraint(
                fields=["source"], condition=Q(status__in=["queued", "running"]), name="cost_sync_one_active_per_source"
            )
        ]
        indexes = [models.Index(fields=["source", "status", "-finished_at"], name="cost_sync_latest")]

    def __str__(self) -> str:
        return f"{self.source} sync {self.pk} ({self.status})"


class CostBillDay(models.Model):
    """A whole day the bill holds: Cost Explorer answered it in a sync that ended after the day did. Written in the
    transaction that writes the day's bill rows, so the dashboard never counts a day's bill and its aws estimates
    together, nor neither (monitoring.costs.selectors.counted)."""

    day = models.DateField(unique=True)
    sync = models.ForeignKey(CostSync, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    synced_at = models.DateTimeField()

    class Meta:
        ordering = ["day"]

    def __str__(self) -> str:
        return f"billed {self.day}"


class CostForecast(models.Model):
    month = models.DateField(help_text="The first day of the month forecast")
    # "" for everything; else a project slug.
    project = models.CharField(max_length=63, blank=True, default="")
    source = models.CharField(max_length=20, choices=CostRecord.Source.choices)
    available = models.BooleanField(default=False)
    # Why there is no forecast (too little history, Cost Explorer said no): shown on the page.
    reason = models.TextField(blank=True)
    # Spend so far in the month, and the forecast of the rest: mean and the band at `level` percent.
    actual = models.DecimalField(max_digits=16, decimal_places=6, default=0)
    mean = models.DecimalField(max_digits=16, decimal_places=6, null=True, blank=True)
    low = models.DecimalField(max_digits=16, decimal_places=6, null=True, blank=True)
    high = models.DecimalField(max_digits=16, decimal_places=6, null=True, blank=True)
    level = models.PositiveSmallIntegerField(default=80)
    # [{"day": "2026-12-05", "mean": "1.2", "low": "0.9", "high": "1.5"}, …], the days after today.
    points = models.JSONField(default=list, blank=True)
    computed_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["month", "project", "source"], name="cost_forecast_one_per_month_scope")
        ]

    def __str__(self) -> str:
        return f"forecast {self.month:%Y-%m} {self.project or 'all'} ({self.source})"


class Budget(models.Model):
    """A monthly budget for one project, or for everything (project None), with the percents that alert."""

    project = models.OneToOneField(
        "controlplane.Project", null=True, blank=True, on_delete=models.PROTECT, related_name="budget"
    )
    amount = models.DecimalField(max_digits=14, decimal_places=2, help_text="USD per month")
    # Percents of the amount (1-1000) whose crossing alerts, ascending.
    thresholds = models.JSONField(default=list)
    # Also alert when the month's forecast goes over the amount.
    alert_on_forecast = models.BooleanField(default=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["project__name", "id"]
        constraints = [
            models.UniqueConstraint(fields=["project"], condition=Q(project__isnull=True), name="budget_one_overall")
        ]

    def __str__(self) -> str:
        return f"budget {self.project or 'overall'}: {self.amount}"


class BudgetCrossing(models.Model):
    """A budget's month went over one threshold (`80`, `100`, … percent) or its forecast over the amount
    (`forecast`): open on the home pages until the month ends or the spend falls back under it."""

    class Status(models.TextChoices):
        OPEN = "open"
        CLOSED = "closed"

    budget = models.ForeignKey(Budget, on_delete=models.CASCADE, related_name="crossings")
    month = models.DateField()
    kind = models.CharField(max_length=10)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.OPEN)
    spend = models.DecimalField(max_digits=16, decimal_places=6)
    forecast = models.DecimalField(max_digits=16, decimal_places=6, null=True, blank=True)
    budget_amount = models.DecimalField(max_digits=14, decimal_places=2)
    message = models.TextField()
    opened_at = models.DateTimeField(auto_now_add=True)
    closed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-opened_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["budget", "month", "kind"], name="budget_crossing_once_per_month_kind")
        ]
        indexes = [models.Index(fields=["status", "-opened_at"], name="budget_crossing_open")]

    def __str__(self) -> str:
        return f"{self.budget} {self.month:%Y-%m} {self.kind} ({self.status})"
