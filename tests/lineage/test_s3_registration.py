"""Registering data that lives in S3, through moto's server over HTTP with the same boto3 code."""

from __future__ import annotations

import hashlib

import boto3
import pytest
from django.urls import reverse

from lineage import services
from lineage.models import DatasetRegistration, DatasetVersion

pytestmark = pytest.mark.django_db


@pytest.fixture
def raw_bucket(aws_env, moto_server, settings) -> str:
    settings.AWS_ENDPOINT_URL = moto_server
    client = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    client.create_bucket(Bucket="raw-events")
    client.put_bucket_versioning(Bucket="raw-events", VersioningConfiguration={"Status": "Enabled"})
    return "raw-events"


def request_and_run(client, uri: str) -> DatasetRegistration:
    response = client.post(
        reverse("api-dataset-registration-create"), {"project": "cancer", "dataset": "raw", "uri": uri}, format="json"
    )
    assert response.status_code == 202, response.content
    # The worker's code path, run here so the test process's AWS settings point at moto.
    services.dataset_registration_run(registration_id=response.json()["id"])
    return DatasetRegistration.objects.get(pk=response.json()["id"])


def test_single_object_records_etag_version_and_hash(
    api_client_for, users, project, raw_bucket, cancer_csv, moto_server
) -> None:
    s3 = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    put = s3.put_object(Bucket=raw_bucket, Key="exports/bc.csv", Body=cancer_csv)
    registration = request_and_run(api_client_for(users.data_scientist), "s3://raw-events/exports/bc.csv")
    assert registration.status == "succeeded", registration.error
    version = registration.version
    assert version.source == "s3" and version.source_uri == "s3://raw-events/exports/bc.csv"
    assert version.source_etag == put["ETag"].strip('"') and version.source_version_id == put["VersionId"]
    assert version.sha256 == hashlib.sha256(cancer_csv).hexdigest() and version.size == len(cancer_csv)
    assert version.row_count == 569


def test_prefix_becomes_a_hashed_manifest(api_client_for, users, project, raw_bucket, cancer_csv, moto_server) -> None:
    s3 = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    lines = cancer_csv.splitlines(keepends=True)
    for hour in range(3):
        s3.put_object(
            Bucket=raw_bucket,
            Key=f"firehose/2026/11/28/{hour:02d}/events.csv",
            Body=lines[0] + b"".join(lines[1 + hour * 100 : 101 + hour * 100]),
        )
    client = api_client_for(users.data_scientist)
    first = request_and_run(client, "s3://raw-events/firehose/2026/11/28/")
    assert first.status == "succeeded", first.error
    version = first.version
    assert (
        version.format == "manifest"
        and version.object_count == 3
        and version.size
        == sum(o["Size"] for o in s3.list_objects_v2(Bucket=raw_bucket, Prefix="firehose/")["Contents"])
    )
    services.dataset_profile_run(version_id=version.pk)
    version.profile.refresh_from_db()
    assert version.profile.status == "ready" and version.profile.profile["row_count"] == 300

    same = request_and_run(client, "s3://raw-events/firehose/2026/11/28/")
    assert same.version_id == version.pk and not same.created_new_version
    s3.put_object(Bucket=raw_bucket, Key="firehose/2026/11/28/00/events.csv", Body=lines[0] + lines[1])
    changed = request_and_run(client, "s3://raw-events/firehose/2026/11/28/")
    assert changed.created_new_version and changed.version.number == 2
    # The first manifest still pins the old object version, so its data reads as it was.
    assert DatasetVersion.objects.get(pk=version.pk).sha256 == version.sha256


@pytest.mark.parametrize(
    ("uri", "words"),
    [
        ("s3://raw-events/missing.csv", "there is no object at s3://raw-events/missing.csv"),
        ("s3://raw-events/empty-prefix/", "there are no objects under"),
        ("s3://no-such-bucket-here/x.csv", "does not exist"),
    ],
)
def test_unknown_objects_fail_clearly_and_store_nothing(api_client_for, users, project, raw_bucket, uri, words) -> None:
    registration = request_and_run(api_client_for(users.data_scientist), uri)
    assert registration.status == "failed" and words in registration.error, registration.error
    assert not DatasetVersion.objects.exists()
