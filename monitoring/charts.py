"""What the monitoring pages chart, as plain numbers for `json_script` (static/js/app.js draws them with plotly.js):
throughput, error rate and latency percentiles over a window with a vertical marker at every deployment and
rollback; drift scores as a feature × time heatmap; each feature's baseline against its current histogram."""

from __future__ import annotations

from typing import Any

PERCENTILES = (("p50_ms", "p50"), ("p95_ms", "p95"), ("p99_ms", "p99"))
ALL = "all"


def _markers(markers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {"at": m["at"], "kind": m["kind"], "label": m.get("label") or f"{m['kind']} {m.get('deployment_id')}"}
        for m in markers
    ]


def _timeseries(
    title: str, unit: str, times: list[str], traces: list[dict[str, Any]], markers: list[dict[str, Any]]
) -> dict[str, Any]:
    return {"kind": "timeseries", "title": title, "unit": unit, "x": times, "traces": traces, "markers": markers}


def metric_charts(
    series: dict[str, Any], by_revision: dict[str, Any], markers: list[dict[str, Any]], labels: dict[str, str]
) -> list[dict[str, Any]]:
    """Three charts over one window: requests/s, error rate (5xx, and 4xx dotted), p50/p95/p99 latency. `series` is
    the service's whole series (metric_series without by_revision), `by_revision` the same window per revision;
    `labels` name revisions as people know them (the model version and deployment), falling back to the revision."""
    times = series["times"]
    whole = series["series"].get(ALL, {})
    revisions = [(labels.get(name, name), values) for name, values in by_revision["series"].items()]
    shown = _markers(markers)
    rate = [{"name": "all revisions", "group": ALL, "y": whole.get("requests_per_s", [])}]
    rate += [{"name": name, "group": name, "y": values["requests_per_s"]} for name, values in revisions]
    # 5xx (the service failed) and 4xx (the request was refused, e.g. bad rows): the service's 4xx line is drawn,
    # each revision's waits in the legend.
    errors = [
        {"name": "all revisions", "group": ALL, "y": whole.get("error_rate", [])},
        {"name": "all revisions 4xx", "group": ALL, "dash": "dot", "y": whole.get("client_error_rate", [])},
    ]
    for name, values in revisions:
        errors.append({"name": name, "group": name, "y": values["error_rate"]})
        errors.append(
            {"name": f"{name} 4xx", "group": name, "dash": "dot", "y": values["client_error_rate"], "hidden": True}
        )
    latency = [
        {"name": f"all revisions {label}", "group": ALL, "percentile": label, "y": whole.get(key, [])}
        for key, label in PERCENTILES
    ]
    for name, values in revisions:
        for key, label in PERCENTILES:
            # p99 per revision is drawn; its p50 and p95 wait in the legend, a click away (else 3 lines each).
            latency.append(
                {
                    "name": f"{name} {label}",
                    "group": name,
                    "percentile": label,
                    "y": values[key],
                    "hidden": label != "p99",
                }
            )
    return [
        {"id": "chart-throughput", "figure": _timeseries("Requests per second", "req/s", times, rate, shown)},
        {
            "id": "chart-errors",
            "figure": _timeseries(
                "Error rate (5xx share; dotted: client errors, 4xx share)", "share", times, errors, shown
            ),
        },
        {"id": "chart-latency", "figure": _timeseries("Latency", "ms", times, latency, shown)},
    ]


# Methods whose score is a p-value: the feature drifted when it fell below the threshold (the others: above it).
P_VALUE_METHODS = frozenset({"ks", "chisquare"})
# How far past its threshold a cell's colour goes on: ×4 and ×40 look the same, both far past.
SEVERITY_SHOWN = 4.0


def severity(score: float | None, threshold: float | None, method: str) -> float | None:
    """A score against its threshold in one direction for every method: 1 at the threshold, above 1 drifted.
    A distance is divided by its threshold; for a p-value, the threshold is divided by it."""
    if score is None or not threshold:
        return None
    if method in P_VALUE_METHODS:
        return SEVERITY_SHOWN if score <= 0 else min(threshold / score, SEVERITY_SHOWN)
    return min(score / threshold, SEVERITY_SHOWN)


def drift_heatmap_chart(heatmap: dict[str, Any]) -> dict[str, Any]:
    """Feature × report time. The colour is each score against its feature's threshold (`severity`), since a
    p-value and a distance cannot share one scale; the raw score, threshold and method are in each cell's hover, and
    a crossed threshold is marked in the cell."""
    features = list(heatmap["features"])
    thresholds = list(heatmap["thresholds"])
    methods = list(heatmap["methods"])
    scores = [list(row) for row in heatmap["scores"]]
    times = list(heatmap["times"])
    starts = list(heatmap.get("starts") or [])
    return {
        "kind": "heatmap",
        "title": "Drift by feature and report (score against threshold)",
        "x": times,
        # One report alone has no neighbour to size its column by (the axis would zoom to a millisecond): its
        # column spans its window, from start to end.
        "x_edges": [starts[0], times[0]] if len(times) == 1 and len(starts) == 1 and starts[0] < times[0] else None,
        "y": features,
        "z": [[severity(score, thresholds[i], methods[i]) for score in scores[i]] for i in range(len(features))],
        "zmax": SEVERITY_SHOWN,
        "scores": scores,
        "drifted": [list(row) for row in heatmap["drifted"]],
        "thresholds": thresholds,
        "methods": methods,
    }


def _shares(counts: list[Any]) -> list[float]:
    total = sum(float(c or 0) for c in counts)
    return [float(c or 0) / total if total else 0.0 for c in counts]


def drift_histogram_chart(feature: Any) -> dict[str, Any] | None:
    """A feature's baseline (training data) and current (captured requests) distributions, as shares of their rows
    so the two compare whatever their sizes. None without a histogram."""
    histogram = feature.histogram or {}
    baseline, current = list(histogram.get("baseline") or []), list(histogram.get("current") or [])
    if not baseline and not current:
        return None
    common = {
        "title": f"{feature.feature}{' · drifted' if feature.drifted else ''}",
        "baseline": _shares(baseline),
        "current": _shares(current),
        "drifted": bool(feature.drifted),
    }
    if histogram.get("edges"):
        return {"kind": "drift_histogram", "edges": list(histogram["edges"]), **common}
    return {"kind": "drift_histogram", "values": [str(v) for v in histogram.get("values") or []], **common}
