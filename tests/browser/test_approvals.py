"""The approver's journey in Chromium: the waiting count and the queue, the evidence page (gate results, the
metrics chart drawn against the baseline, lineage, the training data's profile), approving with a comment, and the
request turning approved once the worker has checked the artifact."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.utils import timezone

from controlplane import services as controlplane_services
from deployments import services
from deployments.models import ApprovalDecision, ApprovalRequest
from tests.deployments.conftest import make_model_version
from tests.deployments.test_evidence_pages import make_trained_version

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def waiting(users, tmp_path: Path) -> ApprovalRequest:
    """A candidate version requested for staging, where an earlier version of the same model is approved."""
    project = controlplane_services.project_create(actor=users.admin, name="Breast cancer", slug="bc")
    services.environment_create(
        actor=users.admin,
        data={"name": "staging", "gates": ["accuracy >= 0.90", "accuracy >= serving - 0.01", "schema matches serving"]},
    )
    baseline = make_trained_version(project, users.data_scientist, tmp_path, metrics={"accuracy": 0.93, "f1": 0.91})
    first = services.approval_request_create(
        actor=users.data_scientist, model_version_id=baseline.pk, environment="staging", justification="first one"
    )
    services.approval_decide(actor=users.approver2, request_id=first.pk, verdict="approve", comment="fine")
    # The session's worker may take the check first (the decision enqueued it on commit): either way it is done.
    services.approval_finish(request_id=first.pk)
    assert ApprovalRequest.objects.get(pk=first.pk).status == "approved"
    candidate = make_trained_version(project, users.data_scientist, tmp_path, metrics={"accuracy": 0.96, "f1": 0.93})
    return services.approval_request_create(
        actor=users.data_scientist,
        model_version_id=candidate.pk,
        environment="staging",
        justification="retrained on the November export: better recall",
    )


def test_an_approver_weighs_the_evidence_and_approves(page, sign_in, users, waiting, celery_worker) -> None:
    candidate = waiting.model_version
    sign_in(users.approver)
    page.goto("/approvals/")
    assert page.get_by_test_id("waiting-count").inner_text() == "1 waiting for you"
    row = page.locator(f'tr[data-request="{waiting.pk}"]')
    assert "3 of 3 passed" in row.get_by_test_id("gates").inner_text()
    assert row.get_by_test_id("approvals").inner_text() == "0 of 1"
    assert page.get_by_test_id("approval-table").locator("tbody tr").count() == 1
    row.get_by_role("link", name=f"request {waiting.pk}").click()
    page.wait_for_url(f"**/approvals/{waiting.pk}/")

    assert page.get_by_test_id("justification").inner_text() == "retrained on the November export: better recall"
    assert page.get_by_test_id("artifact-sha256").inner_text() == candidate.sha256
    gates = page.get_by_test_id("gate-results").locator("tbody tr")
    assert gates.count() == 3
    assert page.locator('[data-gate="accuracy >= 0.90"][data-passed="true"]').count() == 1
    assert "0.96" in page.locator('[data-gate="accuracy >= serving - 0.01"]').inner_text()
    # The chart is drawn in the page from the numbers: two bar series, candidate and baseline, one bar per metric.
    chart = page.get_by_test_id("metrics-chart")
    page.locator('[data-testid="metrics-chart"][data-drawn="1"]').wait_for()
    assert chart.locator("g.trace.bars").count() == 2
    assert chart.locator("g.trace.bars path").count() == 4
    legend = chart.locator("g.legend").text_content() or ""
    assert f"v{candidate.number} (candidate)" in legend and "(baseline)" in legend
    assert "+0.03" in page.get_by_test_id("metrics-table").inner_text()
    # The change chart shows each difference on its own axis, green for better (accuracy and f1 both went up).
    page.locator('[data-testid="change-chart"][data-drawn="1"]').wait_for()
    change_bars = page.get_by_test_id("change-chart").locator("g.trace.bars path")
    assert change_bars.count() == 2
    assert all("31, 138, 76" in (change_bars.nth(i).get_attribute("style") or "") for i in range(2))
    assert "better" in (page.get_by_test_id("change-chart").text_content() or "")
    # Lineage from the raw data through the training run to this version; the data's profile.
    dataset_version = candidate.run.inputs.get().dataset_version
    graph = page.get_by_test_id("lineage-graph")
    for node in (dataset_version.node_id, candidate.run.node_id, candidate.node_id):
        assert graph.locator(f'[data-node="{node}"]').count() == 1
    assert "60 rows, 3 columns." in page.get_by_test_id("training-profile").inner_text()
    page.locator('[data-testid="training-profile"] .chart[data-drawn="1"]').first.wait_for()
    assert page.get_by_test_id("profile-table").locator("tbody tr").count() == 3
    assert "measured $0.0123" in page.get_by_test_id("run-cost").inner_text()
    assert page.get_by_test_id("mirror").inner_text() == "Not mirrored (local backend)."

    page.get_by_label("Comment").fill("Accuracy up, schema unchanged, lineage checks out.")
    page.get_by_role("button", name="Approve").click()
    page.wait_for_url(f"**/approvals/{waiting.pk}/")
    assert "Your approval completes request" in page.locator(".messages").inner_text()
    # The worker re-hashes the artifact and approves; the page polls until then and draws itself again.
    page.locator('#approval-status[data-status="approved"]').wait_for(timeout=60_000)
    assert "approved by alex" in page.get_by_test_id("status-reason").inner_text()
    assert page.get_by_test_id("approval-count").inner_text() == "1 of 1 approval"
    assert "Accuracy up, schema unchanged" in page.get_by_test_id("decisions").inner_text()
    assert page.get_by_test_id("decide-form").count() == 0
    assert "approve" in page.get_by_test_id("timeline").inner_text()
    assert ApprovalRequest.objects.get(pk=waiting.pk).status == "approved"
    # Nothing is waiting for this approver any more.
    page.goto("/approvals/")
    assert page.get_by_test_id("waiting-count").count() == 0
    assert "Nothing is waiting for you." in page.get_by_test_id("approval-table").inner_text()


def test_the_requester_cannot_decide_and_withdraws(page, sign_in, users, waiting) -> None:
    sign_in(users.data_scientist)
    page.goto(f"/approvals/{waiting.pk}/")
    assert page.get_by_test_id("decide-form").count() == 0
    assert "Deciding a promotion needs the approver" in page.get_by_test_id("decide-refusal").inner_text()
    # Two steps: the first only reveals the reason and the confirmation.
    confirm = page.get_by_role("button", name=f"Confirm: withdraw request {waiting.pk}")
    assert not confirm.is_visible()
    page.get_by_text("Withdraw this request…").click()
    page.get_by_label("Reason for withdrawing (optional)").fill("a better run is coming")
    confirm.click()
    page.wait_for_url(re.compile(rf".*/approvals/{waiting.pk}/$"))
    assert page.locator('#approval-status[data-status="withdrawn"]').count() == 1
    assert "a better run is coming" in page.get_by_test_id("status-reason").inner_text()
    # The shared link to withdrawn requests opens on All requests with the status badge coloured like here.
    page.goto("/approvals/?status=withdrawn")
    assert page.locator(f'tr[data-request="{waiting.pk}"]').count() == 1
    assert page.get_by_test_id("withdraw-form").count() == 0
    assert not ApprovalDecision.objects.filter(request=waiting).exists()


def test_an_approver_who_trained_the_model_is_told_why_not(page, sign_in, users, waiting) -> None:
    own = make_model_version(waiting.model_version.registered_model.project, users.approver, model="alex-model")
    req = services.approval_request_create(
        actor=users.data_scientist, model_version_id=own.pk, environment="staging", justification="alex trained it"
    )
    sign_in(users.approver)
    page.goto("/approvals/")
    assert page.locator(f'tr[data-request="{req.pk}"]').count() == 0
    page.goto(f"/approvals/{req.pk}/")
    assert "You authored the training run of" in page.get_by_test_id("decide-refusal").inner_text()
    assert page.get_by_test_id("decide-form").count() == 0


def test_the_page_polls_while_the_artifact_is_checked(page, sign_in, users, waiting) -> None:
    # The state the worker leaves between the last approval and its artifact check (no worker takes it here).
    ApprovalDecision.objects.create(request=waiting, approver=users.approver, verdict="approve", comment="go")
    ApprovalRequest.objects.filter(pk=waiting.pk).update(quorum_at=timezone.now())
    sign_in(users.approver2)
    page.goto(f"/approvals/{waiting.pk}/")
    assert page.get_by_test_id("checking").inner_text() == "All approvals are in; checking the artifact…"
    assert page.get_by_test_id("decide-form").count() == 0
    services.approval_finish(request_id=waiting.pk)
    # The next poll (2 s) finds it finished and the whole page is drawn again, with no further polling. The bound is
    # for a loaded CI machine: the page's reload, charts included, took over 10 s here with two suites running.
    page.locator('#approval-status[data-status="approved"]').wait_for(timeout=30_000)
    assert page.get_by_test_id("checking").count() == 0
    assert page.locator("#approval-status[hx-trigger]").count() == 0
    assert "approve" in page.get_by_test_id("timeline").inner_text()


def test_a_wide_training_set_draws_only_a_few_charts(page, sign_in, users, tmp_path: Path) -> None:
    from tests.deployments.test_evidence_pages import WIDE

    project = controlplane_services.project_create(actor=users.admin, name="Breast cancer", slug="bc")
    services.environment_create(actor=users.admin, data={"name": "staging", "gates": []})
    schema = [{"name": name, "type": "float"} for name in ("feature 29", "feature 17")]
    version = make_trained_version(project, users.data_scientist, tmp_path, features=WIDE, input_schema=schema)
    req = services.approval_request_create(
        actor=users.data_scientist, model_version_id=version.pk, environment="staging", justification="wide"
    )
    sign_in(users.approver)
    page.goto(f"/approvals/{req.pk}/")
    page.wait_for_load_state("load")
    page.locator('[data-testid="training-profile"] .chart[data-drawn="1"]').first.wait_for()
    assert page.locator(".chart").count() <= 7
    assert page.locator('[data-testid="training-profile"] .chart').count() == 6
    drawn = page.locator('[data-testid="training-profile"] .chart').first.get_attribute("data-column")
    assert drawn == "feature 29"
    assert page.get_by_test_id("profile-table").locator("tbody tr").count() == 31
    page.get_by_test_id("all-columns").click()
    page.wait_for_url(re.compile(r".*/datasets/bc/.*/v1/#profile$"))


@pytest.mark.parametrize("width", (1366, 390))
def test_the_pages_fit_a_laptop_and_a_phone(page, sign_in, users, waiting, width: int) -> None:
    sign_in(users.approver)
    page.set_viewport_size({"width": width, "height": 900})
    too_wide = {}
    for url in ("/approvals/", "/approvals/?tab=all", f"/approvals/{waiting.pk}/"):
        page.goto(url)
        page.wait_for_load_state("load")
        scroll_width = page.evaluate("document.documentElement.scrollWidth")
        if scroll_width > width:
            too_wide[url] = scroll_width
    assert too_wide == {}, f"pages wider than {width} px"
