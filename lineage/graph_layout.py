"""Left-to-right layout of a lineage graph for an SVG drawing: columns by distance from the focus node.

Columns longer than `collapse_over` show their first nodes and one "+N more" box, so a dataset that fed
hundreds of runs still draws as a readable picture.
"""

from __future__ import annotations

from typing import Any

from lineage.selectors import LineageGraph

NODE_W, NODE_H = 210, 52
GAP_X, GAP_Y = 70, 18
MARGIN = 16
KIND_ORDER = {"dataset_version": 0, "run": 1, "model_version": 2, "deployment": 3}


def layout_graph(graph: LineageGraph, *, collapse_over: int | None = 8) -> dict[str, Any]:
    columns: dict[int, list[Any]] = {}
    for node in graph.nodes.values():
        columns.setdefault(node.distance, []).append(node)
    placed: dict[str, dict[str, Any]] = {}
    hidden_to_box: dict[str, str] = {}
    boxes: list[dict[str, Any]] = []
    ordered = sorted(columns)
    tallest = 0
    for column_index, distance in enumerate(ordered):
        nodes = sorted(columns[distance], key=lambda n: (n.id != graph.focus, KIND_ORDER.get(n.kind, 9), n.label))
        shown, hidden = nodes, []
        if collapse_over is not None and len(nodes) > collapse_over:
            shown, hidden = nodes[: collapse_over - 1], nodes[collapse_over - 1 :]
        for row, node in enumerate(shown):
            placed[node.id] = {
                "id": node.id,
                "kind": node.kind,
                "label": node.label,
                "detail": node.detail,
                "url": node.url,
                "status": node.status,
                "focus": node.id == graph.focus,
                "x": MARGIN + column_index * (NODE_W + GAP_X),
                "y": MARGIN + row * (NODE_H + GAP_Y),
            }
        rows = len(shown)
        if hidden:
            box_id = f"more:{distance}"
            placed[box_id] = {
                "id": box_id,
                "kind": "more",
                "label": f"+{len(hidden)} more",
                "detail": "show all",
                "url": "?expand=1",
                "status": "",
                "focus": False,
                "x": MARGIN + column_index * (NODE_W + GAP_X),
                "y": MARGIN + rows * (NODE_H + GAP_Y),
            }
            boxes.append(placed[box_id])
            for node in hidden:
                hidden_to_box[node.id] = box_id
            rows += 1
        tallest = max(tallest, rows)
    edges = []
    seen = set()
    for source, target in graph.edges:
        a, b = hidden_to_box.get(source, source), hidden_to_box.get(target, target)
        if a == b or (a, b) in seen or a not in placed or b not in placed:
            continue
        seen.add((a, b))
        start, end = placed[a], placed[b]
        x1, y1 = start["x"] + NODE_W, start["y"] + NODE_H / 2
        x2, y2 = end["x"], end["y"] + NODE_H / 2
        bend = max((x2 - x1) / 2, 30)
        edges.append({"path": f"M{x1},{y1} C{x1 + bend},{y1} {x2 - bend},{y2} {x2},{y2}", "source": a, "target": b})
    return {
        "focus": graph.focus,
        "nodes": list(placed.values()),
        "edges": edges,
        "width": MARGIN * 2 + max(len(ordered), 1) * (NODE_W + GAP_X) - GAP_X,
        "height": MARGIN * 2 + max(tallest, 1) * (NODE_H + GAP_Y) - GAP_Y,
        "node_w": NODE_W,
        "node_h": NODE_H,
        "hidden_upstream": graph.hidden_upstream,
        "hidden_downstream": graph.hidden_downstream,
        "restricted": graph.restricted,
        # Boxes the query already cut ("more" nodes) count as well as those cut here.
        "collapsed": len(boxes) + sum(1 for node in graph.nodes.values() if node.kind == "more"),
    }
