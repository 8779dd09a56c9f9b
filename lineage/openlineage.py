"""OpenLineage export: each run as a RunEvent, built and checked with the openlineage-python client.

A run is an OpenLineage job run; its input and output dataset versions are datasets named by where their
bytes are stored (the OpenLineage dataset naming spec), with a symlink to `<project>/<dataset>` so that
lineage tools can group the versions of one dataset.
"""

from __future__ import annotations

import functools
import tomllib
from datetime import UTC, datetime
from typing import Any, ClassVar
from urllib.parse import unquote, urlparse

import attr
import requests
from django.conf import settings
from django.core.exceptions import ObjectDoesNotExist
from django.db.models import Prefetch, QuerySet, prefetch_related_objects
from openlineage.client import event_v2
from openlineage.client.facet_v2 import (
    DatasetFacet,
    RunFacet,
    dataset_version_dataset,
    datasource_dataset,
    error_message_run,
    job_type_job,
    processing_engine_run,
    schema_dataset,
    symlinks_dataset,
)
from openlineage.client.naming import dataset as naming
from openlineage.client.serde import Serde
from openlineage.client.transport.http import HttpConfig, HttpTransport

from controlplane import access
from lineage.models import DatasetVersion, Run, RunInput
from lineage.selectors import lineage_downstream_edges, lineage_upstream_edges, parse_node_id
from workers.errors import BackendError

PRODUCER = "https://controlplane.internal/controlplane"
CONTROLPLANE_RUN_FACET_SCHEMA_URL = (
    "https://controlplane.internal/spec/facets/1-0-0/ControlPlaneRunFacet.json#/$defs/ControlPlaneRunFacet"
)
CONTROLPLANE_HIDDEN_FACET_SCHEMA_URL = (
    "https://controlplane.internal/spec/facets/1-0-0/ControlPlaneHiddenRunFacet.json#/$defs/ControlPlaneHiddenRunFacet"
)
LINEAGE_ENDPOINT = "api/v1/lineage"
EMIT_TIMEOUT_SECONDS = 5.0

_EVENT_TYPES = {
    Run.Status.QUEUED: event_v2.RunState.START,
    Run.Status.STARTING: event_v2.RunState.RUNNING,
    Run.Status.RUNNING: event_v2.RunState.RUNNING,
    Run.Status.STOPPING: event_v2.RunState.RUNNING,
    Run.Status.SUCCEEDED: event_v2.RunState.COMPLETE,
    Run.Status.FAILED: event_v2.RunState.FAIL,
    Run.Status.STOPPED: event_v2.RunState.ABORT,
}


@attr.define
class ControlPlaneRunFacet(RunFacet):
    """What ControlPlane knows about how a run was made: enough to make it again."""

    kind: str
    recipe: str
    recipe_version: str
    recipe_fingerprint: str
    parameters: dict[str, Any]
    backend: str
    backend_job_id: str
    seed: int | None = attr.field(default=None)
    _additional_skip_redact: ClassVar[list[str]] = ["kind", "recipe", "recipe_version", "recipe_fingerprint"]

    @staticmethod
    def _get_schema() -> str:
        return CONTROLPLANE_RUN_FACET_SCHEMA_URL


# --- public API -----------------------------------------------------------------------------


def run_event(run: Run) -> dict[str, Any]:
    """The run's current state as one OpenLineage RunEvent, as a JSON-ready dict."""
    prefetch_related_objects([run], *_event_prefetches())
    return Serde.to_dict(_build_run_event(run))


def lineage_run_events(node_id: str, *, user: Any = None) -> list[dict[str, Any]]:
    """The RunEvents of every run upstream and downstream of a node (and of the node, if it is a run).

    Ordered by event time, then run id. Two queries walk the graph and three load the runs with their
    inputs and outputs, however many runs there are. For a `user`, the walk stops at nodes in projects they may not
    see: those runs are not exported, and a run's inputs and outputs there are left out and counted in its
    `controlplane_hidden` facet. (`user=None` is the system: everything.)
    """
    kind, pk = parse_node_id(node_id)
    edges = lineage_upstream_edges(node_id, user=user) + lineage_downstream_edges(node_id, user=user)
    run_ids = {pk} if kind == "run" else set()
    for edge in edges:
        for node in edge:
            node_kind, _, node_pk = node.partition(":")
            # Kinds this module does not describe (model versions, deployments, …) are skipped, not errors.
            if node_kind == "run" and node_pk.isdigit():
                run_ids.add(int(node_pk))
    if not run_ids:
        return []
    found = _runs_for_events().filter(pk__in=run_ids)
    if user is not None:
        found = access.scope(found, user)
    runs = sorted(found, key=lambda run: (_event_time(run), run.pk))
    visible = _visible_version_ids(runs, user)
    return [Serde.to_dict(_build_run_event(run, visible=visible)) for run in runs]


