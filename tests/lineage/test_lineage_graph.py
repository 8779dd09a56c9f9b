"""Ancestors and descendants in one query at any depth; a drawing costs what it draws, not the fan-out."""

from __future__ import annotations

from collections import Counter, deque
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from controlplane import services as controlplane_services
from lineage import selectors
from lineage.graph_layout import layout_graph
from lineage.models import LineageEdge
from tests.lineage.history import History

pytestmark = pytest.mark.django_db

LEVELS, WIDTH = 50, 200  # 10,000 nodes, depth 50


def node(level: int, index: int) -> str:
    return f"dataset_version:{level * WIDTH + index + 1}"


@pytest.fixture
def big_graph() -> dict[str, set[str]]:
    """Each node below the top has two parents in the level above; returns the parents of every node."""
    parents: dict[str, set[str]] = {}
    edges = []
    for level in range(1, LEVELS):
        for index in range(WIDTH):
            child = node(level, index)
            for parent in (node(level - 1, index), node(level - 1, (index + 1) % WIDTH)):
                edges.append(LineageEdge(source=parent, target=child))
                parents.setdefault(child, set()).add(parent)
    LineageEdge.objects.bulk_create(edges, batch_size=5000)
    return parents


def reachable(start: str, step: dict[str, set[str]]) -> set[str]:
    seen, queue = set(), deque([start])
    while queue:
        for neighbour in step.get(queue.popleft(), ()):
            if neighbour not in seen:
                seen.add(neighbour)
                queue.append(neighbour)
    return seen


def ancestors_of(node_id: str) -> set[str]:
    return {source for source, _ in selectors.lineage_upstream_edges(node_id)}


def descendants_of(node_id: str) -> set[str]:
    return {target for _, target in selectors.lineage_downstream_edges(node_id)}


def test_ancestors_and_descendants_of_a_10000_node_graph_in_one_query(big_graph, django_assert_num_queries) -> None:
    children: dict[str, set[str]] = {}
    for child, parents in big_graph.items():
        for parent in parents:
            children.setdefault(parent, set()).add(child)
    bottom, top, middle = node(LEVELS - 1, 17), node(0, 3), node(25, 100)
    with django_assert_num_queries(1):
        ancestors = ancestors_of(bottom)
    assert ancestors == reachable(bottom, big_graph)
    assert node(0, 17) in ancestors and len(ancestors) > 1000
    with django_assert_num_queries(1):
        descendants = descendants_of(top)
    assert descendants == reachable(top, children)
    with django_assert_num_queries(1):
        assert ancestors_of(middle) == reachable(middle, big_graph)
    assert descendants_of(bottom) == set()


def test_depth_limit_and_collapse_keep_the_drawing_small(big_graph) -> None:
    graph = selectors.lineage_graph(node(LEVELS - 1, 0), depth=3)
    assert min(n.distance for n in graph.nodes.values()) == -3
    assert graph.hidden_upstream > 0
    drawn = layout_graph(graph, collapse_over=3)
    assert any(n["kind"] == "more" for n in drawn["nodes"])
    assert len(drawn["nodes"]) <= 1 + 3 * 3


def test_a_cycle_in_bad_data_still_terminates() -> None:
    LineageEdge.objects.bulk_create(
        [LineageEdge(source="run:1", target="run:2"), LineageEdge(source="run:2", target="run:1")]
    )
    assert ancestors_of("run:1") == {"run:1", "run:2"}
    graph = selectors.lineage_graph("run:1", depth=50)
    assert set(graph.nodes) == {"run:1", "run:2"}


def test_bad_node_ids_are_a_clear_400(api_client_for, users) -> None:
    response = api_client_for(users.finance).get(reverse("api-lineage", args=["table:1"]))
    assert response.status_code == 400
    assert "dataset_version:12" in response.json()["error"]["fields"]["node_id"][0]
    assert api_client_for(users.finance).get(reverse("api-lineage", args=["run:999"])).status_code == 404
    response = api_client_for(users.finance).get(reverse("lineage", args=["table:1"]))
    assert response.status_code == 404


@pytest.fixture
def popular(users: Any) -> History:
    """One dataset version read by 300 training runs, each of which made a model version."""
    project = controlplane_services.project_create(actor=users.admin, name="Cancer", slug="cancer")
    history = History(project=project, user=users.data_scientist)
    history.add_datasets(1)
    history.add_runs(300)
    return history


def test_a_popular_version_draws_seven_per_column_and_counts_the_rest(popular) -> None:
    focus = popular.popular.node_id
    with CaptureQueriesContext(connection) as captured:
        graph = selectors.lineage_graph(focus, depth=4)
    # The shape in one query, then one per node kind drawn, whatever the fan-out.
    assert len(captured) == 4
    assert graph.more == {1: 293, 2: 293}
    columns = Counter(node.distance for node in graph.nodes.values() if node.kind != "more")
    assert columns == {0: 1, 1: 7, 2: 7}
    assert graph.nodes["more:1"].label == "+293 more"
    # Edges into the left-out runs point at their box, and the box's models are reached from it.
    assert (focus, "more:1") in graph.edges and ("more:1", "more:2") in graph.edges
    drawn_runs = [n for n in graph.nodes if n.startswith("run:")]
    assert all((focus, run) in graph.edges for run in drawn_runs)
    # Only the fields drawn are read: not a run's metrics or log, nor a version's columns.
    loaded = " ".join(query["sql"] for query in captured[1:])
    assert "log_tail" not in loaded and '"metrics"' not in loaded.replace('"lineage_modelversion"."metrics"', "")
    assert '"columns"' not in loaded


