"""Plotly figures built on the server, drawn by the plotly.js the portal serves itself."""

from __future__ import annotations

import json
from typing import Any

import plotly.graph_objects as go
import plotly.io as pio


def figure_data(figure: go.Figure) -> dict[str, Any]:
    """Plain JSON-ready data for a template's `json_script` (which does the HTML escaping)."""
    return json.loads(pio.to_json(figure, validate=False, remove_uids=True))


def histogram_figure(histogram: dict[str, Any], *, title: str, height: int = 220) -> go.Figure:
    """A histogram from stored bin edges and counts (the drift baseline), not from raw values."""
    edges = histogram["edges"]
    centres = [(left + right) / 2 for left, right in zip(edges[:-1], edges[1:], strict=True)]
    widths = [right - left for left, right in zip(edges[:-1], edges[1:], strict=True)]
    figure = go.Figure(
        go.Bar(
            x=centres,
            y=histogram["counts"],
            width=widths,
            marker_color="#2454c5",
            hovertemplate="%{customdata[0]:.4g} – %{customdata[1]:.4g}: %{y}<extra></extra>",
            customdata=list(zip(edges[:-1], edges[1:], strict=True)),
        )
    )
    figure.update_layout(
        title={"text": title, "font": {"size": 13}},
        height=height,
        margin={"l": 40, "r": 10, "t": 30, "b": 30},
        bargap=0.02,
        template="plotly_white",
    )
    return figure


def top_values_figure(top: list[dict[str, Any]], *, title: str, height: int = 220) -> go.Figure:
    values = [str(item["value"]) for item in top][:15][::-1]
    counts = [item["count"] for item in top][:15][::-1]
    figure = go.Figure(go.Bar(x=counts, y=values, orientation="h", marker_color="#5a7bd8"))
    figure.update_layout(
        title={"text": title, "font": {"size": 13}},
        height=height,
        margin={"l": 90, "r": 10, "t": 30, "b": 30},
        template="plotly_white",
    )
    return figure


def metric_series_figure(name: str, points: list[dict[str, Any]], *, height: int = 240) -> go.Figure:
    """One metric over steps (or folds) of a run."""
    axis = "step" if any("step" in p for p in points) else ("fold" if any("fold" in p for p in points) else None)
    xs = [p.get(axis, i) if axis else i for i, p in enumerate(points)]
    figure = go.Figure(go.Scatter(x=xs, y=[p["value"] for p in points], mode="lines+markers", line={"color": "#2454c5"}))
    figure.update_layout(
        title={"text": name, "font": {"size": 13}}, height=height, margin={"l": 45, "r": 10, "t": 30, "b": 35},
        xaxis_title=axis or "report", template="plotly_white",
    )
    return figure


def compare_figure(series: dict[str, dict[str, float]], metrics: list[str], *, height: int = 320) -> go.Figure:
    """Final metrics of several runs side by side, one group per metric."""
    figure = go.Figure([go.Bar(name=label, x=metrics, y=[values.get(m) for m in metrics]) for label, values in series.items()])
    figure.update_layout(barmode="group", height=height, margin={"l": 45, "r": 10, "t": 20, "b": 40}, template="plotly_white")
    return figure
