"""OpenLineage export: RunEvents that the client's own classes accept, and delivery over real HTTP."""

from __future__ import annotations

import json
import socket
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from openlineage.client import event_v2
from openlineage.client.facet_v2 import (
    dataset_version_dataset,
    datasource_dataset,
    error_message_run,
    job_type_job,
    processing_engine_run,
    schema_dataset,
    symlinks_dataset,
)
from openlineage.client.serde import Serde

from controlplane.models import Project
from lineage.models import Dataset, DatasetProfile, DatasetVersion, LineageEdge, Run, RunInput
from lineage.openlineage import (
    CONTROLPLANE_RUN_FACET_SCHEMA_URL,
    PRODUCER,
    ControlPlaneRunFacet,
    dataset_namespace_and_name,
    lineage_run_events,
    openlineage_emit,
    run_event,
)
from workers.errors import BackendError

T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
INPUT_URI = "file:///srv/controlplane/objects/datasets/customers/v1/data.csv"
OUTPUT_URI = "s3://ml-data/datasets/customers/v2/data.parquet"


@dataclass
class Graph:
    project: Project
    dataset: Dataset
    raw: DatasetVersion
    clean: DatasetVersion
    run: Run


def _version(dataset: Dataset, number: int, uri: str, user: Any, **extra: Any) -> DatasetVersion:
    return DatasetVersion.objects.create(
        dataset=dataset,
        number=number,
        sha256=f"{number:x}" * 64,
        uri=uri,
        storage_key=f"sha256/{number:x}",
        size=1024 * number,
        format=DatasetVersion.Format.CSV,
        content_format=DatasetVersion.Format.CSV,
        columns=["age", "income", "churned"],
        row_count=100,
        source=extra.pop("source", DatasetVersion.Source.UPLOAD),
        created_by=user,
        **extra,
    )


def _run(project: Project, user: Any, **fields: Any) -> Run:
    values: dict[str, Any] = {
        "kind": Run.Kind.TRANSFORM,
        "recipe": "clean",
        "recipe_version": "3",
        "recipe_fingerprint": "f" * 64,
        "parameters": {"drop_na": True, "min_age": 18},
        "seed": 42,
        "backend": "local",
        "backend_job_id": "local-7",
        "status": Run.Status.SUCCEEDED,
        "started_at": T0,
        "finished_at": T0 + timedelta(minutes=5),
    }
    values.update(fields)
    return Run.objects.create(project=project, created_by=user, **values)


@pytest.fixture
def graph(users: Any) -> Graph:
    user = users.data_scientist
    project = Project.objects.create(name="Churn", slug="churn", created_by=user)
    dataset = Dataset.objects.create(project=project, name="Customers", slug="customers", created_by=user)
    raw = _version(dataset, 1, INPUT_URI, user)
    DatasetProfile.objects.create(
        version=raw,
        status=DatasetProfile.Status.READY,
        profile={
            "schema": [
                {"name": "age", "type": "int64"},
                {"name": "income", "type": "float64"},
                {"name": "churned", "type": "bool"},
            ],
            "row_count": 100,
        },
    )
    run = _run(project, user)
    RunInput.objects.create(run=run, dataset_version=raw, channel="train")
    clean = _version(dataset, 2, OUTPUT_URI, user, source=DatasetVersion.Source.DERIVED, produced_by=run)
    LineageEdge.objects.create(source=raw.node_id, target=run.node_id)
    LineageEdge.objects.create(source=run.node_id, target=clean.node_id)
    return Graph(project=project, dataset=dataset, raw=raw, clean=clean, run=run)


# --- re-parsing with the client's classes ---------------------------------------------------------

RUN_FACETS: dict[str, type] = {
    "processing_engine": processing_engine_run.ProcessingEngineRunFacet,
    "errorMessage": error_message_run.ErrorMessageRunFacet,
    "controlplane_run": ControlPlaneRunFacet,
}


def _facet(cls: type, data: dict[str, Any], **nested: Any) -> Any:
    """Build a facet from its JSON form; the client's attrs validators run in the constructor."""
    fields = {key: value for key, value in data.items() if not key.startswith("_")}
    fields.update(nested)
    facet = cls(producer=data["_producer"], **fields)
    assert facet._schemaURL == data["_schemaURL"]
    return facet


