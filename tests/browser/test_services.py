"""An approver's service page in Chromium, with the real worker and real local serving processes: deploy from the
model version page and watch it serve, deploy a second version as a canary and read its bake (traffic share,
processes, countdown, objectives, events), roll it back in one click with a reason, and the page at laptop and
phone widths."""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from controlplane import services as controlplane_services
from deployments import services
from deployments.models import Deployment, Service
from tests.deployments import conftest as deployment_fixtures
from tests.deployments.test_deploys import approve
from tests.deployments.test_local_flow import package, register
from tests.fixtures.models import Trained

pytestmark = [pytest.mark.browser, pytest.mark.worker, pytest.mark.django_db(transaction=True)]

# No local service outlives the test, and none is left from an earlier one.
stop_local_services = deployment_fixtures.stop_local_services
SHOTS = Path(__file__).resolve().parents[2] / "test-results" / "services"
# Minutes: the canary bakes far longer than the test runs, so it is still baking when it is rolled back.
LONG_BAKE = 5


def invoke(address: str, body: bytes) -> tuple[int, Any]:
    request = urllib.request.Request(
        address.rstrip("/") + "/invocations", data=body, headers={"content-type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        return answer.status, json.loads(answer.read())


def fits(page: Any, width: int, height: int, name: str) -> int:
    """The page's width at this window size (the body must not scroll sideways), with a full-page screenshot."""
    page.set_viewport_size({"width": width, "height": height})
    page.wait_for_load_state("load")
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}-{width}x{height}.png"), full_page=True)
    return int(page.evaluate("document.documentElement.scrollWidth"))


@pytest.mark.usefixtures("stop_local_services")
def test_deploy_watch_a_canary_bake_and_roll_it_back_in_one_click(
    page, sign_in, users, celery_worker, logistic: Trained
) -> None:
    project = controlplane_services.project_create(actor=users.admin, name="Cancer", slug="cancer")
    staging = services.environment_create(
        actor=users.admin,
        data={"name": "staging", "approvals_required": 1, "strategy": "all_at_once", "bake_minutes": 0},
    )
    first = register(project, users.data_scientist, logistic, package(logistic, None, note="v1"))
    second = register(project, users.data_scientist, logistic, package(logistic, None, note="v2"))
    for version in (first, second):
        assert approve(version, staging, users).status == "approved"
    body = json.dumps({"instances": logistic.rows.head(3).to_numpy().tolist()}).encode()

    # 1. Deploy the first version from its page and watch it serve.
    sign_in(users.approver)
    page.goto(f"/models/cancer/bc/v{first.number}/")
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

    # 2. The second version as a canary that bakes far longer than this test: its page's Deploy button again.
    services.environment_update(
        actor=users.admin,
        environment_id=staging.pk,
        data={"strategy": "canary", "canary_percent": 20, "bake_minutes": LONG_BAKE, "objective_p99_latency_ms": 1000},
    )
    page.goto(f"/models/cancer/bc/v{second.number}/")
    with page.expect_navigation():
        page.get_by_test_id("deploy-button").click()
    assert page.url.endswith(f"/services/{service.pk}/")
    canary = Deployment.objects.get(service=service, model_version=second)
    rollout = page.get_by_test_id("service-rollout")
    page.locator('[data-testid="service-rollout"][data-status="baking"]').wait_for(timeout=90_000)
    assert rollout.get_by_test_id("rollout-status").inner_text() == "baking"
    page.locator('[data-testid="traffic-share"]', has_text="20%").wait_for()
    assert rollout.get_by_test_id("traffic-share").inner_text() == "20%"
    assert rollout.get_by_test_id("rollout-counts").inner_text() == "1 healthy, 1 running of 1"
    bake_left = rollout.get_by_test_id("bake-left").inner_text()
    assert re.fullmatch(r"\d+ s", bake_left) and 0 < int(bake_left.split()[0]) <= LONG_BAKE * 60, bake_left
    # The timeline's row follows the poll too.
    page.locator(f'tr[data-deployment="{canary.pk}"] [data-testid="deployment-status"]', has_text="baking").wait_for()
    objective = rollout.locator('[data-testid="objective-table"] tr[data-objective="p99_latency_ms"]')
    # No request has reached the canary yet: its objective waits for data.
    assert re.fullmatch(r"p99 latency\s+no data yet\s+1000\.0 ms\s+waiting", objective.inner_text()), (
        objective.inner_text()
    )
    # Traffic through the stable address until the canary (a fifth of it) has answered enough to be judged.
    judged = rollout.get_by_test_id("objective-requests")
    for sent in range(1, 1001):
        assert invoke(address, body)[0] == 200
        if sent % 10 == 0 and judged.count() and judged.inner_text().startswith("Judged on"):
            break
    assert re.fullmatch(r"Judged on [1-9]\d+ requests so far\.", judged.inner_text()), judged.inner_text()
    assert re.fullmatch(r"p99 latency\s+[\d.]+ ms\s+1000\.0 ms\s+holding", objective.inner_text()), (
        objective.inner_text()
    )
    events = rollout.get_by_test_id("rollout-events").inner_text()
    assert "in_progress → baking" in events and "traffic 20%" in events, events

    # 4 (while the page is at its fullest). No sideways scroll at a laptop's and a phone's size.
    widths = {size: fits(page, *size, "baking") for size in ((1280, 800), (390, 844))}
    assert widths == {(1280, 800): 1280, (390, 844): 390}
    page.set_viewport_size({"width": 1280, "height": 800})

    # 3. Rolling back needs a reason: empty, the browser does not send the form; blank, the server says why not.
    reason = rollout.get_by_test_id("rollback-reason")
    button = rollout.get_by_test_id("rollback-button")
    button.click()
    assert reason.evaluate("input => input.validity.valueMissing")
    page.fill('[data-testid="rollback-reason"]', "ab")
    button.click()
    assert reason.evaluate("input => input.validity.tooShort")
    assert Deployment.objects.get(pk=canary.pk).status == "baking"
    page.fill('[data-testid="rollback-reason"]', "      ")
    with page.expect_navigation():
        button.click()
    assert "Not rolled back: required: say why you roll back" in page.locator(".messages").inner_text()
    assert Deployment.objects.get(pk=canary.pk).status == "baking"
    assert not Deployment.objects.filter(kind="rollback").exists()

    page.fill('[data-testid="rollback-reason"]', "p99 is fine but the answers look wrong")
    with page.expect_navigation():
        page.get_by_test_id("rollback-button").click()
    assert "Rolling back to" in page.locator(".messages").inner_text()
    rollback = Deployment.objects.get(kind="rollback")
    page.locator(f'tr[data-deployment="{canary.pk}"][data-status="rolled_back"]').wait_for(timeout=60_000)
    page.locator(f'tr[data-deployment="{rollback.pk}"][data-status="succeeded"][data-current="true"]').wait_for()
    page.get_by_test_id("rollout-idle").wait_for()
    assert page.locator(f'tr[data-deployment="{canary.pk}"] [data-testid="deployment-status"]').inner_text() == (
        "rolled back"
    )
    assert "p99 is fine but the answers look wrong" in page.locator(f'tr[data-deployment="{rollback.pk}"]').inner_text()
    assert page.locator('tr[data-current="true"]').count() == 1
    assert f"v{first.number}" in page.get_by_test_id("service-serving").inner_text()
    status, answer = invoke(address, body)
    assert status == 200 and len(answer["predictions"]) == 3
    widths = {size: fits(page, *size, "rolled-back") for size in ((1280, 800), (390, 844))}
    assert widths == {(1280, 800): 1280, (390, 844): 390}