def _visible_version_ids(runs: list[Run], user: Any) -> set[int] | None:
    """Of the runs' inputs and outputs, the ids of the dataset versions `user` may see (None: all of them)."""
    if user is None:
        return None
    ids = {i.dataset_version_id for run in runs for i in run.inputs.all()}
    ids |= {version.pk for run in runs for version in run.output_versions.all()}
    return set(access.scope(DatasetVersion.objects.filter(pk__in=ids), user).values_list("pk", flat=True))


def openlineage_emit(run: Run) -> bool:
    """POST the run's RunEvent to `settings.OPENLINEAGE_URL`; False if no URL is configured.

    The transport does not retry: the Celery task that calls this owns retries, so a failure to deliver
    raises `BackendError(permanent=False)` at once. A 4xx answer (other than 408/429) means the receiver
    rejected the event itself, which sending it again cannot fix, so that one is permanent.
    """
    url = settings.OPENLINEAGE_URL
    if not url:
        return False
    prefetch_related_objects([run], *_event_prefetches())
    event = _build_run_event(run)
    try:
        transport = HttpTransport(
            HttpConfig(url=url, endpoint=LINEAGE_ENDPOINT, timeout=EMIT_TIMEOUT_SECONDS, retry={"total": 0})
        )
    except ValueError as exc:
        raise BackendError(f"OPENLINEAGE_URL: expected an http(s) URL, got {url!r}", permanent=True) from exc
    try:
        transport.emit(event)
    except requests.HTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        permanent = status is not None and 400 <= status < 500 and status not in (408, 429)
        raise BackendError(
            f"OpenLineage endpoint {url} answered HTTP {status} to the event of run {run.pk}", permanent=permanent
        ) from exc
    except requests.RequestException as exc:
        raise BackendError(
            f"could not send the OpenLineage event of run {run.pk} to {url}: {exc}", permanent=False
        ) from exc
    finally:
        transport.close()
    return True


def dataset_namespace_and_name(uri: str) -> tuple[str, str]:
    """OpenLineage dataset naming: s3://bucket/key → ("s3://bucket", "key"); file:///path → ("file", "/path")."""
    parsed = urlparse(uri)
    path = unquote(parsed.path)
    if parsed.scheme in ("s3", "s3a", "s3n"):
        naming_for: naming.DatasetNaming = naming.S3(bucket_name=parsed.netloc, object_key=path.lstrip("/"))
    elif parsed.scheme == "gs":
        naming_for = naming.GCS(bucket_name=parsed.netloc, object_key=path.lstrip("/"))
    elif parsed.scheme == "file" and parsed.netloc in ("", "localhost"):
        naming_for = naming.LocalFileSystem(path=path)
    elif parsed.scheme == "file":
        naming_for = naming.RemoteFileSystem(host=parsed.netloc, path=path)
    elif parsed.scheme and parsed.netloc:
        return f"{parsed.scheme}://{parsed.netloc}", path
    else:
        # A bare path: the local file system.
        naming_for = naming.LocalFileSystem(path=uri)
    return naming_for.get_namespace(), naming_for.get_name()


# --- building the event ---------------------------------------------------------------------


def _event_prefetches() -> list[Prefetch[Any]]:
    return [
        Prefetch(
            "inputs",
            queryset=RunInput.objects.select_related(
                "dataset_version__dataset__project", "dataset_version__profile"
            ).order_by("channel", "dataset_version_id"),
        ),
        Prefetch(
            "output_versions",
            queryset=DatasetVersion.objects.select_related("dataset__project", "profile").order_by("pk"),
        ),
    ]


def _runs_for_events() -> QuerySet[Run]:
    return Run.objects.select_related("project").prefetch_related(*_event_prefetches())


def _event_time(run: Run) -> datetime:
    moment = run.finished_at or run.started_at or run.created_at or datetime.now(UTC)
    return moment.astimezone(UTC)


def _namespace() -> str:
    return settings.OPENLINEAGE_NAMESPACE or "controlplane"


@functools.cache
def _controlplane_version() -> str:
    try:
        with open(settings.BASE_DIR / "pyproject.toml", "rb") as pyproject:
            return str(tomllib.load(pyproject)["project"]["version"])
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return "unknown"


@attr.define
class ControlPlaneHiddenRunFacet(RunFacet):
    """How many of the run's inputs and outputs were left out of this export: they belong to projects the reader
    may not see."""

    inputs: int
    outputs: int

    @staticmethod
    def _get_schema() -> str:
        return CONTROLPLANE_HIDDEN_FACET_SCHEMA_URL


