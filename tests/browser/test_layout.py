"""Pages a person reads, at a laptop's 1366 px and a phone's 390 px: nothing runs past the window, long URIs
and hashes wrap with a copy button, charts say what they show."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from controlplane import services as controlplane_services
from deployments import services as deployment_services
from lineage.models import Dataset, DatasetVersion, LineageEdge, Run
from tests.deployments.conftest import make_model_version
from tests.fixtures.history import LONG_S3, make_history

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

WIDTHS = (1366, 390)
SHOTS = Path(__file__).resolve().parents[2] / "test-results" / "layout"


@pytest.fixture
def history(users: Any, tmp_path: Path) -> dict[str, Any]:
    history = make_history(users, tmp_path)
    # Environments with every setting in use, changed once, and requests under a long model name: the widest
    # environment list, history and approvals list a person meets.
    admin = users.admin
    deployment_services.environment_create(actor=admin, data={"name": "staging", "order": 10, "gates": []})
    production = deployment_services.environment_create(
        actor=admin,
        data={
            "name": "production",
            "order": 20,
            "approvals_required": 2,
            "gates": ["accuracy >= 0.90", "accuracy >= serving - 0.01", "schema matches serving"],
            "allow_override": True,
            "objective_p99_latency_ms": 250,
            "objective_error_rate": 0.01,
            "objective_drift_share": 0.3,
            "min_desired_count": 1,
            "max_desired_count": 4,
        },
    )
    deployment_services.environment_update(
        actor=admin,
        environment_id=production.pk,
        data={"description": "Customer-facing. Temporarily three approvers while the new fraud team ramps up."},
    )
    project = controlplane_services.project_create(actor=admin, name="Demo", slug="demo")
    for _ in range(2):
        version = make_model_version(project, users.data_scientist, model="breast-cancer-classifier")
        deployment_services.approval_request_create(
            actor=users.data_scientist, model_version_id=version.pk, environment="staging", justification="go"
        )
    # What a phone meets with demo data: a dataset of several versions (a manifest, a run's output), a model of
    # several versions with many metrics, and more datasets with long names: each table scrolls in its own box.
    penguins = history["version"]
    dataset = penguins.dataset
    for number, extra in ((2, {"format": "manifest", "object_count": 12}), (3, {})):
        DatasetVersion.objects.create(
            dataset=dataset,
            number=number,
            sha256=f"{number:x}" * 64,
            uri=LONG_S3,
            storage_key=f"datasets/penguins/v{number}",
            size=123_456_789,
            format=extra.pop("format", "csv"),
            content_format="csv",
            columns=["year", "species", "bill_length_mm"],
            row_count=1_234_567,
            source="derived",
            produced_by=history["run"],
            created_by=users.data_scientist,
            **extra,
        )
    for slug in ("breast-cancer-wisconsin-diagnostic", "credit-card-fraud-detection-2026"):
        Dataset.objects.create(
            project=dataset.project,
            name=f"{slug}-training-and-holdout-splits",
            slug=slug,
            created_by=users.data_scientist,
        )
    for _ in range(2):
        make_model_version(
            dataset.project,
            users.data_scientist,
            model="penguins-random-forest",
            metrics={
                "accuracy": 0.938596,
                "balanced_accuracy": 0.931,
                "f1_macro": 0.9345,
                "roc_auc_ovr_weighted": 0.98123,
                "train_rows": 455.0,
            },
        )
    # Upstream of the trained-on version, the transform that made it from v2: five columns from the model version,
    # wider than a laptop's card, as the demo's evidence page draws them. The request for it is on the evidence page.
    transform = Run.objects.create(
        project=dataset.project,
        kind="transform",
        recipe="split",
        recipe_version="1",
        recipe_fingerprint="f" * 64,
        status="succeeded",
        created_by=users.data_scientist,
    )
    second = dataset.versions.get(number=2)
    LineageEdge.objects.create(source=second.node_id, target=transform.node_id)
    LineageEdge.objects.create(source=transform.node_id, target=penguins.node_id)
    history["approval"] = deployment_services.approval_request_create(
        actor=users.data_scientist,
        model_version_id=history["model_version"].pk,
        environment="staging",
        justification="the evidence page's lineage",
    )
    return history


def _pages(history: dict[str, Any]) -> dict[str, str]:
    version, run, model_version = history["version"], history["run"], history["model_version"]
    return {
        "dataset-version": "/datasets/penguins/penguins/v1/",
        "model-version": "/models/penguins/penguins-random-forest/v1/",
        "run": f"/runs/{run.pk}/",
        "lineage": f"/lineage/{version.node_id}/",
        "lineage-of-model": f"/lineage/{model_version.node_id}/",
        "runs": "/runs/",
        "audit-log": "/audit/",
        "home": "/",
        "environments": "/environments/",
        "environment": "/environments/production/",
        "approvals": "/approvals/?tab=all",
        "dataset": "/datasets/penguins/penguins/",
        "datasets": "/datasets/",
        "model": "/models/penguins/penguins-random-forest/",
        "models": "/models/",
        "evidence": f"/approvals/{history['approval'].pk}/",
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
        overflowing = page.evaluate("""() => [
            ...document.querySelectorAll('[data-testid=lineage-graph] a[data-node]')].flatMap(a => {
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


@pytest.mark.parametrize("width", (1280, 1366))
def test_a_lineage_graph_a_little_wider_than_its_box_is_fitted_to_it(page, sign_in, users, history, width: int) -> None:
    """The evidence page's graph (five columns) shows the model version being approved whole, without a sideways
    scroll, on a laptop; so does the model version's own page."""
    sign_in(users.approver)
    page.set_viewport_size({"width": width, "height": 900})
    for name in ("evidence", "model-version"):
        page.goto(_pages(history)[name])
        graph = page.get_by_test_id("lineage-graph")
        assert graph.evaluate("g => g.scrollWidth <= g.clientWidth"), name
        node = graph.locator(f'a[data-node="{history["model_version"].node_id}"] rect')
        box, card = node.bounding_box(), graph.bounding_box()
        assert box and card and box["x"] + box["width"] <= card["x"] + card["width"] - 4, name
        if name == "evidence":
            assert graph.locator("a[data-node]").count() == 5


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


def test_profile_charts_show_whole_years_and_the_missing_share(page, sign_in, users, history) -> None:
    sign_in(users.finance)
    page.set_viewport_size({"width": 1366, "height": 900})
    page.goto(_pages(history)["dataset-version"])
    year = page.locator('.chart[data-column="year"]')
    year.locator(".barlayer .point").first.wait_for()
    ticks = year.locator(".xtick text").all_text_contents()
    assert ticks == ["2007", "2008", "2009"]
    assert year.locator(".gtitle").text_content() == "year"  # nothing missing, nothing said
    species = page.locator('.chart[data-column="species"]')
    assert species.locator(".gtitle").text_content() == "species · 30 missing (25%)"
    assert "(missing)" in species.locator(".ytick text").all_text_contents()
    bill = page.locator('.chart[data-column="bill_length_mm"]')
    assert bill.locator(".gtitle").text_content() == "bill_length_mm · 12 missing (10%)"
    assert all("," not in tick for tick in bill.locator(".xtick text").all_text_contents())


def test_run_page_shows_seconds_and_clock_times(page, sign_in, users, history) -> None:
    sign_in(users.finance)
    page.goto(_pages(history)["run"])
    assert page.get_by_test_id("duration").inner_text() == "42 s"
    log = page.get_by_test_id("run-log").inner_text().splitlines()
    assert log[:2] == [
        "metric: cv_accuracy=0.96; fold=0; time=00:00:00",
        "metric: cv_accuracy=0.96; fold=1; time=00:01:01",
    ]
    assert page.get_by_test_id("run-log").locator("time").first.get_attribute("datetime") == "2026-12-01T00:00:00.123Z"
    # Whole folds on the metric chart's axis.
    chart = page.locator('.chart[data-column="cv_accuracy"]')
    chart.locator(".scatterlayer .point").first.wait_for()
    assert chart.locator(".xtick text").all_text_contents() == ["0", "1", "2", "3", "4"]


@pytest.mark.parametrize("width", (1280, 1366))
def test_wide_tables_show_every_column_on_a_laptop(page, sign_in, users, history, width: int) -> None:
    """On a laptop the environments and approvals lists, and an environment's history, fit their box: no column
    sits past its right edge waiting for a sideways scroll nobody sees."""
    sign_in(users.approver)
    page.set_viewport_size({"width": width, "height": 900})
    hidden = {}
    for name, testid in (
        ("environments", "environment-table"),
        ("approvals", "approval-table"),
        ("environment", "environment-history"),
    ):
        page.goto(_pages(history)[name])
        table = page.get_by_test_id(testid)
        box = table.evaluate("t => { const b = t.parentElement.getBoundingClientRect(); return b.right; }")
        right = table.evaluate(
            "t => Math.max(...[...t.querySelectorAll('th')].map(th => th.getBoundingClientRect().right))"
        )
        if right > box + 1 or right > width:
            hidden[name] = (right, box)
    assert hidden == {}


@pytest.mark.parametrize("width", WIDTHS)
def test_audit_actions_wrap_only_after_a_dot_or_underscore(page, sign_in, users, history, width: int) -> None:
    sign_in(users.approver)
    page.set_viewport_size({"width": width, "height": 900})
    for url, testid in (("/", "recent-changes"), (_pages(history)["environment"], "environment-history")):
        page.goto(url)
        # Where each action's text starts a new line: the character before must be a dot or an underscore.
        breaks = page.get_by_test_id(testid).evaluate("""t => [...t.querySelectorAll('code')].flatMap(code => {
            const text = [...code.childNodes].filter(n => n.nodeType === 3);
            const chars = text.flatMap(node => [...node.textContent].map((c, i) => [node, i, c]));
            let top = null, previous = '';
            const found = [];
            for (const [node, i, c] of chars) {
                const range = document.createRange(); range.setStart(node, i); range.setEnd(node, i + 1);
                const rect = range.getBoundingClientRect();
                if (top !== null && rect.top > top + 2) found.push(previous + '|' + c);
                top = rect.top; previous = c;
            }
            return found;
        })""")
        assert all(b[0] in "._" for b in breaks), (url, breaks)


@pytest.mark.parametrize(("width", "height"), [(1280, 800), (390, 844)])
def test_every_roles_home_page_fits_the_window(page, sign_in, users, history, width: int, height: int) -> None:
    """Each role's home with every list filled: a run under way, versions with a standing, requests waiting, a
    service with something to roll back to and a deployment baking."""
    from datetime import timedelta

    from django.utils import timezone

    from deployments.models import Deployment, Environment, Service
    from lineage.models import ModelVersion, Run

    run = history["run"]
    Run.objects.create(
        project=run.project,
        kind="training",
        recipe="gradient_boosting_with_a_long_recipe_name",
        recipe_version="1",
        recipe_fingerprint=run.recipe_fingerprint,
        created_by=users.data_scientist,
        status="running",
        progress={"done": 2, "total": 5, "unit": "folds"},
    )
    versions = list(ModelVersion.objects.filter(registered_model__slug="breast-cancer-classifier").order_by("number"))
    staging = Environment.objects.get(name="staging")
    service = Service.objects.create(
        registered_model=versions[0].registered_model,
        environment=staging,
        name="breast-cancer-classifier-staging",
        backend="local",
        created_by=users.admin,
    )
    now = timezone.now()
    made = []
    for version, status, minutes_ago in ((versions[0], "succeeded", 30), (versions[1], "succeeded", 20)):
        deployment = Deployment.objects.create(
            service=service, model_version=version, status=status, reason="layout", initiated_by=users.approver
        )
        Deployment.objects.filter(pk=deployment.pk).update(created_at=now - timedelta(minutes=minutes_ago))
        made.append(deployment)
    Service.objects.filter(pk=service.pk).update(current_deployment=made[-1])
    Deployment.objects.create(
        service=service, model_version=versions[0], status="baking", reason="layout", initiated_by=users.approver
    )
    SHOTS.mkdir(parents=True, exist_ok=True)
    too_wide = {}
    for role, user in users.by_role().items():
        page.context.clear_cookies()
        sign_in(user)
        page.set_viewport_size({"width": width, "height": height})
        page.goto("/")
        page.wait_for_load_state("load")
        assert page.title().startswith("Home"), role
        page.screenshot(path=str(SHOTS / f"home-{role.replace(' ', '-')}-{width}.png"), full_page=True)
        scroll_width = page.evaluate("document.documentElement.scrollWidth")
        if scroll_width > width:
            too_wide[role] = scroll_width
    assert too_wide == {}, f"home pages wider than {width} px"
