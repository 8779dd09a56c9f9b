"""Profiles and registrations claimed once under duplicate messages, with real concurrent database sessions."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from controlplane.models import TransitionEvent
from lineage import services
from lineage.models import DatasetProfile, DatasetRegistration, DatasetVersion
from tests.fixtures.processes import RUNNING_WORKERS, wait_for
from tests.fixtures.races import race

pytestmark = pytest.mark.django_db(transaction=True)


def test_duplicate_profile_messages_profile_the_version_once(users, project, cancer_csv) -> None:
    version, _ = services.dataset_version_upload(
        actor=users.data_scientist, project=project, dataset="bc", upload=SimpleUploadedFile("bc.csv", cancer_csv)
    )
    if RUNNING_WORKERS:
        # A worker an earlier test started takes the upload's own profile message: let it finish, so the three
        # contenders below race each other and not it.
        wait_for(
            lambda: DatasetProfile.objects.filter(pk=version.pk, status__in=["ready", "failed"]).exists(),
            timeout=120,
            what="the session worker to profile the upload",
        )
    # Three duplicate messages for a profile nobody holds.
    DatasetProfile.objects.filter(pk=version.pk).update(status="queued", claimed_at=None)
    outcomes = race(*[lambda: services.dataset_profile_run(version_id=version.pk)] * 3)
    assert [o.error for o in outcomes] == [None, None, None]
    assert sum(o.value is not None for o in outcomes) == 1
    profile = DatasetProfile.objects.get(pk=version.pk)
    assert profile.status == "ready" and profile.profile["row_count"] == 569


def test_duplicate_registration_messages_register_once(users, project, cancer_csv, settings, tmp_path) -> None:
    (tmp_path / "bc.csv").write_bytes(cancer_csv)
    settings.DATASET_FILE_ROOTS = [tmp_path]
    registration = DatasetRegistration.objects.create(
        project=project,
        dataset_slug="bc-file",
        dataset_name="bc-file",
        source_uri=(tmp_path / "bc.csv").as_uri(),
        created_by=users.data_scientist,
    )
    outcomes = race(*[lambda: services.dataset_registration_run(registration_id=registration.pk)] * 3)
    assert [o.error for o in outcomes] == [None, None, None]
    registration.refresh_from_db()
    assert registration.status == "succeeded", registration.error
    assert DatasetVersion.objects.filter(dataset__slug="bc-file").count() == 1
    actions = TransitionEvent.objects.filter(object_id=str(registration.pk), object_type="lineage.datasetregistration")
    assert list(actions.values_list("to_status", flat=True)) == ["running", "succeeded"]
