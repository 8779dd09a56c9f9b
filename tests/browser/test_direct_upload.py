"""Direct upload in Chromium: the page sends the file's parts straight to S3 (moto's server, with the bucket CORS
rule the operations guide documents), and the portal registers the object."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import boto3
import pytest

from controlplane import backends
from controlplane import services as controlplane_services
from lineage.models import Dataset, DatasetRegistration
from workers.objectstore import s3 as s3_store

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

MiB = 1024 * 1024


@pytest.fixture
def project(users):
    return controlplane_services.project_create(actor=users.admin, name="Cancer", slug="cancer")


@pytest.fixture
def s3_portal(s3_bucket, moto_server, settings, live_server):
    """The live server's object store on the moto bucket, which lets the portal's origin PUT and POST to it."""
    settings.OBJECT_STORE_URL = f"s3://{s3_bucket}/cp"
    settings.AWS_ENDPOINT_URL = moto_server
    boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1").put_bucket_cors(
        Bucket=s3_bucket,
        CORSConfiguration={
            "CORSRules": [
                {
                    "AllowedOrigins": [live_server.url],
                    "AllowedMethods": ["PUT", "POST"],
                    "AllowedHeaders": ["*"],
                    "ExposeHeaders": ["ETag"],
                    "MaxAgeSeconds": 3000,
                }
            ]
        },
    )
    backends.object_store.cache_clear()
    yield s3_bucket
    backends.object_store.cache_clear()


def test_large_file_goes_straight_to_s3_in_parts(
    celery_worker, page, sign_in, users, project, s3_portal, moto_server, live_server, monkeypatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(s3_store, "DIRECT_UPLOAD_PART_BYTES", 5 * MiB)  # three parts
    from sklearn.datasets import load_breast_cancer

    frame = load_breast_cancer(as_frame=True).frame
    csv_path = tmp_path / "breast-cancer.csv"
    frame.to_csv(csv_path, index=False)
    header, _, rows = csv_path.read_bytes().partition(b"\n")
    csv_path.write_bytes(header + b"\n" + rows * (11_000_000 // len(rows) + 1))
    content = csv_path.read_bytes()

    seen = []
    page.on("request", lambda request: seen.append((request.method, request.url)))
    sign_in(users.data_scientist)
    page.goto("/datasets/register/")
    page.get_by_label("Project").select_option("cancer")
    page.get_by_label("Dataset").fill("breast-cancer")
    page.get_by_label("File").set_input_files(str(csv_path))
    page.get_by_role("button", name="Register").click()
    page.wait_for_url(re.compile(r".*/datasets/registrations/\d+/$"), timeout=60_000)

    part_puts = [
        url for method, url in seen if method == "PUT" and url.startswith(moto_server) and "partNumber=" in url
    ]
    assert sorted(int(re.search(r"partNumber=(\d+)", url).group(1)) for url in part_puts) == [1, 2, 3]
    # Not one byte of the file went through the portal.
    assert not [
        url
        for method, url in seen
        if method in ("POST", "PUT") and url.startswith(live_server.url + "/datasets/register")
    ]

    registration = DatasetRegistration.objects.get()
    assert registration.source_uri.startswith(f"s3://{s3_portal}/cp/uploads/") and registration.source_uri.endswith(
        "/breast-cancer.csv"
    )
    # The real worker registers the object from moto; the page polls and shows the outcome.
    page.locator('#registration[data-status="succeeded"]').wait_for(timeout=60_000)
    page.get_by_role("link", name=re.compile("breast-cancer")).click()
    page.wait_for_url(re.compile(r".*/datasets/cancer/breast-cancer/v1/$"))
    assert page.get_by_test_id("sha256").inner_text() == hashlib.sha256(content).hexdigest()


def test_a_file_over_the_limit_is_refused_before_a_byte_moves(
    page, sign_in, users, project, s3_portal, moto_server, settings, tmp_path: Path
) -> None:
    settings.DATASET_MAX_UPLOAD_BYTES = 1000
    path = tmp_path / "big.csv"
    path.write_text("a,b\n" + "1,2\n" * 1000)
    seen = []
    page.on("request", lambda request: seen.append(request.url))
    sign_in(users.data_scientist)
    page.goto("/datasets/register/")
    page.get_by_label("Dataset").fill("big")
    page.get_by_label("File").set_input_files(str(path))
    page.get_by_role("button", name="Register").click()
    error = page.locator('[data-field="file"]')
    error.wait_for()
    assert "over the 1,000 bytes limit" in error.inner_text()
    assert not [url for url in seen if url.startswith(moto_server)]
    assert not Dataset.objects.exists() and not DatasetRegistration.objects.exists()


def test_a_bucket_that_hides_etag_gets_a_message_naming_the_cors_rule(
    page, sign_in, users, project, s3_portal, moto_server, live_server, tmp_path: Path
) -> None:
    # The rule the operations guide warns about: CORS allows the portal but does not expose ETag.
    boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1").put_bucket_cors(
        Bucket=s3_portal,
        CORSConfiguration={
            "CORSRules": [
                {"AllowedOrigins": [live_server.url], "AllowedMethods": ["PUT", "POST"], "AllowedHeaders": ["*"]}
            ]
        },
    )
    path = tmp_path / "small.csv"
    path.write_text("a,b\n1,2\n")
    sign_in(users.data_scientist)
    page.goto("/datasets/register/")
    page.get_by_label("Dataset").fill("small")
    page.get_by_label("File").set_input_files(str(path))
    page.get_by_role("button", name="Register").click()
    alert = page.locator("[data-upload-error]")
    alert.wait_for()
    assert "ExposeHeaders" in alert.inner_text() and "ETag" in alert.inner_text()
    assert page.get_by_role("button", name="Register").is_enabled()
    assert not DatasetRegistration.objects.exists()
