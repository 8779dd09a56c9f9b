"""Runs follow their backend without multiplying pollers, getting stuck, or losing a stop."""

from __future__ import annotations

import pytest
from django.urls import reverse
from django.utils import timezone

from lineage import selectors, services
from lineage.models import Run

pytestmark = pytest.mark.django_db


@pytest.fixture
def make_run(users, project):
    def make(**fields):
        defaults = {
            "project": project,
            "kind": "training",
            "recipe": "logistic_regression",
            "recipe_version": "1",
            "recipe_fingerprint": "f" * 64,
            "created_by": users.data_scientist,
            "output_name": "m",
        }
        return Run.objects.create(**{**defaults, **fields})

    return make


def test_a_retired_poll_chain_stops_without_asking_the_backend(make_run) -> None:
    run = make_run(status="running", backend_job_id="no-such-job", poll_generation=2)
    # Generation 1 was replaced by 2: asking the local backend about "no-such-job" would raise, so it must not.
    assert services.run_poll(run_id=run.pk, generation=1).status == "running"
    assert Run.objects.get(pk=run.pk).last_polled_at is None


def test_a_run_stopped_before_its_job_existed_ends_stopped(make_run) -> None:
    run = make_run(status="stopping", started_at=timezone.now())
    assert services.run_start(run_id=run.pk).status == "stopped"
    assert Run.objects.get(pk=run.pk).events.last().reason == "stopped before the job started"


def test_estimates_round_up_and_never_500(client, users) -> None:
    cost, _ = selectors.run_cost_estimate(
        backend="sagemaker", instance_type="ml.c5.xlarge", instance_count=1, max_runtime_seconds=3600
    )
    assert str(cost) == "0.21"  # $0.204 rounded up: an "at most" figure must not be rounded down
    client.force_login(users.data_scientist)
    for query in (
        "backend=x",
        "instance_count=" + "9" * 30,
        "max_runtime_minutes=²",
        "backend=sagemaker&instance_type=nope",
    ):
        response = client.get(reverse("run-estimate") + "?" + query)
        assert response.status_code == 200 and 'class="error"' in response.content.decode(), query
    assert client.get(reverse("run-compare") + "?run=²&run=" + "9" * 23).status_code == 302
