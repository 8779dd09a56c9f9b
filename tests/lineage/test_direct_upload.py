"""Direct uploads to S3 (create → part URLs → complete), against moto's server over real HTTP with the same boto3 code.

The multipart PUTs here are plain HTTP requests to the presigned URLs, as a browser sends them; the browser itself
is tested in tests/browser/test_direct_upload.py.
"""

from __future__ import annotations

import hashlib
import io
import re
import socket
from datetime import timedelta

import boto3
import pytest
import requests
from django.core import signing
from django.urls import reverse

from controlplane import backends
from lineage import services
from lineage.models import DatasetRegistration, DatasetVersion
from lineage.services import uploads
from workers.objectstore import s3 as s3_store

pytestmark = pytest.mark.django_db

MiB = 1024 * 1024
GiB = 1024 * MiB


@pytest.fixture
def s3_objects(s3_bucket, moto_server, settings):
    """The portal's object store on the moto bucket, under a prefix as in production."""
    settings.OBJECT_STORE_URL = f"s3://{s3_bucket}/cp"
    settings.AWS_ENDPOINT_URL = moto_server
    backends.object_store.cache_clear()
    yield s3_bucket
    backends.object_store.cache_clear()


@pytest.fixture
def local_objects(settings, tmp_path):
    settings.OBJECT_STORE_URL = f"file://{tmp_path}"
    backends.object_store.cache_clear()
    yield
    backends.object_store.cache_clear()


def big_csv(cancer_csv: bytes, at_least: int) -> bytes:
    header, _, rows = cancer_csv.partition(b"\n")
    out = io.BytesIO()
    out.write(header + b"\n")
    while out.tell() < at_least:
        out.write(rows)
    return out.getvalue()


def create(client, **fields):
    body = {"project": "cancer", "dataset": "direct", "filename": "bc.csv", "size": 1000, **fields}
    return client.post(reverse("api-dataset-upload-create"), body, format="json")


def send_parts(created: dict, content: bytes, client) -> str:
    """What the browser does: start the upload at S3, PUT every part, complete it at S3. Returns the UploadId."""
    started = requests.post(created["create_url"], timeout=10)
    assert started.status_code == 200, started.text
    upload_id = re.search(r"<UploadId>([^<]+)</UploadId>", started.text).group(1)
    answer = client.post(
        reverse("api-dataset-upload-parts"), {"upload": created["upload"], "upload_id": upload_id}, format="json"
    )
    assert answer.status_code == 200, answer.content
    parts = answer.json()["parts"]
    assert [p["part_number"] for p in parts] == list(range(1, created["part_count"] + 1))
    etags = []
    for part in parts:
        put = requests.put(part["url"], data=content[part["offset"] : part["offset"] + part["size"]], timeout=30)
        assert put.status_code == 200, put.text
        etags.append((part["part_number"], put.headers["ETag"]))
    xml = (
        "<CompleteMultipartUpload>"
        + "".join(f"<Part><PartNumber>{n}</PartNumber><ETag>{etag}</ETag></Part>" for n, etag in etags)
        + "</CompleteMultipartUpload>"
    )
    completed = requests.post(answer.json()["complete_url"], data=xml, timeout=30)
    assert completed.status_code == 200 and "<Error>" not in completed.text, completed.text
    return upload_id


# --- part sizes within S3's limits -----------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "part_size", "count"),
    [
        (1, 16 * MiB, 1),
        (100_000_000, 16 * MiB, 6),
        (16 * MiB * 10_000, 16 * MiB, 10_000),
        # One byte more would make 10,001 parts: the part grows by a whole MiB instead.
        (16 * MiB * 10_000 + 1, 17 * MiB, 9_412),
        (5 * GiB * 10_000, 5 * GiB, 10_000),
    ],
)
def test_part_size_stays_within_s3_limits(size: int, part_size: int, count: int) -> None:
    assert s3_store.multipart_part_size(size) == part_size
    assert s3_store.multipart_part_count(size, part_size) == count
    assert s3_store.MULTIPART_MIN_PART_BYTES <= part_size <= s3_store.MULTIPART_MAX_PART_BYTES


def test_part_size_refuses_what_s3_cannot_take() -> None:
    with pytest.raises(ValueError, match="10000 parts"):
        s3_store.multipart_part_size(5 * GiB * 10_000 + 1)


# --- the whole journey -------------------------------------------------------------------------


