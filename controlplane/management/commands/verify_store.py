"""Check that the object store holds, byte for byte, what the database says it does.

For every dataset version and model version (its artifact, and its compiled copy if it has one), the bytes are read
back from the configured object store, in chunks, and their SHA-256 compared with the one recorded. The records in
each table are counted first, so after a restore the operator sees what came back. Any object missing, different or
unreadable is named (what it belongs to, and its key) and the command exits with status 1.

What an operator runs after restoring a backup (docs/operations.md, "Backups"), and whenever they want to know the
stored bytes are still the ones the records name, outside serving (which checks its own artifact when it loads it).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from django.apps import apps
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from workers.errors import BackendError, ObjectNotFound
from workers.objectstore import ObjectStore, open_object_store
from workers.objectstore.base import hash_stream

# The apps whose tables hold ControlPlane's records (and auth's, for the people behind them).
COUNTED_APPS = ("auth", "controlplane", "lineage", "deployments", "monitoring")


@dataclass(frozen=True)
class Expected:
    """One object the database names: what it belongs to, its key and the SHA-256 recorded for it."""

    owner: str
    key: str
    sha256: str


@dataclass(frozen=True)
class Problem:
    kind: str  # missing, mismatched, unreadable
    expected: Expected
    detail: str

    def line(self) -> str:
        return f"{self.kind}: {self.expected.owner}: {self.expected.key}: {self.detail}"


def record_counts() -> list[tuple[str, int]]:
    """(app_label.Model, rows) for every table of the counted apps, in a stable order."""
    counts = []
    for label in COUNTED_APPS:
        for model in sorted(apps.get_app_config(label).get_models(), key=lambda m: m.__name__):
            counts.append((f"{label}.{model.__name__}", model._default_manager.count()))
    return counts


def expected_objects(skipped: list[str]) -> Iterator[Expected]:
    """Every object a dataset or model version names; model versions whose artifact is not in the object store
    (SageMaker's model.tar.gz stays in the training bucket) are appended to `skipped` instead."""
    from lineage.models import DatasetVersion, ModelVersion

    datasets = DatasetVersion.objects.select_related("dataset__project").order_by("pk")
    for version in datasets.iterator(chunk_size=500):
        owner = f"dataset version {version.dataset} v{version.number} (id {version.pk})"
        yield Expected(owner=owner, key=version.storage_key, sha256=version.sha256)
    models = ModelVersion.objects.select_related("registered_model__project").order_by("pk")
    for model_version in models.iterator(chunk_size=500):
        owner = f"model version {model_version.registered_model} v{model_version.number} (id {model_version.pk})"
        if model_version.artifact_key:
            yield Expected(owner=f"{owner} artifact", key=model_version.artifact_key, sha256=model_version.sha256)
        else:
            skipped.append(f"{owner} artifact at {model_version.artifact_uri}")
        if model_version.compiled_key:
            yield Expected(
                owner=f"{owner} compiled copy", key=model_version.compiled_key, sha256=model_version.compiled_sha256
            )


def check(store: ObjectStore, expected: Expected) -> tuple[Problem | None, int]:
    """Read the object back in chunks and compare its SHA-256 with the record; (the problem or None, bytes read)."""
    from botocore.exceptions import BotoCoreError

    if not expected.key:
        return Problem("missing", expected, "the record names no key"), 0
    try:
        stream = store.open(expected.key)
    except ObjectNotFound:
        return Problem("missing", expected, f"not in {store.url}"), 0
    except (BackendError, OSError, ValueError) as exc:
        return Problem("unreadable", expected, str(exc)), 0
    try:
        digest, size = hash_stream(stream)
    except (BackendError, BotoCoreError, OSError) as exc:  # S3 or the disk failed mid-read
        return Problem("unreadable", expected, str(exc)), 0
    finally:
        stream.close()
    if digest != expected.sha256:
        return Problem("mismatched", expected, f"recorded sha256 {expected.sha256}, the store holds {digest}"), size
    return None, size


class Command(BaseCommand):
    help = (
        "Count the records in each table, then read back every dataset version's and model version's bytes from the "
        "object store and check their SHA-256; exits 1 naming each object missing, mismatched or unreadable."
    )

    # The system checks import every URL conf and view (seconds of start-up); this command reads no page.
    requires_system_checks: list[str] = []

    def handle(self, *args: Any, **options: Any) -> None:
        self.stdout.write("records:")
        for name, rows in record_counts():
            self.stdout.write(f"  {name} {rows}")
        # Only reads: no download links, so none of controlplane.backends' URL settings (which need the URL conf).
        store = open_object_store(settings.OBJECT_STORE_URL, region=settings.AWS_REGION)
        self.stdout.write(f"objects in {store.url}:")
        skipped: list[str] = []
        problems: list[Problem] = []
        checked = read = 0
        for expected in expected_objects(skipped):
            problem, size = check(store, expected)
            checked += 1
            read += size
            if problem is not None:
                problems.append(problem)
                self.stderr.write(problem.line())
        for line in skipped:
            self.stdout.write(f"  not in the object store, not checked: {line}")
        by_kind = {kind: sum(1 for p in problems if p.kind == kind) for kind in ("missing", "mismatched", "unreadable")}
        self.stdout.write(
            f"  checked {checked} ({read} bytes read), missing {by_kind['missing']}, "
            f"mismatched {by_kind['mismatched']}, unreadable {by_kind['unreadable']}, not checked {len(skipped)}"
        )
        if problems:
            raise CommandError(
                f"{len(problems)} of {checked} objects failed verification "
                f"({', '.join(f'{n} {kind}' for kind, n in by_kind.items() if n)}); each is named above"
            )
        self.stdout.write(self.style.SUCCESS(f"all {checked} objects checked match their recorded SHA-256"))
