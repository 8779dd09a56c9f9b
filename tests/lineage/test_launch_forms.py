"""The derive and training forms: fields generated from the recipe's declarations, unavailable backends shown
disabled with the reason."""

from __future__ import annotations

from typing import Any

import pytest
from django.urls import reverse
from pytest_django.asserts import assertContains, assertNotContains

from lineage.models import Run
from tests.lineage.conftest import upload

pytestmark = pytest.mark.django_db


@pytest.fixture
def version(api_client_for, users, project, cancer_csv) -> dict[str, Any]:
    return upload(
        api_client_for(users.data_scientist), project="cancer", dataset="bc", name="bc.csv", content=cancer_csv
    ).json()


def test_derive_form_has_the_recipe_s_parameter_fields(client, users, version) -> None:
    client.force_login(users.data_scientist)
    response = client.get(reverse("transform-create"), {"input": version["id"]})
    form = response.context["form"]
    assert [name for name in form.fields if name.startswith("hp_")] == [
        "hp_test_fraction",
        "hp_seed",
        "hp_stratify_column",
    ]
    assertContains(response, '<label for="id_hp_test_fraction">test_fraction</label>', html=True)
    assertContains(
        response,
        '<input type="text" name="hp_test_fraction" maxlength="2000" placeholder="0.2" '
        'aria-describedby="id_hp_test_fraction_helptext" id="id_hp_test_fraction">',
        html=True,
    )
    # A column parameter is a choice among the input's columns.
    assertContains(response, '<option value="mean radius">mean radius</option>', html=True)
    assertNotContains(response, "fill it for you")


def test_choosing_another_recipe_brings_its_fields(client, users, version) -> None:
    client.force_login(users.data_scientist)
    response = client.get(
        reverse("transform-create"), {"input": version["id"], "recipe": "select_columns"}, HTTP_HX_REQUEST="true"
    )
    assert [t.name for t in response.templates][0] == "lineage/_transform_fields.html"
    assertContains(response, '<label for="id_hp_columns">columns *</label>', html=True)
    assertNotContains(response, "hp_test_fraction")


def test_derive_form_launches_with_the_typed_parameters(client, users, version) -> None:
    client.force_login(users.data_scientist)
    response = client.post(
        reverse("transform-create") + f"?input={version['id']}",
        {
            "input": version["id"],
            "recipe": "split",
            "hp_test_fraction": "0.3",
            "hp_seed": "",
            "hp_stratify_column": "target",
        },
    )
    run = Run.objects.get()
    assert response.status_code == 302 and response["Location"] == reverse("run-detail", args=[run.pk])
    assert run.recipe == "split"
    assert run.parameters["test_fraction"] == 0.3 and run.parameters["stratify_column"] == "target"
    assert run.parameters["seed"] == 42  # blank: the recipe's default


def test_a_bad_parameter_is_named_on_its_field(client, users, version) -> None:
    client.force_login(users.data_scientist)
    response = client.post(
        reverse("transform-create") + f"?input={version['id']}",
        {"input": version["id"], "recipe": "split", "hp_test_fraction": "2"},
    )
    assert response.status_code == 400 and not Run.objects.exists()
    assert response.context["form"].errors["hp_test_fraction"] == ["expected a number between 0.05 and 0.95"]
    assertContains(
        response,
        '<p class="error" data-field="hp_test_fraction">expected a number between 0.05 and 0.95</p>',
        html=True,
        status_code=400,
    )


def _training_page(client, version, **data):
    url = reverse("training-create") + f"?train={version['id']}"
    return client.post(url, data) if data else client.get(url)


def test_sagemaker_is_shown_disabled_with_the_reason_when_not_configured(client, users, version, settings) -> None:
    settings.SAGEMAKER_ROLE_ARN = None
    client.force_login(users.data_scientist)
    response = _training_page(client, version)
    assertContains(
        response,
        '<option value="sagemaker" disabled>SageMaker (not available: SAGEMAKER_ROLE_ARN is not set)</option>',
        html=True,
    )
    assertContains(response, '<option value="local" selected>local (this machine)</option>', html=True)
    assertContains(
        response,
        '<small class="help">SageMaker is not configured here: SAGEMAKER_ROLE_ARN is not set.</small>',
        html=True,
    )
    # A hand-made request is refused on the field, before the service is asked.
    refused = _training_page(
        client,
        version,
        train=version["id"],
        recipe="logistic_regression",
        target="target",
        seed="1",
        backend="sagemaker",
        instance_type="ml.m5.large",
        instance_count="1",
        max_runtime_minutes="60",
    )
    assert refused.context["form"].errors["backend"] == [
        "SageMaker is not configured here: SAGEMAKER_ROLE_ARN is not set"
    ]
    assert not Run.objects.exists()


def test_sagemaker_is_offered_when_configured(client, users, version, settings) -> None:
    settings.SAGEMAKER_ROLE_ARN = "arn:aws:iam::123456789012:role/training"
    settings.SAGEMAKER_S3_URL = "s3://bucket/prefix"
    client.force_login(users.data_scientist)
    response = _training_page(client, version)
    assertContains(response, '<option value="sagemaker">SageMaker</option>', html=True)
    assertNotContains(response, "not available")
