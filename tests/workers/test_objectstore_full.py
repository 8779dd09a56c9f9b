"""The local object store on a filesystem that fills up or turns read-only, for real: a 1 MiB tmpfs mounted for the
test (CI runs as root in its container; without the right to mount, a file-size limit set on a child process makes
the kernel refuse the write the same way, EFBIG instead of ENOSPC).

Each failure is a clear BackendError (transient for a full disk, so the work is retried; permanent for a read-only
one), nothing half-written is visible (no object under its key, nothing left in the temp folder), and an upload
through the API answers with the reason and records nothing.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controlplane import backends
from controlplane import services as controlplane_services
from lineage.models import Dataset, DatasetRegistration, DatasetVersion
from tests.lineage.conftest import upload
from workers.errors import BackendError
from workers.objectstore.local import LocalObjectStore

SIZE = 1024 * 1024


def _mount(path: Path, options: str) -> bool:
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
    return done.returncode == 0


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "disk"
    root.mkdir()
    if os.geteuid() != 0 or not _mount(root, f"size={SIZE}"):
        pytest.skip("needs root to mount a tmpfs; the file-size-limit test below covers this machine")
    try:
        yield root
    finally:
        subprocess.run(["umount", "-l", str(root)], check=False)


def leftovers(root: Path) -> list[str]:
    """Files anywhere under the store (the metadata of committed objects aside)."""
    return sorted(
        str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and "/meta/" not in f"/{p.relative_to(root)}"
    )


def test_a_full_disk_is_a_clear_transient_failure_and_leaves_nothing(small_disk: Path) -> None:
    store = LocalObjectStore(small_disk / "objects")
    kept = store.put_content_addressed(io.BytesIO(b"small and fine"), prefix="datasets/")
    with pytest.raises(BackendError) as failed:
        store.put_content_addressed(io.BytesIO(os.urandom(2 * SIZE)), prefix="datasets/")
    assert "No space left on device" in failed.value.message
    assert failed.value.permanent is False  # retried later, once space is freed
    assert leftovers(small_disk / "objects") == [kept.key]
    # Space freed, the same write goes through.
    assert store.open(kept.key).read() == b"small and fine"


def test_a_read_only_disk_is_a_clear_permanent_failure(small_disk: Path) -> None:
    store = LocalObjectStore(small_disk / "objects")
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    with pytest.raises(BackendError) as failed:
        store.put_content_addressed(io.BytesIO(b"bytes"), prefix="datasets/")
    assert "Read-only file system" in failed.value.message
    assert failed.value.permanent is True
    assert leftovers(small_disk / "objects") == []


CHILD = """
import io, resource, signal, sys
from workers.errors import BackendError
from workers.objectstore.local import LocalObjectStore
store = LocalObjectStore(sys.argv[1])
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the kernel then refuses the write (EFBIG) instead of killing us
resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))
try:
    store.put_content_addressed(io.BytesIO(b"x" * 200000), prefix="datasets/")
except BackendError as exc:
    print("refused:", exc.message, "permanent" if exc.permanent else "transient")
"""


def test_a_write_the_kernel_refuses_midway_leaves_nothing(tmp_path: Path) -> None:
    root = tmp_path / "objects"
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(root)], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.startswith("refused: Could not write a content-addressed object: File too large"), done
    assert leftovers(root) == []


@pytest.mark.django_db
def test_an_upload_to_a_full_store_answers_with_the_reason_and_records_nothing(
    small_disk: Path, settings: Any, users: Any, api_client_for: Any
) -> None:
    controlplane_services.project_create(actor=users.admin, name="Cancer", slug="cancer")
    settings.OBJECT_STORE_URL = f"file://{small_disk / 'objects'}"
    backends.object_store.cache_clear()
    try:
        content = b"a,b\n" + b"".join(f"{i},{i * 2}\n".encode() for i in range(200000))
        assert len(content) > SIZE
        answer = upload(
            api_client_for(users.data_scientist), project="cancer", dataset="big", name="big.csv", content=content
        )
    finally:
        backends.object_store.cache_clear()
    assert answer.status_code == 503, answer.content
    assert answer["Retry-After"] == "60"  # a full disk is transient: space may be freed
    assert "No space left on device" in answer.content.decode()
    assert not DatasetVersion.objects.exists() and not Dataset.objects.filter(slug="big").exists()
    assert not DatasetRegistration.objects.exclude(status="failed").exists()
    assert leftovers(small_disk / "objects") == []
