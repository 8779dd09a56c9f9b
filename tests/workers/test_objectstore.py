"""The object store contract, run against both implementations: a local directory and S3 (moto over HTTP)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat as stat_module
import subprocess
import sys
import threading
import time
import tracemalloc
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import boto3
import pytest
from botocore.config import Config

from workers import aws
from workers.errors import BackendError, ConfigError, ObjectConflict, ObjectNotFound
from workers.objectstore import (
    LocalObjectStore,
    ObjectStore,
    S3ObjectStore,
    StoredObject,
    open_object_store,
    verify_download_signature,
)
from workers.objectstore.local import download_signature

MiB = 1024 * 1024
LARGE_SIZE = 64 * MiB
ROOT = Path(__file__).resolve().parents[2]
DOWNLOAD_BASE_URL = "http://portal.test/objects/download"
SIGNING_KEY = "test-signing-key"
S3_STORE_PREFIX = "store"
REGION = "us-east-1"


class PatternReader:
    """`size` deterministic bytes made on demand by read(n); every 64 KiB block differs, so misplaced parts show."""

    BLOCK = 64 * 1024

    def __init__(self, size: int, seed: bytes = b"controlplane") -> None:
        self.size = size
        self.position = 0
        self.seed = seed

    def read(self, n: int = -1) -> bytearray:
        remaining = self.size - self.position
        if n is None or n < 0 or n > remaining:
            n = remaining
        # One buffer of the requested size, filled in place, so the reader itself adds little to measured memory.
        out = bytearray(n)
        filled = 0
        while filled < n:
            index, offset = divmod(self.position, self.BLOCK)
            block = hashlib.sha256(self.seed + index.to_bytes(8, "big")).digest() * (self.BLOCK // 32)
            take = min(self.BLOCK - offset, n - filled)
            out[filled : filled + take] = memoryview(block)[offset : offset + take]
            filled += take
            self.position += take
        return out


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_all(store: ObjectStore, key: str) -> bytes:
    with store.open(key) as stream:
        return stream.read()


def keys_of(objects: Any) -> list[str]:
    return [stored.key for stored in objects]


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "local":
        return LocalObjectStore(tmp_path / "objects", download_base_url=DOWNLOAD_BASE_URL, signing_key=SIGNING_KEY)
    bucket = request.getfixturevalue("s3_bucket")
    return S3ObjectStore(bucket, prefix=S3_STORE_PREFIX, region=REGION)


@pytest.fixture
def local_store(tmp_path: Path) -> LocalObjectStore:
    return LocalObjectStore(tmp_path / "objects", download_base_url=DOWNLOAD_BASE_URL, signing_key=SIGNING_KEY)


@pytest.fixture
def s3_store(s3_bucket: str) -> S3ObjectStore:
    return S3ObjectStore(s3_bucket, prefix=S3_STORE_PREFIX, region=REGION)


# The contract, for both stores.


def test_put_stores_bytes_and_stat_open_exists_describe_them(store: ObjectStore) -> None:
    data = b"sepal_length,species\n5.1,setosa\n"

    stored = store.put("datasets/iris/v1.csv", io.BytesIO(data), content_type="text/csv")

    assert stored == StoredObject(
        key="datasets/iris/v1.csv",
        sha256=sha256_of(data),
        size=len(data),
        uri=stored.uri,
        created=True,
    )
    if isinstance(store, LocalObjectStore):
        assert stored.uri == (store.root / "datasets/iris/v1.csv").as_uri()
        assert Path(unquote(urlsplit(stored.uri).path)).read_bytes() == data
    else:
        assert stored.uri == f"s3://{store.bucket}/{S3_STORE_PREFIX}/datasets/iris/v1.csv"
    assert store.stat("datasets/iris/v1.csv") == StoredObject(
        key="datasets/iris/v1.csv", sha256=sha256_of(data), size=len(data), uri=stored.uri, created=False
    )
    assert store.exists("datasets/iris/v1.csv")
    assert not store.exists("datasets/iris/v2.csv")
    assert read_all(store, "datasets/iris/v1.csv") == data


def test_put_empty_stream_stores_an_empty_object(store: ObjectStore) -> None:
    stored = store.put("empty", io.BytesIO(b""))

    assert (stored.size, stored.sha256, stored.created) == (0, sha256_of(b""), True)
    assert read_all(store, "empty") == b""


def test_put_same_bytes_again_is_deduplicated(store: ObjectStore) -> None:
    first = store.put("models/m/1/model.joblib", io.BytesIO(b"weights"))

    second = store.put("models/m/1/model.joblib", io.BytesIO(b"weights"))

    assert first.created is True
    assert second == StoredObject(key=first.key, sha256=first.sha256, size=first.size, uri=first.uri, created=False)
    assert read_all(store, "models/m/1/model.joblib") == b"weights"


def test_put_different_bytes_to_a_taken_key_conflicts_and_keeps_the_original(store: ObjectStore) -> None:
    original = store.put("models/m/1/model.joblib", io.BytesIO(b"original weights"))

    with pytest.raises(ObjectConflict) as caught:
        store.put("models/m/1/model.joblib", io.BytesIO(b"other weights"))

    assert "models/m/1/model.joblib" in str(caught.value)
    assert caught.value.permanent is True
    assert caught.value.key == "models/m/1/model.joblib"
    assert read_all(store, "models/m/1/model.joblib") == b"original weights"
    assert store.stat("models/m/1/model.joblib").sha256 == original.sha256


def test_put_content_addressed_names_the_object_by_its_hash_and_deduplicates(store: ObjectStore) -> None:
    data = b"x,y\n1,2\n"
    digest = sha256_of(data)

    first = store.put_content_addressed(io.BytesIO(data), prefix="datasets/", suffix=".csv")
    second = store.put_content_addressed(io.BytesIO(data), prefix="datasets/", suffix=".csv")

    assert first.key == f"datasets/sha256/{digest[:2]}/{digest}.csv"
    assert (first.sha256, first.size, first.created) == (digest, len(data), True)
    assert (second.key, second.sha256, second.created) == (first.key, digest, False)
    assert read_all(store, first.key) == data
    assert keys_of(store.list("datasets/")) == [first.key]


def test_put_content_addressed_uses_the_objects_prefix_by_default(store: ObjectStore) -> None:
    digest = sha256_of(b"payload")

    stored = store.put_content_addressed(io.BytesIO(b"payload"))

    assert stored.key == f"objects/sha256/{digest[:2]}/{digest}"


def test_missing_objects_raise_object_not_found(store: ObjectStore) -> None:
    store.put("runs/1/log.txt", io.BytesIO(b"log"))

    with pytest.raises(ObjectNotFound) as caught:
        store.stat("runs/1/missing.txt")
    assert "runs/1/missing.txt" in str(caught.value)
    assert caught.value.permanent is True
    with pytest.raises(ObjectNotFound):
        store.open("runs/1/missing.txt")
    # A "folder" of other objects is not itself an object.
    with pytest.raises(ObjectNotFound):
        store.stat("runs/1")
    assert not store.exists("runs/1")


def test_open_streams_in_pieces(store: ObjectStore) -> None:
    data = PatternReader(3 * MiB + 17).read()
    store.put("big.bin", io.BytesIO(data))

    pieces = []
    with store.open("big.bin") as stream:
        while piece := stream.read(MiB):
            pieces.append(piece)

    assert [len(piece) for piece in pieces] == [MiB, MiB, MiB, 17]
    assert b"".join(pieces) == data


def test_list_matches_keys_by_string_prefix_in_key_order(store: ObjectStore) -> None:
    contents = {
        "runs/10/c.txt": b"c",
        "runs/1/b.txt": b"b",
        "runs/1/a.txt": b"a",
        "runs-archive.txt": b"r",
        "other/d.txt": b"d",
    }
    for key, data in contents.items():
        store.put(key, io.BytesIO(data))

    assert keys_of(store.list("runs/1/")) == ["runs/1/a.txt", "runs/1/b.txt"]
    assert keys_of(store.list("runs/1")) == ["runs/1/a.txt", "runs/1/b.txt", "runs/10/c.txt"]
    assert keys_of(store.list("runs")) == ["runs-archive.txt", "runs/1/a.txt", "runs/1/b.txt", "runs/10/c.txt"]
    assert keys_of(store.list("")) == sorted(contents)
    assert list(store.list("nothing/")) == []
    listed = {stored.key: stored for stored in store.list("")}
    assert {key: stored.sha256 for key, stored in listed.items()} == {
        key: sha256_of(data) for key, data in contents.items()
    }
    assert listed["runs/1/a.txt"] == store.stat("runs/1/a.txt")


INVALID_KEYS = [
    "",
    "/absolute/key",
    "a/../b",
    "..",
    "a/./b",
    "a//b",
    "folder/",
    "a\\b",
    "line\nbreak",
    "k" * 1025,
    "é" * 513,
]


@pytest.mark.parametrize("key", INVALID_KEYS)
def test_invalid_keys_are_refused_and_nothing_is_stored(store: ObjectStore, key: str) -> None:
    with pytest.raises(ValueError) as caught:
        store.put(key, io.BytesIO(b"data"))

    assert repr(key) in str(caught.value)
    for operation in (store.stat, store.open, store.exists, store.download_url):
        with pytest.raises(ValueError):
            operation(key)
    assert list(store.list("")) == []


def test_the_longest_valid_key_is_accepted(store: ObjectStore) -> None:
    length = 1024 - (len(S3_STORE_PREFIX) + 1 if isinstance(store, S3ObjectStore) else 0)
    # Segments stay under the 255-byte file name limit of local filesystems.
    longest = "/".join(["k" * 200] * 6)[:length]

    assert store.put(longest, io.BytesIO(b"data")).key == longest


@pytest.mark.parametrize(("prefix", "suffix"), [("/datasets/", ""), ("datasets//", ""), ("datasets/", "/x")])
def test_invalid_content_addressed_prefix_or_suffix_is_refused_before_reading(
    store: ObjectStore, prefix: str, suffix: str
) -> None:
    stream = io.BytesIO(b"data")

    with pytest.raises(ValueError):
        store.put_content_addressed(stream, prefix=prefix, suffix=suffix)

    assert stream.tell() == 0
    assert list(store.list("")) == []


@pytest.mark.parametrize("prefix", ["/a", "a/../b", "a//", "a\\b"])
def test_invalid_list_prefix_is_refused(store: ObjectStore, prefix: str) -> None:
    with pytest.raises(ValueError):
        list(store.list(prefix))


def test_list_prefix_may_end_inside_a_segment(store: ObjectStore) -> None:
    store.put("runs/.hidden", io.BytesIO(b"h"))
    store.put("runs/..double", io.BytesIO(b"d"))

    assert keys_of(store.list("runs/.")) == ["runs/..double", "runs/.hidden"]
    assert keys_of(store.list("runs/..")) == ["runs/..double"]


def test_concurrent_puts_of_different_bytes_let_exactly_one_win(store: ObjectStore) -> None:
    for round_number in range(8):
        key = f"race/{round_number}"
        bodies = [b"A" * MiB, b"B" * MiB]
        results = _put_concurrently(store, key, bodies)

        winners = [index for index, result in enumerate(results) if isinstance(result, StoredObject)]
        losers = [index for index, result in enumerate(results) if isinstance(result, ObjectConflict)]
        assert (len(winners), len(losers)) == (1, 1), results
        assert read_all(store, key) == bodies[winners[0]]


def test_concurrent_puts_of_the_same_bytes_create_once(store: ObjectStore) -> None:
    for round_number in range(8):
        key = f"same/{round_number}"
        results = _put_concurrently(store, key, [b"S" * MiB, b"S" * MiB])

        assert all(isinstance(result, StoredObject) for result in results), results
        assert sorted(result.created for result in results if isinstance(result, StoredObject)) == [False, True]


def _put_concurrently(store: ObjectStore, key: str, bodies: list[bytes]) -> list[object]:
    barrier = threading.Barrier(len(bodies))
    results: list[object] = [None] * len(bodies)

    def writer(index: int) -> None:
        barrier.wait()
        try:
            results[index] = store.put(key, io.BytesIO(bodies[index]))
        except Exception as exc:  # noqa: BLE001 - the test inspects whatever each writer got
            results[index] = exc

    threads = [threading.Thread(target=writer, args=(index,)) for index in range(len(bodies))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


def test_large_file_is_streamed_with_bounded_memory(store: ObjectStore) -> None:
    expected_sha256 = _sha256_of_reader(PatternReader(LARGE_SIZE))

    # A separate process measures only the writer's memory: moto shares this process and buffers whole uploads.
    measured = _measure_put_in_subprocess(store.url, "large/data.bin", LARGE_SIZE)

    assert measured["sha256"] == expected_sha256
    assert (measured["size"], measured["created"]) == (LARGE_SIZE, True)
    assert measured["peak"] < LARGE_SIZE // 4, f"peak traced memory {measured['peak'] / MiB:.1f} MiB"
    assert store.stat("large/data.bin").sha256 == expected_sha256
    with store.open("large/data.bin") as stream:
        assert _sha256_of_reader(stream) == expected_sha256
    if isinstance(store, S3ObjectStore):
        head = aws.aws_client("s3", region=REGION).head_object(
            Bucket=store.bucket, Key=f"{S3_STORE_PREFIX}/large/data.bin"
        )
        # S3 gives multipart objects an ETag ending in the part count: 64 MiB in 8 MiB parts.
        assert head["ETag"].strip('"').endswith("-8")


def _sha256_of_reader(reader: Any) -> str:
    digest = hashlib.sha256()
    while chunk := reader.read(MiB):
        digest.update(chunk)
    return digest.hexdigest()


def _measure_put_in_subprocess(url: str, key: str, size: int) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    completed = subprocess.run(
        [sys.executable, "-m", "tests.workers.test_objectstore", url, key, str(size)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    return dict(json.loads(completed.stdout.strip().splitlines()[-1]))


def _measure_put(url: str, key: str, size: int) -> dict[str, Any]:
    """Put `size` generated bytes and report the peak Python memory traced while doing it."""
    store = open_object_store(url, region=REGION)
    # The first request loads parts of botocore lazily; keep that one-off cost out of the measurement.
    store.put("warm-up", io.BytesIO(b"warm-up"))
    tracemalloc.start()
    stored = store.put(key, PatternReader(size))  # type: ignore[arg-type]
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"sha256": stored.sha256, "size": stored.size, "created": stored.created, "peak": peak}


# Download URLs.


def test_local_download_url_is_signed_for_key_expiry_and_filename(local_store: LocalObjectStore) -> None:
    local_store.put("models/m/1/model.joblib", io.BytesIO(b"weights"))

    url = local_store.download_url("models/m/1/model.joblib", expires_in=600, filename="model v1.joblib")

    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == f"{DOWNLOAD_BASE_URL}/models/m/1/model.joblib"
    query = {name: values[0] for name, values in parse_qs(parts.query).items()}
    assert set(query) == {"expires", "signature", "filename"}
    assert query["filename"] == "model v1.joblib"
    assert time.time() + 590 < int(query["expires"]) <= time.time() + 600
    key, expires, signature = "models/m/1/model.joblib", query["expires"], query["signature"]
    assert verify_download_signature(SIGNING_KEY, key, expires, signature, "model v1.joblib")
    assert not verify_download_signature(SIGNING_KEY, "models/m/2/model.joblib", expires, signature, "model v1.joblib")
    assert not verify_download_signature(SIGNING_KEY, key, str(int(expires) + 1), signature, "model v1.joblib")
    assert not verify_download_signature(SIGNING_KEY, key, expires, signature, "other.joblib")
    assert not verify_download_signature(SIGNING_KEY, key, expires, signature)
    assert not verify_download_signature(SIGNING_KEY, key, expires, "0" * 64, "model v1.joblib")
    assert not verify_download_signature("another-key", key, expires, signature, "model v1.joblib")
    assert not verify_download_signature(SIGNING_KEY, key, "soon", signature, "model v1.joblib")


def test_local_download_url_without_filename_signs_an_empty_filename(local_store: LocalObjectStore) -> None:
    url = local_store.download_url("a b/c.txt")

    parts = urlsplit(url)
    query = {name: values[0] for name, values in parse_qs(parts.query).items()}
    assert parts.path.endswith("/a%20b/c.txt")
    assert set(query) == {"expires", "signature"}
    assert verify_download_signature(SIGNING_KEY, "a b/c.txt", query["expires"], query["signature"])


def test_local_download_signature_fails_once_expired() -> None:
    expired = str(int(time.time()) - 1)
    signature = download_signature(SIGNING_KEY, "k", expired)

    assert not verify_download_signature(SIGNING_KEY, "k", expired, signature)
    still_valid = str(int(time.time()) + 60)
    assert verify_download_signature(SIGNING_KEY, "k", still_valid, download_signature(SIGNING_KEY, "k", still_valid))


@pytest.mark.parametrize(
    "settings",
    [{}, {"download_base_url": DOWNLOAD_BASE_URL}, {"signing_key": SIGNING_KEY}],
)
def test_local_download_url_needs_base_url_and_signing_key(tmp_path: Path, settings: dict[str, str]) -> None:
    store = LocalObjectStore(tmp_path / "objects", **settings)

    with pytest.raises(ConfigError):
        store.download_url("k")


@pytest.mark.parametrize("expires_in", [0, -1, 7 * 24 * 3600 + 1])
def test_download_url_lifetime_must_fit_s3_limits(store: ObjectStore, expires_in: int) -> None:
    with pytest.raises(ValueError):
        store.download_url("k", expires_in=expires_in)


def test_s3_download_url_serves_the_bytes_over_http(s3_store: S3ObjectStore) -> None:
    s3_store.put("models/m/1/model.joblib", io.BytesIO(b"weights"))

    url = s3_store.download_url("models/m/1/model.joblib", expires_in=600, filename="modèle.joblib")

    assert "X-Amz-Expires=600" in url
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.read() == b"weights"
        disposition = response.headers["Content-Disposition"]
    assert disposition == "attachment; filename=\"mod_le.joblib\"; filename*=UTF-8''mod%C3%A8le.joblib"


def test_s3_download_url_is_signed_for_the_buckets_own_region(aws_env: str) -> None:
    # The store's region is us-east-1, the bucket lives in eu-west-1: S3 refuses a URL signed for another region.
    aws.aws_client("s3", region="eu-west-1").create_bucket(
        Bucket="eu-bucket", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
    )
    store = S3ObjectStore("eu-bucket", region=REGION)
    store.put("report.csv", io.BytesIO(b"a,b\n"))
    heads: list[str] = []
    store._client.meta.events.register("before-send.s3.HeadBucket", lambda request, **_: heads.append(request.url))

    first = store.download_url("report.csv")
    second = store.download_url("report.csv")

    for url in (first, second):
        credential = parse_qs(urlsplit(url).query)["X-Amz-Credential"][0]
        assert credential.split("/")[2] == "eu-west-1"
    # The bucket's region is asked once, then remembered.
    assert len(heads) == 1
    with urllib.request.urlopen(first, timeout=10) as response:
        assert response.read() == b"a,b\n"


def test_uploads_through_an_s3_compatible_endpoint_get_no_checksum_botocore_chose(s3_bucket: str) -> None:
    # moto's endpoint is not AWS's, as MinIO's or Ceph's would not be: botocore must not add its own CRC32 checksum
    # (sent as an aws-chunked trailer over HTTPS), which many S3-compatible stores refuse.
    store = S3ObjectStore(s3_bucket, prefix=S3_STORE_PREFIX, region=REGION)
    sent: list[dict[str, str]] = []
    store._client.meta.events.register(
        "before-send.s3", lambda request, **_: sent.append({k.lower(): str(v) for k, v in request.headers.items()})
    )

    # The managed transfer (as the SageMaker backend uploads) leaves the checksum to botocore.
    store._client.upload_fileobj(io.BytesIO(b"y" * 1000), s3_bucket, "raw/upload.bin")

    assert sent
    for headers in sent:
        assert not [name for name in headers if name.startswith("x-amz-checksum-")], headers
        assert "x-amz-trailer" not in headers and "aws-chunked" not in headers.get("content-encoding", "")
    # The store's own writes still carry the SHA-256 it computed, which S3 checks.
    sent.clear()
    store.put("small.bin", io.BytesIO(b"x" * 1000))
    assert any("x-amz-checksum-sha256" in headers for headers in sent)


# Local store specifics.


def test_local_objects_are_read_only_files(local_store: LocalObjectStore) -> None:
    stored = local_store.put("a/b.txt", io.BytesIO(b"data"))

    path = Path(unquote(urlsplit(stored.uri).path))
    assert stat_module.S_IMODE(path.stat().st_mode) == 0o444
    assert list((local_store.root / ".objectstore" / "tmp").iterdir()) == []


def test_local_stat_rehashes_when_the_sidecar_is_missing(local_store: LocalObjectStore) -> None:
    local_store.put("a/b.txt", io.BytesIO(b"data"))
    sidecar = local_store.root / ".objectstore" / "meta" / "a" / "b.txt"
    assert json.loads(sidecar.read_text())["sha256"] == sha256_of(b"data")
    sidecar.unlink()

    assert local_store.stat("a/b.txt").sha256 == sha256_of(b"data")
    assert json.loads(sidecar.read_text())["sha256"] == sha256_of(b"data")
    with pytest.raises(ObjectConflict):
        local_store.put("a/b.txt", io.BytesIO(b"other"))


def test_local_store_cannot_hold_an_object_and_a_folder_of_the_same_name(local_store: LocalObjectStore) -> None:
    local_store.put("a/b", io.BytesIO(b"object"))
    local_store.put("c/d/e", io.BytesIO(b"object"))

    with pytest.raises(ObjectConflict) as below_object:
        local_store.put("a/b/c", io.BytesIO(b"data"))
    with pytest.raises(ObjectConflict) as over_folder:
        local_store.put("c/d", io.BytesIO(b"data"))

    assert "a/b/c" in str(below_object.value)
    assert "c/d" in str(over_folder.value)
    assert keys_of(local_store.list("")) == ["a/b", "c/d/e"]


def test_local_store_reserves_its_bookkeeping_folder(local_store: LocalObjectStore) -> None:
    with pytest.raises(ValueError) as caught:
        local_store.put(".objectstore/meta/x", io.BytesIO(b"data"))

    assert ".objectstore" in str(caught.value)


def test_local_store_lists_nothing_of_its_bookkeeping(local_store: LocalObjectStore) -> None:
    local_store.put("x", io.BytesIO(b"data"))

    assert keys_of(local_store.list("")) == ["x"]
    assert keys_of(local_store.list(".")) == []
    assert keys_of(local_store.list(".objectstore/")) == []


# S3 store specifics.


def test_s3_conditional_write_detects_an_object_created_after_the_existence_check(s3_store: S3ObjectStore) -> None:
    s3_store.put("k", io.BytesIO(b"first"))

    # Drive the upload step directly, as a writer whose existence check ran before the other writer's upload.
    for body in (b"second", PatternReader(9 * MiB).read()):
        with io.BytesIO(body) as spool, pytest.raises(ObjectConflict):
            s3_store._write_new("k", spool, sha256_of(body), len(body), "application/octet-stream")
    with io.BytesIO(b"first") as spool:
        again = s3_store._write_new("k", spool, sha256_of(b"first"), 5, "application/octet-stream")

    assert again.created is False
    assert read_all(s3_store, "k") == b"first"
    uploads = aws.aws_client("s3", region=REGION).list_multipart_uploads(Bucket=s3_store.bucket)
    assert uploads.get("Uploads", []) == []


def test_s3_store_keys_live_under_its_prefix_and_list_ignores_the_rest(s3_store: S3ObjectStore) -> None:
    client = aws.aws_client("s3", region=REGION)
    client.put_object(Bucket=s3_store.bucket, Key="elsewhere.txt", Body=b"not ours")
    client.put_object(Bucket=s3_store.bucket, Key=f"{S3_STORE_PREFIX}/folder/", Body=b"")
    s3_store.put("mine.txt", io.BytesIO(b"ours"))

    assert keys_of(s3_store.list("")) == ["mine.txt"]
    assert client.get_object(Bucket=s3_store.bucket, Key=f"{S3_STORE_PREFIX}/mine.txt")["Body"].read() == b"ours"
    head = client.head_object(Bucket=s3_store.bucket, Key=f"{S3_STORE_PREFIX}/mine.txt")
    assert head["Metadata"] == {"sha256": sha256_of(b"ours")}


def test_s3_objects_written_by_other_tools_are_hashed_on_stat(s3_store: S3ObjectStore) -> None:
    aws.aws_client("s3", region=REGION).put_object(
        Bucket=s3_store.bucket, Key=f"{S3_STORE_PREFIX}/raw.csv", Body=b"a,b\n"
    )

    assert s3_store.stat("raw.csv").sha256 == sha256_of(b"a,b\n")
    assert s3_store.put("raw.csv", io.BytesIO(b"a,b\n")).created is False
    with pytest.raises(ObjectConflict):
        s3_store.put("raw.csv", io.BytesIO(b"c,d\n"))


def test_s3_missing_bucket_is_a_permanent_backend_error(aws_env: str) -> None:
    store = S3ObjectStore("no-such-bucket-here", region=REGION)

    with pytest.raises(BackendError) as caught:
        store.put("k", io.BytesIO(b"data"))

    assert caught.value.permanent is True
    assert "NoSuchBucket" in str(caught.value)
    assert "s3://no-such-bucket-here/k" in str(caught.value)
    with pytest.raises(BackendError) as caught_on_read:
        store.open("k")
    assert not isinstance(caught_on_read.value, ObjectNotFound)
    assert "NoSuchBucket" in str(caught_on_read.value)


def test_s3_unreachable_endpoint_is_a_retryable_backend_error(aws_env: str) -> None:
    # A client that does not retry keeps the test fast; the port is closed, so the connection is refused.
    client = boto3.session.Session().client(
        "s3", endpoint_url=f"http://127.0.0.1:{_closed_port()}", config=Config(retries={"total_max_attempts": 1})
    )
    store = S3ObjectStore("bucket", region=REGION, client=client)

    with pytest.raises(BackendError) as caught:
        store.put("k", io.BytesIO(b"data"))

    assert caught.value.permanent is False
    assert "s3://bucket/k" in str(caught.value)


def _closed_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


if __name__ == "__main__":
    print(json.dumps(_measure_put(sys.argv[1], sys.argv[2], int(sys.argv[3]))))
