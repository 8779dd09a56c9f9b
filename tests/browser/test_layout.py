"""Pages a person reads, at a laptop's and a phone's size: every page kind in the URL conf has its own title and
nothing runs past the window (1280x800, 390x844); long URIs and hashes wrap with a copy button, charts say what they
show."""

from __future__ import annotations

from collections.abc import Callable
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


# --- every page kind, found in the URL conf ---------------------------------------------------------------------

# What each page must fit without a sideways scroll: a laptop and a phone.
SIZES = ((1280, 800), (390, 844))

# Addresses in the URL conf that are not pages a person reads, and why; every other one is visited.
NOT_PAGES = {
    "healthz": "plain text for load balancers",
    "login": "visited signed out, before the others",
    "logout": "POST only",
    "notification-open": "redirects to what the notification is about",
    "audit-export": "CSV",
    "system-check-create": "POST only",
    "project-restrict": "POST only (the project page's access form)",
    "project-member-set": "POST only (the project page's member form)",
    "project-member-remove": "POST only (a member row's Remove button)",
    "object-download": "a signed file download",
    "run-stop": "POST only",
    "run-reproduce": "POST only",
    "run-estimate": "a fragment the training form swaps in",
    "lineage-openlineage": "JSON",
    "approval-decide": "POST only (GET redirects to the request)",
    "approval-withdraw": "POST only (GET redirects to the request)",
    "service-rollback": "POST only",
    "service-scale": "POST only",
    "service-rotate-ingest-token": "POST only",
    "deployment-create": "POST only",
    "cost-export": "CSV",
    "cost-sync": "POST only",
    "cost-sync-panel": "a fragment the dashboard refreshes",
    "budget-delete": "POST only",
}

# An address of each page kind that has parameters (or needs a query), made of the `every_kind` records. A page
# without parameters needs none: it is visited at its route as soon as the URL conf has it.
PAGE_EXAMPLES: dict[str, Callable[[dict[str, Any]], str]] = {
    "project-detail": lambda made: "/projects/penguins/",
    "system-check-detail": lambda made: f"/status/checks/{made['system_check'].pk}/",
    "dataset-registration-detail": lambda made: f"/datasets/registrations/{made['registration'].pk}/",
    "dataset-detail": lambda made: "/datasets/penguins/penguins/",
    "dataset-version-detail": lambda made: "/datasets/penguins/penguins/v1/",
    "transform-create": lambda made: f"/runs/new/transform/?input={made['version'].pk}",
    "training-create": lambda made: f"/runs/new/training/?train={made['version'].pk}",
    "run-compare": lambda made: f"/runs/compare/?run={made['run'].pk}&run={made['second_run'].pk}",
    "run-detail": lambda made: f"/runs/{made['run'].pk}/",
    "model-detail": lambda made: "/models/penguins/penguins-random-forest/",
    "model-version-detail": lambda made: "/models/penguins/penguins-random-forest/v1/",
    "lineage": lambda made: f"/lineage/{made['model_version'].node_id}/",
    "environment-detail": lambda made: "/environments/production/",
    "approval-request-detail": lambda made: f"/approvals/{made['request'].pk}/",
    "approval-request-create": lambda made: "/models/demo/breast-cancer-classifier/v1/request-promotion/",
    "service-detail": lambda made: f"/services/{made['service'].pk}/",
    "service-metrics": lambda made: f"/services/{made['service'].pk}/monitoring/",
    "service-drift": lambda made: f"/services/{made['service'].pk}/drift/",
}


def url_conf_pages() -> dict[str, str]:
    """Every named address in the URL conf outside the API and Django's admin: name -> route."""
    from django.urls import URLPattern, URLResolver, get_resolver

    found: dict[str, str] = {}

    def walk(patterns: list[Any], prefix: str) -> None:
        for entry in patterns:
            route = prefix + str(entry.pattern)
            if isinstance(entry, URLResolver):
                if not route.startswith(("api/", "admin/")):
                    walk(entry.url_patterns, route)
            elif isinstance(entry, URLPattern) and entry.name:
                found.setdefault(entry.name, route)

    walk(get_resolver().url_patterns, "")
    return found


def page_visits(made: dict[str, Any]) -> dict[str, str]:
    """Page kind -> the address visited: its example, else its route; and the error page."""
    visits = {
        name: PAGE_EXAMPLES[name](made) if name in PAGE_EXAMPLES else "/" + route
        for name, route in url_conf_pages().items()
        if name not in NOT_PAGES
    }
    return {**visits, "not-found": "/no-such-page/"}