def _dataset_facets(facets: dict[str, Any]) -> dict[str, Any]:
    parsed: dict[str, Any] = {
        "version": _facet(dataset_version_dataset.DatasetVersionDatasetFacet, facets["version"]),
        "dataSource": _facet(datasource_dataset.DatasourceDatasetFacet, facets["dataSource"]),
        "symlinks": _facet(
            symlinks_dataset.SymlinksDatasetFacet,
            facets["symlinks"],
            identifiers=[symlinks_dataset.Identifier(**i) for i in facets["symlinks"]["identifiers"]],
        ),
    }
    if "schema" in facets:
        parsed["schema"] = _facet(
            schema_dataset.SchemaDatasetFacet,
            facets["schema"],
            fields=[schema_dataset.SchemaDatasetFacetFields(**f) for f in facets["schema"]["fields"]],
        )
    assert set(parsed) == set(facets), f"unexpected dataset facets {set(facets) - set(parsed)}"
    return parsed


def parse_run_event(event: dict[str, Any]) -> event_v2.RunEvent:
    """The event rebuilt from its JSON form with the client's classes, so every client validator runs."""
    run_facets = event["run"].get("facets", {})
    assert set(run_facets) <= set(RUN_FACETS), f"unexpected run facets {set(run_facets) - set(RUN_FACETS)}"
    job_facets = event["job"].get("facets", {})
    assert set(job_facets) == {"jobType"}
    return event_v2.RunEvent(
        eventType=event_v2.RunState(event["eventType"]),
        eventTime=event["eventTime"],
        producer=event["producer"],
        run=event_v2.Run(
            runId=event["run"]["runId"],
            facets={key: _facet(RUN_FACETS[key], value) for key, value in run_facets.items()},
        ),
        job=event_v2.Job(
            namespace=event["job"]["namespace"],
            name=event["job"]["name"],
            facets={"jobType": _facet(job_type_job.JobTypeJobFacet, job_facets["jobType"])},
        ),
        inputs=[
            event_v2.InputDataset(d["namespace"], d["name"], facets=_dataset_facets(d["facets"]))
            for d in event.get("inputs", [])
        ],
        outputs=[
            event_v2.OutputDataset(d["namespace"], d["name"], facets=_dataset_facets(d["facets"]))
            for d in event.get("outputs", [])
        ],
    )


def assert_valid_run_event(event: dict[str, Any]) -> None:
    # What the OpenLineage 2-0-2 spec requires of a RunEvent, its run, job and datasets, and every facet.
    assert {"eventTime", "producer", "schemaURL", "run", "job"} <= set(event)
    assert event["schemaURL"] == "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent"
    assert event["producer"] == PRODUCER
    assert datetime.fromisoformat(event["eventTime"]).tzinfo is not None
    assert str(uuid.UUID(event["run"]["runId"])) == event["run"]["runId"]
    assert event["job"]["namespace"] and event["job"]["name"]
    facets = [*event["run"]["facets"].values(), *event["job"]["facets"].values()]
    for dataset in event.get("inputs", []) + event.get("outputs", []):
        assert dataset["namespace"] and dataset["name"]
        facets.extend(dataset["facets"].values())
    for facet in facets:
        assert facet["_producer"] == PRODUCER
        assert facet["_schemaURL"].startswith("https://")
    # Rebuilt with the client's classes, it serialises back to exactly the same JSON.
    assert Serde.to_dict(parse_run_event(event)) == event
    assert json.loads(json.dumps(event)) == event