def test_direct_upload_registers_the_object_with_its_sha256(
    api_client_for, users, project, s3_objects, cancer_csv, moto_server, monkeypatch
) -> None:
    monkeypatch.setattr(s3_store, "DIRECT_UPLOAD_PART_BYTES", 5 * MiB)  # three parts from an 11 MB file
    content = big_csv(cancer_csv, 11 * 1000 * 1000)
    client = api_client_for(users.data_scientist)
    response = create(client, filename="C:\\exports\\breast cancer.csv", size=len(content), description="direct")
    assert response.status_code == 201, response.content
    created = response.json()
    assert created["part_size"] == 5 * MiB and created["part_count"] == 3
    assert re.fullmatch(r"uploads/[0-9a-f]{32}/breast_cancer\.csv", created["key"])
    send_parts(created, content, client)

    response = client.post(reverse("api-dataset-upload-complete"), {"upload": created["upload"]}, format="json")
    assert response.status_code == 202, response.content
    registration = response.json()
    assert (
        registration["status"] == "queued" and registration["url"] == f"/datasets/registrations/{registration['id']}/"
    )
    assert registration["source_uri"] == f"s3://{s3_objects}/cp/{created['key']}"

    # The worker's code path, as for any s3:// key.
    services.dataset_registration_run(registration_id=registration["id"])
    done = DatasetRegistration.objects.get(pk=registration["id"])
    assert done.status == "succeeded", done.error
    version = done.version
    assert version.sha256 == hashlib.sha256(content).hexdigest() and version.size == len(content)
    assert version.dataset.slug == "direct" and version.dataset.description == "direct"
    assert version.row_count == content.count(b"\n") - 1
    # The version's bytes are in the content-addressed store, not only under uploads/.
    stored = (
        boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
        .get_object(Bucket=s3_objects, Key=f"cp/{version.uri.split('/cp/', 1)[1]}")["Body"]
        .read()
    )
    assert hashlib.sha256(stored).hexdigest() == version.sha256


def test_complete_before_the_parts_arrive_fails_the_registration_clearly(
    api_client_for, users, project, s3_objects
) -> None:
    client = api_client_for(users.data_scientist)
    created = create(client).json()
    response = client.post(reverse("api-dataset-upload-complete"), {"upload": created["upload"]}, format="json")
    services.dataset_registration_run(registration_id=response.json()["id"])
    registration = DatasetRegistration.objects.get(pk=response.json()["id"])
    assert registration.status == "failed" and "there is no object at" in registration.error
    assert not DatasetVersion.objects.exists()


def test_presigning_calls_no_aws_endpoint(api_client_for, users, project, s3_objects, settings, monkeypatch) -> None:
    # Nothing listens on this port: a create or part-URL call that talked to S3 would fail.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", dead)
    from workers import aws

    aws.clear_client_cache()
    backends.object_store.cache_clear()
    client = api_client_for(users.data_scientist)
    response = create(client, size=40 * MiB)
    assert response.status_code == 201, response.content
    assert response.json()["create_url"].startswith(f"{dead}/{s3_objects}/cp/uploads/")
    parts = client.post(
        reverse("api-dataset-upload-parts"),
        {"upload": response.json()["upload"], "upload_id": "abc.DEF-1"},
        format="json",
    )
    assert parts.status_code == 200, parts.content
    assert [p["size"] for p in parts.json()["parts"]] == [16 * MiB, 16 * MiB, 8 * MiB]
    assert all(
        "uploadId=abc.DEF-1" in p["url"] and f"partNumber={p['part_number']}" in p["url"] for p in parts.json()["parts"]
    )
    assert "uploadId=abc.DEF-1" in parts.json()["complete_url"]


# --- bad input, roles ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({"size": 0}, "size", "greater than or equal to 1"),
        ({"size": 2_000_001}, "size", "over the 2.0 MB limit"),
        ({"project": "nope"}, "project", "no project with slug 'nope'"),
        ({"dataset": "  "}, "dataset", "may not be blank"),
        ({"dataset": "!!!"}, "dataset", "at least one letter or digit"),
        ({"filename": "///"}, "filename", "expected the file's name"),
        ({"size": "lots"}, "size", "valid integer"),
    ],
)
def test_create_refuses_bad_input_naming_the_field(
    api_client_for, users, project, s3_objects, settings, fields, field, words
) -> None:
    settings.DATASET_MAX_UPLOAD_BYTES = 2_000_000
    response = create(api_client_for(users.data_scientist), **fields)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid" and words in " ".join(error["fields"][field]), error


