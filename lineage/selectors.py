"""Reads for datasets, runs and the lineage graph."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import Count, Q, QuerySet
from django.urls import reverse

from controlplane.backends import object_store
from lineage.models import Dataset, DatasetVersion, LineageEdge, Run

NODE_KINDS = ("dataset_version", "run", "model_version", "deployment")

# One recursive query walks the edge table in either direction to any depth. UNION (not UNION ALL)
# drops edges already seen, so diamonds are visited once and a malformed cycle still terminates.
_UPSTREAM_SQL = """
WITH RECURSIVE walk(source, target) AS (
    SELECT source, target FROM {table} WHERE target = %s
    UNION
    SELECT e.source, e.target FROM {table} e JOIN walk w ON e.target = w.source
)
SELECT source, target FROM walk
"""
_DOWNSTREAM_SQL = """
WITH RECURSIVE walk(source, target) AS (
    SELECT source, target FROM {table} WHERE source = %s
    UNION
    SELECT e.source, e.target FROM {table} e JOIN walk w ON e.source = w.target
)
SELECT source, target FROM walk
"""


def parse_node_id(node_id: str) -> tuple[str, int]:
    kind, _, pk = node_id.partition(":")
    if kind not in NODE_KINDS or not (pk.isascii() and pk.isdigit()) or len(pk) > 18:
        raise ValueError(f"expected a node id like dataset_version:12 or run:3 (kinds: {', '.join(NODE_KINDS)})")
    return kind, int(pk)


def _walk(sql: str, node_id: str) -> list[tuple[str, str]]:
    with connection.cursor() as cursor:
        cursor.execute(sql.format(table=LineageEdge._meta.db_table), [node_id])
        return [(source, target) for source, target in cursor.fetchall()]


def lineage_upstream_edges(node_id: str) -> list[tuple[str, str]]:
    """Every edge upstream of `node_id` (everything it came from), in one query regardless of depth."""
    return _walk(_UPSTREAM_SQL, node_id)


def lineage_downstream_edges(node_id: str) -> list[tuple[str, str]]:
    """Every edge downstream of `node_id` (everything made from it), in one query regardless of depth."""
    return _walk(_DOWNSTREAM_SQL, node_id)


def lineage_ancestors(node_id: str) -> set[str]:
    return {source for source, _ in lineage_upstream_edges(node_id)}


def lineage_descendants(node_id: str) -> set[str]:
    return {target for _, target in lineage_downstream_edges(node_id)}


@dataclass
class LineageNode:
    id: str
    kind: str
    label: str
    detail: str
    url: str
    status: str = ""
    distance: int = 0  # negative upstream, positive downstream


@dataclass
class LineageGraph:
    focus: str
    nodes: dict[str, LineageNode] = field(default_factory=dict)
    edges: list[tuple[str, str]] = field(default_factory=list)
    # Nodes beyond the depth limit, by side: how many were left out.
    hidden_upstream: int = 0
    hidden_downstream: int = 0


def _distances(start: str, edges: list[tuple[str, str]], *, forward: bool) -> dict[str, int]:
    adjacency: dict[str, list[str]] = {}
    for source, target in edges:
        a, b = (source, target) if forward else (target, source)
        adjacency.setdefault(a, []).append(b)
    distance = {start: 0}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for neighbour in adjacency.get(node, []):
            if neighbour not in distance:
                distance[neighbour] = distance[node] + 1
                queue.append(neighbour)
    return distance


def lineage_graph(node_id: str, *, depth: int = 4) -> LineageGraph:
    """The focus node with everything upstream and downstream of it, cut at `depth` hops each way."""
    parse_node_id(node_id)
    upstream = lineage_upstream_edges(node_id)
    downstream = lineage_downstream_edges(node_id)
    up_distance = _distances(node_id, upstream, forward=False)
    down_distance = _distances(node_id, downstream, forward=True)
    graph = LineageGraph(focus=node_id)
    keep: dict[str, int] = {node_id: 0}
    for node, hops in up_distance.items():
        if hops <= depth:
            keep[node] = -hops
        else:
            graph.hidden_upstream += 1
    for node, hops in down_distance.items():
        if hops <= depth:
            keep.setdefault(node, hops)
        else:
            graph.hidden_downstream += 1
    graph.edges = sorted({edge for edge in upstream + downstream if edge[0] in keep and edge[1] in keep})
    described = {node.id: node for node in describe_nodes(list(keep))}
    for node_id_kept, distance in keep.items():
        # An edge may name a record this database does not hold (e.g. imported lineage): still draw it.
        node = described.get(node_id_kept) or LineageNode(
            id=node_id_kept, kind=node_id_kept.partition(":")[0], label=node_id_kept, detail="(no record here)", url=""
        )
        node.distance = distance
        graph.nodes[node.id] = node
    return graph


def describe_nodes(node_ids: list[str]) -> list[LineageNode]:
    """Labels and links for nodes, one query per kind present."""
    by_kind: dict[str, list[int]] = {}
    for node_id in node_ids:
        kind, pk = parse_node_id(node_id)
        by_kind.setdefault(kind, []).append(pk)
    described: list[LineageNode] = []
    if "dataset_version" in by_kind:
        for version in DatasetVersion.objects.filter(pk__in=by_kind["dataset_version"]).select_related("dataset__project"):
            described.append(
                LineageNode(
                    id=version.node_id,
                    kind="dataset_version",
                    label=f"{version.dataset.slug} v{version.number}",
                    detail=f"{version.source} · {version.format} · {version.row_count or '?'} rows · {version.sha256[:12]}",
                    url=version_url(version),
                )
            )
    if "run" in by_kind:
        for run in Run.objects.filter(pk__in=by_kind["run"]):
            described.append(
                LineageNode(
                    id=run.node_id,
                    kind="run",
                    label=f"run {run.pk}: {run.recipe}",
                    detail=f"{run.kind} · {run.backend}",
                    url=reverse("run-detail", args=[run.pk]),
                    status=run.status,
                )
            )
    if "model_version" in by_kind:
        from lineage.models import ModelVersion

        for model_version in ModelVersion.objects.filter(pk__in=by_kind["model_version"]).select_related("registered_model__project"):
            metrics = model_version.metrics or {}
            headline = next((f"{k} {metrics[k]:.3f}" for k in ("accuracy", "roc_auc", "r2", "rmse") if isinstance(metrics.get(k), (int, float))), "")
            described.append(
                LineageNode(
                    id=model_version.node_id,
                    kind="model_version",
                    label=f"{model_version.registered_model.slug} v{model_version.number}",
                    detail=" · ".join(x for x in ("model", headline, model_version.sha256[:12]) if x),
                    url=reverse("model-version-detail", args=[model_version.registered_model.project.slug, model_version.registered_model.slug, model_version.number]),
                )
            )
    for kind in ("deployment",):
        for pk in by_kind.get(kind, []):
            described.append(LineageNode(id=f"{kind}:{pk}", kind=kind, label=f"{kind.replace('_', ' ')} {pk}", detail="", url=""))
    return described


def dataset_version_download_url(version: DatasetVersion) -> str:
    """A link that downloads the version's bytes: presigned on S3, signed by the portal for the local store."""
    from django.conf import settings

    from controlplane.backends import object_store

    suffix = {"csv": ".csv", "parquet": ".parquet", "jsonl": ".jsonl", "manifest": ".manifest.json"}[version.format]
    filename = version.original_filename or f"{version.dataset.slug}-v{version.number}{suffix}{'.gz' if version.compressed and version.format != 'manifest' else ''}"
    return object_store().download_url(version.storage_key, filename=filename, expires_in=settings.OBJECT_DOWNLOAD_EXPIRES)