def _build_run_event(run: Run, *, visible: set[int] | None = None) -> event_v2.RunEvent:
    run_facets: dict[str, RunFacet] = {
        "processing_engine": processing_engine_run.ProcessingEngineRunFacet(
            version=_controlplane_version(), name="controlplane", producer=PRODUCER
        ),
        "controlplane_run": ControlPlaneRunFacet(
            kind=run.kind,
            recipe=run.recipe,
            recipe_version=run.recipe_version,
            recipe_fingerprint=run.recipe_fingerprint,
            parameters=run.parameters,
            seed=run.seed,
            backend=run.backend,
            backend_job_id=run.backend_job_id,
            producer=PRODUCER,
        ),
    }
    if run.status == Run.Status.FAILED:
        run_facets["errorMessage"] = error_message_run.ErrorMessageRunFacet(
            message=run.status_reason or "run failed", programmingLanguage="python", producer=PRODUCER
        )
    job = event_v2.Job(
        namespace=_namespace(),
        name=f"{run.project.slug}.{run.kind}.{run.recipe}",
        facets={
            "jobType": job_type_job.JobTypeJobFacet(
                processingType="BATCH", integration="CONTROLPLANE", jobType=run.kind.upper(), producer=PRODUCER
            )
        },
    )
    input_versions: dict[int, DatasetVersion] = {}
    for run_input in run.inputs.all():
        input_versions.setdefault(run_input.dataset_version_id, run_input.dataset_version)
    output_versions = list(run.output_versions.all())
    if visible is not None:
        shown_inputs = [v for v in input_versions.values() if v.pk in visible]
        shown_outputs = [v for v in output_versions if v.pk in visible]
        left_out = (len(input_versions) - len(shown_inputs), len(output_versions) - len(shown_outputs))
        if any(left_out):
            run_facets["controlplane_hidden"] = ControlPlaneHiddenRunFacet(
                inputs=left_out[0], outputs=left_out[1], producer=PRODUCER
            )
        input_versions = {v.pk: v for v in shown_inputs}
        output_versions = shown_outputs
    inputs = [
        event_v2.InputDataset(*dataset_namespace_and_name(version.uri), facets=_dataset_facets(version))
        for version in input_versions.values()
    ]
    outputs = [
        event_v2.OutputDataset(*dataset_namespace_and_name(version.uri), facets=_dataset_facets(version))
        for version in output_versions
    ]
    return event_v2.RunEvent(
        eventType=_EVENT_TYPES.get(run.status, event_v2.RunState.OTHER),
        eventTime=_event_time(run).isoformat(),
        run=event_v2.Run(runId=str(run.uuid), facets=run_facets),
        job=job,
        inputs=inputs,
        outputs=outputs,
        producer=PRODUCER,
    )


def _dataset_facets(version: DatasetVersion) -> dict[str, DatasetFacet]:
    namespace, _ = dataset_namespace_and_name(version.uri)
    dataset = version.dataset
    facets: dict[str, DatasetFacet] = {
        "version": dataset_version_dataset.DatasetVersionDatasetFacet(datasetVersion=version.sha256, producer=PRODUCER),
        "symlinks": symlinks_dataset.SymlinksDatasetFacet(
            identifiers=[
                symlinks_dataset.Identifier(
                    namespace=_namespace(), name=f"{dataset.project.slug}/{dataset.slug}", type="DATASET"
                )
            ],
            producer=PRODUCER,
        ),
        "dataSource": datasource_dataset.DatasourceDatasetFacet(name=namespace, uri=version.uri, producer=PRODUCER),
    }
    fields = _schema_fields(version)
    if fields:
        facets["schema"] = schema_dataset.SchemaDatasetFacet(fields=fields, producer=PRODUCER)
    return facets


def _schema_fields(version: DatasetVersion) -> list[schema_dataset.SchemaDatasetFacetFields]:
    """Typed fields from a ready profile; otherwise the column names alone (type unknown)."""
    try:
        profile = version.profile
    except ObjectDoesNotExist:
        profile = None
    if profile is not None and profile.status == profile.Status.READY and isinstance(profile.profile, dict):
        schema = profile.profile.get("schema")
        if isinstance(schema, list) and schema:
            return [
                schema_dataset.SchemaDatasetFacetFields(
                    name=str(column["name"]), type=str(column["type"]) if column.get("type") else None
                )
                for column in schema
                if isinstance(column, dict) and column.get("name") is not None
            ]
    return [schema_dataset.SchemaDatasetFacetFields(name=str(column)) for column in version.columns or []]
