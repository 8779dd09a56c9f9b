"""The three users' journeys, each one continuous flow in Chromium as that user against the live server and a real
worker: the data scientist from a CSV to a promotion request, the approver from deploying an approved version through
the queue to a rolled-back canary, finance from the dashboard to a CSV that is the table. Every step leaves a full-page
screenshot in test-results/journeys/<journey>/."""

from __future__ import annotations

import csv
import io
import json
import re
import urllib.request
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import Group

from controlplane import permissions
from controlplane import services as controlplane_services
from deployments import services
from deployments.models import ApprovalDecision, ApprovalRequest, Deployment, Service
from lineage.models import DatasetVersion, ModelVersion, Run
from monitoring.costs import selectors as cost_selectors
from tests.browser.conftest import RESULTS
from tests.browser.test_costs import CELLS, cells, drawn, expected_cells, show
from tests.deployments import conftest as deployment_fixtures
from tests.deployments.test_deploys import approve
from tests.deployments.test_local_flow import package, register
from tests.fixtures.models import Trained
from tests.fixtures.processes import wait_for
from tests.monitoring.cost_world import seed_costs

pytestmark = [pytest.mark.browser, pytest.mark.worker, pytest.mark.django_db(transaction=True)]

# No local service outlives the approver's journey, and none is left from an earlier test.
stop_local_services = deployment_fixtures.stop_local_services
# Minutes: the canary bakes far longer than the journey takes, so it is still baking when it is rolled back.
LONG_BAKE = 10


