"""The data scientist's journey on the local backend with a real worker:
upload → profile → derive → lineage → OpenLineage export; and file:// registrations."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from django.conf import settings
from django.urls import reverse

from lineage.models import DatasetProfile, DatasetRegistration, DatasetVersion, Run
from tests.fixtures.processes import wait_for
from tests.lineage.conftest import upload

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def wait_profile(version_id: int) -> DatasetProfile:
    return wait_for(
        lambda: DatasetProfile.objects.filter(version_id=version_id, status__in=["ready", "failed"]).first(),
        timeout=120,
        what=f"the profile of version {version_id}",
    )


def test_upload_profile_derive_lineage_export(celery_worker, api_client_for, users, project, cancer_csv) -> None:
    client = api_client_for(users.data_scientist)
    version = upload(client, project="cancer", dataset="breast-cancer", name="bc.csv", content=cancer_csv).json()

    profile = wait_profile(version["id"])
    assert profile.status == "ready", profile.error
    columns = profile.profile["columns"]
    assert profile.profile["row_count"] == 569
    assert columns["target"]["count"] == 569 and columns["mean radius"]["kind"] == "numeric"
    assert sum(columns["mean radius"]["histogram"]["counts"]) == 569
    api_profile = client.get(reverse("api-dataset-version-profile", args=[version["id"]])).json()
    assert api_profile["status"] == "ready" and api_profile["progress"] == 1.0

    launched = client.post(
        reverse("api-run-transform-create"),
        {
            "inputs": [version["id"]],
            "recipe": "split",
            "parameters": {"test_fraction": 0.25, "seed": 7, "stratify_column": "target"},
        },
        format="json",
    )
    assert launched.status_code == 201, launched.content
    run_id = launched.json()["id"]
    run = wait_for(
        lambda: Run.objects.filter(pk=run_id, status__in=["succeeded", "failed"]).first(),
        timeout=180,
        what="the split run",
    )
    assert run.status == "succeeded", run.status_reason
    assert [e.to_status for e in run.events.all()] == ["queued", "starting", "running", "succeeded"]

    outputs = {v.dataset.slug: v for v in DatasetVersion.objects.filter(produced_by=run).select_related("dataset")}
    assert set(outputs) == {"breast-cancer-split-train", "breast-cancer-split-test"}
    assert outputs["breast-cancer-split-train"].row_count + outputs["breast-cancer-split-test"].row_count == 569
    assert (
        outputs["breast-cancer-split-test"].row_count == round(569 * 0.25)
        or abs(outputs["breast-cancer-split-test"].row_count - 142) <= 1
    )
    logs = client.get(reverse("api-run-logs", args=[run_id])).json()["lines"]
    assert any("rows_out" in line for line in logs), logs

    test_node = outputs["breast-cancer-split-test"].node_id
    graph = client.get(reverse("api-lineage", args=[test_node])).json()
    node_ids = {n["id"] for n in graph["nodes"]}
    assert {f"dataset_version:{version['id']}", f"run:{run_id}", test_node} <= node_ids
    upstream = client.get(reverse("api-lineage", args=[f"dataset_version:{version['id']}"])).json()
    assert {n["id"] for n in upstream["nodes"]} >= {v.node_id for v in outputs.values()}

    events = client.get(reverse("api-lineage-openlineage", args=[test_node])).json()
    assert len(events) == 1 and events[0]["eventType"] == "COMPLETE"
    assert events[0]["run"]["runId"] == str(run.uuid)
    assert {o["facets"]["version"]["datasetVersion"] for o in events[0]["outputs"]} == {
        v.sha256 for v in outputs.values()
    }

    # Deriving again with the same inputs and seed gives the very same bytes: the same versions.
    again = client.post(
        reverse("api-run-transform-create"),
        {
            "inputs": [version["id"]],
            "recipe": "split",
            "parameters": {"test_fraction": 0.25, "seed": 7, "stratify_column": "target"},
        },
        format="json",
    ).json()
    wait_for(
        lambda: Run.objects.filter(pk=again["id"], status="succeeded").exists(), timeout=180, what="the second split"
    )
    assert DatasetVersion.objects.filter(dataset__slug="breast-cancer-split-test").count() == 1


def test_bad_transform_parameters_name_the_parameter(api_client_for, users, project, cancer_csv) -> None:
    client = api_client_for(users.data_scientist)
    version = upload(client, project="cancer", dataset="bc", name="bc.csv", content=cancer_csv).json()
    cases = [
        ({"test_fraction": 2}, "parameters.test_fraction", "between 0.05 and 0.95"),
        ({"test_fraction": "a lot"}, "parameters.test_fraction", "number"),
        ({"stratify_column": "nope"}, "parameters.stratify_column", "not in the dataset"),
        ({"colour": "red"}, "parameters.colour", "unknown parameter"),
    ]
    for parameters, field, words in cases:
        response = client.post(
            reverse("api-run-transform-create"),
            {"inputs": [version["id"]], "recipe": "split", "parameters": parameters},
            format="json",
        )
        assert response.status_code == 400, response.content
        assert words in " ".join(response.json()["error"]["fields"][field]), response.json()
    response = client.post(
        reverse("api-run-transform-create"), {"inputs": [version["id"]], "recipe": "nope"}, format="json"
    )
    assert response.status_code == 400 and "recipe" in response.json()["error"]["fields"]
    response = client.post(reverse("api-run-transform-create"), {"inputs": [999999], "recipe": "split"}, format="json")
    assert response.status_code == 400 and "inputs" in response.json()["error"]["fields"]
    assert not Run.objects.exists()


def test_file_and_folder_registration_through_the_worker(
    celery_worker, api_client_for, users, project, cancer_csv
) -> None:
    root = Path(settings.DATASET_FILE_ROOTS[0])
    # A fresh folder each time: the allowed root outlives a test run.
    folder = root / f"events-{uuid.uuid4().hex[:8]}" / "2026-11-28"
    folder.mkdir(parents=True, exist_ok=True)
    lines = cancer_csv.splitlines(keepends=True)
    (folder / "part-0.csv").write_bytes(b"".join(lines[:300]))
    (folder / "part-1.csv").write_bytes(lines[0] + b"".join(lines[300:]))
    single = folder.parent / "bc.csv"
    single.write_bytes(cancer_csv)
    client = api_client_for(users.data_scientist)

    def register(uri: str) -> DatasetRegistration:
        response = client.post(
            reverse("api-dataset-registration-create"),
            {"project": "cancer", "dataset": "events", "uri": uri},
            format="json",
        )
        assert response.status_code == 202, response.content
        return wait_for(
            lambda: DatasetRegistration.objects.filter(
                pk=response.json()["id"], status__in=["succeeded", "failed"]
            ).first(),
            timeout=120,
            what=f"registration of {uri}",
        )

    manifest = register(folder.as_uri() + "/")
    assert manifest.status == "succeeded", manifest.error
    version = manifest.version
    assert version.format == "manifest" and version.object_count == 2 and version.content_format == "csv"
    profile = wait_profile(version.pk)
    assert profile.status == "ready", profile.error
    assert profile.profile["row_count"] == 569

    again = register(folder.as_uri() + "/")
    assert again.version_id == version.pk and not again.created_new_version
    (folder / "part-2.csv").write_bytes(lines[0] + lines[1])
    changed = register(folder.as_uri() + "/")
    assert changed.created_new_version and changed.version.number == 2

    file_version = register(single.as_uri())
    assert (
        file_version.status == "succeeded"
        and file_version.version.row_count == 569
        and file_version.version.source == "file"
    )

    missing = register((folder.parent / "nope.csv").as_uri())
    assert missing.status == "failed" and "no file or folder" in missing.error
    assert DatasetVersion.objects.filter(dataset__slug="events").count() == 3


def test_a_profile_whose_message_was_lost_is_queued_again_by_the_periodic_job(
    celery_worker, api_client_for, users, project, cancer_csv, monkeypatch
) -> None:
    from datetime import timedelta

    from django.utils import timezone

    from lineage import services

    version = upload(
        api_client_for(users.data_scientist), project="cancer", dataset="bc", name="bc.csv", content=cancer_csv
    ).json()
    wait_profile(version["id"])
    # What a lost message leaves behind: a profile still queued, with nobody working on it.
    DatasetProfile.objects.filter(version_id=version["id"]).update(status="queued", profile=None, progress=0)
    assert services.lineage_requeue_stale()["profiles"] == 0  # sent less than a lease ago: too recent to judge
    registered_at = DatasetVersion.objects.get(pk=version["id"]).created_at
    monkeypatch.setattr(timezone, "now", lambda: registered_at + timedelta(minutes=20))
    assert services.lineage_requeue_stale()["profiles"] == 1
    assert wait_profile(version["id"]).status == "ready"