def node_exists(node_id: str) -> bool:
    """Whether a node id is well formed and names a record here (ValueError for a malformed id)."""
    parse_node_id(node_id)
    return bool(describe_nodes([node_id]))


def version_url(version: DatasetVersion) -> str:
    return reverse(
        "dataset-version-detail", args=[version.dataset.project.slug, version.dataset.slug, version.number]
    )


# --- datasets -------------------------------------------------------------------------------


def dataset_list(*, search: str = "", project: str = "") -> QuerySet[Dataset]:
    datasets = Dataset.objects.select_related("project", "created_by")
    if project:
        datasets = datasets.filter(project__slug=project)
    if search:
        datasets = datasets.filter(Q(name__icontains=search) | Q(slug__icontains=search) | Q(description__icontains=search))
    return datasets.annotate(version_count=Count("versions")).order_by("project__slug", "slug")


def dataset_get(*, project: str, slug: str) -> Dataset:
    return Dataset.objects.select_related("project").get(project__slug=project, slug=slug)


def dataset_version_get(*, project: str, dataset: str, number: int) -> DatasetVersion:
    return DatasetVersion.objects.select_related("dataset__project", "created_by", "produced_by").get(
        dataset__project__slug=project, dataset__slug=dataset, number=number
    )


def run_list(*, project: str = "", status: str = "", kind: str = "", recipe: str = "", creator: str = "") -> QuerySet[Run]:
    runs = Run.objects.select_related("project", "created_by")
    filters: dict[str, Any] = {}
    if project:
        filters["project__slug"] = project
    if status:
        filters["status"] = status
    if kind:
        filters["kind"] = kind
    if recipe:
        filters["recipe"] = recipe
    if creator:
        filters["created_by__username"] = creator
    return runs.filter(**filters)


