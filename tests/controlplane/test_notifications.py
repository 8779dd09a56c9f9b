"""Notifications in the app: the list, its unread marks, "mark all read", and the navigation's counts (unread
notifications for everyone, requests waiting for an approver), which cost one query each however many there are."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from controlplane import services as controlplane_services
from controlplane.models import Notification
from deployments import services
from tests.deployments.conftest import make_model_version
from tests.fixtures.page_html import Element, parse

pytestmark = pytest.mark.django_db


@pytest.fixture
def project(users: Any) -> Any:
    return controlplane_services.project_create(actor=users.admin, name="Breast cancer", slug="bc")


@pytest.fixture
def staging(users: Any) -> Any:
    return services.environment_create(actor=users.admin, data={"name": "staging", "order": 10})


def open_requests(users: Any, project: Any, count: int) -> list[Any]:
    return [
        services.approval_request_create(
            actor=users.data_scientist,
            model_version_id=make_model_version(project, users.data_scientist).pk,
            environment="staging",
            justification="better recall",
        )
        for _ in range(count)
    ]


def home(client: Any) -> Element:
    response = client.get(reverse("home"))
    assert response.status_code == 200
    return parse(response.content)


def nav_entries(page: Element) -> dict[str, str]:
    """Main navigation: the label (without its count) → the count shown, or ''."""
    entries = {}
    for link in page.find("nav", data_testid="main-nav").find_all("a"):
        counts = link.find_all(data_testid="nav-count")
        count = counts[0].text() if counts else ""
        entries[link.text().removesuffix(count).strip()] = count
    return entries


def test_the_outcome_reaches_the_requester_with_an_unread_count(client, users, project, staging) -> None:
    (approval,) = open_requests(users, project, 1)
    services.approval_decide(actor=users.approver, request_id=approval.pk, verdict="reject", comment="too slow")
    client.force_login(users.data_scientist)
    page = home(client)
    link = page.find("a", data_testid="nav-notifications")
    assert link.attrs["href"] == reverse("notification-list") and link.find(data_testid="nav-unread").text() == "1"

    listing = parse(client.get(reverse("notification-list")).content)
    table = listing.find("table", data_testid="notification-table")
    (row,) = [tr for tr in table.find_all("tr") if "data-notification" in tr.attrs]
    assert row.find(data_testid="unread").text() == "unread"
    assert "for staging" in row.text() and "rejected by alex: too slow" in row.text()
    note = Notification.objects.get(user=users.data_scientist)
    assert row.links()["open"] == reverse("notification-open", args=[note.pk])
    assert listing.find(data_testid="unread-summary").text() == "1 unread."
    # Opening it goes to the request and marks it read; someone else's cannot be opened.
    opened = client.get(reverse("notification-open", args=[note.pk]))
    assert opened.status_code == 302 and opened["Location"] == reverse("approval-request-detail", args=[approval.pk])
    assert Notification.objects.get(pk=note.pk).read_at is not None
    assert not home(client).find("a", data_testid="nav-notifications").find_all(data_testid="nav-unread")
    theirs = Notification.objects.create(user=users.approver, title="theirs", url="/")
    assert client.get(reverse("notification-open", args=[theirs.pk])).status_code == 404
    assert Notification.objects.get(pk=theirs.pk).read_at is None
    # A stored address off this site is never followed.
    away = Notification.objects.create(user=users.data_scientist, title="away", url="https://evil.example/")
    assert client.get(reverse("notification-open", args=[away.pk]))["Location"] == reverse("notification-list")


def test_mark_all_read_clears_the_marks_and_the_badge_for_this_user_only(client, users) -> None:
    for number in range(3):
        controlplane_services.notify(users=[users.data_scientist, users.approver], title=f"news {number}")
    client.force_login(users.data_scientist)
    page = parse(client.get(reverse("notification-list")).content)
    titles = [tr.find("strong").text() for tr in page.find_all("tr") if "data-notification" in tr.attrs]
    assert titles == ["news 2", "news 1", "news 0"]  # newest first
    assert any(button.text() == "Mark all read" for button in page.find_all("button"))

    response = client.post(reverse("notification-list"))
    assert response.status_code == 302 and response["Location"] == reverse("notification-list")
    page = parse(client.get(response["Location"]).content)
    assert not page.has(data_testid="unread") and not page.has(data_testid="nav-unread")
    assert page.find(data_testid="unread-summary").text() == "Nothing unread."
    assert not any(button.text() == "Mark all read" for button in page.find_all("button"))
    assert "3 notifications marked read." in page.find("ul", **{"class": "messages"}).text()
    # Another user's notifications are neither shown nor touched.
    assert Notification.objects.filter(user=users.approver, read_at__isnull=True).count() == 3
    assert Notification.objects.filter(user=users.data_scientist, read_at__isnull=True).count() == 0


def test_the_list_is_paginated(client, users) -> None:
    for number in range(30):
        controlplane_services.notify(users=[users.finance], title=f"alert {number}")
    client.force_login(users.finance)
    first = parse(client.get(reverse("notification-list")).content)
    assert len([tr for tr in first.find_all("tr") if "data-notification" in tr.attrs]) == 25
    assert first.find("nav", **{"class": "pagination"}).links()["Next →"] == "?page=2"
    assert first.find(data_testid="page-range").text() == "Showing 1–25 of 30"
    second = parse(client.get(reverse("notification-list"), {"page": 2}).content)
    titles = [tr.find("strong").text() for tr in second.find_all("tr") if "data-notification" in tr.attrs]
    assert titles == [f"alert {number}" for number in range(4, -1, -1)]
    assert second.find(data_testid="page-range").text() == "Showing 26–30 of 30"
    assert second.find("nav", **{"class": "pagination"}).links() == {"← Previous": "?page=1"}


def test_an_approver_sees_how_many_requests_wait_in_the_nav_and_on_home(client, users, project, staging) -> None:
    first, second = open_requests(users, project, 2)
    controlplane_services.notify(users=[users.approver], title="budget alert")
    client.force_login(users.approver)
    page = home(client)
    entries = nav_entries(page)
    assert entries["Approvals"] == "2" and entries["Environments"] == ""
    # Each request that waits for them, and the alert.
    assert page.find("a", data_testid="nav-notifications").text() == "Notifications 3"
    assert page.find("nav", data_testid="main-nav").links()["Approvals 2"] == reverse("approval-queue")
    waiting = page.find("section", data_testid="approvals-waiting")
    assert "2 requests wait for your decision." in waiting.text()
    assert waiting.links()["Approval queue"] == reverse("approval-queue")

    # A request they decided no longer waits for them; one waits still.
    services.approval_decide(actor=users.approver, request_id=first.pk, verdict="approve", comment="fine")
    page = home(client)
    assert nav_entries(page)["Approvals"] == "1"
    assert "1 request waits for your decision." in page.find("section", data_testid="approvals-waiting").text()
    # The first has the one approval staging needs (the worker finishes it): it waits for nobody else either.
    client.force_login(users.approver2)
    assert nav_entries(home(client))["Approvals"] == "1"


@pytest.mark.parametrize("role", ["data_scientist", "finance"])
def test_who_may_see_but_not_decide_has_the_approvals_entry_without_a_count(
    client, users, project, staging, role: str
) -> None:
    open_requests(users, project, 1)
    client.force_login(getattr(users, role))
    page = home(client)
    # They reach the list of requests from the navigation; nothing waits for them, so no number.
    assert nav_entries(page)["Approvals"] == "" and "Environments" in nav_entries(page)
    assert page.find("nav", data_testid="main-nav").links()["Approvals"] == reverse("approval-queue")
    assert not page.has("section", data_testid="approvals-waiting")
    assert not page.has(data_testid="nav-unread")


def test_the_navigation_counts_cost_the_same_however_many_there_are(client, users, project, staging) -> None:
    client.force_login(users.approver)

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert client.get(reverse("project-list")).status_code == 200
        return len(captured)

    open_requests(users, project, 1)
    controlplane_services.notify(users=[users.approver], title="one")
    before = queries()
    open_requests(users, project, 12)
    for number in range(20):
        controlplane_services.notify(users=[users.approver], title=f"more {number}")
    assert queries() == before
    assert nav_entries(home(client))["Approvals"] == "13"


def test_the_list_filters_unread_read_and_by_words_in_the_page_and_the_api(client, api_client_for, users) -> None:
    for title in ("request 1 approved", "request 2 rejected", "budget crossed"):
        controlplane_services.notify(users=[users.finance], title=title, body=f"about {title}")
    first = Notification.objects.get(title="request 1 approved")
    controlplane_services.notifications_mark_read(user=users.finance, ids=[first.pk])
    client.force_login(users.finance)
    api = api_client_for(users.finance)

    def page_titles(**params: str) -> list[str]:
        response = client.get(reverse("notification-list"), params)
        assert response.status_code == 200
        rows = [tr for tr in parse(response.content).find_all("tr") if "data-notification" in tr.attrs]
        # The "what" cell: an unread badge, the title, then its text ("about …").
        return [row.find_all("td")[1].text().removeprefix("unread ").split(" about ")[0] for row in rows]

    def api_titles(**params: str) -> list[str]:
        body = api.get(reverse("api-notification-list"), params).json()
        assert body["unread"] == 2  # of all, whatever the filter
        return [row["title"] for row in body["results"]]

    for params, expected in (
        ({"status": "unread"}, ["budget crossed", "request 2 rejected"]),
        ({"status": "read"}, ["request 1 approved"]),
        ({"q": "request"}, ["request 2 rejected", "request 1 approved"]),
    ):
        assert api_titles(**params) == expected, params
        assert page_titles(**params) == expected, params
    refused = api.get(reverse("api-notification-list"), {"status": "new"})
    assert refused.status_code == 400
    assert refused.json()["error"]["fields"] == {"status": ["expected unread or read, got 'new'"]}
    page = client.get(reverse("notification-list"), {"status": "new"})
    assert page.status_code == 400
    assert "expected unread or read" in parse(page.content).find("span", data_field="status").text()
