"""The training launch form in Chromium: recipe fields follow the recipe, the estimate follows the inputs,
bad input is named on the form, and a launched run trains to a registered model version."""

from __future__ import annotations

import re

import pytest

from controlplane import services as controlplane_services
from lineage.models import DatasetVersion, ModelVersion, Run
from tests.browser.conftest import htmx_settled

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def version(users, tmp_path):
    from django.core.files.uploadedfile import SimpleUploadedFile
    from sklearn.datasets import load_breast_cancer

    from lineage import services

    controlplane_services.project_create(actor=users.admin, name="Cancer", slug="cancer")
    path = tmp_path / "bc.csv"
    load_breast_cancer(as_frame=True).frame.to_csv(path, index=False)
    created, _ = services.dataset_version_upload(
        actor=users.data_scientist,
        project="cancer",
        dataset="breast-cancer",
        upload=SimpleUploadedFile("bc.csv", path.read_bytes()),
    )
    return created


def test_launch_form_end_to_end(page, sign_in, users, version: DatasetVersion, celery_worker, settings) -> None:
    settings.SAGEMAKER_ROLE_ARN = None
    sign_in(users.data_scientist)
    page.goto(f"/datasets/cancer/breast-cancer/v{version.number}/")
    page.get_by_role("link", name="Train a model…").click()
    page.wait_for_url(re.compile(r".*/runs/new/training/\?train=\d+$"))

    # The hyperparameter fields are the chosen recipe's.
    assert page.get_by_label("C", exact=True).count() == 1
    page.get_by_label("Recipe").select_option("random_forest")
    page.get_by_label("n_estimators").wait_for()
    htmx_settled(page)
    assert page.get_by_label("C", exact=True).count() == 0

    # SageMaker is not configured on this machine: the form shows it disabled, with the reason.
    sagemaker = page.get_by_label("Backend").locator('option[value="sagemaker"]')
    assert sagemaker.is_disabled()
    assert sagemaker.inner_text() == "SageMaker (not available: SAGEMAKER_ROLE_ARN is not set)"
    assert (
        "SAGEMAKER_ROLE_ARN is not set"
        in page.locator(".field", has=page.get_by_label("Backend")).locator(".help").inner_text()
    )

    page.get_by_label("Recipe").select_option("logistic_regression")
    page.get_by_label("C", exact=True).wait_for()
    htmx_settled(page)
    page.get_by_label("C", exact=True).fill("-1")
    page.get_by_role("button", name="Launch training run").click()
    assert "between" in page.locator('[data-field="hp_C"]').inner_text()
    page.get_by_label("C", exact=True).fill("0.5")
    page.get_by_label("Target column").select_option("target")
    page.get_by_role("button", name="Launch training run").click()
    page.wait_for_url(re.compile(r".*/runs/\d+/$"))

    run = Run.objects.get()
    page.locator('#run-status[data-status="succeeded"]').wait_for(timeout=180_000)
    model = ModelVersion.objects.get(run=run)
    page.get_by_test_id("model-version").click()
    page.wait_for_url(f"**/models/cancer/{model.registered_model.slug}/v1/")
    assert page.get_by_test_id("model-sha256").inner_text() == model.sha256
    assert "accuracy" in page.get_by_test_id("model-metrics").inner_text()


def test_the_estimate_follows_the_inputs_when_sagemaker_is_configured(
    page, sign_in, users, version: DatasetVersion, settings
) -> None:
    settings.SAGEMAKER_ROLE_ARN = "arn:aws:iam::123456789012:role/training"
    settings.SAGEMAKER_S3_URL = "s3://bucket/prefix"
    sign_in(users.data_scientist)
    page.goto(f"/runs/new/training/?train={version.pk}")
    page.get_by_label("Backend").select_option("sagemaker")
    page.get_by_label("Instance type").select_option("ml.m5.xlarge")
    page.get_by_label("Instance count").fill("2")
    page.get_by_label("Max runtime (minutes)").fill("120")
    page.get_by_label("Max runtime (minutes)").dispatch_event("change")
    page.locator('#estimate [data-cost="0.92"]').wait_for()
    assert "2 × ml.m5.xlarge" in page.get_by_test_id("estimate").inner_text()


def test_derive_form_fields_follow_the_recipe(page, sign_in, users, version: DatasetVersion) -> None:
    sign_in(users.data_scientist)
    page.goto(f"/datasets/cancer/breast-cancer/v{version.number}/")
    page.get_by_role("link", name="Derive…").click()
    page.wait_for_url(re.compile(r".*/runs/new/transform/\?input=\d+$"))
    assert page.get_by_label("test_fraction").get_attribute("placeholder") == "0.2"
    page.get_by_label("Recipe").select_option("select_columns")
    page.get_by_label("columns *").wait_for()
    htmx_settled(page)
    assert page.get_by_label("test_fraction").count() == 0
    page.get_by_label("Recipe").select_option("split")
    page.get_by_label("test_fraction").wait_for()
    htmx_settled(page)
    page.get_by_label("test_fraction").fill("0.5")
    page.get_by_label("stratify_column").select_option("target")
    page.get_by_role("button", name="Queue transform run").click()
    page.wait_for_url(re.compile(r".*/runs/\d+/$"))
    run = Run.objects.get()
    assert (
        run.recipe == "split"
        and run.parameters["test_fraction"] == 0.5
        and run.parameters["stratify_column"] == "target"
    )


def test_changing_the_recipe_keeps_what_the_user_chose(page, sign_in, users, version: DatasetVersion) -> None:
    sign_in(users.data_scientist)
    page.goto(f"/runs/new/training/?train={version.pk}")
    page.get_by_label("Target column").select_option("mean radius")
    page.get_by_label("Seed").fill("7")
    page.get_by_label("Max runtime (minutes)").fill("30")
    page.get_by_label("Model name").fill("radius-model")
    page.get_by_label("Recipe").select_option("random_forest")
    page.get_by_label("n_estimators").wait_for()  # the random forest's own fields have arrived
    assert page.get_by_label("Target column").input_value() == "mean radius"
    assert page.get_by_label("Seed").input_value() == "7"
    assert page.get_by_label("Max runtime (minutes)").input_value() == "30"
    assert page.get_by_label("Model name").input_value() == "radius-model"
