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
