"""Registering dataset versions: content-addressed, write-once, validated; bad input stores nothing."""

from __future__ import annotations

import gzip
import hashlib

import pytest
from django.urls import reverse

from controlplane.backends import object_store
from controlplane.models import AuditEvent
from lineage.models import Dataset, DatasetVersion, WriteOnceError
from tests.lineage.conftest import upload

pytestmark = pytest.mark.django_db


def stored_dataset_keys() -> list[str]:
    return [item.key for item in object_store().list("datasets/")]


def test_upload_creates_a_content_addressed_version(api_client_for, users, project, cancer_csv) -> None:
    response = upload(
        api_client_for(users.data_scientist),
        project="cancer",
        dataset="Breast cancer",
        name="bc.csv",
        content=cancer_csv,
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["number"] == 1 and body["dataset"] == "breast-cancer" and body["source"] == "upload"
    assert body["sha256"] == hashlib.sha256(cancer_csv).hexdigest()
    assert body["row_count"] == 569 and len(body["columns"]) == 31 and body["format"] == "csv"
    version = DatasetVersion.objects.get(pk=body["id"])
    with object_store().open(version.storage_key) as handle:
        assert handle.read() == cancer_csv
    assert version.storage_key in stored_dataset_keys()
    assert AuditEvent.objects.filter(action="dataset_version.create", object_id=str(version.pk)).exists()
    assert AuditEvent.objects.filter(action="dataset.create").count() == 1


def test_same_bytes_are_the_same_version_and_changed_bytes_a_new_one(
    api_client_for, users, project, cancer_csv
) -> None:
    client = api_client_for(users.data_scientist)
    first = upload(client, project="cancer", dataset="bc", name="a.csv", content=cancer_csv).json()
    again = upload(client, project="cancer", dataset="bc", name="renamed.csv", content=cancer_csv)
    assert again.status_code == 200 and again.json()["id"] == first["id"]
    changed = upload(
        client, project="cancer", dataset="bc", name="a.csv", content=cancer_csv + b"1" + b",0" * 30 + b"\n"
    )
    assert changed.status_code == 201 and changed.json()["number"] == 2
    assert DatasetVersion.objects.filter(dataset__slug="bc").count() == 2
    # The first version's bytes are untouched.
    with object_store().open(DatasetVersion.objects.get(pk=first["id"]).storage_key) as handle:
        assert hashlib.sha256(handle.read()).hexdigest() == first["sha256"]


def test_gzip_and_parquet_uploads(api_client_for, users, project, cancer_csv) -> None:
    import io

    import pandas as pd

    client = api_client_for(users.data_scientist)
    gz = upload(client, project="cancer", dataset="bc-gz", name="bc.csv.gz", content=gzip.compress(cancer_csv))
    assert gz.status_code == 201 and gz.json()["compressed"] is True and gz.json()["row_count"] == 569
    buffer = io.BytesIO()
    pd.read_csv(io.BytesIO(cancer_csv)).to_parquet(buffer)
    pq = upload(client, project="cancer", dataset="bc-parquet", name="bc.parquet", content=buffer.getvalue())
    assert pq.status_code == 201 and pq.json()["format"] == "parquet" and pq.json()["row_count"] == 569


@pytest.mark.parametrize(
    ("name", "content", "words"),
    [
        ("empty.csv", b"", "empty"),
        ("ragged.csv", b"a,b,c\n1,2,3\n4,5\n", "line 3 has 2 fields but the header has 3"),
        ("latin1.csv", "name,city\nJosé,Zürich\n".encode("latin-1"), "not valid UTF-8"),
        ("fake.parquet", b"PAR1 this is not really parquet at all", "not a Parquet file"),
        ("header-only.csv", b"a,b\n", "no data rows"),
        ("dup.csv", b"a,a\n1,2\n", "more than once"),
    ],
)
def test_bad_files_get_a_clear_message_and_store_nothing(api_client_for, users, project, name, content, words) -> None:
    before = stored_dataset_keys()
    response = upload(api_client_for(users.data_scientist), project="cancer", dataset="bad", name=name, content=content)
    assert response.status_code == 400, response.content
    messages = response.json()["error"]["fields"]["file"]
    assert any(words in message for message in messages), messages
    assert not Dataset.objects.exists() and not DatasetVersion.objects.exists()
    assert stored_dataset_keys() == before


def test_file_over_the_size_limit_is_refused(api_client_for, users, project, cancer_csv, settings) -> None:
    settings.DATASET_MAX_UPLOAD_BYTES = 1000
    response = upload(
        api_client_for(users.data_scientist), project="cancer", dataset="big", name="bc.csv", content=cancer_csv
    )
    assert response.status_code == 400
    message = response.json()["error"]["fields"]["file"][0]
    assert message.startswith("the file is over the 1,000 bytes limit"), message
    assert "nothing was stored" in message
    assert not DatasetVersion.objects.exists()


def test_unknown_project_and_missing_fields_name_the_field(api_client_for, users, project, cancer_csv) -> None:
    client = api_client_for(users.data_scientist)
    response = upload(client, project="nope", dataset="bc", name="bc.csv", content=cancer_csv)
    assert response.status_code == 400 and "project" in response.json()["error"]["fields"]
    response = client.post(
        reverse("api-dataset-version-upload"), {"project": "cancer", "dataset": "bc"}, format="multipart"
    )
    assert response.status_code == 400 and "file" in response.json()["error"]["fields"]


def test_only_data_scientists_and_admins_register(api_client_for, users, project, cancer_csv) -> None:
    for user in (users.approver, users.finance, users.outsider):
        assert (
            upload(api_client_for(user), project="cancer", dataset="bc", name="bc.csv", content=cancer_csv).status_code
            == 403
        )
    assert not DatasetVersion.objects.exists()


def test_versions_are_write_once_and_attempts_are_audited(api_client_for, users, project, cancer_csv) -> None:
    client = api_client_for(users.data_scientist)
    body = upload(client, project="cancer", dataset="bc", name="bc.csv", content=cancer_csv).json()
    url = reverse("api-dataset-version-detail", args=[body["id"]])
    assert client.patch(url, {"row_count": 1}, format="json").status_code == 409
    assert client.delete(url).status_code == 409
    version = DatasetVersion.objects.get(pk=body["id"])
    assert version.row_count == 569
    refused = AuditEvent.objects.filter(action="dataset_version.change_refused", object_id=str(version.pk))
    assert refused.count() == 2 and refused.first().actor == users.data_scientist
    version.row_count = 1
    with pytest.raises(WriteOnceError):
        version.save()
    with pytest.raises(WriteOnceError):
        version.delete()


def test_registering_a_path_outside_the_allowed_root_is_refused(api_client_for, users, project) -> None:
    response = api_client_for(users.data_scientist).post(
        reverse("api-dataset-registration-create"),
        {"project": "cancer", "dataset": "etc", "uri": "file:///etc/passwd"},
        format="json",
    )
    assert response.status_code == 400
    assert "outside the folders" in response.json()["error"]["fields"]["uri"][0]
    response = api_client_for(users.data_scientist).post(
        reverse("api-dataset-registration-create"),
        {"project": "cancer", "dataset": "x", "uri": "ftp://x/y"},
        format="json",
    )
    assert response.status_code == 400 and "s3://bucket/key" in response.json()["error"]["fields"]["uri"][0]


def test_register_page_shows_errors_on_the_form(client, users, project) -> None:
    from django.core.files.uploadedfile import SimpleUploadedFile

    client.force_login(users.data_scientist)
    response = client.post(
        reverse("dataset-register"),
        {"project": "cancer", "dataset": "bad", "file": SimpleUploadedFile("x.csv", b"a,b\n1\n")},
    )
    assert response.status_code == 400
    assert "line 2 has 1 fields but the header has 2" in response.content.decode()
    response = client.post(reverse("dataset-register"), {"project": "cancer", "dataset": "bad"})
    assert "choose a file to upload or give a location" in response.content.decode()
    assert not DatasetVersion.objects.exists()


def test_oversized_upload_in_the_page_names_the_limit(client, users, project, cancer_csv, settings) -> None:
    from django.core.files.uploadedfile import SimpleUploadedFile

    settings.DATASET_MAX_UPLOAD_BYTES = 50_000
    client.force_login(users.data_scientist)
    response = client.post(
        reverse("dataset-register"),
        {"project": "cancer", "dataset": "big", "file": SimpleUploadedFile("bc.csv", cancer_csv)},
    )
    assert response.status_code == 400 and "over the 50.0 KB limit" in response.content.decode()
    assert not DatasetVersion.objects.exists()


def test_a_symbolic_link_in_a_registered_folder_is_refused(users, project, settings, tmp_path) -> None:
    import uuid

    from lineage import services

    secret = tmp_path / "secret.csv"
    secret.write_text("a,b\n1,2\n")
    folder = settings.DATASET_FILE_ROOTS[0] / f"links-{uuid.uuid4().hex[:8]}"
    folder.mkdir(parents=True)
    (folder / "ok.csv").write_text("a,b\n3,4\n")
    (folder / "leak.csv").symlink_to(secret)
    registration = services.dataset_registration_request(
        actor=users.data_scientist, project="cancer", dataset="links", uri=folder.as_uri() + "/"
    )
    services.dataset_registration_run(registration_id=registration.pk)
    registration.refresh_from_db()
    assert registration.status == "failed" and "symbolic link" in registration.error
    assert not DatasetVersion.objects.exists()


def test_downloads_need_a_role_and_a_valid_signature(client, users, project, cancer_csv, api_client_for) -> None:
    body = upload(
        api_client_for(users.data_scientist), project="cancer", dataset="bc", name="bc.csv", content=cancer_csv
    ).json()
    url = api_client_for(users.finance).get(reverse("api-dataset-version-download", args=[body["id"]])).json()["url"]
    path = url.split("testserver", 1)[1]
    client.force_login(users.finance)
    response = client.get(path)
    assert response.status_code == 200 and b"".join(response.streaming_content) == cancer_csv
    assert client.get(path.replace("signature=", "signature=0")).status_code == 403
    assert client.get(path.replace("signature=", "signature=é")).status_code == 403
    client.force_login(users.outsider)
    assert client.get(path).status_code == 403


@pytest.mark.parametrize(
    ("uri", "words"),
    [
        ("file:///tmp/a%00b", "control characters"),
        ("s3://[bad/x", "not a valid location"),
        ("file://[::1/x", "not a valid location"),
    ],
)
def test_malformed_locations_are_a_400_not_a_500(api_client_for, users, project, uri, words) -> None:
    response = api_client_for(users.data_scientist).post(
        reverse("api-dataset-registration-create"), {"project": "cancer", "dataset": "x", "uri": uri}, format="json"
    )
    assert response.status_code == 400 and words in response.json()["error"]["fields"]["uri"][0]


def test_bulk_changes_to_versions_are_refused_too(api_client_for, users, project, cancer_csv) -> None:
    from django.db import connection, transaction
    from django.db.utils import DatabaseError

    body = upload(
        api_client_for(users.data_scientist), project="cancer", dataset="bc", name="bc.csv", content=cancer_csv
    ).json()
    with pytest.raises(WriteOnceError):
        DatasetVersion.objects.filter(pk=body["id"]).update(row_count=1)
    with pytest.raises(WriteOnceError):
        DatasetVersion.objects.filter(pk=body["id"]).delete()
    if connection.vendor == "postgresql":
        with pytest.raises(DatabaseError, match="write-once"), transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("UPDATE lineage_datasetversion SET row_count = 1")
    assert DatasetVersion.objects.get(pk=body["id"]).row_count == 569
