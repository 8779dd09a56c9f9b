"""Which strings mean "no value" is the user's to say, once per dataset version, and never guessed."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import SimpleUploadedFile

from lineage import services
from lineage.models import DatasetVersion

pytestmark = pytest.mark.django_db

COUNTRIES = b"country,visits\nNA,3\nNO,4\nNA,5\nNone,6\n,7\n"


def upload(users, project, content=COUNTRIES, **extra):
    return services.dataset_version_upload(
        actor=users.data_scientist,
        project=project,
        dataset="countries",
        upload=SimpleUploadedFile("countries.csv", content),
        **extra,
    )


def test_only_empty_fields_are_missing_unless_the_user_says(users, project) -> None:
    version, _ = upload(users, project)
    assert version.missing_values == [""]


def test_the_users_markers_are_kept_on_the_version(users, project) -> None:
    version, _ = upload(users, project, missing_values="NA, n/a ,NA")
    assert version.missing_values == ["", "NA", "n/a"]


def test_the_same_bytes_with_another_reading_are_refused_and_change_nothing(users, project) -> None:
    first, _ = upload(users, project)
    with pytest.raises(ValidationError) as raised:
        upload(users, project, missing_values="NA")
    assert "missing_values" in raised.value.message_dict
    assert f"already {first}" in raised.value.message_dict["missing_values"][0]
    assert DatasetVersion.objects.filter(dataset=first.dataset).count() == 1


@pytest.mark.parametrize("markers", ['"quoted"', "x" * 33, ["NA", 3]])
def test_bad_markers_name_the_field(users, project, markers) -> None:
    with pytest.raises(ValidationError) as raised:
        upload(users, project, missing_values=markers)
    assert list(raised.value.message_dict) == ["missing_values"]
    assert not DatasetVersion.objects.exists()


def test_the_api_takes_the_markers_and_answers_400_naming_the_field(api_client_for, users, project) -> None:
    from tests.lineage.conftest import upload as api_upload

    client = api_client_for(users.data_scientist)
    created = api_upload(
        client, project="cancer", dataset="countries", name="c.csv", content=COUNTRIES, missing_values="NA"
    )
    assert created.status_code == 201 and created.json()["missing_values"] == ["", "NA"]
    bad = api_upload(client, project="cancer", dataset="other", name="c.csv", content=COUNTRIES, missing_values='"x"')
    assert bad.status_code == 400 and list(bad.json()["error"]["fields"]) == ["missing_values"]


def test_the_profile_reads_the_version_with_its_markers(users, project) -> None:
    plain, _ = upload(users, project)
    named, _ = services.dataset_version_upload(
        actor=users.data_scientist,
        project=project,
        dataset="countries-na",
        upload=SimpleUploadedFile("countries.csv", COUNTRIES),
        missing_values="NA",
    )
    for version in (plain, named):
        services.dataset_profile_run(version_id=version.pk)
    country = {v.pk: v.profile.__class__.objects.get(pk=v.pk).profile["columns"]["country"] for v in (plain, named)}
    assert country[plain.pk]["missing"] == 1  # only the empty field: NA is Namibia, None is a value
    assert country[named.pk]["missing"] == 3  # the user said NA means no value


def test_the_register_page_takes_the_markers_and_the_version_page_shows_them(client, users, project) -> None:
    from django.urls import reverse
    from pytest_django.asserts import assertInHTML

    client.force_login(users.data_scientist)
    response = client.post(
        reverse("dataset-register"),
        {
            "project": "cancer",
            "dataset": "countries",
            "missing_values": "NA",
            "file": SimpleUploadedFile("countries.csv", COUNTRIES),
        },
        follow=True,
    )
    version = DatasetVersion.objects.get(dataset__slug="countries")
    assert version.missing_values == ["", "NA"]
    assertInHTML('<dd data-testid="missing-values">empty fields, <code>NA</code></dd>', response.content.decode())
