"""Datasets in Chromium: upload with the form, see the profile charts, read the lineage graph."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from controlplane import services as controlplane_services
from lineage.models import Dataset, DatasetProfile, DatasetVersion, LineageEdge, Run

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def project(users):
    return controlplane_services.project_create(actor=users.admin, name="Cancer", slug="cancer")


def test_upload_in_the_browser_then_profile_charts(
    page, sign_in, users, project, celery_worker, tmp_path: Path
) -> None:
    from sklearn.datasets import load_breast_cancer

    csv_path = tmp_path / "breast-cancer.csv"
    load_breast_cancer(as_frame=True).frame.to_csv(csv_path, index=False)
    sign_in(users.data_scientist)
    page.goto("/datasets/")
    page.get_by_role("link", name="Register data").click()
    page.get_by_label("Project").select_option("cancer")
    page.get_by_label("Dataset").fill("breast-cancer")
    page.get_by_label("File").set_input_files(str(csv_path))
    page.get_by_role("button", name="Register").click()
    page.wait_for_url(re.compile(r".*/datasets/cancer/breast-cancer/v1/$"))
    version = DatasetVersion.objects.get()
    assert page.get_by_test_id("sha256").inner_text() == version.sha256
    # The profile arrives from the worker and the page updates itself, charts included.
    page.locator('[data-testid="profile-status"][data-status="ready"]').wait_for(timeout=90_000)
    assert "569 rows, 31 columns" in page.get_by_test_id("profile-status").inner_text()
    bars = page.locator('.chart[data-column="mean radius"] .barlayer .point')
    bars.first.wait_for()
    assert bars.count() == 20  # the stored histogram's bins, drawn
    assert page.locator('.chart[data-column="mean radius"] .gtitle').text_content() == "mean radius"
    download = page.get_by_test_id("download").get_attribute("href")
    body = page.request.get(download)
    assert body.ok and body.body() == csv_path.read_bytes()


@pytest.mark.parametrize("debug", [False, True], ids=["production", "make-run-debug"])
def test_a_bad_file_shows_the_reason_and_stores_nothing(
    page, sign_in, users, project, tmp_path: Path, settings, debug
) -> None:
    settings.DEBUG = debug  # `make run` serves with DEBUG on: the refusal must still show inside the page
    bad = tmp_path / "ragged.csv"
    bad.write_text("a,b,c\n1,2,3\n4,5\n")
    sign_in(users.data_scientist)
    page.goto("/datasets/register/")
    page.get_by_label("Dataset").fill("ragged")
    page.get_by_label("File").set_input_files(str(bad))
    page.get_by_role("button", name="Register").click()
    error = page.locator('[data-field="file"]')
    error.wait_for()
    assert "line 3 has 2 fields but the header has 3" in error.inner_text()
    # Shown in the page, which keeps its layout (a refused form must not replace the whole document).
    assert page.get_by_test_id("main-nav").is_visible()
    assert not Dataset.objects.exists()


def test_lineage_page_draws_the_nodes_of_a_known_graph(page, sign_in, users, project) -> None:
    dataset = Dataset.objects.create(project=project, name="raw", slug="raw", created_by=users.data_scientist)
    common = {
        "size": 10,
        "format": "csv",
        "content_format": "csv",
        "columns": ["a"],
        "row_count": 3,
        "created_by": users.data_scientist,
    }
    raw = DatasetVersion.objects.create(
        dataset=dataset, number=1, sha256="a" * 64, uri="file:///x", storage_key="x", source="upload", **common
    )
    run = Run.objects.create(
        project=project,
        kind="transform",
        recipe="split",
        recipe_version="1",
        recipe_fingerprint="f" * 64,
        status="succeeded",
        created_by=users.data_scientist,
    )
    derived_ds = Dataset.objects.create(
        project=project, name="raw-split-train", slug="raw-split-train", created_by=users.data_scientist
    )
    derived = DatasetVersion.objects.create(
        dataset=derived_ds,
        number=1,
        sha256="b" * 64,
        uri="file:///y",
        storage_key="y",
        source="derived",
        produced_by=run,
        **common,
    )
    for version in (raw, derived):
        DatasetProfile.objects.create(version=version)
    LineageEdge.objects.create(source=raw.node_id, target=run.node_id)
    LineageEdge.objects.create(source=run.node_id, target=derived.node_id)

    sign_in(users.finance)
    page.goto(f"/lineage/{derived.node_id}/")
    graph = page.get_by_test_id("lineage-graph")
    for label in ("raw v1", f"run {run.pk}: split", "raw-split-train v1"):
        assert graph.locator("text.label", has_text=label).count() == 1, label
    assert graph.locator("path[data-edge]").count() == 2
    # Clicking the raw version re-centres the graph on it.
    graph.locator(f'a[data-node="{raw.node_id}"]').click()
    page.wait_for_url(f"**/lineage/{raw.node_id}/")
    assert page.locator("rect.focus").count() == 1
    exported = page.request.get(f"/lineage/{raw.node_id}/openlineage.json").json()
    assert exported[0]["run"]["runId"] == str(run.uuid)
