"""Datasets and their write-once versions, runs, and the edges of the lineage graph.

Provenance follows W3C PROV / OpenLineage: artifacts (dataset versions, later model versions) are produced
and consumed by activities (runs, later deployments). Every such link is also a `LineageEdge`, so the
whole graph is one table that a recursive query walks.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models

from controlplane.models import Project, WriteOnceError, WriteOnceModel

__all__ = ["WriteOnceError"]


class ProjectOwned(models.Model):
    """A named thing a project owns (a dataset, a registered model), its slug unique within the project."""

    project = models.ForeignKey(Project, on_delete=models.PROTECT, related_name="%(class)ss")
    name = models.CharField(max_length=100)
    slug = models.SlugField(max_length=63)
    description = models.TextField(blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        abstract = True
        ordering = ["project__slug", "slug"]
        constraints = [models.UniqueConstraint(fields=["project", "slug"], name="%(class)s_unique_slug_per_project")]

    def __str__(self) -> str:
        return f"{self.project.slug}/{self.slug}"


class Dataset(ProjectOwned):
    pass


def _empty_field_only() -> list[str]:
    return [""]


class DatasetVersion(WriteOnceModel):
    """Immutable, content-addressed: no field changes after creation; the same bytes are the same version."""

    class Source(models.TextChoices):
        UPLOAD = "upload"
        S3 = "s3"
        FILE = "file"
        DERIVED = "derived"

    class Format(models.TextChoices):
        CSV = "csv"
        PARQUET = "parquet"
        JSONL = "jsonl"
        MANIFEST = "manifest"

    dataset = models.ForeignKey(Dataset, on_delete=models.PROTECT, related_name="versions")
    number = models.PositiveIntegerField()
    sha256 = models.CharField(max_length=64)
    uri = models.CharField(max_length=1024, help_text="Where the bytes (or the manifest) are kept")
    storage_key = models.CharField(max_length=1024, help_text="Key in the object store")
    size = models.BigIntegerField()
    format = models.CharField(max_length=20, choices=Format.choices)
    # For a manifest: the format of the objects it lists.
    content_format = models.CharField(max_length=20, choices=Format.choices)
    compressed = models.BooleanField(default=False)
    columns = models.JSONField(default=list)
    row_count = models.BigIntegerField(null=True)
    object_count = models.PositiveIntegerField(default=1)
    source = models.CharField(max_length=20, choices=Source.choices)
    source_uri = models.CharField(max_length=1024, blank=True)
    source_etag = models.CharField(max_length=200, blank=True)
    source_version_id = models.CharField(max_length=1024, blank=True)
    original_filename = models.CharField(max_length=255, blank=True)
    # The strings that mean "no value" in these bytes (always the empty field): what profiles and runs read as missing.
    missing_values = models.JSONField(default=_empty_field_only)
    produced_by = models.ForeignKey(
        "Run", null=True, blank=True, on_delete=models.PROTECT, related_name="output_versions"
    )
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["dataset", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["dataset", "number"], name="dataset_version_unique_number"),
            models.UniqueConstraint(fields=["dataset", "sha256"], name="dataset_version_unique_bytes"),
        ]

    def __str__(self) -> str:
        return f"{self.dataset} v{self.number}"

    @property
    def node_id(self) -> str:
        return f"dataset_version:{self.pk}"


class DatasetProfile(models.Model):
    """Computed once per version by a worker: schema, statistics and histograms — the drift baseline."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        READY = "ready"
        FAILED = "failed"

    version = models.OneToOneField(DatasetVersion, primary_key=True, on_delete=models.PROTECT, related_name="profile")
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.QUEUED)
    progress = models.FloatField(default=0.0)
    profile = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Claimed work (controlplane.transitions): which worker attempt holds it, since when, when it was last queued.
    attempt = models.PositiveIntegerField(default=0)
    claimed_at = models.DateTimeField(null=True, blank=True)
    enqueued_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"profile of {self.version} ({self.status})"


