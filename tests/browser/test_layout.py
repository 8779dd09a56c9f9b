"""Pages a person reads, at a laptop's 1366 px and a phone's 390 px: nothing runs past the window, long URIs
and hashes wrap with a copy button, charts say what they show."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from controlplane import services as controlplane_services
from lineage.models import (
    Dataset,
    DatasetProfile,
    DatasetVersion,
    LineageEdge,
    ModelVersion,
    RegisteredModel,
    Run,
    RunInput,
)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

WIDTHS = (1366, 390)
LONG_S3 = "s3://mlplatformdatasetsproductioneuwest1/raw/customer_churn/exports/2026/11/30/part_00000_" + "a1b2c3d4" * 6 + ".snappy.parquet"
SHOTS = Path(__file__).resolve().parents[2] / "test-results" / "layout"


def _csv(tmp_path: Path) -> Path:
    lines = ["year,species,bill_length_mm"]
    species = ["Adelie", "Gentoo", "Chinstrap", ""]
    for i in range(120):
        bill = "" if i % 10 == 0 else f"{35 + (i % 17) * 0.7:.1f}"
        lines.append(f"{2007 + i % 3},{species[i % 4]},{bill}")
    path = tmp_path / "penguins.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def history(users: Any, tmp_path: Path) -> dict[str, Any]:
    """A dataset version stored under a long s3:// URI, the run that trained on it and the model it made."""
    from workers.datasets import profile_files

    project = controlplane_services.project_create(actor=users.admin, name="Penguins", slug="penguins")
    path = _csv(tmp_path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    dataset = Dataset.objects.create(project=project, name="penguins-with-a-rather-long-dataset-name", slug="penguins", created_by=users.data_scientist)
    version = DatasetVersion.objects.create(
        dataset=dataset, number=1, sha256=digest, uri=LONG_S3, storage_key="datasets/penguins/v1", size=path.stat().st_size,
        format="csv", content_format="csv", columns=["year", "species", "bill_length_mm"], row_count=120, source="s3",
        source_uri=LONG_S3, source_etag='"' + "9f" * 16 + '-12"', source_version_id="3HL4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY+MTRCxf3vjVBH40Nr8X8gdRQBpUMLUo",
        created_by=users.data_scientist,
    )
    DatasetProfile.objects.create(version=version, status="ready", progress=1.0, profile=profile_files([path], format="csv"))
    started = timezone.now() - timedelta(seconds=42)
    run = Run.objects.create(
        project=project, kind="training", recipe="random_forest", recipe_version="1", recipe_fingerprint=hashlib.sha256(b"r").hexdigest(),
        parameters={"target": "species", "n_estimators": 100, "class_weight": "balanced_subsample"}, seed=42, status="succeeded",
        backend="sagemaker", instance_type="ml.m5.large",
        backend_job_id="cp-penguins-random-forest-20261130-235959-" + "0123456789abcdef" * 2,
        metrics={"cv_accuracy": [{"fold": k, "value": v} for k, v in enumerate([0.96, 0.96, 0.98, 1.0, 1.0])]},
        log_tail=["1764547200.123 fold 1 of 5: accuracy=0.96", "1764547201.5 fold 2 of 5: accuracy=0.96", "plain line without a time"],
        created_by=users.data_scientist, started_at=started, finished_at=started + timedelta(seconds=42),
    )
    RunInput.objects.create(run=run, dataset_version=version, channel="train")
    model = RegisteredModel.objects.create(project=project, name="penguins-random-forest-classifier", slug="penguins-random-forest", created_by=users.data_scientist)
    model_version = ModelVersion.objects.create(
        registered_model=model, number=1, run=run, artifact_uri=LONG_S3.replace(".snappy.parquet", "/output/model.tar.gz"),
        artifact_key="", sha256=hashlib.sha256(b"model").hexdigest(), size=123456, task="classification", target="species",
        input_schema=[{"name": "year", "type": "integer"}, {"name": "bill_length_mm", "type": "float"}], classes=["Adelie", "Chinstrap", "Gentoo"],
        metrics={"cv_accuracy": 0.98}, created_by=users.data_scientist,
    )
    LineageEdge.objects.create(source=version.node_id, target=run.node_id)
    LineageEdge.objects.create(source=run.node_id, target=model_version.node_id)
    return {"version": version, "run": run, "model_version": model_version}


def _pages(history: dict[str, Any]) -> dict[str, str]:
    version, run, model_version = history["version"], history["run"], history["model_version"]
    return {
        "dataset-version": "/datasets/penguins/penguins/v1/",
        "model-version": "/models/penguins/penguins-random-forest/v1/",
        "run": f"/runs/{run.pk}/",
        "lineage": f"/lineage/{version.node_id}/",
        "lineage-of-model": f"/lineage/{model_version.node_id}/",
    }


@pytest.mark.parametrize("width", WIDTHS)
def test_no_page_is_wider_than_the_window(page, sign_in, users, history, width: int) -> None:
    sign_in(users.data_scientist)
    page.set_viewport_size({"width": width, "height": 900})
    SHOTS.mkdir(parents=True, exist_ok=True)
    too_wide = {}
    for name, url in _pages(history).items():
        page.goto(url)
        page.wait_for_load_state("load")
        page.screenshot(path=str(SHOTS / f"{name}-{width}.png"), full_page=True)
        scroll_width = page.evaluate("document.documentElement.scrollWidth")
        if scroll_width > width:
            too_wide[name] = scroll_width
    assert too_wide == {}, f"pages wider than {width} px"


@pytest.mark.parametrize("width", WIDTHS)
def test_every_lineage_node_shows_its_whole_label_inside_its_box(page, sign_in, users, history, width: int) -> None:
    sign_in(users.finance)
    page.set_viewport_size({"width": width, "height": 900})
    for url in (_pages(history)["lineage"], _pages(history)["model-version"]):
        page.goto(url)
        overflowing = page.evaluate("""() => [...document.querySelectorAll('[data-testid=lineage-graph] a[data-node]')].flatMap(a => {
            const box = a.querySelector('rect').getBBox(), svg = a.ownerSVGElement;
            return [...a.querySelectorAll('text')].filter(t => {
                const b = t.getBBox();
                return b.x + b.width > box.x + box.width - 4 || box.x + box.width > svg.viewBox.baseVal.width;
            }).map(t => t.textContent);
        })""")
        assert overflowing == [], url
        # The whole graph can be scrolled into view inside its card.
        graph = page.get_by_test_id("lineage-graph")
        graph.evaluate("g => g.scrollLeft = g.scrollWidth")
        right_most = page.locator(f'a[data-node="{history["model_version"].node_id}"] rect')
        box, card = right_most.bounding_box(), graph.bounding_box()
        assert box and card and box["x"] + box["width"] <= card["x"] + card["width"]


def test_copy_buttons_copy_the_whole_value(page, sign_in, users, history) -> None:
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    sign_in(users.finance)
    page.set_viewport_size({"width": 390, "height": 900})
    page.goto(_pages(history)["dataset-version"])
    for testid, value in (("sha256", history["version"].sha256), ("uri", LONG_S3)):
        copyable = page.get_by_test_id(testid).locator("xpath=..")
        button = copyable.get_by_role("button", name="Copy")
        button.click()
        copyable.locator("button.copy.copied", has_text="Copied").wait_for()
        assert page.evaluate("navigator.clipboard.readText()") == value
        assert page.get_by_test_id(testid).inner_text() == value
