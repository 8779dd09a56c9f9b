"""Each role signs in through the real form in Chromium and sees its own navigation."""

from __future__ import annotations

import pytest

from controlplane import permissions

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

EXPECTED_NAV = {
    permissions.DATA_SCIENTIST: [
        "Projects",
        "Datasets",
        "Runs",
        "Models",
        "Environments",
        "Approvals",
        "Services",
        "Monitoring",
        "Costs",
        "Audit log",
        "API",
    ],
    permissions.APPROVER: [
        "Projects",
        "Datasets",
        "Runs",
        "Models",
        "Environments",
        "Approvals",
        "Services",
        "Monitoring",
        "Costs",
        "Audit log",
        "API",
    ],
    permissions.FINANCE: [
        "Projects",
        "Datasets",
        "Runs",
        "Models",
        "Environments",
        "Approvals",
        "Services",
        "Monitoring",
        "Costs",
        "Audit log",
        "API",
    ],
    permissions.ADMIN: [
        "Projects",
        "Datasets",
        "Runs",
        "Models",
        "Environments",
        "Approvals",
        "Services",
        "Monitoring",
        "Costs",
        "Audit log",
        "API",
        "Status",
        "Django admin",
    ],
}


@pytest.mark.parametrize("role", permissions.ROLES)
def test_each_role_sees_its_navigation(page, sign_in, users, role: str) -> None:
    sign_in(users.by_role()[role])
    nav = page.get_by_test_id("main-nav")
    assert nav.get_by_role("link").all_inner_texts() == EXPECTED_NAV[role]
    assert page.get_by_test_id("user-roles").inner_text().strip() == role
    nav.get_by_role("link", name="Projects", exact=True).click()
    new_project = page.get_by_role("link", name="New project")
    assert new_project.count() == (1 if role in (permissions.DATA_SCIENTIST, permissions.ADMIN) else 0)


def test_outsider_is_told_to_ask_for_a_role(page, sign_in, users) -> None:
    sign_in(users.outsider)
    assert page.get_by_test_id("main-nav").get_by_role("link").count() == 0
    assert "has no role yet" in page.get_by_test_id("no-role").inner_text()


def test_wrong_password_is_refused(page, users) -> None:
    page.goto("/projects/")
    assert "/accounts/login/" in page.url
    page.get_by_label("Username").fill(users.data_scientist.username)
    page.get_by_label("Password").fill("wrong")
    page.get_by_role("button", name="Sign in").click()
    assert "did not match" in page.get_by_role("alert").inner_text()


def test_system_check_runs_on_the_worker_and_the_page_updates_itself(page, sign_in, users, celery_worker) -> None:
    sign_in(users.admin)
    page.goto("/status/")
    page.get_by_role("button", name="Run system check").click()
    # htmx polls until the worker has written the result.
    status = page.get_by_test_id("check-status")
    status.filter(has_text="passed").wait_for(timeout=60_000)
    assert page.locator("#system-check").get_attribute("data-status") == "passed"


def test_project_created_in_the_browser(page, sign_in, users) -> None:
    sign_in(users.data_scientist)
    page.goto("/projects/new/")
    page.get_by_label("Name").fill("Churn model")
    page.get_by_label("Slug").fill("Churn Model")
    page.get_by_role("button", name="Create project").click()
    assert "lowercase letters" in page.locator('[data-field="slug"]').inner_text()
    page.get_by_label("Slug").fill("churn")
    page.get_by_label("Extra cost tags").fill("team=growth")
    page.get_by_role("button", name="Create project").click()
    page.wait_for_url("**/projects/churn/")
    assert page.locator(".facts .badge").all_inner_texts() == ["team=growth"]
    assert page.get_by_test_id("audit-table").get_by_text("project.create").count() == 1


def test_a_page_the_user_may_not_see_says_why_in_the_layout(page, sign_in, users) -> None:
    sign_in(users.finance)
    response = page.goto("/status/")
    assert response is not None and response.status == 403
    assert page.get_by_role("heading", level=1).inner_text() == "You may not open this page"
    assert page.get_by_test_id("main-nav").get_by_role("link").all_inner_texts() == EXPECTED_NAV[permissions.FINANCE]
    assert "system.view" in page.get_by_test_id("forbidden-reason").inner_text()
    assert page.get_by_test_id("needed-role").all_inner_texts() == ["admin"]
