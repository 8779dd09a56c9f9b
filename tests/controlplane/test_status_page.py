"""The Status page names the broker where it really is: the embedded one by its socket under
CONTROLPLANE_VAR_DIR (not a fixed var/run/redis.sock), another by host, port and database, never with its password."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client, override_settings

from tests.fixtures.page_html import parse

pytestmark = pytest.mark.django_db


def broker_shown(user: Any) -> str:
    client = Client()
    client.force_login(user)
    response = client.get("/status/")
    assert response.status_code == 200
    facts = parse(response.content).find("dl")
    terms = [dt.text() for dt in facts.find_all("dt")]
    return facts.find_all("dd")[terms.index("Broker")].text()


def test_the_embedded_broker_is_named_by_its_socket_under_the_var_dir(users: Any, tmp_path: Any) -> None:
    socket = tmp_path / "walk-var" / "run" / "redis.sock"
    with override_settings(CELERY_BROKER_URL=f"redis+socket://{socket}", CELERY_BROKER_IS_EMBEDDED=True):
        assert broker_shown(users.admin) == f"embedded Redis ({socket})"


def test_an_external_broker_is_named_by_host_without_its_password(users: Any) -> None:
    url = "redis://:s3cret@cache.internal:6380/3"
    with override_settings(CELERY_BROKER_URL=url, CELERY_BROKER_IS_EMBEDDED=False):
        shown = broker_shown(users.admin)
    assert shown == "Redis (cache.internal:6380/3)" and "s3cret" not in shown