# --- runs: what a run ended with, its log, what it may cost -------------------------------------


def final_metrics(run: Run) -> dict[str, float]:
    """The last value of each metric series (what a run ended with). Per-fold series (`*_fold`) are left out: their
    last point is one fold's score; the recipe reports their mean and standard deviation as `cv_<metric>[_std]`."""
    return {name: points[-1]["value"] for name, points in (run.metrics or {}).items()
            if points and not name.endswith("_fold")}


def reproduction_check(run: Run) -> dict[str, Any] | None:
    """For a finished reproduction: what happened, in a sentence, and whether its final metrics equal the original's.

    `outcome` is "match", "differ", "same_model" (the same bytes as the original's model version), or "not_finished"
    (the reproduction failed or was stopped: there are no metrics to compare, and `summary` says why).
    """
    if run.reproduced_from_id is None or not run.done:
        return None
    original_run = run.reproduced_from
    if run.status != Run.Status.SUCCEEDED:
        summary = f"the reproduction {run.status}" + (f": {run.status_reason}" if run.status_reason else "")
        return {"original": original_run, "rows": [], "match": False, "outcome": "not_finished", "summary": summary}
    original = final_metrics(original_run)
    mine = final_metrics(run)
    rows = [
        {"name": name, "original": original.get(name), "reproduction": mine.get(name),
         "match": original.get(name) == mine.get(name)}
        for name in sorted(set(original) | set(mine))
        if not name.startswith(("time", "wall"))
    ]
    match = bool(rows) and all(r["match"] for r in rows)
    if run.same_model_as_id is not None:
        outcome, summary = "same_model", f"the model is byte for byte {run.same_model_as}, and the metrics match exactly."
    elif match:
        outcome, summary = "match", "the metrics match exactly."
    elif not rows:
        outcome, summary = "differ", "neither run recorded any metrics to compare."
    else:
        outcome, summary = "differ", "the metrics differ:"
    return {"original": original_run, "rows": rows, "match": match, "outcome": outcome, "summary": summary}


def run_cost_estimate(*, backend: str, instance_type: str, instance_count: int, max_runtime_seconds: int) -> tuple[Decimal, str]:
    """The most a run can cost: price per hour × instances × the maximum runtime, with the arithmetic spelled out."""
    from decimal import ROUND_CEILING

    hours = Decimal(max_runtime_seconds) / 3600
    cent = Decimal("0.01")
    if backend == "local":
        # A recipe may use every core (random forests, gradient boosting), so the most it can cost counts them all.
        cpus = settings.LOCAL_TRAINING_CPUS
        price = Decimal(str(settings.LOCAL_CPU_HOUR_PRICE))
        cost = (price * cpus * hours).quantize(cent, rounding=ROUND_CEILING)
        return cost, f"{cpus} CPU × {hours:.2f} h × ${price}/CPU-hour (local; actual cost is measured CPU time)"
    price = Decimal(str(settings.TRAINING_INSTANCE_PRICES[instance_type]))
    cost = (price * instance_count * hours).quantize(cent, rounding=ROUND_CEILING)
    return cost, f"{instance_count} × {instance_type} × {hours:.2f} h × ${price}/h (at most; SageMaker bills actual seconds)"


def run_log_tail(*, run: Run, lines: int = 200) -> list[str]:
    """The last lines of a run's log: live from the backend while it runs, from the object store after."""
    if run.log_key:
        with object_store().open(run.log_key) as handle:
            return handle.read().decode(errors="replace").splitlines()[-lines:]
    # While it runs, the poller keeps the tail here: pages never call the backend (or AWS) themselves.
    return list(run.log_tail or [])[-lines:]