@pytest.fixture
def every_kind(history: dict[str, Any], users: Any) -> dict[str, Any]:
    """The history, and one of each record a page shows: a service serving while a canary bakes (a drift report
    under way, an open alert), a second run to compare, a registration under way, a system check, a notification,
    a budget."""
    from datetime import timedelta

    from django.utils import timezone

    from controlplane.models import SystemCheck
    from deployments.models import ApprovalRequest, Deployment, Environment, Service
    from lineage.models import DatasetRegistration, ModelVersion, Run
    from monitoring.costs import services as cost_services
    from monitoring.models import Alert, DriftReport

    versions = list(ModelVersion.objects.filter(registered_model__slug="breast-cancer-classifier").order_by("number"))
    service = Service.objects.create(
        registered_model=versions[0].registered_model,
        environment=Environment.objects.get(name="production"),
        name="breast-cancer-classifier-production",
        backend="local",
        address="http://127.0.0.1:49152/",
        created_by=users.admin,
    )
    current = Deployment.objects.create(
        service=service,
        model_version=versions[0],
        status="succeeded",
        revision="r-d1",
        reason="first",
        initiated_by=users.approver,
    )
    Service.objects.filter(pk=service.pk).update(current_deployment=current)
    Deployment.objects.create(
        service=service,
        model_version=versions[1],
        status="baking",
        revision="r-d2",
        reason="canary",
        strategy="canary",
        canary_percent=10,
        replaces=current,
        initiated_by=users.approver,
        progress={"traffic_percent": 10, "healthy": 1, "running": 1, "desired": 1, "phase": "bake"},
    )
    end = timezone.now() - timedelta(minutes=1)
    DriftReport.objects.create(
        service=service, window_start=end - timedelta(minutes=15), window_end=end, status="running", progress=0.5
    )
    Alert.objects.create(
        service=service, name="p99_latency_ms", value=310.5, threshold=250, message="p99 latency over its objective"
    )
    run = history["run"]
    second_run = Run.objects.create(
        project=run.project,
        kind="training",
        recipe=run.recipe,
        recipe_version="1",
        recipe_fingerprint=run.recipe_fingerprint,
        parameters=run.parameters,
        seed=7,
        status="failed",
        created_by=users.data_scientist,
        metrics=run.metrics,
    )
    registration = DatasetRegistration.objects.create(
        project=run.project,
        dataset_slug="churn",
        dataset_name="Churn exports",
        source_uri=LONG_S3,
        status="running",
        progress=0.3,
        created_by=users.data_scientist,
    )
    check = SystemCheck.objects.create(requested_by=users.admin, status="passed", worker="celery@worker-1")
    controlplane_services.notify(users=[users.admin], title="Request approved", body="v1 is approved for staging")
    cost_services.budget_save(actor=users.admin, project=None, amount="500")
    return {
        **history,
        "service": service,
        "request": ApprovalRequest.objects.order_by("pk").first(),
        "second_run": second_run,
        "registration": registration,
        "system_check": check,
    }


def _problems(page: Any, url: str, width: int, name: str) -> dict[str, Any]:
    """What is wrong with the page at this width: an error status, no title of its own, wider than the window."""
    response = page.goto(url)
    page.wait_for_load_state("load")
    problems: dict[str, Any] = {}
    status = response.status if response is not None else None
    if status != 200 and name != "not-found":
        problems["status"] = status
    # Its own title: the layout's "<page> · ControlPlane" (the API docs, Swagger's page, has "ControlPlane API").
    title = page.title()
    if not title.strip() or title == "ControlPlane · ControlPlane":
        problems["title"] = title
    page.screenshot(path=str(SHOTS / f"{name}-{width}.png"), full_page=True)
    scroll_width = page.evaluate("document.documentElement.scrollWidth")
    if scroll_width > width:
        problems["width"] = scroll_width
    return problems


def test_every_page_in_the_url_conf_is_visited_or_said_not_to_be_a_page() -> None:
    """A new page is visited by the test below without anyone listing it: at once if it has no parameters, and one
    with parameters fails here until it has an example address."""
    routes = url_conf_pages()
    unvisitable = [
        name for name, route in routes.items() if "<" in route and name not in {**NOT_PAGES, **PAGE_EXAMPLES}
    ]
    assert unvisitable == [], "give each an address in PAGE_EXAMPLES, or a reason in NOT_PAGES"
    assert set(NOT_PAGES) | set(PAGE_EXAMPLES) <= set(routes), "an address the URL conf no longer has"


@pytest.mark.parametrize(("width", "height"), SIZES)
def test_every_page_kind_has_a_title_and_fits_the_window(
    page, sign_in, users, every_kind, width: int, height: int
) -> None:
    """Every page kind in the URL conf (each list and detail page, the forms, status, the error page), as an admin
    (who sees every section), at a laptop's and a phone's size: it answers, has its own title, and nothing runs
    past the window's edge."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.set_viewport_size({"width": width, "height": height})
    wrong = {}
    signed_out = _problems(page, "/accounts/login/", width, "login")
    if signed_out:
        wrong["login"] = signed_out
    sign_in(users.admin)
    page.set_viewport_size({"width": width, "height": height})
    visits = page_visits(every_kind)
    assert len(visits) >= 35  # the URL conf was read
    for name, url in visits.items():
        problems = _problems(page, url, width, name)
        if problems:
            wrong[name] = (url, problems)
    assert wrong == {}, f"pages at {width}x{height}"


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
