"""controlplane.api_support.FastRepresentation gives exactly DRF's representation: the runs list and detail on rows
with every kind of value (None, decimals, datetimes, UUIDs, JSON, links, reproductions, events, a missing model)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.utils import timezone
from rest_framework import serializers

from controlplane import services as controlplane_services
from controlplane.api_support import FastRepresentation
from controlplane.renderers import JSONRenderer
from lineage.api import RunDetailOutput, RunOutput, _list_page, _runs
from lineage.models import DatasetVersion, Run, RunEvent
from lineage.selectors import run_list
from tests.lineage.history import History

pytestmark = pytest.mark.django_db


def drf(serializer: serializers.Serializer, instance: Any) -> dict[str, Any]:
    """What DRF's own Serializer.to_representation answers for the instance."""
    return super(FastRepresentation, serializer).to_representation(instance)  # type: ignore[misc, no-any-return]


@pytest.fixture
def runs(users: Any) -> list[Run]:
    project = controlplane_services.project_create(actor=users.admin, name="Cancer", slug="cancer")
    history = History(project=project, user=users.data_scientist)
    history.add_datasets(2)
    made = history.add_runs(3) + history.add_runs(2, with_models=False)
    now = timezone.now()
    first, second, third, fourth, fifth = made
    Run.objects.filter(pk=first.pk).update(
        started_at=now - timedelta(minutes=5, microseconds=7),
        finished_at=now,
        estimated_cost=Decimal("0.123456"),
        cost=Decimal("2.5"),
        seed=None,
        usage={"cpu_seconds": 1.5, "max_rss_mb": 300},
        status_reason="done — ünïcode\u2028line",
    )
    Run.objects.filter(pk=second.pk).update(reproduced_from=first, status="failed", metrics={}, backend_job_id="")
    Run.objects.filter(pk=fourth.pk).update(kind="transform", instance_count=3, image="")
    DatasetVersion.objects.create(  # an output link
        dataset=history.datasets[0],
        number=2,
        sha256="e" * 64,
        uri="file:///out",
        storage_key="datasets/out",
        size=1,
        format="csv",
        content_format="csv",
        columns=[],
        row_count=1,
        source="run",
        produced_by=third,
        created_by=users.data_scientist,
    )
    RunEvent.objects.create(run=fifth, from_status="queued", to_status="running", reason="started")
    RunEvent.objects.create(run=fifth, from_status="running", to_status="failed", reason="x", actor=users.admin)
    return made


def test_the_list_and_the_detail_equal_drf_s_representation(runs: list[Run], users: Any) -> None:
    page = list(_list_page(run_list(user=users.admin), users.admin))
    assert len(page) == len(runs)
    listing = RunOutput(page, many=True)
    fast = listing.data
    assert fast == [drf(listing.child, run) for run in page]
    assert {r["reproduced_from"] for r in fast} == {None, runs[0].pk}
    assert any(r["outputs"] for r in fast) and any(r["model_version"] is None for r in fast)
    assert any(r["cost"] == "2.5000" and r["started_at"].endswith("Z") for r in fast), fast
    for run in _runs(users.admin):
        detail = RunDetailOutput(run)
        assert detail.data == drf(detail, run)
    assert [e["to_status"] for e in RunDetailOutput(_runs(users.admin).get(pk=runs[4].pk)).data["events"]] == [
        "running",
        "failed",
    ]


def test_the_renderer_answers_drf_s_json(runs: list[Run], users: Any) -> None:
    from rest_framework.renderers import JSONRenderer as DrfJSONRenderer

    data = {
        "results": RunOutput(list(_list_page(run_list(user=users.admin), users.admin)), many=True).data,
        "lazy": serializers.ValidationError("x").detail,
        "decimal": Decimal("1.50"),
        "when": timezone.now(),
        1: "a key that is not a string",
    }
    assert JSONRenderer().render(data) == DrfJSONRenderer().render(data)
    assert b"\\u2028" in JSONRenderer().render(data)
    indented = "application/json; indent=2"
    assert JSONRenderer().render(data, indented) == DrfJSONRenderer().render(data, indented)


def test_floats_render_as_drf_s_values_and_a_nan_as_null_indented_or_not() -> None:
    import json

    from rest_framework.renderers import JSONRenderer as DrfJSONRenderer

    data = {"small": 1e-7, "big": 1.5e300, "third": 1 / 3, "none": None, "nested": [{"x": -0.0}]}
    assert json.loads(JSONRenderer().render(data)) == json.loads(DrfJSONRenderer().render(data))
    indented = "application/json; indent=4"
    for bad in (float("nan"), float("inf"), -float("inf"), Decimal("NaN")):
        body = {"a": None, "deep": [{"value": bad, "kept": 1.5}]}
        with pytest.raises(ValueError, match="JSON compliant"):
            DrfJSONRenderer().render(body)  # DRF's strict JSON: a 500
        for media_type in (None, indented):
            assert json.loads(JSONRenderer().render(body, media_type)) == {
                "a": None,
                "deep": [{"value": None, "kept": 1.5}],
            }, (bad, media_type)


def test_a_field_that_reads_its_value_its_own_way_is_read_by_drf_s_lookup(runs: list[Run], users: Any) -> None:
    class Shouting(serializers.CharField):
        def get_attribute(self, instance: Any) -> Any:
            return super().get_attribute(instance).upper()

    class Output(FastRepresentation, serializers.Serializer):
        recipe = Shouting()
        status = serializers.CharField()
        created = serializers.DateTimeField(source="created_at")

    for run in runs:
        output = Output(run)
        assert output.data == drf(output, run)
        assert output.data["recipe"] == run.recipe.upper()