# --- the events -----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_events_for_an_output_version_include_the_run_with_its_input_and_output(graph: Graph) -> None:
    events = lineage_run_events(graph.clean.node_id)

    assert len(events) == 1
    event = events[0]
    assert_valid_run_event(event)
    assert event["eventType"] == "COMPLETE"
    assert event["eventTime"] == "2025-03-01T09:05:00+00:00"
    assert event["run"]["runId"] == str(graph.run.uuid)
    assert event["job"]["namespace"] == "controlplane"
    assert event["job"]["name"] == "churn.transform.clean"
    assert event["job"]["facets"]["jobType"]["processingType"] == "BATCH"
    assert event["job"]["facets"]["jobType"]["integration"] == "CONTROLPLANE"
    assert event["job"]["facets"]["jobType"]["jobType"] == "TRANSFORM"
    assert event["run"]["facets"]["processing_engine"]["name"] == "controlplane"
    assert "errorMessage" not in event["run"]["facets"]

    [source] = event["inputs"]
    assert (source["namespace"], source["name"]) == ("file", "/srv/controlplane/objects/datasets/customers/v1/data.csv")
    assert source["facets"]["version"]["datasetVersion"] == graph.raw.sha256
    assert source["facets"]["dataSource"] == {
        "_producer": PRODUCER,
        "_schemaURL": source["facets"]["dataSource"]["_schemaURL"],
        "name": "file",
        "uri": INPUT_URI,
    }
    assert source["facets"]["symlinks"]["identifiers"] == [
        {"namespace": "controlplane", "name": "churn/customers", "type": "DATASET"}
    ]
    # A ready profile gives the column types.
    assert [(f["name"], f.get("type")) for f in source["facets"]["schema"]["fields"]] == [
        ("age", "int64"),
        ("income", "float64"),
        ("churned", "bool"),
    ]

    [made] = event["outputs"]
    assert (made["namespace"], made["name"]) == ("s3://ml-data", "datasets/customers/v2/data.parquet")
    assert made["facets"]["version"]["datasetVersion"] == graph.clean.sha256
    assert made["facets"]["dataSource"]["name"] == "s3://ml-data"
    # Both versions are one dataset to a lineage tool.
    assert made["facets"]["symlinks"] == source["facets"]["symlinks"]
    # No profile yet: the column names, without types.
    assert [(f["name"], f.get("type")) for f in made["facets"]["schema"]["fields"]] == [
        ("age", None),
        ("income", None),
        ("churned", None),
    ]


@pytest.mark.django_db
def test_the_namespace_setting_names_jobs_and_symlinks(graph: Graph, settings: Any) -> None:
    settings.OPENLINEAGE_NAMESPACE = "ml-prod"
    event = run_event(graph.run)
    assert event["job"]["namespace"] == "ml-prod"
    assert event["inputs"][0]["facets"]["symlinks"]["identifiers"][0]["namespace"] == "ml-prod"
    # Dataset namespaces come from where the bytes are, not from the setting.
    assert event["inputs"][0]["namespace"] == "file"


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("s3://ml-data/datasets/a/v1.csv", ("s3://ml-data", "datasets/a/v1.csv")),
        ("s3://ml-data/prefix/", ("s3://ml-data", "prefix/")),
        ("file:///var/objects/ab/cd.csv", ("file", "/var/objects/ab/cd.csv")),
        ("file:///var/with%20space.csv", ("file", "/var/with space.csv")),
        ("file://nas01/share/x.csv", ("file://nas01", "/share/x.csv")),
        ("gs://bucket/k.parquet", ("gs://bucket", "k.parquet")),
        ("/plain/path.csv", ("file", "/plain/path.csv")),
    ],
)
def test_dataset_namespace_and_name_follow_the_naming_spec(uri: str, expected: tuple[str, str]) -> None:
    assert dataset_namespace_and_name(uri) == expected


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("status", "event_type"),
    [
        (Run.Status.QUEUED, "START"),
        (Run.Status.STARTING, "RUNNING"),
        (Run.Status.RUNNING, "RUNNING"),
        (Run.Status.STOPPING, "RUNNING"),
        (Run.Status.SUCCEEDED, "COMPLETE"),
        (Run.Status.FAILED, "FAIL"),
        (Run.Status.STOPPED, "ABORT"),
    ],
)
def test_event_type_follows_the_run_status(graph: Graph, status: str, event_type: str) -> None:
    Run.objects.filter(pk=graph.run.pk).update(status=status, status_reason="out of memory")
    event = run_event(Run.objects.get(pk=graph.run.pk))
    assert event["eventType"] == event_type
    assert ("errorMessage" in event["run"]["facets"]) == (status == Run.Status.FAILED)
    assert_valid_run_event(event)


