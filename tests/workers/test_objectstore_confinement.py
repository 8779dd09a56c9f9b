"""The local object store never reads or writes through a symlink, so nothing escapes its root."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from workers.errors import BackendError
from workers.objectstore import LocalObjectStore


def test_symlinks_out_of_the_root_are_refused(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "objects")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(b"secret")
    (store.root / "linked").symlink_to(outside)
    (store.root / "file.txt").symlink_to(outside / "secret.txt")
    for key in ("linked/secret.txt", "file.txt"):
        with pytest.raises(BackendError, match="symlink"):
            store.open(key)
        with pytest.raises(BackendError, match="symlink"):
            store.path_for(key)
    with pytest.raises(BackendError, match="symlink"):
        store.put("linked/new.txt", io.BytesIO(b"x"))
    assert not (outside / "new.txt").exists()
    assert store.put("plain.txt", io.BytesIO(b"ok")).created
