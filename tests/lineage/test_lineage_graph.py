"""Ancestors and descendants in one query at any depth; the drawn graph stays readable."""

from __future__ import annotations

from collections import deque

import pytest
from django.urls import reverse

from lineage import selectors
from lineage.graph_layout import layout_graph
from lineage.models import LineageEdge

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


def test_ancestors_and_descendants_of_a_10000_node_graph_in_one_query(big_graph, django_assert_num_queries) -> None:
    children: dict[str, set[str]] = {}
    for child, parents in big_graph.items():
        for parent in parents:
            children.setdefault(parent, set()).add(child)
    bottom, top, middle = node(LEVELS - 1, 17), node(0, 3), node(25, 100)
    with django_assert_num_queries(1):
        ancestors = selectors.lineage_ancestors(bottom)
    assert ancestors == reachable(bottom, big_graph)
    assert node(0, 17) in ancestors and len(ancestors) > 1000
    with django_assert_num_queries(1):
        descendants = selectors.lineage_descendants(top)
    assert descendants == reachable(top, children)
    with django_assert_num_queries(1):
        assert selectors.lineage_ancestors(middle) == reachable(middle, big_graph)
    assert selectors.lineage_descendants(bottom) == set()


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
    assert selectors.lineage_ancestors("run:1") == {"run:1", "run:2"}


def test_bad_node_ids_are_a_clear_400(api_client_for, users) -> None:
    response = api_client_for(users.finance).get(reverse("api-lineage", args=["table:1"]))
    assert response.status_code == 400
    assert "dataset_version:12" in response.json()["error"]["fields"]["node_id"][0]
    assert api_client_for(users.finance).get(reverse("api-lineage", args=["run:999"])).status_code == 404
    response = api_client_for(users.finance).get(reverse("lineage", args=["table:1"]))
    assert response.status_code == 404