@pytest.mark.django_db
def test_event_time_is_when_the_run_last_moved(graph: Graph) -> None:
    Run.objects.filter(pk=graph.run.pk).update(finished_at=None)
    assert run_event(Run.objects.get(pk=graph.run.pk))["eventTime"] == "2025-03-01T09:00:00+00:00"
    Run.objects.filter(pk=graph.run.pk).update(started_at=None, created_at=T0 - timedelta(hours=1))
    assert run_event(Run.objects.get(pk=graph.run.pk))["eventTime"] == "2025-03-01T08:00:00+00:00"


@pytest.mark.django_db
def test_a_failed_run_carries_its_error_message(graph: Graph) -> None:
    Run.objects.filter(pk=graph.run.pk).update(
        status=Run.Status.FAILED, status_reason="recipe exited with code 1: KeyError 'income'"
    )
    event = run_event(Run.objects.get(pk=graph.run.pk))
    error = event["run"]["facets"]["errorMessage"]
    assert error["message"] == "recipe exited with code 1: KeyError 'income'"
    assert error["programmingLanguage"] == "python"
    assert error["_schemaURL"].startswith("https://openlineage.io/spec/facets/")
    assert event["eventType"] == "FAIL"


@pytest.mark.django_db
def test_the_controlplane_run_facet_says_how_to_make_the_run_again(graph: Graph) -> None:
    facet = run_event(graph.run)["run"]["facets"]["controlplane_run"]
    assert facet == {
        "_producer": PRODUCER,
        "_schemaURL": CONTROLPLANE_RUN_FACET_SCHEMA_URL,
        "kind": "transform",
        "recipe": "clean",
        "recipe_version": "3",
        "recipe_fingerprint": "f" * 64,
        "parameters": {"drop_na": True, "min_age": 18},
        "seed": 42,
        "backend": "local",
        "backend_job_id": "local-7",
    }
    assert CONTROLPLANE_RUN_FACET_SCHEMA_URL.startswith("https://controlplane.internal/spec/facets/1-0-0/")


@pytest.mark.django_db
def test_lineage_walks_both_ways_orders_by_time_and_skips_unknown_node_kinds(graph: Graph, users: Any) -> None:
    user = users.data_scientist
    training = _run(
        graph.project,
        user,
        kind=Run.Kind.TRAINING,
        recipe="xgboost",
        status=Run.Status.RUNNING,
        started_at=T0 + timedelta(hours=1),
        finished_at=None,
        seed=None,
    )
    RunInput.objects.create(run=training, dataset_version=graph.clean, channel="train")
    RunInput.objects.create(run=training, dataset_version=graph.clean, channel="validation")
    LineageEdge.objects.create(source=graph.clean.node_id, target=training.node_id)
    # Nodes of kinds added later: the export must keep working, and skip them.
    LineageEdge.objects.create(source=training.node_id, target="model_version:7")
    LineageEdge.objects.create(source="model_version:7", target="deployment:3")
    # A run that is not connected never appears.
    _run(graph.project, user, recipe="unrelated")

    from_raw = lineage_run_events(graph.raw.node_id)
    assert [e["run"]["runId"] for e in from_raw] == [str(graph.run.uuid), str(training.uuid)]
    assert [e["eventType"] for e in from_raw] == ["COMPLETE", "RUNNING"]
    assert lineage_run_events("deployment:3") == from_raw
    assert lineage_run_events(training.node_id) == from_raw
    # The run itself is included, and downstream runs too.
    assert [e["run"]["runId"] for e in lineage_run_events(graph.run.node_id)] == [
        str(graph.run.uuid),
        str(training.uuid),
    ]

    training_event = from_raw[1]
    assert training_event["job"]["name"] == "churn.training.xgboost"
    assert training_event["job"]["facets"]["jobType"]["jobType"] == "TRAINING"
    # The same version read on two channels is one input dataset.
    assert [d["name"] for d in training_event["inputs"]] == ["datasets/customers/v2/data.parquet"]
    assert "outputs" not in training_event or training_event["outputs"] == []
    assert "seed" not in training_event["run"]["facets"]["controlplane_run"]
    for event in from_raw:
        assert_valid_run_event(event)


