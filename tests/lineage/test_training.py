"""Training runs: real local training through a real worker, model registration, reproduce, stop, reconcile."""

from __future__ import annotations

import hashlib
import json
import os
import signal

import pytest
from django.urls import reverse

from controlplane.backends import object_store
from lineage import services
from lineage.models import DatasetProfile, ModelVersion, Run
from tests.fixtures.processes import wait_for
from tests.lineage.conftest import upload


def finished(run_id: int, timeout: float = 240) -> Run:
    return wait_for(
        lambda: Run.objects.filter(pk=run_id, status__in=["succeeded", "failed", "stopped"]).first(),
        timeout=timeout,
        what=f"run {run_id} to finish",
    )


def launch(client, **body):
    payload = {"recipe": "logistic_regression", "target": "target", "seed": 3, **body}
    return client.post(reverse("api-run-training-create"), payload, format="json")


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_train_register_and_reproduce_on_the_local_backend(
    celery_worker, api_client_for, users, project, cancer_csv
) -> None:
    client = api_client_for(users.data_scientist)
    data = upload(client, project="cancer", dataset="bc", name="bc.csv", content=cancer_csv).json()
    wait_for(
        lambda: DatasetProfile.objects.filter(version_id=data["id"], status="ready").exists(),
        timeout=120,
        what="profile",
    )

    response = launch(client, train=data["id"], hyperparameters={"C": 0.5, "max_iter": 500}, model_name="bc-logreg")
    assert response.status_code == 201, response.content
    # The answer is the run as it stands once the launch committed: the session worker may already
    # have taken it (the events below prove it went through queued).
    assert response.json()["status"] in {"queued", "starting", "running"}
    # 1 h at most on every core of this machine at the local CPU-hour price, rounded up to the cent.
    from decimal import ROUND_CEILING, Decimal

    from django.conf import settings

    expected = (Decimal(str(settings.LOCAL_CPU_HOUR_PRICE)) * settings.LOCAL_TRAINING_CPUS).quantize(
        Decimal("0.01"), rounding=ROUND_CEILING
    )
    assert Decimal(response.json()["estimated_cost"]) == expected
    run = finished(response.json()["id"])
    assert run.status == "succeeded", run.status_reason
    assert [e.to_status for e in run.events.all()] == ["queued", "starting", "running", "succeeded"]
    assert run.usage["cpu_seconds"] > 0 and run.usage["wall_seconds"] > 0 and run.cost is not None

    version = ModelVersion.objects.get(run=run)
    assert (version.registered_model.slug, version.number) == ("bc-logreg", 1)
    with object_store().open(version.artifact_key) as handle:
        assert hashlib.sha256(handle.read()).hexdigest() == version.sha256
    assert version.target == "target" and len(version.input_schema) == 30
    assert 0.9 < version.metrics["accuracy"] <= 1.0 and "roc_auc" in version.metrics
    metrics = client.get(reverse("api-run-metrics", args=[run.pk])).json()
    assert len(metrics["series"]["cv_accuracy_fold"]) == 5 and metrics["final"]["accuracy"] == pytest.approx(
        version.metrics["accuracy"], abs=1e-6
    )
    # The run reports the folds' mean (and deviation), never the last fold's score, and leaves the folds out of "final".
    folds = [point["value"] for point in metrics["series"]["cv_accuracy_fold"]]
    assert metrics["final"]["cv_accuracy"] == pytest.approx(sum(folds) / 5, abs=1e-6)
    assert "cv_accuracy_std" in metrics["final"] and "cv_accuracy_fold" not in metrics["final"]
    lineage = client.get(reverse("api-lineage", args=[version.node_id])).json()
    assert {f"dataset_version:{data['id']}", run.node_id} <= {n["id"] for n in lineage["nodes"]}

    again = client.post(reverse("api-run-reproduce", args=[run.pk]))
    assert again.status_code == 201, again.content
    reproduction = finished(again.json()["id"])
    assert reproduction.status == "succeeded", reproduction.status_reason
    check = client.get(reverse("api-run-metrics", args=[reproduction.pk])).json()["reproduction"]
    assert check["original"] == run.pk and check["match"] is True
    assert client.get(reverse("api-run-detail", args=[reproduction.pk])).json()["reproduced_from"] == run.pk
    # Same data, code, parameters and seed: the same bytes, so the same model version (linked, not registered again).
    assert check["outcome"] == "same_model"
    assert not ModelVersion.objects.filter(run=reproduction).exists()
    assert reproduction.same_model_as == version
    assert version.registered_model.versions.count() == 1
    page = client.get(reverse("run-detail", args=[reproduction.pk])).content.decode()
    assert 'data-match="true"' in page


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_stop_a_running_local_run(celery_worker, api_client_for, users, project, cancer_csv) -> None:
    client = api_client_for(users.data_scientist)
    data = upload(client, project="cancer", dataset="bc", name="bc.csv", content=cancer_csv).json()
    response = launch(
        client,
        train=data["id"],
        recipe="random_forest",
        hyperparameters={"task": "classification", "n_estimators": 2000, "cv_folds": 10},
    )
    run_id = response.json()["id"]
    wait_for(
        lambda: Run.objects.filter(pk=run_id, status="running").exists(), timeout=120, what="the run to be running"
    )
    stopped = client.post(reverse("api-run-stop", args=[run_id]), {"reason": "changed my mind"}, format="json")
    assert stopped.status_code == 200 and stopped.json()["status"] == "stopping"
    run = finished(run_id, timeout=90)
    assert run.status == "stopped", (run.status, run.status_reason)
    job = json.loads((services.work_dir_for(run) / "job.json").read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(job["pid"], 0)
    assert not ModelVersion.objects.filter(run=run).exists()
    assert client.post(reverse("api-run-stop", args=[run_id])).status_code == 409  # a stopped run cannot stop again


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_lost_local_process_is_detected_and_the_run_failed(
    celery_worker, api_client_for, users, project, cancer_csv
) -> None:
    client = api_client_for(users.data_scientist)
    data = upload(client, project="cancer", dataset="bc", name="bc.csv", content=cancer_csv).json()
    run_id = launch(
        client,
        train=data["id"],
        recipe="random_forest",
        hyperparameters={"task": "classification", "n_estimators": 2000, "cv_folds": 10},
    ).json()["id"]
    run = wait_for(lambda: Run.objects.filter(pk=run_id, status="running").first(), timeout=120, what="running")
    job = json.loads((services.work_dir_for(run) / "job.json").read_text())
    os.killpg(job["pid"], signal.SIGKILL)  # what a machine restart or OOM kill does to the job
    run = finished(run_id, timeout=60)
    assert run.status == "failed" and "disappeared" in run.status_reason


@pytest.mark.django_db
def test_bad_launch_input_names_the_field_and_creates_nothing(
    api_client_for, users, project, cancer_csv, settings
) -> None:
    client = api_client_for(users.data_scientist)
    train = upload(client, project="cancer", dataset="bc", name="bc.csv", content=cancer_csv).json()
    other = upload(client, project="cancer", dataset="other", name="o.csv", content=b"a,b\n1,2\n3,4\n").json()
    settings.SAGEMAKER_ROLE_ARN = None
    cases = [
        ({"recipe": "deep_magic"}, "recipe", "unknown recipe"),
        ({"recipe": "split"}, "recipe", "expected a training recipe"),
        ({"hyperparameters": {"C": "lots"}}, "hyperparameters.C", "number"),
        ({"hyperparameters": {"C": 0}}, "hyperparameters.C", "between"),
        ({"hyperparameters": {"max_iter": 3}}, "hyperparameters.max_iter", "whole number"),
        ({"target": "diagnosis"}, "target", "not in the dataset"),
        ({"validation": other["id"]}, "validation", "schema differs"),
        ({"validation": 999999}, "validation", "no dataset version"),
        ({"backend": "sagemaker", "instance_type": "ml.p5.48xlarge"}, "instance_type", "expected one of"),
        ({"backend": "sagemaker", "instance_type": "ml.m5.large"}, "backend", "SAGEMAKER_ROLE_ARN"),
        ({"backend": "local", "instance_type": "ml.m5.large"}, "instance_type", "local"),
        ({"max_runtime_seconds": 5}, "max_runtime_seconds", "between 60"),
    ]
    for body, field, words in cases:
        response = launch(client, train=train["id"], **body)
        assert response.status_code == 400, (body, response.content)
        fields = response.json()["error"]["fields"]
        assert field in fields and words in " ".join(fields[field]), (body, fields)
    assert not Run.objects.exists()


@pytest.mark.django_db
def test_cost_estimate(api_client_for, users, settings) -> None:
    settings.SAGEMAKER_ROLE_ARN = "arn:aws:iam::123456789012:role/ControlPlaneSageMaker"
    settings.SAGEMAKER_S3_URL = "s3://bucket/sagemaker"
    client = api_client_for(users.finance)
    body = client.get(
        reverse("api-run-estimate"),
        {"backend": "sagemaker", "instance_type": "ml.m5.xlarge", "instance_count": 2, "max_runtime_seconds": 7200},
    ).json()
    assert body["estimated_cost"] == "0.92" and "2 × ml.m5.xlarge" in body["explanation"]
    bad = client.get(reverse("api-run-estimate"), {"backend": "sagemaker", "instance_type": "ml.nope"})
    assert bad.status_code == 400 and "instance_type" in bad.json()["error"]["fields"]


@pytest.mark.django_db
def test_the_estimate_refuses_what_the_launch_refuses_in_the_users_unit(
    api_client_for, client, users, settings
) -> None:
    limit = settings.TRAINING_MAX_RUNTIME_SECONDS
    api = api_client_for(users.finance)
    too_long = api.get(reverse("api-run-estimate"), {"max_runtime_seconds": limit + 1})
    assert (
        too_long.status_code == 400
        and f"and {limit} seconds" in too_long.json()["error"]["fields"]["max_runtime_seconds"][0]
    )
    unconfigured = api.get(reverse("api-run-estimate"), {"backend": "sagemaker", "instance_type": "ml.m5.xlarge"})
    assert (
        unconfigured.status_code == 400 and "SAGEMAKER_ROLE_ARN" in unconfigured.json()["error"]["fields"]["backend"][0]
    )
    client.force_login(users.data_scientist)
    page = client.get(reverse("run-estimate"), {"max_runtime_minutes": limit // 60 + 1}).content.decode()
    assert f"expected 1 to {limit // 60} minutes" in page and "data-cost" not in page


@pytest.mark.django_db
def test_only_data_scientists_and_admins_launch_and_stop(api_client_for, users, project, cancer_csv) -> None:
    train = upload(
        api_client_for(users.data_scientist), project="cancer", dataset="bc", name="bc.csv", content=cancer_csv
    ).json()
    for user in (users.approver, users.finance, users.outsider):
        assert launch(api_client_for(user), train=train["id"]).status_code == 403
    assert not Run.objects.exists()


@pytest.mark.django_db
def test_an_unknown_field_is_refused_naming_it_and_nothing_is_launched(
    api_client_for, users, project, cancer_csv
) -> None:
    client = api_client_for(users.data_scientist)
    train = upload(client, project="cancer", dataset="bc", name="bc.csv", content=cancer_csv).json()
    typo = launch(client, train=train["id"], hyperparameter={"n_estimators": 5}, max_runtime_minutes=5000)
    assert typo.status_code == 400
    fields = typo.json()["error"]["fields"]
    assert set(fields) == {"hyperparameter", "max_runtime_minutes"} and "unknown field" in fields["hyperparameter"][0]
    assert not Run.objects.exists()


@pytest.mark.django_db
def test_a_model_keeps_predicting_one_target(users, project, cancer_csv) -> None:
    from django.core.exceptions import ValidationError
    from django.core.files.uploadedfile import SimpleUploadedFile

    from lineage.models import RegisteredModel

    version, _ = services.dataset_version_upload(
        actor=users.data_scientist, project=project, dataset="bc", upload=SimpleUploadedFile("bc.csv", cancer_csv)
    )
    earlier = Run.objects.create(
        project=project,
        kind="training",
        recipe="logistic_regression",
        recipe_version="2",
        recipe_fingerprint="f" * 64,
        created_by=users.data_scientist,
        status="succeeded",
    )
    model = RegisteredModel.objects.create(
        project=project, slug="bc-logistic-regression", name="bc-logistic-regression", created_by=users.data_scientist
    )
    ModelVersion.objects.create(
        registered_model=model,
        number=1,
        run=earlier,
        artifact_uri="file:///m",
        sha256="0" * 64,
        size=1,
        target="target",
        created_by=users.data_scientist,
    )
    common = {"actor": users.data_scientist, "recipe": "logistic_regression", "train": version}
    with pytest.raises(ValidationError) as refused:
        services.training_run_launch(**common, target="mean radius", model_name="bc-logistic-regression")
    assert "predicts 'target'" in refused.value.message_dict["model_name"][0]
    # Without a name given, a run predicting something else goes to a model named after its target.
    other = services.training_run_launch(**common, target="worst area")
    assert other.output_name == "bc-worst-area-logistic-regression"
