"""The pagination every list ends with: where the page is ("Showing 26–50 of 80"), links to the first, previous,
next and last pages that keep the filters, and nothing at all for an empty list."""

from __future__ import annotations

import pytest
from django.urls import reverse

from controlplane.models import Project
from tests.fixtures.page_html import parse

pytestmark = pytest.mark.django_db


def test_a_middle_page_says_where_it_is_and_links_every_way_keeping_the_filters(client, users) -> None:
    for number in range(80):
        Project.objects.create(name=f"Churn {number:02d}", slug=f"churn-{number:02d}", created_by=users.admin)
    Project.objects.create(name="Other", slug="other", created_by=users.admin)
    client.force_login(users.finance)
    page = parse(client.get(reverse("project-list"), {"q": "churn", "page": 3}).content)
    nav = page.find("nav", data_testid="pagination")
    assert nav.find(data_testid="page-range").text() == "Showing 51–75 of 80"
    assert "Page 3 of 4" in nav.text()
    assert nav.links() == {
        "« First": "?q=churn&page=1",
        "← Previous": "?q=churn&page=2",
        "Next →": "?q=churn&page=4",
    }
    last = parse(client.get(reverse("project-list"), {"q": "churn", "page": 4}).content)
    assert last.find(data_testid="page-range").text() == "Showing 76–80 of 80"
    # One page: where it is, no links.
    one = parse(client.get(reverse("project-list"), {"q": "other"}).content)
    assert one.find(data_testid="page-range").text() == "Showing 1–1 of 1"
    assert one.find("nav", data_testid="pagination").links() == {}


def test_an_empty_list_has_no_pagination(client, users) -> None:
    client.force_login(users.finance)
    assert not parse(client.get(reverse("project-list"), {"q": "nothing"}).content).has(data_testid="pagination")


def test_the_first_page_links_forward_only(client, users) -> None:
    for number in range(80):
        Project.objects.create(name=f"P {number:02d}", slug=f"p-{number:02d}", created_by=users.admin)
    client.force_login(users.finance)
    nav = parse(client.get(reverse("project-list")).content).find("nav", data_testid="pagination")
    assert nav.links() == {"Next →": "?page=2", "Last »": "?page=4"}
