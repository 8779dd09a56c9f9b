"""Rotating a service's ingest token: by API or the service page, approvers and admins only, audited, hash only."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from rest_framework.test import APIClient

from controlplane.models import AuditEvent
from deployments.models import Service
from monitoring.models import MetricPoint
from monitoring.services.ingest import service_ingest_token
from tests.monitoring.conftest import make_model_version, make_served
from tests.monitoring.test_ingest import URL, minute, payload, this_minute

pytestmark = pytest.mark.django_db


def _rotate_url(service: Service) -> str:
    return f"/api/v1/services/{service.pk}/rotate-ingest-token/"


def test_an_approver_rotates_and_the_old_token_is_refused(served: Any, users: Any) -> None:
    old = service_ingest_token(served)
    api = APIClient()
    api.force_authenticate(users.approver)
    answer = api.post(_rotate_url(served))
    assert answer.status_code == 200, answer.json()
    body = answer.json()
    assert body["service"]["id"] == served.pk
    assert "redeploy" in body["message"]
    assert old not in answer.content.decode()
    fresh = Service.objects.get(pk=served.pk)
    new = service_ingest_token(fresh)
    assert new != old and new not in answer.content.decode()
    report = payload(served, minute(this_minute(), "p1"))
    refused = APIClient(HTTP_AUTHORIZATION=f"Bearer {old}").post(URL, report, format="json")
    assert refused.status_code == 401
    assert APIClient(HTTP_AUTHORIZATION=f"Bearer {new}").post(URL, report, format="json").status_code == 200
    # Only a hash is stored: neither token appears anywhere in the row.
    row = " ".join(str(value) for value in Service.objects.filter(pk=served.pk).values().get().values())
    assert new not in row and old not in row
    event = AuditEvent.objects.get(action="service.ingest_token_rotate", object_id=str(served.pk))
    assert event.actor_id == users.approver.pk
    assert new not in str(event.after) and new not in str(event.before)


def test_a_token_for_one_service_cannot_report_for_another(
    served: Any, project: Any, staging: Any, users: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = make_served(make_model_version(project, users.data_scientist, model="churn"), staging, users, monkeypatch)
    token = service_ingest_token(served)
    answer = APIClient(HTTP_AUTHORIZATION=f"Bearer {token}").post(
        URL, payload(other, minute(this_minute(), "p1")), format="json"
    )
    assert answer.status_code == 401
    assert not MetricPoint.objects.exists()


def test_a_data_scientist_may_not_rotate_and_sees_no_button(served: Any, users: Any) -> None:
    before = Service.objects.values_list("ingest_token_sha256", flat=True).get(pk=served.pk)
    api = APIClient()
    api.force_authenticate(users.data_scientist)
    assert api.post(_rotate_url(served)).status_code == 403
    page = Client()
    page.force_login(users.data_scientist)
    html = page.get(f"/services/{served.pk}/").content.decode()
    assert 'data-testid="rotate-ingest-token-form"' not in html
    assert page.post(f"/services/{served.pk}/rotate-ingest-token/").status_code == 403
    assert Service.objects.values_list("ingest_token_sha256", flat=True).get(pk=served.pk) == before
    assert not AuditEvent.objects.filter(action="service.ingest_token_rotate").exists()


def test_the_service_page_button_rotates(served: Any, users: Any) -> None:
    old = service_ingest_token(served)
    page = Client()
    page.force_login(users.approver)
    html = page.get(f"/services/{served.pk}/").content.decode()
    assert 'data-testid="rotate-ingest-token-form"' in html and "csrfmiddlewaretoken" in html
    answer = page.post(f"/services/{served.pk}/rotate-ingest-token/", follow=True)
    assert answer.status_code == 200 and "redeploy" in answer.content.decode()
    assert old not in answer.content.decode()
    assert service_ingest_token(Service.objects.get(pk=served.pk)) != old
    assert AuditEvent.objects.filter(action="service.ingest_token_rotate", actor=users.approver).count() == 1