@pytest.mark.django_db
def test_a_node_without_runs_has_no_events(graph: Graph, users: Any) -> None:
    lone = _version(graph.dataset, 3, "s3://ml-data/lone.csv", users.data_scientist)
    assert lineage_run_events(lone.node_id) == []
    with pytest.raises(ValueError):
        lineage_run_events("dataset:1")


@pytest.mark.django_db
def test_the_query_count_does_not_grow_with_the_number_of_runs(graph: Graph, users: Any) -> None:
    def count_queries() -> int:
        with CaptureQueriesContext(connection) as queries:
            lineage_run_events(graph.raw.node_id)
        return len(queries)

    one_run = count_queries()
    previous = graph.clean
    for number in range(3, 7):
        run = _run(graph.project, users.data_scientist, recipe=f"step{number}")
        RunInput.objects.create(run=run, dataset_version=previous, channel="train")
        LineageEdge.objects.create(source=previous.node_id, target=run.node_id)
        previous = _version(graph.dataset, number, f"s3://ml-data/v{number}.csv", users.data_scientist, produced_by=run)
        LineageEdge.objects.create(source=run.node_id, target=previous.node_id)

    assert len(lineage_run_events(graph.raw.node_id)) == 5
    assert count_queries() == one_run <= 5


# --- emission over HTTP ---------------------------------------------------------------------------


class _LineageReceiver(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.received.append(  # type: ignore[attr-defined]
            {"path": self.path, "content_type": self.headers["Content-Type"], "body": body}
        )
        self.send_response(self.server.status)  # type: ignore[attr-defined]
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


@pytest.fixture
def receiver() -> Any:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _LineageReceiver)
    server.received = []  # type: ignore[attr-defined]
    server.status = 201  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.mark.django_db
def test_emit_posts_the_run_event_to_the_lineage_endpoint(graph: Graph, receiver: Any, settings: Any) -> None:
    settings.OPENLINEAGE_URL = f"http://127.0.0.1:{receiver.server_port}"

    assert openlineage_emit(graph.run) is True

    [request] = receiver.received
    assert request["path"] == "/api/v1/lineage"
    assert request["content_type"] == "application/json"
    assert json.loads(request["body"]) == run_event(graph.run)


@pytest.mark.django_db
def test_emit_does_nothing_when_no_url_is_configured(graph: Graph, receiver: Any, settings: Any) -> None:
    settings.OPENLINEAGE_URL = None
    assert openlineage_emit(graph.run) is False
    assert receiver.received == []


@pytest.mark.django_db
def test_emit_to_a_closed_port_is_a_retryable_error(graph: Graph, settings: Any) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings.OPENLINEAGE_URL = f"http://127.0.0.1:{port}"

    with pytest.raises(BackendError) as raised:
        openlineage_emit(graph.run)
    assert raised.value.permanent is False
    assert f"run {graph.run.pk}" in raised.value.message


@pytest.mark.django_db
@pytest.mark.parametrize(("status", "permanent"), [(503, False), (429, False), (400, True), (422, True)])
def test_emit_rejected_by_the_receiver(
    graph: Graph, receiver: Any, settings: Any, status: int, permanent: bool
) -> None:
    receiver.status = status
    settings.OPENLINEAGE_URL = f"http://127.0.0.1:{receiver.server_port}"

    with pytest.raises(BackendError) as raised:
        openlineage_emit(graph.run)
    assert raised.value.permanent is permanent
    assert f"HTTP {status}" in raised.value.message
    # No retries inside the transport: the Celery task owns them.
    assert len(receiver.received) == 1


@pytest.mark.django_db
def test_a_malformed_url_is_a_permanent_error_naming_the_setting(graph: Graph, settings: Any) -> None:
    settings.OPENLINEAGE_URL = "lineage.internal:5000"
    with pytest.raises(BackendError) as raised:
        openlineage_emit(graph.run)
    assert raised.value.permanent is True
    assert "OPENLINEAGE_URL" in raised.value.message