def test_only_roles_that_register_datasets_may_upload(api_client_for, users, project, s3_objects) -> None:
    assert create(api_client_for(users.data_scientist)).status_code == 201
    assert create(api_client_for(users.admin)).status_code == 201
    for user in (users.approver, users.finance, users.outsider):
        response = create(api_client_for(user))
        assert response.status_code == 403 and response.json()["error"]["status"] == 403, user
    assert create(api_client_for(None)).status_code == 401
    ticket = create(api_client_for(users.data_scientist)).json()["upload"]
    for name in ("api-dataset-upload-parts", "api-dataset-upload-complete"):
        response = api_client_for(users.approver).post(
            reverse(name), {"upload": ticket, "upload_id": "x"}, format="json"
        )
        assert response.status_code == 403


def test_tickets_cannot_be_forged_shared_or_stretched(api_client_for, users, project, s3_objects) -> None:
    client = api_client_for(users.data_scientist)
    created = create(client, size=40 * MiB).json()
    parts_url = reverse("api-dataset-upload-parts")

    body = signing.loads(created["upload"], salt="lineage.direct-upload")
    forged = signing.dumps({**body, "key": "datasets/sha256/aa/overwrite.csv"}, salt="not-ours")
    cases = [
        (client, {"upload": forged, "upload_id": "x"}, "upload", "not an upload ticket this portal issued"),
        (
            api_client_for(users.admin),
            {"upload": created["upload"], "upload_id": "x"},
            "upload",
            "started by another user",
        ),
        (client, {"upload": created["upload"], "upload_id": "has space"}, "upload_id", "expected the UploadId"),
        (
            client,
            {"upload": created["upload"], "upload_id": "x", "part_numbers": [4]},
            "part_numbers",
            "parts 1 to 3; 4",
        ),
        (
            client,
            {"upload": created["upload"], "upload_id": "x", "part_numbers": list(range(1, 102))},
            "part_numbers",
            "no more than 100",
        ),
    ]
    for who, payload, field, words in cases:
        response = who.post(parts_url, payload, format="json")
        assert response.status_code == 400, (payload, response.content)
        assert words in " ".join(response.json()["error"]["fields"][field]), response.json()


def test_local_backend_sends_files_through_the_portal(api_client_for, users, project, local_objects) -> None:
    response = create(api_client_for(users.data_scientist))
    assert response.status_code == 400
    assert "OBJECT_STORE_URL=s3://" in response.json()["error"]["fields"]["non_field_errors"][0]
    assert not uploads.direct_uploads_enabled()


# --- abandoned uploads ----------------------------------------------------------------------------


def test_sweep_aborts_abandoned_uploads_and_nothing_else(s3_objects, moto_server) -> None:
    s3 = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    abandoned = s3.create_multipart_upload(Bucket=s3_objects, Key="cp/uploads/aaaa/half.csv")["UploadId"]
    s3.upload_part(Bucket=s3_objects, Key="cp/uploads/aaaa/half.csv", UploadId=abandoned, PartNumber=1, Body=b"x" * 100)
    elsewhere = s3.create_multipart_upload(Bucket=s3_objects, Key="cp/datasets/other.bin")["UploadId"]

    # moto reports every upload as initiated in 2010, so this one counts as abandoned.
    assert uploads.direct_uploads_abort_stale() == ["uploads/aaaa/half.csv"]
    remaining = {u["UploadId"] for u in s3.list_multipart_uploads(Bucket=s3_objects).get("Uploads", [])}
    assert remaining == {elsewhere}


def test_sweep_leaves_uploads_younger_than_their_ticket() -> None:
    # moto does not model Initiated (it is a constant), so the listing comes from botocore's Stubber.
    from botocore.stub import Stubber
    from django.utils import timezone

    from workers.objectstore import S3ObjectStore

    client = boto3.client("s3", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    store = S3ObjectStore("bucket", "cp", client=client, region="us-east-1")
    now = timezone.now()
    with Stubber(client) as stub:
        stub.add_response(
            "list_multipart_uploads",
            {
                "Uploads": [
                    {"Key": "cp/uploads/old/a.csv", "UploadId": "old", "Initiated": now - timedelta(hours=25)},
                    {"Key": "cp/uploads/new/b.csv", "UploadId": "new", "Initiated": now - timedelta(hours=23)},
                ]
            },
            {"Bucket": "bucket", "Prefix": "cp/uploads/"},
        )
        stub.add_response(
            "abort_multipart_upload", {}, {"Bucket": "bucket", "Key": "cp/uploads/old/a.csv", "UploadId": "old"}
        )
        aborted = s3_store.multipart_abort_stale(store, "uploads/", initiated_before=now - uploads.TICKET_MAX_AGE)
        stub.assert_no_pending_responses()
    assert aborted == ["uploads/old/a.csv"]