def invoke(address: str, body: bytes) -> tuple[int, Any]:
    """A prediction through a service's address, as a client of the service sends it."""
    request = urllib.request.Request(
        address.rstrip("/") + "/invocations", data=body, headers={"content-type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        return answer.status, json.loads(answer.read())


class Steps:
    """Numbered full-page screenshots of one journey: test-results/journeys/<journey>/NN-<step>.png."""

    def __init__(self, page: Any, journey: str) -> None:
        self.page = page
        self.folder = RESULTS / "journeys" / journey
        self.folder.mkdir(parents=True, exist_ok=True)
        for old in self.folder.glob("*.png"):
            old.unlink()  # a shorter run must not leave an earlier run's later steps beside its own
        self.count = 0

    def shot(self, step: str) -> Path:
        self.count += 1
        path = self.folder / f"{self.count:02d}-{step}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def widths(
        self, step: str, sizes: tuple[tuple[int, int], ...] = ((1280, 800), (390, 844))
    ) -> dict[tuple[int, int], int]:
        """The page's width at each window size (the body must not scroll sideways), with a full-page screenshot of
        each; the window is then as it was."""
        before = self.page.viewport_size
        widths = {}
        for width, height in sizes:
            self.page.set_viewport_size({"width": width, "height": height})
            self.page.wait_for_load_state("load")
            self.shot(f"{step}-{width}x{height}")
            widths[(width, height)] = int(self.page.evaluate("document.documentElement.scrollWidth"))
        self.page.set_viewport_size(before)
        return widths


def test_data_scientist_uploads_profiles_trains_and_requests_staging(
    page, sign_in, users, celery_worker, settings, tmp_path: Path
) -> None:
    from sklearn.datasets import load_breast_cancer

    settings.SAGEMAKER_ROLE_ARN = None
    controlplane_services.project_create(actor=users.admin, name="Cancer", slug="cancer")
    services.environment_create(
        actor=users.admin, data={"name": "staging", "order": 10, "approvals_required": 1, "gates": ["accuracy >= 0.90"]}
    )
    csv_path = tmp_path / "breast-cancer.csv"
    load_breast_cancer(as_frame=True).frame.to_csv(csv_path, index=False)
    steps = Steps(page, "data-scientist")

    # 1. Upload the CSV.
    sign_in(users.data_scientist)
    page.get_by_test_id("main-nav").get_by_role("link", name="Datasets").click()
    page.wait_for_url("**/datasets/")
    page.get_by_role("link", name="Register data").click()
    page.get_by_label("Project").select_option("cancer")
    page.get_by_label("Dataset").fill("breast-cancer")
    page.get_by_label("File").set_input_files(str(csv_path))
    steps.shot("register-form")
    page.get_by_role("button", name="Register").click()
    page.wait_for_url(re.compile(r".*/datasets/cancer/breast-cancer/v1/$"))
    version = DatasetVersion.objects.get()
    assert page.get_by_test_id("sha256").inner_text() == version.sha256
    steps.shot("dataset-version")

    # 2. Its profile arrives from the worker; the page draws it without a reload.
    page.locator('[data-testid="profile-status"][data-status="ready"]').wait_for(timeout=120_000)
    assert "569 rows, 31 columns" in page.get_by_test_id("profile-status").inner_text()
    bars = page.locator('.chart[data-column="mean radius"] .barlayer .point')
    bars.first.wait_for()
    assert bars.count() == 20
    steps.shot("profile")

    # 3. Launch a training run on it.
    page.get_by_role("link", name="Train a model…").click()
    page.wait_for_url(re.compile(rf".*/runs/new/training/\?train={version.pk}$"))
    assert page.get_by_label("Recipe").input_value() == "logistic_regression"
    page.get_by_label("Target column").select_option("target")
    steps.shot("training-form")
    page.get_by_role("button", name="Launch training run").click()
    page.wait_for_url(re.compile(r".*/runs/\d+/$"))
    run = Run.objects.get(kind="training")
    assert page.url.endswith(f"/runs/{run.pk}/")
    assert page.get_by_test_id("run-status").inner_text() in {"queued", "starting", "running", "succeeded"}
    steps.shot("run-launched")

    # 4. Watch it succeed: the status, its metrics and the model version it registered.
    page.locator('#run-status[data-status="succeeded"]').wait_for(timeout=240_000)
    assert page.get_by_test_id("run-status").inner_text() == "succeeded"
    # The "Run N queued" flash goes with the page's last refresh: it would contradict "succeeded".
    page.locator(".messages li.progress").wait_for(state="detached")
    assert f"Run {run.pk} queued" not in page.locator("main").inner_text()
    model = ModelVersion.objects.get(run=run)
    accuracy = model.metrics["accuracy"]
    assert accuracy >= 0.90, model.metrics
    assert f"accuracy = {accuracy:.4f}" in page.get_by_test_id("final-metrics").inner_text()
    assert "(no output yet)" not in page.get_by_test_id("run-log").inner_text()
    steps.shot("run-succeeded")
    page.get_by_test_id("model-version").click()
    page.wait_for_url(f"**/models/cancer/{model.registered_model.slug}/v{model.number}/")
    assert page.get_by_test_id("model-sha256").inner_text() == model.sha256
    standing = page.locator('[data-testid="promotion-standing"] tr[data-environment="staging"]')
    assert standing.get_by_test_id("standing-status").inner_text() == "not requested"
    steps.shot("model-version")

    # 5. Request its promotion to staging.
    page.get_by_role("link", name="Request promotion", exact=True).click()
    page.wait_for_url(f"**/models/cancer/{model.registered_model.slug}/v{model.number}/request-promotion/")
    page.get_by_label("Environment").select_option("staging")
    page.get_by_label("Justification").fill("First model on the breast-cancer export: accuracy above the gate.")
    steps.shot("promotion-form")
    page.get_by_role("button", name="Request promotion").click()
    page.wait_for_url(re.compile(r".*/approvals/\d+/$"))
    request = ApprovalRequest.objects.get()
    assert page.url.endswith(f"/approvals/{request.pk}/")
    assert f"Promotion of {model} to staging requested." in page.locator(".messages").inner_text()
    assert page.locator('#approval-status[data-status="open"]').count() == 1
    assert page.get_by_test_id("requester").inner_text().startswith("dana")
    assert page.get_by_test_id("justification").inner_text().startswith("First model on the breast-cancer export")
    assert page.get_by_test_id("artifact-sha256").inner_text() == model.sha256
    assert page.locator('[data-gate="accuracy >= 0.90"][data-passed="true"]').count() == 1
    # The requester is told why they cannot decide it themself.
    assert page.get_by_test_id("decide-form").count() == 0
    assert "Deciding a promotion needs the approver" in page.get_by_test_id("decide-refusal").inner_text()
    steps.shot("request-open")
    page.get_by_test_id("model-version").click()
    page.wait_for_url(f"**/models/cancer/{model.registered_model.slug}/v{model.number}/")
    standing = page.locator('[data-testid="promotion-standing"] tr[data-environment="staging"]')
    assert standing.get_by_test_id("standing-status").inner_text() == "open"
    assert standing.get_by_role("link", name=f"request {request.pk}").count() == 1
    steps.shot("model-version-requested")
    assert (request.status, request.requested_by, request.model_version) == ("open", users.data_scientist, model)


@pytest.mark.usefixtures("stop_local_services")
def test_approver_deploys_weighs_refuses_own_approves_watches_canary_and_rolls_back(
    page, sign_in, users, celery_worker, logistic: Trained
) -> None:
    # Alex approves and also trains models, so he can ask for a promotion himself: the request he may not decide.
    users.approver.groups.add(Group.objects.get_or_create(name=permissions.DATA_SCIENTIST)[0])
    project = controlplane_services.project_create(actor=users.admin, name="Cancer", slug="cancer")
    staging = services.environment_create(
        actor=users.admin,
        data={
            "name": "staging",
            "approvals_required": 1,
            "gates": ["accuracy >= 0.90", "accuracy >= serving - 0.01"],
            "strategy": "all_at_once",
            "bake_minutes": 0,
        },
    )
    first = register(project, users.data_scientist, logistic, package(logistic, None, note="v1"))
    assert approve(first, staging, users).status == "approved"
    body = json.dumps({"instances": logistic.rows.head(3).to_numpy().tolist()}).encode()
    steps = Steps(page, "approver")

    # 1. v1 is approved for staging: he deploys it from its page and the service page follows the rollout to its end.
    sign_in(users.approver)
    page.goto(f"/models/cancer/bc/v{first.number}/")
    steps.shot("approved-version")
    with page.expect_navigation():
        page.get_by_test_id("deploy-button").click()
    assert re.search(r"/services/\d+/$", page.url), page.url
    assert "Deploying" in page.locator(".messages").inner_text()
    service = Service.objects.get()
    deployed = Deployment.objects.get(service=service)
    # The rollout section polls; when the deployment ends the page is drawn again with its outcome.
    page.locator(f'tr[data-deployment="{deployed.pk}"][data-status="succeeded"][data-current="true"]').wait_for(
        timeout=90_000
    )
    page.get_by_test_id("rollout-idle").wait_for()
    assert f"v{first.number}" in page.get_by_test_id("service-serving").inner_text()
    address = page.get_by_test_id("service-address-value").inner_text()
    assert re.fullmatch(r"http://[\w.-]+:\d+/?", address), address
    status, answer = invoke(address, body)
    assert status == 200 and len(answer["predictions"]) == 3, answer
    steps.shot("v1-serving")

    # Meanwhile staging is set to deploy what it approves as a 20% canary that bakes longer than the journey takes,
    # dana asks for v2, and alex asks for v3 himself.
    services.environment_update(
        actor=users.admin,
        environment_id=staging.pk,
        data={
            "deploy_on_approval": True,
            "strategy": "canary",
            "canary_percent": 20,
            "bake_minutes": LONG_BAKE,
            "objective_p99_latency_ms": 1000,
        },
    )
    second = register(project, users.data_scientist, logistic, package(logistic, None, note="v2"))
    theirs = services.approval_request_create(
        actor=users.data_scientist,
        model_version_id=second.pk,
        environment="staging",
        justification="retrained with the November rows; same schema",
    )
    third = register(project, users.data_scientist, logistic, package(logistic, None, note="v3"))
    own = services.approval_request_create(
        actor=users.approver, model_version_id=third.pk, environment="staging", justification="alex wants v3 out"
    )

    # 2. The queue: the other's request waits for him; his own does not.
    page.goto("/")
    approvals = page.get_by_test_id("main-nav").get_by_role("link", name=re.compile("^Approvals"))
    assert approvals.get_by_test_id("nav-count").inner_text() == "1"
    approvals.click()
    page.wait_for_url("**/approvals/")
    assert page.get_by_test_id("waiting-count").inner_text() == "1 waiting for you"
    row = page.locator(f'tr[data-request="{theirs.pk}"]')
    assert row.get_by_test_id("gates").inner_text() == "2 of 2 passed"
    assert row.get_by_test_id("approvals").inner_text() == "0 of 1"
    assert "dana" in row.inner_text()
    assert page.locator(f'tr[data-request="{own.pk}"]').count() == 0
    steps.shot("queue")

    # 3. The evidence for dana's request.
    row.get_by_role("link", name=f"request {theirs.pk}").click()
    page.wait_for_url(f"**/approvals/{theirs.pk}/")
    assert page.get_by_test_id("justification").inner_text() == "retrained with the November rows; same schema"
    assert page.get_by_test_id("requester").inner_text().startswith("dana")
    assert page.get_by_test_id("artifact-sha256").inner_text() == second.sha256
    assert page.get_by_test_id("gate-results").locator("tbody tr").count() == 2
    assert page.locator('[data-gate="accuracy >= 0.90"][data-passed="true"]').count() == 1
    assert page.locator('[data-gate="accuracy >= serving - 0.01"][data-passed="true"]').count() == 1
    assert f"v{first.number}" in page.get_by_test_id("baseline").inner_text()
    page.locator('[data-testid="metrics-chart"][data-drawn="1"]').wait_for()
    assert page.get_by_test_id("metrics-chart").locator("g.trace.bars").count() == 2
    graph = page.get_by_test_id("lineage-graph")
    for node in (second.run.node_id, second.node_id):
        assert graph.locator(f'[data-node="{node}"]').count() == 1
    assert page.get_by_test_id("decide-form").count() == 1
    steps.shot("evidence")

    # 4. His own request: the page says why he may not decide it, and offers no Approve button.
    page.get_by_test_id("main-nav").get_by_role("link", name=re.compile("^Approvals")).click()
    page.wait_for_url("**/approvals/")
    page.get_by_test_id("queue-tabs").get_by_role("link", name="All requests").click()
    page.wait_for_url(re.compile(r".*/approvals/\?(.*&)?tab=all(&.*)?$"))
    own_row = page.locator(f'tr[data-request="{own.pk}"]')
    assert "alex" in own_row.inner_text()
    own_row.get_by_role("link", name=f"request {own.pk}").click()
    page.wait_for_url(f"**/approvals/{own.pk}/")
    assert page.get_by_test_id("decide-refusal").inner_text() == (
        "You requested this promotion; someone else must decide it."
    )
    assert page.get_by_test_id("decide-form").count() == 0
    assert page.get_by_role("button", name="Approve").count() == 0
    steps.shot("own-request-refusal")
    # Sent anyway, as a hand-made form would send it: the server refuses it and the page says why.
    forged = """([action, token]) => {
        const form = Object.assign(document.createElement('form'), {method: 'post', action});
        const fields = [['csrfmiddlewaretoken', token], ['verdict', 'approve'], ['comment', 'my own work, trust me']];
        for (const [name, value] of fields) {
            form.append(Object.assign(document.createElement('input'), {type: 'hidden', name, value}));
        }
        document.body.append(form);
        form.submit();
    }"""
    token = page.locator("input[name=csrfmiddlewaretoken]").first.input_value()
    with page.expect_navigation():
        page.evaluate(forged, [f"/approvals/{own.pk}/decide/", token])
    refused = page.locator('[data-testid="decide"] [data-field="approver"]')
    refused.wait_for()
    assert refused.inner_text() == "you requested this promotion: someone other than the requester must decide it"
    assert page.locator('#approval-status[data-status="open"]').count() == 1
    steps.shot("own-request-refused")
    assert not ApprovalDecision.objects.filter(request=own).exists()

    # 5. Approve dana's request; approval deploys it to staging as a canary.
    page.goto(f"/approvals/{theirs.pk}/")
    page.get_by_label("Comment").fill("Same schema, accuracy holds against v1; lineage checks out.")
    assert "deploys on approval" in page.get_by_test_id("deploys-on-approval").inner_text()
    page.get_by_role("button", name="Approve").click()
    page.wait_for_url(f"**/approvals/{theirs.pk}/")
    assert f"Your approval completes request {theirs.pk}" in page.locator(".messages").inner_text()
    page.locator('#approval-status[data-status="approved"]').wait_for(timeout=90_000)
    assert "approved by alex" in page.get_by_test_id("status-reason").inner_text()
    canary = wait_for(
        lambda: Deployment.objects.filter(approval_request=theirs).first(), timeout=90, what="the deploy on approval"
    )
    # The deployment comes from the worker's next task: the page follows it without a reload.
    link = page.get_by_test_id("approval-deployment")
    link.wait_for(timeout=90_000)
    assert f"Deploy {canary.pk} of {second}" in link.inner_text()
    steps.shot("approved")

    # 6. Watch the canary bake on the service page.
    link.get_by_role("link", name=service.name).click()
    page.wait_for_url(f"**/services/{service.pk}/")
    rollout = page.get_by_test_id("service-rollout")
    page.locator('[data-testid="service-rollout"][data-status="baking"]').wait_for(timeout=120_000)
    assert rollout.get_by_test_id("rollout-status").inner_text() == "baking"
    page.locator('[data-testid="traffic-share"]', has_text="20%").wait_for()
    assert rollout.get_by_test_id("traffic-share").inner_text() == "20%"
    assert rollout.get_by_test_id("rollout-counts").inner_text() == "1 healthy, 1 running of 1"
    bake_left = rollout.get_by_test_id("bake-left").inner_text()
    assert re.fullmatch(r"\d+ s", bake_left) and 0 < int(bake_left.split()[0]) <= LONG_BAKE * 60, bake_left
    # The timeline's row follows the poll too.
    page.locator(f'tr[data-deployment="{canary.pk}"] [data-testid="deployment-status"]', has_text="baking").wait_for()
    events = rollout.get_by_test_id("rollout-events").inner_text()
    assert "in_progress → baking" in events and "traffic 20%" in events, events
    # The service keeps its address across revisions.
    assert page.get_by_test_id("service-address-value").inner_text() == address
    objective = rollout.locator('[data-testid="objective-table"] tr[data-objective="p99_latency_ms"]')
    # No request has reached the canary yet: its objective waits for data.
    assert re.fullmatch(r"p99 latency\s+no data yet\s+1000\.0 ms\s+waiting", objective.inner_text()), (
        objective.inner_text()
    )
    # Traffic through the stable address until the canary (a fifth of it) has answered enough to be judged.
    judged = rollout.get_by_test_id("objective-requests")
    for sent in range(1, 1001):
        status, answer = invoke(address, body)
        assert status == 200 and len(answer["predictions"]) == 3, answer
        if sent % 10 == 0 and judged.count() and judged.inner_text().startswith("Judged on"):
            break
    assert re.fullmatch(r"Judged on [1-9]\d+ requests so far\.", judged.inner_text()), judged.inner_text()
    assert re.fullmatch(r"p99 latency\s+[\d.]+ ms\s+1000\.0 ms\s+holding", objective.inner_text()), (
        objective.inner_text()
    )
    # While the page is at its fullest: no sideways scroll at a laptop's and a phone's size.
    assert steps.widths("canary-baking") == {(1280, 800): 1280, (390, 844): 390}
    # The Serving line is drawn with the page (only the rollout section polls): once reloaded it names the split.
    page.reload()
    serving = page.get_by_test_id("service-serving").inner_text()
    assert f"v{first.number}" in serving and f"{second} takes 20% of traffic" in serving, serving

    # 7. Roll it back in one click, with a reason. Empty or too short, the browser does not send the form; blank, the
    # server says why not; nothing changes either way.
    reason = rollout.get_by_test_id("rollback-reason")
    button = rollout.get_by_test_id("rollback-button")
    button.click()
    assert reason.evaluate("input => input.validity.valueMissing")
    reason.fill("ab")
    button.click()
    assert reason.evaluate("input => input.validity.tooShort")
    assert Deployment.objects.get(pk=canary.pk).status == "baking"
    reason.fill("      ")
    with page.expect_navigation():
        button.click()
    assert "Not rolled back: required: say why you roll back" in page.locator(".messages").inner_text()
    assert Deployment.objects.get(pk=canary.pk).status == "baking"
    assert not Deployment.objects.filter(kind="rollback").exists()
    reason.fill("v2 answers differ from v1 on the spot checks")
    with page.expect_navigation():
        button.click()
    assert "Rolling back to" in page.locator(".messages").inner_text()
    rollback = Deployment.objects.get(kind="rollback")
    page.locator(f'tr[data-deployment="{canary.pk}"][data-status="rolled_back"]').wait_for(timeout=120_000)
    page.locator(f'tr[data-deployment="{rollback.pk}"][data-status="succeeded"][data-current="true"]').wait_for(
        timeout=120_000
    )
    page.get_by_test_id("rollout-idle").wait_for()
    assert page.locator(f'tr[data-deployment="{canary.pk}"] [data-testid="deployment-status"]').inner_text() == (
        "rolled back"
    )
    assert "v2 answers differ from v1" in page.locator(f'tr[data-deployment="{rollback.pk}"]').inner_text()
    assert page.locator('tr[data-current="true"]').count() == 1
    assert f"v{first.number}" in page.get_by_test_id("service-serving").inner_text()
    status, answer = invoke(address, body)
    assert status == 200 and len(answer["predictions"]) == 3, answer
    assert steps.widths("rolled-back") == {(1280, 800): 1280, (390, 844): 390}
    # The request's page tells the same end.
    page.goto(f"/approvals/{theirs.pk}/")
    assert "rolled back" in page.get_by_test_id("approval-deployment").inner_text()
    steps.shot("request-after-rollback")
    assert Deployment.objects.get(pk=canary.pk).status == "rolled_back"
    assert ApprovalRequest.objects.get(pk=own.pk).status == "open"


def csv_rows(download: Any) -> list[list[str]]:
    return list(csv.reader(io.StringIO(Path(download.path()).read_text())))


def table_cells(page: Any) -> dict[tuple[str, str], tuple[str, str, str]]:
    """Every non-empty cell of the cost table: (period, group) -> (amount, estimated part, the text shown)."""
    return {(p, g): (amount, estimated, text) for p, g, amount, estimated, text in page.evaluate(CELLS)}


# The whole cost table in reading order, as (period, group, amount): each cell (zero ones too), each row's Total, and
# the foot's group totals and grand total.
WHOLE_TABLE = """() => {
  const table = document.querySelector('[data-testid=cost-table]');
  const groups = [...table.querySelectorAll('thead th[data-group]')].map(th => th.dataset.group);
  const out = [];
  for (const tr of table.querySelectorAll('tbody tr[data-period]')) {
    for (const td of tr.querySelectorAll('td[data-group]')) {
      out.push([tr.dataset.period, td.dataset.group, td.dataset.amount]);
    }
    out.push([tr.dataset.period, 'Total', tr.querySelector('[data-testid=row-total]').innerText.trim()]);
  }
  const totals = [...table.querySelectorAll('tfoot [data-testid=group-total]')].map(td => td.innerText.trim());
  groups.forEach((g, i) => out.push(['Total', g, totals[i]]));
  out.push(['Total', 'Total', table.querySelector('[data-testid=table-total]').innerText.trim()]);
  return out;
}"""


def export_matches_table(page: Any, suffix: str) -> list[list[str]]:
    """Download the CSV and check it cell for cell against the table the page shows: the zero days, each row's
    total and the total row included, and the parts adding up to the totals shown."""
    with page.expect_download() as info:
        page.get_by_test_id("cost-export").click()
    download = info.value
    assert download.suggested_filename.endswith(suffix), download.suggested_filename
    rows = csv_rows(download)
    assert rows[0] == ["period", "group", "amount_usd", "estimated_usd", "billed_usd"]
    assert [r[:3] for r in rows[1:]] == page.evaluate(WHOLE_TABLE)
    shown = table_cells(page)
    assert {(r[0], r[1]): (r[2], r[3]) for r in rows[1:] if (r[0], r[1]) in shown} == {
        key: cell[:2] for key, cell in shown.items()
    }
    for period, group, amount, estimated, billed in rows[1:]:
        assert Decimal(billed) == Decimal(amount) - Decimal(estimated)
        if (period, group) in shown:
            assert shown[(period, group)][2].startswith(amount)
    parts = [r for r in rows[1:] if "Total" not in r[:2]]
    total = sum((Decimal(r[2]) for r in parts), Decimal(0))
    assert rows[-1][:3] == ["Total", "Total", page.get_by_test_id("table-total").inner_text()]
    assert f"{total:.2f}" == page.get_by_test_id("table-total").inner_text()
    return rows


def test_finance_groups_changes_period_and_exports_csv(page, sign_in, users) -> None:
    world = seed_costs()
    last = cost_selectors.next_month(world.month) - timedelta(days=1)
    end = cost_selectors.next_month(world.month)
    steps = Steps(page, "finance")

    # 1. The cost dashboard, this month.
    sign_in(users.finance)
    page.get_by_test_id("main-nav").get_by_role("link", name="Costs").click()
    page.wait_for_url("**/costs/")
    assert page.title() == "Costs · ControlPlane"
    drawn(page)
    steps.shot("dashboard")

    # 2. Last month, daily, by project: the table and the chart say the seeded figures.
    show(page, start=world.month.isoformat(), end=last.isoformat())
    by_project = expected_cells(world.month, end, "day", "project")
    assert cells(page) == by_project
    assert by_project[(world.first.isoformat(), "alpha")] == "11.25"
    assert by_project[(world.second.isoformat(), "beta")] == "2.50"
    assert [t["name"] for t in drawn(page) if "(estimated)" not in t["name"]] == ["alpha", "beta"]
    assert page.get_by_test_id("table-total").inner_text() == "14.08"
    assert f"{world.month:%Y-%m-%d} – {last:%Y-%m-%d}, daily, stacked by project" in (
        page.get_by_test_id("cost-shown").inner_text()
    )
    steps.shot("last-month-by-project")

    # 3. Grouped by AWS service instead: other columns, the same total.
    show(page, group_by="aws_service")
    assert page.get_by_test_id("cost-group-by").input_value() == "aws_service"
    assert cells(page) == expected_cells(world.month, end, "day", "aws_service")
    # The biggest spender first, in the table and the chart alike.
    services_shown = ["AmazonSageMaker", "AmazonECS"]
    assert page.locator("[data-testid=cost-table] thead th[data-group]").all_inner_texts() == services_shown
    assert [t["name"] for t in drawn(page) if "(estimated)" not in t["name"]] == services_shown
    assert page.get_by_test_id("table-total").inner_text() == "14.08"
    steps.shot("last-month-by-aws-service")
    rows = export_matches_table(page, "-day-aws_service.csv")
    assert (world.first.isoformat(), "AmazonSageMaker", "11.25", "1.25", "10.00") in {tuple(r) for r in rows}

    # 4. The whole month by environment: one row.
    show(page, granularity="month", group_by="environment")
    monthly = {(f"{world.month:%Y-%m}", "staging"): "11.58", (f"{world.month:%Y-%m}", "production"): "2.50"}
    assert cells(page) == expected_cells(world.month, end, "month", "environment") == monthly
    assert page.locator("[data-testid=cost-table] tbody tr").count() == 1
    assert page.get_by_test_id("table-total").inner_text() == "14.08"
    steps.shot("last-month-monthly-by-environment")

    # 5. Its CSV is the table, row for row.
    rows = export_matches_table(page, "-month-environment.csv")
    assert rows[1:] == [
        [f"{world.month:%Y-%m}", "staging", "11.58", "1.58", "10.00"],
        [f"{world.month:%Y-%m}", "production", "2.50", "2.50", "0.00"],
        [f"{world.month:%Y-%m}", "Total", "14.08", "4.08", "10.00"],
        ["Total", "staging", "11.58", "1.58", "10.00"],
        ["Total", "production", "2.50", "2.50", "0.00"],
        ["Total", "Total", "14.08", "4.08", "10.00"],
    ]
    steps.shot("exported")
