"""What a chart shows, as plain numbers for a template's `json_script`; static/js/app.js draws it with the
plotly.js the portal serves itself. No figure is built on the server: building plotly figures in Python cost
about 180 ms a dataset version page."""

from __future__ import annotations

from typing import Any

TOP_VALUES_SHOWN = 15


def profile_chart(name: str, column: dict[str, Any], *, row_count: int) -> dict[str, Any] | None:
    """A profiled column's distribution and its missing share, or None when there is nothing to draw."""
    missing = int(column.get("missing") or 0)
    common = {"title": name, "missing": missing, "rows": int(row_count)}
    histogram = column.get("histogram") or {}
    if histogram.get("counts"):
        return {
            "kind": "histogram",
            **common,
            "edges": list(histogram["edges"]),
            "counts": list(histogram["counts"]),
            # Integer columns (years, counts) get whole-number ticks: no "2,007.5".
            "integer": column.get("type") == "integer",
        }
    top = column.get("top") or []
    if top:
        shown = top[:TOP_VALUES_SHOWN]
        return {
            "kind": "top",
            **common,
            "values": [str(item["value"]) for item in shown],
            "counts": [int(item["count"]) for item in shown],
        }
    return None


def metric_series_chart(name: str, points: list[dict[str, Any]]) -> dict[str, Any]:
    """One metric over the steps (or folds) of a run."""
    axis = "step" if any("step" in p for p in points) else ("fold" if any("fold" in p for p in points) else "report")
    xs = [p.get(axis, i) if axis != "report" else i for i, p in enumerate(points)]
    return {"kind": "series", "title": name, "axis": axis, "x": xs, "y": [p["value"] for p in points]}


def compare_chart(series: dict[str, dict[str, float]], metrics: list[str]) -> dict[str, Any]:
    """Final metrics of several runs side by side, one group per metric."""
    return {
        "kind": "compare",
        "metrics": list(metrics),
        "series": [{"name": label, "values": [values.get(m) for m in metrics]} for label, values in series.items()],
    }


def change_chart(changes: list[dict[str, Any]]) -> dict[str, Any]:
    """Each metric's change against a baseline (candidate − baseline) on its own axis, so a 0.002 drop shows.
    `changes` holds {"name", "change", "better"}: better is True, False, or None when nothing changed."""
    return {
        "kind": "change",
        "metrics": [c["name"] for c in changes],
        "changes": [c["change"] for c in changes],
        "better": [c["better"] for c in changes],
    }