def test_the_page_and_the_api_show_plus_n_more(popular, client, api_client_for, users) -> None:
    focus = popular.popular.node_id
    client.force_login(users.finance)
    drawn = client.get(reverse("lineage", args=[focus])).context["graph"]
    boxes = [n for n in drawn["nodes"] if n["kind"] == "more"]
    assert [b["label"] for b in boxes] == ["+293 more", "+293 more"]
    assert len(drawn["nodes"]) == 1 + 8 + 8
    expanded = client.get(reverse("lineage", args=[focus]), {"expand": "1"}).context["graph"]
    assert len([n for n in expanded["nodes"] if n["id"].startswith("run:")]) == 300
    body = api_client_for(users.finance).get(reverse("api-lineage", args=[focus])).json()
    assert body["more"] == [
        {"id": "more:1", "distance": 1, "count": 293},
        {"id": "more:2", "distance": 2, "count": 293},
    ]
    assert len(body["nodes"]) == 15 and all(n["kind"] != "more" for n in body["nodes"])


def test_the_depth_is_applied_in_the_walk(big_graph) -> None:
    focus = node(LEVELS - 1, 0)
    graph = selectors.lineage_graph(focus, depth=2, per_column=1000)
    # Two levels up are drawn; the walk stopped at the third, which it only counts.
    assert {n.distance for n in graph.nodes.values()} == {0, -1, -2}
    assert len([n for n in graph.nodes.values() if n.distance == -2]) == 3
    assert graph.hidden_upstream == 4 and graph.hidden_downstream == 0


def test_a_deployment_id_names_nothing_until_deployments_exist(client, api_client_for, users) -> None:
    assert selectors.node_exists("deployment:987654") is False
    client.force_login(users.finance)
    assert client.get(reverse("lineage", args=["deployment:987654"])).status_code == 404
    assert api_client_for(users.finance).get(reverse("api-lineage", args=["deployment:987654"])).status_code == 404


def test_the_newest_readers_of_a_popular_version_without_a_distinct_over_whole_runs(popular) -> None:
    with CaptureQueriesContext(connection) as captured:
        readers = list(selectors.dataset_version_consumers(version=popular.popular))
    assert len(captured) == 1
    sql = captured[0]["sql"]
    assert "DISTINCT" not in sql and "log_tail" not in sql
    newest = sorted(popular.popular.consumed_by.values_list("run_id", flat=True), reverse=True)[:20]
    assert [run.pk for run in readers] == newest


def test_deployments_and_rollbacks_are_drawn_after_the_model_version_they_serve(client, api_client_for, users) -> None:
    from deployments import services as deployment_services
    from deployments.models import Deployment, Service
    from tests.deployments.conftest import make_model_version
    from tests.deployments.test_deploys import approve

    project = controlplane_services.project_create(actor=users.admin, name="Cancer", slug="cancer")
    staging = deployment_services.environment_create(
        actor=users.admin, data={"name": "staging", "approvals_required": 1}
    )
    v1, v2 = (make_model_version(project, users.data_scientist) for _ in range(2))
    for version in (v1, v2):
        approve(version, staging, users)

    def serve(version: Any) -> Deployment:
        """Deploy the version and take it as having succeeded (no backend runs in this test)."""
        made = deployment_services.deployment_create(
            actor=users.approver, model_version_id=version.pk, environment="staging"
        )
        Deployment.objects.filter(pk=made.pk).update(status="succeeded", revision=f"r-d{made.pk}")
        Service.objects.filter(pk=made.service_id).update(current_deployment=made)
        return Deployment.objects.get(pk=made.pk)

    first, second = serve(v1), serve(v2)
    rollback = deployment_services.deployment_rollback(
        actor=users.approver, service_id=second.service_id, reason="p99 doubled"
    )
    assert (rollback.kind, rollback.model_version_id) == ("rollback", v1.pk)

    # From v1: its run upstream; the deployment that served it and the rollback that brought it back downstream.
    graph = selectors.lineage_graph(v1.node_id)
    assert {(v1.node_id, first.node_id), (v1.node_id, rollback.node_id), (v1.run.node_id, v1.node_id)} <= set(
        graph.edges
    )
    drawn = graph.nodes[first.node_id]
    assert (drawn.kind, drawn.distance, drawn.status) == ("deployment", 1, "succeeded")
    assert drawn.label == f"deploy {first.pk}: {first.service.name}"
    assert drawn.url == reverse("service-detail", args=[first.service_id])
    assert graph.nodes[rollback.node_id].label == f"rollback {rollback.pk}: {first.service.name}"
    assert graph.nodes[rollback.node_id].status == "pending"
    assert second.node_id not in graph.nodes  # v2's deployment is no descendant of v1
    # From a deployment: the model version it serves, then the run that made that version.
    upstream = selectors.lineage_graph(second.node_id)
    assert {n.id: n.distance for n in upstream.nodes.values()} == {
        second.node_id: 0,
        v2.node_id: -1,
        v2.run.node_id: -2,
    }

    body = api_client_for(users.finance).get(reverse("api-lineage", args=[v1.node_id])).json()
    nodes = {n["id"]: n for n in body["nodes"]}
    assert nodes[first.node_id]["kind"] == "deployment" and nodes[first.node_id]["distance"] == 1
    assert nodes[first.node_id]["url"].endswith(reverse("service-detail", args=[first.service_id]))
    assert nodes[rollback.node_id]["kind"] == "deployment"
    edges = {(e["source"], e["target"]) for e in body["edges"]}
    assert {(v1.node_id, first.node_id), (v1.node_id, rollback.node_id)} <= edges
    client.force_login(users.finance)
    page = client.get(reverse("lineage", args=[second.node_id]))
    assert page.status_code == 200
    assert {n["id"] for n in page.context["graph"]["nodes"]} >= {second.node_id, v2.node_id}