class DatasetRegistration(models.Model):
    """A request to register data that lives elsewhere (s3://… or file://…); a worker reads it and makes the version."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"

    # The dataset is created only when the data turns out to be valid, so a failed registration stores nothing.
    project = models.ForeignKey(Project, on_delete=models.PROTECT, related_name="+")
    dataset_slug = models.SlugField(max_length=63)
    dataset_name = models.CharField(max_length=100)
    description = models.TextField(blank=True)
    source_uri = models.CharField(max_length=1024)
    missing_values = models.JSONField(default=_empty_field_only)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.QUEUED)
    progress = models.FloatField(default=0.0)
    error = models.TextField(blank=True)
    version = models.ForeignKey(DatasetVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    created_new_version = models.BooleanField(default=False)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Claimed work (controlplane.transitions): which worker attempt holds it, since when, when it was last queued.
    attempt = models.PositiveIntegerField(default=0)
    claimed_at = models.DateTimeField(null=True, blank=True)
    enqueued_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"registration of {self.source_uri} ({self.status})"

    @property
    def done(self) -> bool:
        return self.status in (self.Status.SUCCEEDED, self.Status.FAILED)


class Run(models.Model):
    """An activity that consumes dataset versions and produces dataset or model versions."""

    class Kind(models.TextChoices):
        TRANSFORM = "transform"
        TRAINING = "training"

    class Status(models.TextChoices):
        QUEUED = "queued"
        STARTING = "starting"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        STOPPING = "stopping"
        STOPPED = "stopped"

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    project = models.ForeignKey(Project, on_delete=models.PROTECT, related_name="runs")
    kind = models.CharField(max_length=20, choices=Kind.choices)
    recipe = models.CharField(max_length=100)
    recipe_version = models.CharField(max_length=40)
    recipe_fingerprint = models.CharField(max_length=64)
    parameters = models.JSONField(default=dict)
    seed = models.BigIntegerField(null=True, blank=True)
    backend = models.CharField(max_length=20, default="local")
    backend_job_id = models.CharField(max_length=200, blank=True)
    instance_type = models.CharField(max_length=50, default="local")
    instance_count = models.PositiveSmallIntegerField(default=1)
    # Where a transform's outputs go (one dataset per output name, under this base slug),
    # or the registered model a training run's model version is added to.
    output_name = models.SlugField(max_length=50, blank=True)
    max_runtime_seconds = models.PositiveIntegerField(default=3600)
    estimated_cost = models.DecimalField(max_digits=12, decimal_places=4, null=True, blank=True)
    reproduced_from = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="reproductions"
    )
    last_polled_at = models.DateTimeField(null=True, blank=True)
    # Only the poll chain carrying the current generation goes on; starting a new chain retires the old one. Each
    # poll takes the next tick, so two deliveries of one poll message never fork the chain.
    poll_generation = models.PositiveIntegerField(default=0)
    poll_tick = models.PositiveIntegerField(default=0)
    # The id the backend gives this run's job, known before the job exists, so a job whose start was lost can be
    # found and stopped; and when the job of a run that ended without success was last made sure to be stopped.
    expected_job_id = models.CharField(max_length=200, blank=True)
    job_released_at = models.DateTimeField(null=True, blank=True)
    # The last lines of the job's log, kept by the poller so pages never ask the backend (or AWS) themselves.
    log_tail = models.JSONField(default=list, blank=True)
    # Where the poller has read the job's log up to (the backend's opaque cursor), and how many chunks it stored.
    log_cursor = models.JSONField(null=True, blank=True)
    log_seq = models.PositiveIntegerField(default=0)
    # How far the job has got, as its recipe last said: {"done": 3, "total": 5, "unit": "folds"}.
    progress = models.JSONField(default=dict, blank=True)
    # A reproduction whose model has the same bytes as an existing version links to it instead of registering a copy.
    same_model_as = models.ForeignKey(
        "ModelVersion", null=True, blank=True, on_delete=models.PROTECT, related_name="reproduced_by"
    )
    # What the recipe ran in: the container image on SageMaker, the Python and scikit-learn versions locally.
    image = models.CharField(max_length=300, blank=True)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.QUEUED)
    status_reason = models.TextField(blank=True)
    log_key = models.CharField(max_length=1024, blank=True, help_text="Object store key of the finished log")
    metrics = models.JSONField(default=dict, blank=True)
    usage = models.JSONField(default=dict, blank=True)
    cost = models.DecimalField(max_digits=12, decimal_places=4, null=True, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # A start or a finish is claimed by one worker at a time (controlplane.transitions).
    attempt = models.PositiveIntegerField(default=0)
    claimed_at = models.DateTimeField(null=True, blank=True)
    enqueued_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            # The runs list reads a page in this order; without it every request sorts the whole table.
            models.Index(fields=["-created_at", "-id"], name="run_newest_first"),
            # Filtered by status, its count and page read this index, not rows that carry metrics and logs.
            models.Index(fields=["status", "-created_at", "-id"], name="run_status_newest_first"),
        ]

    def __str__(self) -> str:
        return f"run {self.pk} ({self.kind} {self.recipe})"

    @property
    def node_id(self) -> str:
        return f"run:{self.pk}"

    @property
    def done(self) -> bool:
        return self.status in (self.Status.SUCCEEDED, self.Status.FAILED, self.Status.STOPPED)


class RunInput(models.Model):
    run = models.ForeignKey(Run, on_delete=models.PROTECT, related_name="inputs")
    dataset_version = models.ForeignKey(DatasetVersion, on_delete=models.PROTECT, related_name="consumed_by")
    channel = models.CharField(max_length=50)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["run", "channel", "dataset_version"], name="run_input_unique")]

    def __str__(self) -> str:
        return f"{self.run} {self.channel}: {self.dataset_version}"


class RunEvent(WriteOnceModel):
    """Append-only record of every run state transition."""

    run = models.ForeignKey(Run, on_delete=models.PROTECT, related_name="events")
    from_status = models.CharField(max_length=20, blank=True)
    to_status = models.CharField(max_length=20)
    reason = models.TextField(blank=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"{self.run}: {self.from_status or '—'} → {self.to_status}"


class RunLogChunk(models.Model):
    """The lines a poll read from the job's log (each line is read once); joined into one log object at the end."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="log_chunks")
    seq = models.PositiveIntegerField()
    lines = models.JSONField(default=list)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["run", "seq"]
        constraints = [models.UniqueConstraint(fields=["run", "seq"], name="run_log_chunk_unique")]

    def __str__(self) -> str:
        return f"{self.run} log chunk {self.seq}"


class LineageEdge(models.Model):
    """One directed edge of the lineage graph: source was used by / produced target.

    Node ids are `<kind>:<pk>` with kind in dataset_version, run, model_version, deployment.
    """

    source = models.CharField(max_length=64)
    target = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["source", "target"], name="lineage_edge_unique")]
        indexes = [models.Index(fields=["target"])]

    def __str__(self) -> str:
        return f"{self.source} → {self.target}"


class RegisteredModel(ProjectOwned):
    """A named model within a project; its versions come from training runs."""


class ModelVersion(WriteOnceModel):
    """A trained artifact, write-once. Serving refuses an artifact whose SHA-256 differs from `sha256`."""

    registered_model = models.ForeignKey(RegisteredModel, on_delete=models.PROTECT, related_name="versions")
    number = models.PositiveIntegerField()
    run = models.OneToOneField(Run, on_delete=models.PROTECT, related_name="model_version")
    artifact_uri = models.CharField(max_length=1024)
    artifact_key = models.CharField(max_length=1024, blank=True, help_text="Object store key, when we store it")
    sha256 = models.CharField(max_length=64)
    size = models.BigIntegerField()
    framework = models.CharField(max_length=50, default="scikit-learn")
    framework_version = models.CharField(max_length=40, blank=True, help_text="The version it was trained with")
    # A compiled copy (ONNX) serves instead of the artifact only when it predicted as the original on held-out rows
    # at registration; compiled_check records that check, accepted or refused.
    compiled_runtime = models.CharField(max_length=50, blank=True, help_text="e.g. onnxruntime 1.32.0; empty: none")
    compiled_uri = models.CharField(max_length=1024, blank=True)
    compiled_key = models.CharField(max_length=1024, blank=True)
    compiled_sha256 = models.CharField(max_length=64, blank=True)
    compiled_check = models.JSONField(default=dict, blank=True)
    task = models.CharField(max_length=30, blank=True)
    target = models.CharField(max_length=200, blank=True)
    input_schema = models.JSONField(default=list)
    classes = models.JSONField(null=True, blank=True)
    metrics = models.JSONField(default=dict)
    metadata = models.JSONField(default=dict, help_text="model.json as the recipe wrote it")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["registered_model", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["registered_model", "number"], name="model_version_unique_number")
        ]

    def __str__(self) -> str:
        return f"{self.registered_model} v{self.number}"

    @property
    def node_id(self) -> str:
        return f"model_version:{self.pk}"
